/**
 * The one place that turns failures into RFC 9457 problem+json answers. Domain errors
 * (functions/core/errors.ts) and validation errors map to their SPEC §2 codes; anything
 * else is a fault of ours and answers a generic 500 that leaks nothing.
 *
 * `type` is `https://longrun.dev/problems/<code>`: stable per code, so clients may switch
 * on either `type` or `code`. The problem's `status` member is the HTTP status as RFC 9457
 * requires; the request's own status, which SPEC asks `not_ready`/`no_result` to carry,
 * is the `requestStatus` extension member so the two cannot collide.
 */
import { z } from "zod";
import {
  ConcurrentUpdateError,
  ConflictError,
  IdempotencyConflictError,
  InvalidRequestError,
  NoResultError,
  NotFoundError,
  NotReadyError,
  QueueFullError,
  RateLimitedError,
} from "../core/errors.ts";
import type { RateLimitState } from "../core/ports.ts";
import type { ProblemCode, ProblemJson } from "./schemas.ts";
import type { HttpResponse } from "./types.ts";

/** Base of every problem `type` URI. */
export const PROBLEM_TYPE_BASE = "https://longrun.dev/problems/";

const STATUS_OF: Readonly<Record<ProblemCode, number>> = {
  invalid_request: 400,
  unauthorized: 401,
  not_found: 404,
  method_not_allowed: 405,
  conflict: 409,
  idempotency_conflict: 409,
  not_ready: 409,
  no_result: 409,
  payload_too_large: 413,
  queue_full: 429,
  rate_limited: 429,
  internal: 500,
};

const TITLE_OF: Readonly<Record<ProblemCode, string>> = {
  invalid_request: "Invalid request",
  unauthorized: "Unauthorized",
  not_found: "Not found",
  method_not_allowed: "Method not allowed",
  conflict: "Conflict",
  idempotency_conflict: "Idempotency key reused with another body",
  not_ready: "Result not ready",
  no_result: "No result",
  payload_too_large: "Payload too large",
  queue_full: "Queue full",
  rate_limited: "Too many requests",
  internal: "Internal error",
};

/** A failure the HTTP layer itself detects (routing, auth, body framing). */
export class HttpProblem extends Error {
  override name = "HttpProblem";
  constructor(
    readonly code: ProblemCode,
    readonly detail: string,
    readonly headers: Record<string, string> = {},
    readonly extensions: Partial<ProblemJson> = {},
  ) {
    super(detail);
  }
}

/** Caller input that failed a zod schema; `root` names the input as a whole. */
export class ValidationFailure extends Error {
  override name = "ValidationFailure";
  constructor(
    readonly error: z.ZodError,
    readonly root: string,
  ) {
    super(error.message);
  }
}

/** Builds a problem+json response. */
export function problemResponse(
  code: ProblemCode,
  detail: string,
  extensions: Partial<ProblemJson> = {},
  headers: Record<string, string> = {},
): HttpResponse {
  const status = STATUS_OF[code];
  const body: ProblemJson = {
    type: `${PROBLEM_TYPE_BASE}${code}`,
    title: TITLE_OF[code],
    status,
    detail,
    code,
    ...extensions,
  };
  return {
    status,
    headers: { "content-type": "application/problem+json", ...headers },
    body: JSON.stringify(body),
  };
}

/**
 * `a.b[0].c` from a zod issue path; keys that are not plain names (metadata keys may be
 * anything) are quoted as `a["odd key"]`. The root is `root`.
 */
function pathString(path: readonly PropertyKey[], root: string): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else if (typeof part === "string" && /^[A-Za-z_$][\w$-]*$/.test(part)) {
      out += out === "" ? part : `.${part}`;
    } else out += `[${JSON.stringify(String(part))}]`;
  }
  return out === "" ? root : out;
}

/**
 * A 400 naming every refused field. `root` names the whole value when an issue is about
 * it rather than a field: `(body)`, `(query)`, or a header's name.
 */
export function validationProblem(error: z.ZodError, root = "(body)"): HttpResponse {
  const errors: { path: string; message: string }[] = [];
  for (const issue of error.issues) {
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        errors.push({
          path: pathString([...issue.path, key], root),
          message: "unknown field",
        });
      }
    } else if (issue.code === "invalid_key") {
      // zod only says "Invalid key in record"; the key schema's own issues say why.
      errors.push({
        path: pathString(issue.path, root),
        message: `invalid key: ${issue.issues.map((i) => i.message).join("; ")}`,
      });
    } else {
      errors.push({ path: pathString(issue.path, root), message: issue.message });
    }
  }
  const detail = errors.map((e) => `${e.path}: ${e.message}`).join("; ");
  return problemResponse("invalid_request", detail, { errors });
}

/**
 * Maps any thrown value to its problem answer. Unknown errors become a 500 whose detail
 * says nothing about them: stack traces and messages of dependencies stay in the logs.
 */
export function toProblem(err: unknown): HttpResponse {
  if (err instanceof HttpProblem) {
    return problemResponse(err.code, err.detail, err.extensions, err.headers);
  }
  if (err instanceof ValidationFailure) return validationProblem(err.error, err.root);
  if (err instanceof z.ZodError) return validationProblem(err);
  if (err instanceof InvalidRequestError) {
    return problemResponse(
      "invalid_request",
      err.field ? `${err.field}: ${err.message}` : err.message,
      err.field ? { errors: [{ path: err.field, message: err.message }] } : {},
    );
  }
  if (err instanceof NotFoundError) return problemResponse("not_found", err.message);
  if (err instanceof IdempotencyConflictError) {
    return problemResponse("idempotency_conflict", err.message);
  }
  if (err instanceof NotReadyError) {
    return problemResponse("not_ready", err.message, {
      requestStatus: err.status as ProblemJson["requestStatus"],
    });
  }
  if (err instanceof NoResultError) {
    return problemResponse("no_result", err.message, {
      requestStatus: err.status as ProblemJson["requestStatus"],
      error: err.error as ProblemJson["error"],
    });
  }
  if (err instanceof ConflictError) {
    return problemResponse(
      "conflict",
      err.message,
      err.status ? { requestStatus: err.status as ProblemJson["requestStatus"] } : {},
    );
  }
  if (err instanceof ConcurrentUpdateError) {
    return problemResponse("conflict", "the request changed concurrently; try again");
  }
  if (err instanceof QueueFullError) {
    return problemResponse(
      "queue_full",
      err.message,
      { scope: err.scope },
      { "retry-after": String(Math.max(1, Math.ceil(err.retryAfterSeconds))) },
    );
  }
  if (err instanceof RateLimitedError) {
    return problemResponse(
      "rate_limited",
      err.message,
      {},
      {
        "retry-after": String(Math.max(1, Math.ceil(err.retryAfterSeconds))),
        ...rateLimitHeaders({ ...err.state, remaining: 0 }),
      },
    );
  }
  return problemResponse("internal", "an internal error occurred");
}

/** Name of the one quota policy the RateLimit headers describe. */
const RATE_LIMIT_POLICY = "submits";

/**
 * The `RateLimit-Policy` and `RateLimit` fields of the IETF httpapi draft
 * (draft-ietf-httpapi-ratelimit-headers) for a tenant's submit bucket: the quota `q` is the
 * burst, the window `w` the seconds an empty bucket takes to fill; `r` is what remains and
 * `t` the seconds until the bucket is full again.
 */
export function rateLimitHeaders(state: RateLimitState): Record<string, string> {
  const window = Math.max(1, Math.ceil(state.policy.burst / state.policy.requestsPerSecond));
  return {
    "ratelimit-policy": `"${RATE_LIMIT_POLICY}";q=${state.policy.burst};w=${window}`,
    ratelimit: `"${RATE_LIMIT_POLICY}";r=${state.remaining};t=${state.resetSeconds}`,
  };
}
