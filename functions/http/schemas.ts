/**
 * The zod schemas of the HTTP API: they validate what callers send and, through
 * `z.toJSONSchema`, are the schemas of the OpenAPI document (functions/http/openapi.ts), so
 * the document cannot drift from what the API enforces.
 */
import { z } from "zod";
import { QUEUE_NAME_PATTERN } from "../config/schema.ts";
import { ALL_STATUSES, ErrorCode, type RequestStatus, WEBHOOK_EVENTS } from "../core/request.ts";
import {
  FILE_NAME_PATTERN,
  isFileName,
  MAX_FILES,
  UPLOAD_ID_PATTERN,
  UploadStatus,
} from "../core/upload.ts";

/** Request ids are `req_` + a ULID (Crockford base32, 26 characters). */
export const REQUEST_ID_PATTERN = /^req_[0-9A-HJKMNP-TV-Z]{26}$/;
export { UPLOAD_ID_PATTERN };
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
  files: MAX_FILES,
  filenameLength: 255,
  /** How far back `GET /v1/queues/{queue}/stats` looks, at most (minutes). */
  statsMinutes: 60,
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

export const UploadIdSchema = z
  .string()
  .regex(UPLOAD_ID_PATTERN, "must be an upload id (upl_…)")
  .describe("An upload id, from POST /v1/uploads.");

const FileNameSchema = z
  .string()
  .regex(FILE_NAME_PATTERN, "file names are 1–128 of A-Z a-z 0-9 . _ -")
  .refine(isFileName, { message: 'a file name cannot be "." or ".."' });

const FilesSchema = z
  .record(FileNameSchema, UploadIdSchema)
  .refine((m) => Object.keys(m).length <= MAX_FILES, {
    message: `at most ${MAX_FILES} files are allowed`,
  })
  .meta({ maxProperties: MAX_FILES })
  .describe(
    `File name → READY upload id, at most ${MAX_FILES}; the job finds each as a read-only file in LONGRUN_INPUT_DIR.`,
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
    files: FilesSchema.optional(),
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
  if (isObject(raw) && isObject(raw.files) && Object.hasOwn(raw.files, "__proto__")) {
    return {
      success: false,
      error: new z.ZodError([
        {
          code: "custom",
          path: ["files", "__proto__"],
          message: '"__proto__" is not allowed as a file name',
          input: raw,
        },
      ]) as z.ZodError<SubmitBodyOutput>,
    };
  }
  return schema.safeParse(raw);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Body of `POST /v1/requests/{id}/retry` (optional: no body means the defaults). */
export const RetryBodySchema = z
  .strictObject({
    fromCheckpoint: z
      .boolean()
      .optional()
      .describe("Start from the old request's last checkpoint (default true); false starts clean."),
  })
  .register(apiSchemas, { id: "RetryBody" });

/** Body of `POST /v1/uploads`. */
export const CreateUploadBodySchema = z
  .strictObject({
    filename: z
      .string()
      .min(1)
      .max(LIMITS.filenameLength)
      .refine((s) => !/\p{Cc}/u.test(s), { message: "must not hold control characters" })
      .describe("A label for people; the job sees the file under the name a submit gives it."),
    size: z
      .int()
      .min(0)
      .max(Number.MAX_SAFE_INTEGER)
      .describe("The exact byte count that will be PUT; at most LONGRUN_MAX_UPLOAD_BYTES."),
    sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/, "must be 64 lower-case hex digits")
      .optional()
      .describe("SHA-256 of the bytes (hex); a PUT of other bytes is refused."),
  })
  .register(apiSchemas, { id: "CreateUploadBody" });

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

/** Query of `GET /v1/queues/{queue}/stats`. */
export const StatsQuerySchema = z.object({
  minutes: intParam(
    1,
    LIMITS.statsMinutes,
    LIMITS.statsMinutes,
    `How far back, 1–${LIMITS.statsMinutes} minutes, default ${LIMITS.statsMinutes}.`,
  ),
});

/** A file name of the dashboard's static files. */
export const AssetNameSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9.-]{0,63}$/)
  .describe("A file of the dashboard.");

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
    .describe(
      "While QUEUED: how many requests of the queue start before it under the priority and fair-share rules, assuming nothing new arrives and the running requests keep their slots (a tenant at its maxRunningPerTenant may start later than this says); else null.",
    ),
  progress: ProgressSchema.nullable(),
  error: RequestErrorSchema.nullable(),
  files: z
    .record(z.string(), z.strictObject({ size: z.int().min(0) }))
    .describe("The request's input files (its own copies) by name, with their sizes."),
  retryOf: RequestIdSchema.nullable().describe("The request this one retries, else null."),
  waitReason: z
    .enum(["slots_busy", "tenant_limit", "dispatching", "starting", "no_capacity"])
    .nullable()
    .describe(
      "QUEUED or STARTING: why it is not running yet (slots_busy: the queue runs maxRunning; tenant_limit: you run your maxRunningPerTenant; dispatching: a slot is free and it is next; starting: its job is being started; no_capacity: the capacity it needs is busy: on the server the GPUs it needs are held by other jobs, on AWS its Batch job has waited more than 2 minutes in RUNNABLE for an instance). Else null.",
    ),
  waitDetail: z
    .string()
    .nullable()
    .describe(
      "no_capacity: on the server, which GPUs it needs and which are busy; on AWS, since when its job has waited for an instance and, when Batch gives one, Batch's status reason (e.g. `waiting for an instance since 2026-11-26T10:00:00.000Z: CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - …`). Else null.",
    ),
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

export const UploadSchema = z
  .strictObject({
    id: UploadIdSchema,
    filename: z.string(),
    size: z.int().min(0),
    status: z
      .enum([UploadStatus.PENDING, UploadStatus.READY])
      .describe("READY once exactly `size` bytes were PUT."),
    createdAt: IsoTime,
    expiresAt: IsoTime.describe("24 hours after creation: the upload is deleted then."),
  })
  .register(apiSchemas, { id: "Upload" });
export type UploadJson = z.output<typeof UploadSchema>;

export const UploadCreatedSchema = z
  .strictObject({
    id: UploadIdSchema,
    method: z.literal("PUT"),
    url: z.string().describe("PUT exactly `size` bytes here, with `headers` and no token."),
    headers: z.record(z.string(), z.string()).describe("Headers the PUT must carry."),
    expiresAt: IsoTime.describe("When the URL stops working (at least 15 minutes away)."),
  })
  .register(apiSchemas, { id: "UploadCreated" });

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

export const QueueStatsSchema = z
  .strictObject({
    queue: QueueNameSchema,
    from: IsoTime.describe("Start of the window the series cover."),
    samples: z
      .array(
        z.strictObject({
          at: IsoTime,
          queued: z.int().min(0),
          running: z.int().min(0).describe("STARTING and RUNNING requests."),
        }),
      )
      .describe(
        "The queue's counts as this server sampled them, oldest first (all tenants, as GET /v1/queues/{queue} shows them).",
      ),
    waits: z
      .array(z.strictObject({ at: IsoTime, seconds: z.number().min(0) }))
      .describe(
        "The caller's own requests that first ran in the window: when, and how long each waited since its submit; oldest first.",
      ),
  })
  .register(apiSchemas, { id: "QueueStats" });
export type QueueStatsJson = z.output<typeof QueueStatsSchema>;

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
