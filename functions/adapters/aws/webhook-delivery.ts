/**
 * One webhooks-queue message, handled: the step the webhooks Lambda and the server's queue
 * poller (`LONGRUN_BACKEND=aws`) both run.
 *
 * - A message that carries an `order` first claims its request's order record
 *   (functions/webhooks/order.ts): a copy of a delivered delivery, one older than what was
 *   sent, or a progress held back by a `started` still being retried is dropped; while another
 *   try of the same request is in flight the message comes back after {@link BUSY_DELAY_MS}.
 * - A try ({@link tryDelivery}) signs, sends and decides what is next. A retryable failure
 *   re-sends the message with `attempt + 1` and a message timer of the schedule's delay. SQS
 *   timers stop at 900 s: a longer delay is sent with 900 s and `notBefore` (epoch ms) in
 *   the body, and a message received before its `notBefore` is re-sent with the remaining
 *   delay (again at most 900 s) without being tried — a 24 h wait is 96 hops of 15 minutes.
 * - After the schedule's last try (or a failure that retrying cannot fix) the message is
 *   re-sent once more marked `dead`; such a message fails every time it arrives, so the queue
 *   moves it to its DLQ after `WEBHOOKS_QUEUE.maxReceiveCount` receives, where an operator
 *   finds the delivery with its last error (and the DLQ alarm fires).
 * - Any other error fails the message; SQS hands it out again after the visibility timeout
 *   (at least once).
 */
import type { SQSClient } from "@aws-sdk/client-sqs";
import type { Deliver } from "../../webhooks/deliver.ts";
import type { DeliveryOrder, OrderedDelivery } from "../../webhooks/order.ts";
import type { WebhookSecrets } from "../../webhooks/outbox.ts";
import type { RetrySchedule } from "../../webhooks/schedule.ts";
import { tryDelivery } from "../../webhooks/worker.ts";
import {
  MAX_SQS_DELAY_SECONDS,
  parseWebhookMessage,
  sendWebhookMessage,
  type WebhookMessage,
} from "./sqs-webhooks.ts";

/** A message due within this long is tried now rather than delayed again. */
const DUE_SLACK_MS = 1000;
/**
 * How long a claim holds a request's order record by default: longer than a try can take
 * (at most 10 s for the name lookup and 10 s for the answer), and longer than the webhooks
 * Lambda may run (30 s), so a try is never overtaken while it is in flight.
 */
export const ORDER_LEASE_MS = 60_000;
/** When a message whose request has a try in flight comes back. */
export const BUSY_DELAY_MS = 5_000;

/** Where the step reports; the Lambda passes its structured logger. */
export interface DeliveryLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export interface DeliveryStepOptions {
  secrets: Pick<WebhookSecrets, "signingSecretsFor">;
  deliver: Deliver;
  sqs: SQSClient;
  /** The webhooks queue: failed and busy deliveries are re-sent to it. */
  queueUrl: string;
  /** The per-request order records. */
  order: DeliveryOrder;
  /** Default the schedule of functions/webhooks/schedule.ts. */
  schedule?: RetrySchedule;
  clock: { now(): number };
  /** Jitter source of the schedule; default Math.random. */
  random?: () => number;
  log: DeliveryLog;
  /**
   * How long a claim holds the order record (default {@link ORDER_LEASE_MS}). A try that
   * dies with its process keeps its request's later tries waiting this long.
   */
  leaseMs?: number;
  /** Told of each try's outcome (metrics); must not throw. */
  onTried?: (ok: boolean) => void;
}

/**
 * Builds the step for one message body (see the module comment).
 * @throws to leave the message on the queue (a dead message, or a failure of the step).
 */
export function createDeliveryStep(options: DeliveryStepOptions): (body: string) => Promise<void> {
  const { log } = options;
  const resend = (m: WebhookMessage, delayMs: number) =>
    sendWebhookMessage(options.sqs, options.queueUrl, m, delayMs / 1000);

  return async (body) => {
    const m = parseWebhookMessage(body);
    if (!m) {
      log.warn("dropping an unusable webhook message");
      return;
    }
    const where = { deliveryId: m.id, requestId: m.requestId, event: m.event };
    if (m.dead) {
      // Failing the message leaves it to the redrive policy: DLQ after maxReceiveCount.
      throw new Error(`webhook ${m.id} given up after ${m.attempt} tries: ${m.lastError ?? "?"}`);
    }
    const now = options.clock.now();
    if (m.notBefore !== undefined && m.notBefore - now > DUE_SLACK_MS) {
      await resend(m, Math.min(m.notBefore - now, MAX_SQS_DELAY_SECONDS * 1000));
      return;
    }
    const ordered: OrderedDelivery | null =
      m.order === undefined
        ? null
        : { id: m.id, requestId: m.requestId, event: m.event, order: m.order };
    let token: string | null = null;
    if (ordered) {
      const claim = await options.order.claim(ordered, now, options.leaseMs ?? ORDER_LEASE_MS);
      if (claim.verdict === "busy") {
        await resend(m, BUSY_DELAY_MS);
        return;
      }
      if (claim.verdict !== "claim") {
        log.info(`webhook dropped: ${claim.verdict}`, where);
        return;
      }
      token = claim.token;
    }
    const release = async (done: boolean) => {
      if (ordered && token !== null) await options.order.release(ordered, token, done);
    };
    let outcome: Awaited<ReturnType<typeof tryDelivery>>;
    try {
      outcome = await tryDelivery({ ...m, attempts: m.attempt }, options);
    } catch (error) {
      await release(false);
      throw error;
    }
    options.onTried?.(outcome.kind === "delivered");
    const tries = m.attempt + 1;
    const { notBefore: _previous, ...rest } = m;
    if (outcome.kind === "delivered") {
      log.info("webhook delivered", { ...where, attempt: tries, status: outcome.status });
      await release(true);
      return;
    }
    if (outcome.kind === "dead") {
      log.error("webhook given up", { ...where, tries, error: outcome.error });
      await resend({ ...rest, attempt: tries, lastError: outcome.error, dead: true }, 0);
      await release(true);
      return;
    }
    const delayMs = Math.max(0, outcome.nextAt - outcome.at);
    const long = delayMs > MAX_SQS_DELAY_SECONDS * 1000;
    log.warn("webhook failed, retrying", { ...where, tries, error: outcome.error, delayMs });
    await resend(
      {
        ...rest,
        attempt: tries,
        lastError: outcome.error,
        ...(long ? { notBefore: outcome.nextAt } : {}),
      },
      Math.min(delayMs, MAX_SQS_DELAY_SECONDS * 1000),
    );
    await release(false);
  };
}

/** One received message of a batch: its id (to report it failed) and its body. */
export interface ReceivedDelivery {
  id: string;
  body: string;
}

/**
 * Runs the step on a batch of received messages: messages of different requests at once,
 * those of one request one after another in their order (so a batch holding a request's
 * `started` and `completed` sends both, in that order, instead of one finding the other's try
 * in flight).
 * @returns the ids of the messages whose step failed (left on the queue).
 */
export async function runDeliveryBatch(
  messages: readonly ReceivedDelivery[],
  step: (body: string) => Promise<void>,
  log: (message: string, fields?: Record<string, unknown>) => void,
): Promise<string[]> {
  const byRequest = new Map<string, { order: number; m: ReceivedDelivery }[]>();
  messages.forEach((m, n) => {
    const parsed = parseWebhookMessage(m.body);
    // Unparsable ones go alone (the step drops them); unordered ones keep their place.
    const key = parsed ? parsed.requestId : `#${n}`;
    const group = byRequest.get(key) ?? [];
    group.push({ order: parsed?.order ?? Number.MAX_SAFE_INTEGER, m });
    byRequest.set(key, group);
  });
  const failed: string[] = [];
  await Promise.all(
    [...byRequest.values()].map(async (group) => {
      group.sort((a, b) => a.order - b.order);
      for (const { m } of group) {
        try {
          await step(m.body);
        } catch (error) {
          log("webhook message failed", { messageId: m.id, error: String(error) });
          failed.push(m.id);
        }
      }
    }),
  );
  return failed;
}
