import { execFileSync } from "node:child_process";
import { isIP } from "node:net";
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
  /** Who jobs run as (`LONGRUN_JOB_USER`), or null: as the server's own user. */
  jobUser: JobUser | null;
  /** Largest upload accepted, in bytes (`LONGRUN_MAX_UPLOAD_BYTES`). */
  maxUploadBytes: number;
}

/** A user jobs run as, resolved once at start. */
export interface JobUser {
  name: string;
  uid: number;
  gid: number;
}

/**
 * Whether `host` only listens on this machine: `localhost`, 127.0.0.0/8 or ::1 (also as an
 * IPv4-mapped address). Anything else, the unspecified addresses included, is reachable
 * from elsewhere.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host
    .trim()
    .toLowerCase()
    .replace(/^\[(.*)\]$/, "$1");
  if (h === "localhost") return true;
  if (isIP(h) === 4) return h.split(".")[0] === "127";
  if (isIP(h) !== 6) return false;
  // The URL parser writes an IPv6 address in one canonical form: ::1, or ::ffff:7fxx:xxxx
  // for an IPv4-mapped 127.x.y.z.
  const canonical = new URL(`http://[${h}]/`).hostname;
  return canonical === "[::1]" || canonical.startsWith("[::ffff:7f");
}

/**
 * Resolves `LONGRUN_JOB_USER` (a user name or a numeric uid) with `id`, which asks the
 * system's user database. Only root can start processes as another user, so a server
 * that is not root refuses the setting rather than run jobs as itself unannounced.
 */
export function resolveJobUser(
  name: string,
  serverUid: number | undefined = process.getuid?.(),
): JobUser {
  if (serverUid !== 0) {
    throw new StartupError(
      `${ENV.jobUser}=${name} needs the server to run as root (it runs as uid ${serverUid ?? "unknown"})`,
    );
  }
  const ask = (flag: "-u" | "-g"): number => {
    let out: string;
    try {
      out = execFileSync("id", [flag, name], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      });
    } catch {
      throw new StartupError(`${ENV.jobUser}: no user ${JSON.stringify(name)} on this system`);
    }
    return Number(out.trim());
  };
  const uid = ask("-u");
  const gid = ask("-g");
  if (uid === 0) throw new StartupError(`${ENV.jobUser} must not be root`);
  return { name, uid, gid };
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
  const host = env[ENV.host] || "127.0.0.1";
  if (!rawTokens && !isLoopbackHost(host)) {
    // The default token is public knowledge: off loopback it would let anyone in.
    throw new StartupError(
      `${ENV.host}=${host} is reachable from other machines and ${ENV.tokens} is not set, so the development token "dev" would be accepted from anyone; set ${ENV.tokens} or listen on 127.0.0.1`,
    );
  }
  const jobUserName = env[ENV.jobUser];
  const jobUser = jobUserName ? resolveJobUser(jobUserName) : null;
  return {
    configPath: resolve(cwd, env[ENV.config] || "longrun.config.json"),
    host,
    port: intFrom(env, ENV.port, 8080, 0, 65535),
    dataDir: resolve(cwd, env[ENV.dataDir] || ".longrun"),
    tokens: rawTokens ? parseTokens(rawTokens) : new Map([["dev", "dev"]]),
    defaultTokens: !rawTokens,
    allowPrivateWebhooks: env[ENV.webhookAllowPrivate] === "1",
    sweepIntervalMs: intFrom(env, ENV.sweepIntervalMs, 1000, 50, 3_600_000),
    backend,
    publicUrl: env[ENV.publicUrl] || undefined,
    jobUser,
    maxUploadBytes: intFrom(
      env,
      ENV.maxUploadBytes,
      DEFAULT_MAX_UPLOAD_BYTES,
      0,
      Number.MAX_SAFE_INTEGER,
    ),
  };
}
