import { readdirSync, readFileSync } from "node:fs";

/** Pids of live (not zombie) processes whose environment names this request (Linux /proc). */
export function jobPids(requestId: string): number[] {
  return livePids((env) => env.includes(`LONGRUN_REQUEST_ID=${requestId}`));
}

/**
 * Pids of live job processes whose input file lies under `dir`: every job a server with
 * that data directory started, on either backend (their work folders are local).
 */
export function jobPidsUnder(dir: string): number[] {
  const prefix = `LONGRUN_INPUT_FILE=${dir.replace(/\/$/, "")}/`;
  return livePids((env) => env.some((e) => e.startsWith(prefix)));
}

function livePids(match: (env: string[]) => boolean): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const env = readFileSync(`/proc/${entry}/environ`, "latin1");
      if (!match(env.split("\0"))) continue;
      const stat = readFileSync(`/proc/${entry}/stat`, "latin1");
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      if (state !== "Z") pids.push(Number(entry));
    } catch {
      // the process ended while we looked, or is not ours to read
    }
  }
  return pids;
}
