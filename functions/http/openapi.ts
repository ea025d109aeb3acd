/**
 * The route table and the OpenAPI 3.1 document built from it. The table is the single
 * list of operations: app.ts must supply a handler for every `operationId` here (the
 * compiler checks it), and the document's schemas are `z.toJSONSchema` of the very zod
 * schemas that validate requests, so neither can drift from what the API does.
 */
import { z } from "zod";
import { PROBLEM_TYPE_BASE } from "./problem.ts";
import {
  AssetNameSchema,
  apiSchemas,
  IdempotencyKeySchema,
  LIMITS,
  ListQuerySchema,
  LogsQuerySchema,
  QueueNameSchema,
  queryParamDocs,
  RequestIdSchema,
  StatsQuerySchema,
  UploadIdSchema,
} from "./schemas.ts";

type JsonSchema = Record<string, unknown>;

/** One documented route. `path` uses OpenAPI `{param}` templates. */
export interface Operation {
  readonly operationId: string;
  readonly method: "GET" | "POST";
  readonly path: string;
  /** False only for health and the document itself. */
  readonly auth: boolean;
  readonly summary: string;
  /**
   * HTTP status → description and the component schema of its JSON body; `contentType`
   * for a body that is not JSON (documented as a string), `schema` "-" for no body.
   */
  readonly success: Readonly<
    Record<string, { description: string; schema: string; contentType?: string }>
  >;
  /** Problem statuses this route can answer besides 401 (on auth routes) and 500. */
  readonly problems: readonly number[];
  readonly query?: "list" | "logs" | "stats";
  readonly body?: "SubmitBody" | "RetryBody" | "CreateUploadBody";
  readonly headers?: Readonly<Record<string, { description: string; schema: string }>>;
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

/** Every route of SPEC §2. */
export const OPERATIONS = [
  {
    operationId: "submitRequest",
    method: "POST",
    path: "/v1/queues/{queue}/requests",
    auth: true,
    summary: "Submit a request to a queue",
    body: "SubmitBody",
    success: {
      "202": { description: "Accepted: a new request (header Location).", schema: "Request" },
      "200": {
        description: "Replayed: the request an earlier submit with the same key created.",
        schema: "Request",
      },
    },
    problems: [400, 404, 409, 413, 429],
  },
  {
    operationId: "listRequests",
    method: "GET",
    path: "/v1/queues/{queue}/requests",
    auth: true,
    summary: "List the caller's requests of a queue, newest first",
    query: "list",
    success: { "200": { description: "One page.", schema: "RequestList" } },
    problems: [400, 404],
  },
  {
    operationId: "getRequest",
    method: "GET",
    path: "/v1/requests/{id}",
    auth: true,
    summary: "Status of a request",
    success: { "200": { description: "The request.", schema: "Request" } },
    problems: [404],
  },
  {
    operationId: "getResult",
    method: "GET",
    path: "/v1/requests/{id}/result",
    auth: true,
    summary: "Output and artifacts of a SUCCEEDED request",
    success: { "200": { description: "The result.", schema: "Result" } },
    problems: [404, 409],
  },
  {
    operationId: "cancelRequest",
    method: "POST",
    path: "/v1/requests/{id}/cancel",
    auth: true,
    summary: "Cancel a request",
    success: {
      "202": {
        description: "Cancelled, or cancellation requested while it stops.",
        schema: "Request",
      },
    },
    problems: [404, 409],
  },
  {
    operationId: "retryRequest",
    method: "POST",
    path: "/v1/requests/{id}/retry",
    auth: true,
    summary: "Submit a FAILED, CANCELLED or EXPIRED request again, from its last checkpoint",
    body: "RetryBody",
    success: {
      "202": {
        description: "A new request (`retryOf` names the old one; header Location).",
        schema: "Request",
      },
      "200": {
        description: "Replayed: the request an earlier retry with the same key created.",
        schema: "Request",
      },
    },
    problems: [400, 404, 409, 413, 429],
  },
  {
    operationId: "createUpload",
    method: "POST",
    path: "/v1/uploads",
    auth: true,
    summary: "Start an upload: a signed URL to PUT a file's bytes to",
    body: "CreateUploadBody",
    success: { "201": { description: "PUT the bytes to `url`.", schema: "UploadCreated" } },
    problems: [400, 404, 413],
  },
  {
    operationId: "getUpload",
    method: "GET",
    path: "/v1/uploads/{id}",
    auth: true,
    summary: "Status of an upload",
    success: { "200": { description: "The upload.", schema: "Upload" } },
    problems: [404],
  },
  {
    operationId: "readLogs",
    method: "GET",
    path: "/v1/requests/{id}/logs",
    auth: true,
    summary: "The job's stdout and stderr, all attempts, oldest first",
    query: "logs",
    success: { "200": { description: "One page of lines.", schema: "Logs" } },
    problems: [400, 404],
  },
  {
    operationId: "listQueues",
    method: "GET",
    path: "/v1/queues",
    auth: true,
    summary: "Every queue with its limits and counts",
    success: { "200": { description: "The queues.", schema: "QueueList" } },
    problems: [],
  },
  {
    operationId: "getQueue",
    method: "GET",
    path: "/v1/queues/{queue}",
    auth: true,
    summary: "One queue with its limits and counts",
    success: { "200": { description: "The queue.", schema: "Queue" } },
    problems: [404],
  },
  {
    operationId: "getQueueStats",
    method: "GET",
    path: "/v1/queues/{queue}/stats",
    auth: true,
    summary:
      "The queue's queued and running counts over the last hour and the caller's own recent waits",
    query: "stats",
    success: { "200": { description: "The queue's recent history.", schema: "QueueStats" } },
    problems: [400, 404],
  },
  {
    operationId: "getMetrics",
    method: "GET",
    path: "/v1/metrics",
    auth: true,
    summary: "Prometheus metrics of the server (text exposition format 0.0.4)",
    success: {
      "200": {
        description:
          "Per queue: longrun_queue_requests, longrun_requests_submitted_total, longrun_requests_finished_total, longrun_wait_seconds, longrun_run_seconds; and longrun_webhook_deliveries_total.",
        schema: "",
        contentType: "text/plain; version=0.0.4",
      },
    },
    problems: [404],
  },
  {
    operationId: "dashboardRedirect",
    method: "GET",
    path: "/",
    auth: false,
    summary: "Redirects to the dashboard",
    success: { "302": { description: "Location: /ui/", schema: "-" } },
    problems: [],
  },
  {
    operationId: "dashboardSlash",
    method: "GET",
    path: "/ui",
    auth: false,
    summary: "Redirects to the dashboard",
    success: { "302": { description: "Location: /ui/", schema: "-" } },
    problems: [],
  },
  {
    operationId: "dashboard",
    method: "GET",
    path: "/ui/",
    auth: false,
    summary: "The web dashboard (sign in with a token; data calls carry it)",
    success: { "200": { description: "Its page.", schema: "", contentType: "text/html" } },
    problems: [404],
  },
  {
    operationId: "dashboardAsset",
    method: "GET",
    path: "/ui/{asset}",
    auth: false,
    summary: "A static file of the dashboard (script, style sheet, icon)",
    success: {
      "200": { description: "The file.", schema: "", contentType: "application/octet-stream" },
    },
    problems: [404],
  },
  {
    operationId: "getWebhookSecret",
    method: "GET",
    path: "/v1/webhook-secret",
    auth: true,
    summary: "The caller's key for verifying webhook signatures",
    success: { "200": { description: "The secret.", schema: "WebhookSecret" } },
    problems: [404],
  },
  {
    operationId: "rotateWebhookSecret",
    method: "POST",
    path: "/v1/webhook-secret/rotate",
    auth: true,
    summary:
      "Make a new webhook signing secret; for 24 hours deliveries are signed with the old one too",
    success: { "200": { description: "The new secret.", schema: "WebhookSecret" } },
    problems: [404],
  },
  {
    operationId: "health",
    method: "GET",
    path: "/v1/health",
    auth: false,
    summary: "Liveness",
    success: { "200": { description: "Up.", schema: "Health" } },
    problems: [],
  },
  {
    operationId: "openapi",
    method: "GET",
    path: "/v1/openapi.json",
    auth: false,
    summary: "This document",
    success: { "200": { description: "OpenAPI 3.1.", schema: "" } },
    problems: [],
  },
] as const satisfies readonly Operation[];

/** The `operationId`s of {@link OPERATIONS}. */
export type OperationId = (typeof OPERATIONS)[number]["operationId"];

const PROBLEM_DESCRIPTIONS: Readonly<Record<number, string>> = {
  400: "invalid_request: something in the request is malformed; `errors` names each field.",
  401: "unauthorized: the bearer token is missing or unknown.",
  404: "not_found: no such queue or request (another tenant's request is not found either).",
  409: "conflict, idempotency_conflict, not_ready or no_result.",
  413: "payload_too_large: the body is larger than the limit (256 KiB unless configured).",
  429: "queue_full (with Retry-After; `scope` says whether the queue or the caller's per-tenant limit is full) or rate_limited (with Retry-After and the RateLimit headers).",
  500: "internal: a fault of the service.",
};

/** Components generated from the zod schemas, without per-document `$schema`/`$id`. */
function componentSchemas(): Record<string, JsonSchema> {
  const out = z.toJSONSchema(apiSchemas, {
    target: "draft-2020-12",
    // Request bodies are documented as callers write them (defaults optional);
    // responses always carry every field, which the schemas state as required anyway.
    io: "input",
    uri: (id) => `#/components/schemas/${id}`,
    unrepresentable: "any",
  });
  const schemas: Record<string, JsonSchema> = {};
  for (const [id, schema] of Object.entries(out.schemas)) {
    const { $schema: _s, $id: _i, ...rest } = schema as JsonSchema;
    schemas[id] = rest;
  }
  return schemas;
}

/** Query parameters of a zod object schema, as OpenAPI parameter objects. */
function queryParameters(schema: z.ZodObject): JsonSchema[] {
  return Object.entries(schema.shape).map(([name, field]) => {
    const doc = queryParamDocs.get(field as z.ZodType);
    const generated = doc ? undefined : plainSchema(field as z.ZodType);
    return {
      name,
      in: "query",
      required: false,
      description: doc?.description ?? (field as z.ZodType).description,
      schema: doc?.schema ?? generated,
    };
  });
}

/** A standalone schema without `$schema`, for parameter objects. */
function plainSchema(schema: z.ZodType): JsonSchema {
  const {
    $schema: _s,
    description: _d,
    ...rest
  } = z.toJSONSchema(schema, {
    target: "draft-2020-12",
    io: "input",
  }) as JsonSchema;
  return rest;
}

function pathParameters(path: string): JsonSchema[] {
  const params: JsonSchema[] = [];
  for (const m of path.matchAll(/\{([a-z]+)\}/g)) {
    const name = m[1] ?? "";
    const schema =
      name === "queue"
        ? QueueNameSchema
        : name === "asset"
          ? AssetNameSchema
          : path.startsWith("/v1/uploads/")
            ? UploadIdSchema
            : RequestIdSchema;
    params.push({ name, in: "path", required: true, schema: plainSchema(schema) });
  }
  return params;
}

/** The draft RateLimit fields, sent on every submit answer of a queue with a rate limit. */
const RATE_LIMIT_HEADER_REFS = {
  "RateLimit-Policy": { $ref: "#/components/headers/RateLimitPolicy" },
  RateLimit: { $ref: "#/components/headers/RateLimit" },
} as const;

function problemResponseObject(status: number): JsonSchema {
  return {
    description: PROBLEM_DESCRIPTIONS[status] ?? "A problem.",
    ...(status === 429
      ? {
          headers: {
            "Retry-After": { $ref: "#/components/headers/RetryAfter" },
            ...RATE_LIMIT_HEADER_REFS,
          },
        }
      : {}),
    ...(status === 401
      ? { headers: { "WWW-Authenticate": { $ref: "#/components/headers/WWWAuthenticate" } } }
      : {}),
    content: { "application/problem+json": { schema: ref("Problem") } },
  };
}

function operationObject(op: Operation): JsonSchema {
  const parameters = [...pathParameters(op.path)];
  if (op.query === "list") parameters.push(...queryParameters(ListQuerySchema));
  if (op.query === "logs") parameters.push(...queryParameters(LogsQuerySchema));
  if (op.query === "stats") parameters.push(...queryParameters(StatsQuerySchema));
  // Submits and retries take an Idempotency-Key; creating an upload is cheap to repeat.
  if (op.body === "SubmitBody" || op.body === "RetryBody") {
    parameters.push({
      name: "Idempotency-Key",
      in: "header",
      required: false,
      description: IdempotencyKeySchema.description,
      schema: plainSchema(IdempotencyKeySchema),
    });
  }
  const responses: Record<string, JsonSchema> = {};
  for (const [status, s] of Object.entries(op.success)) {
    const headers: Record<string, unknown> = {};
    const submits = op.operationId === "submitRequest" || op.operationId === "retryRequest";
    if (submits && status === "202") {
      headers.Location = {
        description: "/v1/requests/{id} of the new request.",
        schema: { type: "string" },
      };
    }
    if (submits && status === "200") {
      headers["Idempotent-Replayed"] = {
        description: "Always `true`: this answer replays an earlier submit.",
        schema: { type: "string", enum: ["true"] },
      };
    }
    if (status === "302") headers.Location = { schema: { type: "string" } };
    const content =
      s.schema === "-"
        ? undefined
        : s.contentType
          ? { [s.contentType]: { schema: { type: "string" } } }
          : {
              "application/json": {
                // The document describes itself as an object; its own schema is OpenAPI's.
                schema: s.schema === "" ? { type: "object" } : ref(s.schema),
              },
            };
    if (op.operationId === "submitRequest") Object.assign(headers, RATE_LIMIT_HEADER_REFS);
    responses[status] = {
      description: s.description,
      ...(Object.keys(headers).length ? { headers } : {}),
      ...(content ? { content } : {}),
    };
  }
  const problems = [...op.problems, ...(op.auth ? [401] : []), 500].sort((a, b) => a - b);
  for (const status of problems) responses[String(status)] = problemResponseObject(status);
  return {
    operationId: op.operationId,
    summary: op.summary,
    ...(op.auth ? {} : { security: [] }),
    ...(parameters.length ? { parameters } : {}),
    ...(op.body
      ? {
          requestBody: {
            // A retry's body is optional: none means the defaults.
            required: op.body !== "RetryBody",
            description: "JSON, at most 256 KiB unless configured. Unknown fields are refused.",
            content: { "application/json": { schema: ref(op.body) } },
          },
        }
      : {}),
    responses,
  };
}

let cached: string | undefined;

/** The OpenAPI 3.1 document of the API, as an object. */
export function buildOpenApiDocument(): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const op of OPERATIONS as readonly Operation[]) {
    paths[op.path] ??= {};
    const item = paths[op.path] as Record<string, JsonSchema>;
    item[op.method.toLowerCase()] = operationObject(op);
  }
  return {
    openapi: "3.1.0",
    jsonSchemaDialect: "https://json-schema.org/draft/2020-12/schema",
    info: {
      title: "longrun",
      version: "1",
      description:
        "Asynchronous request API for long-running GPU work. Errors are RFC 9457 " +
        `problem+json; \`type\` is ${PROBLEM_TYPE_BASE}<code>. List and log limits: ` +
        `list 1–${LIMITS.listLimit}, logs 1–${LIMITS.logsLimit}.`,
      license: { name: "Apache-2.0", identifier: "Apache-2.0" },
    },
    security: [{ bearer: [] }],
    paths,
    components: {
      schemas: componentSchemas(),
      securitySchemes: {
        bearer: { type: "http", scheme: "bearer", description: "A token that maps to a tenant." },
      },
      headers: {
        RetryAfter: {
          description: "Seconds to wait before trying again.",
          schema: { type: "integer", minimum: 1 },
        },
        WWWAuthenticate: { description: "`Bearer`.", schema: { type: "string" } },
        RateLimitPolicy: {
          description:
            'Queues with a `rateLimit` only (IETF draft-ietf-httpapi-ratelimit-headers): the caller\'s token bucket, `"submits";q=<burst>;w=<seconds to refill>`.',
          schema: { type: "string" },
        },
        RateLimit: {
          description:
            'Queues with a `rateLimit` only: `"submits";r=<tokens left>;t=<seconds until the bucket is full>`. A replay takes no token.',
          schema: { type: "string" },
        },
      },
    },
  };
}

/** The document serialised once: it depends only on code, never on requests. */
export function openApiJson(): string {
  cached ??= JSON.stringify(buildOpenApiDocument());
  return cached;
}
