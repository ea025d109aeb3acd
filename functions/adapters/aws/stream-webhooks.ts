/**
 * Webhook deliveries follow from committed state changes on AWS: the request table's stream
 * (NEW_AND_OLD_IMAGES) carries every write of a request item, and each record is turned into
 * the deliveries its change calls for (`changesBetween` of its old and new images, filtered
 * by the request's webhook) and enqueued on the webhooks queue. Nothing is lost between the
 * write and the enqueue: a record whose enqueue failed is read again (the event-source
 * mapping retries it, the server's stream poller does not move its checkpoint past it).
 *
 * Everything a delivery holds comes from the record itself (the id from the dedup key, the
 * payload and its timestamp from the new image, the order from the item's `rev`), so a record
 * read twice makes byte-identical deliveries, which the order record then drops.
 */
import { createHash } from "node:crypto";
import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { unmarshall } from "@aws-sdk/util-dynamodb";
import { deliveryOrder } from "../../webhooks/order.ts";
import { changesBetween, webhookDeliveriesFor } from "../../webhooks/outbox.ts";
import { requestItemImage } from "./dynamo-request-store.ts";
import { enqueueWebhookMessages, type WebhookMessage } from "./sqs-webhooks.ts";

/**
 * One stream record, as the Lambda event carries it and as GetRecords returns it (the two
 * shapes agree on these fields; images are DynamoDB attribute-value maps).
 */
export interface StreamRecordLike {
  eventName?: string | undefined;
  dynamodb?:
    | {
        NewImage?: Record<string, AttributeValue> | Record<string, unknown> | undefined;
        OldImage?: Record<string, AttributeValue> | Record<string, unknown> | undefined;
        SequenceNumber?: string | undefined;
      }
    | undefined;
}

/** `msg_` and 32 hex digits of the SHA-256 of the dedup key: the same key, the same id. */
export function deliveryIdFor(dedupKey: string): string {
  return `msg_${createHash("sha256").update(dedupKey).digest("hex").slice(0, 32)}`;
}

function image(raw: Record<string, unknown> | undefined) {
  if (!raw) return null;
  return requestItemImage(unmarshall(raw as Record<string, AttributeValue>));
}

/**
 * The deliveries one stream record calls for (none for other item kinds, removals, and
 * changes the request's webhook did not choose). The payload's time is the write's
 * `updatedAt` (or the progress's, which is later when a runner reported it), and progress is
 * keyed by its second: SPEC §2's one progress per second.
 */
export function deliveriesFromRecord(record: StreamRecordLike): WebhookMessage[] {
  const after = image(record.dynamodb?.NewImage);
  if (!after) return [];
  const before = image(record.dynamodb?.OldImage);
  // The job runner's progress writes leave `updatedAt` alone; the progress has its own time.
  const at = Math.max(after.request.updatedAt, after.request.progress?.updatedAt ?? 0);
  const messages: WebhookMessage[] = [];
  for (const change of changesBetween(before?.request ?? null, after.request)) {
    for (const d of webhookDeliveriesFor(after.request, change, at, () => "")) {
      messages.push({
        v: 1,
        ...d,
        id: deliveryIdFor(d.dedupKey),
        attempt: 0,
        order: deliveryOrder(after.rev, d.event),
      });
    }
  }
  return messages;
}

/**
 * The stream consumer's step for one record: derive its deliveries and enqueue them. A record
 * whose images cannot be read is reported to `onUnreadable` and skipped: reading it again
 * could never help, and it must not hold up the records behind it.
 * @throws when the enqueue failed; the record must be handed in again (nothing was
 *   checkpointed past it).
 */
export function createStreamRecordHandler(options: {
  sqs: SQSClient;
  queueUrl: string;
  onUnreadable: (record: StreamRecordLike, error: unknown) => void;
}): (record: StreamRecordLike) => Promise<number> {
  return async (record) => {
    let messages: WebhookMessage[];
    try {
      messages = deliveriesFromRecord(record);
    } catch (error) {
      options.onUnreadable(record, error);
      return 0;
    }
    if (messages.length > 0) await enqueueWebhookMessages(options.sqs, options.queueUrl, messages);
    return messages.length;
  };
}
