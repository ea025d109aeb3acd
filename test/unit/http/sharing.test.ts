/**
 * SPEC §1 "Sharing a queue between tenants" as the HTTP API shows it: per-tenant queue
 * limits with their scope, token buckets with Retry-After and the IETF draft RateLimit
 * fields on every submit answer, and the caller's own usage of a queue.
 */
import { afterEach, describe, expect, it } from "vitest";
import { type ApiHarness, makeApi } from "./api-harness.ts";

let h: ApiHarness;
afterEach(() => h?.close());

const submit = (token = "tok-alice", key?: string) =>
  h.call("POST", "/v1/queues/shared/requests", {
    body: { input: { n: 1 } },
    token,
    ...(key ? { headers: { "idempotency-key": key } } : {}),
  });

describe("a queue shared between tenants", () => {
  it("answers 429 queue_full with scope tenant at the tenant's limit and scope queue at the queue's", async () => {
    // Prepare
    h = makeApi({ shared: { maxQueued: 3, maxQueuedPerTenant: 2 } });
    await submit();
    await submit();

    // Act
    const mine = await submit();
    const theirs = await submit("tok-bob");
    const full = await submit("tok-bob");

    // Assess
    expect(mine.status).toBe(429);
    expect(mine.json).toMatchObject({ code: "queue_full", scope: "tenant" });
    expect(mine.headers["retry-after"]).toBeDefined();
    expect(theirs.status).toBe(202);
    expect(full.status).toBe(429);
    expect(full.json).toMatchObject({ code: "queue_full", scope: "queue" });
  });

  it("sends RateLimit fields on every submit answer and Retry-After once the bucket is empty", async () => {
    // Prepare: 1 per second, bursts of 2; no rate limit on the other queue.
    h = makeApi({ shared: { rateLimit: { requestsPerSecond: 1, burst: 2 } }, open: {} });

    // Act
    const first = await submit("tok-alice", "k1");
    const second = await submit();
    const refused = await submit();
    const replay = await submit("tok-alice", "k1");
    h.clock.advance(1000);
    const refilled = await submit();
    const unlimited = await h.call("POST", "/v1/queues/open/requests", { body: { input: 1 } });

    // Assess
    expect(first.status).toBe(202);
    expect(first.headers["ratelimit-policy"]).toBe('"submits";q=2;w=2');
    expect(first.headers.ratelimit).toBe('"submits";r=1;t=1');
    expect(second.headers.ratelimit).toBe('"submits";r=0;t=2');
    expect(refused.status).toBe(429);
    expect(refused.json).toMatchObject({ code: "rate_limited" });
    expect(refused.headers["retry-after"]).toBe("1");
    expect(refused.headers.ratelimit).toBe('"submits";r=0;t=2');
    expect(replay.status).toBe(200);
    expect(replay.headers.ratelimit).toBe('"submits";r=0;t=2');
    expect(refilled.status).toBe(202);
    expect(unlimited.status).toBe(202);
    expect(unlimited.headers).not.toHaveProperty("ratelimit");
  });

  it("gives a named tenant its own limits and shows each caller its usage of the queue", async () => {
    // Prepare
    h = makeApi({
      shared: {
        maxRunning: 4,
        maxRunningPerTenant: 1,
        maxQueuedPerTenant: 5,
        tenants: { bob: { maxRunning: 3, maxQueued: 10 } },
      },
    });
    await submit();
    await submit("tok-bob");

    // Act
    const alice = await h.call("GET", "/v1/queues/shared");
    const bob = await h.call("GET", "/v1/queues/shared", { token: "tok-bob" });

    // Assess
    expect(alice.json).toMatchObject({
      queued: 2,
      tenant: { queued: 1, running: 0, maxQueued: 5, maxRunning: 1 },
    });
    expect(bob.json).toMatchObject({
      tenant: { queued: 1, running: 0, maxQueued: 10, maxRunning: 3 },
    });
  });
});
