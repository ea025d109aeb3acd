/**
 * The dispatcher Lambda's job, done in-process for `LONGRUN_BACKEND=aws`: receive wake-ups
 * from the FIFO dispatch queue, drain each woken queue (dispatchUntilSettled, so a wake-up
 * deduplicated against the one received is not lost), delete what was handled.
 *
 * Two differences from the Lambda, both because only this process dispatches:
 * - A message is deleted as soon as the first drain pass has run; the settling pass
 *   (dispatchUntilSettled's wait for `settleAt`, up to about 1.25 s) goes on without it.
 *   Holding the message through the wait would lock its FIFO group, and every slot freed
 *   meanwhile would wait for the next message. Running two passes of one queue at once is
 *   safe (claims are conditional writes), and a settling pass that a crash cuts short is
 *   made up by the restart, which wakes every queue.
 * - Messages are received with a short visibility timeout that a heartbeat extends while
 *   they are handled, so a server killed mid-dispatch locks their groups for seconds, not
 *   for the queue's two-minute default meant for the Lambda.
 */
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  type Message,
  ReceiveMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { dispatchUntilSettled, parseDispatchMessage } from "../adapters/aws/sqs-trigger.ts";

export interface DispatchPollerOptions {
  client: SQSClient;
  queueUrl: string;
  /** Drains one longrun queue: starts waiting requests while slots are free. */
  dispatch: (queue: string) => Promise<unknown>;
  /** Whether a queue is configured; wake-ups of others are dropped. */
  isKnownQueue: (queue: string) => boolean;
  log: (line: string) => void;
  /** Long-poll wait per receive, 0–20 s (default 1, so that a stop takes about a second). */
  waitTimeSeconds?: number;
  /** Visibility of a received message until the heartbeat extends it (default 5 s). */
  visibilitySeconds?: number;
}

/** Up to 10 entries per batch call, SQS's limit. */
const MAX_BATCH = 10;

export class DispatchPoller {
  readonly #opts: DispatchPollerOptions;
  readonly #visibility: number;
  #stopping = false;
  #loop: Promise<void> | undefined;
  /** Lets the pause after a failed receive end early on stop. */
  #wakeUp: (() => void) | undefined;
  /** Settling passes still waiting for their `settleAt` (or running). */
  readonly #settling = new Set<Promise<void>>();
  /** Waits of settling passes, cut short by stop. */
  readonly #sleeps = new Set<() => void>();

  constructor(options: DispatchPollerOptions) {
    this.#opts = options;
    this.#visibility = options.visibilitySeconds ?? 5;
  }

  /**
   * Starts the receive loop. One loop is enough (a batch's queues are drained in parallel,
   * and the loop only waits for first passes) and it never holds a message while it
   * receives, which some emulators need: moto's long poll decides which FIFO groups are
   * locked when it starts, and spins until it ends when a locked group has messages.
   */
  start(): void {
    if (this.#loop) return;
    this.#stopping = false;
    this.#loop = this.#receiveLoop();
  }

  /** Stops receiving and waits for the wake-ups in hand to be handled. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wakeUp?.();
    // Settling passes not yet started are dropped: the next start wakes every queue.
    for (const cancel of this.#sleeps) cancel();
    await this.#loop;
    await Promise.all(this.#settling);
    this.#loop = undefined;
  }

  /** dispatchUntilSettled's wait; rejects when the poller stops meanwhile. */
  #sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const cancel = () => {
        clearTimeout(timer);
        this.#sleeps.delete(cancel);
        reject(new Error("stopping"));
      };
      const timer = setTimeout(() => {
        this.#sleeps.delete(cancel);
        resolve();
      }, ms);
      this.#sleeps.add(cancel);
    });
  }

  async #receiveLoop(): Promise<void> {
    while (!this.#stopping) {
      let messages: Message[];
      try {
        const out = await this.#opts.client.send(
          new ReceiveMessageCommand({
            QueueUrl: this.#opts.queueUrl,
            MaxNumberOfMessages: MAX_BATCH,
            WaitTimeSeconds: this.#opts.waitTimeSeconds ?? 1,
            VisibilityTimeout: this.#visibility,
          }),
        );
        messages = out.Messages ?? [];
      } catch (error) {
        if (this.#stopping) break;
        this.#opts.log(`receiving dispatch wake-ups failed: ${String(error)}`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 1000);
          this.#wakeUp = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        continue;
      }
      if (messages.length === 0) continue;
      if (this.#stopping) {
        // Received while stopping: hand them back at once for the next start.
        await this.#setVisibility(messages, 0).catch(() => {});
        break;
      }
      await this.#handle(messages);
    }
  }

  /**
   * Drains each woken queue once for all its messages of this batch: one drain pass that
   * starts after the latest `settleAt` covers every one of them.
   */
  async #handle(messages: Message[]): Promise<void> {
    const byQueue = new Map<string, { settleAt: number; messages: Message[] }>();
    const unusable: Message[] = [];
    for (const m of messages) {
      const parsed = parseDispatchMessage(m.Body ?? "");
      if (!parsed || !this.#opts.isKnownQueue(parsed.queue)) {
        unusable.push(m);
        continue;
      }
      const group = byQueue.get(parsed.queue) ?? { settleAt: 0, messages: [] };
      group.settleAt = Math.max(group.settleAt, parsed.settleAt);
      group.messages.push(m);
      byQueue.set(parsed.queue, group);
    }
    if (unusable.length > 0) {
      this.#opts.log(`dropping ${unusable.length} unusable dispatch message(s)`);
    }

    const heartbeat = setInterval(
      () => {
        this.#setVisibility(messages, this.#visibility).catch((error: unknown) => {
          this.#opts.log(`extending dispatch wake-ups failed: ${String(error)}`);
        });
      },
      Math.max(500, (this.#visibility * 1000) / 2.5),
    );
    const done: Message[] = [...unusable];
    try {
      await Promise.all(
        [...byQueue].map(([queue, group]) =>
          this.#firstPass(queue, group.settleAt).then((ok) => {
            // Left undeleted on failure: it comes back once its visibility lapses (then the DLQ).
            if (ok) done.push(...group.messages);
          }),
        ),
      );
    } finally {
      clearInterval(heartbeat);
    }
    if (done.length > 0) {
      await this.#delete(done).catch((error: unknown) => {
        this.#opts.log(`deleting handled dispatch wake-ups failed: ${String(error)}`);
      });
    }
  }

  /**
   * Runs dispatchUntilSettled for `queue`; resolves once its first pass has ended (true if
   * it succeeded) and leaves the settling pass, if one is due, running in the background.
   */
  #firstPass(queue: string, settleAt: number): Promise<boolean> {
    return new Promise<boolean>((resolveFirst) => {
      let passes = 0;
      let firstDone = false;
      const run = dispatchUntilSettled(
        { queue, settleAt },
        async (q) => {
          passes++;
          await this.#opts.dispatch(q);
          if (passes === 1) {
            firstDone = true;
            resolveFirst(true);
          }
        },
        { sleep: (ms) => this.#sleep(ms) },
      )
        .then(() => {})
        .catch((error: unknown) => {
          if (passes === 1 && firstDone && this.#stopping) return; // the wait was cut short
          this.#opts.log(
            `${passes > 1 ? "settling " : ""}dispatch of queue ${queue} failed: ${String(error)}`,
          );
        })
        .finally(() => {
          resolveFirst(false); // no-op once the first pass resolved it
          this.#settling.delete(run);
        });
      this.#settling.add(run);
    });
  }

  async #delete(messages: Message[]): Promise<void> {
    for (let i = 0; i < messages.length; i += MAX_BATCH) {
      const out = await this.#opts.client.send(
        new DeleteMessageBatchCommand({
          QueueUrl: this.#opts.queueUrl,
          Entries: messages.slice(i, i + MAX_BATCH).map((m, j) => ({
            Id: String(j),
            ReceiptHandle: m.ReceiptHandle,
          })),
        }),
      );
      const failed = out.Failed ?? [];
      if (failed.length > 0) {
        // Handled all the same: a redelivery only costs one more (idempotent) drain.
        this.#opts.log(`${failed.length} handled dispatch wake-up(s) could not be deleted`);
      }
    }
  }

  async #setVisibility(messages: Message[], seconds: number): Promise<void> {
    for (let i = 0; i < messages.length; i += MAX_BATCH) {
      await this.#opts.client.send(
        new ChangeMessageVisibilityBatchCommand({
          QueueUrl: this.#opts.queueUrl,
          Entries: messages.slice(i, i + MAX_BATCH).map((m, j) => ({
            Id: String(j),
            ReceiptHandle: m.ReceiptHandle,
            VisibilityTimeout: seconds,
          })),
        }),
      );
    }
  }
}
