import {
  GetQueueAttributesCommand,
  SetQueueAttributesCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import { describe, expect, it } from "vitest";
import { createQueues, deadLetterQueueName } from "../../functions/adapters/aws/bootstrap-sqs.ts";
import {
  DISPATCH_QUEUE,
  EVENTS_QUEUE,
  resourceNames,
} from "../../functions/adapters/aws/definitions.ts";
import { awsClientConfig, uniqueName } from "./aws.ts";

const attrs = async (sqs: SQSClient, url: string) =>
  (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["All"] })))
    .Attributes ?? {};

describe("createQueues", () => {
  it("creates the FIFO dispatch queue and the events queue, each redriving to its DLQ", async () => {
    const sqs = new SQSClient(awsClientConfig());
    const names = resourceNames(uniqueName("boot"));

    const urls = await createQueues(sqs, names);

    const dispatch = await attrs(sqs, urls.dispatchQueueUrl);
    const dispatchDlq = await attrs(sqs, urls.dispatchDlqUrl);
    expect(urls.dispatchQueueUrl).toMatch(/-dispatch\.fifo$/);
    expect(urls.dispatchDlqUrl).toMatch(/-dispatch-dlq\.fifo$/);
    expect(dispatch.FifoQueue).toBe("true");
    expect(dispatchDlq.FifoQueue).toBe("true");
    expect(dispatch.ContentBasedDeduplication).toBe("false");
    expect(dispatch.VisibilityTimeout).toBe(String(DISPATCH_QUEUE.visibilityTimeoutSeconds));
    expect(JSON.parse(dispatch.RedrivePolicy ?? "{}")).toEqual({
      deadLetterTargetArn: dispatchDlq.QueueArn,
      maxReceiveCount: DISPATCH_QUEUE.maxReceiveCount,
    });
    const events = await attrs(sqs, urls.eventsQueueUrl);
    const eventsDlq = await attrs(sqs, urls.eventsDlqUrl);
    expect(events.FifoQueue).toBeUndefined();
    expect(events.VisibilityTimeout).toBe(String(EVENTS_QUEUE.visibilityTimeoutSeconds));
    expect(JSON.parse(events.RedrivePolicy ?? "{}")).toEqual({
      deadLetterTargetArn: eventsDlq.QueueArn,
      maxReceiveCount: EVENTS_QUEUE.maxReceiveCount,
    });
  });

  it("returns the same queues when run again, and restores drifted attributes", async () => {
    const sqs = new SQSClient(awsClientConfig());
    const names = resourceNames(uniqueName("boot"));
    const first = await createQueues(sqs, names);
    await sqs.send(
      new SetQueueAttributesCommand({
        QueueUrl: first.eventsQueueUrl,
        Attributes: { VisibilityTimeout: "7" },
      }),
    );

    const again = await createQueues(sqs, names);
    const parallel = await Promise.all([createQueues(sqs, names), createQueues(sqs, names)]);

    expect(again).toEqual(first);
    expect(parallel).toEqual([first, first]);
    expect((await attrs(sqs, first.eventsQueueUrl)).VisibilityTimeout).toBe(
      String(EVENTS_QUEUE.visibilityTimeoutSeconds),
    );
  });

  it("names dead-letter queues after their queue", () => {
    expect(deadLetterQueueName("x-dispatch.fifo")).toBe("x-dispatch-dlq.fifo");
    expect(deadLetterQueueName("x-batch-events")).toBe("x-batch-events-dlq");
  });
});
