/**
 * Fake ports for unit tests of the domain core. Nothing here runs a process or touches the
 * network; time and ids are under the test's control. The RequestStore is deliberately not
 * faked: tests use the real SqliteRequestStore on ":memory:" (see `makeDeps`).
 */
import { InProcessTrigger } from "../../functions/adapters/embedded/in-process-trigger.ts";
import { SqliteRequestStore } from "../../functions/adapters/embedded/sqlite-store.ts";
import { parseConfig } from "../../functions/config/load.ts";
import type { QueueConfig, QueueConfigInput } from "../../functions/config/schema.ts";
import type {
  Artifact,
  Clock,
  Compute,
  DispatchTrigger,
  Ids,
  JobEvent,
  LogPage,
  LogStore,
  Reaped,
  ResultStore,
  StopReason,
} from "../../functions/core/ports.ts";
import type { Progress, RequestRecord } from "../../functions/core/request.ts";
import type { CoreDeps } from "../../functions/core/usecases/deps.ts";
import { dispatchQueue, recordJobEvent } from "../../functions/core/usecases/lifecycle.ts";
import { type SubmitBody, submitRequest } from "../../functions/core/usecases/submit.ts";

/** 2026-11-26T10:00:00.000Z: a fixed, realistic start instant. */
export const T0 = Date.UTC(2026, 10, 26, 10, 0, 0);

/** A clock that only moves when the test says so. */
export class FakeClock implements Clock {
  #now: number;
  constructor(start = T0) {
    this.#now = start;
  }
  now(): number {
    return this.#now;
  }
  set(ms: number): void {
    this.#now = ms;
  }
  advance(ms: number): number {
    this.#now += ms;
    return this.#now;
  }
  advanceSeconds(seconds: number): number {
    return this.advance(seconds * 1000);
  }
}

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** `value` in Crockford base32, left-padded with zeros to `width` characters. */
function base32(value: bigint, width: number): string {
  let out = "";
  let v = value;
  for (let i = 0; i < width; i++) {
    out = CROCKFORD[Number(v % 32n)] + out;
    v /= 32n;
  }
  if (v !== 0n) throw new Error(`${value} does not fit in ${width} base32 characters`);
  return out;
}

/** A `req_` id with a ULID-shaped body: 26 Crockford base32 characters. */
export const REQUEST_ID_PATTERN = /^req_[0-7][0-9A-HJKMNP-TV-Z]{25}$/;

/**
 * Sequential request ids: `req_` + a valid ULID whose time part is fixed and whose random
 * part is a counter, so ids sort (as strings) in the order they were made whatever the clock
 * does.
 */
export class SequentialIds implements Ids {
  #next = 1n;
  readonly issued: string[] = [];
  constructor(private readonly timeMs = T0) {}
  requestId(): string {
    const id = `req_${base32(BigInt(this.timeMs), 10)}${base32(this.#next++, 16)}`;
    this.issued.push(id);
    return id;
  }
}

export type ComputeCall =
  | { op: "start"; id: string; attempt: number }
  | { op: "stop"; id: string; attempt: number; reason: StopReason }
  | { op: "reap"; id: string; attempt: number };

/** What `FakeCompute.start` does for one call. */
export type StartPlan = "ok" | "throw" | "hold";

interface HeldStart {
  request: RequestRecord;
  resolve: (value: { jobRef: string }) => void;
  reject: (error: Error) => void;
}

/**
 * A compute backend that runs nothing. It records every call in order, lets the test decide
 * per start whether it succeeds, throws or stays pending, and turns test calls into
 * JobEvents delivered to `onEvent` (wired to recordJobEvent by `makeDeps`).
 *
 * It also tracks which attempts have a "live" job (started and not yet exited or reaped), so
 * that a test can check a request never has two jobs at once.
 */
export class FakeCompute implements Compute {
  retries: "core" | "backend" = "core";
  readonly calls: ComputeCall[] = [];
  /** Chooses what each start does; default: every start succeeds. */
  plan: (request: RequestRecord) => StartPlan = () => "ok";
  onEvent: (event: JobEvent) => Promise<void> = async () => {};
  readonly #held = new Map<string, HeldStart>();
  /** requestId → attempts whose job is live. */
  readonly live = new Map<string, Set<number>>();
  /** Descriptions of every start that found another live job of the same request. */
  readonly overlaps: string[] = [];

  constructor(private readonly clock: Clock) {}

  static jobRef(id: string, attempt: number): string {
    return `job-${id}-${attempt}`;
  }

  async start(request: RequestRecord, _queue: QueueConfig): Promise<{ jobRef: string }> {
    this.calls.push({ op: "start", id: request.id, attempt: request.attempt });
    const plan = this.plan(request);
    if (plan === "throw") throw new Error(`no capacity for ${request.id}`);
    const jobRef = FakeCompute.jobRef(request.id, request.attempt);
    if (plan === "hold") {
      return new Promise((resolve, reject) => {
        this.#held.set(request.id, {
          request,
          resolve: (v) => {
            this.#markLive(request);
            resolve(v);
          },
          reject,
        });
      });
    }
    this.#markLive(request);
    return { jobRef };
  }

  async stop(request: RequestRecord, reason: StopReason): Promise<void> {
    this.calls.push({ op: "stop", id: request.id, attempt: request.attempt, reason });
  }

  /**
   * requestId → when the dead server's job of it started, for a job that is still running
   * when {@link reap} comes (it outlived its server); absent: the job ended with it.
   */
  readonly orphansSince = new Map<string, number>();

  /** Runs inside every {@link reap} (a test moves its clock: a reap waiting out a grace). */
  onReap: () => void = () => {};

  async reap(request: RequestRecord): Promise<Reaped> {
    this.calls.push({ op: "reap", id: request.id, attempt: request.attempt });
    this.onReap();
    this.live.get(request.id)?.clear();
    const since = this.orphansSince.get(request.id);
    this.orphansSince.delete(request.id);
    return { runningSince: since ?? null };
  }

  /** Calls of one kind, in order. */
  callsOf<K extends ComputeCall["op"]>(op: K): Extract<ComputeCall, { op: K }>[] {
    return this.calls.filter((c): c is Extract<ComputeCall, { op: K }> => c.op === op);
  }

  /** Whether a held start of `id` is pending. */
  isHeld(id: string): boolean {
    return this.#held.has(id);
  }

  /** Lets a held start of `id` resolve with its job reference. */
  release(id: string): void {
    const h = this.#held.get(id);
    if (!h) throw new Error(`no held start for ${id}`);
    this.#held.delete(id);
    h.resolve({ jobRef: FakeCompute.jobRef(id, h.request.attempt) });
  }

  /** Makes a held start of `id` reject. */
  failHeld(id: string, message = "launch failed"): void {
    const h = this.#held.get(id);
    if (!h) throw new Error(`no held start for ${id}`);
    this.#held.delete(id);
    h.reject(new Error(message));
  }

  async emit(event: JobEvent): Promise<void> {
    if (event.type === "exited") this.live.get(event.requestId)?.delete(event.attempt);
    await this.onEvent(event);
  }

  running(id: string, attempt: number, at = this.clock.now()): Promise<void> {
    return this.emit({
      type: "running",
      requestId: id,
      attempt,
      at,
      jobRef: FakeCompute.jobRef(id, attempt),
    });
  }

  progress(
    id: string,
    attempt: number,
    progress: Omit<Progress, "updatedAt">,
    at = this.clock.now(),
  ): Promise<void> {
    return this.emit({ type: "progress", requestId: id, attempt, at, progress });
  }

  exited(
    id: string,
    attempt: number,
    outcome: "succeeded" | "failed" | "timeout" | "lost",
    at = this.clock.now(),
    message?: string,
  ): Promise<void> {
    return this.emit({
      type: "exited",
      requestId: id,
      attempt,
      at,
      outcome,
      ...(message !== undefined ? { message } : {}),
    });
  }

  #markLive(request: RequestRecord): void {
    let set = this.live.get(request.id);
    if (!set) {
      set = new Set();
      this.live.set(request.id, set);
    }
    if (set.size > 0) {
      this.overlaps.push(
        `${request.id} attempt ${request.attempt} started while attempts ${[...set].join(",")} live`,
      );
    }
    set.add(request.attempt);
  }
}

/** Results keyed by request id; `getResult` of an unknown id answers an empty result. */
export class FakeResultStore implements ResultStore {
  readonly results = new Map<string, { output: unknown; artifacts: Artifact[] }>();
  readonly reads: string[] = [];
  async getResult(requestId: string): Promise<{ output: unknown; artifacts: Artifact[] }> {
    this.reads.push(requestId);
    return this.results.get(requestId) ?? { output: null, artifacts: [] };
  }
}

/** Log lines keyed by request id; the cursor is the index of the next line. */
export class FakeLogStore implements LogStore {
  readonly lines = new Map<string, string[]>();
  async read(requestId: string, cursor: string | undefined, limit: number): Promise<LogPage> {
    const all = this.lines.get(requestId) ?? [];
    const from = cursor === undefined ? 0 : Number(cursor);
    const page = all.slice(from, from + limit);
    return { lines: page, nextCursor: String(from + page.length) };
  }
}

/** Records wake-ups and does nothing else: the test dispatches by hand. */
export class RecordingTrigger implements DispatchTrigger {
  readonly wakes: string[] = [];
  async wake(queue: string): Promise<void> {
    this.wakes.push(queue);
  }
}

export interface ChangeRecord {
  id: string;
  status: RequestRecord["status"];
  event: "started" | "progress" | "completed";
}

export interface TestHarness {
  deps: CoreDeps;
  store: SqliteRequestStore;
  clock: FakeClock;
  ids: SequentialIds;
  compute: FakeCompute;
  results: FakeResultStore;
  logs: FakeLogStore;
  queues: Record<string, QueueConfig>;
  /** Set when built with `trigger: "recording"` (the default). */
  recording: RecordingTrigger | undefined;
  /** Set when built with `trigger: "in-process"`. */
  inProcess: InProcessTrigger | undefined;
  /** Every onChange notification, in order. */
  changes: ChangeRecord[];
  /** Errors the in-process trigger's dispatches threw. */
  dispatchErrors: unknown[];
  /** Waits for in-process dispatches (no-op with the recording trigger). */
  settle(): Promise<void>;
  close(): void;
}

export interface MakeDepsOptions {
  /** "recording" (default): wake-ups are only recorded; "in-process": the real InProcessTrigger wired to dispatchQueue. */
  trigger?: "recording" | "in-process";
  webhookGuard?: CoreDeps["webhookGuard"];
}

/**
 * CoreDeps over a fresh in-memory SQLite store and fakes. `queues` maps queue names to
 * overrides of the queue config; defaults are filled in by `parseConfig` as for a real
 * config file. The fake compute's events go to `recordJobEvent` with these deps.
 */
export function makeDeps(
  queues: Record<string, Partial<QueueConfigInput>> = { gpu: {} },
  options: MakeDepsOptions = {},
): TestHarness {
  const raw: Record<string, QueueConfigInput> = {};
  for (const [name, overrides] of Object.entries(queues)) {
    raw[name] = { command: ["true"], ...overrides };
  }
  const config = parseConfig({ queues: raw }, "/");
  const clock = new FakeClock();
  const ids = new SequentialIds();
  const compute = new FakeCompute(clock);
  const results = new FakeResultStore();
  const logs = new FakeLogStore();
  const store = new SqliteRequestStore(":memory:");
  const changes: ChangeRecord[] = [];
  const dispatchErrors: unknown[] = [];
  let recording: RecordingTrigger | undefined;
  let inProcess: InProcessTrigger | undefined;
  let trigger: DispatchTrigger;
  const deps: CoreDeps = {
    store,
    // replaced just below; the in-process trigger needs `deps` to exist first
    trigger: { wake: async () => {} },
    compute,
    results,
    logs,
    clock,
    ids,
    queues: config.queues,
    onChange: (request, event) => changes.push({ id: request.id, status: request.status, event }),
    ...(options.webhookGuard ? { webhookGuard: options.webhookGuard } : {}),
  };
  if (options.trigger === "in-process") {
    inProcess = new InProcessTrigger(
      (queue) => dispatchQueue(queue, deps),
      (_queue, error) => dispatchErrors.push(error),
    );
    trigger = inProcess;
  } else {
    recording = new RecordingTrigger();
    trigger = recording;
  }
  deps.trigger = trigger;
  compute.onEvent = (event) => recordJobEvent(event, deps);
  return {
    deps,
    store,
    clock,
    ids,
    compute,
    results,
    logs,
    queues: config.queues,
    recording,
    inProcess,
    changes,
    dispatchErrors,
    settle: async () => {
      await inProcess?.idle();
    },
    close: () => store.close(),
  };
}

let uniqueCounter = 0;
/** A name unique within this test process, for tenants and idempotency keys. */
export function uid(prefix: string): string {
  uniqueCounter++;
  return `${prefix}-${process.pid}-${uniqueCounter}`;
}

export interface SubmitOptions {
  tenant?: string;
  queue?: string;
  input?: unknown;
  priority?: number;
  timeoutSeconds?: number;
  queueTtlSeconds?: number;
  idempotencyKey?: string;
}

/** Submits through the real use case with a body built from `options`; returns the record. */
export async function submitVia(
  h: Pick<TestHarness, "deps" | "queues">,
  options: SubmitOptions = {},
): Promise<RequestRecord> {
  const body: Record<string, unknown> = { input: options.input ?? { n: 1 } };
  if (options.priority !== undefined) body.priority = options.priority;
  if (options.timeoutSeconds !== undefined) body.timeoutSeconds = options.timeoutSeconds;
  if (options.queueTtlSeconds !== undefined) body.queueTtlSeconds = options.queueTtlSeconds;
  const queue = options.queue ?? Object.keys(h.queues)[0] ?? "gpu";
  const outcome = await submitRequest(
    {
      tenant: options.tenant ?? "tenant-a",
      queue,
      body: body as unknown as SubmitBody,
      rawBody: body,
      ...(options.idempotencyKey !== undefined ? { idempotencyKey: options.idempotencyKey } : {}),
    },
    h.deps,
  );
  return outcome.request;
}
