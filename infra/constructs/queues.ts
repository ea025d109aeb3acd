import { Duration } from "aws-cdk-lib";
import type * as iam from "aws-cdk-lib/aws-iam";
import * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import {
  DISPATCH_QUEUE,
  EVENTS_QUEUE,
  WEBHOOKS_QUEUE,
} from "../../functions/adapters/aws/definitions.ts";

/**
 * The three work queues and their dead-letter queues, shaped by `definitions.ts`:
 * the FIFO dispatch queue (one message group per longrun queue, so one dispatcher works on
 * a queue at a time), the standard queue the Batch state-change rule feeds, and the
 * standard queue of webhook deliveries (retries are message timers on it).
 */
export class Queues extends Construct {
  /** Wake-ups for the dispatcher (FIFO). */
  readonly dispatch: sqs.Queue;
  /** Where dispatch messages go after `maxReceiveCount` failed deliveries. */
  readonly dispatchDlq: sqs.Queue;
  /** Batch "Job State Change" events from EventBridge. */
  readonly events: sqs.Queue;
  /** Where events go after `maxReceiveCount` failed deliveries. */
  readonly eventsDlq: sqs.Queue;
  /** Webhook deliveries, each try one message. */
  readonly webhooks: sqs.Queue;
  /** Deliveries given up after the last try of the schedule (or failing the handler). */
  readonly webhooksDlq: sqs.Queue;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    // SSE-SQS costs nothing and needs no key policy for EventBridge to send to the queue
    // (a customer managed key would need one); enforceSSL refuses plain-HTTP clients.
    const common = {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    } as const;
    // DLQs keep messages for the SQS maximum so an operator has two weeks to redrive.
    const dlqRetention = Duration.days(14);

    this.dispatchDlq = new sqs.Queue(this, "DispatchDlq", {
      ...common,
      fifo: true,
      retentionPeriod: dlqRetention,
    });
    this.dispatch = new sqs.Queue(this, "Dispatch", {
      ...common,
      fifo: DISPATCH_QUEUE.fifo,
      contentBasedDeduplication: DISPATCH_QUEUE.contentBasedDeduplication,
      visibilityTimeout: Duration.seconds(DISPATCH_QUEUE.visibilityTimeoutSeconds),
      deadLetterQueue: { queue: this.dispatchDlq, maxReceiveCount: DISPATCH_QUEUE.maxReceiveCount },
    });

    this.eventsDlq = new sqs.Queue(this, "EventsDlq", { ...common, retentionPeriod: dlqRetention });
    this.events = new sqs.Queue(this, "Events", {
      ...common,
      visibilityTimeout: Duration.seconds(EVENTS_QUEUE.visibilityTimeoutSeconds),
      // A missed job event is repaired by the sweep, but keep events long enough to survive
      // a handler outage of several days.
      retentionPeriod: Duration.days(4),
      deadLetterQueue: { queue: this.eventsDlq, maxReceiveCount: EVENTS_QUEUE.maxReceiveCount },
    });

    this.webhooksDlq = new sqs.Queue(this, "WebhooksDlq", {
      ...common,
      retentionPeriod: dlqRetention,
    });
    this.webhooks = new sqs.Queue(this, "Webhooks", {
      ...common,
      visibilityTimeout: Duration.seconds(WEBHOOKS_QUEUE.visibilityTimeoutSeconds),
      // A delivery waits at most 15 minutes per message (later tries are re-sent messages),
      // so four days cover a long outage of the handler.
      retentionPeriod: Duration.days(4),
      deadLetterQueue: {
        queue: this.webhooksDlq,
        maxReceiveCount: WEBHOOKS_QUEUE.maxReceiveCount,
      },
    });
  }

  /** Every dead-letter queue, for alarms. */
  get deadLetterQueues(): sqs.Queue[] {
    return [this.dispatchDlq, this.eventsDlq, this.webhooksDlq];
  }

  /** SendMessage on the webhooks queue: whoever changes a request's state, and the retries. */
  grantSendWebhooks(grantee: iam.IGrantable): iam.Grant {
    return this.webhooks.grantSendMessages(grantee);
  }

  /** SendMessage on the dispatch queue: whoever wakes a dispatcher. */
  grantWakeDispatcher(grantee: iam.IGrantable): iam.Grant {
    return this.dispatch.grantSendMessages(grantee);
  }
}
