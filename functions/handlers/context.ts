/**
 * What every Lambda handler shares: the config file, the AWS clients and the core's ports
 * on AWS, built once per execution environment on first use (clients are reused across
 * invocations).
 */
import { Logger } from "@aws-lambda-powertools/logger";
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

export const logger = new Logger({ serviceName: "longrun" });

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
  });
  return deps;
}

/** The JWT claim naming the tenant (default `sub`). */
export function tenantClaim(): string {
  return process.env[AWS_ENV.tenantClaim] || "sub";
}
