/**
 * SPEC §5 "GPUs on one machine are a pool", with a declared pool and no real GPU: each job
 * sees exactly its devices, waits (no_capacity) until they are free, freed devices go to the
 * highest priority across queues without a smaller request jumping ahead, and assignments
 * survive a restart.
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  discoverGpus,
  GpuPool,
  GpuWaitCancelled,
} from "../../functions/adapters/embedded/gpu-pool.ts";
import { LocalProcessCompute } from "../../functions/adapters/embedded/local-process-compute.ts";
import { parseConfig } from "../../functions/config/load.ts";
import type { QueueConfig } from "../../functions/config/schema.ts";
import type { JobEvent } from "../../functions/core/ports.ts";
import type { RequestRecord } from "../../functions/core/request.ts";
import { EmbeddedRuntime } from "../../functions/local/runtime.ts";
import { startingRecord } from "../helpers/records.ts";
import { removeDir, tempDir, waitFor } from "../runner/helpers.ts";

let dir: string;
let n = 0;

function request(patch: Partial<RequestRecord> = {}): RequestRecord {
  n++;
  return startingRecord({
    id: `req_gpu${n}x${Date.now()}`,
    createdAt: n,
    timeoutSeconds: 30,
    ...patch,
  });
}

beforeEach(async () => {
  dir = await tempDir("gpu");
});
afterEach(async () => {
  await removeDir(dir);
});

describe("GpuPool", () => {
  it("hands freed devices to the highest priority, then the oldest, and lets no smaller request jump ahead", async () => {
    // Prepare: A holds one of two devices; C needs both; B needs one and is older than C.
    const pool = new GpuPool(["0", "1"], null);
    const a = request();
    const b = request({ priority: 0 });
    const c = request({ priority: 5 });
    const granted: string[] = [];
    expect(await pool.acquire(a, 1)).toEqual(["0"]);

    // Act
    const forC = pool.acquire(c, 2).then((d) => granted.push(`c:${d.join(",")}`));
    const forB = pool.acquire(b, 1).then((d) => granted.push(`b:${d.join(",")}`));
    await new Promise((resolve) => setTimeout(resolve, 10));
    const whileHeld = [...granted];
    const detail = pool.waitOf(b.id);
    pool.release(a.id);
    await forC;
    pool.release(c.id);
    await forB;

    // Assess: device 1 stayed free while C waited rather than going to B.
    expect(whileHeld).toEqual([]);
    expect(detail).toBe("needs 1 GPU; busy: 0; 1 waiting ahead");
    expect(granted).toEqual(["c:0,1", "b:0"]);
  });

  it("gives up a cancelled wait and lets the next one in", async () => {
    // Prepare
    const pool = new GpuPool(["0"], null);
    const holder = request();
    await pool.acquire(holder, 1);
    const first = request({ priority: 9 });
    const second = request();
    const waitFirst = pool.acquire(first, 1);
    const waitSecond = pool.acquire(second, 1);

    // Act
    const cancelled = pool.cancelWait(first.id);
    pool.release(holder.id);

    // Assess
    expect(cancelled).toBe(true);
    await expect(waitFirst).rejects.toBeInstanceOf(GpuWaitCancelled);
    expect(await waitSecond).toEqual(["0"]);
    expect(pool.cancelWait(first.id)).toBe(false);
  });

  it("keeps assignments across a restart until the job is said to be gone", async () => {
    // Prepare
    const file = join(dir, "gpus.json");
    const before = new GpuPool(["0", "1", "2"], file);
    const r = request();
    await before.acquire(r, 2);

    // Act
    const after = new GpuPool(["0", "1", "2"], file);
    const heldAfterRestart = after.free();
    after.release(r.id);

    // Assess
    expect(heldAfterRestart).toEqual(["2"]);
    expect(after.heldBy(r.id)).toBeUndefined();
    expect(after.free()).toEqual(["0", "1", "2"]);
    expect(new GpuPool(["0", "1", "2"], file).free()).toEqual(["0", "1", "2"]);
  });

  it("reads LONGRUN_GPUS and refuses what is not a list of device indexes", async () => {
    // Act
    const declared = await discoverGpus({ LONGRUN_GPUS: "0, 2,3" });
    const none = await discoverGpus({ LONGRUN_GPUS: "" });

    // Assess
    expect(declared).toEqual(["0", "2", "3"]);
    expect(none).toEqual([]);
    await expect(discoverGpus({ LONGRUN_GPUS: "0,gpu1" })).rejects.toThrow(/LONGRUN_GPUS/);
    await expect(discoverGpus({ LONGRUN_GPUS: "1,1" })).rejects.toThrow(/twice/);
  });
});

describe("LocalProcessCompute with a GPU pool", () => {
  /** A job that records the devices it sees, then waits for its go file. */
  const JOB = `
    const fs = require("node:fs");
    const input = JSON.parse(fs.readFileSync(process.env.LONGRUN_INPUT_FILE, "utf8"));
    fs.writeFileSync(input.dir + "/" + input.tag + ".env", JSON.stringify({
      cuda: process.env.CUDA_VISIBLE_DEVICES ?? null,
      nvidia: process.env.NVIDIA_VISIBLE_DEVICES ?? null,
    }));
    const go = input.dir + "/" + input.tag + ".go";
    const t = setInterval(() => { if (fs.existsSync(go)) { clearInterval(t); } }, 20);
  `;
  const queueOf = (name: string, gpus: number): QueueConfig => ({
    name,
    command: [process.execPath, "-e", JOB],
    maxQueued: 10,
    maxRunning: 4,
    defaultPriority: 0,
    timeoutSeconds: 30,
    maxAttempts: 3,
    queueTtlSeconds: 60,
    cancelGraceSeconds: 1,
    retentionDays: 1,
    resources: { gpus, vcpus: 1, memoryMiB: 512 },
    env: { CUDA_VISIBLE_DEVICES: "everything" },
  });
  let compute: LocalProcessCompute;
  let events: JobEvent[];

  beforeEach(() => {
    events = [];
    compute = new LocalProcessCompute({
      dataDir: dir,
      onEvent: async (e) => {
        events.push(e);
      },
      pollIntervalMs: 25,
      reapGraceMs: 500,
      gpus: new GpuPool(["0", "1"], join(dir, "gpus.json")),
    });
  });
  afterEach(async () => {
    await compute.shutdown(0);
  });

  const seen = async (tag: string) =>
    JSON.parse(await readFile(join(dir, `${tag}.env`), "utf8")) as { cuda: string; nvidia: string };
  const exited = (id: string) => events.some((e) => e.requestId === id && e.type === "exited");

  it("gives each job exactly its devices, holds the next until they are free, and none to a CPU queue", async () => {
    // Prepare
    const two = queueOf("two", 2);
    const one = queueOf("one", 1);
    const cpu = queueOf("cpu", 0);
    const a = request({ input: { dir, tag: "a" } });
    const b = request({ input: { dir, tag: "b" } });
    const c = request({ input: { dir, tag: "c" } });

    // Act
    await compute.start(a, two);
    const startB = compute.start(b, one);
    await compute.start(c, cpu);
    await waitFor(async () => (await seen("c").catch(() => null)) !== null, 10_000, "c's env");
    const waitingB = compute.capacityWait(b);
    await writeFile(join(dir, "a.go"), "");
    await waitFor(() => exited(a.id), 10_000, "a to exit");
    await startB;
    await waitFor(async () => (await seen("b").catch(() => null)) !== null, 10_000, "b's env");

    // Assess
    expect(await seen("a")).toEqual({ cuda: "0,1", nvidia: "0,1" });
    expect(await seen("c")).toEqual({ cuda: "", nvidia: "" });
    expect(waitingB).toEqual({ detail: "needs 1 GPU; busy: 0,1" });
    expect(await seen("b")).toEqual({ cuda: "0", nvidia: "0" });
    expect(compute.capacityWait(b)).toBeNull();
    await writeFile(join(dir, "b.go"), "");
    await writeFile(join(dir, "c.go"), "");
    await waitFor(() => exited(b.id) && exited(c.id), 10_000, "b and c to exit");
  });

  it("fails a waiting launch when it is stopped for a cancel, without touching the holder", async () => {
    // Prepare
    const two = queueOf("two", 2);
    const a = request({ input: { dir, tag: "a" } });
    const b = request({ input: { dir, tag: "b" } });
    await compute.start(a, two);
    const startB = compute.start(b, two);

    // Act
    await compute.stop(b, "cancel");

    // Assess
    await expect(startB).rejects.toBeInstanceOf(GpuWaitCancelled);
    expect(compute.runningCount()).toBe(1);
    await writeFile(join(dir, "a.go"), "");
    await waitFor(() => exited(a.id), 10_000, "a to exit");
  });
});

describe("the embedded server's GPU pool", () => {
  it("stops start-up naming a queue that asks for more GPUs than the pool holds", async () => {
    // Prepare
    const config = parseConfig(
      {
        queues: {
          small: { command: ["true"] },
          big: { command: ["true"], resources: { gpus: 3 } },
        },
      },
      "/",
    );

    // Act
    const open = () =>
      new EmbeddedRuntime({
        config,
        dataDir: dir,
        allowPrivateWebhooks: true,
        sweepIntervalMs: 60_000,
        baseUrl: () => "http://127.0.0.1:1",
        log: () => {},
        gpus: ["0", "1"],
      });

    // Assess
    expect(open).toThrow(/queue big: resources.gpus is 3 but the GPU pool holds 2/);
  });
});
