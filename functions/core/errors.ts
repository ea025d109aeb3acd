/**
 * Domain errors. Adapters translate the failures they understand into these; the HTTP
 * layer maps each to one problem+json answer (see functions/http/problem.ts).
 */

export class DomainError extends Error {
  override name = "DomainError";
}

export class InvalidRequestError extends DomainError {
  override name = "InvalidRequestError";
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

export class NotFoundError extends DomainError {
  override name = "NotFoundError";
  constructor(
    readonly what: "request" | "queue" | "upload",
    readonly key: string,
  ) {
    super(`${what} ${JSON.stringify(key)} not found`);
  }
}

export class ConflictError extends DomainError {
  override name = "ConflictError";
  constructor(
    message: string,
    readonly status?: string,
  ) {
    super(message);
  }
}

export class IdempotencyConflictError extends DomainError {
  override name = "IdempotencyConflictError";
  constructor(
    readonly key: string,
    readonly requestId: string,
  ) {
    super(
      `Idempotency-Key ${JSON.stringify(key)} was already used with a different body (request ${requestId})`,
    );
  }
}

export class QueueFullError extends DomainError {
  override name = "QueueFullError";
  /**
   * @param scope "queue": the queue holds `maxQueued` QUEUED requests; "tenant": the tenant
   *   holds its `maxQueuedPerTenant` of them (then `maxQueued` is that limit).
   */
  constructor(
    readonly queue: string,
    readonly maxQueued: number,
    readonly retryAfterSeconds: number,
    readonly scope: "queue" | "tenant" = "queue",
  ) {
    super(
      scope === "queue"
        ? `queue ${JSON.stringify(queue)} already holds ${maxQueued} queued requests`
        : `you already have ${maxQueued} queued requests in queue ${JSON.stringify(queue)}, your limit there`,
    );
  }
}

/** The tenant's token bucket of the queue is empty (SPEC §1 `rateLimit`). */
export class RateLimitedError extends DomainError {
  override name = "RateLimitedError";
  constructor(
    readonly queue: string,
    readonly retryAfterSeconds: number,
    readonly state: { policy: { requestsPerSecond: number; burst: number }; resetSeconds: number },
  ) {
    super(
      `too many submits to queue ${JSON.stringify(queue)}: at most ${state.policy.requestsPerSecond}/s (bursts of ${state.policy.burst}); try again in ${retryAfterSeconds}s`,
    );
  }
}

export class NotReadyError extends DomainError {
  override name = "NotReadyError";
  constructor(readonly status: string) {
    super(`request is ${status}; the result exists once it has SUCCEEDED`);
  }
}

export class NoResultError extends DomainError {
  override name = "NoResultError";
  constructor(
    readonly status: string,
    readonly error: { code: string; message: string } | null,
  ) {
    super(`request ended ${status}; it has no result`);
  }
}

/**
 * The compute backend refused to launch a job for a reason a retry cannot fix (a missing
 * job definition, parameters it rejects). Any other launch error may hide a job that was
 * created after all, and a backend that retries by itself leaves it to the repair sweep.
 */
export class PermanentLaunchError extends DomainError {
  override name = "PermanentLaunchError";
}

/**
 * The launch may or may not have started the job, and nothing is left to tell which (the
 * embedded launcher died between taking the attempt and reporting its process, and no such
 * process runs now). Launching the same attempt again could run it twice, so the attempt
 * ends `lost`: retried as one the platform ended (SPEC §3), never counted against the job.
 */
export class LaunchLostError extends DomainError {
  override name = "LaunchLostError";
}

/** A concurrent writer changed the item between our read and our conditional write. */
export class ConcurrentUpdateError extends DomainError {
  override name = "ConcurrentUpdateError";
}
