import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import type { HttpRequest } from "../../../functions/http/types.ts";
import { makeApi } from "./api-harness.ts";

/**
 * Throws arbitrary requests at `handle()`. Two properties: no caller input produces a 5xx
 * (SPEC §2), and any refused request leaves the queues exactly as they were.
 */
describe("fuzzing handle()", () => {
  const h = makeApi(
    { gpu: { maxQueued: 1_000_000, timeoutSeconds: 3600 }, cpu: { maxQueued: 2 } },
    { onError: (e) => unexpected.push(e) },
  );
  const unexpected: unknown[] = [];
  const ids: string[] = [];
  afterAll(() => h.close());

  const segment = fc.oneof(
    fc.constantFrom("v1", "queues", "requests", "result", "cancel", "logs", "health"),
    fc.constantFrom("openapi.json", "webhook-secret", "gpu", "cpu", "nope", ""),
    fc.constant("req_00000000000000000000000000"),
    fc.constantFrom("%", "%zz", "%00", "%2F", "..", "%E2%82%AC", "\u0000", "req_"),
    fc.string({ maxLength: 40 }),
    fc.constant(null), // replaced by a real request id
  );
  const knownPath = fc.oneof(
    fc.constantFrom(
      "/v1/queues/gpu/requests",
      "/v1/queues/cpu/requests",
      "/v1/queues",
      "/v1/queues/gpu",
      "/v1/health",
      "/v1/openapi.json",
      "/v1/webhook-secret",
    ),
    fc
      .tuple(fc.nat(), fc.constantFrom("", "/result", "/cancel", "/logs"))
      .map(([i, tail]) => `/v1/requests/${ids[i % ids.length]}${tail}`),
  );
  const randomPath = fc
    .array(segment, { minLength: 0, maxLength: 6 })
    .map((parts) => `/${parts.map((p) => p ?? ids[0]).join("/")}`);
  const path = fc.oneof(knownPath, knownPath, randomPath, fc.string({ maxLength: 80 }));

  const method = fc.oneof(
    fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "get", "post"),
    fc.string({ maxLength: 10 }),
  );

  const submitLike = fc
    .record(
      {
        input: fc.jsonValue({ maxDepth: 3 }),
        priority: fc.oneof(fc.integer({ min: -2, max: 12 }), fc.double(), fc.string()),
        timeoutSeconds: fc.oneof(fc.integer({ min: -1, max: 5000 }), fc.constant(2 ** 60)),
        queueTtlSeconds: fc.oneof(fc.integer({ min: -1, max: 1e12 }), fc.constant(null)),
        webhook: fc.record(
          {
            url: fc.oneof(fc.webUrl(), fc.string(), fc.constant("https://example.com/h")),
            events: fc.array(fc.constantFrom("started", "progress", "completed", "x")),
            extra: fc.anything(),
          },
          { requiredKeys: [] },
        ),
        metadata: fc.dictionary(fc.string({ maxLength: 70 }), fc.oneof(fc.string(), fc.integer()), {
          maxKeys: 20,
        }),
        unknownField: fc.jsonValue(),
      },
      { requiredKeys: [] },
    )
    .map((o) => JSON.stringify(o));

  const body = fc.oneof(
    fc.constant(undefined),
    submitLike,
    submitLike,
    fc.json({ maxDepth: 4 }),
    fc.string({ maxLength: 200 }),
    fc.uint8Array({ maxLength: 300 }),
    fc.jsonValue().map((v) => new TextEncoder().encode(JSON.stringify({ input: v }))),
    fc.nat({ max: 3 }).map((n) => "[".repeat(10 ** n * 20)),
    fc.constant(`{"input":"${"x".repeat(256 * 1024)}"}`),
    // Numbers JSON can spell but doubles cannot hold.
    fc.constantFrom('{"input":1,"timeoutSeconds":1e400}', '{"input":1e400,"priority":-0}'),
  );

  const headers = fc.record(
    {
      authorization: fc.oneof(
        fc.constantFrom("Bearer tok-alice", "Bearer tok-bob", "bearer tok-alice", "Bearer"),
        fc.string().map((s) => `Bearer ${s}`),
        fc.string(),
      ),
      "idempotency-key": fc.oneof(fc.string({ maxLength: 300 }), fc.constantFrom("k1", "k2")),
      "content-type": fc.constantFrom(
        "application/json",
        "text/plain",
        "",
        "application/x-www-form-urlencoded",
      ),
      "x-random": fc.string(),
    },
    { requiredKeys: [] },
  );

  const query = fc.oneof(
    fc.dictionary(
      fc.oneof(fc.constantFrom("status", "limit", "cursor"), fc.string({ maxLength: 8 })),
      fc.oneof(
        fc.string({ maxLength: 40 }),
        fc.constantFrom("QUEUED", "QUEUED,RUNNING", "0", "1", "1000", "1001", "-1", "1e3"),
        fc.base64String({ maxLength: 60 }),
        // Shaped like a list cursor (base64url JSON `[createdAt, id]`), with crafted contents.
        fc
          .tuple(fc.oneof(fc.integer(), fc.double()), fc.string({ maxLength: 30, unit: "binary" }))
          .map((v) => Buffer.from(JSON.stringify(v)).toString("base64url")),
      ),
      { maxKeys: 4 },
    ),
    fc
      .dictionary(fc.constantFrom("status", "limit", "cursor"), fc.string(), { maxKeys: 3 })
      .map((d) => new URLSearchParams(d)),
  );

  const request: fc.Arbitrary<HttpRequest> = fc.record({
    method,
    path,
    query,
    headers,
    body,
  });

  const routed: fc.Arbitrary<HttpRequest> = fc
    .record({
      route: fc.oneof(
        {
          weight: 6,
          arbitrary: fc.constantFrom(
            "POST /v1/queues/gpu/requests",
            "POST /v1/queues/cpu/requests",
          ),
        },
        {
          weight: 4,
          arbitrary: fc.constantFrom(
            "GET /v1/queues/gpu/requests",
            "GET /v1/queues",
            "GET /v1/queues/cpu",
            "GET /v1/webhook-secret",
            "GET /v1/health",
            "GET /v1/openapi.json",
          ),
        },
        {
          weight: 3,
          arbitrary: fc
            .tuple(
              fc.nat(),
              fc.constantFrom("GET :", "GET :/result", "POST :/cancel", "GET :/logs"),
            )
            .map(([i, r]) => r.replace(":", `/v1/requests/${ids[i % ids.length]}`)),
        },
      ),
      token: fc.oneof(
        { weight: 8, arbitrary: fc.constantFrom("Bearer tok-alice", "Bearer tok-bob") },
        { weight: 1, arbitrary: fc.string() },
      ),
      key: fc.option(fc.oneof(fc.constantFrom("k1", "k2", "k3"), fc.string({ maxLength: 260 }))),
      query,
      body: fc.oneof({ weight: 5, arbitrary: submitLike }, { weight: 3, arbitrary: body }),
    })
    .map(({ route, token, key, query: q, body: b }) => {
      const [m, p] = route.split(" ") as [string, string];
      const hs: Record<string, string> = { authorization: token };
      if (key !== null) hs["idempotency-key"] = key;
      return { method: m, path: p, query: q, headers: hs, body: b };
    });

  /** Asserts the two properties for one request; returns the response status. */
  async function check(req: HttpRequest): Promise<number> {
    const before = [await h.store.queueCounts("gpu"), await h.store.queueCounts("cpu")];
    const res = await h.handle(req);
    expect(res.status, `${req.method} ${req.path} → ${String(res.body)}`).toBeLessThan(500);
    // `GET /` redirects to the dashboard: the one answer without a JSON body here.
    if (res.status === 302) {
      expect(res.headers.location).toBe("/ui/");
      return res.status;
    }
    expect(res.headers["content-type"]).toMatch(/^application\/(problem\+)?json$/);
    const json = JSON.parse(String(res.body));
    if (res.status >= 400) {
      expect(json.status).toBe(res.status);
      expect(typeof json.code).toBe("string");
      const after = [await h.store.queueCounts("gpu"), await h.store.queueCounts("cpu")];
      expect(after).toEqual(before);
    }
    return res.status;
  }

  it("never answers 5xx to anything, and refused requests change nothing", async () => {
    for (let i = 0; i < 3; i++) ids.push(await h.submit("gpu", { input: i }));
    ids.push(await h.submit("gpu", { input: "bob" }, "tok-bob"));
    await fc.assert(
      fc.asyncProperty(request, async (req) => {
        await check(req);
      }),
      { numRuns: 1500 },
    );
    expect(unexpected).toEqual([]);
  });

  it("never answers 5xx to well-routed requests with random content", async () => {
    const seen = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(routed, async (req) => {
        const status = await check(req);
        seen.set(status, (seen.get(status) ?? 0) + 1);
      }),
      { numRuns: 2500 },
    );
    expect(unexpected).toEqual([]);
    // The generators are only useful if they reach past routing and auth both ways.
    for (const status of [200, 202, 400, 401, 409, 413, 429]) {
      expect(seen.get(status) ?? 0, `status ${status} in ${[...seen]}`).toBeGreaterThan(0);
    }
  });
});
