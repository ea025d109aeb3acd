import { afterEach, describe, expect, it, vi } from "vitest";
import {
  IdempotencyConflictError,
  InvalidRequestError,
  NotFoundError,
  QueueFullError,
} from "../../../functions/core/errors.ts";
import { type SubmitCommand, submitRequest } from "../../../functions/core/usecases/submit.ts";
import { makeDeps, REQUEST_ID_PATTERN, T0, type TestHarness, uid } from "../../helpers/fakes.ts";

let h: TestHarness;
afterEach(() => h?.close());

function command(overrides: Partial<SubmitCommand> & { tenant: string }): SubmitCommand {
  const body = overrides.body ?? { input: { epochs: 3 } };
  return { queue: "gpu", body, rawBody: body, ...overrides };
}

describe("submitRequest", () => {
  it("creates a QUEUED request with the queue's defaults and wakes the queue", async () => {
    // Prepare
    h = makeDeps({
      gpu: { defaultPriority: 4, timeoutSeconds: 900, queueTtlSeconds: 120, maxAttempts: 2 },
    });
    const tenant = uid("tenant");

    // Act
    const outcome = await submitRequest(command({ tenant }), h.deps);

    // Assess
    expect(outcome.kind).toBe("created");
    const r = outcome.request;
    expect(r.id).toMatch(REQUEST_ID_PATTERN);
    expect(r).toMatchObject({
      tenant,
      queue: "gpu",
      status: "QUEUED",
      priority: 4,
      input: { epochs: 3 },
      metadata: {},
      webhook: null,
      idempotencyKey: null,
      createdAt: T0,
      startedAt: null,
      finishedAt: null,
      attempt: 0,
      maxAttempts: 2,
      cancelRequested: false,
      timeoutSeconds: 900,
      queueTtlSeconds: 120,
      expiresAt: T0 + 120_000,
      progress: null,
      error: null,
      jobRef: null,
    });
    expect(await h.store.get(r.id)).toEqual(r);
    expect(h.recording?.wakes).toEqual(["gpu"]);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 1, running: 0 });
  });

  it("takes priority, timeout, TTL and metadata from the body over the queue's", async () => {
    // Prepare
    h = makeDeps({ gpu: { timeoutSeconds: 900, queueTtlSeconds: 120 } });
    const body = {
      input: [1, 2],
      priority: 9,
      timeoutSeconds: 60,
      queueTtlSeconds: 30,
      metadata: { team: "search" },
    };

    // Act
    const { request } = await submitRequest(command({ tenant: uid("t"), body }), h.deps);

    // Assess
    expect(request).toMatchObject({
      priority: 9,
      timeoutSeconds: 60,
      queueTtlSeconds: 30,
      expiresAt: T0 + 30_000,
      metadata: { team: "search" },
    });
  });

  it("accepts timeoutSeconds equal to the queue's", async () => {
    h = makeDeps({ gpu: { timeoutSeconds: 900 } });
    const body = { input: 1, timeoutSeconds: 900 };
    const { request } = await submitRequest(command({ tenant: uid("t"), body }), h.deps);
    expect(request.timeoutSeconds).toBe(900);
  });

  it("rejects timeoutSeconds above the queue's with InvalidRequestError and stores nothing", async () => {
    // Prepare
    h = makeDeps({ gpu: { timeoutSeconds: 900 } });
    const body = { input: 1, timeoutSeconds: 901 };

    // Act
    const result = submitRequest(command({ tenant: uid("t"), body }), h.deps);

    // Assess
    await expect(result).rejects.toBeInstanceOf(InvalidRequestError);
    await expect(result).rejects.toMatchObject({ field: "timeoutSeconds" });
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 0 });
    expect(h.recording?.wakes).toEqual([]);
  });

  it("answers NotFoundError for an unknown queue, also for Object.prototype names", async () => {
    // Prepare
    h = makeDeps();

    // Act / Assess
    for (const queue of ["nope", "constructor", "__proto__", "toString"]) {
      const result = submitRequest(command({ tenant: uid("t"), queue }), h.deps);
      await expect(result, queue).rejects.toBeInstanceOf(NotFoundError);
      await expect(result, queue).rejects.toMatchObject({ what: "queue", key: queue });
    }
  });

  it("replays the earlier request for the same key and a body equal as parsed JSON", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const key = uid("key");
    const first = JSON.parse('{"input": {"a": 1, "b": [1, 2]}, "priority": 3}');
    const again = JSON.parse('{"priority":3,"input":{"b":[1,2],"a":1}}');
    const created = await submitRequest(
      command({ tenant, body: first, idempotencyKey: key }),
      h.deps,
    );

    // Act
    const replay = await submitRequest(
      command({ tenant, body: again, idempotencyKey: key }),
      h.deps,
    );

    // Assess
    expect(created.kind).toBe("created");
    expect(replay.kind).toBe("replayed");
    expect(replay.request).toEqual(created.request);
    // Both answers show the position, the replay's read back from the store.
    expect([created.position, replay.position]).toEqual([0, 0]);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 1, running: 0 });
    const page = await h.store.list({ tenant, queue: "gpu", limit: 10 });
    expect(page.items.map((r) => r.id)).toEqual([created.request.id]);
  });

  it("replays the request in its current status, not as it was at submit", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const key = uid("key");
    const created = await submitRequest(command({ tenant, idempotencyKey: key }), h.deps);
    await h.store.transition({
      id: created.request.id,
      from: ["QUEUED"],
      to: "CANCELLED",
      set: { cancelRequested: true, finishedAt: T0, error: { code: "cancelled", message: "x" } },
    });

    // Act
    const replay = await submitRequest(command({ tenant, idempotencyKey: key }), h.deps);

    // Assess
    expect(replay.kind).toBe("replayed");
    expect(replay.request.status).toBe("CANCELLED");
  });

  it("throws IdempotencyConflictError for the same key with another body and changes nothing", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const key = uid("key");
    const created = await submitRequest(
      command({ tenant, body: { input: { a: 1 } }, idempotencyKey: key }),
      h.deps,
    );

    // Act
    const result = submitRequest(
      command({ tenant, body: { input: { a: 2 } }, idempotencyKey: key }),
      h.deps,
    );

    // Assess
    await expect(result).rejects.toBeInstanceOf(IdempotencyConflictError);
    await expect(result).rejects.toMatchObject({ key, requestId: created.request.id });
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 1, running: 0 });
  });

  it("treats the same key with the same body on another queue as a conflict", async () => {
    // Prepare
    h = makeDeps({ gpu: {}, cpu: {} });
    const tenant = uid("tenant");
    const key = uid("key");
    await submitRequest(command({ tenant, queue: "gpu", idempotencyKey: key }), h.deps);

    // Act
    const result = submitRequest(command({ tenant, queue: "cpu", idempotencyKey: key }), h.deps);

    // Assess
    await expect(result).rejects.toBeInstanceOf(IdempotencyConflictError);
    expect(await h.store.queueCounts("cpu")).toEqual({ queued: 0, running: 0 });
  });

  it("scopes keys to the tenant: another tenant's same key creates its own request", async () => {
    // Prepare
    h = makeDeps();
    const key = uid("key");
    const a = await submitRequest(command({ tenant: uid("a"), idempotencyKey: key }), h.deps);

    // Act
    const b = await submitRequest(command({ tenant: uid("b"), idempotencyKey: key }), h.deps);

    // Assess
    expect(b.kind).toBe("created");
    expect(b.request.id).not.toBe(a.request.id);
  });

  it("throws QueueFullError at maxQueued and stores nothing", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxQueued: 2 } });
    const tenant = uid("tenant");
    await submitRequest(command({ tenant }), h.deps);
    await submitRequest(command({ tenant }), h.deps);
    const key = uid("key");

    // Act
    const result = submitRequest(command({ tenant, idempotencyKey: key }), h.deps);

    // Assess
    await expect(result).rejects.toBeInstanceOf(QueueFullError);
    await expect(result).rejects.toMatchObject({ queue: "gpu", maxQueued: 2 });
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 2, running: 0 });
    expect((await h.store.list({ tenant, queue: "gpu", limit: 10 })).items).toHaveLength(2);
    // The key was not claimed: once there is room the same key creates a request.
    await h.store.transition({
      id: h.ids.issued[0]!,
      from: ["QUEUED"],
      to: "CANCELLED",
      set: { finishedAt: T0, error: { code: "cancelled", message: "x" } },
    });
    const retry = await submitRequest(command({ tenant, idempotencyKey: key }), h.deps);
    expect(retry.kind).toBe("created");
  });

  it("counts only QUEUED requests against maxQueued", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxQueued: 1, maxRunning: 1 } });
    const tenant = uid("tenant");
    await submitRequest(command({ tenant }), h.deps);
    await h.store.claimNext("gpu", { maxRunning: 1 }, h.clock.now());

    // Act
    const second = await submitRequest(command({ tenant }), h.deps);

    // Assess
    expect(second.kind).toBe("created");
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 1, running: 1 });
  });

  it("replays a known key even when the queue is full", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxQueued: 1 } });
    const tenant = uid("tenant");
    const key = uid("key");
    const created = await submitRequest(command({ tenant, idempotencyKey: key }), h.deps);

    // Act
    const replay = await submitRequest(command({ tenant, idempotencyKey: key }), h.deps);

    // Assess
    expect(replay).toEqual({
      kind: "replayed",
      request: created.request,
      position: 0,
      wait: created.wait,
    });
  });

  it("calls the webhook guard with the URL and stores the webhook", async () => {
    // Prepare
    const guard = vi.fn(async (_url: string) => {});
    h = makeDeps({ gpu: {} }, { webhookGuard: guard });
    const body = {
      input: 1,
      webhook: { url: "https://example.com/hook", events: ["completed" as const] },
    };

    // Act
    const { request } = await submitRequest(command({ tenant: uid("t"), body }), h.deps);

    // Assess
    expect(guard).toHaveBeenCalledWith("https://example.com/hook");
    expect(request.webhook).toEqual(body.webhook);
  });

  it("propagates the webhook guard's rejection with nothing stored and no wake-up", async () => {
    // Prepare
    const refusal = new InvalidRequestError("webhook host is private", "webhook.url");
    h = makeDeps({ gpu: {} }, { webhookGuard: async () => Promise.reject(refusal) });
    const tenant = uid("tenant");
    const key = uid("key");
    const body = {
      input: 1,
      webhook: { url: "https://10.0.0.1/", events: ["completed" as const] },
    };

    // Act
    const result = submitRequest(command({ tenant, body, idempotencyKey: key }), h.deps);

    // Assess
    await expect(result).rejects.toBe(refusal);
    expect(await h.store.queueCounts("gpu")).toEqual({ queued: 0, running: 0 });
    expect((await h.store.list({ tenant, queue: "gpu", limit: 10 })).items).toEqual([]);
    expect(h.recording?.wakes).toEqual([]);
  });

  it("does not call the webhook guard when there is no webhook", async () => {
    const guard = vi.fn(async (_url: string) => {});
    h = makeDeps({ gpu: {} }, { webhookGuard: guard });
    await submitRequest(command({ tenant: uid("t") }), h.deps);
    expect(guard).not.toHaveBeenCalled();
  });
});
