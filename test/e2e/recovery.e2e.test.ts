import { afterAll, describe, expect, it } from "vitest";
import { jobPids } from "../helpers/procs.ts";
import {
  BACKENDS,
  type Backend,
  demoQueue,
  type ServerOptions,
  TestServer,
} from "../helpers/server.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** SPEC §5: SIGKILL of the server at any moment loses nothing accepted, on each backend. */
describe.each(BACKENDS)("restart recovery (%s backend, e2e)", (backend: Backend) => {
  const servers: TestServer[] = [];
  afterAll(async () => {
    for (const s of servers) await s.dispose();
  });
  const newServer = (queues: ServerOptions["queues"]) => {
    const server = new TestServer({ queues, backend });
    servers.push(server);
    return server;
  };

  it("after a SIGKILL mid-run, stops the orphaned job, resumes it from its checkpoint and keeps the queue", async () => {
    const server = newServer({ q: demoQueue({ maxRunning: 1 }) });
    await server.start();
    const running = await server.submit(
      "q",
      { input: { steps: 40, sleepMs: 100 } },
      { "idempotency-key": "recover-1" },
    );
    const queued = await server.submit("q", { input: { steps: 2, sleepMs: 10 } });
    const before = await server.waitFor(running.body.id, (r) => (r.progress?.current ?? 0) >= 5);
    const orphans = jobPids(running.body.id);
    expect(orphans.length).toBeGreaterThan(0);

    await server.kill("SIGKILL");
    // The job outlives the server that started it...
    expect(jobPids(running.body.id)).toEqual(expect.arrayContaining(orphans));
    await server.start();
    // ...and the new server stops it before it runs the request again.
    let stale = orphans;
    for (let i = 0; i < 50 && stale.length > 0; i++) {
      await sleep(100);
      const live = jobPids(running.body.id);
      stale = orphans.filter((p) => live.includes(p));
    }
    expect(stale).toEqual([]);

    const done = await server.waitForStatus(running.body.id, "SUCCEEDED", 30_000);
    expect(done.attempt).toBe(2);
    const result = await server.fetch(`/v1/requests/${running.body.id}/result`);
    expect(result.body.output.resumedFrom).toBeGreaterThanOrEqual(before.progress.current - 1);
    expect(result.body.output.attempt).toBe(2);
    const second = await server.waitForStatus(queued.body.id, "SUCCEEDED", 30_000);
    expect(second.attempt).toBe(1);
    // The idempotency key survived the crash too.
    const replay = await server.submit(
      "q",
      { input: { steps: 40, sleepMs: 100 } },
      { "idempotency-key": "recover-1" },
    );
    expect(replay.status).toBe(200);
    expect(replay.body.id).toBe(running.body.id);
  });

  it("keeps every accepted request across a SIGKILL right after a burst of submits", async () => {
    const server = newServer({ q: demoQueue({ maxRunning: 2 }) });
    await server.start();
    const subs = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        server.submit("q", { input: { steps: 3, sleepMs: 30, output: { i } } }),
      ),
    );
    expect(subs.every((s) => s.status === 202)).toBe(true);
    await server.kill("SIGKILL");
    await server.start();
    const done = await Promise.all(
      subs.map((s) => server.waitForStatus(s.body.id, "SUCCEEDED", 60_000)),
    );
    expect(done.map((r) => r.id).sort()).toEqual(subs.map((s) => s.body.id).sort());
    const stats = await server.fetch("/v1/queues/q");
    expect(stats.body).toMatchObject({ queued: 0, running: 0 });
  });

  it("retries a request whose only allowed attempt the crash took (SPEC §3: not counted)", async () => {
    const server = newServer({ q: demoQueue({ maxRunning: 1, maxAttempts: 1 }) });
    await server.start();
    const sub = await server.submit("q", { input: { steps: 50, sleepMs: 100 } });
    await server.waitFor(sub.body.id, (r) => r.status === "RUNNING");
    await server.kill("SIGKILL");
    await server.start();
    const done = await server.waitForStatus(sub.body.id, ["SUCCEEDED", "FAILED"], 30_000);
    expect(done).toMatchObject({ status: "SUCCEEDED", attempt: 2, maxAttempts: 1, error: null });
  });

  it("after a graceful SIGTERM, the job checkpoints and the next start resumes it", async () => {
    const server = newServer({ q: demoQueue({ maxRunning: 1 }) });
    await server.start();
    const sub = await server.submit("q", { input: { steps: 30, sleepMs: 100 } });
    await server.waitFor(sub.body.id, (r) => (r.progress?.current ?? 0) >= 3);
    await server.kill("SIGTERM");
    expect(jobPids(sub.body.id)).toEqual([]);
    await server.start();
    await server.waitForStatus(sub.body.id, "SUCCEEDED", 30_000);
    const result = await server.fetch(`/v1/requests/${sub.body.id}/result`);
    expect(result.body.output.resumedFrom).toBeGreaterThanOrEqual(3);
  });
});
