import { afterAll, describe, expect, it, vi } from "vitest";
import { Hold } from "../helpers/hold.ts";
import { jobPids } from "../helpers/procs.ts";
import {
  BACKENDS,
  type Backend,
  demoQueue,
  type ServerOptions,
  TestServer,
} from "../helpers/server.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Each test restarts a server (up to 40 s on the aws backend) and then waits on conditions
// with deadlines of their own: the test's timeout covers their sum, not the 60 s default.
vi.setConfig({ testTimeout: 180_000 });

/** SPEC §5: SIGKILL of the server at any moment loses nothing accepted, on each backend. */
describe.each(BACKENDS)("restart recovery (%s backend, e2e)", (backend: Backend) => {
  const servers: TestServer[] = [];
  const holds: Hold[] = [];
  afterAll(async () => {
    for (const s of servers) await s.dispose();
    for (const h of holds) h.dispose();
  });
  const newServer = (queues: ServerOptions["queues"]) => {
    const server = new TestServer({ queues, backend });
    servers.push(server);
    return server;
  };

  it("after a SIGKILL mid-run, stops the orphaned job, resumes it from its checkpoint and keeps the queue", async () => {
    const server = newServer({ q: demoQueue({ maxRunning: 1 }) });
    await server.start();
    // A job that outlives its server: it logs to a file (no pipe to die of) and holds at
    // step 5 until the test releases it, so only a reaper ends it.
    const hold = new Hold();
    holds.push(hold);
    const input = { steps: 8, sleepMs: 20, holdFile: hold.path, holdAtStep: 5, logToFile: true };
    const running = await server.submit("q", { input }, { "idempotency-key": "recover-1" });
    const queued = await server.submit("q", { input: { steps: 2, sleepMs: 10 } });
    const before = await server.waitFor(running.body.id, (r) => r.progress?.current === 5);
    const orphans = jobPids(running.body.id);
    expect(orphans.length).toBeGreaterThan(0);

    await server.kill("SIGKILL");
    // The job outlives the server that started it...
    expect(jobPids(running.body.id)).toEqual(expect.arrayContaining(orphans));
    await server.start();
    // ...and the new server stops it before it runs the request again: left alone, it
    // would hold forever.
    let stale = orphans;
    for (const deadline = Date.now() + 20_000; stale.length > 0 && Date.now() < deadline; ) {
      await sleep(100);
      const live = jobPids(running.body.id);
      stale = orphans.filter((p) => live.includes(p));
    }
    expect(stale).toEqual([]);
    hold.release();

    const done = await server.waitForStatus(running.body.id, "SUCCEEDED", 30_000);
    expect(done.attempt).toBe(2);
    const result = await server.fetch(`/v1/requests/${running.body.id}/result`);
    expect(result.body.output.resumedFrom).toBe(before.progress.current);
    expect(result.body.output.attempt).toBe(2);
    const second = await server.waitForStatus(queued.body.id, "SUCCEEDED", 30_000);
    expect(second.attempt).toBe(1);
    // The idempotency key survived the crash too.
    const replay = await server.submit("q", { input }, { "idempotency-key": "recover-1" });
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

  it("fails a request with `lost` when the crash took its last attempt", async () => {
    const server = newServer({ q: demoQueue({ maxRunning: 1, maxAttempts: 1 }) });
    await server.start();
    const sub = await server.submit("q", { input: { steps: 50, sleepMs: 100 } });
    await server.waitFor(sub.body.id, (r) => r.status === "RUNNING");
    await server.kill("SIGKILL");
    await server.start();
    const done = await server.waitForStatus(sub.body.id, "FAILED", 20_000);
    expect(done.error.code).toBe("lost");
    expect(done.attempt).toBe(1);
  });

  it("after a graceful SIGTERM, the job checkpoints and the next start resumes it", async () => {
    const server = newServer({ q: demoQueue({ maxRunning: 1 }) });
    await server.start();
    // The job holds at step 3 until released: it is mid-run when the server stops.
    const hold = new Hold();
    holds.push(hold);
    const input = { steps: 5, sleepMs: 10, holdFile: hold.path, holdAtStep: 3 };
    const sub = await server.submit("q", { input });
    await server.waitFor(sub.body.id, (r) => r.progress?.current === 3);
    await server.kill("SIGTERM");
    expect(jobPids(sub.body.id)).toEqual([]);
    hold.release();
    await server.start();
    await server.waitForStatus(sub.body.id, "SUCCEEDED", 30_000);
    const result = await server.fetch(`/v1/requests/${sub.body.id}/result`);
    expect(result.body.output.resumedFrom).toBe(3);
  });
});
