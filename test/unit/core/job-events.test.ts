import { afterEach, describe, expect, it } from "vitest";
import type { RequestRecord } from "../../../functions/core/request.ts";
import { cancelRequest, dispatchQueue } from "../../../functions/core/usecases/lifecycle.ts";
import { FakeCompute, makeDeps, submitVia, type TestHarness, uid } from "../../helpers/fakes.ts";

let h: TestHarness;
afterEach(() => h?.close());

/** Submits one request and dispatches it: STARTING at attempt 1 with a job reference. */
async function startOne(tenant = uid("tenant")): Promise<RequestRecord> {
  const r = await submitVia(h, { tenant });
  await dispatchQueue(r.queue, h.deps);
  const started = await h.store.get(r.id);
  if (started?.status !== "STARTING") throw new Error(`expected STARTING, got ${started?.status}`);
  return started;
}

async function stored(id: string): Promise<RequestRecord> {
  const r = await h.store.get(id);
  if (!r) throw new Error(`${id} missing`);
  return r;
}

describe("recordJobEvent: running and progress", () => {
  it("moves STARTING to RUNNING with startedAt set to the event time", async () => {
    // Prepare
    h = makeDeps();
    const r = await startOne();
    const at = h.clock.advance(2113);

    // Act
    await h.compute.running(r.id, 1, at);

    // Assess
    expect(await stored(r.id)).toMatchObject({ status: "RUNNING", startedAt: at, attempt: 1 });
    expect(h.changes.filter((c) => c.event === "started")).toEqual([
      { id: r.id, status: "RUNNING", event: "started" },
    ]);
  });

  it("keeps the first startedAt on a later attempt and notifies started only once", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 3 } });
    const r = await startOne();
    const firstAt = h.clock.advance(1000);
    await h.compute.running(r.id, 1, firstAt);
    await h.compute.exited(r.id, 1, "failed", h.clock.advance(1000));

    // Act
    await h.compute.running(r.id, 2, h.clock.advance(1000));

    // Assess
    expect(await stored(r.id)).toMatchObject({ status: "RUNNING", attempt: 2, startedAt: firstAt });
    expect(h.changes.filter((c) => c.event === "started")).toHaveLength(1);
  });

  it("records progress with updatedAt from the event", async () => {
    // Prepare
    h = makeDeps();
    const r = await startOne();
    await h.compute.running(r.id, 1);
    const at = h.clock.advance(5000);

    // Act
    await h.compute.progress(r.id, 1, { current: 2, total: 3, message: "epoch 2" }, at);

    // Assess
    expect((await stored(r.id)).progress).toEqual({
      current: 2,
      total: 3,
      message: "epoch 2",
      updatedAt: at,
    });
    expect(h.changes.at(-1)).toEqual({ id: r.id, status: "RUNNING", event: "progress" });
  });

  it("replaces progress with each newer report", async () => {
    // Prepare
    h = makeDeps();
    const r = await startOne();
    await h.compute.running(r.id, 1);
    await h.compute.progress(r.id, 1, { current: 1, total: 3, message: null });

    // Act
    const at = h.clock.advance(1000);
    await h.compute.progress(r.id, 1, { current: 2, total: null, message: "x" }, at);

    // Assess
    expect((await stored(r.id)).progress).toEqual({
      current: 2,
      total: null,
      message: "x",
      updatedAt: at,
    });
  });
});

describe("recordJobEvent: exits", () => {
  it("finishes SUCCEEDED, frees the slot and starts the next queued request event-driven", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 1 } }, { trigger: "in-process" });
    const tenant = uid("tenant");
    const first = await submitVia(h, { tenant });
    const second = await submitVia(h, { tenant });
    await h.settle();
    await h.compute.running(first.id, 1);
    expect((await stored(second.id)).status).toBe("QUEUED");
    const at = h.clock.advance(60_000);

    // Act
    await h.compute.exited(first.id, 1, "succeeded", at);
    await h.settle();

    // Assess
    expect(await stored(first.id)).toMatchObject({
      status: "SUCCEEDED",
      finishedAt: at,
      error: null,
    });
    expect(await stored(second.id)).toMatchObject({ status: "STARTING", attempt: 1 });
    expect(h.compute.callsOf("start").map((c) => c.id)).toEqual([first.id, second.id]);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 1 });
    expect(h.changes).toContainEqual({ id: first.id, status: "SUCCEEDED", event: "completed" });
    expect(h.dispatchErrors).toEqual([]);
  });

  it("wakes the queue when an attempt ends (recording trigger)", async () => {
    // Prepare
    h = makeDeps();
    const r = await startOne();
    await h.compute.running(r.id, 1);
    h.recording?.wakes.splice(0);

    // Act
    await h.compute.exited(r.id, 1, "succeeded");

    // Assess
    expect(h.recording?.wakes).toEqual(["gpu"]);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 0 });
  });

  it("retries a failed attempt as STARTING attempt + 1, keeping its slot", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 3, maxRunning: 1 } });
    const tenant = uid("tenant");
    const r = await startOne(tenant);
    const waiting = await submitVia(h, { tenant });
    await h.compute.running(r.id, 1);

    // Act
    await h.compute.exited(r.id, 1, "failed");

    // Assess
    expect(await stored(r.id)).toMatchObject({
      status: "STARTING",
      attempt: 2,
      jobRef: FakeCompute.jobRef(r.id, 2),
      finishedAt: null,
      error: null,
    });
    expect(h.compute.callsOf("start")).toEqual([
      { op: "start", id: r.id, attempt: 1 },
      { op: "start", id: r.id, attempt: 2 },
    ]);
    expect((await stored(waiting.id)).status).toBe("QUEUED");
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 1, running: 1 });
  });

  it("fails job_failed when the last attempt fails", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 2 } });
    const r = await startOne();
    await h.compute.running(r.id, 1);
    await h.compute.exited(r.id, 1, "failed");
    await h.compute.running(r.id, 2);
    const at = h.clock.advance(1000);

    // Act
    await h.compute.exited(r.id, 2, "failed", at, "exit code 3");

    // Assess
    expect(await stored(r.id)).toMatchObject({
      status: "FAILED",
      attempt: 2,
      finishedAt: at,
      error: { code: "job_failed", message: "exit code 3" },
    });
    expect(h.compute.callsOf("start")).toHaveLength(2);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 0 });
  });

  it("fails a timed-out attempt with code timeout and does not retry it", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 3 } });
    const r = await startOne();
    await h.compute.running(r.id, 1);

    // Act
    await h.compute.exited(r.id, 1, "timeout");

    // Assess
    expect(await stored(r.id)).toMatchObject({
      status: "FAILED",
      attempt: 1,
      error: { code: "timeout" },
    });
    expect(h.compute.callsOf("start")).toHaveLength(1);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 0 });
  });

  it("ends a request whose cancel is pending as CANCELLED when its job exits, whatever the outcome", async () => {
    for (const outcome of ["succeeded", "failed", "timeout"] as const) {
      // Prepare
      h?.close();
      h = makeDeps({ gpu: { maxAttempts: 3 } });
      const tenant = uid("tenant");
      const r = await startOne(tenant);
      await h.compute.running(r.id, 1);
      await cancelRequest(tenant, r.id, h.deps);

      // Act
      await h.compute.exited(r.id, 1, outcome);

      // Assess
      expect(await stored(r.id), outcome).toMatchObject({
        status: "CANCELLED",
        cancelRequested: true,
        error: { code: "cancelled" },
      });
      expect(h.compute.callsOf("start"), outcome).toHaveLength(1);
      expect(await h.store.queueCounts("gpu"), outcome).toEqual({ queued: 0, running: 0 });
    }
  });

  it("accepts exited before running (out of order) and then ignores the late running", async () => {
    // Prepare
    h = makeDeps();
    const r = await startOne();
    const at = h.clock.advance(500);

    // Act
    await h.compute.exited(r.id, 1, "succeeded", at);
    const after = await stored(r.id);
    await h.compute.running(r.id, 1, at - 100);

    // Assess
    expect(after).toMatchObject({ status: "SUCCEEDED", finishedAt: at });
    expect(await stored(r.id)).toEqual(after);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 0 });
  });
});

describe("recordJobEvent: stale events change nothing", () => {
  /** Runs `act` and asserts the stored record and counters are deep-equal before and after. */
  async function expectUnchanged(id: string, act: () => Promise<void>): Promise<void> {
    const before = await stored(id);
    const countsBefore = await h.store.queueCounts(before.queue);
    const startsBefore = h.compute.callsOf("start").length;
    await act();
    expect(await stored(id)).toEqual(before);
    expect(await h.store.queueCounts(before.queue)).toEqual(countsBefore);
    expect(h.compute.callsOf("start")).toHaveLength(startsBefore);
  }

  it("ignores every event of an older attempt", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 3 } });
    const r = await startOne();
    await h.compute.running(r.id, 1);
    await h.compute.exited(r.id, 1, "failed");
    await h.compute.running(r.id, 2);

    // Act / Assess
    await expectUnchanged(r.id, async () => {
      await h.compute.running(r.id, 1);
      await h.compute.progress(r.id, 1, { current: 9, total: 9, message: "old" });
      await h.compute.exited(r.id, 1, "succeeded");
      await h.compute.exited(r.id, 1, "failed");
      await h.compute.exited(r.id, 1, "timeout");
    });
  });

  it("ignores events of a future attempt", async () => {
    h = makeDeps();
    const r = await startOne();
    await expectUnchanged(r.id, async () => {
      await h.compute.running(r.id, 2);
      await h.compute.exited(r.id, 2, "succeeded");
    });
  });

  it("ignores a duplicate exited after SUCCEEDED", async () => {
    // Prepare
    h = makeDeps();
    const r = await startOne();
    await h.compute.running(r.id, 1);
    await h.compute.exited(r.id, 1, "succeeded");
    h.clock.advance(1000);

    // Act / Assess
    await expectUnchanged(r.id, async () => {
      await h.compute.exited(r.id, 1, "succeeded");
      await h.compute.exited(r.id, 1, "failed");
    });
  });

  it("ignores a duplicate failed exit that already caused a retry", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 3 } });
    const r = await startOne();
    await h.compute.running(r.id, 1);
    await h.compute.exited(r.id, 1, "failed");

    // Act / Assess
    await expectUnchanged(r.id, () => h.compute.exited(r.id, 1, "failed"));
  });

  it("ignores running and progress after SUCCEEDED", async () => {
    // Prepare
    h = makeDeps();
    const r = await startOne();
    await h.compute.running(r.id, 1);
    await h.compute.exited(r.id, 1, "succeeded");

    // Act / Assess
    await expectUnchanged(r.id, async () => {
      await h.compute.running(r.id, 1);
      await h.compute.progress(r.id, 1, { current: 1, total: 1, message: null });
    });
  });

  it("ignores events after FAILED and after CANCELLED", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 1, maxRunning: 2 } });
    const tenant = uid("tenant");
    const failed = await startOne(tenant);
    await h.compute.exited(failed.id, 1, "failed");
    const cancelled = await startOne(tenant);
    await cancelRequest(tenant, cancelled.id, h.deps);
    await h.compute.exited(cancelled.id, 1, "failed");

    // Act / Assess
    for (const id of [failed.id, cancelled.id]) {
      await expectUnchanged(id, async () => {
        await h.compute.running(id, 1);
        await h.compute.progress(id, 1, { current: 1, total: 1, message: null });
        await h.compute.exited(id, 1, "succeeded");
      });
    }
  });

  it("ignores a duplicate running and does not move startedAt", async () => {
    // Prepare
    h = makeDeps();
    const r = await startOne();
    await h.compute.running(r.id, 1, h.clock.advance(10));

    // Act / Assess
    await expectUnchanged(r.id, () => h.compute.running(r.id, 1, h.clock.advance(10)));
  });

  it("ignores events for an unknown request", async () => {
    h = makeDeps();
    const r = await startOne();
    await expectUnchanged(r.id, async () => {
      await h.compute.running("req_00000000000000000000000000", 1);
      await h.compute.exited("req_00000000000000000000000000", 1, "succeeded");
    });
  });

  it("ignores events for a request still QUEUED", async () => {
    h = makeDeps({ gpu: { maxRunning: 1 } });
    const tenant = uid("tenant");
    await startOne(tenant);
    const queued = await submitVia(h, { tenant });
    await expectUnchanged(queued.id, async () => {
      await h.compute.running(queued.id, 0);
      await h.compute.exited(queued.id, 0, "succeeded");
      await h.compute.running(queued.id, 1);
    });
  });
});
