import { tenantLimits } from "../../config/schema.ts";
import { canonicalJson, sha256Hex } from "../canonical.ts";
import { ConflictError, InvalidRequestError } from "../errors.ts";
import type { RateLimitState, SubmitOutcome } from "../ports.ts";
import {
  type RequestFile,
  type RequestRecord,
  RequestStatus,
  type WebhookSpec,
} from "../request.ts";
import { type CoreDeps, getOwned, queueOrThrow } from "./deps.ts";
import { type RequestView, viewOf } from "./queries.ts";
import { attachUploads, type FilesDeps } from "./uploads.ts";

/** The submit body after schema validation (functions/http/schemas.ts). */
export interface SubmitBody {
  input: unknown;
  priority?: number | undefined;
  timeoutSeconds?: number | undefined;
  queueTtlSeconds?: number | undefined;
  webhook?: WebhookSpec | undefined;
  metadata?: Record<string, string> | undefined;
  /** File name → upload id (SPEC §2 `files`). */
  files?: Record<string, string> | undefined;
}

export interface SubmitCommand {
  tenant: string;
  queue: string;
  body: SubmitBody;
  /** The parsed JSON body as received, hashed for idempotency comparisons. */
  rawBody: unknown;
  idempotencyKey?: string | undefined;
  /**
   * Set by {@link retryRequest}: the request being retried. Its files (its own copies, not
   * the uploads, which may have expired) and, with `fromCheckpoint`, its last checkpoint
   * are copied to the new request; `body.files` is then ignored.
   */
  retry?: { of: RequestRecord; fromCheckpoint: boolean } | undefined;
}

/** What a submit did (created or replayed) and the request with its position. */
export interface SubmitResult extends RequestView {
  kind: SubmitOutcome["kind"];
  /** Where the caller's bucket stands, when the queue has a rate limit. */
  rateLimit?: RateLimitState;
}

/** Seconds a caller is told to wait after `queue_full`. */
export const QUEUE_FULL_RETRY_AFTER_SECONDS = 10;

/**
 * Accepts a request into a queue: one atomic write (idempotency key, request, the queue's
 * and the tenant's queued counts under their limits, a token of the tenant's rate limit),
 * then a wake-up of the queue's dispatcher.
 */
export async function submitRequest(
  cmd: SubmitCommand,
  deps: Pick<
    CoreDeps,
    "store" | "trigger" | "clock" | "ids" | "queues" | "webhookGuard" | "observe"
  > &
    FilesDeps,
): Promise<SubmitResult> {
  const queue = queueOrThrow(deps.queues, cmd.queue);
  const { body } = cmd;
  if (body.timeoutSeconds !== undefined && body.timeoutSeconds > queue.timeoutSeconds) {
    throw new InvalidRequestError(
      `timeoutSeconds must be at most the queue's ${queue.timeoutSeconds}`,
      "timeoutSeconds",
    );
  }
  if (body.webhook && deps.webhookGuard) await deps.webhookGuard(body.webhook.url);

  const now = deps.clock.now();
  const queueTtlSeconds = body.queueTtlSeconds ?? queue.queueTtlSeconds;
  const request: RequestRecord = {
    id: deps.ids.requestId(),
    tenant: cmd.tenant,
    queue: queue.name,
    status: RequestStatus.QUEUED,
    priority: body.priority ?? queue.defaultPriority,
    input: body.input,
    metadata: body.metadata ?? {},
    webhook: body.webhook ?? null,
    idempotencyKey: cmd.idempotencyKey ?? null,
    createdAt: now,
    startedAt: null,
    finishedAt: null,
    updatedAt: now,
    attempt: 0,
    maxAttempts: queue.maxAttempts,
    platformRetries: 0,
    cancelRequested: false,
    timeoutSeconds: body.timeoutSeconds ?? queue.timeoutSeconds,
    queueTtlSeconds,
    expiresAt: now + queueTtlSeconds * 1000,
    progress: null,
    error: null,
    jobRef: null,
    ...(cmd.retry ? { retryOf: cmd.retry.of.id } : {}),
  };
  const idempotency =
    cmd.idempotencyKey === undefined
      ? null
      : {
          key: cmd.idempotencyKey,
          // Keys are scoped to the tenant; the queue is part of what must match, so a key
          // reused on another queue is a conflict rather than a silent second request.
          bodyHash: sha256Hex(`${queue.name}\n${canonicalJson(cmd.rawBody)}`),
        };
  // The request's files and starting checkpoint are its own copies, made before the request
  // is written: once it exists, nothing it names can be removed by an upload's expiry, and
  // its first attempt cannot start before its checkpoint is in place.
  const limits = tenantLimits(queue, cmd.tenant);
  const undo = await prepareRequestData(cmd, request, deps);
  let outcome: SubmitOutcome;
  try {
    outcome = await deps.store.submit(request, idempotency, {
      maxQueued: queue.maxQueued,
      retryAfterSeconds: QUEUE_FULL_RETRY_AFTER_SECONDS,
      maxQueuedPerTenant: limits.maxQueued,
      rateLimit: limits.rateLimit,
    });
  } catch (error) {
    await undo();
    throw error;
  }
  // A replay answers with the earlier request, which has copies of its own.
  if (outcome.kind === "replayed") await undo();
  if (outcome.kind === "created") deps.observe?.({ type: "submitted", request: outcome.request });
  // A replay wakes the dispatcher too: if the first submit crashed between its write and
  // its wake-up, the retry by the caller is what gets the request going.
  await deps.trigger.wake(queue.name);
  const known = outcome.kind === "created" ? outcome.position : undefined;
  const usage = outcome.kind === "created" ? outcome.usage : undefined;
  return {
    kind: outcome.kind,
    ...(await viewOf(outcome.request, deps, known, usage)),
    ...(outcome.rateLimit ? { rateLimit: outcome.rateLimit } : {}),
  };
}

/**
 * Copies the files (and, for a retry from a checkpoint, the checkpoint) the new request
 * needs, filling `request.files`; returns what deletes them again if the request is not
 * written after all.
 */
async function prepareRequestData(
  cmd: SubmitCommand,
  request: RequestRecord,
  deps: Pick<CoreDeps, "clock"> & FilesDeps,
): Promise<() => Promise<void>> {
  const { files } = deps;
  const nothing = async () => {};
  if (cmd.retry) {
    const names = Object.keys(cmd.retry.of.files ?? {});
    const wantCheckpoint = cmd.retry.fromCheckpoint;
    if (!files) {
      if (names.length > 0) throw new Error("a request with files needs a FileStore to retry");
      return nothing;
    }
    const undo = async () => {
      await Promise.all([
        files.deleteRequestFiles(request.id),
        files.deleteCheckpoint(request.id),
      ]).catch(() => {});
    };
    try {
      if (names.length > 0) await files.copyRequestFiles(cmd.retry.of.id, request.id, names);
      if (wantCheckpoint) await files.copyCheckpoint(cmd.retry.of.id, request.id);
    } catch (error) {
      await undo();
      throw error;
    }
    if (names.length > 0) {
      request.files = Object.fromEntries(
        names.map((n): [string, RequestFile] => [n, { size: cmd.retry?.of.files?.[n]?.size ?? 0 }]),
      );
    }
    return undo;
  }
  const named = cmd.body.files ?? {};
  if (Object.keys(named).length === 0) return nothing;
  request.files = await attachUploads(request, named, deps);
  return async () => {
    await files?.deleteRequestFiles(request.id).catch(() => {});
  };
}

/** Statuses a request may be retried from (SPEC §2 retry). */
export const RETRYABLE_STATUSES: readonly RequestStatus[] = [
  RequestStatus.FAILED,
  RequestStatus.CANCELLED,
  RequestStatus.EXPIRED,
];

export interface RetryCommand {
  tenant: string;
  /** The request to retry. */
  id: string;
  /** Start from the old request's last checkpoint (SPEC default true). */
  fromCheckpoint: boolean;
  idempotencyKey?: string | undefined;
}

/**
 * Submits a FAILED, CANCELLED or EXPIRED request again as a new request of the same queue
 * (SPEC §2 retry): the same input, files, priority, metadata and webhook, and its per
 * attempt timeout and queue TTL (capped at the queue's current limit). It goes through
 * {@link submitRequest}, so idempotency, queue and tenant limits and rate limits apply
 * exactly as on a submit. The old request is not changed.
 * @throws NotFoundError another tenant's request, or none.
 * @throws ConflictError the request SUCCEEDED or has not ended.
 */
export async function retryRequest(
  cmd: RetryCommand,
  deps: Pick<CoreDeps, "store" | "trigger" | "clock" | "ids" | "queues" | "webhookGuard"> &
    FilesDeps,
): Promise<SubmitResult> {
  const old = await getOwned(deps.store, cmd.tenant, cmd.id);
  if (!RETRYABLE_STATUSES.includes(old.status)) {
    throw new ConflictError(
      `request is ${old.status}; only a FAILED, CANCELLED or EXPIRED request can be retried`,
      old.status,
    );
  }
  const queue = queueOrThrow(deps.queues, old.queue);
  return submitRequest(
    {
      tenant: cmd.tenant,
      queue: old.queue,
      body: {
        input: old.input,
        priority: old.priority,
        metadata: old.metadata,
        webhook: old.webhook ?? undefined,
        timeoutSeconds: Math.min(old.timeoutSeconds, queue.timeoutSeconds),
        queueTtlSeconds: old.queueTtlSeconds,
      },
      // What an Idempotency-Key is compared on: which request, and how. A submit body always
      // holds `input`, so a key reused between a submit and a retry is a conflict.
      rawBody: { retryOf: old.id, fromCheckpoint: cmd.fromCheckpoint },
      idempotencyKey: cmd.idempotencyKey,
      retry: { of: old, fromCheckpoint: cmd.fromCheckpoint },
    },
    deps,
  );
}
