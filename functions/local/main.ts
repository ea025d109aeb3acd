/**
 * `npm start`: the embedded longrun server (SPEC §5). One process serves the HTTP API,
 * keeps state in SQLite under the data directory and runs jobs as local processes; with
 * `LONGRUN_BACKEND=aws` the state, wake-ups and files are on the AWS adapters instead.
 */

import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { discoverGpus } from "../adapters/embedded/gpu-pool.ts";
import { ENV } from "../config/env.ts";
import { ConfigError, loadConfigFile } from "../config/load.ts";
import type { LongrunConfig } from "../config/schema.ts";
import type { CoreDeps } from "../core/index.ts";
import { createApi } from "../http/app.ts";
import { tokenAuthenticator } from "../http/auth.ts";
import { AwsRuntime } from "./aws-runtime.ts";
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
): Promise<{
  runtime: Runtime;
  artifacts?: NodeAdapterOptions["artifacts"];
  /** The tenants' webhook signing secrets, where the engine delivers webhooks. */
  webhookSecret?: (tenant: string) => Promise<string>;
  describe?: string;
}> {
  if (settings.backend === "aws") {
    const runtime = await AwsRuntime.create({
      config,
      dataDir: settings.dataDir,
      env: process.env,
      allowPrivateWebhooks: settings.allowPrivateWebhooks,
      sweepIntervalMs: settings.sweepIntervalMs,
      log,
    });
    const r = runtime.resources;
    const endpoint = process.env.AWS_ENDPOINT_URL ? ` at ${process.env.AWS_ENDPOINT_URL}` : "";
    return {
      runtime,
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
    baseUrl,
    log,
    ...(gpus ? { gpus } : {}),
  });
  return {
    runtime,
    artifacts: { signer: runtime.signer, outputsDir: runtime.outputsDir },
    webhookSecret: (tenant) => runtime.hooks.secretFor(tenant),
  };
}

async function main(): Promise<void> {
  const settings = readLocalSettings(process.env, process.cwd());
  const config = loadConfigFile(settings.configPath);
  let baseUrl = settings.publicUrl ?? `http://${settings.host}:${settings.port}`;
  const { runtime, artifacts, webhookSecret, describe } = await createRuntime(
    settings,
    config,
    () => baseUrl,
  );
  const recovered = await runtime.start();
  if (recovered > 0) log(`recovered ${recovered} request(s) left in flight by the previous run`);

  const api = createApi({
    deps: runtime.deps,
    authenticate: tokenAuthenticator(settings.tokens),
    maxBodyBytes: MAX_BODY_BYTES,
    allowInsecureWebhooks: settings.allowPrivateWebhooks,
    ...(webhookSecret ? { webhookSecret } : {}),
  });
  const server = createServer(
    createRequestListener({
      handle: (req) => api.handle(req),
      maxBodyBytes: MAX_BODY_BYTES,
      ...(artifacts ? { artifacts } : {}),
      log,
    }),
  );
  server.requestTimeout = 60_000;
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
  if (describe) log(describe);
  process.stdout.write(`longrun listening on http://${settings.host}:${port}\n`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
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
  if (error instanceof ConfigError || error instanceof StartupError) {
    process.stderr.write(`longrun: ${error.message}\n`);
  } else {
    process.stderr.write(`longrun: failed to start: ${(error as Error).stack ?? String(error)}\n`);
  }
  process.exit(1);
});
