/**
 * The operational figures of SPEC §2 "GET /v1/metrics", independent of where they go: the
 * embedded server keeps them in a prom-client registry (prometheus.ts), the Lambda handlers
 * publish them to CloudWatch in embedded metric format (emf.ts). This module is their one
 * home: names, help texts, buckets, and how lifecycle facts become figures.
 */
import type { QueueConfig } from "../config/schema.ts";
import type { RequestStore } from "../core/ports.ts";
import type { RequestRecord, RequestStatus } from "../core/request.ts";
import type { ChangeEvent, LifecycleEvent } from "../core/usecases/deps.ts";

/** Prometheus names and labels, exactly as SPEC §2 lists them. No tenant label, ever. */
export const PROM_METRICS = {
  queueRequests: {
    name: "longrun_queue_requests",
    help: "Requests of the queue in QUEUED, STARTING and RUNNING, read from the store on scrape.",
    labels: ["queue", "status"],
  },
  submitted: {
    name: "longrun_requests_submitted_total",
    help: "Requests accepted (a replayed idempotent submit is not a new one).",
    labels: ["queue"],
  },
  finished: {
    name: "longrun_requests_finished_total",
    help: "Requests that reached a final status: SUCCEEDED, FAILED, CANCELLED or EXPIRED.",
    labels: ["queue", "status"],
  },
  wait: {
    name: "longrun_wait_seconds",
    help: "From submit to the first RUNNING of a request.",
    labels: ["queue"],
  },
  run: {
    name: "longrun_run_seconds",
    help: "From RUNNING to the end of one attempt, per attempt.",
    labels: ["queue"],
  },
  webhookDeliveries: {
    name: "longrun_webhook_deliveries_total",
    help: "Webhook delivery tries by result: delivered (2xx) or failed (retried later or dead).",
    labels: ["result"],
  },
} as const;

/**
 * The same figures on CloudWatch (Lambda, embedded metric format through Powertools
 * Metrics): namespace and `service` dimension from POWERTOOLS_ENV, plus the dimensions named
 * here. The stack's dashboard and alarms (infra/constructs/operations.ts) read these names.
 */
export const CLOUDWATCH_METRICS = {
  /** Count; dimension `queue`. */
  submitted: "RequestsSubmitted",
  /** Count; dimensions `queue`, `status` (a final status). */
  finished: "RequestsFinished",
  /** Seconds; dimension `queue`. */
  wait: "WaitSeconds",
  /** Seconds per attempt; dimension `queue`. */
  run: "RunSeconds",
  /** Count; dimension `result` (delivered, failed). */
  webhookDeliveries: "WebhookDeliveries",
  /** Count, published by the repair sweep; dimensions `queue`, `status` (QUEUED, STARTING, RUNNING). */
  queueRequests: "QueueRequests",
} as const;

/** The statuses `longrun_queue_requests` reports. */
export const GAUGE_STATUSES = ["QUEUED", "STARTING", "RUNNING"] as const;

/**
 * Histogram buckets in seconds, from a second to a day: jobs run minutes to hours and wait
 * seconds to hours, so sub-second resolution says nothing and the top must reach a day.
 */
export const DURATION_BUCKETS = [
  1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14_400, 28_800, 86_400,
] as const;

/** A webhook try's outcome as the `result` label says it. */
export type WebhookResult = "delivered" | "failed";

/** Where figures go: a prom-client registry or CloudWatch. */
export interface FigureSink {
  submitted(queue: string): void;
  finished(queue: string, status: RequestStatus): void;
  waited(queue: string, seconds: number): void;
  ran(queue: string, seconds: number): void;
  webhookDelivery(result: WebhookResult): void;
}

/**
 * How many attempt starts are remembered while their attempts run. Far above what any
 * deployment runs at once; the bound only keeps starts whose end was never heard (a
 * crash) from piling up.
 */
const MAX_RUNNING_REMEMBERED = 50_000;

/**
 * Turns the core's lifecycle hooks (`onChange`, `observe`) into figures. Never throws: a
 * metric must not fail the write it describes.
 */
export class LifecycleFigures {
  /** `<request id>#<attempt>` → when that attempt's job began to run (epoch ms). */
  readonly #runningSince = new Map<string, number>();

  constructor(private readonly sink: FigureSink) {}

  /** For `CoreDeps.onChange`: finished requests, and the wait before the first RUNNING. */
  onChange(request: RequestRecord, change: ChangeEvent): void {
    try {
      if (change === "completed") this.sink.finished(request.queue, request.status);
      else if (change === "started" && request.startedAt !== null) {
        this.sink.waited(request.queue, Math.max(0, request.startedAt - request.createdAt) / 1000);
      }
    } catch {
      // A figure lost is better than a state change reported as failed.
    }
  }

  /** For `CoreDeps.observe`: submits and the run time of each attempt. */
  observe(event: LifecycleEvent): void {
    try {
      const { request } = event;
      if (event.type === "submitted") {
        this.sink.submitted(request.queue);
      } else if (event.type === "running") {
        if (this.#runningSince.size >= MAX_RUNNING_REMEMBERED) {
          // Maps iterate in insertion order: the oldest entry goes first.
          const oldest = this.#runningSince.keys().next().value;
          if (oldest !== undefined) this.#runningSince.delete(oldest);
        }
        this.#runningSince.set(`${request.id}#${event.attempt}`, event.at);
      } else {
        const key = `${request.id}#${event.attempt}`;
        // The backend's own start wins; else this process saw the RUNNING; else the
        // attempt never ran here (failed to launch, or ran under an earlier process).
        const since = event.startedAt ?? this.#runningSince.get(key);
        this.#runningSince.delete(key);
        if (since !== undefined) this.sink.ran(request.queue, Math.max(0, event.at - since) / 1000);
      }
    } catch {
      // As above.
    }
  }

  /** For the webhook worker's `onAttempt`. */
  webhookTried(ok: boolean): void {
    try {
      this.sink.webhookDelivery(ok ? "delivered" : "failed");
    } catch {
      // As above.
    }
  }
}

/**
 * Each queue's QUEUED, STARTING and RUNNING counts: QUEUED from the queue's counter, the
 * others from the active requests, of which there are at most the sum of the queues'
 * `maxRunning`, so this costs the same whatever the table holds.
 */
export async function countQueueRequests(
  store: RequestStore,
  queues: Readonly<Record<string, QueueConfig>>,
): Promise<Map<string, Record<(typeof GAUGE_STATUSES)[number], number>>> {
  const names = Object.keys(queues);
  const limit = names.reduce((n, q) => n + (queues[q]?.maxRunning ?? 0), 0) + 1;
  const [counts, active] = await Promise.all([
    Promise.all(names.map((q) => store.queueCounts(q))),
    store.findActive(limit),
  ]);
  const out = new Map<string, Record<(typeof GAUGE_STATUSES)[number], number>>();
  names.forEach((queue, i) => {
    out.set(queue, { QUEUED: counts[i]?.queued ?? 0, STARTING: 0, RUNNING: 0 });
  });
  for (const r of active) {
    const row = out.get(r.queue);
    if (row && (r.status === "STARTING" || r.status === "RUNNING")) row[r.status]++;
  }
  return out;
}
