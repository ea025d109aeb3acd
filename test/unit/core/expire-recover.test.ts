import { afterEach, describe, expect, it } from "vitest";
import { InProcessTrigger } from "../../../functions/adapters/embedded/in-process-trigger.ts";
import type { RequestRecord } from "../../../functions/core/request.ts";
import {
  cancelRequest,
  dispatchQueue,
  expireQueued,
  recoverInFlight,
} from "../../../functions/core/usecases/lifecycle.ts";
import { FakeCompute, makeDeps, submitVia, type TestHarness, uid } from "../../helpers/fakes.ts";

let h: TestHarness;
afterEach(() => h?.close());

async function stored(id: string): Promise<RequestRecord> {
  const r = await h.store.get(id);
  if (!r) throw new Error(`${id} missing`);
  return r;
}

describe("expireQueued", () => {
  it("expires only QUEUED requests past their TTL and records error expired", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 1, queueTtlSeconds: 600 } });
    const tenant = uid("tenant");
    const running = await submitVia(h, { tenant, queueTtlSeconds: 5 });
    await dispatchQueue("gpu", h.deps);
    const due = await submitVia(h, { tenant, queueTtlSeconds: 10 });
    const dueExactly = await submitVia(h, { tenant, queueTtlSeconds: 30 });
    const notYet = await submitVia(h, { tenant, queueTtlSeconds: 31 });
    const cancelled = await submitVia(h, { tenant, queueTtlSeconds: 1 });
    await cancelRequest(tenant, cancelled.id, h.deps);
    const cancelledBefore = await stored(cancelled.id);
    const now = h.clock.advanceSeconds(30);

    // Act
    const n = await expireQueued(h.deps);

    // Assess
    expect(n).toBe(2);
    for (const r of [due, dueExactly]) {
      expect(await stored(r.id)).toMatchObject({
        status: "EXPIRED",
        finishedAt: now,
        attempt: 0,
        error: { code: "expired" },
      });
    }
    expect((await stored(due.id)).error?.message).toContain("10s");
    expect((await stored(notYet.id)).status).toBe("QUEUED");
    expect((await stored(running.id)).status).toBe("STARTING");
    expect(await stored(cancelled.id)).toEqual(cancelledBefore);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 1, running: 1 });
    expect(h.changes.filter((c) => c.status === "EXPIRED").map((c) => c.id)).toEqual(
      expect.arrayContaining([due.id, dueExactly.id]),
    );
  });

  it("returns 0 and changes nothing when nothing is due", async () => {
    // Prepare
    h = makeDeps({ gpu: { queueTtlSeconds: 60 } });
    const r = await submitVia(h, { tenant: uid("tenant") });
    const before = await stored(r.id);
    h.clock.advanceSeconds(59);

    // Act
    const n = await expireQueued(h.deps);

    // Assess
    expect(n).toBe(0);
    expect(await stored(r.id)).toEqual(before);
  });

  it("an expired request is never started afterwards", async () => {
    // Prepare
    h = makeDeps({ gpu: { queueTtlSeconds: 60 } });
    const r = await submitVia(h, { tenant: uid("tenant") });
    h.clock.advanceSeconds(60);
    await expireQueued(h.deps);

    // Act
    const started = await dispatchQueue("gpu", h.deps);

    // Assess
    expect(started).toBe(0);
    expect(h.compute.calls).toEqual([]);
    expect((await stored(r.id)).status).toBe("EXPIRED");
  });
});

describe("recoverInFlight", () => {
  it("reaps every active request before starting any new attempt", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 2, maxAttempts: 3 }, cpu: { maxRunning: 1 } });
    const tenant = uid("tenant");
    const a = await submitVia(h, { tenant, queue: "gpu" });
    const b = await submitVia(h, { tenant, queue: "gpu" });
    const c = await submitVia(h, { tenant, queue: "cpu" });
    await dispatchQueue("gpu", h.deps);
    await dispatchQueue("cpu", h.deps);
    await h.compute.running(a.id, 1);
    h.compute.calls.splice(0);

    // Act
    const n = await recoverInFlight(h.deps);

    // Assess
    expect(n).toBe(3);
    const ops = h.compute.calls.map((call) => call.op);
    const firstStart = ops.indexOf("start");
    const lastReap = ops.lastIndexOf("reap");
    expect(ops.filter((op) => op === "reap")).toHaveLength(3);
    expect(lastReap).toBeLessThan(firstStart);
    expect(new Set(h.compute.callsOf("reap").map((call) => call.id))).toEqual(
      new Set([a.id, b.id, c.id]),
    );
    expect(h.compute.callsOf("reap").every((call) => call.attempt === 1)).toBe(true);
  });

  it("retries each in-flight attempt as attempt + 1 keeping its slot", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 2, maxAttempts: 3 } });
    const tenant = uid("tenant");
    const running = await submitVia(h, { tenant });
    const starting = await submitVia(h, { tenant });
    const waiting = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);
    const startedAt = h.clock.advance(100);
    await h.compute.running(running.id, 1, startedAt);

    // Act
    await recoverInFlight(h.deps);

    // Assess
    expect(await stored(running.id)).toMatchObject({
      status: "STARTING",
      attempt: 2,
      startedAt,
      jobRef: FakeCompute.jobRef(running.id, 2),
    });
    expect(await stored(starting.id)).toMatchObject({ status: "STARTING", attempt: 2 });
    expect((await stored(waiting.id)).status).toBe("QUEUED");
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 1, running: 2 });
  });

  it("retries a restarted attempt even when maxAttempts is spent: the platform ended it", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 1 } });
    const r = await submitVia(h, { tenant: uid("tenant") });
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(r.id, 1);

    // Act
    await recoverInFlight(h.deps);

    // Assess
    expect(await stored(r.id)).toMatchObject({
      status: "STARTING",
      attempt: 2,
      maxAttempts: 1,
      platformRetries: 1,
      error: null,
    });
    expect(h.compute.callsOf("start").map((c) => c.attempt)).toEqual([1, 2]);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 1 });
  });

  it("ends a request with a pending cancel as CANCELLED instead of retrying it", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 3 } });
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(r.id, 1);
    await cancelRequest(tenant, r.id, h.deps);

    // Act
    await recoverInFlight(h.deps);

    // Assess
    expect(await stored(r.id)).toMatchObject({
      status: "CANCELLED",
      attempt: 1,
      error: { code: "cancelled" },
    });
    expect(h.compute.callsOf("start")).toHaveLength(1);
  });

  it("wakes every configured queue, also those with nothing in flight", async () => {
    // Prepare
    h = makeDeps({ gpu: {}, cpu: {}, tpu: {} });
    const r = await submitVia(h, { tenant: uid("tenant"), queue: "gpu" });
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(r.id, 1);
    h.recording?.wakes.splice(0);

    // Act
    await recoverInFlight(h.deps);

    // Assess
    expect(new Set(h.recording?.wakes)).toEqual(new Set(["gpu", "cpu", "tpu"]));
  });

  it("with the in-process trigger, starts queued work whose wake-up was lost in the crash", async () => {
    // Prepare: the dead server accepted a request but never dispatched it (its wake-up was
    // only recorded); the restarted server wires the real in-process trigger.
    h = makeDeps({ gpu: { maxRunning: 1 } });
    const r = await submitVia(h, { tenant: uid("tenant") });
    const trigger = new InProcessTrigger(
      (queue) => dispatchQueue(queue, h.deps),
      (_queue, error) => h.dispatchErrors.push(error),
    );
    h.deps.trigger = trigger;

    // Act
    await recoverInFlight(h.deps);
    await trigger.idle();

    // Assess
    expect((await stored(r.id)).status).toBe("STARTING");
    expect(h.compute.callsOf("start").map((c) => c.id)).toEqual([r.id]);
    expect(h.dispatchErrors).toEqual([]);
  });
});
