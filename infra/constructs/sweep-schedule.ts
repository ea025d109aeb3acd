import { Duration } from "aws-cdk-lib";
import * as events from "aws-cdk-lib/aws-events";
import * as targets from "aws-cdk-lib/aws-events-targets";
import type * as lambda from "aws-cdk-lib/aws-lambda";
import type * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";

/** How often the repair sweep runs on AWS. */
export const SWEEP_INTERVAL = Duration.minutes(5);

/** Props of {@link SweepSchedule}. */
export interface SweepScheduleProps {
  readonly handler: lambda.IFunction;
  /** Invocations EventBridge could not deliver. */
  readonly deadLetterQueue: sqs.IQueue;
  /** Default {@link SWEEP_INTERVAL}. */
  readonly interval?: Duration;
}

/**
 * Runs the repair sweep on a fixed rate. The sweep only repairs what crashes and lost
 * events leave behind (ARCHITECTURE "Repair sweep"); the normal path is event-driven, so the
 * interval bounds repair latency, not scheduling latency.
 */
export class SweepSchedule extends Construct {
  readonly rule: events.Rule;

  constructor(scope: Construct, id: string, props: SweepScheduleProps) {
    super(scope, id);
    this.rule = new events.Rule(this, "Rule", {
      description: "longrun repair sweep",
      schedule: events.Schedule.rate(props.interval ?? SWEEP_INTERVAL),
      targets: [
        new targets.LambdaFunction(props.handler, {
          deadLetterQueue: props.deadLetterQueue,
          // A missed run is covered by the next one; an old event is not worth delivering.
          maxEventAge: Duration.minutes(5),
          retryAttempts: 2,
        }),
      ],
    });
  }
}
