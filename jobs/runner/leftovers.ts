/**
 * Job processes a dead server spawned but never recorded. The server stores a job's handle
 * (`jobRef`) only after the spawn; a SIGKILL in between leaves the request STARTING without
 * one while its job runs on. Every job carries `LONGRUN_REQUEST_ID` in its environment
 * (the job contract) and leads its own process group, so /proc still finds it.
 */
import { readdir, readFile } from "node:fs/promises";
import { encodeJobRef, type ProcStat, parseStat } from "./process-group.ts";

/**
 * Handles (`local:<pid>:<starttime>`) of the live process-group leaders whose environment
 * names `requestId`: the jobs of that request, whichever server spawned them. Empty where
 * /proc does not exist; processes of other users cannot be read and are not ours.
 */
export async function findJobsOfRequest(requestId: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir("/proc");
  } catch {
    return [];
  }
  const needle = Buffer.from(`\0LONGRUN_REQUEST_ID=${requestId}\0`);
  const refs: string[] = [];
  for (const entry of entries) {
    if (!/^[0-9]+$/.test(entry)) continue;
    let environ: Buffer;
    let stat: ProcStat | null;
    try {
      environ = await readFile(`/proc/${entry}/environ`);
      stat = parseStat(await readFile(`/proc/${entry}/stat`, "latin1"));
    } catch {
      continue; // gone meanwhile, or not ours
    }
    if (!stat || stat.state === "Z" || stat.state === "X") continue;
    const pid = Number(entry);
    if (stat.pgrp !== pid) continue; // a job's own children are stopped with its group
    // Entries are NUL-separated; a leading NUL lets the first one match as well.
    if (!Buffer.concat([Buffer.from([0]), environ, Buffer.from([0])]).includes(needle)) continue;
    refs.push(encodeJobRef({ pid, startTime: stat.startTime }));
  }
  return refs;
}
