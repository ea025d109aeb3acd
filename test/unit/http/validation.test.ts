import { afterEach, describe, expect, it } from "vitest";
import { type ApiHarness, makeApi } from "./api-harness.ts";

let h: ApiHarness;
afterEach(() => h?.close());

/** Submits `body` (an object, or raw text) and asserts a 400 that names `path`. */
async function expectRefused(
  body: unknown,
  path: string,
  options: { headers?: Record<string, string>; raw?: boolean } = {},
): Promise<void> {
  const r = await h.call("POST", "/v1/queues/gpu/requests", {
    ...(options.raw ? { rawBody: body as string } : { body }),
    headers: options.headers ?? {},
  });
  expect(r.status, r.text).toBe(400);
  expect(r.headers["content-type"]).toBe("application/problem+json");
  expect(r.json.code).toBe("invalid_request");
  expect(r.json.detail).toContain(path);
  if (r.json.errors) {
    const paths: string[] = r.json.errors.map((e: { path: string }) => e.path);
    expect(
      paths.some((p) => p === path || (p.startsWith(path) && /^[.[]/.test(p.slice(path.length)))),
    ).toBe(true);
  }
  // Nothing was created by a refused submit.
  expect((await h.store.queueCounts("gpu")).queued).toBe(0);
}

describe("submit body", () => {
  it("refuses an unknown field, naming it", async () => {
    h = makeApi();
    await expectRefused({ input: 1, priorty: 5 }, "priorty");
    await expectRefused(
      { input: 1, webhook: { url: "https://a.example/h", secret: "x" } },
      "webhook.secret",
    );
  });

  it("requires input", async () => {
    h = makeApi();
    await expectRefused({ priority: 1 }, "input");
  });

  it("refuses a body that is not an object", async () => {
    h = makeApi();
    for (const body of [[], "text", 3, null]) await expectRefused(body, "(body)");
  });

  it.each([
    [{ priority: 10 }, "priority"],
    [{ priority: -1 }, "priority"],
    [{ priority: 1.5 }, "priority"],
    [{ priority: "5" }, "priority"],
    [{ timeoutSeconds: 0 }, "timeoutSeconds"],
    [{ timeoutSeconds: 2.5 }, "timeoutSeconds"],
    [{ timeoutSeconds: "60" }, "timeoutSeconds"],
    [{ queueTtlSeconds: 0 }, "queueTtlSeconds"],
    [{ queueTtlSeconds: null }, "queueTtlSeconds"],
    [{ metadata: { team: 1 } }, "metadata.team"],
    [{ metadata: [] }, "metadata"],
    [{ metadata: { "": "x" } }, "metadata"],
    [{ metadata: { ["k".repeat(65)]: "x" } }, "metadata"],
    [{ metadata: { k: "v".repeat(257) } }, "metadata.k"],
    [
      { metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, "v"])) },
      "metadata",
    ],
    [{ webhook: "https://a.example/h" }, "webhook"],
    [{ webhook: {} }, "webhook.url"],
    [{ webhook: { url: "not a url" } }, "webhook.url"],
    [{ webhook: { url: "http://a.example/h" } }, "webhook.url"],
    [{ webhook: { url: "ftp://a.example/h" } }, "webhook.url"],
    [{ webhook: { url: "https://a.example/h", events: [] } }, "webhook.events"],
    [{ webhook: { url: "https://a.example/h", events: ["finished"] } }, "webhook.events[0]"],
    [{ webhook: { url: "https://a.example/h", events: ["started", "started"] } }, "webhook.events"],
  ])("refuses %j naming %s", async (fields, path) => {
    h = makeApi();
    await expectRefused({ input: 1, ...fields }, path);
  });

  it("refuses a metadata key that zod would silently drop", async () => {
    h = makeApi();
    await expectRefused('{"input":1,"metadata":{"__proto__":"x"}}', "metadata.__proto__", {
      raw: true,
    });
  });

  it("refuses a timeout above the queue's", async () => {
    h = makeApi();
    await expectRefused({ input: 1, timeoutSeconds: 3601 }, "timeoutSeconds");
  });

  it("allows http webhooks only when configured to", async () => {
    h = makeApi(undefined, { allowInsecureWebhooks: true });
    const r = await h.call("POST", "/v1/queues/gpu/requests", {
      body: { input: 1, webhook: { url: "http://localhost:9000/h", events: ["started"] } },
    });
    expect(r.status).toBe(202);
    await expectRefusedOn(h, { input: 1, webhook: { url: "ftp://a.example/h" } });
  });

  it("refuses invalid JSON with a clear detail", async () => {
    h = makeApi();
    for (const raw of ['{"input":', "{input: 1}", "", "\u{feff}{}"]) {
      const r = await h.call("POST", "/v1/queues/gpu/requests", { rawBody: raw });
      expect(r.status).toBe(400);
      expect(r.json.code).toBe("invalid_request");
      expect(r.json.detail).toMatch(/JSON/);
    }
  });

  it("refuses numbers a double cannot hold", async () => {
    h = makeApi();
    const r = await h.call("POST", "/v1/queues/gpu/requests", {
      rawBody: '{"input":{"big":1e400}}',
    });
    expect(r.status).toBe(400);
    expect(r.json.detail).toMatch(/out of range/);
  });

  it("refuses bytes that are not UTF-8", async () => {
    h = makeApi();
    const r = await h.call("POST", "/v1/queues/gpu/requests", {
      rawBody: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]),
    });
    expect(r.status).toBe(400);
    expect(r.json.detail).toMatch(/UTF-8/);
  });

  it("refuses JSON nested too deeply instead of overflowing the stack", async () => {
    h = makeApi();
    const deep = `{"input":${"[".repeat(100_000)}${"]".repeat(100_000)}}`;
    const r = await h.call("POST", "/v1/queues/gpu/requests", { rawBody: deep });
    expect(r.status).toBe(400);
    expect(r.json.detail).toMatch(/nests deeper/);
  });
});

async function expectRefusedOn(harness: ApiHarness, body: unknown): Promise<void> {
  const r = await harness.call("POST", "/v1/queues/gpu/requests", { body });
  expect(r.status).toBe(400);
}

describe("Idempotency-Key", () => {
  it.each([
    ["", "empty"],
    ["k".repeat(256), "too long"],
    ["caf\u00e9", "not ASCII"],
    ["tab\there", "a control character"],
  ])("refuses %j (%s)", async (key) => {
    h = makeApi();
    await expectRefused({ input: 1 }, "Idempotency-Key", { headers: { "idempotency-key": key } });
  });

  it("accepts 255 printable characters including spaces", async () => {
    h = makeApi();
    const key = ` ~${"k".repeat(253)}`;
    const r = await h.call("POST", "/v1/queues/gpu/requests", {
      body: { input: 1 },
      headers: { "idempotency-key": key },
    });
    expect(r.status).toBe(202);
    expect((await h.store.get(r.json.id))?.idempotencyKey).toBe(key);
  });
});

describe("list query", () => {
  it.each([
    [{ status: "DONE" }, "status"],
    [{ status: "QUEUED,nope" }, "status"],
    [{ status: "" }, "status"],
    [{ status: "queued" }, "status"],
    [{ limit: "0" }, "limit"],
    [{ limit: "1001" }, "limit"],
    [{ limit: "-1" }, "limit"],
    [{ limit: "1.5" }, "limit"],
    [{ limit: "ten" }, "limit"],
    [{ limit: "" }, "limit"],
    [{ cursor: "" }, "cursor"],
  ])("refuses %j naming %s", async (query, path) => {
    h = makeApi();
    const r = await h.call("GET", "/v1/queues/gpu/requests", { query });
    expect(r.status, r.text).toBe(400);
    expect(r.json.code).toBe("invalid_request");
    expect(r.json.errors.map((e: { path: string }) => e.path)).toContain(path);
  });

  it("refuses a cursor the API never returned", async () => {
    h = makeApi();
    for (const cursor of ["garbage!", "eyJub3QiOiJhIGN1cnNvciJ9", "x".repeat(3000)]) {
      const r = await h.call("GET", "/v1/queues/gpu/requests", { query: { cursor } });
      expect(r.status, r.text).toBe(400);
      expect(r.json.code).toBe("invalid_request");
    }
  });

  it("accepts limits 1 and 1000", async () => {
    h = makeApi();
    for (const limit of ["1", "1000"]) {
      const r = await h.call("GET", "/v1/queues/gpu/requests", { query: { limit } });
      expect(r.status).toBe(200);
    }
  });
});

describe("logs query", () => {
  it("refuses limit 0 and 1001", async () => {
    h = makeApi();
    const id = await h.submit();
    for (const limit of ["0", "1001"]) {
      const r = await h.call("GET", `/v1/requests/${id}/logs`, { query: { limit } });
      expect(r.status).toBe(400);
      expect(r.json.errors[0].path).toBe("limit");
    }
  });
});
