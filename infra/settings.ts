/**
 * Deployment settings read from CDK context (`cdk.json` or `-c key=value`), parsed once and
 * typed, so constructs never touch `node.tryGetContext` themselves. Every key is prefixed
 * `longrun:`; README.md ("Deploying to AWS") lists them.
 */
import type { Node } from "constructs";

/** How the JWT authorizer learns who may call the API. */
export type AuthSettings =
  | {
      kind: "cognito";
      /** Cognito hosted domain prefix for the token endpoint; must be unique per region. */
      domainPrefix: string | undefined;
    }
  | {
      kind: "external";
      /** `iss` of the tokens, e.g. `https://example.auth0.com/`. */
      issuer: string;
      /** Accepted `aud` (or `client_id`) values. */
      audience: string[];
    };

/** Everything the stack reads from context, with its default filled in. */
export interface DeploySettings {
  /** Path of the longrun config file (default: LONGRUN_CONFIG, else longrun.config.json). */
  configPath: string;
  auth: AuthSettings;
  /** JWT claim naming the tenant (default `sub`). */
  tenantClaim: string;
  /**
   * Tenants given a Cognito machine client each (and resolved by name from its tokens);
   * the stack adds the names the config's `tenants` overrides use. Cognito auth only.
   */
  tenants: string[];
  /** GPU instance families or types Batch may launch (default g5, g6). */
  gpuInstanceTypes: string[];
  /** Instance families for queues that ask for no GPU (default m6i, c6i). */
  cpuInstanceTypes: string[];
  /** Upper bound of the compute environments; undefined: derived from the queue limits. */
  maxvCpus: number | undefined;
  /** Availability zones of the VPC. */
  maxAzs: number;
  /** NAT gateways; 0 (default) relies on VPC endpoints only. */
  natGateways: number;
  /** DynamoDB deletion protection (default true). */
  deletionProtection: boolean;
  /** `retain` (default) keeps table, bucket and logs on stack deletion; `destroy` removes them. */
  removalPolicy: "retain" | "destroy";
  /** Steady-state requests per second of the API stage. */
  throttleRateLimit: number;
  /** Burst of the API stage. */
  throttleBurstLimit: number;
  /** Retention of Lambda, API access and job logs in days. */
  logRetentionDays: number;
  /** Alarm notifications are sent here by email when set. */
  alarmEmail: string | undefined;
}

/** Context keys, named once (README and tests use them too). */
export const CONTEXT_KEYS = {
  config: "longrun:config",
  jwtIssuer: "longrun:jwtIssuer",
  jwtAudience: "longrun:jwtAudience",
  tenantClaim: "longrun:tenantClaim",
  tenants: "longrun:tenants",
  authDomainPrefix: "longrun:authDomainPrefix",
  gpuInstanceTypes: "longrun:gpuInstanceTypes",
  cpuInstanceTypes: "longrun:cpuInstanceTypes",
  maxvCpus: "longrun:maxvCpus",
  maxAzs: "longrun:maxAzs",
  natGateways: "longrun:natGateways",
  deletionProtection: "longrun:deletionProtection",
  removalPolicy: "longrun:removalPolicy",
  throttleRateLimit: "longrun:throttleRateLimit",
  throttleBurstLimit: "longrun:throttleBurstLimit",
  logRetentionDays: "longrun:logRetentionDays",
  alarmEmail: "longrun:alarmEmail",
} as const;

/**
 * A tenant name that is also a valid Cognito app client name and construct id part
 * (the client is `Tenant-<name>`).
 */
export const TENANT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Thrown when a context value cannot be used; names the key. */
export class SettingsError extends Error {
  override name = "SettingsError";
}

// `-c key=value` always arrives as a string while cdk.json can hold real JSON: accept both.
function list(node: Node, key: string, fallback: string[]): string[] {
  const raw: unknown = node.tryGetContext(key);
  if (raw === undefined || raw === null || raw === "") return fallback;
  const items = Array.isArray(raw) ? raw : String(raw).split(",");
  const out = items.map((x) => String(x).trim()).filter((x) => x.length > 0);
  if (out.length === 0) throw new SettingsError(`${key}: expected a non-empty list`);
  return out;
}

function int(node: Node, key: string, fallback: number, min: number, max: number): number {
  const raw: unknown = node.tryGetContext(key);
  if (raw === undefined || raw === null || raw === "") return fallback;
  const n = typeof raw === "number" ? raw : Number(String(raw));
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new SettingsError(`${key}: expected an integer in [${min}, ${max}], got ${String(raw)}`);
  }
  return n;
}

function bool(node: Node, key: string, fallback: boolean): boolean {
  const raw: unknown = node.tryGetContext(key);
  if (raw === undefined || raw === null || raw === "") return fallback;
  if (raw === true || raw === "true") return true;
  if (raw === false || raw === "false") return false;
  throw new SettingsError(`${key}: expected true or false, got ${String(raw)}`);
}

function str(node: Node, key: string): string | undefined {
  const raw: unknown = node.tryGetContext(key);
  if (raw === undefined || raw === null || raw === "") return undefined;
  return String(raw);
}

/** Reads and validates the `longrun:*` context of `node` (usually the App's). */
export function readSettings(node: Node, env: NodeJS.ProcessEnv = process.env): DeploySettings {
  const issuer = str(node, CONTEXT_KEYS.jwtIssuer);
  const audience = issuer ? list(node, CONTEXT_KEYS.jwtAudience, []) : [];
  if (issuer && audience.length === 0) {
    throw new SettingsError(`${CONTEXT_KEYS.jwtAudience}: required with ${CONTEXT_KEYS.jwtIssuer}`);
  }
  if (issuer && !issuer.startsWith("https://")) {
    throw new SettingsError(`${CONTEXT_KEYS.jwtIssuer}: API Gateway accepts https issuers only`);
  }
  const domainPrefix = str(node, CONTEXT_KEYS.authDomainPrefix);
  if (domainPrefix !== undefined && !/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/.test(domainPrefix)) {
    throw new SettingsError(
      `${CONTEXT_KEYS.authDomainPrefix}: lower-case letters, digits, hyphens`,
    );
  }
  const removal = str(node, CONTEXT_KEYS.removalPolicy) ?? "retain";
  if (removal !== "retain" && removal !== "destroy") {
    throw new SettingsError(`${CONTEXT_KEYS.removalPolicy}: expected retain or destroy`);
  }
  const maxvCpus = str(node, CONTEXT_KEYS.maxvCpus);
  const tenants = list(node, CONTEXT_KEYS.tenants, []);
  if (issuer && tenants.length > 0) {
    throw new SettingsError(
      `${CONTEXT_KEYS.tenants}: Cognito auth only; with ${CONTEXT_KEYS.jwtIssuer} the tenant is a claim of the issuer's tokens`,
    );
  }
  for (const tenant of tenants) {
    if (!TENANT_NAME.test(tenant)) {
      throw new SettingsError(
        `${CONTEXT_KEYS.tenants}: ${JSON.stringify(tenant)} is not a tenant name (letters, digits, . _ -; at most 64)`,
      );
    }
  }
  return {
    configPath: str(node, CONTEXT_KEYS.config) ?? env.LONGRUN_CONFIG ?? "longrun.config.json",
    auth: issuer ? { kind: "external", issuer, audience } : { kind: "cognito", domainPrefix },
    tenantClaim: str(node, CONTEXT_KEYS.tenantClaim) ?? "sub",
    tenants: [...new Set(tenants)],
    gpuInstanceTypes: list(node, CONTEXT_KEYS.gpuInstanceTypes, ["g5", "g6"]),
    cpuInstanceTypes: list(node, CONTEXT_KEYS.cpuInstanceTypes, ["m6i", "c6i"]),
    maxvCpus: maxvCpus === undefined ? undefined : int(node, CONTEXT_KEYS.maxvCpus, 0, 1, 100_000),
    maxAzs: int(node, CONTEXT_KEYS.maxAzs, 2, 1, 6),
    natGateways: int(node, CONTEXT_KEYS.natGateways, 0, 0, 6),
    deletionProtection: bool(node, CONTEXT_KEYS.deletionProtection, true),
    removalPolicy: removal,
    throttleRateLimit: int(node, CONTEXT_KEYS.throttleRateLimit, 50, 1, 100_000),
    throttleBurstLimit: int(node, CONTEXT_KEYS.throttleBurstLimit, 100, 1, 100_000),
    logRetentionDays: int(node, CONTEXT_KEYS.logRetentionDays, 30, 1, 3653),
    alarmEmail: str(node, CONTEXT_KEYS.alarmEmail),
  };
}
