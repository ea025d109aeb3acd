import { afterEach, describe, expect, it } from "vitest";
import { NotFoundError } from "../../../functions/core/errors.ts";
import { dispatchQueue } from "../../../functions/core/usecases/lifecycle.ts";
import { FakeCompute, makeDeps, submitVia, type TestHarness, uid } from "../../helpers/fakes.ts";

let h: TestHarness;
afterEach(() => h?.close());

describe("dispatchQueue", () => {
  it("starts at most maxRunning requests and leaves the rest QUEUED", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 2 } });
    const tenant = uid("tenant");
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await submitVia(h, { tenant })).id);

    // Act
    const started = await dispatchQueue("gpu", h.deps);
    const again = await dispatchQueue("gpu", h.deps);

    // Assess
    expect(started).toBe(2);
    expect(again).toBe(0);
    expect(h.compute.callsOf("start").map((c) => c.id)).toEqual(ids.slice(0, 2));
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 3, running: 2 });
    const statuses = await Promise.all(ids.map(async (id) => (await h.store.get(id))?.status));
    expect(statuses).toEqual(["STARTING", "STARTING", "QUEUED", "QUEUED", "QUEUED"]);
  });

  it("starts attempt 1 with the job reference recorded", async () => {
    // Prepare
    h = makeDeps();
    const r = await submitVia(h, { tenant: uid("tenant") });

    // Act
    await dispatchQueue("gpu", h.deps);

    // Assess
    const stored = await h.store.get(r.id);
    expect(stored).toMatchObject({
      status: "STARTING",
      attempt: 1,
      jobRef: FakeCompute.jobRef(r.id, 1),
      startedAt: null,
    });
    expect(h.compute.calls).toEqual([{ op: "start", id: r.id, attempt: 1 }]);
  });

  it("starts higher priority first, then oldest first, ties on time by id", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 10 } });
    const tenant = uid("tenant");
    const low1 = await submitVia(h, { tenant, priority: 1 });
    h.clock.advance(1);
    const high = await submitVia(h, { tenant, priority: 7 });
    h.clock.advance(1);
    const low2 = await submitVia(h, { tenant, priority: 1 });
    // same instant as low2: the later id goes later
    const low3 = await submitVia(h, { tenant, priority: 1 });
    const mid = await submitVia(h, { tenant, priority: 4 });
    h.clock.set(h.clock.now() - 10_000); // an earlier createdAt wins within its priority
    const lowOldest = await submitVia(h, { tenant, priority: 1 });

    // Act
    await dispatchQueue("gpu", h.deps);

    // Assess
    expect(h.compute.callsOf("start").map((c) => c.id)).toEqual([
      high.id,
      mid.id,
      lowOldest.id,
      low1.id,
      low2.id,
      low3.id,
    ]);
  });

  it("expires a head that outlived its TTL with error expired and never starts it", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 1, queueTtlSeconds: 60 } });
    const tenant = uid("tenant");
    const stale = await submitVia(h, { tenant, priority: 9, queueTtlSeconds: 10 });
    const fresh = await submitVia(h, { tenant });
    h.clock.advanceSeconds(10); // exactly at expiresAt of `stale`

    // Act
    const started = await dispatchQueue("gpu", h.deps);

    // Assess
    expect(started).toBe(1);
    expect(h.compute.callsOf("start").map((c) => c.id)).toEqual([fresh.id]);
    const expired = await h.store.get(stale.id);
    expect(expired).toMatchObject({
      status: "EXPIRED",
      attempt: 0,
      finishedAt: h.clock.now(),
      error: { code: "expired" },
    });
    expect(h.changes).toContainEqual({ id: stale.id, status: "EXPIRED", event: "completed" });
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 1 });
  });

  it("counts a failed compute.start as a failed attempt and retries it at once", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 3 } });
    const r = await submitVia(h, { tenant: uid("tenant") });
    h.compute.plan = (req) => (req.attempt === 1 ? "throw" : "ok");

    // Act
    await dispatchQueue("gpu", h.deps);

    // Assess
    expect(h.compute.callsOf("start")).toEqual([
      { op: "start", id: r.id, attempt: 1 },
      { op: "start", id: r.id, attempt: 2 },
    ]);
    expect(await h.store.get(r.id)).toMatchObject({
      status: "STARTING",
      attempt: 2,
      jobRef: FakeCompute.jobRef(r.id, 2),
      error: null,
    });
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 1 });
  });

  it("fails the request job_failed once every start attempt threw, and frees the slot", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 2, maxRunning: 1 } });
    const tenant = uid("tenant");
    const doomed = await submitVia(h, { tenant });
    const next = await submitVia(h, { tenant });
    h.compute.plan = (req) => (req.id === doomed.id ? "throw" : "ok");

    // Act
    await dispatchQueue("gpu", h.deps);

    // Assess
    const failed = await h.store.get(doomed.id);
    expect(failed).toMatchObject({
      status: "FAILED",
      attempt: 2,
      finishedAt: h.clock.now(),
      error: { code: "job_failed" },
    });
    expect(failed?.error?.message).toContain(`no capacity for ${doomed.id}`);
    // The slot was freed and the queue woken; the dispatch run also went on to the next one.
    expect(h.recording?.wakes).toContain("gpu");
    expect((await h.store.get(next.id))?.status).toBe("STARTING");
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 1 });
  });

  it("does nothing on an empty queue", async () => {
    h = makeDeps();
    expect(await dispatchQueue("gpu", h.deps)).toBe(0);
    expect(h.compute.calls).toEqual([]);
  });

  it("throws NotFoundError for a queue not in the config", async () => {
    h = makeDeps();
    await expect(dispatchQueue("other", h.deps)).rejects.toBeInstanceOf(NotFoundError);
  });

  it("only dispatches its own queue", async () => {
    // Prepare
    h = makeDeps({ gpu: {}, cpu: {} });
    const onCpu = await submitVia(h, { tenant: uid("t"), queue: "cpu" });

    // Act
    await dispatchQueue("gpu", h.deps);

    // Assess
    expect(h.compute.calls).toEqual([]);
    expect((await h.store.get(onCpu.id))?.status).toBe("QUEUED");
  });

  it("never exceeds maxRunning when several dispatch runs overlap", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 3 } });
    const tenant = uid("tenant");
    for (let i = 0; i < 10; i++) await submitVia(h, { tenant });

    // Act
    const counts = await Promise.all(Array.from({ length: 5 }, () => dispatchQueue("gpu", h.deps)));

    // Assess
    expect(counts.reduce((a, b) => a + b, 0)).toBe(3);
    expect(h.compute.callsOf("start")).toHaveLength(3);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 7, running: 3 });
  });

  it("starts queued work as soon as it is submitted with the in-process trigger", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 1 } }, { trigger: "in-process" });
    const tenant = uid("tenant");

    // Act
    const a = await submitVia(h, { tenant });
    const b = await submitVia(h, { tenant });
    await h.settle();

    // Assess
    expect(h.compute.callsOf("start").map((c) => c.id)).toEqual([a.id]);
    expect((await h.store.get(b.id))?.status).toBe("QUEUED");
    expect(h.dispatchErrors).toEqual([]);
  });
});
