/**
 * The job contract (SPEC §4), implemented once: runs ONE attempt of a job as a process
 * group, feeds it input, watches its progress file, saves its checkpoint folder after every
 * progress change and at exit, enforces the per-attempt timeout, stops it with SIGTERM then
 * SIGKILL, and saves its outputs after exit 0. Storage is behind {@link AttemptStorage} so
 * the same code runs in the embedded server (filesystem) and in a Batch container (S3).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { lchown, mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { delimiter, join, resolve } from "node:path";
import { StringDecoder } from "node:string_decoder";
import { JOB_ENV } from "../../functions/config/env.ts";
import { EMPTY_FOLDER, folderSignature } from "./checkpoint-signature.ts";
import { encodeJobRef, processStartTime, signalGroup } from "./process-group.ts";

/** Where an attempt's checkpoint and outputs live between attempts. */
export interface AttemptStorage {
  /** Fills `dir` (empty, existing) with the last saved checkpoint; nothing on a first attempt. */
  restoreCheckpoint(dir: string): Promise<void>;
  /**
   * Optional and synchronous: false when no checkpoint was saved yet, so the runner skips
   * the restore and knows the folder is empty (most launches: saves a trip per launch).
   */
  hasCheckpoint?(): boolean;
  /**
   * Fills `dir` (empty, existing) with the request's input files, read-only (SPEC §4
   * LONGRUN_INPUT_DIR); nothing when it has none. Optional: a storage without it gives
   * every job an empty folder.
   */
  restoreInputs?(dir: string): Promise<void>;
  /**
   * Saves `dir` as the new checkpoint atomically: a reader never sees a half-saved one. The
   * runner skips the call when the folder is what was last restored or saved (see
   * {@link folderSignature}), so the storage must not change in between by other means.
   */
  saveCheckpoint(dir: string): Promise<void>;
  /**
   * After exit 0: persists every file of the output dir, result.json included. The runner
   * no longer needs the folder afterwards, so the storage may move it away.
   */
  saveOutputs(dir: string): Promise<void>;
}

/** A progress report as the job wrote it, normalised. */
export interface AttemptProgress {
  current: number;
  total: number | null;
  message: string | null;
}

/** Which stream a log line came from; `runner` lines are the runner's own notes. */
export type LogStream = "stdout" | "stderr" | "runner";

export interface AttemptOptions {
  /** argv: the program and its arguments (no shell). */
  command: readonly string[];
  /** The queue's `env`, added to the base environment. */
  env?: Readonly<Record<string, string>>;
  /** Identity of the attempt, exported to the job as LONGRUN_* variables. */
  job: { requestId: string; queue: string; attempt: number };
  /**
   * A folder owned by this attempt; it is emptied first and holds input.json, input/, output/,
   * checkpoint/, progress.json and the runner's own {@link AttemptPaths.clockFile}. The
   * caller removes it when the attempt has ended.
   */
  workDir: string;
  /** The request's input, written as JSON to LONGRUN_INPUT_FILE. */
  input: unknown;
  storage: AttemptStorage;
  /** Per-attempt limit; the attempt is stopped and ends `timeout` once it is exceeded. */
  timeoutSeconds: number;
  /** Time between SIGTERM and SIGKILL when the attempt is stopped. */
  cancelGraceSeconds: number;
  /** Called once the process is spawned, before any progress. */
  onStarted?: (started: AttemptStarted) => void;
  /** Called after the checkpoint saved for this progress change (SPEC §4 order). */
  onProgress?: (progress: AttemptProgress) => void | Promise<void>;
  /** Receives stdout and stderr line by line, and the runner's own notes. */
  logSink?: (line: string, stream: LogStream) => void;
  /**
   * Environment the job inherits before the queue's env and the LONGRUN_* variables;
   * defaults to {@link baseJobEnv} of this process's environment.
   */
  baseEnv?: Readonly<Record<string, string>>;
  /** Progress-file poll period; 250 ms keeps status "within a few seconds" cheaply. */
  pollIntervalMs?: number;
  /** Stops the attempt when aborted (same as {@link AttemptHandle.stop} with its reason). */
  signal?: AbortSignal;
  /**
   * Run the job as this user and group (the runner runs as root). The prepared work dir is
   * handed over to it first; supplementary groups are dropped at spawn.
   */
  user?: { uid: number; gid: number };
  /**
   * Starts the job process somewhere else than in this process (the embedded server's
   * launcher, which writes the job's stdout and stderr straight into its log). Without it the
   * runner spawns the job itself with piped stdio and hands the lines to `logSink`.
   */
  spawn?: JobSpawner;
  /**
   * Puts a ready work dir in place instead of the runner making one (the embedded server's
   * pool of recycled ones, which renames one in: creating folders and files is the dear part
   * of a start). True when `workDir` now holds exactly empty `checkpoint/`, `input/` and
   * `output/` folders and nothing else but maybe an `input.json` file (written over here);
   * false: the runner makes it.
   */
  takeWorkDir?: (workDir: string) => boolean;
}

/** What {@link JobSpawner} is asked to start: the job, exactly as the runner would spawn it. */
export interface JobSpawnSpec {
  program: string;
  args: readonly string[];
  cwd: string;
  env: Record<string, string>;
  user?: { uid: number; gid: number };
}

/** How a job started by a {@link JobSpawner} ended. */
export interface SpawnedExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /**
   * Set when the exit status could not be known (the process that waited for the job died
   * before it); says why. The attempt then ends `lost`, unless it was being stopped.
   */
  lost?: string;
  /** The job's last line of output, for the failure message (the runner sees no stream). */
  lastLine?: string;
}

/** A job process a {@link JobSpawner} started, leading its own process group. */
export interface SpawnedJob {
  pid: number;
  /** /proc start time of the process (see {@link encodeJobRef}), null where unknown. */
  startTime: string | null;
  /** Resolves once the process has exited. Never rejects. */
  exited: Promise<SpawnedExit>;
}

/** Starts a job process in its own process group; rejects when it could not be started. */
export type JobSpawner = (spec: JobSpawnSpec) => Promise<SpawnedJob>;

export interface AttemptStarted {
  pid: number;
  /** `local:<pid>:<starttime>`, for {@link reapProcessGroup} after a server crash. */
  jobRef: string;
}

/** `lost`: the job ended but its exit status is unknown ({@link SpawnedExit.lost}). */
export type AttemptOutcome = "succeeded" | "failed" | "timeout" | "stopped" | "lost";

export interface AttemptResult {
  outcome: AttemptOutcome;
  /** The process's exit code, null when it ended by a signal or never started. */
  exitCode: number | null;
  /** The signal that ended it (e.g. "SIGKILL"), else null. */
  signal: NodeJS.Signals | null;
  /** One line for a person: why the attempt ended so. */
  message: string;
  /** The reason given to `stop` when outcome is `stopped` or `timeout`, else null. */
  stopReason: string | null;
}

export interface AttemptHandle {
  /** Resolves once the process runs; rejects when it could not be prepared or spawned. */
  readonly started: Promise<AttemptStarted>;
  /** Resolves when the attempt has ended and its checkpoint and outputs are saved. Never rejects. */
  readonly done: Promise<AttemptResult>;
  /**
   * Asks the job to stop: SIGTERM to its process group, SIGKILL after the grace. The
   * outcome is `timeout` for reason "timeout", else `stopped`. Later calls are ignored.
   */
  stop(reason?: string): void;
  /** SIGKILL the group now (a stop whose grace the caller cannot wait for). */
  kill(reason?: string): void;
}

/** Paths of the job contract inside a work dir. */
export interface AttemptPaths {
  inputFile: string;
  /** LONGRUN_INPUT_DIR: the request's uploaded files. */
  inputDir: string;
  outputDir: string;
  checkpointDir: string;
  progressFile: string;
  /** Rewritten by the runner to read the filesystem's clock (see {@link folderSignature}). */
  clockFile: string;
}

/** The contract's files and folders inside `workDir`. */
export function attemptPaths(workDir: string): AttemptPaths {
  return {
    inputFile: join(workDir, "input.json"),
    inputDir: join(workDir, "input"),
    outputDir: join(workDir, "output"),
    checkpointDir: join(workDir, "checkpoint"),
    progressFile: join(workDir, "progress.json"),
    clockFile: join(workDir, ".longrun-clock"),
  };
}

/** Variables a job may reasonably need from the server's environment (nothing secret). */
const PASS_THROUGH = [
  "PATH",
  "HOME",
  "USER",
  "LOGNAME",
  "SHELL",
  "LANG",
  "LANGUAGE",
  "LC_ALL",
  "LC_CTYPE",
  "TZ",
  "TMPDIR",
  "CUDA_VISIBLE_DEVICES",
  "NVIDIA_VISIBLE_DEVICES",
  "LD_LIBRARY_PATH",
  "VIRTUAL_ENV",
  "CONDA_PREFIX",
];

/**
 * The base environment of a job: a short allow-list of `from` (so the server's secrets,
 * tokens and AWS credentials do not leak into jobs), plus PYTHONUNBUFFERED=1 so Python
 * jobs' logs arrive as they are printed rather than when a pipe buffer fills.
 */
export function baseJobEnv(from: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = { PYTHONUNBUFFERED: "1" };
  for (const name of PASS_THROUGH) {
    const value = from[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/**
 * The source folder of the `longrun` Python package (jobs/python/src) when the runner runs
 * from a checkout: {@link withPythonPackage} puts it on every job's PYTHONPATH, so a Python
 * job of the embedded server can `import longrun` without installing it. Where the runner
 * is bundled alone (the Batch image) the folder is absent and the image installs the
 * package with pip instead.
 */
const PYTHON_PACKAGE_SRC = resolve(import.meta.dirname, "../python/src");
const pythonPackageSrc = existsSync(join(PYTHON_PACKAGE_SRC, "longrun", "__init__.py"))
  ? PYTHON_PACKAGE_SRC
  : null;

/**
 * `env` with the longrun Python package's source folder appended to PYTHONPATH: after any
 * folders the queue's env names, so a job that brings its own copy keeps it.
 */
export function withPythonPackage(env: Record<string, string>): Record<string, string> {
  if (pythonPackageSrc === null) return env;
  const path = env.PYTHONPATH
    ? `${env.PYTHONPATH}${delimiter}${pythonPackageSrc}`
    : pythonPackageSrc;
  return { ...env, PYTHONPATH: path };
}

/** Lines longer than this are cut so a job printing without newlines cannot exhaust memory. */
const MAX_LINE_CHARS = 64 * 1024;

/** Splits a byte stream into lines, keeping a partial line until its newline or the end. */
class LineSplitter {
  readonly #decoder = new StringDecoder("utf8");
  #partial = "";

  constructor(private readonly emit: (line: string) => void) {}

  push(chunk: Buffer): void {
    let text = this.#partial + this.#decoder.write(chunk);
    let nl = text.indexOf("\n");
    while (nl >= 0) {
      this.#emitLine(text.slice(0, nl));
      text = text.slice(nl + 1);
      nl = text.indexOf("\n");
    }
    while (text.length > MAX_LINE_CHARS) {
      this.#emitLine(text.slice(0, MAX_LINE_CHARS));
      text = text.slice(MAX_LINE_CHARS);
    }
    this.#partial = text;
  }

  end(): void {
    const rest = this.#partial + this.#decoder.end();
    this.#partial = "";
    if (rest.length > 0) this.#emitLine(rest);
  }

  #emitLine(line: string): void {
    this.emit(line.endsWith("\r") ? line.slice(0, -1) : line);
  }
}

/** Parses a progress file's content; null when it is not (yet) a valid report. */
export function parseProgress(text: string): AttemptProgress | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const v = value as Record<string, unknown>;
  if (typeof v.current !== "number" || !Number.isFinite(v.current)) return null;
  const total = typeof v.total === "number" && Number.isFinite(v.total) ? v.total : null;
  const message = typeof v.message === "string" ? v.message.slice(0, 1000) : null;
  return { current: v.current, total, message };
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Creates `dir` empty, removing whatever a crashed run left there first. */
async function freshDir(dir: string): Promise<void> {
  let created: string | undefined;
  try {
    // The first folder it created: undefined when `dir` was there already.
    created = mkdirSync(dir, { recursive: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "EEXIST" && code !== "ENOTDIR") throw error; // ENOTDIR: a file in the way
  }
  if (created !== undefined) return;
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
}

/** An input.json up to this size is written synchronously (see the work dir's preparation). */
const SYNC_INPUT_CHARS = 64 * 1024;

/** Gives `dir` and everything in it to `uid:gid`; links are changed, not their targets. */
async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  await lchown(dir, uid, gid);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await chownTree(path, uid, gid);
    else await lchown(path, uid, gid);
  }
}

type Launched =
  | {
      pid: number;
      startTime: string | null;
      child: ChildProcess | undefined;
      closed: Promise<SpawnedExit>;
    }
  | { error: unknown };

/** Spawns the job from this process, stdout and stderr piped into `log` line by line. */
async function spawnHere(
  spec: JobSpawnSpec,
  log: (line: string, stream: LogStream) => void,
): Promise<Launched> {
  const proc = spawn(spec.program, spec.args, {
    cwd: spec.cwd,
    env: spec.env,
    detached: true,
    ...(spec.user ? { uid: spec.user.uid, gid: spec.user.gid } : {}),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let lastStderr = "";
  const outLines = new LineSplitter((line) => log(line, "stdout"));
  const errLines = new LineSplitter((line) => {
    if (line.trim()) lastStderr = line.trim();
    log(line, "stderr");
  });
  const closed = new Promise<SpawnedExit>((res) => {
    proc.once("close", (code, signal) => {
      outLines.end();
      errLines.end();
      res({ code, signal, lastLine: lastStderr });
    });
  });
  const spawnError = await new Promise<Error | null>((res) => {
    proc.once("spawn", () => res(null));
    // Kept for the process's lifetime: an 'error' without a listener would crash the server.
    proc.on("error", (error) => {
      res(error);
      log(`[longrun] process error: ${describeError(error)}`, "runner");
    });
  });
  if (spawnError || proc.pid === undefined) return { error: spawnError };
  const pid = proc.pid;
  proc.stdout?.on("data", (chunk: Buffer) => outLines.push(chunk));
  proc.stderr?.on("data", (chunk: Buffer) => errLines.push(chunk));
  // The group's leftovers are killed at `exit` so that `close` fires when a grandchild
  // still holds the pipes.
  proc.once("exit", () => signalGroup(pid, "SIGKILL"));
  return { pid, startTime: await processStartTime(pid), child: proc, closed };
}

/** Has `spawner` start the job; its output is the spawner's to store. */
async function spawnElsewhere(spawner: JobSpawner, spec: JobSpawnSpec): Promise<Launched> {
  try {
    const job = await spawner(spec);
    return { pid: job.pid, startTime: job.startTime, child: undefined, closed: job.exited };
  } catch (error) {
    return { error };
  }
}

/**
 * Starts one attempt and returns at once; see {@link AttemptHandle}. The job runs in its
 * own process group (`detached`) so a stop reaches every process it forked.
 */
export function startAttempt(attemptOptions: AttemptOptions): AttemptHandle {
  // The job runs with cwd = workDir: a relative data dir would make every path it gets wrong.
  const options = { ...attemptOptions, workDir: resolve(attemptOptions.workDir) };
  const paths = attemptPaths(options.workDir);
  const pollMs = options.pollIntervalMs ?? 250;
  const graceMs = Math.max(0, options.cancelGraceSeconds * 1000);
  const log = (line: string, stream: LogStream) => {
    try {
      options.logSink?.(line, stream);
    } catch {
      // A failing log sink must not take the attempt down with it.
    }
  };

  let child: ChildProcess | undefined;
  /** The job's pid (its process group) once it is spawned, here or by `options.spawn`. */
  let jobPid: number | undefined;
  let stopReason: string | null = null;
  let exited = false;
  let killTimer: NodeJS.Timeout | undefined;
  let resolveStarted!: (s: AttemptStarted) => void;
  let rejectStarted!: (e: Error) => void;
  const started = new Promise<AttemptStarted>((res, rej) => {
    resolveStarted = res;
    rejectStarted = rej;
  });
  // Callers that only await `done` must not see an unhandled rejection.
  started.catch(() => {});

  const sendSignal = (signal: NodeJS.Signals) => {
    const pid = jobPid;
    if (pid === undefined || exited) return;
    if (!signalGroup(pid, signal)) child?.kill(signal);
  };

  const stop = (reason = "stop") => {
    if (stopReason !== null) return;
    stopReason = reason;
    if (jobPid === undefined || exited) return; // not spawned yet: the run notices stopReason
    log(`[longrun] stopping (${reason}): SIGTERM, SIGKILL after ${graceMs / 1000}s`, "runner");
    sendSignal("SIGTERM");
    killTimer = setTimeout(() => {
      if (exited) return;
      log("[longrun] grace period over: SIGKILL", "runner");
      sendSignal("SIGKILL");
    }, graceMs);
  };

  const kill = (reason = "stop") => {
    if (stopReason === null) stopReason = reason;
    if (jobPid === undefined || exited) return;
    log(`[longrun] killing (${reason}): SIGKILL`, "runner");
    sendSignal("SIGKILL");
  };

  const onAbort = () => {
    const r: unknown = options.signal?.reason;
    stop(typeof r === "string" ? r : "stop");
  };

  const run = async (): Promise<AttemptResult> => {
    const notStarted = (message: string): AttemptResult => ({
      outcome: stopReason === null ? "failed" : "stopped",
      exitCode: null,
      signal: null,
      message,
      stopReason,
    });

    // The signature of what the storage holds as the checkpoint (see checkpoint-signature.ts),
    // null when unknown: a save is skipped only when the folder matches it.
    let savedCheckpoint: string | null = null;

    // Prepare the work dir: a leftover from a crashed server must not leak into this attempt.
    // Its folders and a small input.json are made synchronously: a handful of quick
    // syscalls cost the event loop less than as many trips through the thread pool, and
    // every launch waits for them (issue 15).
    try {
      if (options.takeWorkDir?.(options.workDir) !== true) {
        await freshDir(options.workDir);
        mkdirSync(paths.checkpointDir);
        mkdirSync(paths.inputDir);
        mkdirSync(paths.outputDir);
      }
      const inputText = JSON.stringify(options.input ?? null);
      const input =
        inputText.length <= SYNC_INPUT_CHARS
          ? writeFileSync(paths.inputFile, inputText)
          : writeFile(paths.inputFile, inputText);
      const restored = (async () => {
        if (options.storage.hasCheckpoint?.() === false) return EMPTY_FOLDER;
        await options.storage.restoreCheckpoint(paths.checkpointDir);
        // Nothing runs in the folder yet, so an empty one is exactly what the storage holds.
        const names = await readdir(paths.checkpointDir);
        return names.length === 0 ? EMPTY_FOLDER : null;
      })();
      // Settled, not raced: nothing may still write into the folder once this returns.
      const inputs = (async () => options.storage.restoreInputs?.(paths.inputDir))();
      const [written, restore, files] = await Promise.allSettled([input, restored, inputs]);
      for (const step of [written, restore, files]) {
        if (step.status === "rejected") throw step.reason;
      }
      if (restore.status === "fulfilled") savedCheckpoint = restore.value;
      if (options.user) await chownTree(options.workDir, options.user.uid, options.user.gid);
    } catch (error) {
      const message = `could not prepare the attempt: ${describeError(error)}`;
      rejectStarted(new Error(message, { cause: error }));
      return notStarted(message);
    }
    if (stopReason !== null) {
      rejectStarted(new Error(`stopped (${stopReason}) before it started`));
      return notStarted(`stopped (${stopReason}) before it started`);
    }

    const [program, ...args] = options.command;
    if (program === undefined) {
      rejectStarted(new Error("the queue's command is empty"));
      return notStarted("the queue's command is empty");
    }
    const env: Record<string, string> = {
      ...(options.baseEnv ?? baseJobEnv()),
      ...options.env,
      [JOB_ENV.requestId]: options.job.requestId,
      [JOB_ENV.queue]: options.job.queue,
      [JOB_ENV.attempt]: String(options.job.attempt),
      [JOB_ENV.inputFile]: paths.inputFile,
      [JOB_ENV.inputDir]: paths.inputDir,
      [JOB_ENV.outputDir]: paths.outputDir,
      [JOB_ENV.checkpointDir]: paths.checkpointDir,
      [JOB_ENV.progressFile]: paths.progressFile,
    };

    const spec: JobSpawnSpec = {
      program,
      args,
      cwd: options.workDir,
      env: withPythonPackage(env),
      ...(options.user ? { user: options.user } : {}),
    };
    const launched = options.spawn
      ? await spawnElsewhere(options.spawn, spec)
      : await spawnHere(spec, log);
    if ("error" in launched) {
      exited = true;
      const message = `could not start ${JSON.stringify(program)}: ${describeError(launched.error)}`;
      rejectStarted(new Error(message, { cause: launched.error }));
      return notStarted(message);
    }
    const { pid } = launched;
    jobPid = pid;
    child = launched.child;
    const closed = launched.closed.then((exit) => {
      exited = true;
      return exit;
    });
    void closed.then(() => {
      // Whatever the job forked and left behind dies with it; this also lets `close` fire
      // when a grandchild still holds the pipes.
      signalGroup(pid, "SIGKILL");
    });

    const startTime = launched.startTime;
    resolveStarted({ pid, jobRef: encodeJobRef({ pid, startTime }) });
    try {
      options.onStarted?.({ pid, jobRef: encodeJobRef({ pid, startTime }) });
    } catch {
      // The caller's bookkeeping failing does not change what the job does.
    }
    // A stop that arrived between spawn and now had no process to signal yet.
    if (stopReason !== null) {
      const reason: string = stopReason;
      stopReason = null;
      stop(reason);
    }

    const timeoutMs = options.timeoutSeconds * 1000;
    const timeoutTimer = setTimeout(() => stop("timeout"), Math.min(timeoutMs, 2 ** 31 - 1));

    /**
     * Saves the checkpoint folder, unless it is exactly what the storage holds: an empty
     * folder when nothing was restored, or one the job has not touched since the last save.
     */
    const saveCheckpoint = async (): Promise<void> => {
      const signature = await folderSignature(paths.checkpointDir, paths.clockFile);
      if (signature !== null && signature === savedCheckpoint) return;
      savedCheckpoint = null;
      await options.storage.saveCheckpoint(paths.checkpointDir);
      // A file may come and go while the save copies a folder found empty: only a listing
      // with timestamps (a non-empty folder's signature) describes what the save held.
      savedCheckpoint = signature === EMPTY_FOLDER ? null : signature;
    };

    // Progress: polled, because jobs replace the file by rename, which fs.watch loses track of.
    let lastProgressText: string | null = null;
    let saves: Promise<void> = Promise.resolve();
    const checkProgress = async () => {
      let text: string;
      try {
        // Synchronous: a small file, read at every poll and once more on the path from a
        // job's exit to the next start (issue 15).
        text = readFileSync(paths.progressFile, "utf8");
      } catch {
        return;
      }
      if (text === lastProgressText) return;
      const progress = parseProgress(text);
      // Invalid JSON may be a write in flight by a job that does not rename: look again later.
      if (!progress) return;
      lastProgressText = text;
      saves = saves.then(async () => {
        try {
          await saveCheckpoint();
        } catch (error) {
          log(`[longrun] could not save the checkpoint: ${describeError(error)}`, "runner");
        }
        try {
          await options.onProgress?.(progress);
        } catch {
          // A progress consumer failing must not stop the job.
        }
      });
      await saves;
    };
    // The poll in flight, if any (checkProgress never rejects).
    const poll: { running: Promise<void> | null } = { running: null };
    const poller = setInterval(() => {
      if (poll.running) return;
      poll.running = checkProgress().finally(() => {
        poll.running = null;
      });
    }, pollMs);

    const { code, signal, lost, lastLine } = await closed;
    clearInterval(poller);
    clearTimeout(timeoutTimer);
    clearTimeout(killTimer);
    // Let an in-flight poll finish, then look once more: the last report may be newer.
    await poll.running;
    await checkProgress();
    await saves;

    const exitNote = lost
      ? `ended, exit status unknown (${lost})`
      : signal
        ? `killed by signal ${signal}`
        : `exited with code ${code}`;
    log(`[longrun] job ${exitNote}`, "runner");

    // SPEC §4: the checkpoint is saved at exit whatever the exit, SIGTERM included (unless
    // it is what the storage holds already). Outputs are saved meanwhile: another folder.
    const checkpointSaved = saveCheckpoint().then(
      () => null,
      (error: unknown) => {
        const message = describeError(error);
        log(`[longrun] could not save the checkpoint at exit: ${message}`, "runner");
        return message;
      },
    );
    const [checkpointError, result] = await Promise.all([
      checkpointSaved,
      conclude(code, signal, exitNote, lastLine ?? "", lost !== undefined),
    ]);
    if (result.outcome === "succeeded" && checkpointError) {
      result.message += ` (checkpoint not saved: ${checkpointError})`;
    }
    return result;
  };

  /** The attempt's result once the job has exited; saves its outputs after exit 0. */
  const conclude = async (
    code: number | null,
    signal: NodeJS.Signals | null,
    exitNote: string,
    lastStderr: string,
    lost: boolean,
  ): Promise<AttemptResult> => {
    const base = { exitCode: code, signal, stopReason };
    if (stopReason === "timeout") {
      return {
        ...base,
        outcome: "timeout",
        message: `attempt ${options.job.attempt} ran longer than ${options.timeoutSeconds}s and was stopped (job ${exitNote})`,
      };
    }
    if (stopReason !== null) {
      return { ...base, outcome: "stopped", message: `stopped (${stopReason}); job ${exitNote}` };
    }
    // Neither a success nor the job's failure can be told: the platform lost the attempt.
    if (lost) return { ...base, outcome: "lost", message: `job ${exitNote}` };
    if (code !== 0) {
      const tail = lastStderr ? `: ${lastStderr.slice(0, 300)}` : "";
      return { ...base, outcome: "failed", message: `job ${exitNote}${tail}` };
    }
    const resultFile = join(paths.outputDir, "result.json");
    let resultText: string | null = null;
    try {
      // Synchronous, as the progress file: on the path from exit to the next start.
      resultText = readFileSync(resultFile, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
        return {
          ...base,
          outcome: "failed",
          message: `could not read result.json: ${describeError(error)}`,
        };
      }
    }
    if (resultText !== null) {
      try {
        JSON.parse(resultText);
      } catch (error) {
        return {
          ...base,
          outcome: "failed",
          message: `the job exited 0 but its result.json is not valid JSON: ${describeError(error)}`,
        };
      }
    }
    try {
      await options.storage.saveOutputs(paths.outputDir);
    } catch (error) {
      return {
        ...base,
        outcome: "failed",
        message: `the job succeeded but its outputs could not be saved: ${describeError(error)}`,
      };
    }
    return { ...base, outcome: "succeeded", message: "job exited with code 0" };
  };

  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  const done = run()
    .catch(
      (error): AttemptResult => ({
        outcome: "failed",
        exitCode: null,
        signal: null,
        message: `the runner failed: ${describeError(error)}`,
        stopReason,
      }),
    )
    .finally(() => options.signal?.removeEventListener("abort", onAbort));

  return { started, done, stop, kill };
}

/** Runs one attempt to its end; {@link startAttempt} for callers that need the handle. */
export function runAttempt(options: AttemptOptions): Promise<AttemptResult> {
  return startAttempt(options).done;
}
