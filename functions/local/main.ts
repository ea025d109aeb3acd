/**
 * `npm start`: the embedded longrun server (SPEC §5). One process serves the HTTP API,
 * keeps state in SQLite under the data directory and runs jobs as local processes; with
 * `LONGRUN_BACKEND=aws` the state, wake-ups and files are on the AWS adapters instead.
 */

import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { KeyFileError } from "../adapters/embedded/artifact-urls.ts";
import { discoverGpus } from "../adapters/embedded/gpu-pool.ts";
import { ENV } from "../config/env.ts";
import { ConfigError, loadConfigFile } from "../config/load.ts";
import type { LongrunConfig } from "../config/schema.ts";
import { type CoreDeps, type LifecycleListener, listQueues } from "../core/index.ts";
import { dashboardFromBuild } from "../dashboard/build.ts";
import { createApi } from "../http/app.ts";
import { tokenAuthenticator } from "../http/auth.ts";
import { QueueHistory } from "../metrics/history.ts";
import { PrometheusMetrics } from "../metrics/prometheus.ts";
import type { WebhookSecrets } from "../webhooks/outbox.ts";
import { AwsRuntime } from "./aws-runtime.ts";
import { prepareDataDir, SERVER_UMASK } from "./data-dir.ts";
import { type LocalSettings, readLocalSettings, StartupError } from "./env.ts";
import { createRequestListener, type NodeAdapterOptions } from "./node-server.ts";
import { EmbeddedRuntime } from "./runtime.ts";

const MAX_BODY_BYTES = 256 * 1024;

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString()} ${line}\n`);
}

/** What main needs of either engine. */
interface Runtime {
  readonly deps: CoreDeps;
  start(): Promise<number>;
  stop(graceMs: number): Promise<void>;
}

/** The engine `LONGRUN_BACKEND` names, with what the HTTP listener needs of it. */
async function createRuntime(
  settings: LocalSettings,
  config: LongrunConfig,
  baseUrl: () => string,
  observers: { listeners: readonly LifecycleListener[]; onWebhookTried: (ok: boolean) => void },
): Promise<{
  runtime: Runtime;
  artifacts?: NodeAdapterOptions["artifacts"];
  uploads?: NodeAdapterOptions["uploads"];
  /** The tenants' webhook signing secrets, where the engine delivers webhooks. */
  webhookSecrets?: WebhookSecrets;
  describe?: string;
}> {
  if (settings.backend === "aws") {
    const runtime = await AwsRuntime.create({
      config,
      dataDir: settings.dataDir,
      env: process.env,
      allowPrivateWebhooks: settings.allowPrivateWebhooks,
      sweepIntervalMs: settings.sweepIntervalMs,
      jobUser: settings.jobUser,
      maxUploadBytes: settings.maxUploadBytes,
      log,
      ...observers,
    });
    const r = runtime.resources;
    const endpoint = process.env.AWS_ENDPOINT_URL ? ` at ${process.env.AWS_ENDPOINT_URL}` : "";
    return {
      runtime,
      ...(runtime.webhookSecrets ? { webhookSecrets: runtime.webhookSecrets } : {}),
      describe: `AWS backend${endpoint}: table ${r.tableName}, bucket ${r.bucketName}, dispatch queue ${r.dispatchQueueUrl}`,
    };
  }
  const gpus = await discoverGpus(process.env);
  log(
    gpus
      ? `GPU pool: ${gpus.length ? gpus.join(",") : "none"}`
      : "no GPUs found and LONGRUN_GPUS unset: GPU needs of queues are not enforced",
  );
  const runtime = new EmbeddedRuntime({
    config,
    dataDir: settings.dataDir,
    allowPrivateWebhooks: settings.allowPrivateWebhooks,
    sweepIntervalMs: settings.sweepIntervalMs,
    jobUser: settings.jobUser,
    baseUrl,
    log,
    maxUploadBytes: settings.maxUploadBytes,
    ...observers,
    ...(gpus ? { gpus } : {}),
  });
  return {
    runtime,
    artifacts: {
      signer: runtime.signer,
      open: (id, name) => runtime.results.openArtifact(id, name),
    },
    uploads: runtime.uploadReceiver,
    webhookSecrets: runtime.hooks,
  };
}

/** How often the queue history samples every queue's counts for the dashboard's chart. */
const SAMPLE_EVERY_MS = 10_000;

/** Samples every queue now and then every {@link SAMPLE_EVERY_MS}; failures are skipped. */
function sampleQueues(deps: CoreDeps, history: QueueHistory): NodeJS.Timeout {
  const sample = async () => {
    for (const q of await listQueues(deps)) history.record(q.name, q, deps.clock.now());
  };
  const tick = () =>
    void sample().catch((e: unknown) => log(`queue sampling failed: ${String(e)}`));
  tick();
  const timer = setInterval(tick, SAMPLE_EVERY_MS);
  timer.unref();
  return timer;
}

async function main(): Promise<void> {
  // Before anything is written: the databases, keys and request files get 0600 (SPEC §5).
  process.umask(SERVER_UMASK);
  const settings = readLocalSettings(process.env, process.cwd());
  const config = loadConfigFile(settings.configPath);
  prepareDataDir(settings.dataDir, { jobUser: settings.jobUser !== null });
  let baseUrl = settings.publicUrl ?? `http://${settings.host}:${settings.port}`;
  const metrics = new PrometheusMetrics(config.queues);
  const history = new QueueHistory();
  const { runtime, artifacts, uploads, webhookSecrets, describe } = await createRuntime(
    settings,
    config,
    () => baseUrl,
    {
      listeners: [metrics.figures, history],
      onWebhookTried: (ok) => metrics.figures.webhookTried(ok),
    },
  );
  const recovered = await runtime.start();
  if (recovered > 0) log(`recovered ${recovered} request(s) left in flight by the previous run`);

  const api = createApi({
    deps: runtime.deps,
    authenticate: tokenAuthenticator(settings.tokens),
    maxBodyBytes: MAX_BODY_BYTES,
    allowInsecureWebhooks: settings.allowPrivateWebhooks,
    ...(webhookSecrets
      ? {
          webhookSecret: (tenant: string) => webhookSecrets.secretFor(tenant),
          rotateWebhookSecret: (tenant: string) => webhookSecrets.rotate(tenant, Date.now()),
        }
      : {}),
    metrics: () => metrics.render(runtime.deps.store),
    history,
    dashboard: dashboardFromBuild(),
  });
  const sampler = sampleQueues(runtime.deps, history);
  const server = createServer(
    createRequestListener({
      handle: (req) => api.handle(req),
      maxBodyBytes: MAX_BODY_BYTES,
      ...(artifacts ? { artifacts } : {}),
      ...(uploads ? { uploads } : {}),
      log,
    }),
  );
  // An upload's PUT takes as long as its bytes take to arrive, so no whole-request deadline
  // (Node's requestTimeout) applies; a connection idle for a minute is closed instead.
  server.requestTimeout = uploads ? 0 : 60_000;
  server.timeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(settings.port, settings.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  if (!settings.publicUrl) baseUrl = `http://${settings.host}:${port}`;

  if (settings.defaultTokens) {
    log(`${ENV.tokens} is not set: accepting the development token "dev" for tenant "dev"`);
  }
  log(`queues: ${Object.keys(config.queues).join(", ")} (config ${config.source})`);
  log(`data directory: ${settings.dataDir}`);
  if (settings.jobUser) {
    log(`jobs run as ${settings.jobUser.name} (uid ${settings.jobUser.uid})`);
  }
  if (describe) log(describe);
  process.stdout.write(`longrun listening on http://${settings.host}:${port}\n`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    clearInterval(sampler);
    log(`${signal}: stopping (running jobs get SIGTERM and are resumed on the next start)`);
    server.close();
    server.closeAllConnections();
    const graceMs =
      1000 * Math.max(...Object.values(config.queues).map((q) => q.cancelGraceSeconds), 1);
    await runtime.stop(Math.min(graceMs, 30_000));
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

main().catch((error: unknown) => {
  if (
    error instanceof ConfigError ||
    error instanceof StartupError ||
    error instanceof KeyFileError
  ) {
    process.stderr.write(`longrun: ${error.message}\n`);
  } else {
    process.stderr.write(`longrun: failed to start: ${(error as Error).stack ?? String(error)}\n`);
  }
  process.exit(1);
});
