import { cp, mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { AttemptStorage } from "../../jobs/runner/index.ts";

export const REPO = resolve(import.meta.dirname, "../..");
export const DEMO = join(REPO, "jobs/examples/demo/job.mjs");
export const FINETUNE = join(REPO, "jobs/examples/finetune/train.py");

/** A fresh temporary folder, removed by the returned cleanup. */
export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `longrun-${prefix}-`));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/**
 * AttemptStorage over plain folders that records every call in order, with what the
 * checkpoint held at each save, so tests can assert the SPEC §4 save-then-report order.
 */
export class RecordingStorage implements AttemptStorage {
  readonly calls: string[] = [];
  /** Content of checkpoint/state.json (or "-") at each save, in order. */
  readonly savedStates: string[] = [];
  readonly checkpoint: string;
  readonly outputs: string;

  constructor(readonly root: string) {
    this.checkpoint = join(root, "saved-checkpoint");
    this.outputs = join(root, "saved-outputs");
  }

  async restoreCheckpoint(dir: string): Promise<void> {
    this.calls.push("restore");
    await mkdir(this.checkpoint, { recursive: true });
    await cp(this.checkpoint, dir, { recursive: true });
  }

  async saveCheckpoint(dir: string): Promise<void> {
    const state = await readFile(join(dir, "state.json"), "utf8").catch(() => "-");
    this.calls.push(`checkpoint:${state}`);
    this.savedStates.push(state);
    await rm(this.checkpoint, { recursive: true, force: true });
    await cp(dir, this.checkpoint, { recursive: true });
  }

  async saveOutputs(dir: string): Promise<void> {
    this.calls.push("outputs");
    await cp(dir, this.outputs, { recursive: true });
  }

  async outputFiles(): Promise<string[]> {
    return (await readdir(this.outputs).catch(() => [])).sort();
  }
}

/** Polls `check` until it returns true or `timeoutMs` passes. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Whether a process exists and is not a zombie. */
export async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}
