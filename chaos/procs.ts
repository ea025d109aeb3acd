/**
 * The job processes of one chaos run, read from Linux /proc: every live (not zombie)
 * process whose environment carries the run's marker variable (set in the queue's `env`,
 * so only jobs have it). Each scan is confirmed by a second look at every process it
 * found: a process seen alive in the scan and again after the scan ended was alive at the
 * moment the scan ended, so the processes a scan reports all ran at one same instant.
 */
import { readdirSync, readFileSync } from "node:fs";
import { parseStat } from "../jobs/runner/process-group.ts";

export interface JobProcess {
  pid: number;
  /** Process group: the job runner starts each attempt as its own group. */
  pgid: number;
  /** /proc/<pid>/stat start time: tells a process apart from a later one with its pid. */
  startTime: string;
  requestId: string;
  attempt: string;
  /** CUDA_VISIBLE_DEVICES as the job was started with (null: not set). */
  devices: string | null;
}

type Stat = { state: string; pgid: number; startTime: string };

function readStat(pid: string): Stat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "latin1");
  } catch {
    return null;
  }
  const stat = parseStat(text);
  return stat && { state: stat.state, pgid: stat.pgrp, startTime: stat.startTime };
}

/** USER_HZ: the unit of /proc start times, 100 on every mainstream Linux. */
const CLK_TCK = 100;

function readUptimeTicks(): number | null {
  try {
    const seconds = Number(readFileSync("/proc/uptime", "latin1").split(" ")[0]);
    return Number.isFinite(seconds) ? seconds * CLK_TCK : null;
  } catch {
    return null;
  }
}

const dead = (s: Stat | null): boolean => s === null || s.state === "Z" || s.state === "X";

/** Scans /proc for the jobs whose environment holds `marker` (`NAME=value`). */
export class JobProcessScanner {
  readonly #marker: string;
  /** Environment facts by `pid:startTime` (a process's initial environment never changes). */
  readonly #known = new Map<
    string,
    { requestId: string; attempt: string; devices: string | null } | null
  >();

  constructor(marker: string) {
    this.#marker = marker;
  }

  /** The run's job processes alive at the moment the scan ended. */
  scan(): JobProcess[] {
    const found: JobProcess[] = [];
    const seen = new Set<string>();
    let entries: string[];
    try {
      entries = readdirSync("/proc");
    } catch {
      return [];
    }
    const uptimeTicks = readUptimeTicks();
    for (const pid of entries) {
      if (!/^\d+$/.test(pid)) continue;
      const stat = readStat(pid);
      if (stat === null || dead(stat)) continue;
      const key = `${pid}:${stat.startTime}`;
      seen.add(key);
      let facts = this.#known.get(key);
      if (facts === undefined) {
        facts = this.#readEnv(pid);
        // Between fork and exec a new job still shows its parent's environment: a process
        // without the marker is remembered as "not a job" only once it is old enough.
        const young = uptimeTicks === null || uptimeTicks - Number(stat.startTime) < 3 * CLK_TCK;
        if (facts !== null || !young) this.#known.set(key, facts);
      }
      if (facts)
        found.push({ pid: Number(pid), pgid: stat.pgid, startTime: stat.startTime, ...facts });
    }
    for (const key of this.#known.keys()) if (!seen.has(key)) this.#known.delete(key);
    // The confirming look: only processes still alive (the same ones) after the scan count.
    return found.filter((p) => {
      const again = readStat(String(p.pid));
      return !dead(again) && again?.startTime === p.startTime;
    });
  }

  #readEnv(pid: string): { requestId: string; attempt: string; devices: string | null } | null {
    let env: string[];
    try {
      env = readFileSync(`/proc/${pid}/environ`, "latin1").split("\0");
    } catch {
      return null; // gone, or not ours to read
    }
    if (!env.includes(this.#marker)) return null;
    const value = (name: string) =>
      env.find((e) => e.startsWith(`${name}=`))?.slice(name.length + 1) ?? "";
    const cuda = env.find((e) => e.startsWith("CUDA_VISIBLE_DEVICES="));
    return {
      requestId: value("LONGRUN_REQUEST_ID"),
      attempt: value("LONGRUN_ATTEMPT"),
      devices: cuda === undefined ? null : cuda.slice("CUDA_VISIBLE_DEVICES=".length),
    };
  }
}

/** SIGKILLs the given processes (the run's leftovers at the end); returns how many were signalled. */
export function killProcesses(processes: readonly JobProcess[]): number {
  let n = 0;
  for (const p of processes) {
    try {
      process.kill(p.pid, "SIGKILL");
      n++;
    } catch {
      // already gone
    }
  }
  return n;
}

/**
 * Pids of the live job launchers (functions/adapters/embedded/launcher.mjs) whose parent is
 * `serverPid`: the process an embedded server forks its jobs from.
 */
export function launcherPids(serverPid: number): number[] {
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return pids;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!readFileSync(`/proc/${entry}/cmdline`, "latin1").includes("launcher.mjs")) continue;
      const stat = readFileSync(`/proc/${entry}/stat`, "latin1");
      // After the command's closing parenthesis: field 3 (state), field 4 (ppid).
      const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (state !== "Z" && Number(ppid) === serverPid) pids.push(Number(entry));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return pids;
}
