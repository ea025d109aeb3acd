/**
 * The figures of figures.ts on Lambda: CloudWatch embedded metric format through
 * Powertools Metrics. Each figure is its own single-metric line, written at once, so nothing
 * waits for a flush at the end of an invocation and every figure keeps its own dimensions.
 */
import { type Metrics, MetricUnit } from "@aws-lambda-powertools/metrics";
import type { QueueConfig } from "../config/schema.ts";
import type { RequestStore } from "../core/ports.ts";
import type { RequestStatus } from "../core/request.ts";
import {
  CLOUDWATCH_METRICS,
  countQueueRequests,
  type FigureSink,
  GAUGE_STATUSES,
  type WebhookResult,
} from "./figures.ts";

type Unit = (typeof MetricUnit)[keyof typeof MetricUnit];

/** Publishes lifecycle figures as EMF lines. */
export class EmfMetrics implements FigureSink {
  constructor(private readonly metrics: Metrics) {}

  submitted(queue: string): void {
    this.#one(CLOUDWATCH_METRICS.submitted, MetricUnit.Count, 1, { queue });
  }

  finished(queue: string, status: RequestStatus): void {
    this.#one(CLOUDWATCH_METRICS.finished, MetricUnit.Count, 1, { queue, status });
  }

  waited(queue: string, seconds: number): void {
    this.#one(CLOUDWATCH_METRICS.wait, MetricUnit.Seconds, seconds, { queue });
  }

  ran(queue: string, seconds: number): void {
    this.#one(CLOUDWATCH_METRICS.run, MetricUnit.Seconds, seconds, { queue });
  }

  webhookDelivery(result: WebhookResult): void {
    this.#one(CLOUDWATCH_METRICS.webhookDeliveries, MetricUnit.Count, 1, { result });
  }

  /** The queue gauge, read from the store (the repair sweep publishes it each run). */
  async publishQueueRequests(
    store: RequestStore,
    queues: Readonly<Record<string, QueueConfig>>,
  ): Promise<void> {
    for (const [queue, byStatus] of await countQueueRequests(store, queues)) {
      for (const status of GAUGE_STATUSES) {
        this.#one(CLOUDWATCH_METRICS.queueRequests, MetricUnit.Count, byStatus[status], {
          queue,
          status,
        });
      }
    }
  }

  #one(name: string, unit: Unit, value: number, dimensions: Record<string, string>): void {
    const single = this.metrics.singleMetric();
    for (const [k, v] of Object.entries(dimensions)) single.addDimension(k, v);
    single.addMetric(name, unit, value);
  }
}
