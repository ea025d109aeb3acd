import { Duration } from "aws-cdk-lib";
import type * as apigw from "aws-cdk-lib/aws-apigatewayv2";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as actions from "aws-cdk-lib/aws-cloudwatch-actions";
import type * as lambda from "aws-cdk-lib/aws-lambda";
import * as sns from "aws-cdk-lib/aws-sns";
import * as subscriptions from "aws-cdk-lib/aws-sns-subscriptions";
import type * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { CLOUDWATCH_METRICS } from "../../functions/metrics/figures.ts";
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

/**
 * The FAILED-rate alarm of each queue: over {@link FAILED_RATE_ALARM.period}, the share of
 * the queue's finished requests that FAILED, once at least `minFailed` did (one failure of
 * one request is no trend).
 */
export const FAILED_RATE_ALARM = {
  period: Duration.minutes(15),
  percent: 25,
  minFailed: 3,
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

    // SPEC §2's figures, published by the handlers in embedded metric format.
    const figure = (
      name: string,
      dimensions: Record<string, string>,
      statistic: string,
      period = five,
    ) =>
      new cloudwatch.Metric({
        namespace: SWEEP_METRICS.namespace,
        metricName: name,
        dimensionsMap: { ...SWEEP_METRICS.serviceDimension, ...dimensions },
        period,
        statistic,
      });
    const finished = (queue: string, status: string, period = five) =>
      figure(CLOUDWATCH_METRICS.finished, { queue, status }, "Sum", period);
    for (const queue of props.queues) {
      const period = FAILED_RATE_ALARM.period;
      const f = "FILL(f, 0)";
      const total = `(FILL(s, 0) + ${f} + FILL(c, 0) + FILL(e, 0))`;
      add(
        new cloudwatch.Alarm(this, `FailedRate-${queue.name}`, {
          alarmDescription: `At least ${FAILED_RATE_ALARM.percent} % of the requests of ${queue.name} that finished in ${period.toMinutes()} minutes FAILED (and at least ${FAILED_RATE_ALARM.minFailed} did): look at their errors and logs`,
          metric: new cloudwatch.MathExpression({
            expression: `IF(${f} >= ${FAILED_RATE_ALARM.minFailed}, 100 * ${f} / ${total}, 0)`,
            usingMetrics: {
              s: finished(queue.name, "SUCCEEDED", period),
              f: finished(queue.name, "FAILED", period),
              c: finished(queue.name, "CANCELLED", period),
              e: finished(queue.name, "EXPIRED", period),
            },
            period,
            label: `FAILED % of finished, ${queue.name}`,
          }),
          threshold: FAILED_RATE_ALARM.percent,
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
      new cloudwatch.GraphWidget({
        title: "Requests: submitted and finished by status",
        left: props.queues.flatMap((q) => [
          figure(CLOUDWATCH_METRICS.submitted, { queue: q.name }, "Sum"),
          ...["SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"].map((status) =>
            finished(q.name, status),
          ),
        ]),
      }),
      new cloudwatch.GraphWidget({
        title: "Queued / starting / running (sweep)",
        left: props.queues.flatMap((q) =>
          ["QUEUED", "STARTING", "RUNNING"].map((status) =>
            figure(CLOUDWATCH_METRICS.queueRequests, { queue: q.name, status }, "Maximum"),
          ),
        ),
      }),
      new cloudwatch.GraphWidget({
        title: "Wait (submit to RUNNING) and run per attempt, p90 (s)",
        left: props.queues.map((q) => figure(CLOUDWATCH_METRICS.wait, { queue: q.name }, "p90")),
        right: props.queues.map((q) => figure(CLOUDWATCH_METRICS.run, { queue: q.name }, "p90")),
      }),
      new cloudwatch.GraphWidget({
        title: "Webhook tries",
        left: ["delivered", "failed"].map((result) =>
          figure(CLOUDWATCH_METRICS.webhookDeliveries, { result }, "Sum"),
        ),
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({ title: "Alarms", alarms: this.alarms, width: 24 }),
    );
  }
}
