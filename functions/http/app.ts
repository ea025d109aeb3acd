/**
 * The runtime-agnostic HTTP API: routing, authentication, body framing, validation and
 * the mapping of use-case outcomes to SPEC §2 answers. The embedded Node server and the
 * API Gateway Lambda handler both translate their requests to {@link HttpRequest} and
 * call {@link Api.handle}.
 */
import type { z } from "zod";
import { QUEUE_NAME_PATTERN } from "../config/schema.ts";
import { NotFoundError } from "../core/errors.ts";
import { RequestStatus } from "../core/request.ts";
import { type CoreDeps, queueOrThrow } from "../core/usecases/deps.ts";
import { cancelRequest } from "../core/usecases/lifecycle.ts";
import {
  getRequest,
  getResult,
  listQueues,
  listRequests,
  queueStats,
  readLogs,
  waitInfos,
} from "../core/usecases/queries.ts";
import { retryRequest, type SubmitResult, submitRequest } from "../core/usecases/submit.ts";
import { createUpload, getUpload } from "../core/usecases/uploads.ts";
import { QueueHistory } from "../metrics/history.ts";
import { type DashboardAssets, dashboardHeaders } from "./dashboard.ts";
import { OPERATIONS, type OperationId, openApiJson } from "./openapi.ts";
import { HttpProblem, rateLimitHeaders, toProblem, ValidationFailure } from "./problem.ts";
import {
  CreateUploadBodySchema,
  IdempotencyKeySchema,
  ListQuerySchema,
  LogsQuerySchema,
  parseSubmitBody,
  type QueueStatsJson,
  REQUEST_ID_PATTERN,
  RetryBodySchema,
  StatsQuerySchema,
  submitBodySchema,
  UPLOAD_ID_PATTERN,
} from "./schemas.ts";
import type { HttpRequest, HttpResponse } from "./types.ts";
import { listView, queueView, requestView, uploadView } from "./views.ts";

/** Resolves the caller's tenant from the request headers; null when it is not known. */
export type Authenticate = (
  headers: Readonly<Record<string, string | undefined>>,
  request: HttpRequest,
) => Promise<string | null>;

/** SPEC §2: the whole body is at most 256 KiB. */
export const DEFAULT_MAX_BODY_BYTES = 256 * 1024;

/**
 * How deeply JSON bodies may nest. Validation, hashing and storage all walk the value
 * recursively; a cap keeps a pathological body (`[[[[…]]]]`) a 400 rather than a stack
 * overflow, and no real input needs more.
 */
export const MAX_JSON_DEPTH = 64;

export interface ApiOptions {
  deps: CoreDeps;
  /** Maps the request headers to a tenant (see `tokenAuthenticator` in auth.ts). */
  authenticate: Authenticate;
  /** Largest accepted body in bytes, checked before any parsing; default 256 KiB. */
  maxBodyBytes?: number;
  /** Accept `http` webhook URLs too (local development); default false. */
  allowInsecureWebhooks?: boolean;
  /**
   * The tenant's webhook signing secret (`whsec_<base64 key>`) for
   * `GET /v1/webhook-secret`. Without it that route answers 404: webhooks are off.
   */
  webhookSecret?: (tenant: string) => Promise<string>;
  /**
   * The server's Prometheus text for `GET /v1/metrics`. Without it that route answers 404
   * (a Lambda deployment publishes its figures to CloudWatch instead).
   */
  metrics?: () => Promise<{ contentType: string; body: string }>;
  /**
   * The rolling queue history `GET /v1/queues/{queue}/stats` reads (default: one kept by
   * this API object, fed by that route's own reads).
   */
  history?: QueueHistory;
  /** The dashboard's static files; without them `/ui/` answers 404. */
  dashboard?: DashboardAssets;
  /**
   * Makes the tenant a new signing secret and returns it, for
   * `POST /v1/webhook-secret/rotate` (SPEC §2: the replaced one keeps signing for 24 hours).
   * Without it that route answers 404.
   */
  rotateWebhookSecret?: (tenant: string) => Promise<string>;
  /** Told of every failure that answered 500, for logging; must not throw. */
  onError?: (error: unknown, request: HttpRequest) => void;
}

/** What {@link createApi} returns: one function from request to response. */
export interface Api {
  /** Never rejects: every failure becomes a problem+json response. */
  handle(request: HttpRequest): Promise<HttpResponse>;
}

interface Context {
  request: HttpRequest;
  params: Readonly<Record<string, string>>;
  query: Readonly<Record<string, string | undefined>>;
  /** The authenticated tenant; "" on routes without authentication. */
  tenant: string;
}

type Handler = (ctx: Context) => Promise<HttpResponse>;

interface CompiledRoute {
  method: string;
  segments: readonly string[];
  auth: boolean;
  handler: Handler;
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): HttpResponse {
  return {
    status,
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  };
}

function bodyLength(body: HttpRequest["body"]): number {
  if (body === undefined) return 0;
  return typeof body === "string" ? Buffer.byteLength(body, "utf8") : body.byteLength;
}

/**
 * Rejects values nested deeper than {@link MAX_JSON_DEPTH} and numbers too large for a
 * double (`1e400` parses as Infinity, which JSON cannot store back), without recursing.
 */
function assertStorableJson(value: unknown): void {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop() as [unknown, number];
    if (typeof v === "number" && !Number.isFinite(v)) {
      throw new HttpProblem("invalid_request", "the JSON body holds a number out of range");
    }
    if (typeof v !== "object" || v === null) continue;
    if (depth > MAX_JSON_DEPTH) {
      throw new HttpProblem(
        "invalid_request",
        `the JSON body nests deeper than ${MAX_JSON_DEPTH} levels`,
      );
    }
    for (const child of Object.values(v)) stack.push([child, depth + 1]);
  }
}

/**
 * The body as parsed JSON. The content type is not insisted on: tools like `curl -d`
 * label JSON as form data, and the bytes decide anyway.
 */
function parseJsonBody(body: HttpRequest["body"]): unknown {
  if (body === undefined || bodyLength(body) === 0) {
    throw new HttpProblem("invalid_request", "a JSON body is required");
  }
  let text: string;
  if (typeof body === "string") {
    text = body;
  } else {
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(body);
    } catch {
      throw new HttpProblem("invalid_request", "the body is not valid UTF-8");
    }
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new HttpProblem(
      "invalid_request",
      `the body is not valid JSON: ${(cause as Error).message}`,
    );
  }
  assertStorableJson(value);
  return value;
}

/** The parsed value, or a thrown {@link ValidationFailure} that answers 400. */
function validated<T extends z.ZodType>(schema: T, input: unknown, root: string): z.output<T> {
  const parsed = schema.safeParse(input);
  if (!parsed.success) throw new ValidationFailure(parsed.error, root);
  return parsed.data;
}

/** A queue name that cannot exist is as unknown as one that is not configured. */
function queueParam(ctx: Context): string {
  const name = ctx.params.queue ?? "";
  if (!QUEUE_NAME_PATTERN.test(name)) throw new NotFoundError("queue", name);
  return name;
}

/** A malformed upload id cannot name an upload, so it is simply not found. */
function uploadIdParam(ctx: Context): string {
  const id = ctx.params.id ?? "";
  if (!UPLOAD_ID_PATTERN.test(id)) throw new NotFoundError("upload", id);
  return id;
}

/** The `Idempotency-Key` header, validated; undefined when absent. */
function idempotencyKeyOf(ctx: Context): string | undefined {
  const keyHeader = ctx.request.headers["idempotency-key"];
  return keyHeader === undefined
    ? undefined
    : validated(IdempotencyKeySchema, keyHeader, "Idempotency-Key");
}

/** A malformed id cannot name a request, so it is simply not found. */
function idParam(ctx: Context): string {
  const id = ctx.params.id ?? "";
  if (!REQUEST_ID_PATTERN.test(id)) throw new NotFoundError("request", id);
  return id;
}

function normaliseQuery(request: HttpRequest): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = Object.create(null);
  const q = request.query;
  if (q instanceof URLSearchParams) {
    for (const key of q.keys()) out[key] ??= q.get(key) ?? undefined;
  } else if (q) {
    for (const [k, v] of Object.entries(q)) out[k] = v;
  }
  const mark = request.path.indexOf("?");
  if (mark >= 0) {
    for (const [k, v] of new URLSearchParams(request.path.slice(mark + 1))) out[k] ??= v;
  }
  return out;
}

/** Splits and percent-decodes a path; null when it cannot be decoded. */
function pathSegments(path: string): string[] | null {
  const mark = path.indexOf("?");
  const bare = mark >= 0 ? path.slice(0, mark) : path;
  try {
    return bare.split("/").map(decodeURIComponent);
  } catch {
    return null;
  }
}

function matchRoute(
  segments: readonly string[],
  route: CompiledRoute,
): Record<string, string> | null {
  if (segments.length !== route.segments.length) return null;
  const params: Record<string, string> = Object.create(null);
  for (let i = 0; i < segments.length; i++) {
    const pattern = route.segments[i] as string;
    const actual = segments[i] as string;
    if (pattern.startsWith("{")) {
      if (actual === "") return null;
      params[pattern.slice(1, -1)] = actual;
    } else if (pattern !== actual) {
      return null;
    }
  }
  return params;
}

/**
 * Builds the API over the core's ports. Routes, schemas and the OpenAPI document come
 * from one table (openapi.ts), so every documented route is served and vice versa.
 */
export function createApi(options: ApiOptions): Api {
  const { deps, authenticate } = options;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const history = options.history ?? new QueueHistory();
  const submitSchema = submitBodySchema({
    allowInsecureWebhooks: options.allowInsecureWebhooks ?? false,
  });

  /** The answer to a submit or a retry: 202 with Location, or 200 for a replay. */
  /** The answer to a submit or a retry: 202 with Location when created, 200 when replayed. */
  function submitted(outcome: SubmitResult): HttpResponse {
    const r = outcome.request;
    const view = requestView(r, outcome.position, outcome.wait);
    // A queue with a rate limit says where the caller's bucket stands on every answer.
    const limited = outcome.rateLimit ? rateLimitHeaders(outcome.rateLimit) : {};
    return outcome.kind === "created"
      ? json(202, view, { location: `/v1/requests/${encodeURIComponent(r.id)}`, ...limited })
      : json(200, view, { "idempotent-replayed": "true", ...limited });
  }

  const handlers: Record<OperationId, Handler> = {
    async submitRequest(ctx) {
      const queue = queueParam(ctx);
      // An unknown queue answers 404 before the body is looked at: nothing else matters.
      queueOrThrow(deps.queues, queue);
      const idempotencyKey = idempotencyKeyOf(ctx);
      const raw = parseJsonBody(ctx.request.body);
      const parsed = parseSubmitBody(raw, submitSchema);
      if (!parsed.success) throw new ValidationFailure(parsed.error, "(body)");
      const outcome = await submitRequest(
        { tenant: ctx.tenant, queue, body: parsed.data, rawBody: raw, idempotencyKey },
        deps,
      );
      return submitted(outcome);
    },

    async retryRequest(ctx) {
      const id = idParam(ctx);
      const idempotencyKey = idempotencyKeyOf(ctx);
      const raw = bodyLength(ctx.request.body) === 0 ? {} : parseJsonBody(ctx.request.body);
      const body = validated(RetryBodySchema, raw, "(body)");
      const outcome = await retryRequest(
        {
          tenant: ctx.tenant,
          id,
          fromCheckpoint: body.fromCheckpoint ?? true,
          idempotencyKey,
        },
        deps,
      );
      return submitted(outcome);
    },

    async createUpload(ctx) {
      const body = validated(CreateUploadBodySchema, parseJsonBody(ctx.request.body), "(body)");
      const { upload, target } = await createUpload(
        { tenant: ctx.tenant, filename: body.filename, size: body.size, sha256: body.sha256 },
        deps,
      );
      return json(
        201,
        {
          id: upload.id,
          method: "PUT",
          url: target.url,
          headers: target.headers,
          expiresAt: new Date(target.expiresAt).toISOString(),
        },
        { location: `/v1/uploads/${encodeURIComponent(upload.id)}` },
      );
    },

    async getUpload(ctx) {
      return json(200, uploadView(await getUpload(ctx.tenant, uploadIdParam(ctx), deps)));
    },

    async listRequests(ctx) {
      const queue = queueParam(ctx);
      const query = validated(ListQuerySchema, ctx.query, "(query)");
      const page = await listRequests(
        {
          tenant: ctx.tenant,
          queue,
          statuses: query.status,
          limit: query.limit,
          cursor: query.cursor,
        },
        deps,
      );
      const waits = await waitInfos(
        page.items.filter(
          (r) => r.status === RequestStatus.QUEUED || r.status === RequestStatus.STARTING,
        ),
        page.positions,
        deps,
      );
      return json(200, listView(page, page.positions, waits));
    },

    async getRequest(ctx) {
      const { request, position, wait } = await getRequest(ctx.tenant, idParam(ctx), deps);
      return json(200, requestView(request, position, wait));
    },

    async getResult(ctx) {
      const result = await getResult(ctx.tenant, idParam(ctx), deps);
      return json(200, {
        id: result.id,
        output: result.output ?? null,
        artifacts: result.artifacts.map((a) => ({ name: a.name, size: a.size, url: a.url })),
      });
    },

    async cancelRequest(ctx) {
      const { request, position, wait } = await cancelRequest(ctx.tenant, idParam(ctx), deps);
      return json(202, requestView(request, position, wait));
    },

    async readLogs(ctx) {
      const id = idParam(ctx);
      const query = validated(LogsQuerySchema, ctx.query, "(query)");
      const page = await readLogs(ctx.tenant, id, query.cursor, query.limit, deps);
      return json(200, { lines: page.lines, nextCursor: page.nextCursor });
    },

    async listQueues(ctx) {
      return json(200, (await listQueues(deps, ctx.tenant)).map(queueView));
    },

    async getQueue(ctx) {
      return json(200, queueView(await queueStats(queueParam(ctx), deps, ctx.tenant)));
    },

    async getQueueStats(ctx) {
      const queue = queueParam(ctx);
      const query = validated(StatsQuerySchema, ctx.query, "(query)");
      const counts = await queueStats(queue, deps);
      const now = deps.clock.now();
      // Every read is a sample too, so the chart ends at the present.
      history.record(queue, counts, now);
      const from = now - Math.min(query.minutes * 60_000, history.windowMs);
      const view = history.view(queue, ctx.tenant, from);
      const body: QueueStatsJson = {
        queue,
        from: new Date(from).toISOString(),
        samples: view.samples.map((p) => ({
          at: new Date(p.at).toISOString(),
          queued: p.queued,
          running: p.running,
        })),
        waits: view.waits.map((w) => ({ at: new Date(w.at).toISOString(), seconds: w.seconds })),
      };
      return json(200, body);
    },

    async getMetrics() {
      if (!options.metrics) {
        throw new HttpProblem(
          "not_found",
          "this deployment publishes its metrics to CloudWatch, not here",
        );
      }
      const { contentType, body } = await options.metrics();
      return { status: 200, headers: { "content-type": contentType }, body };
    },

    async dashboardRedirect() {
      return { status: 302, headers: { location: "/ui/" }, body: "" };
    },

    async dashboardSlash() {
      return { status: 302, headers: { location: "/ui/" }, body: "" };
    },

    async dashboard() {
      return serveDashboardFile("index.html");
    },

    async dashboardAsset(ctx) {
      return serveDashboardFile(ctx.params.asset ?? "");
    },

    async getWebhookSecret(ctx) {
      if (!options.webhookSecret) {
        throw new HttpProblem("not_found", "webhooks are not enabled on this deployment");
      }
      return json(200, { secret: await options.webhookSecret(ctx.tenant) });
    },

    async rotateWebhookSecret(ctx) {
      if (!options.rotateWebhookSecret) {
        throw new HttpProblem("not_found", "webhooks are not enabled on this deployment");
      }
      return json(200, { secret: await options.rotateWebhookSecret(ctx.tenant) });
    },

    async health() {
      return json(200, { status: "ok" });
    },

    async openapi() {
      return {
        status: 200,
        headers: { "content-type": "application/json" },
        body: openApiJson(),
      };
    },
  };

  async function serveDashboardFile(name: string): Promise<HttpResponse> {
    const files = options.dashboard ? await options.dashboard() : undefined;
    const file = files?.get(name);
    if (!file) {
      throw new HttpProblem(
        "not_found",
        files ? "no such file of the dashboard" : "the dashboard is not served by this deployment",
      );
    }
    return { status: 200, headers: dashboardHeaders(file.contentType), body: file.body };
  }

  const routes: CompiledRoute[] = OPERATIONS.map((op) => ({
    method: op.method,
    segments: op.path.split("/"),
    auth: op.auth,
    handler: handlers[op.operationId],
  }));

  async function dispatch(request: HttpRequest): Promise<HttpResponse> {
    const segments = pathSegments(request.path);
    if (segments === null) throw new HttpProblem("not_found", "no such route");
    const method = request.method.toUpperCase();
    const allowed: string[] = [];
    for (const route of routes) {
      const params = matchRoute(segments, route);
      if (params === null) continue;
      if (route.method !== method) {
        allowed.push(route.method);
        continue;
      }
      let tenant = "";
      if (route.auth) {
        tenant = (await authenticate(request.headers, request)) ?? "";
        if (tenant === "") {
          throw new HttpProblem(
            "unauthorized",
            "a valid Authorization: Bearer <token> header is required",
            { "www-authenticate": 'Bearer realm="longrun"' },
          );
        }
      }
      // Checked on the byte count alone, before any decoding or parsing.
      if (bodyLength(request.body) > maxBodyBytes) {
        throw new HttpProblem("payload_too_large", `the body is larger than ${maxBodyBytes} bytes`);
      }
      return route.handler({ request, params, query: normaliseQuery(request), tenant });
    }
    if (allowed.length > 0) {
      throw new HttpProblem(
        "method_not_allowed",
        `${method} is not allowed here; use ${allowed.join(" or ")}`,
        { allow: allowed.join(", ") },
      );
    }
    throw new HttpProblem("not_found", "no such route");
  }

  return {
    async handle(request) {
      try {
        return await dispatch(request);
      } catch (err) {
        const response = toProblem(err);
        if (response.status >= 500) {
          try {
            options.onError?.(err, request);
          } catch {
            // A failing logger must not turn a 500 into an unhandled rejection.
          }
        }
        return response;
      }
    },
  };
}
