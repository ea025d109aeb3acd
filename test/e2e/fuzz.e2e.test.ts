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
  let uploadId = "";
  beforeAll(async () => {
    await server.start();
    knownId = (await server.submit("fz", { input: { steps: 1 } })).body.id;
    uploadId = (await server.fetch("/v1/uploads", { body: { filename: "f", size: 8 } })).body.id;
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
      "uploads",
      "retry",
      "content",
      "upl_",
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
      "/v1/requests/KNOWN/retry",
      "/v1/queues/fz",
      "/v1/uploads",
      "/v1/uploads/UPLOAD",
      "/v1/uploads/UPLOAD/content",
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
          files: fc.oneof(
            fc.dictionary(fc.string({ maxLength: 10 }), fc.constantFrom("UPLOAD", "upl_x")),
            fc.jsonValue(),
          ),
          extra: fc.jsonValue(),
        },
        { requiredKeys: [] },
      )
      .map((v) => JSON.stringify(v)),
    fc
      .record(
        {
          filename: fc.string({ maxLength: 30 }),
          size: fc.oneof(fc.integer({ min: -2, max: 64 }), fc.constant(2 ** 62), fc.string()),
          sha256: fc.string({ maxLength: 70 }),
          fromCheckpoint: fc.oneof(fc.boolean(), fc.jsonValue()),
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
          const url = `${server.url}${p.replace("KNOWN", knownId).replace("UPLOAD", uploadId)}${qs ? `?${qs}` : ""}`;
          const safeHeaders: Record<string, string> = {};
          for (const [k, v] of Object.entries(h)) {
            // fetch refuses header values with control characters: those never reach a server
            if (/^[\x20-\x7e]*$/.test(v)) safeHeaders[k] = v;
          }
          const res = await fetch(url, {
            method,
            headers: safeHeaders,
            ...(body !== undefined && method !== "GET" && method !== "HEAD"
              ? { body: body.replaceAll("UPLOAD", uploadId) }
              : {}),
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
});
