/**
 * The zod schemas of the HTTP API: they validate what callers send and, through
 * `z.toJSONSchema`, are the schemas of the OpenAPI document (functions/http/openapi.ts), so
 * the document cannot drift from what the API enforces.
 */
import { z } from "zod";
import { QUEUE_NAME_PATTERN } from "../config/schema.ts";
import { ALL_STATUSES, ErrorCode, type RequestStatus, WEBHOOK_EVENTS } from "../core/request.ts";

/** Request ids are `req_` + a ULID (Crockford base32, 26 characters). */
export const REQUEST_ID_PATTERN = /^req_[0-9A-HJKMNP-TV-Z]{26}$/;
/** SPEC §2: 1–255 printable ASCII characters. */
export const IDEMPOTENCY_KEY_PATTERN = /^[\x20-\x7E]{1,255}$/;

/** Documented bounds of the submit body beyond what SPEC §2 fixes. */
export const LIMITS = {
  metadataPairs: 16,
  metadataKeyLength: 64,
  metadataValueLength: 256,
  webhookUrlLength: 2048,
  /** The config schema's ceiling; the queue's own `timeoutSeconds` is checked by submit. */
  timeoutSeconds: 14 * 86_400,
  /** The config schema's ceiling for `queueTtlSeconds`. */
  queueTtlSeconds: 365 * 86_400,
  listLimit: 1000,
  listDefault: 100,
  logsLimit: 1000,
  logsDefault: 1000,
  cursorLength: 2048,
} as const;

/**
 * Named schemas: each one registered here becomes `#/components/schemas/<id>` in the
 * OpenAPI document, and other schemas that embed it refer to it by `$ref`.
 */
export const apiSchemas = z.registry<{ id: string }>();

/** Any JSON value. Request bodies are already JSON-parsed, so nothing else can arrive. */
export const JsonValueSchema = z
  .unknown()
  .describe("Any JSON value.")
  .register(apiSchemas, { id: "JsonValue" });

export const RequestStatusSchema = z
  .enum(ALL_STATUSES as [RequestStatus, ...RequestStatus[]])
  .describe(
    "QUEUED, STARTING and RUNNING are live; SUCCEEDED, FAILED, CANCELLED and EXPIRED are final.",
  )
  .register(apiSchemas, { id: "RequestStatus" });

const WebhookEventSchema = z.enum(WEBHOOK_EVENTS);

const ProtoKeyMessage = '"__proto__" is not allowed as a metadata key';

const MetadataSchema = z
  .record(
    z
      .string()
      .min(1, "metadata keys must not be empty")
      .max(
        LIMITS.metadataKeyLength,
        `metadata keys are at most ${LIMITS.metadataKeyLength} characters`,
      ),
    z
      .string()
      .max(
        LIMITS.metadataValueLength,
        `metadata values are at most ${LIMITS.metadataValueLength} characters`,
      ),
  )
  .refine((m) => Object.keys(m).length <= LIMITS.metadataPairs, {
    message: `at most ${LIMITS.metadataPairs} metadata pairs are allowed`,
  })
  .meta({ maxProperties: LIMITS.metadataPairs })
  .describe(
    `Up to ${LIMITS.metadataPairs} string pairs; keys 1–${LIMITS.metadataKeyLength} characters, values at most ${LIMITS.metadataValueLength}.`,
  );

/** Options of the submit body schema. */
export interface SubmitSchemaOptions {
  /**
   * Accept `http` webhook URLs as well as `https` (local development; mirrors
   * `LONGRUN_WEBHOOK_ALLOW_PRIVATE`). The public-address rule is the webhook guard's.
   */
  allowInsecureWebhooks?: boolean;
}

function webhookSchema(allowInsecure: boolean) {
  return z
    .strictObject({
      url: z
        .url({
          protocol: allowInsecure ? /^https?$/ : /^https$/,
          error: allowInsecure ? "must be an http(s) URL" : "must be an https URL",
        })
        .max(LIMITS.webhookUrlLength)
        .describe(
          allowInsecure
            ? "An http(s) URL."
            : "An https URL whose host resolves to a public address.",
        ),
      events: z
        .array(WebhookEventSchema)
        .min(1)
        .max(WEBHOOK_EVENTS.length)
        .refine((events) => new Set(events).size === events.length, {
          message: "events must not repeat",
        })
        .default(["completed"]),
    })
    .describe("POSTed to `url` for each chosen event, signed as Standard Webhooks says.");
}

/** Builds the submit body schema; the OpenAPI document shows {@link SubmitBodySchema}. */
export function submitBodySchema(options: SubmitSchemaOptions = {}) {
  return z.strictObject({
    input: JsonValueSchema.refine((v) => v !== undefined, { message: "input is required" }),
    priority: z.int().min(0).max(9).optional().describe("0–9, higher starts first."),
    timeoutSeconds: z
      .int()
      .min(1)
      .max(LIMITS.timeoutSeconds)
      .optional()
      .describe("Per attempt; at most the queue's (which is also the default)."),
    queueTtlSeconds: z
      .int()
      .min(1)
      .max(LIMITS.queueTtlSeconds)
      .optional()
      .describe("The longest the request may wait before it starts; else it EXPIRES."),
    webhook: webhookSchema(options.allowInsecureWebhooks ?? false).optional(),
    metadata: MetadataSchema.optional(),
  });
}

/** The submit body as documented (https webhooks only). */
export const SubmitBodySchema = submitBodySchema().register(apiSchemas, { id: "SubmitBody" });
export type SubmitBodyInput = z.input<typeof SubmitBodySchema>;
/** The submit body after validation, defaults filled in. */
export type SubmitBodyOutput = z.output<ReturnType<typeof submitBodySchema>>;

/**
 * Validates a parsed submit body. zod drops a `__proto__` record key without an issue
 * (it guards against prototype pollution), which would make the stored metadata differ
 * from what the caller sent; this refuses it instead.
 */
export function parseSubmitBody(
  raw: unknown,
  schema: ReturnType<typeof submitBodySchema>,
): z.ZodSafeParseResult<SubmitBodyOutput> {
  if (isObject(raw) && isObject(raw.metadata) && Object.hasOwn(raw.metadata, "__proto__")) {
    return {
      success: false,
      error: new z.ZodError([
        { code: "custom", path: ["metadata", "__proto__"], message: ProtoKeyMessage, input: raw },
      ]) as z.ZodError<SubmitBodyOutput>,
    };
  }
  return schema.safeParse(raw);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The `Idempotency-Key` header. */
export const IdempotencyKeySchema = z
  .string()
  .regex(IDEMPOTENCY_KEY_PATTERN, "must be 1–255 printable ASCII characters")
  .describe("Makes a submit safe to retry: same key and body → the same request.");

export const QueueNameSchema = z
  .string()
  .regex(QUEUE_NAME_PATTERN)
  .describe("A queue named in longrun.config.json.");
export const RequestIdSchema = z.string().regex(REQUEST_ID_PATTERN).describe("A request id.");

const CursorSchema = z
  .string()
  .min(1)
  .max(LIMITS.cursorLength)
  .optional()
  .describe("The `nextCursor` of the previous page.");

/**
 * Query parameters arrive as strings and are converted by zod transforms, which JSON
 * Schema cannot express; each registers here the schema its parsed value follows, and the
 * OpenAPI document shows that.
 */
export const queryParamDocs = z.registry<{
  schema: Record<string, unknown>;
  description: string;
}>();

/** A decimal integer in a query string. */
function intParam(min: number, max: number, fallback: number, description: string) {
  return z
    .string()
    .regex(/^[0-9]{1,7}$/, `must be an integer from ${min} to ${max}`)
    .transform(Number)
    .pipe(z.int().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`))
    .optional()
    .transform((v) => v ?? fallback)
    .register(queryParamDocs, {
      schema: { type: "integer", minimum: min, maximum: max, default: fallback },
      description,
    });
}

const STATUS_ALTERNATIVES = ALL_STATUSES.join("|");

const StatusFilterSchema = z
  .string()
  .transform((s, ctx) => {
    const parts = s.split(",").map((p) => p.trim());
    const bad = parts.filter((p) => !(ALL_STATUSES as readonly string[]).includes(p));
    if (bad.length > 0) {
      ctx.addIssue({
        code: "custom",
        message: `unknown status ${bad.map((b) => JSON.stringify(b)).join(", ")}; one or more of ${ALL_STATUSES.join(", ")}, comma-separated`,
      });
      return z.NEVER;
    }
    return [...new Set(parts)] as RequestStatus[];
  })
  .optional()
  .register(queryParamDocs, {
    schema: {
      type: "string",
      pattern: `^(${STATUS_ALTERNATIVES})(,(${STATUS_ALTERNATIVES}))*$`,
    },
    description: `One status or several, comma-separated: ${ALL_STATUSES.join(", ")}.`,
  });

/** Query of `GET /v1/queues/{queue}/requests`. Unknown parameters are ignored, as is usual. */
export const ListQuerySchema = z.object({
  status: StatusFilterSchema,
  limit: intParam(
    1,
    LIMITS.listLimit,
    LIMITS.listDefault,
    `Items per page, 1–${LIMITS.listLimit}, default ${LIMITS.listDefault}.`,
  ),
  cursor: CursorSchema,
});

/** Query of `GET /v1/requests/{id}/logs`. */
export const LogsQuerySchema = z.object({
  limit: intParam(
    1,
    LIMITS.logsLimit,
    LIMITS.logsDefault,
    `Lines per page, 1–${LIMITS.logsLimit}, default ${LIMITS.logsDefault}.`,
  ),
  cursor: CursorSchema,
});

// ---- responses ----------------------------------------------------------------------

const IsoTime = z.iso.datetime().describe("ISO 8601, UTC, milliseconds.");

export const ProgressSchema = z
  .strictObject({
    current: z.number(),
    total: z.number().nullable(),
    message: z.string().nullable(),
    updatedAt: IsoTime,
  })
  .register(apiSchemas, { id: "Progress" });

export const RequestErrorSchema = z
  .strictObject({
    code: z.enum(Object.values(ErrorCode) as [ErrorCode, ...ErrorCode[]]),
    message: z.string(),
  })
  .register(apiSchemas, { id: "RequestError" });

const requestShape = {
  id: RequestIdSchema,
  queue: QueueNameSchema,
  status: RequestStatusSchema,
  priority: z.int().min(0).max(9),
  input: JsonValueSchema,
  metadata: z.record(z.string(), z.string()),
  createdAt: IsoTime,
  startedAt: IsoTime.nullable(),
  finishedAt: IsoTime.nullable(),
  attempt: z.int().min(0).describe("The current or last attempt; 0 before the first start."),
  maxAttempts: z.int().min(1),
  cancelRequested: z.boolean(),
  position: z
    .int()
    .min(0)
    .nullable()
    .describe("While QUEUED: how many requests of the queue start before it; else null."),
  progress: ProgressSchema.nullable(),
  error: RequestErrorSchema.nullable(),
  waitReason: z
    .enum(["slots_busy", "tenant_limit", "dispatching", "starting", "no_capacity"])
    .nullable()
    .describe(
      "QUEUED or STARTING: why it is not running yet (slots_busy: the queue runs maxRunning; tenant_limit: you run your maxRunningPerTenant; dispatching: a slot is free and it is next; starting: its job is being started; no_capacity: the capacity it needs is busy). Else null.",
    ),
  waitDetail: z
    .string()
    .nullable()
    .describe("no_capacity: which GPUs it waits for, or the backend's reason. Else null."),
  estimatedStartAt: IsoTime.nullable().describe(
    "QUEUED: an estimate from the queue's recent run times, maxRunning and the position; null while the queue has no recent history, and else null.",
  ),
};

/** A request as `GET /v1/requests/{id}` shows it. */
export const RequestSchema = z.strictObject(requestShape).register(apiSchemas, { id: "Request" });
export type RequestJson = z.output<typeof RequestSchema>;

/** A request as a list shows it: without `input`. */
export const RequestSummarySchema = RequestSchema.omit({ input: true }).register(apiSchemas, {
  id: "RequestSummary",
});
export type RequestSummaryJson = z.output<typeof RequestSummarySchema>;

export const RequestListSchema = z
  .strictObject({
    items: z.array(RequestSummarySchema).describe("Newest first."),
    nextCursor: z
      .string()
      .nullable()
      .describe("Pass as `cursor` for the next page; null at the end."),
  })
  .register(apiSchemas, { id: "RequestList" });

export const ResultSchema = z
  .strictObject({
    id: RequestIdSchema,
    output: JsonValueSchema.describe("The job's result.json, or null."),
    artifacts: z.array(
      z.strictObject({
        name: z.string(),
        size: z.int().min(0),
        url: z.string().describe("Plain GET, no header, for at least 15 minutes."),
      }),
    ),
  })
  .register(apiSchemas, { id: "Result" });

export const QueueSchema = z
  .strictObject({
    name: QueueNameSchema,
    maxQueued: z.int(),
    maxRunning: z.int(),
    queued: z.int().min(0),
    running: z.int().min(0).describe("STARTING and RUNNING requests."),
    tenant: z
      .strictObject({
        queued: z.int().min(0),
        running: z.int().min(0).describe("Your STARTING and RUNNING requests."),
        maxQueued: z.int().describe("Your maxQueuedPerTenant (or override) here."),
        maxRunning: z.int().describe("Your maxRunningPerTenant (or override) here."),
      })
      .describe("The caller's own usage of the queue and its limits there."),
  })
  .register(apiSchemas, { id: "Queue" });

export const QueueListSchema = z
  .array(QueueSchema)
  .describe("Every configured queue.")
  .register(apiSchemas, { id: "QueueList" });

export const LogsSchema = z
  .strictObject({
    lines: z.array(z.string()).describe("stdout and stderr of every attempt, oldest first."),
    nextCursor: z.string().describe("Pass as `cursor` to continue where this page stopped."),
  })
  .register(apiSchemas, { id: "Logs" });

export const HealthSchema = z
  .strictObject({ status: z.literal("ok") })
  .register(apiSchemas, { id: "Health" });

export const WebhookSecretSchema = z
  .strictObject({
    secret: z.string().startsWith("whsec_").describe("whsec_<base64 key>"),
  })
  .register(apiSchemas, { id: "WebhookSecret" });

/** Stable `code` values of problem answers (SPEC §2). */
export const PROBLEM_CODES = [
  "invalid_request",
  "unauthorized",
  "not_found",
  "method_not_allowed",
  "conflict",
  "idempotency_conflict",
  "not_ready",
  "no_result",
  "payload_too_large",
  "queue_full",
  "rate_limited",
  "internal",
] as const;
export type ProblemCode = (typeof PROBLEM_CODES)[number];

/** RFC 9457 problem details, plus `code` and the extension members some codes carry. */
export const ProblemSchema = z
  .object({
    type: z.string().describe("https://longrun.dev/problems/<code>"),
    title: z.string(),
    status: z.int().min(400).max(599).describe("The HTTP status code."),
    detail: z.string(),
    code: z.enum(PROBLEM_CODES),
    requestStatus: RequestStatusSchema.optional().describe(
      "not_ready, no_result, conflict: the request's status.",
    ),
    error: RequestErrorSchema.nullable().optional().describe("no_result: why it ended."),
    errors: z
      .array(z.strictObject({ path: z.string(), message: z.string() }))
      .optional()
      .describe("invalid_request: each field that was refused."),
    scope: z
      .enum(["queue", "tenant"])
      .optional()
      .describe(
        "queue_full: whether the queue holds its maxQueued QUEUED requests, or the caller its maxQueuedPerTenant.",
      ),
  })
  .register(apiSchemas, { id: "Problem" });
export type ProblemJson = z.output<typeof ProblemSchema>;
