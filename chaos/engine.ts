/**
 * The chaos run (issue 6): a randomized, seeded run against a real longrun server — the
 * embedded one (SQLite + local processes) or the same server on the AWS adapters against an
 * emulator — that submits (repeating idempotency keys, now and then with another body),
 * cancels, runs jobs that crash, hang past their timeout or ignore SIGTERM, and SIGKILLs or
 * SIGTERMs the server at random moments and starts it again on the same data (embedded: it
 * also SIGKILLs the job launcher, which the server replaces).
 *
 * Invariants, checked at every sample and once more after a quiescent drain at the end:
 * - no request lost: every id the API acknowledged answers GET 200 and is listed;
 * - every request is in one SPEC status; a terminal one never changes afterwards; the
 *   attempt never goes back; errors match statuses; each job kind ends as it can;
 * - never more than `maxRunning` live jobs (their processes, read from /proc, an orphan of
 *   a killed server included), and never two jobs (process groups) of one request at once;
 *   no job process alive after its request was seen finished;
 * - the stored per-queue counters equal a recount (embedded: both read in one SQLite read
 *   transaction at every sample; AWS: at the end, when nothing moves);
 * - no 5xx answer, ever.
 *
 * The sequence of choices is a function of the seed; the timing of a run is not, so a
 * seed reproduces the kind of run, not every interleaving.
 */
import { join } from "node:path";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import Database from "better-sqlite3";
import { resourceNames } from "../functions/adapters/aws/definitions.ts";
import { DynamoRequestStore } from "../functions/adapters/aws/dynamo-request-store.ts";
import { MAX_PLATFORM_RETRIES } from "../functions/core/request.ts";
import { TestServer } from "../test/helpers/server.ts";
import { createRng, type Rng } from "./prng.ts";
import { type JobProcess, JobProcessScanner, killProcesses, launcherPids } from "./procs.ts";

export type ChaosBackend = "embedded" | "aws";

export interface ChaosOptions {
  backend: ChaosBackend;
  seed: number;
  /** How long the chaos phase lasts; the drain and the final checks come on top. */
  durationMs: number;
  /** The emulator endpoint (required for "aws"). */
  awsEndpoint?: string;
  /** Progress lines (kills, restarts, violations, the phases). */
  log?: (line: string) => void;
  /** The chaos queue's maxRunning (default 3). */
  maxRunning?: number;
  /** Longest wait for every request to end after the chaos phase (default 120 s). */
  drainTimeoutMs?: number;
}

/** What a job of the chaos queue does, chosen per request. */
export type JobKind =
  | "normal"
  | "crash-always"
  | "crash-first"
  | "hang"
  | "hang-ignore-sigterm"
  | "stubborn"
  | "slow-step"
  | "short-ttl";

export interface ChaosReport {
  backend: ChaosBackend;
  seed: number;
  /** Length of the chaos phase. */
  durationMs: number;
  /** The whole run: start-up, chaos, drain and final checks. */
  wallMs: number;
  /** Distinct requests the server accepted (acknowledged, or found listed after a lost answer). */
  requests: number;
  /** Submit calls that got an answer. */
  submits: number;
  /** Answers 200 Idempotent-Replayed (a repeated key with the same body). */
  replays: number;
  /** Pairs of identical keyed submits sent at the same time. */
  concurrentDuplicates: number;
  /** Answers 409 idempotency_conflict (a repeated key with another body). */
  conflicts: number;
  /** Cancel calls that got an answer (202 or 409). */
  cancels: number;
  /** SIGKILLs of the server (during start-up included). */
  serverKills: number;
  /** Graceful SIGTERM stops of the server. */
  sigtermStops: number;
  /** SIGKILLs of the embedded server's job launcher (the server starts a new one). */
  launcherKills: number;
  /** Successful starts after the first. */
  restarts: number;
  /** Job processes alive right after a SIGKILL of the server (the orphans it left). */
  orphansAtKill: number;
  /** Requests by job kind, and server faults by kind. */
  faults: Record<string, number>;
  /** Calls without an answer: refused while the server was down, or cut off by a kill. */
  unanswered: number;
  /** Requests found listed whose submit answer had been lost. */
  adopted: number;
  /** API samples (list + stats + reads) and /proc scans taken. */
  samples: number;
  processScans: number;
  /** Counter-versus-recount comparisons made. */
  counterChecks: number;
  /** The most job processes (distinct requests) alive at one instant. */
  maxLiveJobs: number;
  maxRunning: number;
  /** Final status (with error code) of every request. */
  finalStatuses: Record<string, number>;
  /** Every HTTP answer, by status code. */
  httpStatuses: Record<string, number>;
  /** Time from the end of the chaos phase until every request had ended. */
  drainMs: number;
  /** Lines of the server's log that mention a failure (not violations by themselves). */
  serverLogNotes: string[];
  violations: string[];
  /** The run's event log (actions, kills, violations), for a post-mortem. */
  timeline: string[];
}

const QUEUE = "chaos";
/** The demo job, made to outlive a killed server (see the file). */
export const CHAOS_JOB = join(import.meta.dirname, "job.mjs");
const STATUSES = [
  "QUEUED",
  "STARTING",
  "RUNNING",
  "SUCCEEDED",
  "FAILED",
  "CANCELLED",
  "EXPIRED",
] as const;
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"]);
/** Error codes each status may carry (SPEC §2). */
const ERROR_CODES: Record<string, readonly (string | null)[]> = {
  QUEUED: [null],
  STARTING: [null],
  RUNNING: [null],
  SUCCEEDED: [null],
  FAILED: ["job_failed", "timeout", "lost"],
  CANCELLED: ["cancelled"],
  EXPIRED: ["expired"],
};
/** Final outcomes (`STATUS` or `STATUS:code`) a request of each kind may end with, uncancelled. */
const OUTCOMES: Record<JobKind, readonly string[]> = {
  normal: ["SUCCEEDED", "FAILED:lost"],
  "crash-always": ["FAILED:job_failed", "FAILED:lost"],
  "crash-first": ["SUCCEEDED", "FAILED:lost"],
  hang: ["FAILED:timeout", "FAILED:lost"],
  "hang-ignore-sigterm": ["FAILED:timeout", "FAILED:lost"],
  stubborn: ["SUCCEEDED", "FAILED:lost"],
  "slow-step": ["SUCCEEDED", "FAILED:lost"],
  "short-ttl": ["SUCCEEDED", "FAILED:lost", "EXPIRED:expired"],
};
const HANGS = new Set<JobKind>(["hang", "hang-ignore-sigterm"]);
const KIND_WEIGHTS: Record<JobKind, number> = {
  normal: 34,
  "crash-always": 10,
  "crash-first": 12,
  hang: 10,
  "hang-ignore-sigterm": 10,
  stubborn: 12,
  "slow-step": 8,
  "short-ttl": 12,
};
/** Requests not known to have ended beyond which no new one is submitted (keeps the drain short). */
const LIVE_CAP = 10;
const CALL_TIMEOUT_MS = 20_000;
const MAX_VIOLATION_LINES = 60;

interface RequestJson {
  id: string;
  queue: string;
  status: string;
  attempt: number;
  maxAttempts: number;
  cancelRequested: boolean;
  metadata: Record<string, string>;
  finishedAt: string | null;
  createdAt: string;
  error: { code: string; message: string } | null;
}

interface SubmitBody {
  input: Record<string, unknown>;
  metadata: Record<string, string>;
  priority?: number;
  queueTtlSeconds?: number;
}

interface Submission {
  tag: number;
  kind: JobKind;
  key: string | null;
  body: SubmitBody;
  id: string | null;
  /** pending: in flight; acked: 2xx seen; unknown: no answer; refused: surely not accepted. */
  outcome: "pending" | "acked" | "unknown" | "refused";
  /** A 202 was seen for it: any later answer for its key must be a 200 replay. */
  created: boolean;
}

interface Tracked {
  id: string;
  sub: Submission;
  ackAt: number;
  /** none; unknown: a cancel got no answer; acked: a 202 (the request must end CANCELLED). */
  cancel: "none" | "unknown" | "acked";
  /** requestStatus of a 409 `conflict` to a cancel: the status it must keep. */
  conflictStatus: string | null;
  terminal: { status: string; code: string | null; at: number } | null;
  attemptMax: number;
  attemptAt: number;
  lastStatus: string;
  history: string[];
}

interface Answer {
  status: number;
  headers: Headers;
  body: unknown;
  sentAt: number;
  receivedAt: number;
}

type CallOutcome = Answer | { refused: boolean };

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function asRequest(v: unknown): RequestJson | null {
  if (!isRecord(v) || typeof v.id !== "string" || typeof v.status !== "string") return null;
  return v as unknown as RequestJson;
}

function isAnswer(o: CallOutcome): o is Answer {
  return "status" in o;
}

function outcomeLabel(status: string, code: string | null): string {
  return code === null || status === "SUCCEEDED" ? status : `${status}:${code}`;
}

function errorChain(error: unknown): string {
  const parts: string[] = [];
  let e: unknown = error;
  for (let i = 0; i < 4 && e; i++) {
    const err = e as { code?: string; name?: string; message?: string; cause?: unknown };
    parts.push(`${err.name ?? ""} ${err.code ?? ""} ${err.message ?? String(e)}`);
    e = err.cause;
  }
  return parts.join(" / ");
}

class ChaosRun {
  readonly #opts: ChaosOptions;
  readonly #rng: Rng;
  readonly #killRng: Rng;
  readonly #launcherRng: Rng;
  readonly #runId: string;
  readonly #maxRunning: number;
  readonly #server: TestServer;
  readonly #scanner: JobProcessScanner;
  readonly #t0 = Date.now();

  #up = false;
  /** Bumped at every stop of the server: tells a call that outlived its server. */
  #epoch = 0;
  #chaosOver = false;
  #finished = false;
  /** When the chaos phase began. */
  #t0Chaos = 0;
  #tags = 0;
  readonly #subs: Submission[] = [];
  readonly #byId = new Map<string, Tracked>();
  readonly #plannedCancels: { id: string; at: number }[] = [];
  #db: Database.Database | null = null;
  #procTicks = 0;

  readonly #violations = new Map<string, { message: string; count: number }>();
  readonly #timeline: string[] = [];
  readonly #serverNotes = new Set<string>();
  readonly report: ChaosReport;

  constructor(opts: ChaosOptions) {
    this.#opts = opts;
    const root = createRng(opts.seed);
    this.#rng = root.fork(1);
    this.#killRng = root.fork(2);
    this.#launcherRng = root.fork(3);
    this.#maxRunning = opts.maxRunning ?? 3;
    this.#runId = `c${opts.seed.toString(36)}${Date.now().toString(36)}${process.pid.toString(36)}`;
    const marker = "LONGRUN_CHAOS_RUN";
    this.#scanner = new JobProcessScanner(`${marker}=${this.#runId}`);
    if (opts.backend === "aws" && !opts.awsEndpoint) {
      throw new Error("the aws backend needs awsEndpoint");
    }
    this.#server = new TestServer({
      backend: opts.backend,
      ...(opts.awsEndpoint ? { awsEndpoint: opts.awsEndpoint } : {}),
      queues: {
        [QUEUE]: {
          command: [process.execPath, CHAOS_JOB],
          maxQueued: 1000,
          maxRunning: this.#maxRunning,
          timeoutSeconds: 4,
          maxAttempts: 3,
          queueTtlSeconds: 3600,
          cancelGraceSeconds: 1,
          env: { [marker]: this.#runId },
        },
      },
      env: {
        LONGRUN_SWEEP_INTERVAL_MS: opts.backend === "aws" ? "1000" : "200",
      },
    });
    this.report = {
      backend: opts.backend,
      seed: opts.seed,
      durationMs: opts.durationMs,
      wallMs: 0,
      requests: 0,
      submits: 0,
      replays: 0,
      concurrentDuplicates: 0,
      conflicts: 0,
      cancels: 0,
      serverKills: 0,
      launcherKills: 0,
      sigtermStops: 0,
      restarts: 0,
      orphansAtKill: 0,
      faults: {},
      unanswered: 0,
      adopted: 0,
      samples: 0,
      processScans: 0,
      counterChecks: 0,
      maxLiveJobs: 0,
      maxRunning: this.#maxRunning,
      finalStatuses: {},
      httpStatuses: {},
      drainMs: 0,
      serverLogNotes: [],
      violations: [],
      timeline: this.#timeline,
    };
  }

  // ---------------------------------------------------------------- bookkeeping

  #elapsed(): string {
    return `+${((Date.now() - this.#t0) / 1000).toFixed(2)}s`;
  }

  #event(line: string, important = false): void {
    const entry = `${this.#elapsed()} ${line}`;
    this.#timeline.push(entry);
    if (this.#timeline.length > 5000) this.#timeline.splice(0, 1000);
    if (important) this.#opts.log?.(`[chaos ${this.#opts.backend}] ${entry}`);
  }

  /** Records a violation once per `key` (later ones only count). */
  #violation(key: string, message: string): void {
    const held = this.#violations.get(key);
    if (held) {
      held.count++;
      return;
    }
    this.#violations.set(key, { message: `${this.#elapsed()} ${message}`, count: 1 });
    this.#event(`VIOLATION ${message}`, true);
  }

  #fault(kind: string): void {
    this.report.faults[kind] = (this.report.faults[kind] ?? 0) + 1;
  }

  #collectServerLog(): void {
    for (const raw of this.#server.output.split("\n")) {
      if (!/fail|error|differ|exception/i.test(raw)) continue;
      // Timestamps, ids and numbers vary; the note is the kind of line.
      const line = raw
        .replace(/^\S+Z /, "")
        .replace(/req_[0-9A-Z]+/g, "req_…")
        .replace(/\d+/g, "N")
        .slice(0, 240);
      if (this.#serverNotes.size < 40) this.#serverNotes.add(line);
    }
  }

  // ---------------------------------------------------------------- HTTP

  async #call(
    method: string,
    path: string,
    init: { body?: unknown; headers?: Record<string, string>; token?: string } = {},
  ): Promise<CallOutcome> {
    const url = this.#server.url;
    const epoch = this.#epoch;
    if (!url) return { refused: true };
    const headers: Record<string, string> = {
      authorization: `Bearer ${init.token ?? "t-alice"}`,
      ...init.headers,
    };
    let body: string | undefined;
    if (init.body !== undefined) {
      body = JSON.stringify(init.body);
      headers["content-type"] = "application/json";
    }
    const sentAt = Date.now();
    let res: Response;
    let text: string;
    try {
      res = await fetch(url + path, {
        method,
        headers,
        ...(body !== undefined ? { body } : {}),
        signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      });
      text = await res.text();
    } catch (error) {
      this.report.unanswered++;
      const chain = errorChain(error);
      if (/timeout|aborted/i.test(chain) && epoch === this.#epoch && this.#up) {
        this.#violation(
          `hang:${method}`,
          `${method} ${path} got no answer in ${CALL_TIMEOUT_MS / 1000}s from a server that stayed up`,
        );
      }
      return { refused: /ECONNREFUSED/.test(chain) };
    }
    const receivedAt = Date.now();
    const key = String(res.status);
    this.report.httpStatuses[key] = (this.report.httpStatuses[key] ?? 0) + 1;
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    if (res.status >= 500) {
      const pattern = path.replace(/req_[0-9A-Za-z]+/g, "{id}").replace(/\?.*$/, "");
      this.#violation(
        `5xx:${method}:${pattern}:${res.status}`,
        `${method} ${path} answered ${res.status}${epoch !== this.#epoch ? " (while the server was being stopped)" : ""}: ${text.slice(0, 300)}`,
      );
    }
    return { status: res.status, headers: res.headers, body: parsed, sentAt, receivedAt };
  }

  // ---------------------------------------------------------------- observations

  #track(sub: Submission, id: string, at: number): Tracked {
    let t = this.#byId.get(id);
    if (!t) {
      t = {
        id,
        sub,
        ackAt: at,
        cancel: "none",
        conflictStatus: null,
        terminal: null,
        attemptMax: 0,
        attemptAt: 0,
        lastStatus: "",
        history: [],
      };
      this.#byId.set(id, t);
    }
    return t;
  }

  /** Checks one view of a request (from a GET, a list page or a cancel answer). */
  #observe(r: RequestJson, sentAt: number, receivedAt: number, source: string): void {
    const t = this.#byId.get(r.id);
    if (!t) return;
    if (!(STATUSES as readonly string[]).includes(r.status)) {
      this.#violation(`status:${r.id}`, `${r.id} has status ${r.status} (${source})`);
      return;
    }
    const code = r.error?.code ?? null;
    if (!(ERROR_CODES[r.status] ?? []).includes(code)) {
      this.#violation(
        `code:${r.id}`,
        `${r.id} is ${r.status} with error ${JSON.stringify(r.error)} (${source})`,
      );
    }
    if (r.queue !== QUEUE) this.#violation(`queue:${r.id}`, `${r.id} shows queue ${r.queue}`);
    // SPEC §3: maxAttempts bounds the job's own failures; restarts (the platform's) add up to
    // MAX_PLATFORM_RETRIES more starts, which the API does not tell apart.
    if (r.attempt < 0 || r.attempt > r.maxAttempts + MAX_PLATFORM_RETRIES) {
      this.#violation(
        `attempt-range:${r.id}`,
        `${r.id} at attempt ${r.attempt} of ${r.maxAttempts} (${source})`,
      );
    }
    if (r.status === "QUEUED" && r.attempt !== 0) {
      this.#violation(`requeued:${r.id}`, `${r.id} QUEUED at attempt ${r.attempt} (${source})`);
    }
    if (sentAt > t.attemptAt && r.attempt < t.attemptMax) {
      this.#violation(
        `attempt-back:${r.id}`,
        `${r.id} went back from attempt ${t.attemptMax} to ${r.attempt} (${source})`,
      );
    }
    if (r.attempt >= t.attemptMax) {
      t.attemptMax = r.attempt;
      t.attemptAt = receivedAt;
    }
    if (TERMINAL.has(r.status)) {
      if (r.finishedAt === null) {
        this.#violation(`finishedAt:${r.id}`, `${r.id} is ${r.status} without finishedAt`);
      }
      if (t.terminal && (t.terminal.status !== r.status || t.terminal.code !== code)) {
        this.#violation(
          `terminal-changed:${r.id}`,
          `${r.id} was ${outcomeLabel(t.terminal.status, t.terminal.code)}, now ${outcomeLabel(r.status, code)} (${source})`,
        );
      } else if (!t.terminal) {
        t.terminal = { status: r.status, code, at: receivedAt };
      }
    } else if (t.terminal && sentAt > t.terminal.at) {
      this.#violation(
        `terminal-changed:${r.id}`,
        `${r.id} was ${t.terminal.status}, then ${r.status} (${source})`,
      );
    }
    if (r.status !== t.lastStatus) {
      t.lastStatus = r.status;
      t.history.push(`${r.status}#${r.attempt}`);
    }
  }

  // ---------------------------------------------------------------- actions

  #inputFor(kind: JobKind, tag: number): Record<string, unknown> {
    const rng = this.#rng;
    switch (kind) {
      case "normal":
      case "short-ttl":
        return { tag, steps: rng.int(1, 4), sleepMs: rng.int(80, 250) };
      case "crash-always":
        return {
          tag,
          steps: 4,
          sleepMs: 100,
          fail: "always",
          failAtStep: rng.int(0, 2),
          exitCode: rng.int(1, 3),
        };
      case "crash-first":
        return { tag, steps: 4, sleepMs: rng.int(80, 150), fail: "first-attempt" };
      case "hang":
      case "hang-ignore-sigterm": {
        // 24 s of work against a 4 s timeout: three attempts (each stopped by the timeout
        // or lost) cannot finish it. Long steps write nothing for seconds, so a job left
        // by a killed server is still running when the server is back.
        const sleepMs = rng.pick([400, 1500, 6000]);
        const steps = Math.ceil(24_000 / sleepMs);
        return kind === "hang"
          ? { tag, steps, sleepMs }
          : { tag, steps, sleepMs, ignoreSigterm: true };
      }
      case "slow-step":
        // One long step: nothing is written (no log line, no checkpoint) for 1.5 seconds.
        return { tag, steps: 1, sleepMs: 1500 };
      case "stubborn":
        // Ignores SIGTERM but ends on its own well before the timeout; meant to be cancelled.
        return { tag, steps: 6, sleepMs: 250, ignoreSigterm: true };
    }
  }

  /** Whether a request's job goes seconds without a write (unknown ids: maybe just submitted). */
  #longSteps(id: string): boolean {
    const t = this.#byId.get(id);
    if (!t) return true;
    const sleepMs = t.sub.body.input.sleepMs;
    return typeof sleepMs === "number" && sleepMs >= 1500;
  }

  #liveCount(): number {
    let n = 0;
    for (const t of this.#byId.values()) if (!t.terminal) n++;
    for (const s of this.#subs) if (s.outcome === "pending") n++;
    return n;
  }

  async #submitFresh(forcedKind?: JobKind, allowDouble = true): Promise<Submission> {
    const rng = this.#rng;
    const tag = ++this.#tags;
    const kind = forcedKind ?? rng.weighted(KIND_WEIGHTS);
    const body: SubmitBody = {
      input: this.#inputFor(kind, tag),
      metadata: { chaos: this.#runId, tag: String(tag), kind },
    };
    if (rng.chance(0.3)) body.priority = rng.int(0, 9);
    if (kind === "short-ttl") body.queueTtlSeconds = 1;
    const key = rng.chance(0.6) ? `${this.#runId}-k${tag}` : null;
    const sub: Submission = {
      tag,
      kind,
      key,
      body,
      id: null,
      outcome: "pending",
      created: false,
    };
    this.#subs.push(sub);
    const double = allowDouble && key !== null && rng.chance(0.15);
    if (double) this.report.concurrentDuplicates++;
    const headers: Record<string, string> = key ? { "idempotency-key": key } : {};
    const calls = Array.from({ length: double ? 2 : 1 }, () =>
      this.#call("POST", `/v1/queues/${QUEUE}/requests`, { body, headers }),
    );
    const answers = await Promise.all(calls);
    // A 202 first: of two identical submits at once, one creates and the other replays.
    const ordered = [...answers].sort(
      (a, b) =>
        (isAnswer(a) && a.status === 202 ? 0 : 1) - (isAnswer(b) && b.status === 202 ? 0 : 1),
    );
    let created = 0;
    for (const a of ordered) {
      if (isAnswer(a) && a.status === 202) created++;
      this.#onSubmitAnswer(sub, a, "submit");
    }
    if (created > 1) {
      this.#violation(`dup-submit:${tag}`, `two identical submits with key ${key} both got 202`);
    }
    this.#event(
      `submit #${tag} ${kind}${key ? " keyed" : ""}${double ? " x2" : ""} → ${sub.id ?? sub.outcome}`,
    );
    if (sub.id && sub.outcome === "acked") {
      const cancelChance =
        kind === "stubborn" || kind === "hang" || kind === "hang-ignore-sigterm" ? 0.5 : 0.1;
      if (rng.chance(cancelChance)) {
        this.#plannedCancels.push({ id: sub.id, at: Date.now() + rng.int(100, 3000) });
      }
    }
    return sub;
  }

  #onSubmitAnswer(sub: Submission, a: CallOutcome, what: string): void {
    if (!isAnswer(a)) {
      if (sub.outcome !== "acked") {
        // Refused outright: surely not accepted. Cut off: it may have been.
        sub.outcome = a.refused && sub.outcome !== "unknown" ? "refused" : "unknown";
      }
      return;
    }
    this.report.submits++;
    const r = asRequest(a.body);
    if ((a.status === 202 || a.status === 200) && r) {
      if (a.status === 200) {
        this.report.replays++;
        if (!sub.key) this.#violation(`200-nokey:${sub.tag}`, `a submit without a key got 200`);
        if (a.headers.get("idempotent-replayed") !== "true") {
          this.#violation("replay-header", `a 200 replay without Idempotent-Replayed: true`);
        }
      }
      if (sub.id !== null && sub.id !== r.id) {
        this.#violation(
          `second-request:${sub.tag}`,
          `key ${sub.key} (${what}) answered ${a.status} with ${r.id}; it had created ${sub.id}`,
        );
        return;
      }
      // The list may show the request (adopted) before the creating submit's answer comes
      // back: only a second 202 for the key is a second creation.
      if (a.status === 202 && sub.created) {
        this.#violation(
          `replay-202:${sub.tag}`,
          `a repeat of key ${sub.key} answered 202, not 200`,
        );
      }
      if (a.status === 202) sub.created = true;
      if (sub.outcome === "refused") {
        this.#violation(`phantom:${sub.tag}`, `a submit refused earlier now shows ${r.id}`);
      }
      sub.id = r.id;
      sub.outcome = "acked";
      this.#track(sub, r.id, a.receivedAt);
      this.#observe(r, a.sentAt, a.receivedAt, what);
      return;
    }
    const code = isRecord(a.body) ? a.body.code : undefined;
    if (a.status === 409 && code === "conflict") {
      // The store met a concurrent write and gave up; nothing was created.
      if (sub.outcome === "pending") sub.outcome = "unknown";
      this.#event(`submit #${sub.tag}: 409 conflict (concurrent update)`);
      return;
    }
    if (sub.outcome === "pending") sub.outcome = "unknown";
    this.#violation(
      `submit-${a.status}`,
      `${what} #${sub.tag} answered ${a.status}: ${JSON.stringify(a.body).slice(0, 200)}`,
    );
  }

  async #replay(): Promise<void> {
    const candidates = this.#subs.filter(
      (s) => s.key !== null && (s.outcome === "acked" || s.outcome === "unknown"),
    );
    if (candidates.length === 0) {
      await this.#submitFresh();
      return;
    }
    const sub = this.#rng.pick(candidates);
    const a = await this.#call("POST", `/v1/queues/${QUEUE}/requests`, {
      body: sub.body,
      headers: { "idempotency-key": sub.key ?? "" },
    });
    this.#onSubmitAnswer(sub, a, "replay");
    this.#event(`replay #${sub.tag} → ${isAnswer(a) ? a.status : "no answer"}`);
  }

  async #conflict(): Promise<void> {
    const candidates = this.#subs.filter((s) => s.key !== null && s.outcome === "acked");
    if (candidates.length === 0) {
      await this.#submitFresh();
      return;
    }
    const sub = this.#rng.pick(candidates);
    const other = { ...sub.body, input: { ...sub.body.input, tag: -sub.tag } };
    const a = await this.#call("POST", `/v1/queues/${QUEUE}/requests`, {
      body: other,
      headers: { "idempotency-key": sub.key ?? "" },
    });
    this.#event(`conflict #${sub.tag} → ${isAnswer(a) ? a.status : "no answer"}`);
    if (!isAnswer(a)) return;
    this.report.submits++;
    const code = isRecord(a.body) ? a.body.code : undefined;
    if (a.status === 409 && code === "idempotency_conflict") {
      this.report.conflicts++;
      return;
    }
    if (a.status === 409 && code === "conflict") return;
    this.#violation(
      `conflict-${a.status}`,
      `key ${sub.key} with another body answered ${a.status} (want 409 idempotency_conflict): ${JSON.stringify(a.body).slice(0, 200)}`,
    );
  }

  async #cancel(id: string): Promise<void> {
    const t = this.#byId.get(id);
    if (!t) return;
    const a = await this.#call("POST", `/v1/requests/${id}/cancel`);
    this.#event(`cancel #${t.sub.tag} ${id} → ${isAnswer(a) ? a.status : "no answer"}`);
    if (!isAnswer(a)) {
      if (t.cancel === "none") t.cancel = "unknown";
      return;
    }
    const r = asRequest(a.body);
    if (a.status === 202 && r) {
      this.report.cancels++;
      if (r.status !== "CANCELLED" && !r.cancelRequested) {
        this.#violation(
          `cancel-202:${id}`,
          `cancel of ${id} answered 202 with ${r.status}, not requested`,
        );
      }
      t.cancel = "acked";
      this.#observe(r, a.sentAt, a.receivedAt, "cancel");
      return;
    }
    const body = isRecord(a.body) ? a.body : {};
    if (a.status === 409 && body.code === "conflict") {
      this.report.cancels++;
      const status = typeof body.requestStatus === "string" ? body.requestStatus : null;
      if (status === null) return; // changed concurrently: try again later
      if (!TERMINAL.has(status) || status === "CANCELLED") {
        this.#violation(`cancel-409:${id}`, `cancel of ${id} answered 409 with status ${status}`);
      }
      t.conflictStatus = status;
      if (t.terminal && t.terminal.status !== status) {
        this.#violation(
          `terminal-changed:${id}`,
          `${id} was ${t.terminal.status}, a cancel says ${status}`,
        );
      }
      return;
    }
    if (a.status === 404) {
      this.#violation(`lost:${id}`, `cancel of acknowledged ${id} answered 404`);
      return;
    }
    this.#violation(
      `cancel-${a.status}`,
      `cancel of ${id} answered ${a.status}: ${JSON.stringify(a.body).slice(0, 200)}`,
    );
  }

  async #read(id: string, token?: string): Promise<void> {
    const a = await this.#call("GET", `/v1/requests/${id}`, token ? { token } : {});
    if (!isAnswer(a)) return;
    if (token) {
      if (a.status !== 404) {
        this.#violation(
          `foreign:${a.status}`,
          `another tenant's GET of ${id} answered ${a.status}`,
        );
      }
      return;
    }
    const r = asRequest(a.body);
    if (a.status === 200 && r) {
      this.#observe(r, a.sentAt, a.receivedAt, "get");
    } else if (a.status === 404) {
      this.#violation(`lost:${id}`, `GET of acknowledged ${id} answered 404`);
    } else {
      this.#violation(`get-${a.status}`, `GET ${id} answered ${a.status}`);
    }
  }

  #randomKnownId(preferLive: boolean): string | null {
    const all = [...this.#byId.values()];
    const live = all.filter((t) => !t.terminal);
    const pool = preferLive && live.length > 0 ? live : all;
    return pool.length > 0 ? this.#rng.pick(pool).id : null;
  }

  async #worker(): Promise<void> {
    const rng = this.#rng;
    while (!this.#chaosOver) {
      await sleep(rng.int(40, 300));
      if (this.#chaosOver) break;
      const now = Date.now();
      const due = this.#plannedCancels.findIndex((c) => c.at <= now);
      if (due >= 0) {
        const [c] = this.#plannedCancels.splice(due, 1);
        if (c) await this.#cancel(c.id);
        continue;
      }
      const action = rng.weighted({
        submit: 40,
        replay: 12,
        conflict: 4,
        cancel: 8,
        read: 10,
        foreign: 3,
      });
      const full = this.#liveCount() >= LIVE_CAP;
      if (action === "submit") {
        if (full) {
          const id = this.#randomKnownId(true);
          if (id) await this.#read(id);
        } else {
          await this.#submitFresh();
        }
      } else if (action === "replay") {
        if (!full || this.#subs.some((s) => s.outcome === "acked")) await this.#replay();
      } else if (action === "conflict") {
        await this.#conflict();
      } else if (action === "cancel") {
        const id = this.#randomKnownId(rng.chance(0.7));
        if (id) await this.#cancel(id);
      } else {
        const id = this.#randomKnownId(rng.chance(0.5));
        if (id) await this.#read(id, action === "foreign" ? "t-bob" : undefined);
      }
    }
  }

  // ---------------------------------------------------------------- the server's faults

  async #start(): Promise<void> {
    for (let tries = 1; ; tries++) {
      try {
        await this.#server.start();
        this.#up = true;
        this.#event(`server up at ${this.#server.url} (pid ${this.#server.pid})`, true);
        return;
      } catch (error) {
        this.#collectServerLog();
        await this.#server.kill("SIGKILL");
        const output = this.#server.output.split("\n");
        const firstError = output.findIndex((l) => /error|exception|failed/i.test(l));
        const excerpt = output
          .slice(Math.max(0, firstError), Math.max(0, firstError) + 6)
          .join("\n")
          .slice(0, 800);
        this.#violation(
          `start-failed:${tries}`,
          `the server failed to start (${(error as Error).message.split("\n")[0]}): ${excerpt}`,
        );
        if (tries >= 3) throw new Error("the server does not start any more");
        await sleep(2000 * tries);
      }
    }
  }

  async #stopServer(signal: "SIGKILL" | "SIGTERM"): Promise<void> {
    this.#up = false;
    this.#epoch++;
    if (signal === "SIGTERM") {
      const done = this.#server.kill("SIGTERM").then(() => true);
      const inTime = await Promise.race([done, sleep(30_000).then(() => false)]);
      if (!inTime) {
        this.#violation("sigterm-hang", "the server did not stop within 30 s of SIGTERM");
        await this.#server.kill("SIGKILL");
      }
    } else {
      await this.#server.kill("SIGKILL");
    }
    this.#collectServerLog();
  }

  async #restart(): Promise<void> {
    const rng = this.#killRng;
    // The first fault is always a plain SIGKILL, so that even a short run has one.
    const first = this.report.serverKills + this.report.sigtermStops === 0;
    const mode = first
      ? "sigkill"
      : rng.weighted({
          sigkill: 5,
          sigterm: 2,
          "sigkill-in-startup": 2,
          "sigkill-at-launch": 4,
        });
    if (mode === "sigkill-at-launch") {
      // Killed the moment the job of a request with long steps appears (the one submitted
      // here, or one that was waiting): it is spawned, its handle may not be stored yet,
      // and it writes nothing for seconds, so it is still running when the server is back.
      const before = new Set(this.#scanner.scan().map((p) => `${p.pid}:${p.startTime}`));
      const submitted = this.#submitFresh("hang", false);
      const deadline = Date.now() + 5000;
      let launched: JobProcess | undefined;
      while (!launched && Date.now() < deadline) {
        launched = this.#scanner
          .scan()
          .find((p) => !before.has(`${p.pid}:${p.startTime}`) && this.#longSteps(p.requestId));
        if (!launched) await sleep(2);
      }
      await this.#stopServer("SIGKILL");
      this.report.serverKills++;
      this.#fault(launched ? "server:sigkill-at-launch" : "server:sigkill");
      const orphans = this.#scanner.scan();
      this.report.orphansAtKill += orphans.length;
      const sub = await submitted;
      this.#event(
        `SIGKILL the server ${launched ? `as ${launched.requestId} attempt ${launched.attempt} launched (pid ${launched.pid})` : "(no launch seen)"}, submit #${sub.tag} ${sub.id ?? sub.outcome}; ${orphans.length} job process(es) left running`,
        true,
      );
    } else if (mode === "sigterm") {
      this.#event("SIGTERM the server", true);
      await this.#stopServer("SIGTERM");
      this.report.sigtermStops++;
      this.#fault("server:sigterm");
    } else {
      await this.#stopServer("SIGKILL");
      this.report.serverKills++;
      this.#fault("server:sigkill");
      const orphans = this.#scanner.scan();
      this.report.orphansAtKill += orphans.length;
      this.#event(`SIGKILL the server; ${orphans.length} job process(es) left running`, true);
    }
    await sleep(rng.int(0, 1000));
    if (mode === "sigkill-in-startup") {
      // Killed again while it recovers (reaping the orphans, relaunching their requests).
      let ready = false;
      const starting = this.#server.start().then(
        () => {
          ready = true;
        },
        () => {},
      );
      await sleep(rng.int(150, 3000));
      await this.#stopServer("SIGKILL");
      await starting;
      this.report.serverKills++;
      this.#fault(ready ? "server:sigkill" : "server:sigkill-during-startup");
      this.#event(`SIGKILL the server ${ready ? "just after" : "during"} its start-up`, true);
      await sleep(rng.int(0, 500));
    }
    await this.#start();
    this.report.restarts++;
  }

  async #killer(): Promise<void> {
    const end = this.#t0Chaos + this.#opts.durationMs;
    while (!this.#chaosOver) {
      const wait = this.#killRng.int(2500, 7000);
      const at = Date.now() + wait;
      if (at >= end - 1000) break;
      while (Date.now() < at && !this.#chaosOver) await sleep(Math.min(200, at - Date.now()));
      if (this.#chaosOver) break;
      await this.#restart();
    }
  }

  /**
   * SIGKILLs the embedded server's job launcher at random moments: the server starts a new
   * one, adopts the jobs it had started and starts again what it had not.
   */
  async #launcherKiller(): Promise<void> {
    const rng = this.#launcherRng;
    while (!this.#chaosOver) {
      const at = Date.now() + rng.int(1000, 4000);
      while (Date.now() < at && !this.#chaosOver) await sleep(Math.min(200, at - Date.now()));
      const serverPid = this.#server.pid;
      if (this.#chaosOver || !this.#up || serverPid === undefined) continue;
      for (const pid of launcherPids(serverPid)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          continue; // gone meanwhile
        }
        this.report.launcherKills++;
        this.#fault("launcher:sigkill");
        this.#event(`SIGKILL the job launcher (pid ${pid})`, true);
      }
    }
  }

  // ---------------------------------------------------------------- samples

  /** Every process scan: maxRunning, one job per request, no job of a finished request. */
  #procTick(): void {
    const scanStart = Date.now();
    let procs: JobProcess[];
    try {
      procs = this.#scanner.scan();
    } catch {
      return;
    }
    this.report.processScans++;
    const groups = new Map<string, Map<number, JobProcess>>();
    for (const p of procs) {
      let g = groups.get(p.requestId);
      if (!g) {
        g = new Map();
        groups.set(p.requestId, g);
      }
      g.set(p.pgid, p);
    }
    this.report.maxLiveJobs = Math.max(this.report.maxLiveJobs, groups.size);
    if (groups.size > this.#maxRunning) {
      const who = [...groups.entries()]
        .map(
          ([id, g]) =>
            `${id}(${[...g.values()].map((p) => `pid ${p.pid} attempt ${p.attempt}`).join(", ")})`,
        )
        .join("; ");
      this.#violation(
        `max-running:${Math.floor((Date.now() - this.#t0) / 5000)}`,
        `${groups.size} jobs alive at once (maxRunning ${this.#maxRunning}, server ${this.#up ? "up" : "down"}): ${who}`,
      );
    }
    for (const [id, g] of groups) {
      if (g.size > 1) {
        const who = [...g.values()].map((p) => `pid ${p.pid} attempt ${p.attempt}`).join(", ");
        this.#violation(`two-jobs:${id}`, `${id} runs ${g.size} jobs at once: ${who}`);
      }
      const t = this.#byId.get(id);
      const p = [...g.values()][0];
      if (t?.terminal && t.terminal.at < scanStart && p) {
        this.#violation(
          `alive-after-end:${id}`,
          `${id} was seen ${t.terminal.status} yet its job (pid ${p.pid}, attempt ${p.attempt}) still runs`,
        );
      }
      for (const proc of g.values()) {
        // maxAttempts 3, plus the starts after restarts, which do not count (SPEC §3).
        if (Number(proc.attempt) > 3 + MAX_PLATFORM_RETRIES) {
          this.#violation(`attempt-proc:${id}`, `${id} runs attempt ${proc.attempt} of 3`);
        }
      }
    }
    if (this.#opts.backend === "embedded" && ++this.#procTicks % 3 === 0) this.#checkSqlite();
  }

  /** Embedded: counters and a recount of the rows, read in one SQLite read transaction. */
  #checkSqlite(): void {
    try {
      this.#db ??= new Database(join(this.#server.dataDir, "longrun.db"), {
        readonly: true,
        fileMustExist: true,
      });
      const db = this.#db;
      const read = db.transaction(() => ({
        stored: db.prepare("SELECT queue, queued, running FROM queue_counters").all() as {
          queue: string;
          queued: number;
          running: number;
        }[],
        counted: db
          .prepare(
            `SELECT queue, sum(status = 'QUEUED') AS queued,
               sum(status IN ('STARTING', 'RUNNING')) AS running
             FROM requests GROUP BY queue`,
          )
          .all() as { queue: string; queued: number; running: number }[],
        byPriority: this.#queuedByPriority(db),
      }));
      const { stored, counted, byPriority } = read();
      this.report.counterChecks++;
      this.#compareCounters(
        Object.fromEntries(stored.map((s) => [s.queue, s])),
        Object.fromEntries(counted.map((c) => [c.queue, c])),
        "sqlite",
      );
      for (const [key, v] of byPriority) {
        if (v.stored !== v.counted) {
          this.#violation(
            `counters:sqlite-priority:${key}`,
            `sqlite: queued_by_priority ${key} holds ${v.stored}, a recount gives ${v.counted}`,
          );
        }
      }
    } catch (error) {
      this.#event(`sqlite check skipped: ${String(error)}`);
    }
  }

  /**
   * Schema 2 keeps QUEUED counts per queue and priority too (`queued_by_priority`): each
   * against a recount, `queue/priority` → both figures. Empty on a schema without the table.
   */
  #queuedByPriority(db: Database.Database): Map<string, { stored: number; counted: number }> {
    const out = new Map<string, { stored: number; counted: number }>();
    const table = db
      .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'queued_by_priority'")
      .get();
    if (!table) return out;
    type Row = { queue: string; priority: number; queued: number };
    const stored = db
      .prepare("SELECT queue, priority, queued FROM queued_by_priority")
      .all() as Row[];
    const counted = db
      .prepare(
        `SELECT queue, priority, count(*) AS queued FROM requests
         WHERE status = 'QUEUED' GROUP BY queue, priority`,
      )
      .all() as Row[];
    for (const r of stored) out.set(`${r.queue}/${r.priority}`, { stored: r.queued, counted: 0 });
    for (const r of counted) {
      const key = `${r.queue}/${r.priority}`;
      out.set(key, { stored: out.get(key)?.stored ?? 0, counted: r.queued });
    }
    return out;
  }

  #compareCounters(
    stored: Record<string, { queued: number; running: number }>,
    counted: Record<string, { queued: number; running: number }>,
    where: string,
  ): void {
    for (const queue of new Set([...Object.keys(stored), ...Object.keys(counted)])) {
      const s = stored[queue] ?? { queued: 0, running: 0 };
      const c = counted[queue] ?? { queued: 0, running: 0 };
      if (s.queued !== c.queued || s.running !== c.running) {
        this.#violation(
          `counters:${where}:${queue}`,
          `${where}: queue ${queue} counters ${JSON.stringify({ queued: s.queued, running: s.running })} differ from a recount ${JSON.stringify({ queued: c.queued, running: c.running })}`,
        );
      }
      if (c.running > this.#maxRunning) {
        this.#violation(
          `running-rows:${where}`,
          `${where}: ${c.running} requests STARTING or RUNNING at once (maxRunning ${this.#maxRunning})`,
        );
      }
      if (s.queued < 0 || s.running < 0) {
        this.#violation(`negative:${where}`, `${where}: negative counters ${JSON.stringify(s)}`);
      }
    }
  }

  /** Lists every request of the queue (all pages); null when the server went away meanwhile. */
  async #listAll(): Promise<{ items: RequestJson[]; sentAt: number; receivedAt: number } | null> {
    const items: RequestJson[] = [];
    const seen = new Set<string>();
    const limit = this.#rng.pick([7, 50, 1000]);
    let cursor: string | null = null;
    let sentAt = 0;
    let receivedAt = 0;
    let lastCreated = Number.POSITIVE_INFINITY;
    for (let page = 0; page < 10_000; page++) {
      const qs = `limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const a = await this.#call("GET", `/v1/queues/${QUEUE}/requests?${qs}`);
      if (!isAnswer(a)) return null;
      if (a.status !== 200 || !isRecord(a.body) || !Array.isArray(a.body.items)) {
        this.#violation(`list-${a.status}`, `list answered ${a.status}`);
        return null;
      }
      if (page === 0) sentAt = a.sentAt;
      receivedAt = a.receivedAt;
      for (const raw of a.body.items) {
        const r = asRequest(raw);
        if (!r) continue;
        if (seen.has(r.id)) this.#violation("list-dup", `the list showed ${r.id} twice`);
        seen.add(r.id);
        const created = Date.parse(r.createdAt);
        if (created > lastCreated) this.#violation("list-order", "the list is not newest first");
        lastCreated = created;
        items.push(r);
      }
      const next = a.body.nextCursor;
      if (typeof next !== "string") break;
      cursor = next;
    }
    return { items, sentAt, receivedAt };
  }

  /** One API sample: the list, the queue's counts and some (or all) requests one by one. */
  async #sample(readAll: boolean): Promise<boolean> {
    if (!this.#up) return false;
    const t0 = Date.now();
    const known = [...this.#byId.values()].filter((t) => t.ackAt < t0);
    const list = await this.#listAll();
    if (!list) return false;
    const listed = new Set<string>();
    for (const r of list.items) {
      listed.add(r.id);
      if (!this.#byId.has(r.id)) this.#adopt(r, list.receivedAt);
      this.#observe(r, list.sentAt, list.receivedAt, "list");
    }
    for (const t of known) {
      if (!listed.has(t.id)) {
        this.#violation(`lost-list:${t.id}`, `acknowledged ${t.id} is missing from the list`);
      }
    }
    const stats = await this.#call("GET", `/v1/queues/${QUEUE}`);
    if (!isAnswer(stats)) return false;
    if (stats.status === 200 && isRecord(stats.body)) {
      const { queued, running } = stats.body;
      if (typeof running !== "number" || typeof queued !== "number") {
        this.#violation("stats-shape", `queue stats ${JSON.stringify(stats.body)}`);
      } else if (running > this.#maxRunning || running < 0 || queued < 0) {
        this.#violation(
          `stats:${running}:${queued}`,
          `queue stats say running ${running}, queued ${queued} (maxRunning ${this.#maxRunning})`,
        );
      }
    }
    const toRead = readAll
      ? [...this.#byId.keys()]
      : Array.from({ length: Math.min(6, known.length) }, () => this.#rng.pick(known).id);
    for (const id of toRead) await this.#read(id);
    this.report.samples++;
    return true;
  }

  /** A listed request whose submit answer was lost: its submission is found by its tag. */
  #adopt(r: RequestJson, at: number): void {
    if (r.metadata?.chaos !== this.#runId) {
      this.#violation(`stranger:${r.id}`, `the list shows ${r.id}, which this run never sent`);
      return;
    }
    const sub = this.#subs.find((s) => String(s.tag) === r.metadata.tag);
    if (!sub) {
      this.#violation(
        `stranger:${r.id}`,
        `the list shows ${r.id} with unknown tag ${r.metadata.tag}`,
      );
      return;
    }
    if (sub.id !== null && sub.id !== r.id) {
      this.#violation(
        `second-request:${sub.tag}`,
        `submission #${sub.tag} (key ${sub.key}) has two requests: ${sub.id} and ${r.id}`,
      );
      return;
    }
    if (sub.outcome === "refused") {
      this.#violation(`phantom:${sub.tag}`, `refused submission #${sub.tag} shows up as ${r.id}`);
    }
    sub.id = r.id;
    sub.outcome = "acked";
    this.report.adopted++;
    this.#track(sub, r.id, at);
    this.#event(`adopted ${r.id} (#${sub.tag}, answer lost)`);
  }

  async #sampler(): Promise<void> {
    const period = this.#opts.backend === "aws" ? 2000 : 1200;
    while (!this.#chaosOver) {
      await sleep(period);
      if (this.#chaosOver) break;
      await this.#sample(false);
    }
  }

  // ---------------------------------------------------------------- the end

  /** Keyed submissions whose answer was lost, sent again: each now says whether it exists. */
  async #resolveUnknown(): Promise<void> {
    for (const sub of this.#subs) {
      if (sub.key === null || sub.outcome !== "unknown") continue;
      for (let i = 0; i < 5 && sub.outcome === "unknown"; i++) {
        const a = await this.#call("POST", `/v1/queues/${QUEUE}/requests`, {
          body: sub.body,
          headers: { "idempotency-key": sub.key },
        });
        this.#onSubmitAnswer(sub, a, "resolve");
        if (!isAnswer(a)) await sleep(500);
      }
    }
  }

  async #drain(): Promise<void> {
    const started = Date.now();
    const deadline = started + (this.#opts.drainTimeoutMs ?? 120_000);
    let live: Tracked[] = [];
    while (Date.now() < deadline) {
      if (!this.#up) await this.#start();
      const list = await this.#listAll();
      if (list) {
        for (const r of list.items) {
          if (!this.#byId.has(r.id)) this.#adopt(r, list.receivedAt);
          this.#observe(r, list.sentAt, list.receivedAt, "drain");
        }
        live = [...this.#byId.values()].filter((t) => !t.terminal);
        if (live.length === 0) {
          this.report.drainMs = Date.now() - started;
          return;
        }
      }
      await sleep(500);
    }
    this.report.drainMs = Date.now() - started;
    this.#violation(
      "drain",
      `${live.length} request(s) still live ${Math.round(this.report.drainMs / 1000)} s after the chaos ended: ${live
        .slice(0, 10)
        .map((t) => `${t.id} ${t.sub.kind} ${t.history.join(">")}`)
        .join("; ")}`,
    );
  }

  async #finalChecks(): Promise<void> {
    await this.#sample(true);
    // No job may outlive the end of every request.
    this.#procTick();
    const left = this.#scanner.scan();
    if (left.length > 0) {
      this.#violation(
        "leftover-jobs",
        `${left.length} job process(es) alive after every request ended: ${left.map((p) => `${p.requestId} pid ${p.pid}`).join(", ")}`,
      );
    }
    // Counters against a recount, now that nothing moves.
    const stats = await this.#call("GET", `/v1/queues/${QUEUE}`);
    if (isAnswer(stats) && isRecord(stats.body)) {
      const live = [...this.#byId.values()].filter((t) => !t.terminal).length;
      if (live === 0 && (stats.body.queued !== 0 || stats.body.running !== 0)) {
        this.#violation(
          "stats-end",
          `every request ended but the queue says queued ${stats.body.queued}, running ${stats.body.running}`,
        );
      }
    }
    if (this.#opts.backend === "embedded") {
      this.#checkSqlite();
    } else {
      await this.#checkDynamoCounters();
    }
    // Each request ended as its kind and the answers it got allow.
    for (const t of this.#byId.values()) {
      if (!t.terminal) continue;
      const label = outcomeLabel(t.terminal.status, t.terminal.code);
      this.report.finalStatuses[label] = (this.report.finalStatuses[label] ?? 0) + 1;
      const why = `${t.id} (#${t.sub.tag} ${t.sub.kind}, ${t.history.join(">")})`;
      if (t.cancel === "acked") {
        if (t.terminal.status !== "CANCELLED") {
          this.#violation(`outcome:${t.id}`, `${why} ended ${label} after a cancel answered 202`);
        }
      } else if (t.conflictStatus !== null) {
        if (t.terminal.status !== t.conflictStatus) {
          this.#violation(
            `outcome:${t.id}`,
            `${why} ended ${label}; a cancel had answered 409 with ${t.conflictStatus}`,
          );
        }
      } else {
        const allowed = [
          ...OUTCOMES[t.sub.kind],
          ...(t.cancel === "unknown" ? ["CANCELLED:cancelled"] : []),
          // A job left running by a killed server is timed by nobody until the restart
          // stops it, and what it checkpointed meanwhile is kept: a hanging job that was
          // orphaned (its request then runs a later attempt) may so reach its end.
          ...(HANGS.has(t.sub.kind) && t.attemptMax > 1 ? ["SUCCEEDED"] : []),
        ];
        if (!allowed.includes(label)) {
          this.#violation(
            `outcome:${t.id}`,
            `${why} ended ${label}; allowed: ${allowed.join(", ")}`,
          );
        }
      }
    }
    // Results of some successes, and the keys of some requests once more.
    const succeeded = [...this.#byId.values()].filter((t) => t.terminal?.status === "SUCCEEDED");
    for (let i = 0; i < Math.min(12, succeeded.length); i++) {
      const t = this.#rng.pick(succeeded);
      const a = await this.#call("GET", `/v1/requests/${t.id}/result`);
      if (!isAnswer(a)) continue;
      const output = isRecord(a.body) && isRecord(a.body.output) ? a.body.output : null;
      if (a.status !== 200 || !output || output.steps !== t.sub.body.input.steps) {
        this.#violation(
          `result:${t.id}`,
          `result of SUCCEEDED ${t.id} answered ${a.status}: ${JSON.stringify(a.body).slice(0, 200)}`,
        );
      } else if (output.attempt !== t.attemptMax) {
        this.#violation(
          `result-attempt:${t.id}`,
          `${t.id} succeeded at attempt ${t.attemptMax}, its result says attempt ${String(output.attempt)}`,
        );
      }
    }
    const keyed = this.#subs.filter((s) => s.key !== null && s.outcome === "acked");
    for (let i = 0; i < Math.min(15, keyed.length); i++) {
      const sub = this.#rng.pick(keyed);
      const a = await this.#call("POST", `/v1/queues/${QUEUE}/requests`, {
        body: sub.body,
        headers: { "idempotency-key": sub.key ?? "" },
      });
      this.#onSubmitAnswer(sub, a, "final replay");
    }
  }

  async #checkDynamoCounters(): Promise<void> {
    const endpoint = this.#opts.awsEndpoint;
    if (!endpoint) return;
    const client = new DynamoDBClient({
      endpoint,
      region: "us-east-1",
      credentials: { accessKeyId: "test", secretAccessKey: "test" },
    });
    try {
      const store = new DynamoRequestStore({
        client,
        tableName: resourceNames(this.#server.awsPrefix).tableName,
        queues: () => [QUEUE],
      });
      const counted = await store.recount({});
      const stored = await store.queueCounts(QUEUE);
      this.report.counterChecks++;
      this.#compareCounters({ [QUEUE]: stored }, counted, "dynamodb");
    } catch (error) {
      this.#violation(
        "dynamo-recount",
        `could not recount the DynamoDB counters: ${String(error)}`,
      );
    } finally {
      client.destroy();
    }
  }

  // ---------------------------------------------------------------- the run

  async run(): Promise<ChaosReport> {
    const log = (line: string) => this.#event(line, true);
    const procTimer = setInterval(() => {
      if (!this.#finished) this.#procTick();
    }, 150);
    try {
      log(`run ${this.#runId}: seed ${this.#opts.seed}, ${this.#opts.durationMs / 1000}s of chaos`);
      await this.#start();
      this.#t0Chaos = Date.now();
      // A loop that throws ends the chaos phase early (and is a violation).
      const guard = (name: string, loop: Promise<void>) =>
        loop.catch((error: unknown) => {
          this.#violation(
            `loop:${name}`,
            `the ${name} loop failed: ${(error as Error).stack ?? String(error)}`,
          );
          this.#chaosOver = true;
        });
      const loops = [
        guard("worker", this.#worker()),
        guard("worker", this.#worker()),
        guard("sampler", this.#sampler()),
        guard("killer", this.#killer()),
        ...(this.#opts.backend === "embedded"
          ? [guard("launcher killer", this.#launcherKiller())]
          : []),
      ];
      const end = this.#t0Chaos + this.#opts.durationMs;
      while (!this.#chaosOver && Date.now() < end) await sleep(Math.min(200, end - Date.now()));
      this.#chaosOver = true;
      await Promise.all(loops);
      log("chaos over: draining");
      if (!this.#up) await this.#start();
      await this.#resolveUnknown();
      await this.#drain();
      log(`drained in ${(this.report.drainMs / 1000).toFixed(1)}s: final checks`);
      await this.#finalChecks();
    } catch (error) {
      this.#violation(
        "run-aborted",
        `the run stopped early: ${(error as Error).stack ?? String(error)}`,
      );
    } finally {
      this.#finished = true;
      clearInterval(procTimer);
      this.#collectServerLog();
      this.#db?.close();
      await this.#server.dispose().catch(() => {});
      // Anything of this run still alive now is a leftover (already reported): stop it.
      killProcesses(this.#scanner.scan());
    }
    this.report.requests = this.#byId.size;
    for (const t of this.#byId.values()) this.#fault(`job:${t.sub.kind}`);
    this.report.wallMs = Date.now() - this.#t0;
    this.report.serverLogNotes = [...this.#serverNotes];
    const lines = [...this.#violations.values()].map((v) =>
      v.count > 1 ? `${v.message} (×${v.count})` : v.message,
    );
    this.report.violations =
      lines.length > MAX_VIOLATION_LINES
        ? [
            ...lines.slice(0, MAX_VIOLATION_LINES),
            `… and ${lines.length - MAX_VIOLATION_LINES} more`,
          ]
        : lines;
    return this.report;
  }
}

/** Runs one chaos run and reports its figures; `violations` is empty when every invariant held. */
export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  return new ChaosRun(options).run();
}
