/**
 * The webhooks handler, fed by two event sources:
 * - the request table's stream: each record's state change becomes its deliveries on the
 *   webhooks queue (functions/adapters/aws/stream-webhooks.ts), record after record in
 *   stream order. The first record whose enqueue failed is reported as the batch's failure;
 *   the mapping retries from it (bisecting the batch) and sends what keeps failing to its
 *   on-failure destination;
 * - the webhooks queue: each message is one try of one delivery
 *   (functions/adapters/aws/webhook-delivery.ts), a request's messages in their order; a
 *   failed record is received again.
 */
import type { SQSClient } from "@aws-sdk/client-sqs";
import type {
  Context,
  DynamoDBBatchResponse,
  DynamoDBStreamEvent,
  SQSBatchResponse,
  SQSEvent,
} from "aws-lambda";
import { DynamoDeliveryOrder, DynamoWebhookSecrets } from "../adapters/aws/sqs-webhooks.ts";
import {
  createStreamRecordHandler,
  type StreamRecordLike,
} from "../adapters/aws/stream-webhooks.ts";
import {
  createDeliveryStep,
  type DeliveryStepOptions,
  runDeliveryBatch,
} from "../adapters/aws/webhook-delivery.ts";
import { AWS_ENV, ENV } from "../config/env.ts";
import { createDeliverer } from "../webhooks/deliver.ts";
import { lambdaClients, lambdaFigures, lambdaResources, logger } from "./context.ts";

export type WebhooksHandlerOptions = Omit<DeliveryStepOptions, "log">;

type WebhooksEvent = SQSEvent | DynamoDBStreamEvent;
type WebhooksResponse = SQSBatchResponse | DynamoDBBatchResponse;

function isStreamEvent(event: WebhooksEvent): event is DynamoDBStreamEvent {
  return event.Records[0]?.eventSource === "aws:dynamodb";
}

/** The handler over given ports (tests pass an emulator's clients and a test clock). */
export function createWebhooksHandler(
  options: WebhooksHandlerOptions,
): (event: WebhooksEvent, context: Context) => Promise<WebhooksResponse> {
  const step = createDeliveryStep({
    ...options,
    log: {
      info: (message, fields = {}) => logger.info(message, fields),
      warn: (message, fields = {}) => logger.warn(message, fields),
      error: (message, fields = {}) => logger.error(message, fields),
    },
  });
  const fromStream = createStreamRecordHandler({
    sqs: options.sqs,
    queueUrl: options.queueUrl,
    onUnreadable: (record, error) =>
      logger.error("unreadable stream record skipped", {
        sequenceNumber: record.dynamodb?.SequenceNumber,
        error: String(error),
      }),
  });
  return async (event) => {
    if (isStreamEvent(event)) {
      // In stream order; the first record that fails is reported, and the mapping hands
      // the batch in again from it (records before it are not read again).
      for (const record of event.Records) {
        try {
          await fromStream(record as StreamRecordLike);
        } catch (error) {
          logger.error("stream record not enqueued", {
            sequenceNumber: record.dynamodb?.SequenceNumber,
            error: String(error),
          });
          return {
            batchItemFailures: [{ itemIdentifier: record.dynamodb?.SequenceNumber ?? "" }],
          };
        }
      }
      return { batchItemFailures: [] };
    }
    const failed = await runDeliveryBatch(
      event.Records.map((r) => ({ id: r.messageId, body: r.body })),
      step,
      (message, fields) => logger.error(message, fields ?? {}),
    );
    return { batchItemFailures: failed.map((itemIdentifier) => ({ itemIdentifier })) };
  };
}

let cached: ReturnType<typeof createWebhooksHandler> | undefined;

export const handler = (event: WebhooksEvent, context: Context): Promise<WebhooksResponse> => {
  if (!cached) {
    const queueUrl = process.env[AWS_ENV.webhooksQueueUrl];
    if (!queueUrl) throw new Error(`${AWS_ENV.webhooksQueueUrl} must be set`);
    const clients = lambdaClients();
    const { tableName } = lambdaResources();
    cached = createWebhooksHandler({
      secrets: new DynamoWebhookSecrets(clients.dynamo, tableName),
      order: new DynamoDeliveryOrder(clients.dynamo, tableName),
      deliver: createDeliverer({ allowPrivate: process.env[ENV.webhookAllowPrivate] === "1" }),
      sqs: clients.sqs as SQSClient,
      queueUrl,
      clock: { now: () => Date.now() },
      onTried: (ok) => lambdaFigures.webhookTried(ok),
    });
  }
  return cached(event, context);
};
