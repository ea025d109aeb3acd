import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { inject } from "vitest";
import { jobPidsUnder } from "./procs.ts";

export const ROOT = resolve(import.meta.dirname, "../..");
export const DEMO_JOB = join(ROOT, "jobs/examples/demo/job.mjs");

/** The server's engines (SPEC §5): SQLite, or the AWS adapters on the test emulator. */
export type Backend = "embedded" | "aws";
export const BACKENDS: readonly Backend[] = ["embedded", "aws"];

/** A resource-name prefix no other server of this run (or an earlier one) uses. */
export function uniquePrefix(): string {
  return `lr-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * Environment of a `LONGRUN_BACKEND=aws` server on the emulator the vitest globalSetup
 * provides (test/helpers/moto.ts): it creates its own table, queues and bucket under
 * `prefix`.
 */
export function awsServerEnv(
  prefix: string,
  endpoint: string = inject("awsEndpoint"),
): Record<string, string> {
  return {
    LONGRUN_BACKEND: "aws",
    LONGRUN_AWS_BOOTSTRAP: "1",
    LONGRUN_AWS_PREFIX: prefix,
    AWS_ENDPOINT_URL: endpoint,
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
    // Each sweep queries the emulator: once a second, as a real deployment would.
    LONGRUN_SWEEP_INTERVAL_MS: "1000",
  };
}

export interface ServerOptions {
  /** Queue config (`queues` object of longrun.config.json); relative paths resolve to ROOT. */
  queues: Record<string, Record<string, unknown>>;
  tokens?: string;
  env?: Record<string, string>;
  dataDir?: string;
  /** Default "embedded"; "aws" runs the server on the AWS adapters against the emulator. */
  backend?: Backend;
  /**
   * Emulator endpoint of an "aws" server; inside vitest it defaults to the globalSetup's.
   * Scripts outside vitest (bench, chaos) must pass it.
   */
  awsEndpoint?: string;
  /** Run the server process as this user (a test running as root drops to another user). */
  user?: { uid: number; gid: number };
}

/**
 * A real embedded server (`npm start` equivalent) in a child process on a free loopback
 * port with its own temporary data directory. `kill` and `start` again reuse that directory,
 * which is how tests restart it.
 */
export class TestServer {
  readonly dataDir: string;
  readonly configPath: string;
  readonly backend: Backend;
  /** Prefix of the AWS resources the server creates (aws backend), else "". */
  readonly awsPrefix: string;
  url = "";
  output = "";
  /** Exit code of the last process once it has exited, else null. */
  exitCode: number | null = null;
  #child: ChildProcess | undefined;
  readonly #env: Record<string, string>;
  readonly #user: { uid: number; gid: number } | undefined;

  constructor(options: ServerOptions) {
    this.dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "longrun-e2e-"));
    this.configPath = join(this.dataDir, "..", `${this.dataDir.split("/").pop()}.config.json`);
    writeFileSync(this.configPath, JSON.stringify({ queues: options.queues }, null, 2));
    this.backend = options.backend ?? "embedded";
    this.#user = options.user;
    this.awsPrefix = this.backend === "aws" ? uniquePrefix() : "";
    this.#env = {
      LONGRUN_CONFIG: this.configPath,
      LONGRUN_DATA_DIR: this.dataDir,
      LONGRUN_PORT: "0",
      LONGRUN_TOKENS: options.tokens ?? "t-alice:alice,t-bob:bob",
      LONGRUN_SWEEP_INTERVAL_MS: "200",
      LONGRUN_BACKEND: "embedded",
      ...(this.backend === "aws" ? awsServerEnv(this.awsPrefix, options.awsEndpoint) : {}),
      ...options.env,
    };
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Starts the server and resolves once it printed its ready line. */
  async start(): Promise<void> {
    this.output = "";
    this.exitCode = null;
    const child = spawn(process.execPath, ["--import", "tsx", "functions/local/main.ts"], {
      cwd: ROOT,
      env: { ...process.env, ...this.#env },
      stdio: ["ignore", "pipe", "pipe"],
      ...(this.#user ?? {}),
    });
    this.#child = child;
    await new Promise<void>((resolvePromise, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`server did not start:\n${this.output}`)),
        this.backend === "aws" ? 40_000 : 20_000,
      );
      const onData = (chunk: Buffer) => {
        this.output += chunk.toString();
        const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(this.output);
        if (m?.[1]) {
          this.url = m[1];
          clearTimeout(timer);
          resolvePromise();
        }
      };
      child.stdout?.on("data", onData);
      child.stderr?.on("data", (c: Buffer) => {
        this.output += c.toString();
      });
      child.once("exit", (code) => {
        this.exitCode = code;
        clearTimeout(timer);
        reject(new Error(`server exited with ${code} before it was ready:\n${this.output}`));
      });
    });
  }

  /** Sends `signal` and waits for the process to be gone. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill(signal);
    await gone;
  }

  async stop(): Promise<void> {
    await this.kill("SIGTERM");
  }

  /**
   * Stops the server and removes its data directory. Jobs it left running (one holding on
   * a file, or one a failed test never saw end) are killed too: no test leaves them behind.
   */
  async dispose(): Promise<void> {
    await this.kill("SIGKILL");
    for (const pid of jobPidsUnder(this.dataDir)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // ended meanwhile
      }
    }
    // The job launcher outlives a SIGKILLed server for a moment (it leaves when its pipe
    // closes) and may still be making a spare file in the data dir: retry a busy folder.
    rmSync(this.dataDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
    rmSync(this.configPath, { force: true });
  }

  async fetch(
    path: string,
    init: {
      method?: string;
      token?: string | null;
      body?: unknown;
      headers?: Record<string, string>;
    } = {},
  ): Promise<{ status: number; headers: Headers; body: any }> {
    const headers: Record<string, string> = { ...init.headers };
    const token = init.token === undefined ? "t-alice" : init.token;
    if (token) headers.authorization = `Bearer ${token}`;
    let body: string | undefined;
    if (init.body !== undefined) {
      body = typeof init.body === "string" ? init.body : JSON.stringify(init.body);
      headers["content-type"] ??= "application/json";
    }
    const res = await fetch(this.url + path, {
      method: init.method ?? (body === undefined ? "GET" : "POST"),
      headers,
      ...(body !== undefined ? { body } : {}),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: res.status, headers: res.headers, body: parsed };
  }

  submit(queue: string, body: unknown, headers?: Record<string, string>, token?: string) {
    return this.fetch(`/v1/queues/${queue}/requests`, {
      method: "POST",
      body,
      ...(headers ? { headers } : {}),
      ...(token ? { token } : {}),
    });
  }

  /** Polls the request until `done(request)` holds; returns the last request seen. */
  async waitFor(
    id: string,
    done: (r: any) => boolean,
    { timeoutMs = 30_000, token }: { timeoutMs?: number; token?: string } = {},
  ): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    // Every status read is a DynamoDB call on the aws backend; the emulator serves them one
    // at a time to all test files, so poll it less eagerly.
    const pollMs = this.backend === "aws" ? 250 : 100;
    let last: any;
    while (Date.now() < deadline) {
      const res = await this.fetch(`/v1/requests/${id}`, token ? { token } : {});
      last = res.body;
      if (res.status === 200 && done(last)) return last;
      await new Promise((r) => setTimeout(r, pollMs));
    }
    throw new Error(`timed out waiting for ${id}; last: ${JSON.stringify(last)}`);
  }

  waitForStatus(id: string, status: string | string[], timeoutMs?: number) {
    const want = Array.isArray(status) ? status : [status];
    return this.waitFor(id, (r) => want.includes(r.status), timeoutMs ? { timeoutMs } : {});
  }
}

/** The demo job queue config used by most end-to-end tests. */
export function demoQueue(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    command: [process.execPath, DEMO_JOB],
    maxQueued: 100,
    maxRunning: 2,
    timeoutSeconds: 60,
    maxAttempts: 3,
    queueTtlSeconds: 600,
    cancelGraceSeconds: 2,
    ...overrides,
  };
}
