import { readdirSync, readFileSync } from "node:fs";

/** Pids of live (not zombie) processes whose environment names this request (Linux /proc). */
export function jobPids(requestId: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const env = readFileSync(`/proc/${entry}/environ`, "latin1");
      if (!env.split("\0").includes(`LONGRUN_REQUEST_ID=${requestId}`)) continue;
      const stat = readFileSync(`/proc/${entry}/stat`, "latin1");
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      if (state !== "Z") pids.push(Number(entry));
    } catch {
      // the process ended while we looked, or is not ours to read
    }
  }
  return pids;
}
