/**
 * The server's side of the job launcher (launcher.mjs): a small long-lived process that
 * forks every job, so the ~160 MiB server does not, and that gives each job its log file as
 * stdout and stderr, so a job's output reaches its log whatever happens to the server.
 *
 * The launcher is no single point of failure: when it dies, a new one is started at once.
 * Jobs it had started run on (they lead their own process groups) and are adopted by pid and
 * start time: watched until their group is gone. Their exit status died with the launcher
 * (only a parent learns it), so such an attempt ends `lost` and is retried from its checkpoint,
 * as one found by a restarted server is. A spawn sent to the dead launcher and not answered
 * is settled from its launch record (see `#recover`): adopted if it was forked, sent to the
 * new launcher if it surely was not, and ended `lost` (retried as a new attempt) when nothing
 * can tell. No attempt is ever launched twice.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { open, readdir, readFile, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import {
  decodeJobRef,
  findJobsOfRequest,
  type JobSpawner,
  type JobSpawnSpec,
  parseStat,
  type SpawnedExit,
  type SpawnedJob,
} from "../../../jobs/runner/index.ts";
import { JOB_ENV } from "../../config/env.ts";
import { LaunchLostError } from "../../core/errors.ts";
import type { SparePool } from "./spare-pool.ts";

const LAUNCHER_SCRIPT = join(import.meta.dirname, "launcher.mjs");
/**
 * Where launcher.mjs records the job it forked for work dir `cwd`: beside it, in the
 * request's work root, which a job running as `LONGRUN_JOB_USER` cannot write to.
 */
function pidFileOf(cwd: string): string {
  return join(dirname(cwd), `.pid-${basename(cwd)}`);
}

/** What the launcher answers, one JSON object per line (see launcher.mjs). */
type Answer =
  | { key: string; pid: number; startTime: string | null; exit?: undefined; error?: undefined }
  | { key: string; error: string; exit?: undefined }
  | { key: string; taken: true; error?: undefined; exit?: undefined }
  | {
      key: string;
      exit: true;
      code: number | null;
      signal: NodeJS.Signals | null;
      lastLine?: string;
    };

interface SpawnMessage {
  op: "spawn";
  key: string;
  program: string;
  args: readonly string[];
  cwd: string;
  env: Record<string, string>;
  pidFile: string;
  uid?: number;
  gid?: number;
  log: string;
  header: string;
  /** Where the launcher keeps the empty files it makes ahead (launcher.mjs, spare-pool.ts). */
  spareDir?: string;
}

/** A spawn sent and not answered yet. */
interface Pending {
  message: SpawnMessage;
  requestId: string;
  /** How many launchers it was sent to: one more each time one died without answering. */
  sends: number;
  /** The launcher it was last sent to: only that one's death makes it be sent again. */
  sentTo: ChildProcess | null;
  resolve: (job: { pid: number; startTime: string | null }) => void;
  reject: (error: Error) => void;
}

/** A started job whose exit is still to come. */
interface Live {
  pid: number;
  startTime: string | null;
  logFile: string;
  /** The launch record (launcher.mjs), removed once the job's end is known. */
  pidFile: string;
  resolveExit: (exit: SpawnedExit) => void;
  /** The launcher process that is its parent; null once adopted after that one died. */
  parent: ChildProcess | null;
}

export interface JobLauncherOptions {
  /** Told about a launcher that died and what was done about it. */
  log?: (line: string) => void;
  /** How often adopted jobs are looked for in /proc (default 100 ms). */
  adoptPollMs?: number;
  /**
   * Wait after a launcher died before /proc is searched for the jobs it was starting: a job
   * forked just before the death needs a moment to exec and carry its environment (default 50 ms).
   */
  settleMs?: number;
}

const LOST = "its launcher died before it";

/**
 * Sends of one spawn, each to a new launcher after the last one died without answering it
 * (and without starting it): past this the launch fails rather than wait for a launcher
 * that cannot run.
 */
const MAX_SENDS = 10;

/**
 * Starts jobs through a launcher process; see the module comment. Each job is named by a
 * key (request id and attempt) that makes a resent spawn answer the job already started.
 */
export class JobLauncher {
  readonly #opts: JobLauncherOptions;
  #proc: ChildProcess | null = null;
  readonly #pending = new Map<string, Pending>();
  readonly #live = new Map<string, Live>();
  /** Whether the adopted jobs' watch loop runs. */
  #watching = false;
  #closed = false;
  /** How many launcher processes have died under this server (a test and chaos figure). */
  restarts = 0;

  constructor(options: JobLauncherOptions = {}) {
    this.#opts = options;
  }

  /** The launcher process's pid (started if it is not running). */
  get pid(): number | undefined {
    return this.#launcher().pid;
  }

  /**
   * A {@link JobSpawner} for one attempt: its log file becomes the job's stdout and stderr,
   * `header` is written to it first. With `spares`, the launcher links the launch record and
   * a new log from empty files it made ahead in the pool's folder instead of creating them.
   */
  spawnerFor(
    requestId: string,
    attempt: number,
    logFile: string,
    header: string,
    spares?: SparePool,
  ): JobSpawner {
    return (spec) =>
      this.spawn(`${requestId}/${attempt}`, requestId, spec, logFile, header, spares);
  }

  /** Starts a job under `key`; rejects when it could not be started. */
  async spawn(
    key: string,
    requestId: string,
    spec: JobSpawnSpec,
    logFile: string,
    header: string,
    spares?: SparePool,
  ): Promise<SpawnedJob> {
    if (this.#closed) throw new Error("the job launcher is closed");
    if (this.#pending.has(key) || this.#live.has(key)) throw new Error(`job ${key} is started`);
    const message: SpawnMessage = {
      op: "spawn",
      key,
      program: spec.program,
      args: spec.args,
      cwd: spec.cwd,
      env: spec.env,
      pidFile: pidFileOf(spec.cwd),
      ...(spec.user ? { uid: spec.user.uid, gid: spec.user.gid } : {}),
      log: logFile,
      header,
    };
    if (spares) message.spareDir = spares.folder;
    const started = new Promise<{ pid: number; startTime: string | null }>((resolve, reject) => {
      this.#pending.set(key, { message, requestId, sends: 0, sentTo: null, resolve, reject });
    });
    this.#send(key);
    const { pid, startTime } = await started;
    let resolveExit!: (exit: SpawnedExit) => void;
    const exited = new Promise<SpawnedExit>((resolve) => {
      resolveExit = resolve;
    });
    return {
      pid,
      startTime,
      exited: this.#track(key, pid, startTime, logFile, message.pidFile, resolveExit, exited),
    };
  }

  /**
   * Records a started job. Its exit may have been answered already (a job quicker than the
   * answer's handling) and is kept in `#early` until then.
   */
  #track(
    key: string,
    pid: number,
    startTime: string | null,
    logFile: string,
    pidFile: string,
    resolveExit: (exit: SpawnedExit) => void,
    exited: Promise<SpawnedExit>,
  ): Promise<SpawnedExit> {
    const early = this.#early.get(key);
    if (early) {
      this.#early.delete(key);
      forget(pidFile);
      resolveExit(early);
      return exited;
    }
    this.#live.set(key, {
      pid,
      startTime,
      logFile,
      pidFile,
      resolveExit,
      parent: this.#adopting.has(key) ? null : this.#proc,
    });
    if (this.#adopting.delete(key)) this.#watch();
    this.#holdWhileBusy();
    return exited;
  }

  /** Exits answered before the spawn's answer was handled. */
  readonly #early = new Map<string, SpawnedExit>();
  /** Keys whose job was found running after its launcher died: watched, not waited for. */
  readonly #adopting = new Set<string>();

  #send(key: string): void {
    const pending = this.#pending.get(key);
    if (!pending) return;
    pending.sends++;
    const proc = this.#launcher();
    pending.sentTo = proc;
    proc.stdin?.write(`${JSON.stringify(pending.message)}\n`);
    this.#holdWhileBusy();
  }

  /** The running launcher, started if there is none. */
  #launcher(): ChildProcess {
    if (this.#proc) return this.#proc;
    const proc = spawn(process.execPath, [LAUNCHER_SCRIPT], {
      // Its own group: a Ctrl-C meant for the server's terminal must not reach it.
      detached: true,
      stdio: ["pipe", "pipe", "inherit"],
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
    });
    this.#proc = proc;
    // An idle launcher does not keep the server alive (see #holdWhileBusy).
    proc.unref();
    (proc.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    (proc.stdout as unknown as { unref?: () => void } | null)?.unref?.();
    this.#held = false;
    proc.stdin?.on("error", () => {}); // a dead launcher: handled at `close`
    proc.on("error", (error) => this.#opts.log?.(`job launcher: ${String(error)}`));
    if (proc.stdout) {
      createInterface({ input: proc.stdout }).on("line", (line) => this.#answer(line));
    }
    // `close` comes after every answer it wrote has been read.
    proc.once("close", (code, signal) => void this.#died(proc, code, signal));
    return proc;
  }

  /** Whether the launcher's answers pipe keeps this process alive now. */
  #held = false;

  /**
   * Keeps the process alive while an answer is owed (a spawn sent, or the exit of a job it
   * started), as a child spawned here would: a server recovering before it listens has
   * nothing else to wait on.
   */
  #holdWhileBusy(): void {
    const proc = this.#proc;
    const stdout = proc?.stdout as unknown as { ref?: () => void; unref?: () => void } | null;
    if (!proc || !stdout) return;
    let busy = this.#pending.size > 0;
    for (const live of this.#live.values()) busy ||= live.parent === proc;
    if (busy === this.#held) return;
    this.#held = busy;
    if (busy) stdout.ref?.();
    else stdout.unref?.();
  }

  #answer(line: string): void {
    let answer: Answer;
    try {
      answer = JSON.parse(line) as Answer;
    } catch {
      return;
    }
    if (answer.exit) {
      const exit: SpawnedExit = {
        code: answer.code,
        signal: answer.signal,
        ...(answer.lastLine ? { lastLine: answer.lastLine } : {}),
      };
      const live = this.#live.get(answer.key);
      if (!live) {
        this.#early.set(answer.key, exit);
        return;
      }
      this.#live.delete(answer.key);
      forget(live.pidFile);
      live.resolveExit(exit);
      this.#holdWhileBusy();
      return;
    }
    const pending = this.#pending.get(answer.key);
    if (!pending) return;
    if ("taken" in answer) {
      // A launcher that died had taken this key: what it did is on record (a stray resend).
      void this.#recover(answer.key, pending);
      return;
    }
    this.#pending.delete(answer.key);
    if (answer.error !== undefined) pending.reject(new Error(answer.error));
    else pending.resolve({ pid: answer.pid, startTime: answer.startTime });
    // Released until #track holds it again for the job's exit, in this same turn.
    this.#holdWhileBusy();
  }

  async #died(proc: ChildProcess, code: number | null, signal: NodeJS.Signals | null) {
    if (this.#proc === proc) this.#proc = null;
    if (this.#closed) return;
    this.restarts++;
    this.#opts.log?.(
      `job launcher (pid ${proc.pid}) ended (${signal ?? `code ${code}`}); starting a new one`,
    );
    // Its jobs run on without a parent that learns their exit: watch them instead.
    for (const live of this.#live.values()) if (live.parent === proc) live.parent = null;
    this.#watch();
    // Spawns it had not answered: a job it forked needs a moment to carry its environment.
    const unanswered = [...this.#pending].filter(([, p]) => p.sentTo === proc).map(([k]) => k);
    if (unanswered.length === 0) return;
    await sleep(this.#opts.settleMs ?? 50);
    for (const key of unanswered) {
      const pending = this.#pending.get(key);
      if (!pending || pending.sentTo !== proc) continue;
      await this.#recover(key, pending);
    }
  }

  /**
   * Settles a spawn whose launcher died unanswered (or that another launcher had taken) from
   * the launch record, which launcher.mjs creates before it forks and fills right after:
   * - none: nothing was forked, so it is sent again (to a new launcher, exactly once more);
   * - a pid: that job is adopted, watched until its process group is gone;
   * - empty: the launcher died between taking the key and recording the fork. A job of this
   *   attempt found in /proc is adopted; with none, nothing can tell whether one ran (a quick
   *   job may have come and gone), so the launch is lost: retried as a new attempt, never the
   *   same attempt twice.
   */
  async #recover(key: string, pending: Pending): Promise<void> {
    const record = await readLaunchRecord(pending.message.pidFile);
    const ref =
      record === "absent"
        ? null
        : record === "empty"
          ? await firstOfAttempt(
              await findJobsOfRequest(pending.requestId),
              pending.message.env[JOB_ENV.attempt],
            )
          : record;
    if (this.#pending.get(key) !== pending) return;
    if (ref) {
      this.#opts.log?.(`job ${key}: started by a launcher that died (pid ${ref.pid}); adopted`);
      this.#pending.delete(key);
      this.#adopting.add(key);
      pending.resolve(ref);
    } else if (record === "empty") {
      this.#opts.log?.(`job ${key}: its launcher died while starting it; the attempt is lost`);
      this.#pending.delete(key);
      forget(pending.message.pidFile);
      pending.reject(new LaunchLostError(`the job launcher died while starting attempt ${key}`));
    } else if (pending.sends < MAX_SENDS) {
      this.#opts.log?.(`job ${key}: not started by the launcher that died; sent again`);
      this.#send(key);
    } else {
      this.#pending.delete(key);
      pending.reject(
        new Error(`the job launcher died ${pending.sends} times while starting the job`),
      );
    }
    this.#holdWhileBusy();
  }

  /** Watches adopted jobs until their process groups are gone. */
  #watch(): void {
    if (this.#watching) return;
    this.#watching = true;
    void (async () => {
      try {
        for (;;) {
          const orphans = [...this.#live].filter(([, l]) => l.parent === null);
          if (orphans.length === 0 || this.#closed) return;
          const groups = await liveGroups();
          for (const [key, live] of orphans) {
            const leader = groups.leaders.get(live.pid);
            const reused =
              leader !== undefined && live.startTime !== null && leader !== live.startTime;
            if (groups.pgids.has(live.pid) && !reused) continue;
            this.#live.delete(key);
            forget(live.pidFile);
            await terminateLog(live.logFile).catch(() => {});
            live.resolveExit({ code: null, signal: null, lost: LOST });
          }
          await sleep(this.#opts.adoptPollMs ?? 100);
        }
      } finally {
        // Set again by the next adoption (the flag, not a promise: the loop may end at once).
        this.#watching = false;
      }
    })();
  }

  /** Ends the launcher; jobs still running are left as they are. */
  async close(): Promise<void> {
    this.#closed = true;
    const proc = this.#proc;
    this.#proc = null;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((resolve) => proc.once("close", resolve));
      proc.stdin?.end();
      await gone;
    }
    for (const pending of this.#pending.values()) {
      pending.reject(new Error("the job launcher was closed"));
    }
    this.#pending.clear();
  }
}

/**
 * A launch record (launcher.mjs): "absent" when no launcher took the key, "empty" when one
 * took it and may have forked, else the job it forked.
 */
async function readLaunchRecord(
  path: string,
): Promise<{ pid: number; startTime: string | null } | "absent" | "empty"> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return "absent";
    // Unreadable: it may say a job was forked, so it is taken as one that does not say which.
    return "empty";
  }
  const m = /^([0-9]+) ([0-9]*)\n/.exec(text);
  if (!m?.[1]) return "empty";
  return { pid: Number(m[1]), startTime: m[2] ? m[2] : null };
}

/** Removes a launch record once its job's end is known (or it is known never to run). */
function forget(path: string): void {
  void unlink(path).catch(() => {});
}

/** The first of `refs` whose process runs `attempt` (from its environment), if any. */
async function firstOfAttempt(
  refs: readonly string[],
  attempt: string | undefined,
): Promise<{ pid: number; startTime: string | null } | null> {
  const needle = Buffer.from(`\0${JOB_ENV.attempt}=${attempt}\0`);
  for (const ref of refs) {
    const decoded = decodeJobRef(ref);
    if (!decoded) continue;
    const environ = await readFile(`/proc/${decoded.pid}/environ`).catch(() => null);
    if (!environ) continue;
    // Entries are NUL-separated; a leading NUL lets the first one match as well.
    if (!Buffer.concat([Buffer.from([0]), environ, Buffer.from([0])]).includes(needle)) continue;
    return decoded;
  }
  return null;
}

/** Process groups with a live (not zombie) member, and each group leader's start time. */
async function liveGroups(): Promise<{ pgids: Set<number>; leaders: Map<number, string> }> {
  const pgids = new Set<number>();
  const leaders = new Map<number, string>();
  let entries: string[];
  try {
    entries = await readdir("/proc");
  } catch {
    return { pgids, leaders };
  }
  for (const name of entries) {
    if (!/^[0-9]+$/.test(name)) continue;
    const text = await readFile(`/proc/${name}/stat`, "latin1").catch(() => null);
    const stat = text === null ? null : parseStat(text);
    if (!stat || stat.state === "Z" || stat.state === "X") continue;
    pgids.add(stat.pgrp);
    if (stat.pgrp === Number(name)) leaders.set(stat.pgrp, stat.startTime);
  }
  return { pgids, leaders };
}

/** Ends an adopted job's output with a newline, as the launcher does for its own jobs. */
async function terminateLog(logFile: string): Promise<void> {
  const handle = await open(logFile, "r+").catch(() => null);
  if (!handle) return;
  try {
    const { size } = await handle.stat();
    if (size === 0) return;
    const last = Buffer.alloc(1);
    await handle.read(last, 0, 1, size - 1);
    if (last[0] !== 0x0a) await handle.write("\n", size);
  } finally {
    await handle.close();
  }
}
