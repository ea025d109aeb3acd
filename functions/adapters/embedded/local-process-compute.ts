import { chmod, mkdir, rm } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type AttemptHandle,
  type AttemptResult,
  type AttemptStorage,
  attemptPaths,
  baseJobEnv,
  decodeJobRef,
  findJobsOfRequest,
  reapProcessGroup,
  startAttempt,
  startTimeToEpochMs,
} from "../../../jobs/runner/index.ts";
import type { QueueConfig } from "../../config/schema.ts";
import { LaunchLostError } from "../../core/errors.ts";
import type { Clock, Compute, JobEvent, Reaped, StopReason } from "../../core/ports.ts";
import type { RequestRecord } from "../../core/request.ts";
import { FsAttemptStorage, FsLayout, FsLogStore } from "./fs-storage.ts";
import { type GpuPool, gpuEnv } from "./gpu-pool.ts";
import type { JobLauncher } from "./launcher.ts";
import type { SparePool } from "./spare-pool.ts";

/**
 * Where job log lines are written: {@link FsLogStore} by default, S3LogStore when the
 * server runs on the AWS adapters. `attempt` is the attempt the lines belong to.
 */
export interface JobLogSink {
  append(requestId: string, lines: readonly string[], attempt?: number): Promise<void>;
  /** Resolves once every line appended so far for the request is stored. */
  flush?(requestId?: string): Promise<void>;
}

export interface LocalProcessComputeOptions {
  /** The server's data directory (see {@link FsLayout}); work dirs live there whatever the storage. */
  dataDir: string;
  /** Receives the job events of every attempt, in order per attempt; awaited one by one. */
  onEvent: (event: JobEvent) => Promise<void>;
  clock?: Clock;
  /** Where job logs go; an {@link FsLogStore} on `dataDir` when omitted. */
  logs?: JobLogSink;
  /**
   * Checkpoint and output storage of a request's attempts (restore, saves, salvage after a
   * crash); an {@link FsAttemptStorage} under `dataDir` when omitted.
   */
  storageFor?: (request: RequestRecord) => AttemptStorage;
  /** Environment jobs inherit before the queue's env (default: the runner's allow-list). */
  baseEnv?: Readonly<Record<string, string>>;
  /** Progress-file poll period (default 250 ms). */
  pollIntervalMs?: number;
  /** SIGTERM-to-SIGKILL wait when reaping a dead server's job (default 5 s). */
  reapGraceMs?: number;
  /** Told about failures that have no caller to go to (an event handler that threw). */
  onError?: (error: unknown, context: string) => void;
  /**
   * Runs every job as this user (the server runs as root; SPEC §5 `LONGRUN_JOB_USER`). Its
   * work dir is handed to it and is the only folder of the data directory it can enter;
   * HOME is the work dir, as the server's own home is not the job's.
   */
  jobUser?: { name: string; uid: number; gid: number };
  /**
   * The machine's GPUs (SPEC §5): each job waits for and gets exactly its queue's
   * `resources.gpus` devices. Without a pool GPU needs are not enforced.
   */
  gpus?: GpuPool;
  /**
   * Starts the jobs instead of this process (launcher.ts): jobs write their output straight
   * into the log file of {@link FsLayout}, so use it only with the file log store.
   */
  launcher?: JobLauncher;
  /**
   * Work dirs and empty files made ahead (spare-pool.ts): a start renames a recycled work dir
   * into place and the launcher links its launch record and a new log from spare files.
   * Not used with {@link jobUser}.
   */
  spares?: SparePool;
}

interface Running {
  requestId: string;
  attempt: number;
  handle: AttemptHandle;
  /** Why `stop` was called, null while nobody asked it to stop. */
  stopReason: StopReason | null;
  /** Resolves when the attempt is over and its last event has been delivered. */
  finished: Promise<void>;
}

/**
 * Runs attempts as local process groups through the job runner (jobs/runner) and reports
 * what the AWS Batch state-change rule reports on AWS: `running` once spawned, `progress`
 * after each checkpointed progress change, `exited` at the end.
 *
 * Stops map onto events as the lifecycle expects: a stop for `cancel` ends as `failed`
 * (the core sees cancelRequested and records CANCELLED); a stop for `timeout` as `timeout`;
 * a stop for `shutdown` reports nothing, so that restart recovery finds the attempt still
 * active and retries it as lost, from the checkpoint saved when it exited.
 */
export class LocalProcessCompute implements Compute {
  /** Failed attempts are retried by the core, one local process per attempt. */
  readonly retries = "core" as const;
  readonly #layout: FsLayout;
  readonly #logs: JobLogSink;
  readonly #storageFor: (request: RequestRecord) => AttemptStorage;
  readonly #clock: Clock;
  readonly #opts: LocalProcessComputeOptions;
  readonly #running = new Map<string, Running>();
  /** Work dirs being removed after their attempt's `exited` went out, by path. */
  readonly #cleaning = new Map<string, Promise<void>>();

  constructor(options: LocalProcessComputeOptions) {
    this.#opts = options;
    this.#layout = new FsLayout(options.dataDir);
    this.#logs = options.logs ?? new FsLogStore(this.#layout);
    const jobUid = options.jobUser?.uid;
    this.#storageFor =
      options.storageFor ??
      ((request) =>
        new FsAttemptStorage(this.#layout, request.id, jobUid !== undefined ? { jobUid } : {}));
    this.#clock = options.clock ?? { now: () => Date.now() };
    this.#spares = options.jobUser ? undefined : options.spares;
  }

  readonly #spares: SparePool | undefined;

  /** How many attempts this process is running. */
  runningCount(): number {
    return this.#running.size;
  }

  async start(request: RequestRecord, queue: QueueConfig): Promise<{ jobRef: string }> {
    // A start of an attempt that just ended (a stray relaunch) must not race the removal of
    // its work dir. Awaited only when there is one, so the check below and the `set` that
    // claims the request stay in one synchronous step.
    const workDir = this.#layout.workDir(request.id, request.attempt);
    for (let c = this.#cleaning.get(workDir); c; c = this.#cleaning.get(workDir)) await c;
    const existing = this.#running.get(request.id);
    if (existing) {
      // A second start of the same attempt (a duplicate dispatch) must not run it twice.
      if (existing.attempt === request.attempt)
        return { jobRef: await existing.handle.started.then((s) => s.jobRef) };
      throw new Error(
        `request ${request.id} still runs attempt ${existing.attempt}; attempt ${request.attempt} cannot start`,
      );
    }
    const { id, attempt } = request;
    // The devices come first: until they are free the request stays STARTING without a job
    // (waitReason no_capacity). A cancel gives up the wait, which fails this launch.
    const pool = this.#opts.gpus;
    let devices: string[] = [];
    if (pool) devices = await pool.acquire(request, queue.resources.gpus);
    const confine =
      pool || queue.resources.gpus === 0 ? gpuEnv(devices) : ({} as Record<string, string>);
    const logLine = (line: string) => {
      this.#logs.append(id, [line], attempt).catch((error) => this.#report(error, `log of ${id}`));
    };
    const header = `--- attempt ${attempt} ---`;
    const launcher = this.#opts.launcher;
    const spares = this.#spares;
    // The launcher writes the header into the log right before the job's own output.
    if (!launcher) logLine(header);

    // Events of one attempt are delivered one after another, in the order they happened.
    let events: Promise<void> = Promise.resolve();
    let spawned = false;
    const emit = (event: JobEvent) => {
      events = events.then(() =>
        this.#opts
          .onEvent(event)
          .catch((error) => this.#report(error, `${event.type} event of ${id}`)),
      );
    };

    const user = this.#opts.jobUser;
    if (user) {
      // The job user passes through (x, no listing) to its own work dir; umask made it 0700.
      const root = this.#layout.workRoot(id);
      await mkdir(root, { recursive: true });
      await chmod(root, 0o711);
    }
    const baseEnv = user
      ? {
          ...(this.#opts.baseEnv ?? baseJobEnv()),
          HOME: workDir,
          USER: user.name,
          LOGNAME: user.name,
        }
      : this.#opts.baseEnv;

    const handle = startAttempt({
      command: queue.command,
      env: { ...queue.env, ...confine },
      job: { requestId: id, queue: request.queue, attempt },
      workDir,
      input: request.input,
      storage: this.#storageFor(request),
      timeoutSeconds: request.timeoutSeconds,
      cancelGraceSeconds: queue.cancelGraceSeconds,
      ...(baseEnv ? { baseEnv } : {}),
      ...(user ? { user: { uid: user.uid, gid: user.gid } } : {}),
      ...(this.#opts.pollIntervalMs ? { pollIntervalMs: this.#opts.pollIntervalMs } : {}),
      logSink: (line) => logLine(line),
      ...(launcher
        ? {
            spawn: launcher.spawnerFor(id, attempt, this.#layout.logFile(id), header, spares),
          }
        : {}),
      ...(spares ? { takeWorkDir: (dir: string) => spares.takeDir(dir) } : {}),
      onStarted: ({ jobRef }) => {
        spawned = true;
        emit({ type: "running", requestId: id, attempt, at: this.#clock.now(), jobRef });
      },
      onProgress: (progress) =>
        emit({ type: "progress", requestId: id, attempt, at: this.#clock.now(), progress }),
    });
    const entry: Running = {
      requestId: id,
      attempt,
      handle,
      stopReason: null,
      finished: Promise.resolve(),
    };
    this.#running.set(id, entry);
    entry.finished = handle.done.then(async (result) => {
      // Every line is stored before `exited` goes out: a client that sees the terminal
      // status reads the whole log.
      try {
        await this.#logs.flush?.(id);
      } catch (error) {
        this.#report(error, `flushing the log of ${id}`);
      }
      // Off the map before `exited` goes out: the lifecycle may start the next attempt from it.
      this.#running.delete(id);
      // The job is gone: its devices go to the next in line.
      pool?.release(id);
      // An attempt that never spawned is reported by start()'s rejection instead.
      const exited = spawned ? this.#exitedEvent(result, entry) : null;
      if (exited) emit(exited);
      // The work dir goes while the event is delivered, off the path to the next start: no
      // later attempt uses it (each has its own), and `finished` still waits for it.
      const cleaned = (
        spares
          ? spares.recycleDir(workDir)
          : rm(workDir, { recursive: true, force: true }).catch((error: unknown) =>
              this.#report(error, `cleaning ${workDir}`),
            )
      ).finally(() => this.#cleaning.delete(workDir));
      this.#cleaning.set(workDir, cleaned);
      await Promise.all([events, cleaned]);
    });

    try {
      const { jobRef } = await handle.started;
      return { jobRef };
    } catch (error) {
      // Nothing ran, or nothing can tell whether it did: the lifecycle records the launch
      // from this rejection, not an event. The runner wraps the spawner's error; a lost
      // launch keeps its kind, so the attempt ends `lost` rather than `failed`.
      await entry.finished;
      const cause = (error as Error).cause;
      throw cause instanceof LaunchLostError ? cause : error;
    }
  }

  #exitedEvent(result: AttemptResult, entry: Running): JobEvent | null {
    const base = {
      type: "exited" as const,
      requestId: entry.requestId,
      attempt: entry.attempt,
      at: this.#clock.now(),
      message: result.message,
    };
    switch (result.outcome) {
      case "succeeded":
      case "failed":
      case "timeout":
        return { ...base, outcome: result.outcome };
      case "stopped":
        // A cancel becomes CANCELLED in the core because cancelRequested is set.
        return entry.stopReason === "shutdown" ? null : { ...base, outcome: "failed" };
      case "lost":
        // Its exit status died with the launcher: retried from its checkpoint, not counted.
        return { ...base, outcome: "lost" };
    }
  }

  /** A request whose launch waits for GPUs says which (SPEC `no_capacity`). */
  capacityWait(request: RequestRecord): { detail: string } | null {
    const detail = this.#opts.gpus?.waitOf(request.id) ?? null;
    return detail === null ? null : { detail };
  }

  async stop(request: RequestRecord, reason: StopReason): Promise<void> {
    // A launch still waiting for devices has no job to stop: give up the wait (not for a
    // shutdown, which leaves it STARTING for the restart to retry).
    if (reason !== "shutdown" && this.#opts.gpus?.cancelWait(request.id)) return;
    const entry = this.#running.get(request.id);
    if (!entry || entry.attempt !== request.attempt) return;
    entry.stopReason ??= reason;
    // The runner reports reason "timeout" as a `timeout` outcome, anything else as `stopped`.
    entry.handle.stop(reason);
  }

  async reap(request: RequestRecord): Promise<Reaped> {
    const own = this.#running.get(request.id);
    if (own) {
      // Still ours (not a leftover): stop it without reporting, as a shutdown would.
      await this.stop(request, "shutdown");
      await own.finished;
      return { runningSince: null };
    }
    const reaped = await this.#reapLeftover(request);
    // Only now that its job is surely gone do a dead server's devices come back.
    this.#opts.gpus?.release(request.id);
    return reaped;
  }

  /**
   * After a restart's recovery: devices the assignments file gives to requests that were
   * not in flight come back once no job of theirs is found running.
   */
  async settleGpus(): Promise<void> {
    const pool = this.#opts.gpus;
    if (!pool) return;
    for (const id of pool.holders()) {
      if (this.#running.has(id)) continue;
      if ((await findJobsOfRequest(id)).length === 0) pool.release(id);
    }
  }

  async #reapLeftover(request: RequestRecord): Promise<Reaped> {
    const graceMs = this.#opts.reapGraceMs ?? 5000;
    let spawned = request.jobRef !== null;
    // The dead server's job, if it was still running: when it started (SPEC §5: one that
    // outlived its timeout ends the request `timeout`).
    let runningSince: number | null = null;
    const reapOne = async (ref: string) => {
      const outcome = await reapProcessGroup(ref, { graceMs });
      const startTime = decodeJobRef(ref)?.startTime ?? null;
      if (outcome === "reaped" && startTime !== null) {
        const since = await startTimeToEpochMs(startTime);
        if (since !== null) runningSince = Math.min(runningSince ?? since, since);
      }
    };
    if (request.jobRef && decodeJobRef(request.jobRef)) {
      await reapOne(request.jobRef);
    } else if (request.jobRef === null) {
      // The dead server may have spawned the job and died before it stored the handle.
      const leftovers = await findJobsOfRequest(request.id);
      await Promise.all(leftovers.map(reapOne));
      spawned = leftovers.length > 0;
    }
    // A job that never spawned may have left a checkpoint restore that the crash cut short
    // in its work dir: only a spawned job's folder is trusted.
    if (spawned && request.attempt > 0) {
      await this.#salvageCheckpoint(request);
    } else {
      await rm(this.#layout.workRoot(request.id), { recursive: true, force: true });
    }
    return { runningSince };
  }

  /**
   * A dead server never saved what its job checkpointed after the last progress change
   * (nor at the SIGTERM just sent by the reaper). The job writes checkpoint files
   * atomically, so its work dir's checkpoint folder is as good as one saved at exit.
   */
  async #salvageCheckpoint(request: RequestRecord): Promise<void> {
    const requestId = request.id;
    const workDir = this.#layout.workDir(requestId, request.attempt);
    const { checkpointDir } = attemptPaths(workDir);
    try {
      await this.#storageFor(request).saveCheckpoint(checkpointDir);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "ENOENT") this.#report(error, `salvaging the checkpoint of ${requestId}`);
    }
    await rm(this.#layout.workRoot(requestId), { recursive: true, force: true });
  }

  /**
   * Stops every running attempt for a server shutdown (no events: the next start retries
   * them) and waits for them; whatever still runs after `graceMs` is killed.
   */
  async shutdown(graceMs: number): Promise<void> {
    const entries = [...this.#running.values()];
    for (const entry of entries) {
      entry.stopReason ??= "shutdown";
      entry.handle.stop("shutdown");
    }
    const all = Promise.all(entries.map((e) => e.finished));
    const inTime = await Promise.race([all.then(() => true), sleep(graceMs).then(() => false)]);
    if (!inTime) {
      for (const entry of entries) entry.handle.kill("shutdown");
      await all;
    }
  }

  #report(error: unknown, context: string): void {
    if (this.#opts.onError) this.#opts.onError(error, context);
    else console.error(`[longrun] ${context}:`, error);
  }
}
