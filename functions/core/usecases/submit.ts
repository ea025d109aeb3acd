import { tenantLimits } from "../../config/schema.ts";
import { canonicalJson, sha256Hex } from "../canonical.ts";
import { InvalidRequestError } from "../errors.ts";
import type { SubmitOutcome } from "../ports.ts";
import { type RequestRecord, RequestStatus, type WebhookSpec } from "../request.ts";
import { type CoreDeps, queueOrThrow } from "./deps.ts";

/** The submit body after schema validation (functions/http/schemas.ts). */
export interface SubmitBody {
  input: unknown;
  priority?: number | undefined;
  timeoutSeconds?: number | undefined;
  queueTtlSeconds?: number | undefined;
  webhook?: WebhookSpec | undefined;
  metadata?: Record<string, string> | undefined;
}

export interface SubmitCommand {
  tenant: string;
  queue: string;
  body: SubmitBody;
  /** The parsed JSON body as received, hashed for idempotency comparisons. */
  rawBody: unknown;
  idempotencyKey?: string | undefined;
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
  deps: Pick<CoreDeps, "store" | "trigger" | "clock" | "ids" | "queues" | "webhookGuard">,
): Promise<SubmitOutcome> {
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
    cancelRequested: false,
    timeoutSeconds: body.timeoutSeconds ?? queue.timeoutSeconds,
    queueTtlSeconds,
    expiresAt: now + queueTtlSeconds * 1000,
    progress: null,
    error: null,
    jobRef: null,
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
  const limits = tenantLimits(queue, cmd.tenant);
  const outcome = await deps.store.submit(request, idempotency, {
    maxQueued: queue.maxQueued,
    retryAfterSeconds: QUEUE_FULL_RETRY_AFTER_SECONDS,
    maxQueuedPerTenant: limits.maxQueued,
    rateLimit: limits.rateLimit,
  });
  // A replay wakes the dispatcher too: if the first submit crashed between its write and
  // its wake-up, the retry by the caller is what gets the request going.
  await deps.trigger.wake(queue.name);
  return outcome;
}
