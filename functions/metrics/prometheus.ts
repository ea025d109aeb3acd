/**
 * `GET /v1/metrics` of the server (both backends): a prom-client registry per server, its
 * counters and histograms fed by {@link LifecycleFigures}, its gauge read from the store on
 * every scrape so it is never stale.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { QueueConfig } from "../config/schema.ts";
import type { RequestStore } from "../core/ports.ts";
import { type RequestStatus, TERMINAL_STATUSES } from "../core/request.ts";
import {
  countQueueRequests,
  DURATION_BUCKETS,
  type FigureSink,
  GAUGE_STATUSES,
  LifecycleFigures,
  PROM_METRICS,
  type WebhookResult,
} from "./figures.ts";

type Label<K extends keyof typeof PROM_METRICS> = (typeof PROM_METRICS)[K]["labels"][number];

/** The server's registry and the lifecycle hooks that feed it. */
export class PrometheusMetrics implements FigureSink {
  readonly registry = new Registry();
  /** Pass its `onChange`/`observe` into CoreDeps and `webhookTried` to the webhook worker. */
  readonly figures = new LifecycleFigures(this);
  readonly #queueRequests: Gauge<Label<"queueRequests">>;
  readonly #submitted: Counter<Label<"submitted">>;
  readonly #finished: Counter<Label<"finished">>;
  readonly #wait: Histogram<Label<"wait">>;
  readonly #run: Histogram<Label<"run">>;
  readonly #webhooks: Counter<Label<"webhookDeliveries">>;

  constructor(private readonly queues: Readonly<Record<string, QueueConfig>>) {
    const registers = [this.registry];
    const m = PROM_METRICS;
    this.#queueRequests = new Gauge({
      ...m.queueRequests,
      labelNames: m.queueRequests.labels,
      registers,
    });
    this.#submitted = new Counter({ ...m.submitted, labelNames: m.submitted.labels, registers });
    this.#finished = new Counter({ ...m.finished, labelNames: m.finished.labels, registers });
    const buckets = [...DURATION_BUCKETS];
    this.#wait = new Histogram({ ...m.wait, labelNames: m.wait.labels, buckets, registers });
    this.#run = new Histogram({ ...m.run, labelNames: m.run.labels, buckets, registers });
    this.#webhooks = new Counter({
      ...m.webhookDeliveries,
      labelNames: m.webhookDeliveries.labels,
      registers,
    });
    // Every configured queue shows from the first scrape, zeros included, so a rate() over
    // a queue that has seen nothing yet is 0 rather than absent.
    for (const queue of Object.keys(queues)) {
      this.#submitted.inc({ queue }, 0);
      for (const status of TERMINAL_STATUSES) this.#finished.inc({ queue, status }, 0);
      this.#wait.zero({ queue });
      this.#run.zero({ queue });
    }
    for (const result of ["delivered", "failed"] as const) this.#webhooks.inc({ result }, 0);
  }

  submitted(queue: string): void {
    this.#submitted.inc({ queue });
  }

  finished(queue: string, status: RequestStatus): void {
    this.#finished.inc({ queue, status });
  }

  waited(queue: string, seconds: number): void {
    this.#wait.observe({ queue }, seconds);
  }

  ran(queue: string, seconds: number): void {
    this.#run.observe({ queue }, seconds);
  }

  webhookDelivery(result: WebhookResult): void {
    this.#webhooks.inc({ result });
  }

  /**
   * The text exposition (format 0.0.4). The gauge is read from the store now, so a scrape
   * is never stale (see {@link countQueueRequests} for its cost).
   */
  async render(store: RequestStore): Promise<{ contentType: string; body: string }> {
    const counts = await countQueueRequests(store, this.queues);
    this.#queueRequests.reset();
    for (const [queue, byStatus] of counts) {
      for (const status of GAUGE_STATUSES) {
        this.#queueRequests.set({ queue, status }, byStatus[status]);
      }
    }
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
