import { Duration } from "aws-cdk-lib";
import type * as apigw from "aws-cdk-lib/aws-apigatewayv2";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as actions from "aws-cdk-lib/aws-cloudwatch-actions";
import type * as lambda from "aws-cdk-lib/aws-lambda";
import * as sns from "aws-cdk-lib/aws-sns";
import * as subscriptions from "aws-cdk-lib/aws-sns-subscriptions";
import type * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { POWERTOOLS_ENV } from "./functions.ts";

/**
 * The custom metrics the repair sweep publishes (Powertools Metrics / EMF) and the alarms
 * here watch. The handler must use exactly these names: namespace
 * `POWERTOOLS_METRICS_NAMESPACE`, dimensions `service` (Powertools adds it from
 * `POWERTOOLS_SERVICE_NAME`) and `queue` (the longrun queue name) — no other dimensions,
 * since CloudWatch matches the whole dimension set. One value per queue per sweep run.
 */
export const SWEEP_METRICS = {
  namespace: POWERTOOLS_ENV.POWERTOOLS_METRICS_NAMESPACE,
  serviceDimension: { service: POWERTOOLS_ENV.POWERTOOLS_SERVICE_NAME },
  queueDimension: "queue",
  /** Count of requests in STARTING longer than the sweep's stale-STARTING threshold (unit Count). */
  stuckStarting: "StuckStartingRequests",
  /** Age of the oldest QUEUED request of the queue, 0 when none (unit Seconds). */
  oldestQueuedAge: "OldestQueuedAgeSeconds",
} as const;

/** Props of {@link Operations}. */
export interface OperationsProps {
  /** longrun queues with their queue TTL (the oldest-QUEUED alarm fires at half of it). */
  readonly queues: readonly { readonly name: string; readonly queueTtlSeconds: number }[];
  readonly functions: readonly lambda.IFunction[];
  readonly deadLetterQueues: readonly sqs.IQueue[];
  /** Work queues, for depth and age graphs. */
  readonly workQueues: readonly sqs.IQueue[];
  readonly httpApi: apigw.IHttpApi;
  /** Notified by email of every alarm when set. */
  readonly alarmEmail?: string | undefined;
}

/**
 * Alarms (dead letters, handler errors, API 5xx, requests stuck in STARTING, QUEUED
 * requests nearing expiry) notifying one SNS topic, and a dashboard of the same signals.
 */
export class Operations extends Construct {
  readonly alarmTopic: sns.Topic;
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: OperationsProps) {
    super(scope, id);
    this.alarmTopic = new sns.Topic(this, "AlarmTopic", { enforceSSL: true });
    if (props.alarmEmail) {
      this.alarmTopic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    }
    const notify = new actions.SnsAction(this.alarmTopic);
    const add = (alarm: cloudwatch.Alarm): void => {
      alarm.addAlarmAction(notify);
      alarm.addOkAction(notify);
      this.alarms.push(alarm);
    };
    const five = Duration.minutes(5);

    props.deadLetterQueues.forEach((queue, i) => {
      add(
        new cloudwatch.Alarm(this, `DeadLetters${i}`, {
          alarmDescription: `Messages are waiting in dead-letter queue ${queue.node.path}: inspect, fix, redrive`,
          metric: queue.metricApproximateNumberOfMessagesVisible({
            period: five,
            statistic: "Maximum",
          }),
          threshold: 1,
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
      );
    });
    props.functions.forEach((fn, i) => {
      add(
        new cloudwatch.Alarm(this, `HandlerErrors${i}`, {
          alarmDescription: `Handler ${fn.node.path} failed invocations`,
          metric: fn.metricErrors({ period: five, statistic: "Sum" }),
          threshold: 1,
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
      );
    });
    add(
      new cloudwatch.Alarm(this, "Api5xx", {
        alarmDescription: "The API answered 5xx (SPEC: no input may produce one)",
        metric: props.httpApi.metricServerError({ period: five, statistic: "Sum" }),
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );

    const sweepMetric = (name: string, queue: string, statistic: string) =>
      new cloudwatch.Metric({
        namespace: SWEEP_METRICS.namespace,
        metricName: name,
        dimensionsMap: { ...SWEEP_METRICS.serviceDimension, [SWEEP_METRICS.queueDimension]: queue },
        period: five,
        statistic,
      });
    for (const queue of props.queues) {
      add(
        new cloudwatch.Alarm(this, `StuckStarting-${queue.name}`, {
          alarmDescription: `Requests of queue ${queue.name} stay STARTING (Batch cannot place them, or the dispatcher lost them)`,
          metric: sweepMetric(SWEEP_METRICS.stuckStarting, queue.name, "Maximum"),
          threshold: 1,
          // Two sweeps in a row: a single sighting may be a job still pulling its image.
          evaluationPeriods: 2,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
      );
      add(
        new cloudwatch.Alarm(this, `OldestQueued-${queue.name}`, {
          alarmDescription: `The oldest QUEUED request of ${queue.name} has waited half its queueTtlSeconds: raise maxRunning or maxvCpus, or check capacity`,
          metric: sweepMetric(SWEEP_METRICS.oldestQueuedAge, queue.name, "Maximum"),
          threshold: Math.max(60, Math.floor(queue.queueTtlSeconds / 2)),
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
      );
    }

    this.dashboard = new cloudwatch.Dashboard(this, "Dashboard", {
      defaultInterval: Duration.hours(6),
    });
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: "API requests and errors",
        left: [
          props.httpApi.metricCount({ period: five }),
          props.httpApi.metricClientError({ period: five }),
          props.httpApi.metricServerError({ period: five }),
        ],
        right: [props.httpApi.metricLatency({ period: five, statistic: "p99" })],
      }),
      new cloudwatch.GraphWidget({
        title: "Handler errors",
        left: props.functions.map((fn) => fn.metricErrors({ period: five })),
      }),
      new cloudwatch.GraphWidget({
        title: "Handler duration p99",
        left: props.functions.map((fn) => fn.metricDuration({ period: five, statistic: "p99" })),
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: "Work queues: depth and oldest message age",
        left: props.workQueues.map((q) =>
          q.metricApproximateNumberOfMessagesVisible({ period: five }),
        ),
        right: props.workQueues.map((q) => q.metricApproximateAgeOfOldestMessage({ period: five })),
      }),
      new cloudwatch.GraphWidget({
        title: "Dead letters",
        left: props.deadLetterQueues.map((q) =>
          q.metricApproximateNumberOfMessagesVisible({ period: five, statistic: "Maximum" }),
        ),
      }),
      new cloudwatch.GraphWidget({
        title: "Per longrun queue: stuck STARTING / oldest QUEUED age (s)",
        left: props.queues.map((q) => sweepMetric(SWEEP_METRICS.stuckStarting, q.name, "Maximum")),
        right: props.queues.map((q) =>
          sweepMetric(SWEEP_METRICS.oldestQueuedAge, q.name, "Maximum"),
        ),
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({ title: "Alarms", alarms: this.alarms, width: 24 }),
    );
  }
}
