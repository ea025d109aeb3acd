/**
 * Creates longrun's SQS queues from definitions.ts where CDK does not (emulators, the
 * embedded server's `LONGRUN_AWS_BOOTSTRAP=1`): the FIFO dispatch queue and the Batch events
 * queue, each with a dead-letter queue. Safe to run again and from several processes.
 */
import {
  CreateQueueCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  type QueueAttributeName,
  SetQueueAttributesCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { DISPATCH_QUEUE, EVENTS_QUEUE, type ResourceNames, WEBHOOKS_QUEUE } from "./definitions.ts";

/** How long a dead-lettered message is kept for inspection: SQS's maximum, 14 days. */
const DLQ_RETENTION_SECONDS = 14 * 86_400;

export interface QueueUrls {
  dispatchQueueUrl: string;
  dispatchDlqUrl: string;
  eventsQueueUrl: string;
  eventsDlqUrl: string;
}

/** The dead-letter queue's name for a queue (a FIFO queue's DLQ must be FIFO too). */
export function deadLetterQueueName(name: string): string {
  return name.endsWith(".fifo") ? `${name.slice(0, -".fifo".length)}-dlq.fifo` : `${name}-dlq`;
}

/**
 * Creates (or finds) the dispatch and events queues and their DLQs; attributes that differ
 * from definitions.ts on an existing queue are set to the defined values.
 */
export async function createQueues(
  client: SQSClient,
  names: Pick<ResourceNames, "dispatchQueueName" | "eventsQueueName">,
): Promise<QueueUrls> {
  const dispatch = await createWithDlq(client, names.dispatchQueueName, DISPATCH_QUEUE);
  const events = await createWithDlq(client, names.eventsQueueName, EVENTS_QUEUE);
  return {
    dispatchQueueUrl: dispatch.url,
    dispatchDlqUrl: dispatch.dlqUrl,
    eventsQueueUrl: events.url,
    eventsDlqUrl: events.dlqUrl,
  };
}

/** Creates (or finds) the webhooks queue and its DLQ, as definitions.ts describes them. */
export function createWebhooksQueue(
  client: SQSClient,
  names: Pick<ResourceNames, "webhooksQueueName">,
): Promise<{ url: string; dlqUrl: string }> {
  return createWithDlq(client, names.webhooksQueueName, WEBHOOKS_QUEUE);
}

interface QueueDefinition {
  fifo: boolean;
  contentBasedDeduplication?: boolean;
  visibilityTimeoutSeconds: number;
  maxReceiveCount: number;
}

async function createWithDlq(
  client: SQSClient,
  name: string,
  def: QueueDefinition,
): Promise<{ url: string; dlqUrl: string }> {
  if (def.fifo !== name.endsWith(".fifo")) {
    throw new Error(`queue name ${name} must ${def.fifo ? "" : "not "}end with .fifo`);
  }
  const fifoAttrs: Partial<Record<QueueAttributeName, string>> = def.fifo
    ? {
        FifoQueue: "true",
        ContentBasedDeduplication: String(def.contentBasedDeduplication ?? false),
      }
    : {};
  const dlqUrl = await ensureQueue(client, deadLetterQueueName(name), {
    ...fifoAttrs,
    MessageRetentionPeriod: String(DLQ_RETENTION_SECONDS),
  });
  const dlqArn = await queueArn(client, dlqUrl);
  const url = await ensureQueue(client, name, {
    ...fifoAttrs,
    VisibilityTimeout: String(def.visibilityTimeoutSeconds),
    RedrivePolicy: JSON.stringify({
      deadLetterTargetArn: dlqArn,
      maxReceiveCount: def.maxReceiveCount,
    }),
  });
  return { url, dlqUrl };
}

async function ensureQueue(
  client: SQSClient,
  name: string,
  attributes: Partial<Record<QueueAttributeName, string>>,
): Promise<string> {
  try {
    const out = await client.send(
      new CreateQueueCommand({ QueueName: name, Attributes: attributes }),
    );
    if (!out.QueueUrl) throw new Error(`CreateQueue ${name} returned no URL`);
    return out.QueueUrl;
  } catch (error) {
    // CreateQueue is idempotent only while the attributes match; an existing queue with
    // other ones (definitions changed since) is brought in line instead.
    const name_ = (error as { name?: string }).name;
    if (name_ !== "QueueNameExists" && name_ !== "QueueAlreadyExists") throw error;
    const { QueueUrl } = await client.send(new GetQueueUrlCommand({ QueueName: name }));
    if (!QueueUrl) throw error;
    // FifoQueue cannot change after creation; the name check above keeps it right.
    const { FifoQueue: _fifo, ...changeable } = attributes;
    await client.send(new SetQueueAttributesCommand({ QueueUrl, Attributes: changeable }));
    return QueueUrl;
  }
}

async function queueArn(client: SQSClient, url: string): Promise<string> {
  const out = await client.send(
    new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["QueueArn"] }),
  );
  const arn = out.Attributes?.QueueArn;
  if (!arn) throw new Error(`no QueueArn for ${url}`);
  return arn;
}
