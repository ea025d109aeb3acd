/**
 * What the webhooks Lambda's two event sources do on AWS, done in-process for
 * `LONGRUN_BACKEND=aws`:
 *
 * - {@link StreamPoller} reads the request table's stream with shard iterators and hands
 *   each record, in stream order, to the stream step (state change → deliveries on the
 *   webhooks queue). Its position is checkpointed to a file after every record handled, so a
 *   restart resumes after the last handled record: nothing is lost (a record whose step
 *   failed is read again) and nothing already handled floods the queue again. Without a
 *   checkpoint it starts at the oldest record the stream keeps (24 h); deliveries a replay
 *   makes again are dropped by their order records.
 * - {@link WebhookQueuePoller} receives from the webhooks queue and runs the delivery step on
 *   each message, deleting the ones it handled; a failed one comes back after the queue's
 *   visibility timeout (and is dead-lettered after its receive count).
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import {
  type _Record,
  DescribeStreamCommand,
  type DynamoDBStreamsClient,
  GetRecordsCommand,
  GetShardIteratorCommand,
  type Shard,
} from "@aws-sdk/client-dynamodb-streams";
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  type Message,
  ReceiveMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type { ReceivedDelivery } from "../adapters/aws/webhook-delivery.ts";

/** Where a stream was read up to, per shard. */
interface Checkpoint {
  streamArn: string;
  shards: Record<string, { after?: string; done?: boolean }>;
}

export interface StreamPollerOptions {
  streams: DynamoDBStreamsClient;
  streamArn: string;
  /** The checkpoint file (written atomically: temporary file, then rename). */
  checkpointPath: string;
  /** The stream step; throwing leaves the record to be read again. */
  handle: (record: _Record) => Promise<unknown>;
  log: (line: string) => void;
  /** Pause between reads once caught up (ms); default 500. */
  pollMs?: number;
}

/** How often the shard list is read again (shards split and close over time). */
const SHARD_REFRESH_MS = 10_000;
/** Records per GetRecords call. */
const RECORDS_PER_READ = 100;

export class StreamPoller {
  readonly #o: StreamPollerOptions;
  readonly #iterators = new Map<string, string>();
  #checkpoint: Checkpoint;
  #shards: Shard[] = [];
  #shardsReadAt = 0;
  #loop: Promise<void> | undefined;
  #stopping = false;
  #wake: (() => void) | undefined;

  constructor(options: StreamPollerOptions) {
    this.#o = options;
    this.#checkpoint = this.#load();
  }

  /** Starts reading (idempotent). */
  start(): void {
    if (this.#loop) return;
    this.#stopping = false;
    this.#loop = this.#run();
  }

  /** Stops after the record in hand. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    await this.#loop;
    this.#loop = undefined;
  }

  /**
   * Reads every shard up to its end once, handing each record to the step.
   * @returns how many records were handled.
   */
  async pollOnce(): Promise<number> {
    const now = Date.now();
    if (now - this.#shardsReadAt > SHARD_REFRESH_MS || this.#shards.length === 0) {
      this.#shards = await this.#listShards();
      this.#shardsReadAt = now;
    }
    const known = new Set(this.#shards.map((s) => s.ShardId));
    let handled = 0;
    for (const shard of this.#shards) {
      const id = shard.ShardId;
      if (!id || this.#checkpoint.shards[id]?.done) continue;
      // A child shard waits for its parent to be read to its end (stream order per item);
      // a parent the stream no longer lists has been trimmed away.
      const parent = shard.ParentShardId;
      if (parent && known.has(parent) && !this.#checkpoint.shards[parent]?.done) continue;
      handled += await this.#readShard(id);
      if (this.#stopping) break;
    }
    return handled;
  }

  async #run(): Promise<void> {
    while (!this.#stopping) {
      let handled = 0;
      try {
        handled = await this.pollOnce();
      } catch (error) {
        if (this.#stopping) break;
        this.#o.log(`reading the table's stream failed: ${String(error)}`);
      }
      if (handled > 0 || this.#stopping) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.#o.pollMs ?? 500);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  async #listShards(): Promise<Shard[]> {
    const shards: Shard[] = [];
    let start: string | undefined;
    do {
      const out = await this.#o.streams.send(
        new DescribeStreamCommand({
          StreamArn: this.#o.streamArn,
          ...(start ? { ExclusiveStartShardId: start } : {}),
        }),
      );
      shards.push(...(out.StreamDescription?.Shards ?? []));
      start = out.StreamDescription?.LastEvaluatedShardId;
    } while (start);
    return shards;
  }

  async #iterator(shardId: string): Promise<string | undefined> {
    const cached = this.#iterators.get(shardId);
    if (cached) return cached;
    const after = this.#checkpoint.shards[shardId]?.after;
    const out = await this.#o.streams.send(
      new GetShardIteratorCommand({
        StreamArn: this.#o.streamArn,
        ShardId: shardId,
        ...(after
          ? { ShardIteratorType: "AFTER_SEQUENCE_NUMBER", SequenceNumber: after }
          : { ShardIteratorType: "TRIM_HORIZON" }),
      }),
    );
    return out.ShardIterator;
  }

  /** Reads one shard until it is caught up, has ended, or a record's step failed. */
  async #readShard(shardId: string): Promise<number> {
    let handled = 0;
    let iterator: string | undefined;
    try {
      iterator = await this.#iterator(shardId);
    } catch (error) {
      if (!isTrimmed(error)) throw error;
      // The checkpoint is older than what the stream keeps: start at its oldest record.
      this.#o.log(
        `stream shard ${shardId}: checkpoint past the stream's retention, reading from its oldest record`,
      );
      this.#mark(shardId, {});
      iterator = await this.#iterator(shardId);
    }
    while (iterator && !this.#stopping) {
      let out: { Records?: _Record[]; NextShardIterator?: string };
      try {
        out = await this.#o.streams.send(
          new GetRecordsCommand({ ShardIterator: iterator, Limit: RECORDS_PER_READ }),
        );
      } catch (error) {
        this.#iterators.delete(shardId);
        if ((error as { name?: string }).name === "ExpiredIteratorException") return handled;
        throw error;
      }
      for (const record of out.Records ?? []) {
        try {
          await this.#o.handle(record);
        } catch (error) {
          // Not checkpointed: the next read starts at this record again.
          this.#iterators.delete(shardId);
          this.#o.log(`stream record ${record.dynamodb?.SequenceNumber}: ${String(error)}`);
          return handled;
        }
        handled++;
        const seq = record.dynamodb?.SequenceNumber;
        if (seq) this.#mark(shardId, { after: seq });
      }
      iterator = out.NextShardIterator;
      if (!iterator) {
        this.#iterators.delete(shardId);
        this.#mark(shardId, { ...this.#checkpoint.shards[shardId], done: true });
        return handled;
      }
      this.#iterators.set(shardId, iterator);
      if ((out.Records ?? []).length === 0) return handled;
    }
    return handled;
  }

  #mark(shardId: string, position: Checkpoint["shards"][string]): void {
    this.#checkpoint.shards[shardId] = position;
    const tmp = `${this.#o.checkpointPath}.${randomUUID()}.tmp`;
    mkdirSync(dirname(this.#o.checkpointPath), { recursive: true });
    writeFileSync(tmp, JSON.stringify(this.#checkpoint));
    renameSync(tmp, this.#o.checkpointPath);
  }

  #load(): Checkpoint {
    try {
      const saved = JSON.parse(readFileSync(this.#o.checkpointPath, "utf8")) as Checkpoint;
      // Another stream (the table was made again): its positions mean nothing here.
      if (saved.streamArn === this.#o.streamArn && typeof saved.shards === "object") return saved;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
        this.#o.log(
          `stream checkpoint ${this.#o.checkpointPath} unreadable, starting over: ${String(error)}`,
        );
      }
    }
    return { streamArn: this.#o.streamArn, shards: {} };
  }
}

function isTrimmed(error: unknown): boolean {
  return (error as { name?: string }).name === "TrimmedDataAccessException";
}

export interface WebhookQueuePollerOptions {
  sqs: SQSClient;
  queueUrl: string;
  /** Runs the delivery step on a batch; the ids of the messages to leave on the queue. */
  run: (messages: ReceivedDelivery[]) => Promise<string[]>;
  log: (line: string) => void;
  /** Long-poll wait per receive, 0–20 s (default 1, so that a stop takes about a second). */
  waitTimeSeconds?: number;
  /**
   * Visibility of received messages until a heartbeat extends it (default 30 s), so a
   * server killed mid-try leaves its messages hidden for seconds, not for the queue's
   * default meant for the Lambda.
   */
  visibilitySeconds?: number;
}

export class WebhookQueuePoller {
  readonly #o: WebhookQueuePollerOptions;
  #loop: Promise<void> | undefined;
  #stopping = false;

  readonly #visibility: number;

  constructor(options: WebhookQueuePollerOptions) {
    this.#o = options;
    this.#visibility = options.visibilitySeconds ?? 30;
  }

  start(): void {
    if (this.#loop) return;
    this.#stopping = false;
    this.#loop = this.#run();
  }

  /** Stops receiving and waits for the tries in hand. */
  async stop(): Promise<void> {
    this.#stopping = true;
    await this.#loop;
    this.#loop = undefined;
  }

  async #run(): Promise<void> {
    while (!this.#stopping) {
      let messages: Message[];
      try {
        const out = await this.#o.sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: this.#o.queueUrl,
            MaxNumberOfMessages: 10,
            WaitTimeSeconds: this.#o.waitTimeSeconds ?? 1,
            VisibilityTimeout: this.#visibility,
          }),
        );
        messages = out.Messages ?? [];
      } catch (error) {
        if (this.#stopping) break;
        this.#o.log(`receiving webhook deliveries failed: ${String(error)}`);
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (messages.length === 0) continue;
      const heartbeat = setInterval(
        () => {
          this.#o.sqs
            .send(
              new ChangeMessageVisibilityBatchCommand({
                QueueUrl: this.#o.queueUrl,
                Entries: messages.map((m, i) => ({
                  Id: String(i),
                  ReceiptHandle: m.ReceiptHandle,
                  VisibilityTimeout: this.#visibility,
                })),
              }),
            )
            .catch((error: unknown) => {
              this.#o.log(`extending webhook deliveries failed: ${String(error)}`);
            });
        },
        (this.#visibility * 1000) / 3,
      );
      const failed = new Set(
        await this.#o.run(
          messages.map((m, n) => ({ id: m.MessageId ?? String(n), body: m.Body ?? "" })),
        ),
      );
      clearInterval(heartbeat);
      const done = messages.filter((m, n) => !failed.has(m.MessageId ?? String(n)));
      if (done.length === 0) continue;
      try {
        await this.#o.sqs.send(
          new DeleteMessageBatchCommand({
            QueueUrl: this.#o.queueUrl,
            Entries: done.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })),
          }),
        );
      } catch (error) {
        // Handled again after the visibility timeout; the order records drop the copies.
        this.#o.log(`deleting handled webhook deliveries failed: ${String(error)}`);
      }
    }
  }
}
