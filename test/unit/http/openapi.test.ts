import { describe, expect, it } from "vitest";
import { buildOpenApiDocument, OPERATIONS, openApiJson } from "../../../functions/http/openapi.ts";

type Doc = any;

/** Every `$ref` anywhere in `value`, with where it was found. */
function refs(value: unknown, at = "#", out: [string, string][] = []): [string, string][] {
  if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) refs(v, `${at}/${i}`, out);
  } else if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      if (k === "$ref" && typeof v === "string") out.push([at, v]);
      else refs(v, `${at}/${k}`, out);
    }
  }
  return out;
}

function resolve(doc: Doc, ref: string): unknown {
  if (!ref.startsWith("#/")) return undefined;
  let node: unknown = doc;
  for (const raw of ref.slice(2).split("/")) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (!node || typeof node !== "object" || !Object.hasOwn(node, key)) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

const SPEC_ROUTES = [
  "post /v1/queues/{queue}/requests",
  "get /v1/queues/{queue}/requests",
  "get /v1/requests/{id}",
  "get /v1/requests/{id}/result",
  "post /v1/requests/{id}/cancel",
  "post /v1/requests/{id}/retry",
  "post /v1/uploads",
  "get /v1/uploads/{id}",
  "get /v1/queues",
  "get /v1/queues/{queue}",
  "get /v1/requests/{id}/logs",
  "get /v1/webhook-secret",
  "post /v1/webhook-secret/rotate",
  "get /v1/health",
  "get /v1/openapi.json",
  "get /v1/metrics",
  "get /v1/queues/{queue}/stats",
  "get /",
  "get /ui",
  "get /ui/",
  "get /ui/{asset}",
];

/** Routes open without a token: health, this document, and the dashboard's static files. */
const OPEN_PATHS = new Set(["/v1/health", "/v1/openapi.json", "/", "/ui", "/ui/", "/ui/{asset}"]);

describe("OpenAPI document", () => {
  const doc: Doc = buildOpenApiDocument();

  it("is an OpenAPI 3.1 document with info and the bearer scheme", () => {
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
    expect(doc.info.title).toBe("longrun");
    expect(typeof doc.info.version).toBe("string");
    expect(doc.components.securitySchemes.bearer).toEqual(
      expect.objectContaining({ type: "http", scheme: "bearer" }),
    );
    expect(doc.security).toEqual([{ bearer: [] }]);
  });

  it("describes every SPEC route and nothing else", () => {
    const documented: string[] = [];
    for (const [path, item] of Object.entries<Doc>(doc.paths)) {
      for (const method of Object.keys(item)) documented.push(`${method} ${path}`);
    }
    expect(documented.sort()).toEqual([...SPEC_ROUTES].sort());
    expect(OPERATIONS.length).toBe(SPEC_ROUTES.length);
  });

  it("resolves every $ref", () => {
    const all = refs(doc);
    expect(all.length).toBeGreaterThan(20);
    for (const [at, ref] of all) expect(resolve(doc, ref), `${ref} at ${at}`).toBeDefined();
  });

  it("leaves health, the document and the dashboard's files open, and guards the rest with 401", () => {
    for (const [path, item] of Object.entries<Doc>(doc.paths)) {
      for (const [method, op] of Object.entries<Doc>(item)) {
        const open = OPEN_PATHS.has(path);
        if (open) {
          expect(op.security, `${method} ${path}`).toEqual([]);
          expect(op.responses["401"]).toBeUndefined();
        } else {
          expect(op.security, `${method} ${path}`).toBeUndefined();
          expect(op.responses["401"].content["application/problem+json"].schema).toEqual({
            $ref: "#/components/schemas/Problem",
          });
        }
        expect(op.responses["500"]).toBeDefined();
        expect(new Set(Object.keys(op.responses)).size).toBe(Object.keys(op.responses).length);
      }
    }
  });

  it("declares every path template parameter as a required path parameter", () => {
    for (const [path, item] of Object.entries<Doc>(doc.paths)) {
      const names = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      for (const op of Object.values<Doc>(item)) {
        const declared = (op.parameters ?? []).filter((p: Doc) => p.in === "path");
        expect(declared.map((p: Doc) => p.name).sort()).toEqual([...names].sort());
        for (const p of declared) expect(p.required).toBe(true);
      }
    }
  });

  it("generates the submit body from the zod schema: strict, input required, bounds", () => {
    const submit = doc.paths["/v1/queues/{queue}/requests"].post;
    expect(submit.requestBody.content["application/json"].schema).toEqual({
      $ref: "#/components/schemas/SubmitBody",
    });
    const body = doc.components.schemas.SubmitBody;
    expect(body.type).toBe("object");
    expect(body.additionalProperties).toBe(false);
    expect(body.required).toEqual(["input"]);
    expect(body.properties.priority).toMatchObject({ type: "integer", minimum: 0, maximum: 9 });
    expect(body.properties.metadata).toMatchObject({ maxProperties: 16 });
    expect(body.properties.webhook.properties.events.items.enum).toEqual([
      "started",
      "progress",
      "completed",
    ]);
    const params = submit.parameters.map((p: Doc) => `${p.in}:${p.name}`);
    expect(params).toContain("header:Idempotency-Key");
    expect(Object.keys(submit.responses).sort()).toEqual(
      ["200", "202", "400", "401", "404", "409", "413", "429", "500"].sort(),
    );
    expect(submit.responses["202"].headers.Location).toBeDefined();
    expect(submit.responses["200"].headers["Idempotent-Replayed"]).toBeDefined();
    expect(submit.responses["429"].headers["Retry-After"]).toBeDefined();
  });

  it("documents the list query with its bounds", () => {
    const list = doc.paths["/v1/queues/{queue}/requests"].get;
    const byName = Object.fromEntries(list.parameters.map((p: Doc) => [p.name, p]));
    expect(byName.limit.schema).toEqual({
      type: "integer",
      minimum: 1,
      maximum: 1000,
      default: 100,
    });
    expect(byName.status.in).toBe("query");
    expect(byName.cursor.in).toBe("query");
  });

  it("has the Request schema with exactly SPEC's fields", () => {
    const request = doc.components.schemas.Request;
    expect(Object.keys(request.properties).sort()).toEqual(
      [
        "id",
        "queue",
        "status",
        "priority",
        "input",
        "metadata",
        "createdAt",
        "startedAt",
        "finishedAt",
        "attempt",
        "maxAttempts",
        "cancelRequested",
        "position",
        "progress",
        "error",
        "files",
        "retryOf",
        "waitReason",
        "waitDetail",
        "estimatedStartAt",
      ].sort(),
    );
    expect(doc.components.schemas.RequestSummary.properties.input).toBeUndefined();
    expect(doc.components.schemas.RequestStatus.enum).toHaveLength(7);
  });

  it("says what no_capacity means on each backend and what its waitDetail carries", () => {
    const { waitReason, waitDetail } = doc.components.schemas.Request.properties;
    const text = (p: Doc) => JSON.stringify(p);
    expect(text(waitReason)).toContain("2 minutes in RUNNABLE");
    expect(text(waitDetail)).toContain("Batch's status reason");
    expect(text(waitDetail)).toContain("GPUs");
  });

  it("is built once and served as the same text", () => {
    expect(openApiJson()).toBe(openApiJson());
    expect(JSON.parse(openApiJson())).toEqual(JSON.parse(JSON.stringify(doc)));
  });
});
