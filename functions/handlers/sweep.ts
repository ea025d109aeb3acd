/**
 * The scheduled repair sweep: expires queue TTLs, applies job states whose events were
 * missed, relaunches claims whose dispatcher died, reports counter drift, re-wakes queues
 * with work and free slots, and publishes per-queue health metrics for the alarms.
 */
import { Metrics, MetricUnit } from "@aws-lambda-powertools/metrics";
import type { CoreDeps } from "../core/usecases/deps.ts";
import { type RepairOptions, type RepairReport, repairSweep } from "../core/usecases/repair.ts";
import { emfMetrics, lambdaDeps, logger } from "./context.ts";

/** Metric names the CDK alarms watch (infra/constructs/operations.ts SWEEP_METRICS). */
export const SWEEP_METRIC_NAMES = {
  stuckStarting: "StuckStartingRequests",
  oldestQueuedAge: "OldestQueuedAgeSeconds",
} as const;

/**
 * Longer than any dispatcher invocation may hold a claim (its Lambda timeout), so a
 * relaunch can never race the dispatcher that made the claim.
 */
export const RELAUNCH_STARTING_AFTER_MS = 10 * 60_000;
/** A job Batch no longer knows (its history is kept for days) is lost after this long. */
export const LOST_JOB_AFTER_MS = 30 * 60_000;

const metrics = new Metrics({ namespace: "longrun", serviceName: "longrun" });

/** Publishes one value per queue and metric, dimensioned by `queue` only (plus service). */
export function publishHealth(report: RepairReport, sink: Metrics = metrics): void {
  for (const [queue, h] of Object.entries(report.health)) {
    // A single-metric instance flushes (and forgets its dimensions) on every addMetric, so
    // each metric needs its own, or the second one is published without the queue.
    const values = [
      [SWEEP_METRIC_NAMES.stuckStarting, MetricUnit.Count, h.stuckStarting],
      [SWEEP_METRIC_NAMES.oldestQueuedAge, MetricUnit.Seconds, h.oldestQueuedAgeSeconds],
    ] as const;
    for (const [name, unit, value] of values) {
      const single = sink.singleMetric();
      single.addDimension("queue", queue);
      single.addMetric(name, unit, value);
    }
  }
}

/** Builds the handler over given ports (tests pass ports on an emulator). */
export function createSweepHandler(
  deps: CoreDeps,
  options: RepairOptions = {
    relaunchStartingAfterMs: RELAUNCH_STARTING_AFTER_MS,
    lostJobAfterMs: LOST_JOB_AFTER_MS,
  },
): () => Promise<RepairReport> {
  return async () => {
    const report = await repairSweep(deps, options);
    if (report.counterDrift.length > 0) {
      logger.error("queue counters differ from a recount", { drift: report.counterDrift });
    }
    logger.info("repair sweep", { ...report });
    publishHealth(report);
    await emfMetrics.publishQueueRequests(deps.store, deps.queues);
    return report;
  };
}

let cached: ReturnType<typeof createSweepHandler> | undefined;

export const handler = (): Promise<RepairReport> => {
  cached ??= createSweepHandler(lambdaDeps());
  return cached();
};
