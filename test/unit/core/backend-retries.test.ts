import { afterEach, describe, expect, it } from "vitest";
import { PermanentLaunchError } from "../../../functions/core/errors.ts";
import { cancelRequest, dispatchQueue } from "../../../functions/core/usecases/lifecycle.ts";
import { repairSweep } from "../../../functions/core/usecases/repair.ts";
import { makeDeps, submitVia, type TestHarness } from "../../helpers/fakes.ts";

/**
 * A compute whose backend retries on its own (AWS Batch retry strategy): the core follows the
 * attempts the backend reports and never starts one itself.
 */
describe("lifecycle with a backend that retries on its own", () => {
  let h: TestHarness;
  afterEach(() => h.close());

  async function started(maxAttempts = 3) {
    h = makeDeps({ gpu: { maxRunning: 1, maxAttempts } });
    h.compute.retries = "backend";
    const r = await submitVia(h);
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(r.id, 1);
    return r;
  }

  it("does not start another attempt itself when an attempt fails", async () => {
    const r = await started();
    await h.compute.exited(r.id, 1, "failed");
    expect(h.compute.callsOf("start")).toHaveLength(1);
    const after = await h.store.get(r.id);
    expect(after).toMatchObject({ status: "FAILED", attempt: 1 });
    expect(after?.error?.code).toBe("job_failed");
  });

  it("follows the backend's retry: starting and running events of attempt 2 advance the request", async () => {
    const r = await started();
    await h.compute.emit({ type: "starting", requestId: r.id, attempt: 2, at: h.clock.now() });
    expect(await h.store.get(r.id)).toMatchObject({ status: "STARTING", attempt: 2 });
    await h.compute.running(r.id, 2);
    expect(await h.store.get(r.id)).toMatchObject({ status: "RUNNING", attempt: 2 });
    expect((await h.store.queueCounts("gpu")).running).toBe(1);
    await h.compute.exited(r.id, 2, "succeeded");
    expect(await h.store.get(r.id)).toMatchObject({ status: "SUCCEEDED", attempt: 2 });
    expect(h.compute.callsOf("start")).toHaveLength(1);
  });

  it("catches up when the events of a retried attempt were lost and only its end arrives", async () => {
    const r = await started();
    await h.compute.exited(r.id, 3, "failed");
    const after = await h.store.get(r.id);
    expect(after).toMatchObject({ status: "FAILED", attempt: 3 });
    expect((await h.store.queueCounts("gpu")).running).toBe(0);
  });

  it("ignores a late event of an earlier attempt once the backend moved on", async () => {
    const r = await started();
    await h.compute.running(r.id, 2);
    const before = await h.store.get(r.id);
    await h.compute.exited(r.id, 1, "failed");
    await h.compute.running(r.id, 1);
    expect(await h.store.get(r.id)).toEqual(before);
  });

  it("ignores events for attempts after the request ended", async () => {
    const r = await started();
    await h.compute.exited(r.id, 1, "succeeded");
    const before = await h.store.get(r.id);
    await h.compute.running(r.id, 2);
    expect(await h.store.get(r.id)).toEqual(before);
  });

  it("ends CANCELLED when a cancelled job's final failure arrives", async () => {
    const r = await started();
    await h.store.transition({
      id: r.id,
      from: ["RUNNING"],
      attempt: 1,
      set: { cancelRequested: true },
    });
    await h.compute.exited(r.id, 1, "failed");
    const after = await h.store.get(r.id);
    expect(after?.status).toBe("CANCELLED");
    expect(after?.error?.code).toBe("cancelled");
  });

  it("ends the request when its current job stops between two backend attempts", async () => {
    const r = await started();
    await h.compute.emit({ type: "starting", requestId: r.id, attempt: 2, at: h.clock.now() });
    const jobRef = (await h.store.get(r.id))?.jobRef ?? "";
    await h.compute.emit({
      type: "exited",
      requestId: r.id,
      attempt: 1,
      at: h.clock.now(),
      outcome: "failed",
      jobRef,
    });
    const after = await h.store.get(r.id);
    expect(after).toMatchObject({ status: "FAILED", attempt: 2 });
    expect((await h.store.queueCounts("gpu")).running).toBe(0);
  });

  it("still ignores an earlier attempt's end that names another job", async () => {
    const r = await started();
    await h.compute.emit({ type: "starting", requestId: r.id, attempt: 2, at: h.clock.now() });
    const before = await h.store.get(r.id);
    await h.compute.emit({
      type: "exited",
      requestId: r.id,
      attempt: 1,
      at: h.clock.now(),
      outcome: "failed",
      jobRef: "some-older-job",
    });
    expect(await h.store.get(r.id)).toEqual(before);
  });

  it("leaves a request STARTING without a job when a launch fails in a way that may hide a job", async () => {
    h = makeDeps({ gpu: { maxRunning: 1 } });
    h.compute.retries = "backend";
    h.compute.plan = () => "throw";
    const r = await submitVia(h);
    await dispatchQueue("gpu", h.deps);
    const after = await h.store.get(r.id);
    expect(after).toMatchObject({ status: "STARTING", attempt: 1, jobRef: null });
    expect((await h.store.queueCounts("gpu")).running).toBe(1);
  });

  it("relaunches such a request from the repair sweep once the dispatcher's time is up", async () => {
    h = makeDeps({ gpu: { maxRunning: 1 } });
    h.compute.retries = "backend";
    let fail = true;
    h.compute.plan = () => (fail ? "throw" : "ok");
    const r = await submitVia(h);
    await dispatchQueue("gpu", h.deps);
    fail = false;
    await repairSweep(h.deps, { relaunchStartingAfterMs: 60_000 });
    expect(h.compute.callsOf("start")).toHaveLength(1); // too early: the dispatcher may still run
    h.clock.advance(60_001);
    await repairSweep(h.deps, { relaunchStartingAfterMs: 60_000 });
    expect(h.compute.callsOf("start")).toHaveLength(2);
    expect((await h.store.get(r.id))?.jobRef).not.toBeNull();
  });

  it("fails the attempt at once when the backend refuses the launch for good", async () => {
    h = makeDeps({ gpu: { maxRunning: 1, maxAttempts: 3 } });
    h.compute.retries = "backend";
    const start = h.compute.start.bind(h.compute);
    h.compute.start = async (req, q) => {
      await start(req, q);
      throw new PermanentLaunchError("no job definition");
    };
    const r = await submitVia(h);
    await dispatchQueue("gpu", h.deps);
    const after = await h.store.get(r.id);
    expect(after?.status).toBe("FAILED");
    expect(after?.error?.code).toBe("job_failed");
    expect((await h.store.queueCounts("gpu")).running).toBe(0);
  });

  it("asks the backend to stop again when a cancelled request is cancelled again or swept", async () => {
    const r = await started();
    await cancelRequest("tenant-a", r.id, h.deps);
    await cancelRequest("tenant-a", r.id, h.deps);
    expect(h.compute.callsOf("stop")).toHaveLength(2);
    await repairSweep(h.deps);
    expect(h.compute.callsOf("stop")).toHaveLength(3);
    expect((await h.store.get(r.id))?.status).toBe("RUNNING");
  });
});
