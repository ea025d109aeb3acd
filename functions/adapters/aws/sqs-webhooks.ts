/**
 * Webhooks on AWS: deliveries travel as messages on a standard SQS queue (the stream
 * consumer, functions/adapters/aws/stream-webhooks.ts, enqueues them from the request table's
 * stream; the webhooks handler re-sends each failed one with a message timer until the
 * schedule runs out); tenants' signing secrets and the per-request order records
 * (functions/webhooks/order.ts) are items of the request table.
 *
 * Message body ({@link WebhookMessage}): the delivery as `webhookDeliveriesFor` made it plus
 * `attempt` (tries made before the one this message asks for), and optionally `notBefore`
 * (epoch ms; SQS delays at most 15 minutes, so a longer wait is several hops of at most
 * 900 s, see functions/handlers/webhooks.ts) and `lastError`/`dead` once it is given up.
 *
 * A standard queue delivers at least once, may duplicate a message and does not keep order:
 * every copy carries the delivery's `id` (the `webhook-id` of every try, made from the
 * `dedupKey`, so a stream record read twice makes the same delivery), and the order record
 * turns a copy of a delivered delivery, or one older than what was already sent, into a
 * no-op.
 */

import { randomUUID } from "node:crypto";
import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { SendMessageBatchCommand, SendMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import {
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  UpdateCommand,
} from "@aws-sdk/lib-dynamodb";
import type { WebhookEvent } from "../../core/request.ts";
import {
  type ClaimOutcome,
  type DeliveryOrder,
  decideClaim,
  type OrderedDelivery,
  type OrderState,
} from "../../webhooks/order.ts";
import {
  type NewWebhookDelivery,
  type StoredWebhookSecret,
  signingSecrets,
  type WebhookSecrets,
} from "../../webhooks/outbox.ts";
import { generateSecret } from "../../webhooks/signing.ts";
import { TABLE_KEY, TTL_ATTRIBUTE } from "./definitions.ts";
import { webhookOrderKey, webhookSecretKey } from "./items.ts";

/** Longest SQS message timer (DelaySeconds). */
export const MAX_SQS_DELAY_SECONDS = 900;

/** One delivery on the webhooks queue: the delivery as enqueued, and how its tries went. */
export interface WebhookMessage extends NewWebhookDelivery {
  v: 1;
  /** Tries made before the one this message asks for (0 on enqueue). */
  attempt: number;
  /** Not to be tried before this time (epoch ms): the handler delays the message again. */
  notBefore?: number;
  /** Error of the last failed try. */
  lastError?: string;
  /** Given up: the handler fails the record so that the queue dead-letters it. */
  dead?: boolean;
  /**
   * The delivery's place among its request's deliveries (functions/webhooks/order.ts); the
   * handler claims the request's order record with it before every try.
   */
  order?: number;
}

const EVENTS: readonly WebhookEvent[] = ["started", "progress", "completed"];

/** Parses a webhooks-queue body; null when it is not a {@link WebhookMessage}. */
export function parseWebhookMessage(body: string): WebhookMessage | null {
  let m: unknown;
  try {
    m = JSON.parse(body);
  } catch {
    return null;
  }
  if (typeof m !== "object" || m === null) return null;
  const o = m as Record<string, unknown>;
  const strings = ["id", "requestId", "tenant", "url", "payload", "dedupKey"] as const;
  if (o.v !== 1 || !strings.every((k) => typeof o[k] === "string")) return null;
  if (!EVENTS.includes(o.event as WebhookEvent)) return null;
  if (!Number.isInteger(o.attempt) || (o.attempt as number) < 0) return null;
  if (typeof o.createdAt !== "number") return null;
  if (o.notBefore !== undefined && typeof o.notBefore !== "number") return null;
  if (o.order !== undefined && typeof o.order !== "number") return null;
  return m as WebhookMessage;
}

/** Sends a webhooks-queue message after `delaySeconds` (0–900). */
export async function sendWebhookMessage(
  sqs: SQSClient,
  queueUrl: string,
  message: WebhookMessage,
  delaySeconds = 0,
): Promise<void> {
  await sqs.send(
    new SendMessageCommand({
      QueueUrl: queueUrl,
      MessageBody: JSON.stringify(message),
      DelaySeconds: Math.min(MAX_SQS_DELAY_SECONDS, Math.max(0, Math.ceil(delaySeconds))),
      MessageAttributes: {
        attempt: { DataType: "Number", StringValue: String(message.attempt) },
        event: { DataType: "String", StringValue: message.event },
      },
    }),
  );
}

/** Entries per SendMessageBatch, SQS's limit. */
const MAX_BATCH = 10;

/**
 * Sends new deliveries to the webhooks queue, due at once, in batches of ten.
 * @throws Error when any of them was not accepted (the caller retries them all: copies of a
 *   delivery carry the same id, and the order record makes a copy of a delivered one a no-op).
 */
export async function enqueueWebhookMessages(
  sqs: SQSClient,
  queueUrl: string,
  messages: readonly WebhookMessage[],
): Promise<void> {
  for (let i = 0; i < messages.length; i += MAX_BATCH) {
    const batch = messages.slice(i, i + MAX_BATCH);
    const out = await sqs.send(
      new SendMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: batch.map((m, n) => ({
          Id: String(n),
          MessageBody: JSON.stringify(m),
          MessageAttributes: {
            attempt: { DataType: "Number", StringValue: String(m.attempt) },
            event: { DataType: "String", StringValue: m.event },
          },
        })),
      }),
    );
    const failed = out.Failed ?? [];
    if (failed.length > 0) {
      throw new Error(
        `webhooks queue refused ${failed.length} of ${batch.length} deliveries: ${failed[0]?.Code ?? "?"} ${failed[0]?.Message ?? ""}`,
      );
    }
  }
}

/**
 * How long an order record is kept after its last claim: longer than a delivery can keep
 * arriving (the stream keeps records 24 h, a delivery is retried for about 45 h).
 */
const ORDER_RECORD_DAYS = 7;
/** Tries of a claim that keeps losing to concurrent claims before it answers `busy`. */
const CLAIM_ATTEMPTS = 5;

/**
 * {@link DeliveryOrder} as items of the request table: read consistently, decide
 * ({@link decideClaim}), write conditioned on the version read, so two claims of one request
 * never both win.
 */
export class DynamoDeliveryOrder implements DeliveryOrder {
  readonly #doc: DynamoDBDocumentClient;

  constructor(
    client: DynamoDBClient,
    private readonly tableName: string,
  ) {
    this.#doc = DynamoDBDocumentClient.from(client);
  }

  async claim(delivery: OrderedDelivery, now: number, leaseMs: number): Promise<ClaimOutcome> {
    const key = webhookOrderKey(delivery.requestId);
    for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
      const out = await this.#doc.send(
        new GetCommand({ TableName: this.tableName, Key: key, ConsistentRead: true }),
      );
      const item = out.Item;
      const state: OrderState | null = item
        ? {
            order: Number(item.order),
            deliveryId: String(item.did),
            event: item.ev as WebhookEvent,
            done: item.done === true,
            leaseUntil: Number(item.leaseUntil ?? 0),
          }
        : null;
      const verdict = decideClaim(state, delivery, now);
      if (verdict !== "claim") return { verdict };
      const token = randomUUID();
      const version = item ? Number(item.ver) : 0;
      try {
        await this.#doc.send(
          new PutCommand({
            TableName: this.tableName,
            Item: {
              ...key,
              order: delivery.order,
              did: delivery.id,
              ev: delivery.event,
              done: false,
              leaseUntil: now + leaseMs,
              token,
              ver: version + 1,
              [TTL_ATTRIBUTE]: Math.floor(now / 1000) + ORDER_RECORD_DAYS * 86_400,
            },
            ConditionExpression: item ? "#ver = :ver" : "attribute_not_exists(#pk)",
            ExpressionAttributeNames: item ? { "#ver": "ver" } : { "#pk": TABLE_KEY.partitionKey },
            ...(item ? { ExpressionAttributeValues: { ":ver": version } } : {}),
          }),
        );
        return { verdict: "claim", token };
      } catch (error) {
        if (!isConditionalCheckFailed(error)) throw error;
      }
    }
    return { verdict: "busy" };
  }

  async release(delivery: OrderedDelivery, token: string, done: boolean): Promise<void> {
    try {
      await this.#doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: webhookOrderKey(delivery.requestId),
          UpdateExpression: "SET #done = :done, #leaseUntil = :zero ADD #ver :one REMOVE #token",
          ConditionExpression: "#token = :token",
          ExpressionAttributeNames: {
            "#done": "done",
            "#leaseUntil": "leaseUntil",
            "#ver": "ver",
            "#token": "token",
          },
          ExpressionAttributeValues: { ":done": done, ":zero": 0, ":one": 1, ":token": token },
        }),
      );
    } catch (error) {
      // The lease ran out and another try took the record over: its claim stands.
      if (!isConditionalCheckFailed(error)) throw error;
    }
  }
}

/** Tries of a rotation that keeps losing to concurrent rotations before it gives up. */
const ROTATE_ATTEMPTS = 5;

/**
 * Tenants' secrets as items of the request table (`secret`, and after a rotation `previous`
 * and `rotatedAt`). The first use creates the item with a conditional put; a concurrent first
 * use that loses the race reads the winner's secret, so every caller gets the same one. A
 * rotation is one conditional update on the secret it read. Nothing is cached: a rotation made
 * by another process (the HTTP handler) signs the very next delivery.
 */
export class DynamoWebhookSecrets implements WebhookSecrets {
  readonly #doc: DynamoDBDocumentClient;

  constructor(
    client: DynamoDBClient,
    private readonly tableName: string,
  ) {
    this.#doc = DynamoDBDocumentClient.from(client);
  }

  async secretFor(tenant: string): Promise<string> {
    return (await this.#stored(tenant)).secret;
  }

  async signingSecretsFor(tenant: string, now: number): Promise<string[]> {
    return signingSecrets(await this.#stored(tenant), now);
  }

  async rotate(tenant: string, now: number): Promise<string> {
    const secret = generateSecret();
    for (let attempt = 1; ; attempt++) {
      const current = await this.#stored(tenant);
      try {
        await this.#doc.send(
          new UpdateCommand({
            TableName: this.tableName,
            Key: webhookSecretKey(tenant),
            UpdateExpression: "SET #secret = :new, #previous = :old, #rotatedAt = :now",
            ConditionExpression: "#secret = :old",
            ExpressionAttributeNames: {
              "#secret": "secret",
              "#previous": "previous",
              "#rotatedAt": "rotatedAt",
            },
            ExpressionAttributeValues: { ":new": secret, ":old": current.secret, ":now": now },
          }),
        );
        return secret;
      } catch (error) {
        if (!isConditionalCheckFailed(error) || attempt >= ROTATE_ATTEMPTS) throw error;
      }
    }
  }

  async #stored(tenant: string): Promise<StoredWebhookSecret> {
    return (await this.#read(tenant)) ?? (await this.#create(tenant));
  }

  async #read(tenant: string): Promise<StoredWebhookSecret | null> {
    const out = await this.#doc.send(
      new GetCommand({
        TableName: this.tableName,
        Key: webhookSecretKey(tenant),
        ConsistentRead: true,
      }),
    );
    const item = out.Item;
    if (typeof item?.secret !== "string") return null;
    return {
      secret: item.secret,
      previous: typeof item.previous === "string" ? item.previous : null,
      rotatedAt: typeof item.rotatedAt === "number" ? item.rotatedAt : null,
    };
  }

  async #create(tenant: string): Promise<StoredWebhookSecret> {
    const secret = generateSecret();
    try {
      await this.#doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { ...webhookSecretKey(tenant), secret, createdAt: Date.now() },
          ConditionExpression: "attribute_not_exists(#pk)",
          ExpressionAttributeNames: { "#pk": TABLE_KEY.partitionKey },
        }),
      );
      return { secret, previous: null, rotatedAt: null };
    } catch (error) {
      if (!isConditionalCheckFailed(error)) throw error;
      const winner = await this.#read(tenant);
      if (!winner) throw new Error(`webhook secret of ${tenant} vanished after a lost race`);
      return winner;
    }
  }
}

function isConditionalCheckFailed(error: unknown): boolean {
  return (error as { name?: string })?.name === "ConditionalCheckFailedException";
}
