/**
 * The webhooks handler: consumes the standard webhooks queue and tries each delivery once.
 *
 * - A try signs the payload with the tenant's secret (the delivery's own `webhook-id`, a
 *   fresh `webhook-timestamp`) and POSTs it through the SSRF-safe deliverer.
 * - A retryable failure re-sends the message with `attempt + 1` and a message timer of the
 *   schedule's delay. SQS timers stop at 900 s: a longer delay is sent with 900 s and
 *   `notBefore` (epoch ms) in the body, and a message received before its `notBefore` is
 *   re-sent with the remaining delay (again at most 900 s) without being tried — a 24 h wait
 *   is 96 hops of 15 minutes, each one cheap receive.
 * - After the schedule's last try (or a failure that retrying cannot fix) the message is
 *   re-sent once more marked `dead`; the handler fails such a record every time it arrives,
 *   so the queue moves it to its DLQ after `WEBHOOKS_QUEUE.maxReceiveCount` receives, where an
 *   operator finds the delivery with its last error (and the DLQ alarm fires).
 * - Any other error (secret lookup, the re-send) fails the record; SQS receives it again
 *   after the visibility timeout, so nothing is lost (at least once).
 */
import { BatchProcessor, EventType, processPartialResponse } from "@aws-lambda-powertools/batch";
import type { SQSClient } from "@aws-sdk/client-sqs";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import {
  DynamoWebhookSecrets,
  MAX_SQS_DELAY_SECONDS,
  parseWebhookMessage,
  sendWebhookMessage,
  type WebhookMessage,
} from "../adapters/aws/sqs-webhooks.ts";
import { AWS_ENV, ENV } from "../config/env.ts";
import { createDeliverer, type Deliver } from "../webhooks/deliver.ts";
import type { WebhookSecrets } from "../webhooks/outbox.ts";
import { backoffSchedule, type RetrySchedule } from "../webhooks/schedule.ts";
import { signatureHeaders } from "../webhooks/signing.ts";
import { lambdaClients, lambdaFigures, lambdaResources, logger } from "./context.ts";

/** A message due within this long is tried now rather than delayed again. */
const DUE_SLACK_MS = 1000;

export interface WebhooksHandlerOptions {
  secrets: WebhookSecrets;
  deliver: Deliver;
  sqs: SQSClient;
  /** The webhooks queue: failed deliveries are re-sent to it. */
  queueUrl: string;
  /** Default {@link backoffSchedule}. */
  schedule?: RetrySchedule;
  clock: { now(): number };
  /** Jitter source of the schedule; default Math.random. */
  random?: () => number;
  /** Told of each try's outcome (metrics); must not throw. */
  onTried?: (ok: boolean) => void;
}

/** The handler over given ports (tests pass an emulator's clients and a test clock). */
export function createWebhooksHandler(
  options: WebhooksHandlerOptions,
): (event: SQSEvent, context: Context) => Promise<SQSBatchResponse> {
  const schedule = options.schedule ?? backoffSchedule;
  const resend = (m: WebhookMessage, delayMs: number) =>
    sendWebhookMessage(options.sqs, options.queueUrl, m, delayMs / 1000);

  const record = async (r: SQSRecord): Promise<void> => {
    const m = parseWebhookMessage(r.body);
    if (!m) {
      logger.warn("dropping an unusable webhook message", { messageId: r.messageId });
      return;
    }
    const where = { deliveryId: m.id, requestId: m.requestId, event: m.event };
    if (m.dead) {
      // Failing the record leaves it to the redrive policy: DLQ after maxReceiveCount.
      throw new Error(`webhook ${m.id} given up after ${m.attempt} tries: ${m.lastError ?? "?"}`);
    }
    const now = options.clock.now();
    if (m.notBefore !== undefined && m.notBefore - now > DUE_SLACK_MS) {
      await resend(m, Math.min(m.notBefore - now, MAX_SQS_DELAY_SECONDS * 1000));
      return;
    }
    const secret = await options.secrets.secretFor(m.tenant);
    const result = await options.deliver({
      url: m.url,
      body: m.payload,
      headers: { ...signatureHeaders(secret, m.id, Math.floor(now / 1000), m.payload) },
    });
    options.onTried?.(result.ok);
    if (result.ok) {
      logger.info("webhook delivered", { ...where, attempt: m.attempt + 1, status: result.status });
      return;
    }
    const error = result.error ?? `HTTP ${result.status ?? "?"}`;
    const tries = m.attempt + 1;
    const after = options.clock.now();
    const next = result.retryable ? schedule.nextAttemptAt(tries, after, options.random) : null;
    const { notBefore: _previous, ...rest } = m;
    if (next === null) {
      logger.error("webhook given up", { ...where, tries, error });
      await resend({ ...rest, attempt: tries, lastError: error, dead: true }, 0);
      return;
    }
    const delayMs = Math.max(0, next - after);
    const long = delayMs > MAX_SQS_DELAY_SECONDS * 1000;
    logger.warn("webhook failed, retrying", { ...where, tries, error, delayMs });
    await resend(
      { ...rest, attempt: tries, lastError: error, ...(long ? { notBefore: next } : {}) },
      Math.min(delayMs, MAX_SQS_DELAY_SECONDS * 1000),
    );
  };

  return async (event, context) => {
    const processor = new BatchProcessor(EventType.SQS);
    return processPartialResponse(event, record, processor, { context });
  };
}

let cached: ReturnType<typeof createWebhooksHandler> | undefined;

export const handler = (event: SQSEvent, context: Context): Promise<SQSBatchResponse> => {
  if (!cached) {
    const queueUrl = process.env[AWS_ENV.webhooksQueueUrl];
    if (!queueUrl) throw new Error(`${AWS_ENV.webhooksQueueUrl} must be set`);
    const clients = lambdaClients();
    cached = createWebhooksHandler({
      secrets: new DynamoWebhookSecrets(clients.dynamo, lambdaResources().tableName),
      deliver: createDeliverer({ allowPrivate: process.env[ENV.webhookAllowPrivate] === "1" }),
      sqs: clients.sqs,
      queueUrl,
      clock: { now: () => Date.now() },
      onTried: (ok) => lambdaFigures.webhookTried(ok),
    });
  }
  return cached(event, context);
};
