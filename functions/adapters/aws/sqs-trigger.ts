/**
 * Dispatcher wake-ups over the SQS FIFO dispatch queue.
 *
 * ## Why wake-ups collapse without getting lost
 *
 * Every wake-up of queue `q` is sent with `MessageGroupId = q` (SQS hands a group's messages
 * out one at a time, so at most one dispatcher drains a queue at once) and
 * `MessageDeduplicationId = q#<window>:<bucket>`, where `bucket = floor(sentAt / window)`
 * (window 1 s by default). SQS drops a message whose deduplication id it accepted within the
 * last 5 minutes, so a burst of wake-ups inside one bucket becomes one message.
 *
 * A dropped wake-up W is only safe if some dispatcher run looks at the queue after the
 * state change that made W send. W was dropped because a message M with the same id was
 * accepted first; M's body carries `settleAt`, the end of its bucket plus a clock-skew
 * margin. W's sender computed the same bucket, so W was sent — and the state change behind
 * it was written — before the bucket ended. {@link dispatchUntilSettled} and
 * {@link dispatchWhenSettled} make the dispatcher that consumes M run a drain pass that
 * *starts* at or after `settleAt`; that pass reads the queue's state after W's write and
 * starts W's work (or, when no slot is free, the request that frees one sends its own
 * wake-up, covered by the same argument). A wake-up in a later bucket has another id and is
 * never dropped because of M.
 *
 * Cost: a message consumed after its `settleAt` (a backlog, a redelivery) needs one pass.
 * For a fresh one, {@link dispatchUntilSettled} runs a pass at once and a settling pass
 * after at most one window plus the margin (two reads of the queue's state);
 * {@link dispatchWhenSettled}, which the dispatcher Lambda uses, waits that long and runs
 * one pass: the first start after a quiet spell comes up to 1.25 s later, and each fresh
 * message costs one pass instead of two (docs/design.md, "Wake-ups").
 */
import { SendMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { z } from "zod";
import { QUEUE_NAME_PATTERN } from "../../config/schema.ts";
import type { Clock, DispatchTrigger } from "../../core/ports.ts";

/** Default deduplication bucket length: bursts within one second collapse into one message. */
export const DEFAULT_DEDUP_WINDOW_MS = 1000;

/**
 * Allowance for the clocks of the sender and the dispatcher disagreeing (Lambda hosts are
 * NTP-synchronised to well under this).
 */
export const CLOCK_SKEW_MARGIN_MS = 250;

const systemClock: Clock = { now: () => Date.now() };

/** A parsed dispatch-queue message. */
export interface DispatchMessage {
  /** The longrun queue to dispatch. */
  queue: string;
  /**
   * Epoch ms after which a drain pass is guaranteed to see every state change whose
   * wake-up was deduplicated against this message (0: no second pass needed).
   */
  settleAt: number;
}

export interface SqsDispatchTriggerOptions {
  client: SQSClient;
  /** URL of the FIFO dispatch queue (definitions.ts DISPATCH_QUEUE). */
  queueUrl: string;
  clock?: Clock;
  /** Deduplication bucket length in ms (default {@link DEFAULT_DEDUP_WINDOW_MS}). */
  windowMs?: number;
}

/** Wakes a queue's dispatcher by a message on the FIFO dispatch queue; see the module doc. */
export class SqsDispatchTrigger implements DispatchTrigger {
  readonly #client: SQSClient;
  readonly #queueUrl: string;
  readonly #clock: Clock;
  readonly #windowMs: number;

  constructor(opts: SqsDispatchTriggerOptions) {
    const windowMs = opts.windowMs ?? DEFAULT_DEDUP_WINDOW_MS;
    if (!Number.isInteger(windowMs) || windowMs < 1) {
      throw new RangeError(`windowMs must be a positive integer, got ${windowMs}`);
    }
    this.#client = opts.client;
    this.#queueUrl = opts.queueUrl;
    this.#clock = opts.clock ?? systemClock;
    this.#windowMs = windowMs;
  }

  async wake(queue: string): Promise<void> {
    const { body, groupId, deduplicationId } = dispatchMessageFor(
      queue,
      this.#clock.now(),
      this.#windowMs,
    );
    await this.#client.send(
      new SendMessageCommand({
        QueueUrl: this.#queueUrl,
        MessageBody: body,
        MessageGroupId: groupId,
        MessageDeduplicationId: deduplicationId,
      }),
    );
  }
}

/**
 * The SQS message that wakes `queue` at `now`: body, group id and deduplication id. Exposed
 * so that the deduplication rule can be checked without a queue.
 */
export function dispatchMessageFor(
  queue: string,
  now: number,
  windowMs = DEFAULT_DEDUP_WINDOW_MS,
): { body: string; groupId: string; deduplicationId: string } {
  const bucket = Math.floor(now / windowMs);
  const settleAt = (bucket + 1) * windowMs + CLOCK_SKEW_MARGIN_MS;
  // The window is part of the id: senders configured with different windows must never
  // share an id, or a drop could outlive the consumer's settleAt.
  return {
    body: JSON.stringify({ v: 1, queue, settleAt }),
    groupId: queue,
    deduplicationId: `${queue}#${windowMs}:${bucket}`,
  };
}

const DispatchBodySchema = z.looseObject({
  queue: z.string().regex(QUEUE_NAME_PATTERN),
  // A body without it (sent by hand, or by an older sender) needs no second pass.
  settleAt: z.number().int().nonnegative().optional(),
});

/**
 * Parses a dispatch-queue message body. Returns null for anything that is not a wake-up
 * (retrying such a message would never help, so the handler should drop it).
 */
export function parseDispatchMessage(body: string): DispatchMessage | null {
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch {
    return null;
  }
  const parsed = DispatchBodySchema.safeParse(raw);
  if (!parsed.success) return null;
  return { queue: parsed.data.queue, settleAt: parsed.data.settleAt ?? 0 };
}

export interface SettleOptions {
  clock?: Clock;
  /** Waits `ms` (injectable so tests need not sleep). */
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Runs `drain` for one consumed wake-up so that no wake-up deduplicated against it is lost:
 * one pass, and if that pass began before the message's `settleAt`, a wait until then and
 * one more pass. The dispatcher handler calls this while it holds the message (the FIFO
 * group stays locked, so no other dispatcher drains the queue meanwhile).
 * @returns how many passes ran (1 or 2).
 */
export async function dispatchUntilSettled(
  message: DispatchMessage,
  drain: (queue: string) => Promise<unknown>,
  opts: SettleOptions = {},
): Promise<number> {
  const clock = opts.clock ?? systemClock;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const firstStart = clock.now();
  await drain(message.queue);
  if (firstStart >= message.settleAt) return 1;
  const wait = message.settleAt - clock.now();
  if (wait > 0) await sleep(wait);
  await drain(message.queue);
  return 2;
}

/**
 * Runs `drain` once for one consumed wake-up, begun no earlier than the message's
 * `settleAt` (waiting for it when the message is fresh), so that no wake-up deduplicated
 * against it is lost. The dispatcher handler calls this while it holds the message (the
 * FIFO group stays locked, so no other dispatcher drains the queue meanwhile).
 * @returns how many ms it waited before the pass.
 */
export async function dispatchWhenSettled(
  message: DispatchMessage,
  drain: (queue: string) => Promise<unknown>,
  opts: SettleOptions = {},
): Promise<number> {
  const clock = opts.clock ?? systemClock;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const wait = Math.max(0, message.settleAt - clock.now());
  if (wait > 0) await sleep(wait);
  await drain(message.queue);
  return wait;
}
