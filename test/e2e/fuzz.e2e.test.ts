import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BACKENDS, demoQueue, TestServer } from "../helpers/server.ts";

/**
 * No caller input may produce a 5xx (SPEC §2): random requests at the real server. The HTTP
 * layer is the same on both backends, so the AWS one (each call a round trip to the
 * emulator) gets fewer runs, enough to reach its stores with malformed ids and cursors.
 */
const RUNS = { embedded: 1000, aws: 250 } as const;

describe.each(BACKENDS)("fuzzing the server (%s backend)", (backend) => {
  const server = new TestServer({
    backend,
    queues: { fz: demoQueue({ maxRunning: 1, maxQueued: 5 }) },
  });
  let knownId = "";
  beforeAll(async () => {
    await server.start();
    knownId = (await server.submit("fz", { input: { steps: 1 } })).body.id;
  });
  afterAll(() => server.dispose());

  const segment = fc.oneof(
    fc.constantFrom(
      "v1",
      "queues",
      "requests",
      "fz",
      "result",
      "cancel",
      "logs",
      "health",
      "openapi.json",
      "..",
      "%2e%2e",
      "%00",
      "req_",
      "artifacts",
    ),
    fc.string({ maxLength: 12 }).map(encodeURIComponent),
  );
  const path = fc.oneof(
    fc.array(segment, { maxLength: 6 }).map((s) => `/${s.join("/")}`),
    fc.constantFrom(
      "/v1/queues/fz/requests",
      "/v1/requests/KNOWN",
      "/v1/requests/KNOWN/result",
      "/v1/requests/KNOWN/cancel",
      "/v1/requests/KNOWN/logs",
      "/v1/queues/fz",
    ),
  );
  const query = fc.dictionary(
    fc.constantFrom("status", "limit", "cursor", "x", "expires", "sig"),
    fc.oneof(
      fc.string({ maxLength: 20 }),
      fc.integer().map(String),
      fc.constantFrom("QUEUED,RUNNING", "-1", "1e9", "NaN"),
    ),
    { maxKeys: 3 },
  );
  const jsonBody = fc.oneof(
    fc.jsonValue().map((v) => JSON.stringify(v)),
    fc
      .record(
        {
          input: fc.jsonValue(),
          priority: fc.oneof(fc.integer({ min: -3, max: 12 }), fc.double(), fc.string()),
          timeoutSeconds: fc.oneof(fc.integer({ min: -5, max: 100 }), fc.constant(1e300)),
          queueTtlSeconds: fc.oneof(fc.integer({ min: -5, max: 100 }), fc.constant("1")),
          metadata: fc.oneof(fc.dictionary(fc.string(), fc.string()), fc.jsonValue()),
          webhook: fc.oneof(
            fc.record({ url: fc.webUrl(), events: fc.array(fc.string(), { maxLength: 3 }) }),
            fc.jsonValue(),
          ),
          extra: fc.jsonValue(),
        },
        { requiredKeys: [] },
      )
      .map((v) => JSON.stringify(v)),
    fc.string({ maxLength: 200 }),
    fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString("latin1")),
  );
  const headers = fc.record(
    {
      authorization: fc.oneof(
        fc.constant("Bearer t-alice"),
        fc.string({ maxLength: 30 }).map((s) => `Bearer ${s}`),
        fc.string({ maxLength: 30 }),
      ),
      "idempotency-key": fc.string({ maxLength: 300 }),
      "content-type": fc.constantFrom(
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
      ),
    },
    { requiredKeys: ["authorization"] },
  );

  it("answers every random request below 500", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"),
        path,
        query,
        headers,
        fc.option(jsonBody, { nil: undefined }),
        async (method, p, q, h, body) => {
          const qs = new URLSearchParams(q).toString();
          const url = `${server.url}${p.replace("KNOWN", knownId)}${qs ? `?${qs}` : ""}`;
          const safeHeaders: Record<string, string> = {};
          for (const [k, v] of Object.entries(h)) {
            // fetch refuses header values with control characters: those never reach a server
            if (/^[\x20-\x7e]*$/.test(v)) safeHeaders[k] = v;
          }
          const res = await fetch(url, {
            method,
            headers: safeHeaders,
            ...(body !== undefined && method !== "GET" && method !== "HEAD" ? { body } : {}),
          });
          await res.arrayBuffer();
          expect(res.status, `${method} ${url}`).toBeLessThan(500);
          if (res.status >= 400 && method !== "HEAD") {
            expect(res.headers.get("content-type")).toContain("application/problem+json");
          }
        },
      ),
      { numRuns: RUNS[backend] },
    );
    const stats = await server.fetch("/v1/queues/fz");
    expect(stats.status).toBe(200);
    expect(stats.body.queued + stats.body.running).toBeLessThanOrEqual(6);
  });

  /**
   * Cursors shaped like the ones each store issues (list: base64url JSON `[createdAt, id]`;
   * logs: a byte offset, an S3 chunk key and line, a CloudWatch attempt and token) with
   * crafted contents, so that they pass the shape checks and reach the stores and the
   * services behind them.
   */
  const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64url");
  const anyText = fc.oneof(
    fc.string({ maxLength: 40, unit: "binary" }),
    fc.constantFrom(
      "\ud800",
      "\u0000",
      "x".repeat(700),
      "f/",
      "f/abc",
      "b/00000000000000000000000000000000000000000000000000000001",
      "req_",
      "🙂".repeat(100),
    ),
  );
  const anyNumber = fc.oneof(
    fc.integer(),
    fc.constantFrom(0, -1, 2 ** 53 - 1, 2 ** 53, 1e300, 0.5, Number.MAX_SAFE_INTEGER),
  );
  const listCursor = fc.oneof(
    fc.tuple(anyNumber, anyText).map((v) => b64(JSON.stringify(v))),
    fc.jsonValue().map((v) => b64(JSON.stringify(v))),
  );
  const logCursor = fc.oneof(
    fc.oneof(fc.nat(), fc.constantFrom(999_999_999_999_999, 1, 2, 3)).map(String),
    fc
      .tuple(
        fc.oneof(fc.constant("KNOWN"), fc.constant("req_00000000000000000000000000"), anyText),
        fc.nat({ max: 999_999 }),
        fc.nat({ max: 99_999_999 }),
        fc.oneof(fc.constant("*"), fc.nat().map(String), anyText),
      )
      .map(
        ([id, attempt, seq, index]) =>
          `logs/${id}/${String(attempt).padStart(6, "0")}/${String(seq).padStart(10, "0")}.log:${index}`,
      ),
    fc
      .record({
        attemptIndex: fc.oneof(fc.nat({ max: 1000 }), anyNumber),
        token: fc.oneof(fc.constant(null), anyText),
      })
      .map((v) => JSON.stringify(v)),
  );

  it("answers every crafted list and logs cursor below 500", async () => {
    const seen = new Set<number>();
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          listCursor.map((c) => ({ path: "/v1/queues/fz/requests", cursor: c })),
          logCursor.map((c) => ({
            path: `/v1/requests/${knownId}/logs`,
            cursor: /^[0-9]+$/.test(c) ? c : b64(c.replace("KNOWN", knownId)),
          })),
        ),
        async ({ path, cursor }) => {
          const res = await server.fetch(`${path}?cursor=${encodeURIComponent(cursor)}`);
          seen.add(res.status);
          expect(res.status, `${path} cursor ${cursor}`).toBeLessThan(500);
          if (res.status >= 400) expect(res.body.code).toBe("invalid_request");
        },
      ),
      { numRuns: RUNS[backend] },
    );
    // Some cursors got past the shape checks to the store (200), some were refused (400).
    expect([...seen].sort()).toEqual([200, 400]);
  });
});
