/**
 * The typed longrun client (SPEC §7): every route of SPEC §2 as a method, for TypeScript
 * callers and for the `longrun` command line.
 *
 * Its types are derived from the zod schemas the server validates with
 * (functions/http/schemas.ts), and every response body is validated with those same
 * schemas, relaxed only where a newer server must not break an older client: unknown
 * members of a response are dropped instead of refused.
 *
 * ```ts
 * import { LongrunClient } from "longrun/client";
 * const client = new LongrunClient({ url: "http://127.0.0.1:8080", token: "dev" });
 * const { request } = await client.submit("finetune", { input: { epochs: 3 } });
 * const done = await client.waitFor(request.id);
 * if (done.status === "SUCCEEDED") console.log((await client.result(done.id)).output);
 * ```
 */
import { z } from "zod";
import { isTerminal } from "../core/request.ts";
import {
  LogsSchema,
  type ProblemCode,
  ProblemSchema,
  ProgressSchema,
  QueueSchema,
  RequestErrorSchema,
  RequestListSchema,
  RequestSchema,
  RequestStatusSchema,
  ResultSchema,
  type SubmitBodySchema,
  UploadCreatedSchema,
  UploadSchema,
  WebhookSecretSchema,
} from "../http/schemas.ts";

// ---- response schemas, relaxed for forward compatibility ------------------------------

const ProgressBody = ProgressSchema.strip();
const RequestErrorBody = RequestErrorSchema.strip();
const RequestBody = RequestSchema.extend({
  progress: ProgressBody.nullable(),
  error: RequestErrorBody.nullable(),
  // A server from before these fields answers without them.
  waitReason: RequestSchema.shape.waitReason.default(null),
  waitDetail: RequestSchema.shape.waitDetail.default(null),
  estimatedStartAt: RequestSchema.shape.estimatedStartAt.default(null),
}).strip();
const RequestSummaryBody = RequestBody.omit({ input: true });
const RequestListBody = RequestListSchema.extend({ items: z.array(RequestSummaryBody) }).strip();
const ArtifactBody = ResultSchema.shape.artifacts.element.strip();
const ResultBody = ResultSchema.extend({ artifacts: z.array(ArtifactBody) }).strip();
const QueueBody = QueueSchema.strip();
const QueueListBody = z.array(QueueBody);
const LogsBody = LogsSchema.strip();
const WebhookSecretBody = WebhookSecretSchema.strip();
const UploadBody = UploadSchema.strip();
const UploadCreatedBody = UploadCreatedSchema.strip();

// ---- public types ---------------------------------------------------------------------

/** One of QUEUED, STARTING, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED. */
export type RequestStatus = z.output<typeof RequestStatusSchema>;
/** A request as `GET /v1/requests/{id}` shows it. */
export type LongrunRequest = z.output<typeof RequestBody>;
/** A request as a list shows it: without `input`. */
export type RequestSummary = z.output<typeof RequestSummaryBody>;
/** One page of `GET /v1/queues/{queue}/requests`. */
export type RequestList = z.output<typeof RequestListBody>;
/** A SUCCEEDED request's output and artifacts. */
export type RequestResult = z.output<typeof ResultBody>;
/** One file a job left in its output folder, downloadable by plain GET from `url`. */
export type Artifact = z.output<typeof ArtifactBody>;
/** A queue's limits and current counts. */
export type QueueInfo = z.output<typeof QueueBody>;
/** One page of a request's logs. */
export type LogsPage = z.output<typeof LogsBody>;
/** The body of a submit, as a caller writes it (defaults not yet applied). */
export type SubmitBody = z.input<typeof SubmitBodySchema>;
/** An upload's state (`GET /v1/uploads/{id}`). */
export type UploadInfo = z.output<typeof UploadBody>;
/** Where to PUT an upload's bytes (`POST /v1/uploads`). */
export type UploadCreated = z.output<typeof UploadCreatedBody>;
/** RFC 9457 problem details as the API sends them. */
export type Problem = z.output<typeof ProblemSchema>;

/** True for SUCCEEDED, FAILED, CANCELLED and EXPIRED: the request will not change again. */
export function isTerminalStatus(status: RequestStatus): boolean {
  return isTerminal(status);
}

/** Every request status, in lifecycle order. */
export const REQUEST_STATUSES: readonly RequestStatus[] = RequestStatusSchema.options;

// ---- errors ---------------------------------------------------------------------------

const PROBLEM_CODE_OF_STATUS: Readonly<Record<number, ProblemCode>> = {
  400: "invalid_request",
  401: "unauthorized",
  403: "unauthorized",
  404: "not_found",
  405: "method_not_allowed",
  409: "conflict",
  413: "payload_too_large",
  429: "rate_limited",
};

/**
 * The API answered with a problem (a 4xx or 5xx). `code` is one of SPEC §2's stable codes
 * (or a newer one); `requestStatus` is the request's status on `not_ready`, `no_result`
 * and `conflict`, and `error` why it ended on `no_result`. An answer that is not
 * problem+json (a proxy's error page, an authorizer's 401) becomes a problem too, with the
 * code its HTTP status implies.
 */
export class LongrunApiError extends Error {
  override name = "LongrunApiError";
  /** The HTTP status. */
  readonly status: number;
  /** The problem's stable `code`. */
  readonly code: ProblemCode | (string & {});
  /** The problem's human-readable `detail`. */
  readonly detail: string;
  /** The request's status, when the problem is about one (`not_ready`, `no_result`, `conflict`). */
  readonly requestStatus: RequestStatus | undefined;
  /** Why the request ended (`no_result`). */
  readonly error: LongrunRequest["error"] | undefined;
  /** Seconds to wait before trying again (`queue_full`, `rate_limited`), from `Retry-After`. */
  readonly retryAfterSeconds: number | undefined;
  /** The problem body as received (or as built from a non-problem answer). */
  readonly problem: Readonly<Record<string, unknown>>;

  constructor(init: {
    status: number;
    code: string;
    detail: string;
    requestStatus?: RequestStatus | undefined;
    error?: LongrunRequest["error"] | undefined;
    retryAfterSeconds?: number | undefined;
    problem: Readonly<Record<string, unknown>>;
  }) {
    super(init.detail);
    this.status = init.status;
    this.code = init.code;
    this.detail = init.detail;
    this.requestStatus = init.requestStatus;
    this.error = init.error;
    this.retryAfterSeconds = init.retryAfterSeconds;
    this.problem = init.problem;
  }
}

/** The server could not be reached at all (refused, unknown host, reset, …). */
export class LongrunConnectionError extends Error {
  override name = "LongrunConnectionError";
  constructor(
    readonly url: string,
    cause: unknown,
  ) {
    super(`cannot reach longrun at ${url}: ${describeCause(cause)}`, { cause });
  }
}

/** The server answered 2xx with a body this client cannot read (not JSON, wrong shape). */
export class LongrunResponseError extends Error {
  override name = "LongrunResponseError";
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** The innermost useful message of a fetch failure (`fetch failed` says nothing). */
function describeCause(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && e.message === "fetch failed" && e.cause !== undefined) {
    e = e.cause;
  }
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    if (e.message) return e.message;
    if (typeof code === "string") return code;
    return e.name;
  }
  return String(e);
}

// ---- the client -----------------------------------------------------------------------

/** How to reach a longrun deployment. */
export interface LongrunClientOptions {
  /** Base URL of the API, e.g. `http://127.0.0.1:8080` or an API Gateway URL. */
  url: string;
  /** Bearer token (embedded: one of `LONGRUN_TOKENS`; AWS: a JWT). */
  token: string;
  /** The fetch to use; the global one by default. */
  fetch?: typeof globalThis.fetch;
}

/** Options of {@link LongrunClient.submit}. */
export interface SubmitOptions {
  /** Makes the submit safe to retry: the same key and body give back the same request. */
  idempotencyKey?: string;
}

/** What {@link LongrunClient.submit} gives back. */
export interface SubmitOutcome {
  request: LongrunRequest;
  /** True when an earlier submit with the same idempotency key created the request. */
  replayed: boolean;
}

/** Options of {@link LongrunClient.retry}. */
export interface RetryOptions {
  /** Start from the old request's last checkpoint (default true). */
  fromCheckpoint?: boolean;
  /** As on submit: the same key gives back the same new request. */
  idempotencyKey?: string;
}

/** Options of {@link LongrunClient.list} and {@link LongrunClient.listAll}. */
export interface ListOptions {
  /** Only requests in this status (or any of these). */
  status?: RequestStatus | readonly RequestStatus[];
  /** Items per page, 1–1000 (the server's default is 100). */
  limit?: number;
  /** The `nextCursor` of the previous page. */
  cursor?: string;
}

/** Options of {@link LongrunClient.logs}. */
export interface LogsOptions {
  /** The `nextCursor` of the previous page. */
  cursor?: string;
  /** Lines per page, 1–1000. */
  limit?: number;
}

/** Options of the polling methods. */
export interface PollOptions {
  /** Time between two polls (default 1000 ms). */
  intervalMs?: number;
  /** Stops polling: the iterator or promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Options of {@link LongrunClient.waitFor}. */
export interface WaitOptions extends PollOptions {
  /** Called with the request after every poll, the last time with its terminal state. */
  onUpdate?: (request: LongrunRequest) => void;
}

/** Options of {@link LongrunClient.followLogs}. */
export interface FollowLogsOptions extends PollOptions {
  /** Start after this cursor instead of at the first line. */
  cursor?: string;
}

/** A typed client of the longrun HTTP API (SPEC §2). Methods throw {@link LongrunApiError}s. */
export class LongrunClient {
  /** The base URL, without a trailing slash. */
  readonly url: string;
  readonly #token: string;
  readonly #fetch: typeof globalThis.fetch;

  constructor(options: LongrunClientOptions) {
    const parsed = new URL(options.url); // throws TypeError on a malformed URL
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new TypeError(`longrun URL must be http(s): ${options.url}`);
    }
    this.url = options.url.replace(/\/+$/, "");
    this.#token = options.token;
    this.#fetch = options.fetch ?? globalThis.fetch;
  }

  /** Submits a request to `queue` (`POST /v1/queues/{queue}/requests`). */
  async submit(
    queue: string,
    body: SubmitBody,
    options: SubmitOptions = {},
  ): Promise<SubmitOutcome> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (options.idempotencyKey !== undefined) headers["idempotency-key"] = options.idempotencyKey;
    const res = await this.#call("POST", `/v1/queues/${seg(queue)}/requests`, {
      headers,
      body: JSON.stringify(body),
    });
    const request = await this.#read(res, RequestBody);
    const replayed = res.status === 200 || res.headers.get("idempotent-replayed") === "true";
    return { request, replayed };
  }

  /**
   * Submits a FAILED, CANCELLED or EXPIRED request again as a new request
   * (`POST /v1/requests/{id}/retry`), from its last checkpoint unless told otherwise.
   */
  async retry(id: string, options: RetryOptions = {}): Promise<SubmitOutcome> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (options.idempotencyKey !== undefined) headers["idempotency-key"] = options.idempotencyKey;
    const body =
      options.fromCheckpoint === undefined ? {} : { fromCheckpoint: options.fromCheckpoint };
    const res = await this.#call("POST", `/v1/requests/${seg(id)}/retry`, {
      headers,
      body: JSON.stringify(body),
    });
    const request = await this.#read(res, RequestBody);
    return { request, replayed: res.status === 200 };
  }

  /** Starts an upload (`POST /v1/uploads`): where to PUT exactly `size` bytes. */
  async createUpload(body: {
    filename: string;
    size: number;
    sha256?: string;
  }): Promise<UploadCreated> {
    const res = await this.#call("POST", "/v1/uploads", {
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return this.#read(res, UploadCreatedBody);
  }

  /** An upload's state (`GET /v1/uploads/{id}`). */
  async getUpload(id: string): Promise<UploadInfo> {
    return this.#read(await this.#call("GET", `/v1/uploads/${seg(id)}`), UploadBody);
  }

  /**
   * PUTs an upload's bytes to its signed URL (no token: the URL is the credential; on AWS it
   * is S3's). `body` may be a stream, so a large file never sits in memory; it must be
   * exactly the size the upload was created with.
   */
  async putUpload(
    created: Pick<UploadCreated, "url" | "headers">,
    body: NonNullable<RequestInit["body"]>,
    options: { signal?: AbortSignal } = {},
  ): Promise<void> {
    let res: Response;
    try {
      res = await this.#fetch(created.url, {
        method: "PUT",
        headers: created.headers,
        body,
        // A stream body needs half-duplex in fetch; harmless for the others.
        duplex: "half",
        ...(options.signal ? { signal: options.signal } : {}),
      } as RequestInit);
    } catch (err) {
      throw new LongrunConnectionError(created.url, err);
    }
    if (!res.ok) throw await this.#problem(res, `the upload PUT answered ${res.status}`);
    await res.body?.cancel();
  }

  /** The request's current state (`GET /v1/requests/{id}`). */
  async get(id: string): Promise<LongrunRequest> {
    return this.#read(await this.#call("GET", `/v1/requests/${seg(id)}`), RequestBody);
  }

  /**
   * A SUCCEEDED request's output and artifacts. Before that it throws a
   * {@link LongrunApiError} `not_ready`; after another end, `no_result`.
   */
  async result(id: string): Promise<RequestResult> {
    return this.#read(await this.#call("GET", `/v1/requests/${seg(id)}/result`), ResultBody);
  }

  /** Cancels a request: a QUEUED one at once, a running one once its job stopped. */
  async cancel(id: string): Promise<LongrunRequest> {
    return this.#read(await this.#call("POST", `/v1/requests/${seg(id)}/cancel`), RequestBody);
  }

  /** One page of the caller's requests in `queue`, newest first. */
  async list(queue: string, options: ListOptions = {}): Promise<RequestList> {
    const query = new URLSearchParams();
    if (options.status !== undefined) {
      const statuses = typeof options.status === "string" ? [options.status] : options.status;
      query.set("status", statuses.join(","));
    }
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.cursor !== undefined) query.set("cursor", options.cursor);
    const qs = query.size > 0 ? `?${query}` : "";
    return this.#read(
      await this.#call("GET", `/v1/queues/${seg(queue)}/requests${qs}`),
      RequestListBody,
    );
  }

  /** Every matching request of `queue`, newest first, following `nextCursor` page by page. */
  async *listAll(
    queue: string,
    options: Omit<ListOptions, "cursor"> = {},
  ): AsyncGenerator<RequestSummary, void, undefined> {
    let cursor: string | undefined;
    do {
      const page = await this.list(queue, { ...options, ...(cursor ? { cursor } : {}) });
      yield* page.items;
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
  }

  /** Every configured queue with its limits and counts. */
  async queues(): Promise<QueueInfo[]> {
    return this.#read(await this.#call("GET", "/v1/queues"), QueueListBody);
  }

  /** One queue's limits and counts. */
  async queue(name: string): Promise<QueueInfo> {
    return this.#read(await this.#call("GET", `/v1/queues/${seg(name)}`), QueueBody);
  }

  /** The caller's current key for verifying webhook signatures (`whsec_<base64 key>`). */
  async webhookSecret(): Promise<string> {
    return (await this.#read(await this.#call("GET", "/v1/webhook-secret"), WebhookSecretBody))
      .secret;
  }

  /**
   * Makes a new webhook signing secret and returns it. For 24 hours deliveries carry a
   * signature with the old key as well, so receivers can switch keys without a gap.
   */
  async rotateWebhookSecret(): Promise<string> {
    return (
      await this.#read(await this.#call("POST", "/v1/webhook-secret/rotate"), WebhookSecretBody)
    ).secret;
  }

  /** One page of the job's stdout and stderr, all attempts, oldest first. */
  async logs(id: string, options: LogsOptions = {}): Promise<LogsPage> {
    const query = new URLSearchParams();
    if (options.cursor !== undefined && options.cursor !== "") query.set("cursor", options.cursor);
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    const qs = query.size > 0 ? `?${query}` : "";
    return this.#read(await this.#call("GET", `/v1/requests/${seg(id)}/logs${qs}`), LogsBody);
  }

  /**
   * Every log line of the request as it is written, until the request has ended and its
   * last lines were read.
   */
  async *followLogs(
    id: string,
    options: FollowLogsOptions = {},
  ): AsyncGenerator<string, void, undefined> {
    const intervalMs = options.intervalMs ?? 1000;
    let cursor = options.cursor;
    let ended = false;
    for (;;) {
      const page = await this.logs(id, cursor !== undefined ? { cursor } : {});
      cursor = page.nextCursor;
      yield* page.lines;
      if (page.lines.length > 0) continue; // drain before looking at the status
      if (ended) return;
      // The status is read after an empty page; one more page after the end catches the
      // lines written between that page and the end.
      if (isTerminal((await this.get(id)).status)) ended = true;
      else await sleep(intervalMs, options.signal);
    }
  }

  /** Polls the request until it is SUCCEEDED, FAILED, CANCELLED or EXPIRED; returns that. */
  async waitFor(id: string, options: WaitOptions = {}): Promise<LongrunRequest> {
    const intervalMs = options.intervalMs ?? 1000;
    for (;;) {
      options.signal?.throwIfAborted();
      const request = await this.get(id);
      options.onUpdate?.(request);
      if (isTerminal(request.status)) return request;
      await sleep(intervalMs, options.signal);
    }
  }

  /**
   * Opens an artifact's download (a plain GET of its signed URL, without the token: the
   * URL may point at another host such as S3). Returns the body as a stream.
   */
  async download(artifact: Pick<Artifact, "url" | "name">): Promise<ReadableStream<Uint8Array>> {
    let res: Response;
    try {
      res = await this.#fetch(artifact.url);
    } catch (err) {
      throw new LongrunConnectionError(artifact.url, err);
    }
    if (!res.ok || res.body === null) {
      throw await this.#problem(res, `downloading ${artifact.name} failed`);
    }
    return res.body;
  }

  async #call(
    method: "GET" | "POST",
    path: string,
    init: { headers?: Record<string, string>; body?: string } = {},
  ): Promise<Response> {
    const headers = {
      accept: "application/json, application/problem+json",
      authorization: `Bearer ${this.#token}`,
      ...init.headers,
    };
    try {
      return await this.#fetch(this.url + path, {
        method,
        headers,
        ...(init.body !== undefined ? { body: init.body } : {}),
      });
    } catch (err) {
      throw new LongrunConnectionError(this.url, err);
    }
  }

  /** The validated JSON body of a 2xx answer; any other answer throws its problem. */
  async #read<S extends z.ZodType>(res: Response, schema: S): Promise<z.output<S>> {
    if (!res.ok) throw await this.#problem(res, `${res.status} ${res.statusText}`.trim());
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new LongrunResponseError(
        `longrun at ${this.url} answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`,
        res.status,
      );
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      throw new LongrunResponseError(
        `longrun at ${this.url} answered ${res.status} with an unexpected body: ${z.prettifyError(parsed.error)}`,
        res.status,
      );
    }
    return parsed.data;
  }

  /** The problem a non-2xx answer carries, or one built from its status and text. */
  async #problem(res: Response, fallbackDetail: string): Promise<LongrunApiError> {
    const text = await res.text().catch(() => "");
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const retryAfter = Number(res.headers.get("retry-after"));
    const retryAfterSeconds =
      Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined;
    const problem = ProblemSchema.safeParse(body);
    if (problem.success) {
      const p = problem.data;
      return new LongrunApiError({
        status: res.status,
        code: p.code,
        detail: p.detail,
        requestStatus: p.requestStatus,
        error: p.error ?? undefined,
        retryAfterSeconds,
        problem: body as Record<string, unknown>,
      });
    }
    // Not (this version's) problem+json: keep what can be read.
    const obj =
      typeof body === "object" && body !== null && !Array.isArray(body)
        ? (body as Record<string, unknown>)
        : {};
    const code =
      typeof obj.code === "string" && obj.code !== ""
        ? obj.code
        : (PROBLEM_CODE_OF_STATUS[res.status] ?? (res.status >= 500 ? "internal" : "unknown"));
    const detail =
      (typeof obj.detail === "string" && obj.detail) ||
      (typeof obj.message === "string" && obj.message) ||
      (text && body === undefined && text.length <= 200 ? text.trim() : "") ||
      fallbackDetail;
    const requestStatus = RequestStatusSchema.safeParse(obj.requestStatus);
    return new LongrunApiError({
      status: res.status,
      code,
      detail,
      requestStatus: requestStatus.success ? requestStatus.data : undefined,
      retryAfterSeconds,
      problem: { ...obj, status: res.status, code, detail },
    });
  }
}

/** A path segment, percent-encoded. */
function seg(value: string): string {
  return encodeURIComponent(value);
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
