/**
 * The GPUs of one machine as a pool (SPEC §5): each job gets exactly the devices its queue
 * asks for, for itself alone, until it ends. Requests that find too few free devices wait
 * in one line across all queues, highest priority first, then oldest; freed devices go to
 * the head of that line only, so a request that needs more than is free keeps its turn
 * (no smaller request jumps ahead). Assignments are written to a file in the data
 * directory, so that after a crash a leftover job's devices stay taken until it is gone.
 */
import { execFile } from "node:child_process";
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import type { RequestRecord } from "../../core/request.ts";

/** One job's devices, as the assignments file keeps them. */
interface Assignment {
  attempt: number;
  devices: string[];
}

interface Waiter {
  request: Pick<RequestRecord, "id" | "attempt" | "priority" | "createdAt">;
  need: number;
  resolve: (devices: string[]) => void;
  reject: (error: Error) => void;
}

/** A wait for devices given up (the request was cancelled while it waited). */
export class GpuWaitCancelled extends Error {
  override name = "GpuWaitCancelled";
}

/** Start order across queues: priority, then age, then id. */
function before(a: Waiter["request"], b: Waiter["request"]): boolean {
  if (a.priority !== b.priority) return a.priority > b.priority;
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt;
  return a.id < b.id;
}

export class GpuPool {
  readonly devices: readonly string[];
  readonly #file: string | null;
  /** requestId → its devices (held by a live or leftover job). */
  readonly #held = new Map<string, Assignment>();
  /** In start order. */
  readonly #waiting: Waiter[] = [];

  /**
   * @param devices the device indexes jobs may use.
   * @param file where assignments are kept across restarts (null: memory only). Whatever it
   *   holds is taken as held until {@link release} says the job is gone.
   */
  constructor(devices: readonly string[], file: string | null) {
    this.devices = [...devices];
    this.#file = file;
    if (file) {
      let saved: Record<string, Assignment> = {};
      try {
        saved = JSON.parse(readFileSync(file, "utf8")) as Record<string, Assignment>;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      }
      for (const [id, a] of Object.entries(saved)) {
        // A device no longer in the pool is not ours to hand out anyway.
        const devicesInPool = a.devices.filter((d) => this.devices.includes(d));
        if (devicesInPool.length > 0) this.#held.set(id, { ...a, devices: devicesInPool });
      }
    }
  }

  /** Devices no job holds. */
  free(): string[] {
    const taken = new Set([...this.#held.values()].flatMap((a) => a.devices));
    return this.devices.filter((d) => !taken.has(d));
  }

  /** Requests that hold devices. */
  holders(): string[] {
    return [...this.#held.keys()];
  }

  /** The devices `requestId` holds, if any. */
  heldBy(requestId: string): readonly string[] | undefined {
    return this.#held.get(requestId)?.devices;
  }

  /**
   * Devices for one attempt of `request`: at once when `need` are free and nobody waits
   * ahead of it, else once its turn comes. An attempt that already holds devices (a
   * duplicate start) gets the same ones.
   */
  acquire(request: Waiter["request"], need: number): Promise<string[]> {
    if (need > this.devices.length) {
      return Promise.reject(new Error(`needs ${need} GPUs; the pool holds ${this.devices.length}`));
    }
    const own = this.#held.get(request.id);
    if (own) {
      own.attempt = request.attempt;
      this.#save();
      return Promise.resolve([...own.devices]);
    }
    if (need === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { request, need, resolve, reject };
      const at = this.#waiting.findIndex((w) => before(request, w.request));
      if (at < 0) this.#waiting.push(waiter);
      else this.#waiting.splice(at, 0, waiter);
      this.#grant();
    });
  }

  /** Frees what `requestId` holds (its job is gone) and hands devices to the line. */
  release(requestId: string): void {
    if (!this.#held.delete(requestId)) return;
    this.#save();
    this.#grant();
  }

  /** Gives up a wait (cancel); false when the request was not waiting. */
  cancelWait(requestId: string): boolean {
    const at = this.#waiting.findIndex((w) => w.request.id === requestId);
    if (at < 0) return false;
    const [w] = this.#waiting.splice(at, 1);
    w?.reject(new GpuWaitCancelled(`request ${requestId} stopped waiting for GPUs`));
    this.#grant();
    return true;
  }

  /** What a waiting request waits for, in words (SPEC `waitDetail`); null if it does not. */
  waitOf(requestId: string): string | null {
    const w = this.#waiting.find((x) => x.request.id === requestId);
    if (!w) return null;
    const busy = this.devices.filter((d) => !this.free().includes(d));
    const ahead = this.#waiting.indexOf(w);
    return `needs ${w.need} GPU${w.need === 1 ? "" : "s"}; busy: ${busy.join(",") || "none"}${ahead > 0 ? `; ${ahead} waiting ahead` : ""}`;
  }

  /** Hands free devices to the head of the line for as long as the head fits. */
  #grant(): void {
    for (;;) {
      const head = this.#waiting[0];
      if (!head) return;
      const free = this.free();
      if (free.length < head.need) return;
      this.#waiting.shift();
      const devices = free.slice(0, head.need);
      this.#held.set(head.request.id, { attempt: head.request.attempt, devices });
      this.#save();
      head.resolve([...devices]);
    }
  }

  #save(): void {
    if (!this.#file) return;
    const tmp = `${this.#file}.tmp`;
    writeFileSync(tmp, JSON.stringify(Object.fromEntries(this.#held)), { mode: 0o600 });
    renameSync(tmp, this.#file);
  }
}

/**
 * The pool's devices: `LONGRUN_GPUS` (`0,1,2,3`; empty: none) when set, else the devices
 * `nvidia-smi -L` lists, else none. Undefined when the variable is unset and no device is
 * found: then GPU needs are not enforced (a machine without GPUs runs GPU queues' jobs on
 * its CPU, as the examples do).
 */
export async function discoverGpus(env: NodeJS.ProcessEnv): Promise<string[] | undefined> {
  const raw = env.LONGRUN_GPUS;
  if (raw !== undefined) {
    const devices = raw
      .split(",")
      .map((d) => d.trim())
      .filter((d) => d !== "");
    const bad = devices.find((d) => !/^\d{1,3}$/.test(d));
    if (bad !== undefined) {
      throw new Error(
        `LONGRUN_GPUS must list device indexes like 0,1,2; got ${JSON.stringify(bad)}`,
      );
    }
    if (new Set(devices).size !== devices.length) {
      throw new Error("LONGRUN_GPUS lists a device twice");
    }
    return devices;
  }
  const listed = await new Promise<string>((resolve) => {
    execFile("nvidia-smi", ["-L"], { timeout: 5000 }, (error, stdout) =>
      resolve(error ? "" : stdout),
    );
  });
  const devices = [...listed.matchAll(/^GPU (\d+):/gm)].map((m) => m[1] as string);
  return devices.length > 0 ? devices : undefined;
}

/** The environment that confines a job to its devices ("" for none). */
export function gpuEnv(devices: readonly string[]): Record<string, string> {
  const list = devices.join(",");
  return { CUDA_VISIBLE_DEVICES: list, NVIDIA_VISIBLE_DEVICES: list };
}
