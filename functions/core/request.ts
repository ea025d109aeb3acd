/**
 * The request lifecycle as data: statuses, their classes and the allowed transitions.
 * Every store applies a transition as one conditional write keyed on these tables.
 */

export const RequestStatus = {
  QUEUED: "QUEUED",
  STARTING: "STARTING",
  RUNNING: "RUNNING",
  SUCCEEDED: "SUCCEEDED",
  FAILED: "FAILED",
  CANCELLED: "CANCELLED",
  EXPIRED: "EXPIRED",
} as const;
export type RequestStatus = (typeof RequestStatus)[keyof typeof RequestStatus];

export const ALL_STATUSES: readonly RequestStatus[] = Object.values(RequestStatus);
export const TERMINAL_STATUSES: readonly RequestStatus[] = [
  RequestStatus.SUCCEEDED,
  RequestStatus.FAILED,
  RequestStatus.CANCELLED,
  RequestStatus.EXPIRED,
];
/** Statuses that hold one of the queue's `maxRunning` slots. */
export const ACTIVE_STATUSES: readonly RequestStatus[] = [
  RequestStatus.STARTING,
  RequestStatus.RUNNING,
];

/** Which queue counter a status is counted in; a transition moves counters by class. */
export type StatusClass = "queued" | "active" | "terminal";

export function statusClass(status: RequestStatus): StatusClass {
  if (status === RequestStatus.QUEUED) return "queued";
  if (status === RequestStatus.STARTING || status === RequestStatus.RUNNING) return "active";
  return "terminal";
}

export function isTerminal(status: RequestStatus): boolean {
  return statusClass(status) === "terminal";
}

/**
 * Allowed transitions. A status may also "transition" to itself to update fields
 * (progress, cancelRequested, job reference) without changing counters.
 * RUNNING/STARTING → STARTING is a retry: the request keeps its slot and starts a new attempt.
 */
export const TRANSITIONS: Readonly<Record<RequestStatus, readonly RequestStatus[]>> = {
  QUEUED: ["QUEUED", "STARTING", "CANCELLED", "EXPIRED"],
  STARTING: ["STARTING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"],
  RUNNING: ["RUNNING", "STARTING", "SUCCEEDED", "FAILED", "CANCELLED"],
  SUCCEEDED: [],
  FAILED: [],
  CANCELLED: [],
  EXPIRED: [],
};

export function canTransition(from: RequestStatus, to: RequestStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** Counter deltas a transition implies, derived from the status classes. */
export function counterDelta(
  from: RequestStatus,
  to: RequestStatus,
): { queued: number; running: number } {
  const a = statusClass(from);
  const b = statusClass(to);
  return {
    queued: (b === "queued" ? 1 : 0) - (a === "queued" ? 1 : 0),
    running: (b === "active" ? 1 : 0) - (a === "active" ? 1 : 0),
  };
}

export const ErrorCode = {
  job_failed: "job_failed",
  timeout: "timeout",
  cancelled: "cancelled",
  expired: "expired",
  lost: "lost",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface RequestError {
  code: ErrorCode;
  message: string;
}

export interface Progress {
  current: number;
  total: number | null;
  message: string | null;
  /** epoch ms */
  updatedAt: number;
}

export const WEBHOOK_EVENTS = ["started", "progress", "completed"] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

export interface WebhookSpec {
  url: string;
  events: WebhookEvent[];
}

/**
 * A stored request. Times are epoch milliseconds; the HTTP layer renders them as ISO strings.
 */
export interface RequestRecord {
  id: string;
  tenant: string;
  queue: string;
  status: RequestStatus;
  priority: number;
  input: unknown;
  metadata: Record<string, string>;
  webhook: WebhookSpec | null;
  idempotencyKey: string | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  /** When the request last changed status, attempt, job or cancel flag (epoch ms). */
  updatedAt: number;
  /**
   * 0 before the first start; the current or last attempt after. Counts every start, the
   * retries of attempts the platform ended included (SPEC §4 `LONGRUN_ATTEMPT`).
   */
  attempt: number;
  /** Bounds the attempts the job itself ended: see {@link retryAfter}. */
  maxAttempts: number;
  /**
   * How many attempts the platform ended and were retried without counting against
   * `maxAttempts` (a server restart, a Spot interruption, a lost instance); at most
   * {@link MAX_PLATFORM_RETRIES}.
   */
  platformRetries: number;
  cancelRequested: boolean;
  /** Per-attempt limit. */
  timeoutSeconds: number;
  queueTtlSeconds: number;
  /** createdAt + queueTtlSeconds: the request expires if still QUEUED at this instant. */
  expiresAt: number;
  progress: Progress | null;
  error: RequestError | null;
  /** The compute backend's handle for the current attempt (a process id, a Batch job id). */
  jobRef: string | null;
  /**
   * The request's input files by name (SPEC §2 `files`): its own copies, made at submit,
   * which the job finds in LONGRUN_INPUT_DIR. Absent reads as none.
   */
  files?: Record<string, RequestFile>;
  /** The request this one retries (POST /v1/requests/{id}/retry); absent reads as null. */
  retryOf?: string | null;
  /**
   * What the compute backend said of the current attempt's wait for an instance (AWS Batch:
   * the job is RUNNABLE), once that wait is worth telling (see {@link capacityWaitAfter});
   * absent reads as null. Read through {@link noCapacityDetail}.
   */
  capacityWait?: CapacityWait | null;
}

/**
 * A job's wait for an instance, as stored on its request. It names its attempt, so a fact of
 * an earlier attempt says nothing of the current one and needs no clearing when it moves on.
 */
export interface CapacityWait {
  attempt: number;
  /** When the job began to wait (epoch ms). */
  since: number;
  /** The backend's own words for why (Batch's `statusReason`), when it gave any. */
  reason: string | null;
  /** When the job got its instance (epoch ms): the wait is over for this attempt. */
  endedAt: number | null;
}

/** One input file a request keeps (its own copy of an upload, or of the request it retries). */
export interface RequestFile {
  size: number;
}

/** Fields a transition may change besides `status`. */
export type RequestPatch = Partial<
  Pick<
    RequestRecord,
    | "startedAt"
    | "finishedAt"
    | "updatedAt"
    | "attempt"
    | "platformRetries"
    | "progress"
    | "error"
    | "jobRef"
    | "cancelRequested"
    | "capacityWait"
  >
>;

/** Priority-then-FIFO order: the key that sorts QUEUED requests in start order. */
export function readyOrderKey(r: Pick<RequestRecord, "priority" | "createdAt" | "id">): string {
  return `${9 - r.priority}#${String(r.createdAt).padStart(15, "0")}#${r.id}`;
}

/** SPEC §3: attempts ended by the platform are retried this many times, then FAILED `lost`. */
export const MAX_PLATFORM_RETRIES = 10;

/**
 * How an attempt ended, as far as retrying is concerned: `failed` by the job (a non-zero
 * exit, a launch that failed), `lost` to the platform (the server stopped or died, the
 * instance was reclaimed or lost), or ended for good (`succeeded`, `timeout`).
 */
export type AttemptOutcome = "succeeded" | "failed" | "timeout" | "lost";

/**
 * Attempts the job itself ended (or is running now): every start but those the platform
 * ended. This, not `attempt`, is what `maxAttempts` bounds.
 */
export function jobAttempts(r: Pick<RequestRecord, "attempt" | "platformRetries">): number {
  return r.attempt - r.platformRetries;
}

/**
 * The retry rule of SPEC §3 as data: the fields of the next attempt when the current one
 * ended with `outcome` is retried, or null when the request ends instead. A failure is
 * retried only where the core retries (`computeRetries` "core"; a backend that retries on
 * its own reports a failure once none remain). A loss is retried by the core everywhere,
 * without counting against `maxAttempts`, until {@link MAX_PLATFORM_RETRIES} are spent.
 * Cancels and queues that no longer exist are the caller's to check first.
 */
export function retryAfter(
  r: Pick<RequestRecord, "attempt" | "maxAttempts" | "platformRetries">,
  outcome: AttemptOutcome,
  computeRetries: "core" | "backend",
): Pick<RequestRecord, "attempt" | "platformRetries"> | null {
  if (outcome === "lost") {
    return r.platformRetries < MAX_PLATFORM_RETRIES
      ? { attempt: r.attempt + 1, platformRetries: r.platformRetries + 1 }
      : null;
  }
  if (outcome === "failed" && computeRetries === "core" && jobAttempts(r) < r.maxAttempts) {
    return { attempt: r.attempt + 1, platformRetries: r.platformRetries };
  }
  return null;
}

/**
 * SPEC §2: a STARTING request whose job has waited for an instance longer than this says
 * `no_capacity` (before that, `starting`: instances take a minute or two to come up).
 */
export const NO_CAPACITY_AFTER_MS = 2 * 60_000;

/**
 * What a job event says of a starting job's wait for an instance (ports.ts JobEvent): it
 * waits (AWS Batch RUNNABLE) since `since`, for `reason` when the backend gives one; or it
 * has its instance (Batch STARTING).
 */
export type CapacityReport =
  | { waiting: true; since: number; reason: string | null }
  | { waiting: false; at: number };

/**
 * The `waitDetail` of a request that waits for capacity by its stored {@link CapacityWait}:
 * STARTING at the attempt the wait is of, still waiting, and for more than
 * {@link NO_CAPACITY_AFTER_MS} at `now`. Null otherwise (the request then says `starting`).
 */
export function noCapacityDetail(
  r: Pick<RequestRecord, "status" | "attempt" | "capacityWait">,
  now: number,
): string | null {
  const w = r.capacityWait;
  if (!w || r.status !== RequestStatus.STARTING || w.attempt !== r.attempt) return null;
  if (w.endedAt !== null || now - w.since <= NO_CAPACITY_AFTER_MS) return null;
  const since = `waiting for an instance since ${new Date(w.since).toISOString()}`;
  return w.reason ? `${since}: ${w.reason}` : since;
}

/**
 * The {@link CapacityWait} to store after `report` on attempt `attempt` of `r`, or undefined
 * when nothing is to be written. Written only while the request is STARTING at that attempt
 * (the caller conditions its write on both). So that the usual start, whose job waits a few
 * seconds, costs no write, a wait is first stored when it has a reason or has already lasted
 * past {@link NO_CAPACITY_AFTER_MS} at `now`; once stored, it keeps its earliest `since`
 * and last reason, and a report that the job has its instance ends it for good (a late
 * RUNNABLE report of the same attempt changes nothing then). Duplicates write nothing.
 */
export function capacityWaitAfter(
  r: Pick<RequestRecord, "status" | "attempt" | "capacityWait">,
  attempt: number,
  report: CapacityReport | undefined,
  now: number,
): CapacityWait | undefined {
  if (!report || r.status !== RequestStatus.STARTING || r.attempt !== attempt) return undefined;
  const stored = r.capacityWait?.attempt === attempt ? r.capacityWait : null;
  if (stored?.endedAt != null) return undefined;
  if (!report.waiting) return stored ? { ...stored, endedAt: report.at } : undefined;
  if (!stored) {
    if (report.reason === null && now - report.since <= NO_CAPACITY_AFTER_MS) return undefined;
    return { attempt, since: report.since, reason: report.reason, endedAt: null };
  }
  const since = Math.min(stored.since, report.since);
  const reason = report.reason ?? stored.reason;
  if (since === stored.since && reason === stored.reason) return undefined;
  return { attempt, since, reason, endedAt: null };
}
