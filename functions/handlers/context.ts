/**
 * What every Lambda handler shares: the config file and the core's ports on AWS, built once
 * per execution environment on first use (clients are reused across invocations).
 */
import { Logger } from "@aws-lambda-powertools/logger";
import { createAwsClients, createAwsDeps, readAwsResources } from "../adapters/aws/wiring.ts";
import { AWS_ENV, ENV } from "../config/env.ts";
import { loadConfigFile } from "../config/load.ts";
import type { CoreDeps } from "../core/usecases/deps.ts";

export const logger = new Logger({ serviceName: "longrun" });

let deps: CoreDeps | undefined;

/** The core's ports for this process, from LONGRUN_CONFIG and the AWS_ENV variables. */
export function lambdaDeps(): CoreDeps {
  deps ??= createAwsDeps({
    config: loadConfigFile(process.env[ENV.config] ?? "longrun.config.json"),
    resources: readAwsResources(process.env, { needBatch: true }),
    clients: createAwsClients(),
  });
  return deps;
}

/** The JWT claim naming the tenant (default `sub`). */
export function tenantClaim(): string {
  return process.env[AWS_ENV.tenantClaim] || "sub";
}
