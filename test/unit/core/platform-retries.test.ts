/**
 * SPEC §3/§5: attempts the platform ended (a server restart, a Spot interruption, a lost
 * instance) are retried without counting against maxAttempts, at most MAX_PLATFORM_RETRIES
 * times; an orphan that outlived its timeout ends `timeout`.
 */
import { afterEach, describe, expect, it } from "vitest";
import {
  jobAttempts,
  MAX_PLATFORM_RETRIES,
  type RequestRecord,
  retryAfter,
} from "../../../functions/core/request.ts";
import { dispatchQueue, recoverInFlight } from "../../../functions/core/usecases/lifecycle.ts";
import { repairSweep } from "../../../functions/core/usecases/repair.ts";
import { makeDeps, submitVia, type TestHarness, uid } from "../../helpers/fakes.ts";

let h: TestHarness;
afterEach(() => h?.close());

async function stored(id: string): Promise<RequestRecord> {
  const r = await h.store.get(id);
  if (!r) throw new Error(`${id} missing`);
  return r;
}

describe("retryAfter (the retry rule as data)", () => {
  const r = (attempt: number, maxAttempts: number, platformRetries: number) => ({
    attempt,
    maxAttempts,
    platformRetries,
  });

  it("retries a loss without counting it, until the platform's bound", () => {
    expect(retryAfter(r(1, 1, 0), "lost", "core")).toEqual({ attempt: 2, platformRetries: 1 });
    expect(retryAfter(r(5, 1, 9), "lost", "backend")).toEqual({ attempt: 6, platformRetries: 10 });
    expect(retryAfter(r(11, 3, MAX_PLATFORM_RETRIES), "lost", "core")).toBeNull();
  });

  it("counts only the job's own attempts against maxAttempts", () => {
    // Attempt 3 after two losses is the job's first: two more failures are allowed.
    expect(jobAttempts(r(3, 2, 2))).toBe(1);
    expect(retryAfter(r(3, 2, 2), "failed", "core")).toEqual({ attempt: 4, platformRetries: 2 });
    expect(retryAfter(r(4, 2, 2), "failed", "core")).toBeNull();
    // A backend that retries on its own reports a failure once none remain.
    expect(retryAfter(r(1, 3, 0), "failed", "backend")).toBeNull();
  });

  it("never retries a success or a timeout", () => {
    expect(retryAfter(r(1, 3, 0), "succeeded", "core")).toBeNull();
    expect(retryAfter(r(1, 3, 0), "timeout", "core")).toBeNull();
  });
});

describe("restarts (embedded)", () => {
  it("survives ten restarts with maxAttempts 1 and fails `lost` at the eleventh", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 1 } });
    const r = await submitVia(h, { tenant: uid("tenant") });
    await dispatchQueue("gpu", h.deps);

    // Act
    for (let i = 1; i <= MAX_PLATFORM_RETRIES; i++) {
      await h.compute.running(r.id, i);
      await recoverInFlight(h.deps);
      expect(await stored(r.id)).toMatchObject({ status: "STARTING", attempt: i + 1 });
    }
    await h.compute.running(r.id, MAX_PLATFORM_RETRIES + 1);
    await recoverInFlight(h.deps);

    // Assess
    const last = await stored(r.id);
    expect(last).toMatchObject({
      status: "FAILED",
      attempt: MAX_PLATFORM_RETRIES + 1,
      platformRetries: MAX_PLATFORM_RETRIES,
      error: { code: "lost" },
    });
    expect(last.error?.message).toContain(`${MAX_PLATFORM_RETRIES} earlier attempts`);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 0 });
  });

  it("still allows the job its own maxAttempts failures after a restart", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 2 } });
    const r = await submitVia(h, { tenant: uid("tenant") });
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(r.id, 1);
    await recoverInFlight(h.deps);
    await h.compute.running(r.id, 2);

    // Act
    await h.compute.exited(r.id, 2, "failed");
    const afterFirstFailure = await stored(r.id);
    await h.compute.running(r.id, 3);
    await h.compute.exited(r.id, 3, "failed", undefined, "exit 1");

    // Assess
    expect(afterFirstFailure).toMatchObject({ status: "STARTING", attempt: 3, platformRetries: 1 });
    expect(await stored(r.id)).toMatchObject({
      status: "FAILED",
      attempt: 3,
      platformRetries: 1,
      error: { code: "job_failed", message: "exit 1" },
    });
  });

  it("ends an orphan that outlived its timeout `timeout`, and retries one within it", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 2, maxAttempts: 3, timeoutSeconds: 60 } });
    const tenant = uid("tenant");
    const overran = await submitVia(h, { tenant });
    const inTime = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);
    const started = h.clock.now();
    await h.compute.running(overran.id, 1, started);
    await h.compute.running(inTime.id, 1, started);
    const now = h.clock.advanceSeconds(90);
    h.compute.orphansSince.set(overran.id, started);
    h.compute.orphansSince.set(inTime.id, now - 30_000);

    // Act
    await recoverInFlight(h.deps);

    // Assess
    const failed = await stored(overran.id);
    expect(failed).toMatchObject({ status: "FAILED", attempt: 1, error: { code: "timeout" } });
    expect(failed.error?.message).toContain("timeout of 60s");
    expect(await stored(inTime.id)).toMatchObject({
      status: "STARTING",
      attempt: 2,
      platformRetries: 1,
    });
    expect(h.compute.callsOf("start").filter((c) => c.id === overran.id)).toHaveLength(1);
  });

  it("judges an orphan's run time when recovery found it, not after every reap's grace", async () => {
    // Prepare: 30 s into a 60 s timeout when the server comes back; the reaps then take
    // 45 s (another orphan ignoring SIGTERM waits out its grace).
    h = makeDeps({ gpu: { maxRunning: 2, maxAttempts: 3, timeoutSeconds: 60 } });
    const r = await submitVia(h, { tenant: uid("tenant") });
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(r.id, 1);
    const now = h.clock.advanceSeconds(30);
    h.compute.orphansSince.set(r.id, now - 30_000);
    h.compute.onReap = () => h.clock.advanceSeconds(45);

    // Act
    await recoverInFlight(h.deps);

    // Assess: lost with its server and retried, not ended `timeout`.
    expect(await stored(r.id)).toMatchObject({
      status: "STARTING",
      attempt: 2,
      platformRetries: 1,
      error: null,
    });
  });

  it("retries an attempt whose job ended with its server, however long ago it started", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 1, timeoutSeconds: 60 } });
    const r = await submitVia(h, { tenant: uid("tenant") });
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(r.id, 1);
    h.clock.advanceSeconds(3600);

    // Act
    await recoverInFlight(h.deps);

    // Assess
    expect(await stored(r.id)).toMatchObject({
      status: "STARTING",
      attempt: 2,
      platformRetries: 1,
    });
  });
});

describe("platform losses on a backend that retries on its own (AWS Batch)", () => {
  it("retries a `lost` exit with a new launch that does not count, once per loss", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 1 } });
    h.compute.retries = "backend";
    const r = await submitVia(h, { tenant: uid("tenant") });
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(r.id, 1);

    // Act: the Spot reclaim's event, then the same event again (at-least-once delivery).
    await h.compute.exited(r.id, 1, "lost", undefined, "Host EC2 (instance i-1) terminated.");
    await h.compute.exited(r.id, 1, "lost", undefined, "Host EC2 (instance i-1) terminated.");

    // Assess
    expect(await stored(r.id)).toMatchObject({
      status: "STARTING",
      attempt: 2,
      platformRetries: 1,
    });
    expect(h.compute.callsOf("start").map((c) => c.attempt)).toEqual([1, 2]);
  });

  it("ends a request `job_failed` on the backend's final failure after a loss", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 1 } });
    h.compute.retries = "backend";
    const r = await submitVia(h, { tenant: uid("tenant") });
    await dispatchQueue("gpu", h.deps);
    await h.compute.exited(r.id, 1, "lost");
    await h.compute.running(r.id, 2);

    // Act
    await h.compute.exited(r.id, 2, "failed", undefined, "exit code 3");

    // Assess
    expect(await stored(r.id)).toMatchObject({
      status: "FAILED",
      attempt: 2,
      platformRetries: 1,
      error: { code: "job_failed" },
    });
  });

  it("retries a job the backend no longer knows as a platform loss in the repair sweep", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 1 } });
    h.compute.retries = "backend";
    const r = await submitVia(h, { tenant: uid("tenant") });
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(r.id, 1);
    h.clock.advanceSeconds(600);
    const inspect = async (rs: readonly RequestRecord[]) => new Map(rs.map((x) => [x.id, null]));
    h.deps.compute.inspect = inspect;

    // Act
    const report = await repairSweep(h.deps, { lostJobAfterMs: 60_000 });

    // Assess
    expect(report.lost).toBe(1);
    expect(await stored(r.id)).toMatchObject({
      status: "STARTING",
      attempt: 2,
      platformRetries: 1,
    });
  });
});
