import { access, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  FsLayout,
  FsLogStore,
  FsResultStore,
} from "../../functions/adapters/embedded/fs-storage.ts";
import { JobLauncher } from "../../functions/adapters/embedded/launcher.ts";
import { LocalProcessCompute } from "../../functions/adapters/embedded/local-process-compute.ts";
import type { QueueConfig } from "../../functions/config/schema.ts";
import type { JobEvent } from "../../functions/core/ports.ts";
import type { RequestRecord } from "../../functions/core/request.ts";
import { decodeJobRef } from "../../jobs/runner/index.ts";
import { startingRecord } from "../helpers/records.ts";
import { alive, DEMO, removeDir, tempDir, waitFor } from "../runner/helpers.ts";

let dataDir: string;
let events: JobEvent[];
let compute: LocalProcessCompute;
let n = 0;

function request(input: unknown, patch: Partial<RequestRecord> = {}): RequestRecord {
  return startingRecord({
    id: `req_lpc${++n}${Date.now()}`,
    queue: "demo",
    input,
    timeoutSeconds: 30,
    ...patch,
  });
}

const queue: QueueConfig = {
  name: "demo",
  command: [process.execPath, DEMO],
  maxQueued: 10,
  maxRunning: 2,
  defaultPriority: 0,
  timeoutSeconds: 30,
  maxAttempts: 3,
  queueTtlSeconds: 60,
  cancelGraceSeconds: 2,
  retentionDays: 1,
  resources: { gpus: 0, vcpus: 1, memoryMiB: 512 },
  env: {},
};

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );
const typesOf = (id: string) => events.filter((e) => e.requestId === id).map((e) => e.type);

let launcher: JobLauncher | undefined;

/**
 * Every test runs twice: jobs spawned by this process, and jobs spawned by the embedded
 * server's job launcher (launcher.ts), which must keep every property the tests check.
 */
const modes = [{ withLauncher: false }, { withLauncher: true }] as const;

async function setUp(withLauncher: boolean): Promise<void> {
  dataDir = await tempDir("lpc");
  events = [];
  launcher = withLauncher ? new JobLauncher() : undefined;
  compute = new LocalProcessCompute({
    ...(launcher ? { launcher } : {}),
    dataDir,
    onEvent: async (e) => {
      events.push(e);
    },
    clock: { now: () => 1000 },
    pollIntervalMs: 25,
    reapGraceMs: 1000,
  });
}
async function tearDown(): Promise<void> {
  await compute.shutdown(0);
  await launcher?.close();
  await removeDir(dataDir);
}

describe.each(modes)("LocalProcessCompute (launcher: $withLauncher)", ({ withLauncher }) => {
  beforeEach(() => setUp(withLauncher));
  afterEach(tearDown);

  it("reports running, then each progress, then exited, and keeps result and logs", async () => {
    const r = request({ steps: 3, sleepMs: 40, output: 42, artifactBytes: 3 });

    const { jobRef } = await compute.start(r, queue);
    await waitFor(() => typesOf(r.id).includes("exited"), 10_000, "exited");

    expect(decodeJobRef(jobRef)?.startTime).not.toBeNull();
    // Progress changes between two polls may merge into one report on a loaded machine.
    expect(typesOf(r.id).join(" ")).toMatch(/^running (progress ){1,3}exited$/);
    expect(events[0]).toEqual({ type: "running", requestId: r.id, attempt: 1, at: 1000, jobRef });
    expect(events.at(-2)).toMatchObject({
      progress: { current: 3, total: 3, message: "step 3/3" },
    });
    expect(events.at(-1)).toMatchObject({ type: "exited", outcome: "succeeded", attempt: 1 });
    expect(compute.runningCount()).toBe(0);
    // The work dir is removed while `exited` is delivered, not before.
    const workDir = new FsLayout(dataDir).workDir(r.id, 1);
    await waitFor(async () => !(await exists(workDir)), 5000, "the work dir to go");

    const results = new FsResultStore(dataDir, (id, name) => `u/${id}/${name}`);
    expect(await results.getResult(r.id)).toEqual({
      output: { steps: 3, resumedFrom: 0, attempt: 1, output: 42 },
      artifacts: [{ name: "artifact.bin", size: 3, url: `u/${r.id}/artifact.bin` }],
    });
    const log = await new FsLogStore(dataDir).read(r.id, undefined, 100);
    expect(log.lines[0]).toBe("--- attempt 1 ---");
    expect(log.lines).toContain("demo: step 2/3");
    expect(log.lines.at(-1)).toBe("[longrun] job exited with code 0");
  });

  it("appends the logs of every attempt to one file, each after its own header", async () => {
    const input = { steps: 2, sleepMs: 5, fail: "first-attempt" };
    const first = request(input);
    await compute.start(first, queue);
    await waitFor(() => typesOf(first.id).includes("exited"));
    await compute.start({ ...first, attempt: 2 }, queue);
    await waitFor(() => events.filter((e) => e.type === "exited").length === 2);

    const log = await new FsLogStore(dataDir).read(first.id, undefined, 100);

    expect(
      events.filter((e) => e.type === "exited").map((e) => "outcome" in e && e.outcome),
    ).toEqual(["failed", "succeeded"]);
    expect(log.lines.filter((l) => l.startsWith("---"))).toEqual([
      "--- attempt 1 ---",
      "--- attempt 2 ---",
    ]);
    expect(log.lines).toContain("demo: attempt 2 starting at step 1 of 2");
  });

  it("saves no empty checkpoint, and each attempt resumes from what the last one left", async () => {
    // Attempt 1 leaves nothing, attempt 2 writes a checkpoint right before it exits,
    // attempt 3 reads it. Each logs what it found.
    const job = [
      process.execPath,
      "-e",
      `const fs = require('fs'); const e = process.env;
       const f = e.LONGRUN_CHECKPOINT_DIR + '/state.json';
       console.log('found ' + (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : 'nothing'));
       if (e.LONGRUN_ATTEMPT === '2') {
         fs.writeFileSync(f + '.tmp', '{"from":2}'); fs.renameSync(f + '.tmp', f);
       }
       process.exit(e.LONGRUN_ATTEMPT === '3' ? 0 : 1);`,
    ];
    const r = request(null);
    const checkpoints = join(dataDir, "checkpoints", r.id);
    const exits = () => events.filter((e) => e.type === "exited").length;

    await compute.start(r, { ...queue, command: job });
    await waitFor(() => exits() === 1);
    const savedAfterFirst = await exists(checkpoints);
    await compute.start({ ...r, attempt: 2 }, { ...queue, command: job });
    await waitFor(() => exits() === 2);
    await compute.start({ ...r, attempt: 3 }, { ...queue, command: job });
    await waitFor(() => exits() === 3);

    expect(savedAfterFirst).toBe(false);
    const log = await new FsLogStore(dataDir).read(r.id, undefined, 100);
    expect(log.lines.filter((l) => l.startsWith("found "))).toEqual([
      "found nothing",
      "found nothing",
      'found {"from":2}',
    ]);
    expect(events.at(-1)).toMatchObject({ type: "exited", outcome: "succeeded", attempt: 3 });
  });

  it("turns a stop for cancel into a failed exit the core records as CANCELLED", async () => {
    const r = request({ steps: 1000, sleepMs: 20 });
    await compute.start(r, queue);
    await waitFor(() => typesOf(r.id).includes("progress"));

    await compute.stop(r, "cancel");
    await waitFor(() => typesOf(r.id).includes("exited"));

    const exited = events.find((e) => e.type === "exited");
    expect(exited).toMatchObject({ outcome: "failed" });
    expect(exited && "message" in exited && exited.message).toContain("stopped (cancel)");
  });

  it("reports nothing for attempts stopped by a shutdown, after checkpointing them", async () => {
    const r = request({ steps: 1000, sleepMs: 20 });
    await compute.start(r, queue);
    await waitFor(() => typesOf(r.id).includes("progress"));

    await compute.shutdown(5000);

    expect(compute.runningCount()).toBe(0);
    expect(typesOf(r.id)).not.toContain("exited");
    const checkpoint = join(dataDir, "checkpoints", r.id, "current", "state.json");
    expect(JSON.parse(await readFile(checkpoint, "utf8")).step).toBeGreaterThanOrEqual(1);
  });

  it("rejects start when the command cannot be spawned and reports no event", async () => {
    const r = request(null);

    await expect(
      compute.start(r, { ...queue, command: [join(dataDir, "missing-program")] }),
    ).rejects.toThrow(/ENOENT/);
    expect(events).toEqual([]);
    expect(compute.runningCount()).toBe(0);
  });

  it("reaps a job left by another server and saves what it checkpointed", async () => {
    // "Another server": a second instance on the same data dir, whose events go nowhere.
    const other = new LocalProcessCompute({
      dataDir,
      onEvent: async () => {},
      pollIntervalMs: 10_000,
    });
    const r = request({ steps: 1000, sleepMs: 20 });
    const { jobRef } = await other.start(r, queue);
    const pid = decodeJobRef(jobRef)!.pid;
    // With a 10 s poll the other runner saves no checkpoint while the job runs.
    await waitFor(
      () => exists(join(new FsLayout(dataDir).workDir(r.id, 1), "checkpoint", "state.json")),
      10_000,
      "the job's own checkpoint",
    );

    await compute.reap({ ...r, jobRef });

    expect(await alive(pid)).toBe(false);
    const saved = join(dataDir, "checkpoints", r.id, "current", "state.json");
    expect(JSON.parse(await readFile(saved, "utf8")).step).toBeGreaterThanOrEqual(1);
    await other.shutdown(1000);
  });
});
