/**
 * Process-group handling for job processes: the handle (`jobRef`) that names one spawned
 * job across server restarts, and the reaper that stops a group left behind by a server
 * that died.
 */
import { readFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/** What a `local:` job reference names: a process-group leader and when it started. */
export interface LocalJobRef {
  pid: number;
  /**
   * Start time of the process in clock ticks since boot (`/proc/<pid>/stat` field 22), or
   * null where /proc is unavailable. It tells the job apart from a later process that got
   * the same pid.
   */
  startTime: string | null;
}

const REF_PREFIX = "local:";

/** `local:<pid>:<starttime>`, or `local:<pid>` when the start time is unknown. */
export function encodeJobRef(ref: LocalJobRef): string {
  return ref.startTime === null
    ? `${REF_PREFIX}${ref.pid}`
    : `${REF_PREFIX}${ref.pid}:${ref.startTime}`;
}

/** Parses a reference made by {@link encodeJobRef}; null for anything else (a Batch job id). */
export function decodeJobRef(jobRef: string): LocalJobRef | null {
  const m = /^local:([1-9][0-9]{0,9}):?([0-9]{1,20})?$/.exec(jobRef);
  if (!m?.[1]) return null;
  const pid = Number(m[1]);
  // pid 1 is init and a negative or huge one would signal far more than a job.
  if (!Number.isSafeInteger(pid) || pid <= 1 || pid > 2 ** 22) return null;
  return { pid, startTime: m[2] ?? null };
}

/** The fields of `/proc/<pid>/stat` the runner and its checks use. */
export interface ProcStat {
  state: string;
  pgrp: number;
  startTime: string;
}

/** Fields of `/proc/<pid>/stat`; null when the process or /proc does not exist. */
async function readStat(pid: number | string): Promise<ProcStat | null> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  return parseStat(text);
}

/** Parses the text of `/proc/<pid>/stat`; null when it is not one. */
export function parseStat(text: string): ProcStat | null {
  // Field 2 (comm) is in parentheses and may itself hold spaces or ')': split after the last one.
  const close = text.lastIndexOf(")");
  if (close < 0) return null;
  const rest = text
    .slice(close + 2)
    .trim()
    .split(" ");
  // rest[0] is field 3 (state), so field n is rest[n - 3].
  const state = rest[0];
  const pgrp = rest[2];
  const startTime = rest[19];
  if (state === undefined || pgrp === undefined || startTime === undefined) return null;
  return { state, pgrp: Number(pgrp), startTime };
}

let procAvailable: boolean | undefined;
async function hasProc(): Promise<boolean> {
  procAvailable ??= (await readStat("self")) !== null;
  return procAvailable;
}

/**
 * The start time of `pid` as /proc reports it, or null (no such process, or no /proc).
 * Read synchronously: procfs is generated in memory, and every launch waits for this read,
 * which asynchronously takes five trips through the thread pool (open, fstat, two reads,
 * close) on a busy server.
 */
export async function processStartTime(pid: number): Promise<string | null> {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  return parseStat(text)?.startTime ?? null;
}

/** Clock ticks per second of /proc's times: USER_HZ, fixed at 100 in Linux's user ABI. */
const USER_HZ = 100;

/**
 * When a process with /proc start time `startTime` (clock ticks since boot, as in a job
 * reference) started, in epoch milliseconds; null without /proc. Boot time comes from
 * /proc/stat's `btime`.
 */
export async function startTimeToEpochMs(startTime: string): Promise<number | null> {
  let text: string;
  try {
    text = await readFile("/proc/stat", "utf8");
  } catch {
    return null;
  }
  const btime = /^btime (\d+)$/m.exec(text)?.[1];
  if (btime === undefined) return null;
  return Number(btime) * 1000 + Math.round((Number(startTime) * 1000) / USER_HZ);
}

/**
 * Whether any live (non-zombie) process is in group `pgid`. With /proc it scans the
 * process table because a zombie still counts for `kill(-pgid, 0)` and, where nothing
 * reaps orphans (a container whose PID 1 is not an init), would look alive forever.
 */
export async function processGroupAlive(pgid: number): Promise<boolean> {
  if (await hasProc()) {
    let entries: string[];
    try {
      entries = await readdir("/proc");
    } catch {
      entries = [];
    }
    for (const name of entries) {
      if (!/^[0-9]+$/.test(name)) continue;
      const stat = await readStat(name);
      if (stat && stat.pgrp === pgid && stat.state !== "Z" && stat.state !== "X") return true;
    }
    return false;
  }
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Sends `signal` to every process of group `pgid`; false when the group no longer exists. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

export type ReapResult =
  /** The group was signalled and is gone. */
  | "reaped"
  /** Nothing of the group was running. */
  | "not-running"
  /** The pid now belongs to another process (its start time differs): left alone. */
  | "pid-reused"
  /** Not a `local:` reference. */
  | "not-local";

/**
 * Stops the process group a job reference names, if it still runs: SIGTERM to the group,
 * then SIGKILL once `graceMs` has passed. The group's leader is checked first: a live
 * process with that pid but another start time is a different program and is not touched.
 * A leader that is gone while members of its group still run is safe to signal, because
 * the kernel does not hand out a pid that is still in use as a process-group id.
 */
export async function reapProcessGroup(
  jobRef: string,
  options: { graceMs?: number; pollMs?: number } = {},
): Promise<ReapResult> {
  const ref = decodeJobRef(jobRef);
  if (!ref) return "not-local";
  const graceMs = options.graceMs ?? 5000;
  const pollMs = options.pollMs ?? 50;
  if (await hasProc()) {
    const leader = await readStat(ref.pid);
    if (leader && ref.startTime !== null && leader.startTime !== ref.startTime) {
      return "pid-reused";
    }
    // Without a start time to compare, a process that does not lead its own group cannot be
    // the job (spawned as a group leader) and so is another program holding a reused pid.
    if (leader && ref.startTime === null && leader.pgrp !== ref.pid) return "pid-reused";
  }
  if (!(await processGroupAlive(ref.pid))) return "not-running";
  signalGroup(ref.pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    await sleep(pollMs);
    if (!(await processGroupAlive(ref.pid))) return "reaped";
  }
  signalGroup(ref.pid, "SIGKILL");
  // SIGKILL cannot be caught; give the kernel a moment to tear the group down.
  for (let i = 0; i < 40 && (await processGroupAlive(ref.pid)); i++) await sleep(pollMs);
  return "reaped";
}
