/**
 * What every Lambda handler shares: the config file, the AWS clients and the core's ports
 * on AWS, built once per execution environment on first use (clients are reused across
 * invocations).
 */
import { Logger } from "@aws-lambda-powertools/logger";
import { Metrics } from "@aws-lambda-powertools/metrics";
import {
  type AwsClients,
  type AwsResources,
  createAwsClients,
  createAwsDeps,
  readAwsResources,
} from "../adapters/aws/wiring.ts";
import { AWS_ENV, ENV } from "../config/env.ts";
import { loadConfigFile } from "../config/load.ts";
import type { CoreDeps } from "../core/usecases/deps.ts";
import { EmfMetrics } from "../metrics/emf.ts";
import { LifecycleFigures } from "../metrics/figures.ts";

export const logger = new Logger({ serviceName: "longrun" });

/**
 * SPEC §2's figures in CloudWatch (embedded metric format): every handler's state changes
 * feed them, as the server's registry is fed; the sweep adds the queue gauge.
 */
export const emfMetrics = new EmfMetrics(
  new Metrics({ namespace: "longrun", serviceName: "longrun" }),
);
/** The lifecycle hooks that turn this handler's state changes into {@link emfMetrics}. */
export const lambdaFigures = new LifecycleFigures(emfMetrics);

let deps: CoreDeps | undefined;
let clients: AwsClients | undefined;
let resources: AwsResources | undefined;

/** This process's SDK clients. */
export function lambdaClients(): AwsClients {
  clients ??= createAwsClients();
  return clients;
}

/** This process's resources, from the AWS_ENV variables (the webhooks queue if set). */
export function lambdaResources(): AwsResources {
  resources ??= readAwsResources(process.env, { needBatch: true });
  return resources;
}

/**
 * The core's ports for this process, from LONGRUN_CONFIG and the AWS_ENV variables. Webhooks
 * follow from the table's stream (the webhooks handler), not from these ports' writes.
 */
export function lambdaDeps(): CoreDeps {
  deps ??= createAwsDeps({
    config: loadConfigFile(process.env[ENV.config] ?? "longrun.config.json"),
    resources: lambdaResources(),
    clients: lambdaClients(),
    allowPrivateWebhooks: process.env[ENV.webhookAllowPrivate] === "1",
    ...maxUploadBytesFrom(process.env[ENV.maxUploadBytes]),
    listeners: [lambdaFigures],
  });
  return deps;
}

/** `LONGRUN_MAX_UPLOAD_BYTES` when set; a value that is not a byte count stops the handler. */
function maxUploadBytesFrom(raw: string | undefined): { maxUploadBytes?: number } {
  if (raw === undefined || raw === "") return {};
  const n = Number(raw);
  if (!/^[0-9]{1,16}$/.test(raw) || !Number.isSafeInteger(n)) {
    throw new Error(`${ENV.maxUploadBytes} must be a whole number of bytes, got ${raw}`);
  }
  return { maxUploadBytes: n };
}

/** The JWT claim naming the tenant (default `sub`). */
export function tenantClaim(): string {
  return process.env[AWS_ENV.tenantClaim] || "sub";
}
