import { afterEach, describe, expect, it, vi } from "vitest";
import { ConflictError, NotFoundError } from "../../../functions/core/errors.ts";
import type { RequestRecord } from "../../../functions/core/request.ts";
import { cancelRequest, dispatchQueue } from "../../../functions/core/usecases/lifecycle.ts";
import { FakeCompute, makeDeps, submitVia, type TestHarness, uid } from "../../helpers/fakes.ts";

let h: TestHarness;
afterEach(() => h?.close());

async function stored(id: string): Promise<RequestRecord> {
  const r = await h.store.get(id);
  if (!r) throw new Error(`${id} missing`);
  return r;
}

/** Lets every pending promise callback run (the held start's continuation included). */
async function flush(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

describe("cancelRequest", () => {
  it("cancels a QUEUED request at once and decrements the queued counter", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    const at = h.clock.advance(3000);

    // Act
    const { request: result, position } = await cancelRequest(tenant, r.id, h.deps);

    // Assess
    expect(position).toBeNull();
    expect(result).toMatchObject({
      status: "CANCELLED",
      cancelRequested: true,
      finishedAt: at,
      attempt: 0,
      error: { code: "cancelled" },
    });
    expect(await stored(r.id)).toEqual(result);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 0 });
    expect(h.compute.calls).toEqual([]);
    expect(h.changes).toContainEqual({ id: r.id, status: "CANCELLED", event: "completed" });
  });

  it("a cancelled QUEUED request is never started", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    await cancelRequest(tenant, r.id, h.deps);

    // Act
    const started = await dispatchQueue("gpu", h.deps);

    // Assess
    expect(started).toBe(0);
    expect(h.compute.calls).toEqual([]);
  });

  it("marks a RUNNING request cancelRequested and stops its job with reason cancel", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(r.id, 1);

    // Act
    const { request: result } = await cancelRequest(tenant, r.id, h.deps);

    // Assess
    expect(result).toMatchObject({ status: "RUNNING", cancelRequested: true, finishedAt: null });
    expect(h.compute.callsOf("stop")).toEqual([
      { op: "stop", id: r.id, attempt: 1, reason: "cancel" },
    ]);
    // The slot stays taken until the job has stopped.
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 1 });
  });

  it("stops a STARTING request that already has a job reference", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);

    // Act
    const { request: result } = await cancelRequest(tenant, r.id, h.deps);

    // Assess
    expect(result).toMatchObject({ status: "STARTING", cancelRequested: true });
    expect(h.compute.callsOf("stop").map((c) => c.id)).toEqual([r.id]);
  });

  it("does not stop a STARTING request without a job yet; the launch stops it once started", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    h.compute.plan = () => "hold";
    const dispatching = dispatchQueue("gpu", h.deps);
    await flush();
    expect(h.compute.isHeld(r.id)).toBe(true);

    // Act
    const { request: result } = await cancelRequest(tenant, r.id, h.deps);
    const stopsBeforeStart = h.compute.callsOf("stop").length;
    h.compute.release(r.id);
    await dispatching;

    // Assess
    expect(result).toMatchObject({ status: "STARTING", cancelRequested: true, jobRef: null });
    expect(stopsBeforeStart).toBe(0);
    expect(h.compute.callsOf("stop")).toEqual([
      { op: "stop", id: r.id, attempt: 1, reason: "cancel" },
    ]);
    expect(await stored(r.id)).toMatchObject({
      status: "STARTING",
      cancelRequested: true,
      jobRef: FakeCompute.jobRef(r.id, 1),
    });
    // and once the stopped job exits, it is CANCELLED
    await h.compute.exited(r.id, 1, "failed");
    expect((await stored(r.id)).status).toBe("CANCELLED");
  });

  it("ends CANCELLED, without another start, when a cancel lands while the start is pending and the start then fails", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 3 } });
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    h.compute.plan = (req) => (req.attempt === 1 ? "hold" : "ok");
    const dispatching = dispatchQueue("gpu", h.deps);
    await flush();
    await cancelRequest(tenant, r.id, h.deps);

    // Act
    h.compute.failHeld(r.id, "launch failed");
    await dispatching;

    // Assess
    // SPEC: after a cancel the request becomes CANCELLED once its job has stopped; a job
    // that never started has stopped. It must not be launched again.
    expect(h.compute.callsOf("start")).toHaveLength(1);
    expect(await stored(r.id)).toMatchObject({
      status: "CANCELLED",
      error: { code: "cancelled" },
    });
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 0 });
  });

  it("ends CANCELLED, not FAILED job_failed, when a cancel lands during the last attempt's pending start and the start fails", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 1 } });
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    h.compute.plan = () => "hold";
    const dispatching = dispatchQueue("gpu", h.deps);
    await flush();
    await cancelRequest(tenant, r.id, h.deps);

    // Act
    h.compute.failHeld(r.id, "launch failed");
    await dispatching;

    // Assess
    expect(await stored(r.id)).toMatchObject({
      status: "CANCELLED",
      cancelRequested: true,
      error: { code: "cancelled" },
    });
  });

  it("does not launch a retry when a cancel lands between reading a failed exit and writing the retry", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 3 } });
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(r.id, 1);
    const original = h.store.transition.bind(h.store);
    let cancelled = false;
    vi.spyOn(h.store, "transition").mockImplementation(async (cmd) => {
      // The caller cancels right after recordJobEvent read the request, before its write.
      if (cmd.to === "STARTING" && !cancelled) {
        cancelled = true;
        await cancelRequest(tenant, r.id, h.deps);
      }
      return original(cmd);
    });

    // Act
    await h.compute.exited(r.id, 1, "failed");

    // Assess
    expect(cancelled).toBe(true);
    expect(h.compute.callsOf("start").map((c) => c.attempt)).toEqual([1]);
    expect(await stored(r.id)).toMatchObject({ status: "CANCELLED", error: { code: "cancelled" } });
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 0 });
  });

  it("cancelling a request with a pending cancel changes nothing but asks its job to stop again", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(r.id, 1);
    const { request: first } = await cancelRequest(tenant, r.id, h.deps);

    // Act
    const { request: second } = await cancelRequest(tenant, r.id, h.deps);

    // Assess: the record is unchanged; the repeated stop repairs a stop that failed before
    // (stop is idempotent on every backend).
    expect(second).toEqual(first);
    expect(await h.store.get(r.id)).toEqual(first);
    expect(h.compute.callsOf("stop")).toHaveLength(2);
  });

  it("cancelling a CANCELLED request again changes nothing", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    const { request: first } = await cancelRequest(tenant, r.id, h.deps);
    h.clock.advance(60_000);

    // Act
    const { request: again } = await cancelRequest(tenant, r.id, h.deps);

    // Assess
    expect(again).toEqual(first);
    expect(await stored(r.id)).toEqual(first);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 0 });
    expect(h.changes.filter((c) => c.id === r.id)).toHaveLength(1);
  });

  it("answers ConflictError for SUCCEEDED, FAILED and EXPIRED requests and changes nothing", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 1, maxRunning: 5 } });
    const tenant = uid("tenant");
    const succeeded = await submitVia(h, { tenant });
    const failed = await submitVia(h, { tenant });
    const expired = await submitVia(h, { tenant, queueTtlSeconds: 1, priority: 9 });
    h.clock.advanceSeconds(1);
    await dispatchQueue("gpu", h.deps);
    await h.compute.exited(succeeded.id, 1, "succeeded");
    await h.compute.exited(failed.id, 1, "failed");
    const cases = [
      [succeeded.id, "SUCCEEDED"],
      [failed.id, "FAILED"],
      [expired.id, "EXPIRED"],
    ] as const;

    for (const [id, status] of cases) {
      const before = await stored(id);
      expect(before.status).toBe(status);

      // Act
      const result = cancelRequest(tenant, id, h.deps);

      // Assess
      await expect(result, status).rejects.toBeInstanceOf(ConflictError);
      await expect(result, status).rejects.toMatchObject({ status });
      expect(await stored(id), status).toEqual(before);
    }
    expect(h.compute.callsOf("stop")).toEqual([]);
  });

  it("answers NotFoundError for another tenant's request and for an unknown id", async () => {
    // Prepare
    h = makeDeps();
    const owner = uid("owner");
    const r = await submitVia(h, { tenant: owner });

    // Act
    const foreign = cancelRequest(uid("intruder"), r.id, h.deps);
    const unknown = cancelRequest(owner, "req_7ZZZZZZZZZZZZZZZZZZZZZZZZZ", h.deps);

    // Assess
    await expect(foreign).rejects.toBeInstanceOf(NotFoundError);
    await expect(foreign).rejects.toMatchObject({ what: "request", key: r.id });
    await expect(unknown).rejects.toBeInstanceOf(NotFoundError);
    expect((await stored(r.id)).status).toBe("QUEUED");
  });
});
