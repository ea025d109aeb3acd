/**
 * Webhooks on AWS: deliveries travel as messages on a standard SQS queue (the webhooks
 * handler sends them and re-sends each failed one with a message timer until the schedule
 * runs out), and tenants' signing secrets are items of the request table.
 *
 * Message body ({@link WebhookMessage}): the delivery as `webhookDeliveriesFor` made it plus
 * `attempt` (tries made before the one this message asks for), and optionally `notBefore`
 * (epoch ms; SQS delays at most 15 minutes, so a longer wait is several hops of at most
 * 900 s, see functions/handlers/webhooks.ts) and `lastError`/`dead` once it is given up.
 *
 * A standard queue delivers at least once and may duplicate a message: every copy carries
 * the delivery's `id`, which is the `webhook-id` of every try, so a receiver that
 * de-duplicates on `webhook-id` (as Standard Webhooks asks) sees one event. The `dedupKey`
 * travels in the body for the same purpose (logs, inspection of dead letters).
 */
import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { SendMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { DynamoDBDocumentClient, GetCommand, PutCommand } from "@aws-sdk/lib-dynamodb";
import type { WebhookEvent } from "../../core/request.ts";
import type { NewWebhookDelivery, WebhookOutbox, WebhookSecrets } from "../../webhooks/outbox.ts";
import { generateSecret } from "../../webhooks/signing.ts";
import { TABLE_KEY } from "./definitions.ts";
import { webhookSecretKey } from "./items.ts";

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

/**
 * The enqueue side of the outbox on SQS: each delivery becomes one message, due at once.
 * Claiming, rescheduling and dead-lettering are the queue's and the webhooks handler's.
 */
export class SqsWebhookOutbox implements Pick<WebhookOutbox, "enqueue"> {
  constructor(
    private readonly sqs: SQSClient,
    private readonly queueUrl: string,
  ) {}

  /** Always true: a standard queue cannot tell duplicates apart (see the module comment). */
  async enqueue(delivery: NewWebhookDelivery): Promise<boolean> {
    await sendWebhookMessage(this.sqs, this.queueUrl, { v: 1, ...delivery, attempt: 0 });
    return true;
  }
}

/**
 * Tenants' secrets as items of the request table. The first use creates the item with a
 * conditional put; a concurrent first use that loses the race reads the winner's secret, so
 * every caller gets the same one. Secrets never change, so they are cached per instance.
 */
export class DynamoWebhookSecrets implements WebhookSecrets {
  readonly #doc: DynamoDBDocumentClient;
  readonly #cache = new Map<string, string>();

  constructor(
    client: DynamoDBClient,
    private readonly tableName: string,
  ) {
    this.#doc = DynamoDBDocumentClient.from(client);
  }

  async secretFor(tenant: string): Promise<string> {
    const cached = this.#cache.get(tenant);
    if (cached) return cached;
    const secret = (await this.#read(tenant)) ?? (await this.#create(tenant));
    this.#cache.set(tenant, secret);
    return secret;
  }

  async #read(tenant: string): Promise<string | null> {
    const out = await this.#doc.send(
      new GetCommand({
        TableName: this.tableName,
        Key: webhookSecretKey(tenant),
        ConsistentRead: true,
      }),
    );
    const secret = out.Item?.secret;
    return typeof secret === "string" ? secret : null;
  }

  async #create(tenant: string): Promise<string> {
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
      return secret;
    } catch (error) {
      if ((error as { name?: string }).name !== "ConditionalCheckFailedException") throw error;
      const winner = await this.#read(tenant);
      if (!winner) throw new Error(`webhook secret of ${tenant} vanished after a lost race`);
      return winner;
    }
  }
}
