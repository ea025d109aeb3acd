import type { QueueCounts } from "../ports.ts";
import type { RequestRecord } from "../request.ts";
import { RequestStatus } from "../request.ts";
import type { CoreDeps } from "./deps.ts";
import { expireQueued, finishAttempt, launchAttempt, recordJobEvent } from "./lifecycle.ts";

type RepairDeps = Pick<CoreDeps, "store" | "trigger" | "compute" | "clock" | "queues" | "onChange">;

export interface RepairOptions {
  /**
   * A STARTING request without a job for longer than this had its dispatcher die between
   * the claim and the launch; it is launched again (the compute finds a job already
   * submitted for that attempt instead of submitting a second). Must exceed the longest a
   * dispatcher may take; undefined: never (embedded mode, where a restart recovers instead).
   */
  relaunchStartingAfterMs?: number;
  /** A request whose job the backend no longer knows is lost after this long. */
  lostJobAfterMs?: number;
  /** At most this many in-flight requests are looked at per sweep. */
  limit?: number;
  /** Write recounted counters back (an operator's repair; see the counters step). */
  fixCounters?: boolean;
  /** A request STARTING for longer than this counts as stuck in the report (default 10 min). */
  stuckStartingAfterMs?: number;
}

/** Per-queue health figures for operations (metrics, alarms). */
export interface QueueHealth {
  /** Requests STARTING for longer than `stuckStartingAfterMs`. */
  stuckStarting: number;
  /** Age of the oldest QUEUED request in seconds; 0 when none (or the store cannot say). */
  oldestQueuedAgeSeconds: number;
}

export interface RepairReport {
  expired: number;
  /** In-flight requests whose backend state was applied (missed events). */
  reconciled: number;
  relaunched: number;
  lost: number;
  /** Queues whose stored counters differ from a recount (left as they are). */
  counterDrift: { queue: string; stored: QueueCounts; counted: QueueCounts }[];
  woken: string[];
  health: Record<string, QueueHealth>;
}

/**
 * The repair sweep: what a crash or a lost message may have left behind, put right. It is
 * never the normal path — every step is one the event-driven flow would have taken — and
 * it is safe to run at any time, concurrently with everything else, because each step is
 * the same conditional write the normal path uses.
 */
export async function repairSweep(
  deps: RepairDeps,
  options: RepairOptions = {},
): Promise<RepairReport> {
  const report: RepairReport = {
    expired: await expireQueued(deps),
    reconciled: 0,
    relaunched: 0,
    lost: 0,
    counterDrift: [],
    woken: [],
    health: {},
  };
  const now = deps.clock.now();
  const active = await deps.store.findActive(options.limit ?? 10_000);

  // Missed job events: apply what the backend says of each job (stale ones change nothing).
  if (deps.compute.inspect) {
    const withJob = active.filter((r) => r.jobRef !== null);
    const states = withJob.length > 0 ? await deps.compute.inspect(withJob) : new Map();
    for (const r of withJob) {
      const event = states.get(r.id);
      if (event) {
        await recordJobEvent(event, deps);
        report.reconciled++;
      } else if (
        event === null &&
        options.lostJobAfterMs !== undefined &&
        now - r.updatedAt > options.lostJobAfterMs
      ) {
        await finishAttempt(
          r,
          { outcome: "lost", message: `the job of attempt ${r.attempt} is gone` },
          deps,
        );
        report.lost++;
      }
    }
  }

  // A cancel whose stop did not reach the job (a failed TerminateJob): ask again.
  for (const r of active) {
    if (r.cancelRequested && r.jobRef !== null) await deps.compute.stop(r, "cancel");
  }

  // Claimed but never launched: the dispatcher died in between.
  if (options.relaunchStartingAfterMs !== undefined) {
    const limit = options.relaunchStartingAfterMs;
    for (const r of active) {
      if (!isUnlaunched(r, now, limit)) continue;
      const queue = Object.hasOwn(deps.queues, r.queue) ? deps.queues[r.queue] : undefined;
      if (queue) {
        await launchAttempt(r, queue, deps);
        report.relaunched++;
      } else {
        await finishAttempt(r, { outcome: "lost", message: "its queue no longer exists" }, deps);
        report.lost++;
      }
    }
  }

  // Counters move in the same transaction as the requests, so a drift means a bug or a
  // hand edit. Report it; fix it only when asked: on AWS the recount reads an eventually
  // consistent index, and a wrong "fix" of `running` could break maxRunning.
  if (deps.store.recount) {
    const counted = await deps.store.recount({ fix: options.fixCounters === true });
    for (const [queue, c] of Object.entries(counted)) {
      const stored = await deps.store.queueCounts(queue);
      if (
        options.fixCounters !== true &&
        (stored.queued !== c.queued || stored.running !== c.running)
      ) {
        report.counterDrift.push({ queue, stored, counted: c });
      }
    }
  }

  // Wake-ups lost to a crash: any queue with work waiting and a free slot.
  for (const name of Object.keys(deps.queues)) {
    const q = deps.queues[name];
    if (!q) continue;
    const counts = await deps.store.queueCounts(name);
    if (counts.queued > 0 && counts.running < q.maxRunning) {
      await deps.trigger.wake(name);
      report.woken.push(name);
    }
  }
  const stuckAfter = options.stuckStartingAfterMs ?? 10 * 60_000;
  const after = await deps.store.findActive(options.limit ?? 10_000);
  for (const name of Object.keys(deps.queues)) {
    const oldest = deps.store.oldestQueuedAt ? await deps.store.oldestQueuedAt(name) : null;
    report.health[name] = {
      stuckStarting: after.filter(
        (r) =>
          r.queue === name && r.status === RequestStatus.STARTING && now - r.updatedAt > stuckAfter,
      ).length,
      oldestQueuedAgeSeconds: oldest === null ? 0 : Math.max(0, Math.floor((now - oldest) / 1000)),
    };
  }
  return report;
}

function isUnlaunched(r: RequestRecord, now: number, afterMs: number): boolean {
  return r.status === RequestStatus.STARTING && r.jobRef === null && now - r.updatedAt > afterMs;
}
