import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Hold } from "../helpers/hold.ts";
import { BACKENDS, demoQueue, TestServer } from "../helpers/server.ts";

/** SPEC §3 scheduling guarantees, observed from outside through the API. */
describe.each(BACKENDS)("scheduling (%s backend, e2e)", (backend) => {
  const server = new TestServer({
    backend,
    queues: {
      burst: demoQueue({ maxRunning: 3, maxQueued: 200 }),
      order: demoQueue({ maxRunning: 1 }),
      ttl: demoQueue({ maxRunning: 1, queueTtlSeconds: 1 }),
    },
  });
  const holds: Hold[] = [];
  /** A blocker: a job that runs until the test releases it (or cancels it), however slow the machine. */
  const submitBlocker = async (queue: string) => {
    const hold = new Hold();
    holds.push(hold);
    const sub = await server.submit(queue, {
      input: { steps: 1, sleepMs: 1, holdFile: hold.path },
    });
    expect(sub.status).toBe(202);
    await server.waitForStatus(sub.body.id, "RUNNING");
    return { id: sub.body.id as string, hold };
  };
  beforeAll(() => server.start());
  afterAll(async () => {
    await server.dispose();
    for (const h of holds) h.dispose();
  });

  it("never runs more than maxRunning at once under a burst, and runs every request", async () => {
    // Every job holds before its last step until the test lets them go: the first three
    // fill the slots while the rest wait, however slowly the submits land.
    const hold = new Hold();
    holds.push(hold);
    const input = { steps: 2, sleepMs: 40, holdFile: hold.path, holdAtStep: 1 };
    const submits = await Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        server.submit("burst", { input: { ...input, output: { i } } }),
      ),
    );
    expect(submits.every((s) => s.status === 202)).toBe(true);
    let maxSeen = 0;
    const sampler = setInterval(
      () => {
        void server.fetch("/v1/queues/burst").then((r) => {
          if (r.status === 200) maxSeen = Math.max(maxSeen, r.body.running);
        });
      },
      backend === "aws" ? 100 : 20,
    );
    // The cap binds: three run, 21 wait. Then they all go.
    for (const deadline = Date.now() + 30_000; maxSeen < 3 && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(maxSeen).toBe(3);
    hold.release();
    const done = await Promise.all(
      submits.map((s) => server.waitForStatus(s.body.id, "SUCCEEDED", 60_000)),
    ).finally(() => clearInterval(sampler));
    expect(maxSeen).toBeLessThanOrEqual(3);
    // From the timestamps: at no instant more than 3 [startedAt, finishedAt] intervals overlap.
    const points = done.flatMap((r) => [
      { t: Date.parse(r.startedAt), d: 1 },
      { t: Date.parse(r.finishedAt), d: -1 },
    ]);
    points.sort((a, b) => a.t - b.t || a.d - b.d);
    let live = 0;
    let peak = 0;
    for (const p of points) {
      live += p.d;
      peak = Math.max(peak, live);
    }
    expect(peak).toBeLessThanOrEqual(3);
    expect(done.every((r) => r.attempt === 1)).toBe(true);
  }, 120_000); // its waits: 30 s for the cap, 60 s for the drain

  it("starts higher priority first, then oldest first", async () => {
    const blocker = await submitBlocker("order");
    const plan = [0, 5, 0, 9, 5, 1];
    const ids: string[] = [];
    for (const priority of plan) {
      ids.push(
        (await server.submit("order", { input: { steps: 1, sleepMs: 1 }, priority })).body.id,
      );
    }
    // Every request is queued behind the blocker before any of them can start.
    blocker.hold.release();
    const done = await Promise.all(ids.map((id) => server.waitForStatus(id, "SUCCEEDED", 30_000)));
    const startOrder = done
      .map((r, i) => ({ i, t: Date.parse(r.startedAt) }))
      .sort((a, b) => a.t - b.t)
      .map((x) => x.i);
    // priority 9, then the two 5s in submit order, then 1, then the two 0s in submit order
    expect(startOrder).toEqual([3, 1, 4, 5, 0, 2]);
  });

  it("expires a request that waited longer than its queue TTL; it never runs", async () => {
    const blocker = await submitBlocker("ttl");
    const waiting = await server.submit("ttl", { input: { steps: 1 } });
    const expired = await server.waitForStatus(waiting.body.id, "EXPIRED", 10_000);
    expect(expired.error.code).toBe("expired");
    expect(expired.attempt).toBe(0);
    expect(expired.startedAt).toBeNull();
    const result = await server.fetch(`/v1/requests/${waiting.body.id}/result`);
    expect(result.status).toBe(409);
    expect(result.body).toMatchObject({ code: "no_result", requestStatus: "EXPIRED" });
    const cancelled = await server.fetch(`/v1/requests/${waiting.body.id}/cancel`, {
      method: "POST",
    });
    expect(cancelled.status).toBe(409);
    expect(cancelled.body.code).toBe("conflict");
    await server.fetch(`/v1/requests/${blocker.id}/cancel`, { method: "POST" });
  });

  it("honours a per-request queueTtlSeconds shorter than the queue's", async () => {
    const blocker = await submitBlocker("order");
    const waiting = await server.submit("order", { input: { steps: 1 }, queueTtlSeconds: 1 });
    const expired = await server.waitForStatus(waiting.body.id, "EXPIRED", 10_000);
    expect(expired.error.code).toBe("expired");
    await server.fetch(`/v1/requests/${blocker.id}/cancel`, { method: "POST" });
  });
});
