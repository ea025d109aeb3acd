import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  LongrunApiError,
  LongrunClient,
  LongrunConnectionError,
  type LongrunRequest,
  LongrunResponseError,
} from "../../../functions/client/index.ts";
import { demoQueue, TestServer } from "../../helpers/server.ts";

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** The typed client against a real embedded server: every method, its types and its errors. */
describe("LongrunClient (embedded server)", () => {
  const server = new TestServer({
    queues: {
      jobs: demoQueue({ maxRunning: 4 }),
      once: demoQueue({ maxAttempts: 1 }),
      paged: demoQueue({ maxRunning: 1 }),
    },
  });
  let client: LongrunClient;
  beforeAll(async () => {
    await server.start();
    client = new LongrunClient({ url: `${server.url}/`, token: "t-alice" });
  });
  afterAll(() => server.dispose());

  it("submits, replays an idempotent submit, waits and reads the result", async () => {
    const body = { input: { steps: 3, sleepMs: 20, output: { answer: 42 } }, priority: 4 };
    const first = await client.submit("jobs", body, { idempotencyKey: "client-1" });
    expect(first.replayed).toBe(false);
    expect(first.request).toMatchObject({ queue: "jobs", priority: 4, input: body.input });
    const again = await client.submit("jobs", body, { idempotencyKey: "client-1" });
    expect(again).toEqual({
      request: expect.objectContaining({ id: first.request.id }),
      replayed: true,
    });

    const seen: LongrunRequest[] = [];
    const done = await client.waitFor(first.request.id, {
      intervalMs: 50,
      onUpdate: (r) => seen.push(r),
    });
    expect(done.status).toBe("SUCCEEDED");
    expect(seen.at(-1)).toEqual(done);
    expect(done).toEqual(await client.get(done.id));

    const result = await client.result(done.id);
    expect(result.id).toBe(done.id);
    expect(result.output).toMatchObject({ steps: 3, attempt: 1, output: { answer: 42 } });
  });

  it("throws LongrunApiError with the problem: not_ready, no_result, not_found, conflict", async () => {
    const slow = await client.submit("jobs", { input: { steps: 100, sleepMs: 100 } });
    await server.waitForStatus(slow.request.id, "RUNNING");
    const notReady = await client.result(slow.request.id).catch((e: unknown) => e);
    expect(notReady).toBeInstanceOf(LongrunApiError);
    expect(notReady).toMatchObject({ status: 409, code: "not_ready", requestStatus: "RUNNING" });

    const cancelled = await client.cancel(slow.request.id);
    expect(cancelled.cancelRequested).toBe(true);
    const ended = await client.waitFor(slow.request.id, { intervalMs: 50 });
    expect(ended.status).toBe("CANCELLED");
    const noResult = await client.result(slow.request.id).catch((e: unknown) => e);
    expect(noResult).toMatchObject({
      status: 409,
      code: "no_result",
      requestStatus: "CANCELLED",
      error: { code: "cancelled" },
    });
    expect((noResult as LongrunApiError).detail).toMatch(/CANCELLED/);

    const missing = await client.get("req_00000000000000000000000000").catch((e: unknown) => e);
    expect(missing).toMatchObject({ status: 404, code: "not_found" });
    const unknownQueue = await client.submit("nope", { input: 1 }).catch((e: unknown) => e);
    expect(unknownQueue).toMatchObject({ status: 404, code: "not_found" });

    const quick = await client.submit("jobs", { input: { steps: 1, sleepMs: 1 } });
    await client.waitFor(quick.request.id, { intervalMs: 50 });
    const conflict = await client.cancel(quick.request.id).catch((e: unknown) => e);
    expect(conflict).toMatchObject({ code: "conflict", requestStatus: "SUCCEEDED" });
  });

  it("reports FAILED with its error once maxAttempts are spent", async () => {
    const { request } = await client.submit("once", { input: { steps: 1, fail: "always" } });
    const done = await client.waitFor(request.id, { intervalMs: 50 });
    expect(done).toMatchObject({ status: "FAILED", attempt: 1, error: { code: "job_failed" } });
  });

  it("refuses an invalid body with invalid_request and the field in its detail", async () => {
    const err = await client.submit("jobs", { input: 1, priority: 12 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LongrunApiError);
    expect(err).toMatchObject({ status: 400, code: "invalid_request" });
    expect((err as LongrunApiError).detail).toMatch(/^priority: /);
  });

  it("lists one page, and listAll visits every request exactly once across pages", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await client.submit("paged", { input: { steps: 0 } })).request.id);
    }
    const page = await client.list("paged", { limit: 2 });
    expect(page.items.map((r) => r.id)).toEqual([ids[4], ids[3]]);
    expect(page.nextCursor).toEqual(expect.any(String));
    expect(page.items[0]).not.toHaveProperty("input");

    const all: string[] = [];
    for await (const r of client.listAll("paged", { limit: 2 })) all.push(r.id);
    expect(all).toEqual([...ids].reverse());

    for (const id of ids) await client.waitFor(id, { intervalMs: 50 });
    const succeeded = await client.list("paged", { status: ["SUCCEEDED", "FAILED"] });
    expect(succeeded.items).toHaveLength(5);
    expect(await client.list("paged", { status: "QUEUED" })).toEqual({
      items: [],
      nextCursor: null,
    });
  });

  it("reads queues, one queue, logs and follows logs until the request ends", async () => {
    const queues = await client.queues();
    expect(queues.map((q) => q.name).sort()).toEqual(["jobs", "once", "paged"]);
    expect(await client.queue("once")).toMatchObject({ name: "once", maxRunning: 2 });

    const { request } = await client.submit("jobs", { input: { steps: 6, sleepMs: 100 } });
    const followed: string[] = [];
    for await (const line of client.followLogs(request.id, { intervalMs: 50 })) {
      followed.push(line);
    }
    // followLogs only ends once the request has ended and its last lines were read.
    expect((await client.get(request.id)).status).toBe("SUCCEEDED");
    expect(followed.filter((l) => /demo: step \d\/6/.test(l))).toHaveLength(6);
    expect(followed.some((l) => /demo: done, 6 steps/.test(l))).toBe(true);

    const first = await client.logs(request.id, { limit: 2 });
    expect(first.lines).toEqual(followed.slice(0, 2));
    const rest = await client.logs(request.id, { cursor: first.nextCursor });
    expect([...first.lines, ...rest.lines]).toEqual(followed);
  });

  it("downloads an artifact from its signed URL, without the token", async () => {
    const { request } = await client.submit("jobs", {
      input: { steps: 1, sleepMs: 1, artifactBytes: 4321 },
    });
    await client.waitFor(request.id, { intervalMs: 50 });
    const [artifact] = (await client.result(request.id)).artifacts;
    expect(artifact).toBeDefined();
    const seenHeaders: Headers[] = [];
    const watching = new LongrunClient({
      url: server.url,
      token: "t-alice",
      fetch: (input, init) => {
        seenHeaders.push(new Headers(init?.headers));
        return fetch(input, init);
      },
    });
    const stream = await watching.download(artifact!);
    let size = 0;
    for await (const chunk of stream) size += chunk.byteLength;
    expect(size).toBe(artifact!.size);
    expect(seenHeaders).toHaveLength(1);
    expect(seenHeaders[0]?.has("authorization")).toBe(false);
  });

  it("keeps working when a newer server adds fields to its answers", async () => {
    const { request } = await client.submit("jobs", { input: { steps: 0 } });
    // A pass-through fetch that adds members the way a later API version might.
    const newer = new LongrunClient({
      url: server.url,
      token: "t-alice",
      fetch: async (input, init) => {
        const res = await fetch(input, init);
        const body = (await res.json()) as Record<string, unknown>;
        return Response.json({ ...body, region: "eu" }, { status: res.status });
      },
    });
    const got = await newer.get(request.id);
    expect(got.id).toBe(request.id);
    expect(got).not.toHaveProperty("region");
  });

  it("reads and rotates the caller's webhook secret", async () => {
    const old = await client.webhookSecret();
    expect(old).toMatch(/^whsec_/);
    const fresh = await client.rotateWebhookSecret();
    expect(fresh).toMatch(/^whsec_/);
    expect(fresh).not.toBe(old);
    expect(await client.webhookSecret()).toBe(fresh);
    const bob = new LongrunClient({ url: server.url, token: "t-bob" });
    expect(await bob.webhookSecret()).not.toBe(fresh);
  });

  it("names the problem when the token is unknown", async () => {
    const stranger = new LongrunClient({ url: server.url, token: "nope" });
    const err = await stranger.queues().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LongrunApiError);
    expect(err).toMatchObject({ status: 401, code: "unauthorized" });
    const direct = await server.fetch("/v1/queues", { token: "nope" });
    expect((err as LongrunApiError).detail).toBe(direct.body.detail);
  });

  it("hides another tenant's request as not_found", async () => {
    const { request } = await client.submit("jobs", { input: { steps: 0 } });
    const bob = new LongrunClient({ url: server.url, token: "t-bob" });
    await expect(bob.get(request.id)).rejects.toMatchObject({ code: "not_found" });
  });
});

describe("LongrunClient without a longrun server", () => {
  it("says it cannot reach the URL when the connection is refused", async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const err = await new LongrunClient({ url, token: "dev" }).queues().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LongrunConnectionError);
    expect((err as Error).message).toMatch(
      new RegExp(`^cannot reach longrun at ${url}: .*ECONNREFUSED`),
    );
  });

  it("refuses a URL that is not http(s)", () => {
    expect(() => new LongrunClient({ url: "ftp://example.com", token: "t" })).toThrow(TypeError);
    expect(() => new LongrunClient({ url: "not a url", token: "t" })).toThrow(TypeError);
  });

  describe("against a gateway that answers without problem+json", () => {
    let gateway: Server;
    let url = "";
    beforeAll(async () => {
      // A real loopback server answering like API Gateway's authorizer and a broken proxy.
      gateway = createServer((req, res) => {
        if (req.url === "/v1/queues") {
          res.writeHead(401, { "content-type": "application/json" });
          res.end(JSON.stringify({ message: "Unauthorized" }));
        } else if (req.url === "/v1/queues/busy") {
          res.writeHead(502, { "content-type": "text/html" });
          res.end(`<html><body>${"bad gateway ".repeat(50)}</body></html>`);
        } else {
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify({ unexpected: true }));
        }
      });
      await new Promise<void>((r) => gateway.listen(0, "127.0.0.1", r));
      url = `http://127.0.0.1:${(gateway.address() as AddressInfo).port}`;
    });
    afterAll(() => new Promise<void>((r) => gateway.close(() => r())));

    it("turns a bare 401 into an unauthorized problem with the gateway's message", async () => {
      const err = await new LongrunClient({ url, token: "x" }).queues().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LongrunApiError);
      expect(err).toMatchObject({ status: 401, code: "unauthorized", detail: "Unauthorized" });
    });

    it("turns an HTML 502 into an internal problem naming the status", async () => {
      const err = await new LongrunClient({ url, token: "x" })
        .queue("busy")
        .catch((e: unknown) => e);
      expect(err).toMatchObject({ status: 502, code: "internal", detail: "502 Bad Gateway" });
    });

    it("refuses a 200 whose body is not what the API documents", async () => {
      const err = await new LongrunClient({ url, token: "x" })
        .get("req_00000000000000000000000000")
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LongrunResponseError);
      expect((err as Error).message).toMatch(/unexpected body/);
    });
  });
});
