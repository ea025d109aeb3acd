import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Hold } from "../helpers/hold.ts";
import { jobPids } from "../helpers/procs.ts";
import { BACKENDS, demoQueue, TestServer } from "../helpers/server.ts";

async function allLogs(server: TestServer, id: string): Promise<string[]> {
  const lines: string[] = [];
  let cursor = "";
  for (let i = 0; i < 100; i++) {
    const res = await server.fetch(
      `/v1/requests/${id}/logs${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ""}`,
    );
    expect(res.status).toBe(200);
    lines.push(...res.body.lines);
    if (res.body.lines.length === 0 || res.body.nextCursor === cursor) break;
    cursor = res.body.nextCursor;
  }
  return lines;
}

/** Attempts, retries, timeouts, cancels, results, progress and logs with real job processes. */
describe.each(BACKENDS)("request lifecycle (%s backend, e2e)", (backend) => {
  const server = new TestServer({
    backend,
    queues: {
      jobs: demoQueue({ maxRunning: 4, timeoutSeconds: 30 }),
      short: demoQueue({ maxRunning: 2, timeoutSeconds: 1, cancelGraceSeconds: 1 }),
      held: demoQueue({ maxRunning: 2, timeoutSeconds: 60 }),
    },
  });
  // Jobs hold on this file, never created: they run until the server stops them, however
  // slow the machine is.
  const hold = new Hold();
  /** Submits a demo job that holds once `atStep` steps are done, until stopped. */
  const submitHeld = async (queue: string, atStep: number, input: Record<string, unknown> = {}) => {
    const sub = await server.submit(queue, {
      input: { steps: atStep + 1, sleepMs: 10, holdFile: hold.path, holdAtStep: atStep, ...input },
    });
    expect(sub.status).toBe(202);
    return sub.body.id as string;
  };
  beforeAll(() => server.start());
  afterAll(async () => {
    await server.dispose();
    hold.dispose();
  });

  it("runs a job to SUCCEEDED with its output and downloadable artifacts", async () => {
    const sub = await server.submit("jobs", {
      input: { steps: 3, sleepMs: 20, output: { answer: 42 }, artifactBytes: 2048 },
    });
    const done = await server.waitForStatus(sub.body.id, "SUCCEEDED");
    expect(done).toMatchObject({ attempt: 1, error: null, position: null });
    expect(done.progress).toMatchObject({ current: 3, total: 3 });
    expect(Date.parse(done.finishedAt)).toBeGreaterThanOrEqual(Date.parse(done.startedAt));
    const result = await server.fetch(`/v1/requests/${sub.body.id}/result`);
    expect(result.status).toBe(200);
    expect(result.body.id).toBe(sub.body.id);
    expect(result.body.output).toMatchObject({ steps: 3, attempt: 1 });
    expect(result.body.artifacts.length).toBeGreaterThan(0);
    for (const artifact of result.body.artifacts) {
      expect(artifact.name).not.toBe("result.json");
      const download = await fetch(artifact.url); // plain GET, no Authorization header
      expect(download.status).toBe(200);
      expect((await download.arrayBuffer()).byteLength).toBe(artifact.size);
      if (backend === "embedded") {
        // The server's own signature: a changed one is refused.
        const tampered = await fetch(artifact.url.replace(/sig=[^&]+/, "sig=AAAA"));
        expect(tampered.status).toBe(403);
      } else {
        // An S3 presigned GET, valid for at least the 15 minutes SPEC §2 promises (the
        // emulator does not check signatures, so a tampered URL proves nothing there).
        const url = new URL(artifact.url);
        expect(url.pathname).toContain(`/outputs/${sub.body.id}/`);
        expect(url.searchParams.get("X-Amz-Signature")).toMatch(/^[0-9a-f]{64}$/);
        expect(Number(url.searchParams.get("X-Amz-Expires"))).toBeGreaterThanOrEqual(900);
      }
    }
  });

  it("shows progress and logs while a job runs", async () => {
    const id = await submitHeld("jobs", 2);
    const running = await server.waitFor(id, (r) => (r.progress?.current ?? 0) >= 2);
    expect(running.status).toBe("RUNNING");
    expect(running.progress.total).toBe(3);
    expect(new Date(running.progress.updatedAt).toISOString()).toBe(running.progress.updatedAt);
    // Logs arrive while the job runs (batched: on S3 about once a second).
    let logs = await server.fetch(`/v1/requests/${id}/logs`);
    const deadline = Date.now() + 20_000;
    while (logs.status === 200 && logs.body.lines.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      logs = await server.fetch(`/v1/requests/${id}/logs`);
    }
    expect(logs.status).toBe(200);
    expect(logs.body.lines.length).toBeGreaterThan(0);
    expect((await server.fetch(`/v1/requests/${id}`)).body.status).toBe("RUNNING");
    expect(typeof logs.body.nextCursor).toBe("string");
    const rest = await server.fetch(
      `/v1/requests/${id}/logs?cursor=${encodeURIComponent(logs.body.nextCursor)}`,
    );
    expect(rest.status).toBe(200);
    for (const line of rest.body.lines) expect(logs.body.lines).not.toContain(line);
    const notReady = await server.fetch(`/v1/requests/${id}/result`);
    expect(notReady.status).toBe(409);
    expect(notReady.body).toMatchObject({ code: "not_ready", requestStatus: "RUNNING" });
    await server.fetch(`/v1/requests/${id}/cancel`, { method: "POST" });
  });

  it("retries a failed attempt, resuming from the last checkpoint", async () => {
    const sub = await server.submit("jobs", {
      input: { steps: 6, sleepMs: 20, fail: "first-attempt" },
    });
    const done = await server.waitForStatus(sub.body.id, "SUCCEEDED");
    expect(done.attempt).toBe(2);
    const result = await server.fetch(`/v1/requests/${sub.body.id}/result`);
    expect(result.body.output.attempt).toBe(2);
    expect(result.body.output.resumedFrom).toBeGreaterThan(0);
    const logs = await allLogs(server, sub.body.id);
    expect(logs.some((l) => /attempt 1/.test(l))).toBe(true);
    expect(logs.some((l) => /attempt 2/.test(l))).toBe(true);
  });

  it("fails with job_failed after maxAttempts failed attempts", async () => {
    const sub = await server.submit("jobs", { input: { steps: 1, fail: "always" } });
    const done = await server.waitForStatus(sub.body.id, "FAILED");
    expect(done.attempt).toBe(3);
    expect(done.error.code).toBe("job_failed");
    const result = await server.fetch(`/v1/requests/${sub.body.id}/result`);
    expect(result.status).toBe(409);
    expect(result.body).toMatchObject({ code: "no_result", requestStatus: "FAILED" });
    expect(result.body.error.code).toBe("job_failed");
  });

  it("stops an attempt that outlives timeoutSeconds: FAILED timeout, not retried", async () => {
    const id = await submitHeld("short", 0);
    const done = await server.waitForStatus(id, "FAILED", 20_000);
    expect(done.error.code).toBe("timeout");
    expect(done.attempt).toBe(1);
  });

  it("kills a job that ignores SIGTERM after the grace period", async () => {
    // It holds until killed and shrugs off SIGTERM: only the SIGKILL after the grace ends it.
    const id = await submitHeld("short", 0, { ignoreSigterm: true });
    const done = await server.waitForStatus(id, "FAILED", 20_000);
    expect(done.error.code).toBe("timeout");
    expect(jobPids(id)).toEqual([]);
    const logs = await allLogs(server, id);
    expect(logs).toContain("demo: got SIGTERM, ignoring it");
    expect(logs.some((l) => l.includes("[longrun] grace period over: SIGKILL"))).toBe(true);
  });

  it("cancels a QUEUED request at once and answers 202 again on a second cancel", async () => {
    // Two jobs fill the queue's slots until they are cancelled below.
    const blockers = [await submitHeld("held", 0), await submitHeld("held", 0)];
    await Promise.all(blockers.map((id) => server.waitForStatus(id, "RUNNING")));
    const sub = await server.submit("held", { input: { steps: 1 } });
    const first = await server.fetch(`/v1/requests/${sub.body.id}/cancel`, { method: "POST" });
    expect(first.status).toBe(202);
    expect(first.body.status).toBe("CANCELLED");
    expect(first.body.error.code).toBe("cancelled");
    const again = await server.fetch(`/v1/requests/${sub.body.id}/cancel`, { method: "POST" });
    expect(again.status).toBe(202);
    expect(again.body).toEqual(first.body);
    for (const id of blockers) {
      await server.fetch(`/v1/requests/${id}/cancel`, { method: "POST" });
    }
  });

  it("cancels a RUNNING request: the job sees SIGTERM, then the request is CANCELLED", async () => {
    const id = await submitHeld("jobs", 1);
    await server.waitFor(id, (r) => r.status === "RUNNING" && r.progress !== null);
    const res = await server.fetch(`/v1/requests/${id}/cancel`, { method: "POST" });
    expect(res.status).toBe(202);
    expect(res.body.cancelRequested).toBe(true);
    const done = await server.waitForStatus(id, "CANCELLED");
    expect(done.error.code).toBe("cancelled");
    expect(done.attempt).toBe(1);
    const logs = await allLogs(server, id);
    expect(logs.some((l) => /SIGTERM/.test(l))).toBe(true);
    const conflict = await server.fetch(`/v1/requests/${id}/result`);
    expect(conflict.body).toMatchObject({ code: "no_result", requestStatus: "CANCELLED" });
  });

  it("answers 409 conflict when cancelling a SUCCEEDED request", async () => {
    const sub = await server.submit("jobs", { input: { steps: 1, sleepMs: 1 } });
    await server.waitForStatus(sub.body.id, "SUCCEEDED");
    const res = await server.fetch(`/v1/requests/${sub.body.id}/cancel`, { method: "POST" });
    expect(res.status).toBe(409);
    expect(res.body.code).toBe("conflict");
  });
});
