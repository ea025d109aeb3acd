import { resolve } from "node:path";
import { ENV } from "../config/env.ts";
import { DEFAULT_MAX_UPLOAD_BYTES } from "../core/usecases/uploads.ts";

export class StartupError extends Error {
  override name = "StartupError";
}

/** The embedded server's settings, parsed once from the environment. */
export interface LocalSettings {
  configPath: string;
  host: string;
  port: number;
  dataDir: string;
  /** token → tenant */
  tokens: Map<string, string>;
  /** True when LONGRUN_TOKENS was unset and the `dev:dev` default applies. */
  defaultTokens: boolean;
  allowPrivateWebhooks: boolean;
  sweepIntervalMs: number;
  backend: "embedded" | "aws";
  publicUrl: string | undefined;
  /** Largest upload accepted, in bytes (`LONGRUN_MAX_UPLOAD_BYTES`). */
  maxUploadBytes: number;
}

/** Parses `token:tenant,token2:tenant2`. */
export function parseTokens(raw: string): Map<string, string> {
  const tokens = new Map<string, string>();
  for (const pair of raw.split(",")) {
    const entry = pair.trim();
    if (!entry) continue;
    const i = entry.lastIndexOf(":");
    const token = entry.slice(0, i).trim();
    const tenant = entry.slice(i + 1).trim();
    if (i <= 0 || !token || !tenant) {
      throw new StartupError(
        `${ENV.tokens}: each entry must be token:tenant, got ${JSON.stringify(entry)}`,
      );
    }
    tokens.set(token, tenant);
  }
  if (tokens.size === 0) throw new StartupError(`${ENV.tokens} names no token`);
  return tokens;
}

function intFrom(
  env: NodeJS.ProcessEnv,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new StartupError(`${name} must be an integer from ${min} to ${max}, got ${raw}`);
  }
  return n;
}

export function readLocalSettings(env: NodeJS.ProcessEnv, cwd: string): LocalSettings {
  const rawTokens = env[ENV.tokens];
  const backend = env[ENV.backend] ?? "embedded";
  if (backend !== "embedded" && backend !== "aws") {
    throw new StartupError(`${ENV.backend} must be "embedded" or "aws", got ${backend}`);
  }
  return {
    configPath: resolve(cwd, env[ENV.config] || "longrun.config.json"),
    host: env[ENV.host] || "127.0.0.1",
    port: intFrom(env, ENV.port, 8080, 0, 65535),
    dataDir: resolve(cwd, env[ENV.dataDir] || ".longrun"),
    tokens: rawTokens ? parseTokens(rawTokens) : new Map([["dev", "dev"]]),
    defaultTokens: !rawTokens,
    allowPrivateWebhooks: env[ENV.webhookAllowPrivate] === "1",
    sweepIntervalMs: intFrom(env, ENV.sweepIntervalMs, 1000, 50, 3_600_000),
    backend,
    publicUrl: env[ENV.publicUrl] || undefined,
    maxUploadBytes: intFrom(
      env,
      ENV.maxUploadBytes,
      DEFAULT_MAX_UPLOAD_BYTES,
      0,
      Number.MAX_SAFE_INTEGER,
    ),
  };
}
