import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Hold } from "../helpers/hold.ts";
import { BACKENDS, demoQueue, TestServer } from "../helpers/server.ts";

/** Black-box checks of every route's contract (SPEC §2) against a real server, on each backend. */
describe.each(BACKENDS)("HTTP API (%s backend, e2e)", (backend) => {
  const server = new TestServer({
    backend,
    queues: {
      // maxRunning is tiny and jobs hold so requests stay QUEUED while we look at them.
      work: demoQueue({ maxRunning: 1, maxQueued: 50 }),
      tiny: demoQueue({ maxRunning: 1, maxQueued: 2 }),
      // Its own queue: the burst below must not move the positions the others look at.
      burst: demoQueue({ maxRunning: 1 }),
    },
  });
  // Never released: a job of this input runs until the server goes, however slow the machine.
  const hold = new Hold();
  const slow = { steps: 1, sleepMs: 1, holdFile: hold.path };

  beforeAll(() => server.start());
  afterAll(async () => {
    await server.dispose();
    hold.dispose();
  });

  it("answers health and the OpenAPI document without a token", async () => {
    const health = await server.fetch("/v1/health", { token: null });
    expect(health.status).toBe(200);
    expect(health.body).toEqual({ status: "ok" });
    const doc = await server.fetch("/v1/openapi.json", { token: null });
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toMatch(/^3\.1\./);
    expect(Object.keys(doc.body.paths)).toEqual(
      expect.arrayContaining([
        "/v1/queues/{queue}/requests",
        "/v1/requests/{id}",
        "/v1/requests/{id}/result",
        "/v1/requests/{id}/cancel",
        "/v1/requests/{id}/logs",
        "/v1/queues",
        "/v1/queues/{queue}",
      ]),
    );
  });

  it("answers 401 problem+json without a token or with an unknown one", async () => {
    for (const token of [null, "nope"]) {
      const res = await server.fetch("/v1/queues", { token });
      expect(res.status).toBe(401);
      expect(res.headers.get("content-type")).toContain("application/problem+json");
      expect(res.body).toMatchObject({ status: 401, code: "unauthorized" });
    }
  });

  it("accepts a request with 202, a Location header and the Request body", async () => {
    const res = await server.submit("work", {
      input: { steps: 1, tag: "accept" },
      priority: 5,
      metadata: { team: "search" },
    });
    expect(res.status).toBe(202);
    expect(res.headers.get("location")).toBe(`/v1/requests/${res.body.id}`);
    expect(res.body).toMatchObject({
      queue: "work",
      priority: 5,
      input: { steps: 1, tag: "accept" },
      metadata: { team: "search" },
      attempt: 0,
      maxAttempts: 3,
      cancelRequested: false,
      finishedAt: null,
      error: null,
    });
    expect(res.body.id).toMatch(/^req_[0-9A-Z]{26}$/);
    expect(new Date(res.body.createdAt).toISOString()).toBe(res.body.createdAt);
    const got = await server.fetch(`/v1/requests/${res.body.id}`);
    expect(got.status).toBe(200);
    expect(got.body.id).toBe(res.body.id);
  });

  it("replays an idempotent submit with 200 and Idempotent-Replayed, whatever the key order", async () => {
    const key = `key-${Date.now()}-replay`;
    const first = await server.submit(
      "work",
      '{"input": {"a": 1, "b": [1, 2]}, "metadata": {"x": "y"}}',
      { "idempotency-key": key },
    );
    expect(first.status).toBe(202);
    const again = await server.submit(
      "work",
      '{ "metadata":{"x":"y"},"input":{"b":[1,2],"a":1} }',
      { "idempotency-key": key },
    );
    expect(again.status).toBe(200);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(again.body.id).toBe(first.body.id);
  });

  it("answers 409 idempotency_conflict when a key comes back with another body", async () => {
    const key = `key-${Date.now()}-conflict`;
    const first = await server.submit("work", { input: { n: 1 } }, { "idempotency-key": key });
    expect(first.status).toBe(202);
    const before = await server.fetch("/v1/queues/work");
    const second = await server.submit("work", { input: { n: 2 } }, { "idempotency-key": key });
    expect(second.status).toBe(409);
    expect(second.body.code).toBe("idempotency_conflict");
    const after = await server.fetch("/v1/queues/work");
    expect(after.body.queued + after.body.running).toBe(before.body.queued + before.body.running);
  });

  it("rejects malformed submits with 400 invalid_request and unknown queues with 404", async () => {
    const bad: unknown[] = [
      {},
      { input: 1, extra: true },
      { input: 1, priority: 10 },
      { input: 1, priority: 1.5 },
      { input: 1, timeoutSeconds: 0 },
      { input: 1, timeoutSeconds: 61 }, // above the queue's 60
      { input: 1, metadata: { a: 1 } },
      { input: 1, webhook: { url: "http://example.com/hook" } },
      "not json",
      "[1,2]",
    ];
    for (const body of bad) {
      const res = await server.submit("work", body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.code).toBe("invalid_request");
    }
    const missing = await server.submit("no-such-queue", { input: 1 });
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe("not_found");
  });

  it("answers 413 payload_too_large for a body over 256 KiB", async () => {
    const res = await server.submit("work", { input: "x".repeat(300 * 1024) });
    expect(res.status).toBe(413);
    expect(res.body.code).toBe("payload_too_large");
  });

  it("answers 429 queue_full with Retry-After once maxQueued requests are QUEUED", async () => {
    const a = await server.submit("tiny", { input: slow }); // starts (maxRunning 1)
    await server.waitForStatus(a.body.id, ["STARTING", "RUNNING"]);
    expect((await server.submit("tiny", { input: slow })).status).toBe(202);
    expect((await server.submit("tiny", { input: slow })).status).toBe(202);
    const full = await server.submit("tiny", { input: slow });
    expect(full.status).toBe(429);
    expect(full.body.code).toBe("queue_full");
    expect(Number(full.headers.get("retry-after"))).toBeGreaterThan(0);
    const stats = await server.fetch("/v1/queues/tiny");
    expect(stats.body).toMatchObject({ name: "tiny", maxQueued: 2, queued: 2, running: 1 });
  });

  it("hides another tenant's request exactly as a missing one", async () => {
    const mine = await server.submit("work", { input: { steps: 1 } });
    const missing = "req_00000000000000000000000000";
    for (const path of ["", "/result", "/logs"]) {
      const theirs = await server.fetch(`/v1/requests/${mine.body.id}${path}`, { token: "t-bob" });
      const none = await server.fetch(`/v1/requests/${missing}${path}`, { token: "t-bob" });
      expect(theirs.status).toBe(404);
      expect(theirs.body.code).toBe("not_found");
      expect(none.status).toBe(404);
    }
    const cancel = await server.fetch(`/v1/requests/${mine.body.id}/cancel`, {
      method: "POST",
      token: "t-bob",
    });
    expect(cancel.status).toBe(404);
    const list = await server.fetch("/v1/queues/work/requests", { token: "t-bob" });
    expect(list.body.items.map((r: { id: string }) => r.id)).not.toContain(mine.body.id);
    expect((await server.fetch(`/v1/requests/${mine.body.id}`)).body.cancelRequested).toBe(false);
  });

  it("lists newest first, without input, filtered by status, visiting every match once", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const res = await server.submit(
        "work",
        { input: slow, metadata: { i: String(i) } },
        undefined,
        "t-bob",
      );
      ids.push(res.body.id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const page = await server.fetch(`/v1/queues/work/requests?limit=3${q}`, { token: "t-bob" });
      expect(page.status).toBe(200);
      expect(page.body.items.length).toBeLessThanOrEqual(3);
      for (const item of page.body.items) {
        expect(item).not.toHaveProperty("input");
        seen.push(item.id);
      }
      cursor = page.body.nextCursor;
    } while (cursor);
    expect(seen).toEqual([...ids].reverse());
    const queued = await server.fetch("/v1/queues/work/requests?status=QUEUED,CANCELLED", {
      token: "t-bob",
    });
    expect(
      queued.body.items.every((r: { status: string }) =>
        ["QUEUED", "CANCELLED"].includes(r.status),
      ),
    ).toBe(true);
    const bad = await server.fetch("/v1/queues/work/requests?status=DONE", { token: "t-bob" });
    expect(bad.status).toBe(400);
    const badLimit = await server.fetch("/v1/queues/work/requests?limit=1001", { token: "t-bob" });
    expect(badLimit.status).toBe(400);
    const badCursor = await server.fetch("/v1/queues/work/requests?cursor=%%%", { token: "t-bob" });
    expect(badCursor.status).toBe(400);
  });

  it("reports position while QUEUED, counting requests that start before it", async () => {
    const r1 = await server.submit("work", { input: slow, priority: 0 }, undefined, "t-bob");
    const r2 = await server.submit("work", { input: slow, priority: 9 }, undefined, "t-bob");
    const p1 = await server.fetch(`/v1/requests/${r1.body.id}`, { token: "t-bob" });
    const p2 = await server.fetch(`/v1/requests/${r2.body.id}`, { token: "t-bob" });
    expect(p1.body.status).toBe("QUEUED");
    expect(p2.body.position).toBeLessThan(p1.body.position);
    expect(typeof p1.body.position).toBe("number");
  });

  it("lists every queue with its limits and counts", async () => {
    const res = await server.fetch("/v1/queues");
    expect(res.status).toBe(200);
    const names = (res.body.items ?? res.body).map((q: { name: string }) => q.name);
    expect(names).toEqual(expect.arrayContaining(["work", "tiny"]));
    const unknown = await server.fetch("/v1/queues/nope");
    expect(unknown.status).toBe(404);
  });

  it("answers each of a burst of submits on its own: one request per key, replays, conflicts", async () => {
    // Prepare: sent at once, so the embedded server commits them together.
    const key = `key-${Date.now()}-burst`;
    const bodies = [1, 1, 1, 1, 2].map((n) => ({ input: { ...slow, n } }));

    // Act
    const [keyed, plain] = await Promise.all([
      Promise.all(bodies.map((b) => server.submit("burst", b, { "idempotency-key": key }))),
      Promise.all([1, 2, 3].map((n) => server.submit("burst", { input: { ...slow, plain: n } }))),
    ]);

    // Assess: whichever body came first made the request; the same body replays it, the
    // other is a conflict.
    const created = keyed.filter((r) => r.status === 202);
    expect(created).toHaveLength(1);
    const winner = bodies[keyed.indexOf(created[0] as (typeof keyed)[number])];
    keyed.forEach((r, i) => {
      if (r === created[0]) return;
      if (bodies[i]?.input.n === winner?.input.n) {
        expect(r.status).toBe(200);
        expect(r.headers.get("idempotent-replayed")).toBe("true");
        expect(r.body.id).toBe(created[0]?.body.id);
      } else {
        expect(r.status).toBe(409);
        expect(r.body.code).toBe("idempotency_conflict");
      }
    });
    expect(plain.map((r) => r.status)).toEqual([202, 202, 202]);
    expect(new Set(plain.map((r) => r.body.id)).size).toBe(3);
  });
});
