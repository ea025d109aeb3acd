import { type QueueConfig, tenantLimits } from "../../config/schema.ts";
import { ConflictError, LaunchLostError, PermanentLaunchError } from "../errors.ts";
import type { ClaimPass, JobEvent, LaunchOptions, TransitionCommand } from "../ports.ts";
import {
  ACTIVE_STATUSES,
  type AttemptOutcome,
  capacityWaitAfter,
  type ErrorCode,
  isTerminal,
  jobAttempts,
  MAX_PLATFORM_RETRIES,
  type RequestRecord,
  RequestStatus,
  retryAfter,
} from "../request.ts";
import { type CoreDeps, getOwned, queueOrThrow } from "./deps.ts";
import { type RequestView, viewOf } from "./queries.ts";

type LifecycleDeps = Pick<
  CoreDeps,
  "store" | "trigger" | "compute" | "clock" | "queues" | "onChange" | "observe"
>;

/** A transition stamped with the time of the change (`updatedAt`). */
function transit(
  deps: Pick<CoreDeps, "store" | "clock">,
  cmd: TransitionCommand,
): Promise<RequestRecord | null> {
  return deps.store.transition({ ...cmd, set: { ...cmd.set, updatedAt: deps.clock.now() } });
}

/** Upper bound of requests one dispatch run starts, so one queue cannot starve the rest. */
const DISPATCH_BATCH = 1000;

/**
 * Starts waiting requests of `queue` while it has free slots, in the order of SPEC §3
 * (priority, then the tenant with the fewest active, then the oldest), each tenant held to
 * its `maxRunningPerTenant`; expires those that outlived their queue TTL on the way. Safe to run concurrently:
 * every claim is a conditional write bounded by `maxRunning`.
 * @returns how many requests it started.
 */
export async function dispatchQueue(queueName: string, deps: LifecycleDeps): Promise<number> {
  const queue = queueOrThrow(deps.queues, queueName);
  let started = 0;
  // One pass: its claims may share what the first one read (ports.ts claimNext).
  const pass: ClaimPass = {};
  for (let i = 0; i < DISPATCH_BATCH; i++) {
    const claim = await deps.store.claimNext(
      queue.name,
      {
        maxRunning: queue.maxRunning,
        maxRunningOf: (tenant) => tenantLimits(queue, tenant).maxRunning,
      },
      deps.clock.now(),
      pass,
    );
    // "held": the waiting tenants all run their share; a finish of theirs wakes the queue.
    if (claim.kind === "full" || claim.kind === "empty" || claim.kind === "held") break;
    if (claim.kind === "expired") {
      deps.onChange?.(claim.request, "completed");
      continue;
    }
    started++;
    await launchAttempt(claim.request, queue, deps, { firstLaunch: true });
  }
  return started;
}

/**
 * Hands a STARTING request's current attempt to the compute backend and records the job's
 * handle. A launch failure counts as a failed attempt; a launch that may or may not have
 * run the job ({@link LaunchLostError}) ends the attempt `lost`, so it is retried once as the
 * platform's loss and never launched twice.
 */
export async function launchAttempt(
  request: RequestRecord,
  queue: QueueConfig,
  deps: LifecycleDeps,
  options: LaunchOptions = {},
): Promise<void> {
  let jobRef: string;
  try {
    ({ jobRef } = await deps.compute.start(request, queue, options));
  } catch (cause) {
    if (deps.compute.retries === "backend" && !(cause instanceof PermanentLaunchError)) {
      // A lost answer (timeout, throttling, a 5xx) may hide a job that was created: leave
      // the request STARTING without a job. The repair sweep launches it again once the
      // dispatcher's time is surely up, and that launch finds a job of this attempt by name.
      return;
    }
    await finishAttempt(
      request,
      cause instanceof LaunchLostError
        ? { outcome: "lost", message: cause.message }
        : { outcome: "failed", message: `could not start the job: ${(cause as Error).message}` },
      deps,
    );
    return;
  }
  const updated = await transit(deps, {
    id: request.id,
    from: ACTIVE_STATUSES,
    attempt: request.attempt,
    set: { jobRef },
  });
  // A cancel that landed while the job was being launched could not reach it yet.
  if (updated?.cancelRequested) await deps.compute.stop(updated, "cancel");
}

/**
 * Applies one job event. Events may come late, twice or out of order: each is a
 * conditional write on the request's status and attempt, and a stale one changes nothing.
 */
export async function recordJobEvent(event: JobEvent, deps: LifecycleDeps): Promise<void> {
  let current = await deps.store.get(event.requestId);
  if (!current) return;
  if (event.attempt > current.attempt && deps.compute.retries === "backend") {
    // The backend retried on its own (AWS Batch retry strategy): catch up to its attempt.
    // Conditioned on the attempt we read, so two events racing advance it once.
    if (current.status !== RequestStatus.STARTING && current.status !== RequestStatus.RUNNING) {
      return;
    }
    await transit(deps, {
      id: current.id,
      from: ACTIVE_STATUSES,
      to: RequestStatus.STARTING,
      attempt: current.attempt,
      set: { attempt: event.attempt },
    });
    current = await deps.store.get(event.requestId);
    if (!current) return;
  }
  if (
    event.type === "exited" &&
    deps.compute.retries === "backend" &&
    event.jobRef !== undefined &&
    event.jobRef === current.jobRef &&
    event.attempt < current.attempt
  ) {
    // The current job ended while waiting for its next attempt (e.g. terminated while
    // RUNNABLE): the backend will not retry it any more, so this is the request's end.
    await finishAttempt(
      current,
      { outcome: event.outcome, message: event.message, at: event.at },
      deps,
    );
    return;
  }
  if (current.attempt !== event.attempt) return;
  switch (event.type) {
    case "starting": {
      const jobRef = event.jobRef && current.jobRef !== event.jobRef ? event.jobRef : undefined;
      // The job's wait for an instance (SPEC no_capacity), only while STARTING at this attempt:
      // a late RUNNABLE after RUNNING, or of an earlier attempt, fails the condition.
      const capacityWait = capacityWaitAfter(
        current,
        event.attempt,
        event.capacity,
        deps.clock.now(),
      );
      if (jobRef === undefined && capacityWait === undefined) return;
      const cmd: TransitionCommand = {
        id: event.requestId,
        from: capacityWait === undefined ? ACTIVE_STATUSES : [RequestStatus.STARTING],
        attempt: event.attempt,
        set: { ...(jobRef ? { jobRef } : {}), ...(capacityWait ? { capacityWait } : {}) },
      };
      // A new job is a change `updatedAt` tells of; a note on the wait is not (the sweep's
      // stuck-STARTING figure goes by `updatedAt`).
      await (jobRef ? transit(deps, cmd) : deps.store.transition(cmd));
      return;
    }
    case "running": {
      const updated = await transit(deps, {
        id: event.requestId,
        from: [RequestStatus.STARTING],
        to: RequestStatus.RUNNING,
        attempt: event.attempt,
        set: {
          startedAt: current.startedAt ?? event.at,
          ...(event.jobRef ? { jobRef: event.jobRef } : {}),
        },
      });
      if (updated) {
        deps.observe?.({ type: "running", request: updated, attempt: event.attempt, at: event.at });
      }
      if (updated && current.startedAt === null) deps.onChange?.(updated, "started");
      return;
    }
    case "progress": {
      const updated = await deps.store.transition({
        id: event.requestId,
        from: ACTIVE_STATUSES,
        attempt: event.attempt,
        set: { progress: { ...event.progress, updatedAt: event.at } },
      });
      if (updated) deps.onChange?.(updated, "progress");
      return;
    }
    case "exited":
      await finishAttempt(
        current,
        {
          outcome: event.outcome,
          message: event.message,
          at: event.at,
          ...(event.startedAt !== undefined ? { startedAt: event.startedAt } : {}),
        },
        deps,
      );
      return;
  }
}

export interface AttemptEnd {
  outcome: AttemptOutcome;
  message?: string | undefined;
  at?: number;
  /** When the attempt's job began to run, where the backend reports it (metrics only). */
  startedAt?: number;
}

/**
 * Ends the request's current attempt: finished (SUCCEEDED, CANCELLED, FAILED) or retried as
 * a new attempt that keeps the slot. Only a request still active at that attempt moves.
 */
export async function finishAttempt(
  seen: RequestRecord,
  end: AttemptEnd,
  deps: LifecycleDeps,
): Promise<void> {
  let request: RequestRecord | null = seen;
  // The decision (retry, cancel, fail) is taken on what was read and written on condition
  // that status, attempt and cancelRequested are still as read; if a cancel or another event
  // got in between, read again and decide again.
  for (let tries = 0; request && tries < 5; tries++) {
    const outcome = await tryFinishAttempt(request, end, deps);
    if (outcome !== "raced") return;
    const latest: RequestRecord | null = await deps.store.get(request.id);
    request =
      latest && latest.attempt === seen.attempt && !isTerminal(latest.status) ? latest : null;
  }
}

async function tryFinishAttempt(
  request: RequestRecord,
  end: AttemptEnd,
  deps: LifecycleDeps,
): Promise<"done" | "raced"> {
  const at = end.at ?? deps.clock.now();
  // A queue removed from the config since the request started cannot run it again.
  const queue = Object.hasOwn(deps.queues, request.queue) ? deps.queues[request.queue] : undefined;
  // SPEC §3 (request.ts retryAfter): failures count against maxAttempts, losses to the
  // platform against their own bound.
  const next = retryAfter(request, end.outcome, deps.compute.retries);
  // Conditioned on the attempt read, so platformRetries is unchanged since the read too
  // (only a retry moves it, and a retry moves the attempt): two handlers of one loss (a
  // duplicate event, a sweep racing the event) retry it once, and count it once.
  const condition = {
    id: request.id,
    from: ACTIVE_STATUSES,
    attempt: request.attempt,
    cancelRequested: request.cancelRequested,
  };
  if (queue && !request.cancelRequested && next) {
    const retried = await transit(deps, {
      ...condition,
      to: RequestStatus.STARTING,
      set: { ...next, jobRef: null },
    });
    if (!retried) return "raced";
    observeAttemptEnd(deps, retried, request.attempt, at, end);
    await launchAttempt(retried, queue, deps);
    return "done";
  }
  let to: RequestStatus;
  let error: { code: ErrorCode; message: string } | null;
  if (request.cancelRequested) {
    to = RequestStatus.CANCELLED;
    error = { code: "cancelled", message: "cancelled by the caller" };
  } else if (end.outcome === "succeeded") {
    to = RequestStatus.SUCCEEDED;
    error = null;
  } else if (end.outcome === "timeout") {
    to = RequestStatus.FAILED;
    error = {
      code: "timeout",
      message:
        end.message ?? `attempt ${request.attempt} ran longer than ${request.timeoutSeconds}s`,
    };
  } else if (end.outcome === "lost") {
    to = RequestStatus.FAILED;
    const why = end.message ?? `attempt ${request.attempt} was lost`;
    error = {
      code: "lost",
      message: queue
        ? `${why}; the platform already ended ${MAX_PLATFORM_RETRIES} earlier attempts, so it is not retried again`
        : why,
    };
  } else {
    to = RequestStatus.FAILED;
    error = {
      code: "job_failed",
      message:
        end.message ??
        `attempt ${request.attempt} failed, the job's ${jobAttempts(request)} of ${request.maxAttempts} allowed`,
    };
  }
  const finished = await transit(deps, {
    ...condition,
    to,
    set: { finishedAt: at, error },
  });
  if (!finished) return "raced";
  observeAttemptEnd(deps, finished, request.attempt, at, end);
  deps.onChange?.(finished, "completed");
  if (queue) await deps.trigger.wake(request.queue);
  return "done";
}

function observeAttemptEnd(
  deps: Pick<CoreDeps, "observe">,
  request: RequestRecord,
  attempt: number,
  at: number,
  end: AttemptEnd,
): void {
  deps.observe?.({
    type: "attemptEnded",
    request,
    attempt,
    at,
    outcome: end.outcome,
    startedAt: end.startedAt,
  });
}

/**
 * SPEC cancel: QUEUED → CANCELLED at once; STARTING/RUNNING → cancelRequested and the job is
 * told to stop (it becomes CANCELLED when it has stopped). Cancelling a CANCELLED request
 * again changes nothing; a request that ended otherwise is a conflict. Returns the request
 * as the route shows it.
 */
export async function cancelRequest(
  tenant: string,
  id: string,
  deps: LifecycleDeps,
): Promise<RequestView> {
  // What a cancel leaves is never QUEUED (CANCELLED, or still active with the stop asked),
  // so the view reads no position; a STARTING request still says why it waits.
  return viewOf(await cancelOwned(tenant, id, deps), deps);
}

/** The cancel itself; returns the request as the cancel left it. */
async function cancelOwned(
  tenant: string,
  id: string,
  deps: LifecycleDeps,
): Promise<RequestRecord> {
  for (let tries = 0; tries < 5; tries++) {
    const r = await getOwned(deps.store, tenant, id);
    if (r.status === RequestStatus.CANCELLED) return r;
    if (r.status === RequestStatus.QUEUED) {
      const now = deps.clock.now();
      const done = await transit(deps, {
        id,
        from: [RequestStatus.QUEUED],
        to: RequestStatus.CANCELLED,
        set: {
          cancelRequested: true,
          finishedAt: now,
          error: { code: "cancelled", message: "cancelled by the caller before it started" },
        },
      });
      if (done) {
        deps.onChange?.(done, "completed");
        return done;
      }
      continue; // it moved meanwhile (started, expired): look again
    }
    if (r.status === RequestStatus.STARTING || r.status === RequestStatus.RUNNING) {
      if (r.cancelRequested) {
        // Asking again is harmless (stop is idempotent) and repairs a stop that failed.
        if (r.jobRef !== null) await deps.compute.stop(r, "cancel");
        return r;
      }
      const marked = await transit(deps, {
        id,
        from: ACTIVE_STATUSES,
        attempt: r.attempt,
        set: { cancelRequested: true },
      });
      if (!marked) continue;
      // A STARTING request without a job yet is stopped by launchAttempt once it has one,
      // unless its launch waits for capacity: then the wait is given up now.
      if (
        marked.jobRef !== null ||
        marked.status === RequestStatus.RUNNING ||
        deps.compute.capacityWait?.(marked)
      ) {
        await deps.compute.stop(marked, "cancel");
      }
      return marked;
    }
    throw new ConflictError(`request ${id} already ended ${r.status}`, r.status);
  }
  throw new ConflictError(`request ${id} changed concurrently; try again`);
}

/** Expires QUEUED requests past their queue TTL. Time-driven, so the server runs it on a timer. */
export async function expireQueued(
  deps: Pick<CoreDeps, "store" | "clock" | "onChange">,
  limit = 500,
): Promise<number> {
  const now = deps.clock.now();
  let n = 0;
  for (const r of await deps.store.findExpired(now, limit)) {
    const done = await transit(deps, {
      id: r.id,
      from: [RequestStatus.QUEUED],
      to: RequestStatus.EXPIRED,
      set: {
        finishedAt: now,
        error: {
          code: "expired",
          message: `waited longer than its queue TTL of ${r.queueTtlSeconds}s`,
        },
      },
    });
    if (done) {
      n++;
      deps.onChange?.(done, "completed");
    }
  }
  return n;
}

/**
 * After a restart: every attempt the previous server had in flight is stopped first, then
 * retried as a new attempt from its last checkpoint. The server's stop or death ended it,
 * not the job, so the retry does not count against `maxAttempts` (SPEC §3, §5; FAILED
 * `lost` once {@link MAX_PLATFORM_RETRIES} are spent). A job that outlived its server and
 * had run past its `timeoutSeconds` when recovery found it ends FAILED `timeout` instead: no
 * one enforced its limit meanwhile. A pending cancel ends the request CANCELLED. Then every
 * queue is woken.
 * @returns how many requests it recovered.
 */
export async function recoverInFlight(deps: LifecycleDeps): Promise<number> {
  const active = await deps.store.findActive(100_000);
  // Race: reaping an orphan can take its whole grace period (a job that ignores SIGTERM),
  // and the reaps run side by side. A job's run time is judged at the moment recovery
  // found it, not once every reap is done: else a job well within its timeout when found
  // would end `timeout` for the time another job took to die.
  const now = deps.clock.now();
  const reaped = await Promise.all(active.map((r) => deps.compute.reap(r)));
  for (const [i, r] of active.entries()) {
    const since = reaped[i]?.runningSince ?? null;
    const ranMs = since === null ? 0 : now - since;
    const end: AttemptEnd =
      since !== null && ranMs > r.timeoutSeconds * 1000
        ? {
            outcome: "timeout",
            message: `attempt ${r.attempt} outlived its server and had run ${Math.round(ranMs / 1000)}s, longer than its timeout of ${r.timeoutSeconds}s, when the restarted server found it`,
          }
        : { outcome: "lost", message: `attempt ${r.attempt} was lost when the server stopped` };
    await finishAttempt(r, end, deps);
  }
  for (const name of Object.keys(deps.queues)) await deps.trigger.wake(name);
  return active.length;
}
