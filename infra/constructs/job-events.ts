import * as events from "aws-cdk-lib/aws-events";
import * as targets from "aws-cdk-lib/aws-events-targets";
import type * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { BATCH_EVENT_DETAIL_TYPES } from "../../functions/adapters/aws/batch-events.ts";

/**
 * The EventBridge pattern fields the rule matches (the events handler parses the rest): every
 * job state change, RUNNABLE included, and the "job queue blocked" event Batch sends with the
 * reason a RUNNABLE job waits (SPEC `no_capacity`).
 */
export const BATCH_STATE_CHANGE = {
  source: "aws.batch",
  detailTypes: BATCH_EVENT_DETAIL_TYPES,
} as const;

/** Props of {@link JobEvents}. */
export interface JobEventsProps {
  /** Only jobs of these Batch job queues are longrun's. */
  readonly jobQueueArns: readonly string[];
  /** Where the events go (the events handler's queue). */
  readonly queue: sqs.IQueue;
  /** Events EventBridge could not deliver to {@link queue}. */
  readonly deadLetterQueue: sqs.IQueue;
}

/**
 * Batch job state changes (and blocked-queue events) of longrun's job queues → SQS. A queue sits between EventBridge
 * and the handler so that bursts are batched, failures retried and poison events parked in a
 * DLQ, and an outage of the handler loses nothing.
 */
export class JobEvents extends Construct {
  readonly rule: events.Rule;

  constructor(scope: Construct, id: string, props: JobEventsProps) {
    super(scope, id);
    this.rule = new events.Rule(this, "BatchJobStateChange", {
      description: "longrun: Batch job state changes of its job queues",
      eventPattern: {
        source: [BATCH_STATE_CHANGE.source],
        detailType: [...BATCH_STATE_CHANGE.detailTypes],
        detail: { jobQueue: [...props.jobQueueArns] },
      },
      targets: [
        new targets.SqsQueue(props.queue, {
          deadLetterQueue: props.deadLetterQueue,
        }),
      ],
    });
  }
}
