/**
 * POST /v1/requests/{id}/retry over the API harness (real SQLite store, fake compute): who
 * may be retried, what the new request carries, and that it is a submit in every other way
 * (idempotency keys, queue limits). The checkpoint and file copies go through a recording
 * FileStore; their real adapters are covered by test/contract/file-store.contract.ts.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { FileStore, UploadRecord } from "../../../functions/core/index.ts";
import { ProblemSchema, RequestSchema } from "../../../functions/http/schemas.ts";
import { type ApiHarness, makeApi, type Reply } from "./api-harness.ts";

let h: ApiHarness;
afterEach(() => h?.close());

function expectProblem(r: Reply, status: number, code: string): void {
  expect(r.status).toBe(status);
  expect(ProblemSchema.parse(r.json)).toMatchObject({ status, code });
}

/** Records the copies a retry asks for; `checkpoints` says which requests have one. */
class RecordingFiles implements FileStore {
  readonly calls: string[] = [];
  readonly checkpoints = new Set<string>();
  async uploadTarget(_u: UploadRecord, expiresAt: number) {
    return { url: "http://x", headers: {}, expiresAt };
  }
  async uploadedSize() {
    return null;
  }
  async attachUpload(requestId: string, name: string) {
    this.calls.push(`attach ${requestId} ${name}`);
  }
  async copyRequestFiles(from: string, to: string, names: readonly string[]) {
    this.calls.push(`files ${from} ${to} ${names.join(",")}`);
  }
  async deleteRequestFiles(id: string) {
    this.calls.push(`delete-files ${id}`);
  }
  async copyCheckpoint(from: string, to: string) {
    this.calls.push(`checkpoint ${from} ${to}`);
    if (!this.checkpoints.has(from)) return false;
    this.checkpoints.add(to);
    return true;
  }
  async deleteCheckpoint(id: string) {
    this.calls.push(`delete-checkpoint ${id}`);
    this.checkpoints.delete(id);
  }
}

/** A request of alice's that ended FAILED after its attempts. */
async function failedRequest(queue = "gpu", body?: Record<string, unknown>): Promise<string> {
  const id = await h.submit(queue, body);
  await h.startNext(queue);
  const r = await h.store.get(id);
  for (let attempt = r?.attempt ?? 1; ; attempt++) {
    await h.compute.exited(id, attempt, "failed", h.clock.now(), "boom");
    const now = await h.store.get(id);
    if (now?.status === "FAILED") return id;
    await h.startNext(queue);
  }
}

describe("POST /v1/requests/{id}/retry", () => {
  it("answers 202 with a new request that carries the old one's input, priority, metadata and webhook", async () => {
    h = makeApi();
    const files = new RecordingFiles();
    h.deps.files = files;
    const old = await failedRequest("gpu", {
      input: { epochs: 7 },
      priority: 6,
      metadata: { team: "search" },
      webhook: { url: "https://example.com/hook", events: ["completed"] },
    });
    const before = await h.store.get(old);

    const r = await h.call("POST", `/v1/requests/${old}/retry`);

    expect(r.status).toBe(202);
    const created = RequestSchema.parse(r.json);
    expect(r.headers.location).toBe(`/v1/requests/${created.id}`);
    expect(created).toMatchObject({
      queue: "gpu",
      status: "QUEUED",
      input: { epochs: 7 },
      priority: 6,
      metadata: { team: "search" },
      attempt: 0,
      retryOf: old,
      files: {},
    });
    expect(created.id).not.toBe(old);
    const stored = await h.store.get(created.id);
    expect(stored?.webhook).toEqual({ url: "https://example.com/hook", events: ["completed"] });
    // The old request is exactly as it was.
    expect(await h.store.get(old)).toEqual(before);
    // fromCheckpoint defaults to true.
    expect(files.calls).toContain(`checkpoint ${old} ${created.id}`);
  });

  it("starts clean with fromCheckpoint false, and copies no checkpoint", async () => {
    h = makeApi();
    const files = new RecordingFiles();
    files.checkpoints.add("x");
    h.deps.files = files;
    const old = await failedRequest();
    const r = await h.call("POST", `/v1/requests/${old}/retry`, {
      body: { fromCheckpoint: false },
    });
    expect(r.status).toBe(202);
    expect(files.calls.filter((c) => c.startsWith("checkpoint"))).toEqual([]);
  });

  it("retries a CANCELLED request too", async () => {
    h = makeApi();
    const old = await h.submit();
    expect((await h.call("POST", `/v1/requests/${old}/cancel`)).status).toBe(202);
    const r = await h.call("POST", `/v1/requests/${old}/retry`, { body: {} });
    expect(r.status).toBe(202);
    expect(r.json.retryOf).toBe(old);
  });

  it("answers 409 conflict for a request that has not ended, and for one that SUCCEEDED", async () => {
    h = makeApi();
    const queued = await h.submit();
    const r1 = await h.call("POST", `/v1/requests/${queued}/retry`);
    expectProblem(r1, 409, "conflict");
    expect(r1.json.requestStatus).toBe("QUEUED");

    await h.startNext("gpu");
    await h.compute.exited(queued, 1, "succeeded");
    const r2 = await h.call("POST", `/v1/requests/${queued}/retry`);
    expectProblem(r2, 409, "conflict");
    expect(r2.json.requestStatus).toBe("SUCCEEDED");
  });

  it("answers 404 for another tenant's request, as for one that does not exist", async () => {
    h = makeApi();
    const old = await failedRequest();
    expectProblem(
      await h.call("POST", `/v1/requests/${old}/retry`, { token: "tok-bob" }),
      404,
      "not_found",
    );
    expectProblem(
      await h.call("POST", "/v1/requests/req_01JD3ZZZZZZZZZZZZZZZZZZZZZ/retry"),
      404,
      "not_found",
    );
  });

  it("replays the same Idempotency-Key, and refuses it for another request", async () => {
    h = makeApi();
    const a = await failedRequest();
    const b = await failedRequest();
    const headers = { "idempotency-key": "retry-once" };
    const first = await h.call("POST", `/v1/requests/${a}/retry`, { headers });
    const again = await h.call("POST", `/v1/requests/${a}/retry`, { headers, body: {} });
    expect(first.status).toBe(202);
    expect(again.status).toBe(200);
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(again.json.id).toBe(first.json.id);
    expectProblem(
      await h.call("POST", `/v1/requests/${b}/retry`, { headers }),
      409,
      "idempotency_conflict",
    );
    // The same key on a submit is another body: a conflict, never a second request.
    expectProblem(
      await h.call("POST", "/v1/queues/gpu/requests", { headers, body: { input: null } }),
      409,
      "idempotency_conflict",
    );
  });

  it("is refused with 429 queue_full when the queue holds maxQueued requests, as a submit is", async () => {
    h = makeApi();
    const old = await failedRequest();
    for (let i = 0; i < 3; i++) await h.submit();
    const r = await h.call("POST", `/v1/requests/${old}/retry`);
    expectProblem(r, 429, "queue_full");
    expect(r.headers["retry-after"]).toBeDefined();
  });

  it("deletes the copied checkpoint when the queue refuses the retry", async () => {
    h = makeApi();
    const files = new RecordingFiles();
    h.deps.files = files;
    const old = await failedRequest();
    files.checkpoints.add(old);
    for (let i = 0; i < 3; i++) await h.submit();
    expectProblem(await h.call("POST", `/v1/requests/${old}/retry`), 429, "queue_full");
    expect([...files.checkpoints]).toEqual([old]);
  });

  it("answers 400 for a malformed body", async () => {
    h = makeApi();
    const old = await failedRequest();
    for (const body of [{ fromCheckpoint: "yes" }, { other: 1 }, [], null]) {
      expectProblem(
        await h.call("POST", `/v1/requests/${old}/retry`, { body }),
        400,
        "invalid_request",
      );
    }
    expectProblem(
      await h.call("POST", `/v1/requests/${old}/retry`, { rawBody: "{nope" }),
      400,
      "invalid_request",
    );
  });
});
