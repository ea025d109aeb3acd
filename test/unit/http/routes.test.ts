import { afterEach, describe, expect, it } from "vitest";
import {
  ProblemSchema,
  QueueListSchema,
  QueueSchema,
  RequestListSchema,
  RequestSchema,
  ResultSchema,
} from "../../../functions/http/schemas.ts";
import { T0 } from "../../helpers/fakes.ts";
import { type ApiHarness, makeApi, type Reply } from "./api-harness.ts";

let h: ApiHarness;
afterEach(() => h?.close());

function expectProblem(r: Reply, status: number, code: string): void {
  expect(r.status).toBe(status);
  expect(r.headers["content-type"]).toBe("application/problem+json");
  const problem = ProblemSchema.parse(r.json);
  expect(problem).toMatchObject({ status, code, type: `https://longrun.dev/problems/${code}` });
  expect(problem.title.length).toBeGreaterThan(0);
  expect(problem.detail.length).toBeGreaterThan(0);
}

describe("submit", () => {
  it("answers 202 with the Request and a Location header", async () => {
    h = makeApi();
    const r = await h.call("POST", "/v1/queues/gpu/requests", {
      body: { input: { epochs: 3 }, priority: 5, metadata: { team: "search" } },
    });
    expect(r.status).toBe(202);
    expect(r.headers["content-type"]).toBe("application/json");
    const req = RequestSchema.parse(r.json);
    expect(r.headers.location).toBe(`/v1/requests/${req.id}`);
    expect(req).toEqual({
      id: req.id,
      queue: "gpu",
      status: "QUEUED",
      priority: 5,
      input: { epochs: 3 },
      metadata: { team: "search" },
      createdAt: new Date(T0).toISOString(),
      startedAt: null,
      finishedAt: null,
      attempt: 0,
      maxAttempts: 2,
      cancelRequested: false,
      position: 0,
      progress: null,
      error: null,
      files: {},
      retryOf: null,
      // The queue's one slot is free and nothing is ahead; no run has finished yet.
      waitReason: "dispatching",
      waitDetail: null,
      estimatedStartAt: null,
    });
    expect(Object.keys(r.json)).not.toContain("tenant");
  });

  it("fills in the queue's defaults and stores the webhook with default events", async () => {
    h = makeApi();
    const r = await h.call("POST", "/v1/queues/gpu/requests", {
      body: { input: null, webhook: { url: "https://example.com/hook" } },
    });
    expect(r.status).toBe(202);
    expect(r.json.priority).toBe(0);
    expect(r.json.input).toBeNull();
    const stored = await h.store.get(r.json.id);
    expect(stored?.webhook).toEqual({ url: "https://example.com/hook", events: ["completed"] });
    expect(stored?.timeoutSeconds).toBe(3600);
    expect(Object.keys(r.json)).not.toContain("webhook");
  });

  it("passes the webhook URL to the webhook guard and maps its refusal to 400", async () => {
    const seen: string[] = [];
    h = makeApi(undefined, {});
    h.deps.webhookGuard = async (url) => {
      seen.push(url);
      const { InvalidRequestError } = await import("../../../functions/core/errors.ts");
      throw new InvalidRequestError("host resolves to a private address", "webhook.url");
    };
    const r = await h.call("POST", "/v1/queues/gpu/requests", {
      body: { input: 1, webhook: { url: "https://internal.example/hook" } },
    });
    expectProblem(r, 400, "invalid_request");
    expect(r.json.errors).toEqual([
      { path: "webhook.url", message: "host resolves to a private address" },
    ]);
    expect(seen).toEqual(["https://internal.example/hook"]);
  });

  it("shows the queue position of waiting requests", async () => {
    h = makeApi();
    await h.submit();
    const second = await h.submit();
    const r = await h.call("GET", `/v1/requests/${second}`);
    expect(r.json.position).toBe(1);
  });

  it("replays the same key and body with 200 and Idempotent-Replayed, ignoring key order and white space", async () => {
    h = makeApi();
    const headers = { "idempotency-key": "order-42" };
    const first = await h.call("POST", "/v1/queues/gpu/requests", {
      rawBody: '{"input":{"a":1,"b":[1,2]},"priority":3}',
      headers,
    });
    expect(first.status).toBe(202);
    const again = await h.call("POST", "/v1/queues/gpu/requests", {
      rawBody: '{ "priority" : 3,\n  "input": { "b": [1, 2], "a": 1 } }',
      headers,
    });
    expect(again.status).toBe(200);
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(again.headers.location).toBeUndefined();
    expect(again.json).toEqual(first.json);
    expect((await h.store.queueCounts("gpu")).queued).toBe(1);
  });

  it("returns 409 idempotency_conflict when the key is reused with another body", async () => {
    h = makeApi();
    const headers = { "idempotency-key": "k-1" };
    await h.call("POST", "/v1/queues/gpu/requests", { body: { input: 1 }, headers });
    const r = await h.call("POST", "/v1/queues/gpu/requests", { body: { input: 2 }, headers });
    expectProblem(r, 409, "idempotency_conflict");
    expect((await h.store.queueCounts("gpu")).queued).toBe(1);
  });

  it("keeps keys per tenant: another tenant's same key makes its own request", async () => {
    h = makeApi();
    const headers = { "idempotency-key": "shared" };
    const a = await h.call("POST", "/v1/queues/gpu/requests", { body: { input: 1 }, headers });
    const b = await h.call("POST", "/v1/queues/gpu/requests", {
      body: { input: 1 },
      headers,
      token: "tok-bob",
    });
    expect([a.status, b.status]).toEqual([202, 202]);
    expect(a.json.id).not.toBe(b.json.id);
  });

  it("returns 429 queue_full with Retry-After once maxQueued requests wait", async () => {
    h = makeApi();
    for (let i = 0; i < 3; i++) await h.submit();
    const r = await h.call("POST", "/v1/queues/gpu/requests", { body: { input: 1 } });
    expectProblem(r, 429, "queue_full");
    expect(Number(r.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    expect((await h.store.queueCounts("gpu")).queued).toBe(3);
  });

  it("returns 404 for an unknown queue and for a name no queue can have", async () => {
    h = makeApi();
    expectProblem(
      await h.call("POST", "/v1/queues/nope/requests", { body: { input: 1 } }),
      404,
      "not_found",
    );
    expectProblem(
      await h.call("POST", "/v1/queues/Not_A_Queue/requests", { body: { input: 1 } }),
      404,
      "not_found",
    );
  });

  it("returns 413 for a body above 256 KiB without parsing it", async () => {
    h = makeApi();
    // Not JSON at all: a 400 would prove it was parsed first.
    const r = await h.call("POST", "/v1/queues/gpu/requests", {
      rawBody: "x".repeat(256 * 1024 + 1),
    });
    expectProblem(r, 413, "payload_too_large");
    const bytes = await h.call("POST", "/v1/queues/gpu/requests", {
      rawBody: new Uint8Array(256 * 1024 + 1),
    });
    expectProblem(bytes, 413, "payload_too_large");
  });

  it("accepts a body of exactly 256 KiB", async () => {
    h = makeApi();
    const skeleton = JSON.stringify({ input: "" });
    const body = JSON.stringify({ input: "y".repeat(256 * 1024 - skeleton.length) });
    expect(Buffer.byteLength(body)).toBe(256 * 1024);
    const r = await h.call("POST", "/v1/queues/gpu/requests", { rawBody: body });
    expect(r.status).toBe(202);
  });

  it("counts the limit in bytes, not characters", async () => {
    h = makeApi(undefined, { maxBodyBytes: 100 });
    // 40 three-byte characters: 40 characters but 120 bytes.
    const r = await h.call("POST", "/v1/queues/gpu/requests", {
      rawBody: JSON.stringify({ input: "€".repeat(40) }),
    });
    expectProblem(r, 413, "payload_too_large");
  });
});

describe("authentication", () => {
  it("returns 401 with WWW-Authenticate when the token is missing", async () => {
    h = makeApi();
    const r = await h.call("GET", "/v1/queues", { token: null });
    expectProblem(r, 401, "unauthorized");
    expect(r.headers["www-authenticate"]).toMatch(/^Bearer/);
  });

  it("returns 401 for an unknown token and for another scheme", async () => {
    h = makeApi();
    expectProblem(await h.call("GET", "/v1/queues", { token: "nope" }), 401, "unauthorized");
    const basic = await h.handle({
      method: "GET",
      path: "/v1/queues",
      headers: { authorization: "Basic dG9rLWFsaWNlOg==" },
    });
    expect(basic.status).toBe(401);
  });

  it("checks the token before the body size, so strangers learn nothing", async () => {
    h = makeApi();
    const r = await h.call("POST", "/v1/queues/gpu/requests", {
      token: null,
      rawBody: "x".repeat(300 * 1024),
    });
    expect(r.status).toBe(401);
  });

  it("serves health and the OpenAPI document without a token", async () => {
    h = makeApi();
    const health = await h.call("GET", "/v1/health", { token: null });
    expect(health.status).toBe(200);
    expect(health.json).toEqual({ status: "ok" });
    const doc = await h.call("GET", "/v1/openapi.json", { token: null });
    expect(doc.status).toBe(200);
    expect(doc.json.openapi).toBe("3.1.0");
  });
});

describe("status and tenancy", () => {
  it("returns the Request of a running job with progress", async () => {
    h = makeApi();
    const id = await h.submit("gpu", { input: { epochs: 3 }, priority: 5 });
    await h.startNext("gpu");
    h.clock.advanceSeconds(5);
    await h.compute.progress(id, 1, { current: 2, total: 3, message: "epoch 2" });
    const r = await h.call("GET", `/v1/requests/${id}`);
    expect(r.status).toBe(200);
    const req = RequestSchema.parse(r.json);
    expect(req).toMatchObject({
      status: "RUNNING",
      attempt: 1,
      position: null,
      startedAt: new Date(T0).toISOString(),
      progress: {
        current: 2,
        total: 3,
        message: "epoch 2",
        updatedAt: new Date(T0 + 5000).toISOString(),
      },
    });
  });

  it("answers another tenant's request exactly as a missing one", async () => {
    h = makeApi();
    const id = await h.submit();
    const missing = `req_${"0".repeat(26)}`;
    for (const path of [
      `/v1/requests/${id}`,
      `/v1/requests/${id}/result`,
      `/v1/requests/${id}/logs`,
    ]) {
      const theirs = await h.call("GET", path, { token: "tok-bob" });
      expectProblem(theirs, 404, "not_found");
      const none = await h.call("GET", path.replace(id, missing), { token: "tok-bob" });
      expect(none.status).toBe(404);
    }
    expectProblem(
      await h.call("POST", `/v1/requests/${id}/cancel`, { token: "tok-bob" }),
      404,
      "not_found",
    );
    expect((await h.store.get(id))?.status).toBe("QUEUED");
  });

  it("answers 404 for a malformed request id", async () => {
    h = makeApi();
    for (const id of ["nope", "req_short", "req_0000000000000000000000000I", "%00"]) {
      expectProblem(await h.call("GET", `/v1/requests/${id}`), 404, "not_found");
    }
  });
});

describe("result", () => {
  it("returns output and artifacts once SUCCEEDED", async () => {
    h = makeApi();
    const id = await h.submit();
    await h.startNext("gpu");
    await h.compute.exited(id, 1, "succeeded");
    h.results.results.set(id, {
      output: { loss: 0.1 },
      artifacts: [{ name: "model.npz", size: 1234, url: "https://blob/model.npz" }],
    });
    const r = await h.call("GET", `/v1/requests/${id}/result`);
    expect(r.status).toBe(200);
    expect(ResultSchema.parse(r.json)).toEqual({
      id,
      output: { loss: 0.1 },
      artifacts: [{ name: "model.npz", size: 1234, url: "https://blob/model.npz" }],
    });
  });

  it("returns 409 not_ready with the request's status before it ends", async () => {
    h = makeApi();
    const id = await h.submit();
    const r = await h.call("GET", `/v1/requests/${id}/result`);
    expectProblem(r, 409, "not_ready");
    expect(r.json.requestStatus).toBe("QUEUED");
  });

  it("returns 409 no_result with status and error when it FAILED", async () => {
    h = makeApi();
    const id = await h.submit();
    await h.startNext("gpu");
    await h.compute.exited(id, 1, "timeout");
    const r = await h.call("GET", `/v1/requests/${id}/result`);
    expectProblem(r, 409, "no_result");
    expect(r.json.requestStatus).toBe("FAILED");
    expect(r.json.error).toMatchObject({ code: "timeout" });
  });
});

describe("cancel", () => {
  it("cancels a QUEUED request at once with 202, and again without change", async () => {
    h = makeApi();
    const id = await h.submit();
    const r = await h.call("POST", `/v1/requests/${id}/cancel`);
    expect(r.status).toBe(202);
    expect(RequestSchema.parse(r.json)).toMatchObject({
      status: "CANCELLED",
      cancelRequested: true,
      position: null,
      error: { code: "cancelled" },
    });
    const again = await h.call("POST", `/v1/requests/${id}/cancel`);
    expect(again.status).toBe(202);
    expect(again.json).toEqual(r.json);
  });

  it("marks a RUNNING request cancelRequested and stops its job", async () => {
    h = makeApi();
    const id = await h.submit();
    await h.startNext("gpu");
    const r = await h.call("POST", `/v1/requests/${id}/cancel`);
    expect(r.status).toBe(202);
    expect(r.json).toMatchObject({ status: "RUNNING", cancelRequested: true });
    expect(h.compute.callsOf("stop")).toEqual([{ op: "stop", id, attempt: 1, reason: "cancel" }]);
  });

  it("returns 409 conflict for a SUCCEEDED request", async () => {
    h = makeApi();
    const id = await h.submit();
    await h.startNext("gpu");
    await h.compute.exited(id, 1, "succeeded");
    const r = await h.call("POST", `/v1/requests/${id}/cancel`);
    expectProblem(r, 409, "conflict");
    expect(r.json.requestStatus).toBe("SUCCEEDED");
  });
});

describe("list", () => {
  it("lists only the caller's requests, newest first, without input", async () => {
    h = makeApi({ gpu: { maxQueued: 100 } });
    const mine: string[] = [];
    for (let i = 0; i < 3; i++) {
      mine.push(await h.submit());
      h.clock.advance(1000);
    }
    await h.submit("gpu", { input: 1 }, "tok-bob");
    const r = await h.call("GET", "/v1/queues/gpu/requests");
    expect(r.status).toBe(200);
    const page = RequestListSchema.parse(r.json);
    expect(page.items.map((i) => i.id)).toEqual([...mine].reverse());
    expect(page.nextCursor).toBeNull();
    for (const item of r.json.items) expect(item).not.toHaveProperty("input");
    // Fair share: bob's one request starts second, after alice's oldest (SPEC §3).
    expect(page.items.map((i) => i.position)).toEqual([3, 2, 0]);
  });

  it("pages with limit and cursor, visiting each request once", async () => {
    h = makeApi({ gpu: { maxQueued: 100 } });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push(await h.submit());
      h.clock.advance(10);
    }
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const r = await h.call("GET", "/v1/queues/gpu/requests", {
        query: { limit: "2", ...(cursor ? { cursor } : {}) },
      });
      expect(r.status).toBe(200);
      expect(r.json.items.length).toBeLessThanOrEqual(2);
      seen.push(...r.json.items.map((i: { id: string }) => i.id));
      cursor = r.json.nextCursor ?? undefined;
    } while (cursor);
    expect(seen).toEqual([...ids].reverse());
  });

  it("filters by one or several statuses", async () => {
    h = makeApi({ gpu: { maxQueued: 100 } });
    const a = await h.submit();
    const b = await h.submit();
    await h.call("POST", `/v1/requests/${a}/cancel`);
    const cancelled = await h.call("GET", "/v1/queues/gpu/requests", {
      query: { status: "CANCELLED" },
    });
    expect(cancelled.json.items.map((i: { id: string }) => i.id)).toEqual([a]);
    const both = await h.call("GET", "/v1/queues/gpu/requests?status=QUEUED,CANCELLED");
    expect(both.json.items.map((i: { id: string }) => i.id).sort()).toEqual([a, b].sort());
  });

  it("returns 404 for an unknown queue", async () => {
    h = makeApi();
    expectProblem(await h.call("GET", "/v1/queues/nope/requests"), 404, "not_found");
  });
});

describe("queues", () => {
  it("lists every queue with limits and counts; running counts STARTING and RUNNING", async () => {
    h = makeApi();
    await h.submit();
    await h.submit();
    await h.startNext("gpu");
    const r = await h.call("GET", "/v1/queues");
    expect(r.status).toBe(200);
    const queues = QueueListSchema.parse(r.json);
    expect(queues).toContainEqual({
      name: "gpu",
      maxQueued: 3,
      maxRunning: 1,
      queued: 1,
      running: 1,
      tenant: { queued: 1, running: 1, maxQueued: 3, maxRunning: 1 },
    });
    expect(queues.map((q) => q.name).sort()).toEqual(["cpu", "gpu"]);
  });

  it("shows one queue, 404 for an unknown one", async () => {
    h = makeApi();
    const r = await h.call("GET", "/v1/queues/cpu");
    expect(QueueSchema.parse(r.json)).toEqual({
      name: "cpu",
      maxQueued: 1000,
      maxRunning: 1,
      queued: 0,
      running: 0,
      tenant: { queued: 0, running: 0, maxQueued: 1000, maxRunning: 1 },
    });
    expectProblem(await h.call("GET", "/v1/queues/nope"), 404, "not_found");
  });
});

describe("logs", () => {
  it("returns lines oldest first and continues from the cursor", async () => {
    h = makeApi();
    const id = await h.submit();
    h.logs.lines.set(id, ["one", "two", "three"]);
    const first = await h.call("GET", `/v1/requests/${id}/logs`, { query: { limit: "2" } });
    expect(first.status).toBe(200);
    expect(first.json).toEqual({ lines: ["one", "two"], nextCursor: "2" });
    const rest = await h.call("GET", `/v1/requests/${id}/logs`, {
      query: { cursor: first.json.nextCursor },
    });
    expect(rest.json).toEqual({ lines: ["three"], nextCursor: "3" });
  });
});

describe("webhook secret", () => {
  it("returns the tenant's whsec_ secret", async () => {
    h = makeApi();
    const r = await h.call("GET", "/v1/webhook-secret");
    expect(r.status).toBe(200);
    expect(r.json.secret).toMatch(/^whsec_/);
    const bob = await h.call("GET", "/v1/webhook-secret", { token: "tok-bob" });
    expect(bob.json.secret).not.toBe(r.json.secret);
  });

  it("answers 404 when the deployment has no webhook secrets", async () => {
    h = makeApi(undefined, { webhookSecret: undefined });
    expectProblem(await h.call("GET", "/v1/webhook-secret"), 404, "not_found");
    expectProblem(await h.call("POST", "/v1/webhook-secret/rotate"), 404, "not_found");
  });

  it("rotates the caller's secret on POST /v1/webhook-secret/rotate", async () => {
    const rotated: string[] = [];
    h = makeApi(undefined, {
      rotateWebhookSecret: async (tenant) => {
        rotated.push(tenant);
        return `whsec_${Buffer.from(`new-key-of-${tenant}`).toString("base64")}`;
      },
    });
    const r = await h.call("POST", "/v1/webhook-secret/rotate", { token: "tok-bob" });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ secret: `whsec_${Buffer.from("new-key-of-bob").toString("base64")}` });
    expect(rotated).toEqual(["bob"]);
    expectProblem(
      await h.call("POST", "/v1/webhook-secret/rotate", { token: null }),
      401,
      "unauthorized",
    );
    expect(rotated).toEqual(["bob"]);
  });
});

describe("routing", () => {
  it("answers 404 not_found for an unknown route", async () => {
    h = makeApi();
    for (const path of ["/v2/health", "/v1/health/", "/v1/requests", "//v1/queues"]) {
      expectProblem(await h.call("GET", path), 404, "not_found");
    }
  });

  it("answers 405 with Allow for a known route and another method", async () => {
    h = makeApi();
    const r = await h.call("DELETE", "/v1/queues/gpu/requests");
    expectProblem(r, 405, "method_not_allowed");
    expect(r.headers.allow?.split(", ").sort()).toEqual(["GET", "POST"]);
  });

  it("accepts lower-case methods", async () => {
    h = makeApi();
    expect((await h.call("get", "/v1/health")).status).toBe(200);
  });

  it("turns an unexpected failure into a 500 that leaks nothing and reports it", async () => {
    const errors: unknown[] = [];
    h = makeApi(undefined, { onError: (e) => errors.push(e) });
    h.logs.read = async () => {
      throw new Error("disk on fire at /secret/path");
    };
    const id = await h.submit();
    const r = await h.call("GET", `/v1/requests/${id}/logs`);
    expectProblem(r, 500, "internal");
    expect(r.text).not.toContain("secret");
    expect(r.text).not.toContain("at ");
    expect(errors).toHaveLength(1);
  });
});
