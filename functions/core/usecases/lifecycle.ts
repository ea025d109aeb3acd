import { type QueueConfig, tenantLimits } from "../../config/schema.ts";
import { ConflictError, PermanentLaunchError } from "../errors.ts";
import type { JobEvent, LaunchOptions, TransitionCommand } from "../ports.ts";
import {
  ACTIVE_STATUSES,
  type ErrorCode,
  isTerminal,
  type RequestRecord,
  RequestStatus,
} from "../request.ts";
import { type CoreDeps, getOwned, queueOrThrow } from "./deps.ts";

type LifecycleDeps = Pick<
  CoreDeps,
  "store" | "trigger" | "compute" | "clock" | "queues" | "onChange"
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
  for (let i = 0; i < DISPATCH_BATCH; i++) {
    const claim = await deps.store.claimNext(
      queue.name,
      {
        maxRunning: queue.maxRunning,
        maxRunningOf: (tenant) => tenantLimits(queue, tenant).maxRunning,
      },
      deps.clock.now(),
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
 * handle. A launch failure counts as a failed attempt.
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
      { outcome: "failed", message: `could not start the job: ${(cause as Error).message}` },
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
      if (event.jobRef && current.jobRef !== event.jobRef) {
        await transit(deps, {
          id: event.requestId,
          from: ACTIVE_STATUSES,
          attempt: event.attempt,
          set: { jobRef: event.jobRef },
        });
      }
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
        { outcome: event.outcome, message: event.message, at: event.at },
        deps,
      );
      return;
  }
}

export interface AttemptEnd {
  outcome: "succeeded" | "failed" | "timeout" | "lost";
  message?: string | undefined;
  at?: number;
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
  // A backend that retries on its own reports a failure only once no attempt remains.
  const retryable =
    (end.outcome === "failed" && deps.compute.retries === "core") || end.outcome === "lost";
  const condition = {
    id: request.id,
    from: ACTIVE_STATUSES,
    attempt: request.attempt,
    cancelRequested: request.cancelRequested,
  };
  if (queue && !request.cancelRequested && retryable && request.attempt < request.maxAttempts) {
    const retried = await transit(deps, {
      ...condition,
      to: RequestStatus.STARTING,
      set: { attempt: request.attempt + 1, jobRef: null },
    });
    if (!retried) return "raced";
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
    error = {
      code: "lost",
      message: end.message ?? `attempt ${request.attempt} was lost and no attempts remain`,
    };
  } else {
    to = RequestStatus.FAILED;
    error = {
      code: "job_failed",
      message: end.message ?? `attempt ${request.attempt} of ${request.maxAttempts} failed`,
    };
  }
  const finished = await transit(deps, {
    ...condition,
    to,
    set: { finishedAt: at, error },
  });
  if (!finished) return "raced";
  deps.onChange?.(finished, "completed");
  if (queue) await deps.trigger.wake(request.queue);
  return "done";
}

/**
 * SPEC cancel: QUEUED → CANCELLED at once; STARTING/RUNNING → cancelRequested and the job is
 * told to stop (it becomes CANCELLED when it has stopped). Cancelling a CANCELLED request
 * again changes nothing; a request that ended otherwise is a conflict.
 */
export async function cancelRequest(
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
 * retried as a new attempt from its last checkpoint (`lost` once none remain, CANCELLED
 * if a cancel was pending). Then every queue is woken.
 * @returns how many requests it recovered.
 */
export async function recoverInFlight(deps: LifecycleDeps): Promise<number> {
  const active = await deps.store.findActive(100_000);
  await Promise.all(active.map((r) => deps.compute.reap(r)));
  for (const r of active) {
    await finishAttempt(
      r,
      { outcome: "lost", message: `attempt ${r.attempt} was lost when the server stopped` },
      deps,
    );
  }
  for (const name of Object.keys(deps.queues)) await deps.trigger.wake(name);
  return active.length;
}
