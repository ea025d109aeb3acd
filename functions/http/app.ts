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
import { submitRequest } from "../core/usecases/submit.ts";
import { OPERATIONS, type OperationId, openApiJson } from "./openapi.ts";
import { HttpProblem, rateLimitHeaders, toProblem, ValidationFailure } from "./problem.ts";
import {
  IdempotencyKeySchema,
  ListQuerySchema,
  LogsQuerySchema,
  parseSubmitBody,
  REQUEST_ID_PATTERN,
  submitBodySchema,
} from "./schemas.ts";
import type { HttpRequest, HttpResponse } from "./types.ts";
import { listView, queueView, requestView } from "./views.ts";

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
  const submitSchema = submitBodySchema({
    allowInsecureWebhooks: options.allowInsecureWebhooks ?? false,
  });

  const handlers: Record<OperationId, Handler> = {
    async submitRequest(ctx) {
      const queue = queueParam(ctx);
      // An unknown queue answers 404 before the body is looked at: nothing else matters.
      queueOrThrow(deps.queues, queue);
      const keyHeader = ctx.request.headers["idempotency-key"];
      let idempotencyKey: string | undefined;
      if (keyHeader !== undefined) {
        idempotencyKey = validated(IdempotencyKeySchema, keyHeader, "Idempotency-Key");
      }
      const raw = parseJsonBody(ctx.request.body);
      const parsed = parseSubmitBody(raw, submitSchema);
      if (!parsed.success) throw new ValidationFailure(parsed.error, "(body)");
      const outcome = await submitRequest(
        { tenant: ctx.tenant, queue, body: parsed.data, rawBody: raw, idempotencyKey },
        deps,
      );
      const r = outcome.request;
      const position =
        r.status !== RequestStatus.QUEUED
          ? null
          : outcome.kind === "created" && outcome.position !== undefined
            ? outcome.position
            : await deps.store.position(r);
      const positions = new Map(position === null ? [] : [[r.id, position]]);
      const usage = outcome.kind === "created" ? outcome.usage : undefined;
      const view = requestView(
        r,
        position,
        (await waitInfos([r], positions, deps, usage)).get(r.id),
      );
      // A queue with a rate limit says where the caller's bucket stands on every answer.
      const limited = outcome.rateLimit ? rateLimitHeaders(outcome.rateLimit) : {};
      return outcome.kind === "created"
        ? json(202, view, { location: `/v1/requests/${encodeURIComponent(r.id)}`, ...limited })
        : json(200, view, { "idempotent-replayed": "true", ...limited });
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
      // The page's QUEUED items are counted together: the cost is that of the deepest.
      const positions = await deps.store.positions(
        page.items.filter((r) => r.status === RequestStatus.QUEUED),
      );
      const waits = await waitInfos(
        page.items.filter(
          (r) => r.status === RequestStatus.QUEUED || r.status === RequestStatus.STARTING,
        ),
        positions,
        deps,
      );
      return json(200, listView(page, positions, waits));
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
      const request = await cancelRequest(ctx.tenant, idParam(ctx), deps);
      const position =
        request.status === RequestStatus.QUEUED ? await deps.store.position(request) : null;
      const positions = new Map(position === null ? [] : [[request.id, position]]);
      const wait = (await waitInfos([request], positions, deps)).get(request.id);
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

    async getWebhookSecret(ctx) {
      if (!options.webhookSecret) {
        throw new HttpProblem("not_found", "webhooks are not enabled on this deployment");
      }
      return json(200, { secret: await options.webhookSecret(ctx.tenant) });
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
