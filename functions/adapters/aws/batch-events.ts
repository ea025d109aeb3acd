/**
 * AWS Batch "Batch Job State Change" and "Batch Job Queue Blocked" events (EventBridge,
 * source `aws.batch`) and DescribeJobs job details, read as the core's JobEvents.
 *
 * The event's `detail` mirrors DescribeJobs' JobDetail, and AWS may add fields at any time,
 * so both are parsed leniently: only the fields used here are checked, unknown ones pass.
 *
 * Attempt numbers: Batch numbers the attempts of one job 1, 2, …; `attempts[]` lists the
 * attempts that have ended. A job submitted for request attempt k (BatchCompute passes k
 * as {@link FIRST_ATTEMPT_ENV}) runs request attempts k, k+1, … so
 * request attempt = k − 1 + Batch attempt, where the Batch attempt is `attempts.length + 1`
 * while the job is on its way to or in a run (RUNNABLE, STARTING, RUNNING: the attempt being
 * started) and `attempts.length` once it ended (SUCCEEDED, FAILED: the last attempt).
 */
import { z } from "zod";
import type { JobEvent } from "../../core/ports.ts";
import type { CapacityReport } from "../../core/request.ts";

/** Container variable BatchCompute sets: the request attempt the job's first Batch attempt is. */
export const FIRST_ATTEMPT_ENV = "LONGRUN_FIRST_ATTEMPT";
/** Tag BatchCompute sets with the same value (DescribeJobs shows tags; events may not). */
export const FIRST_ATTEMPT_TAG = "longrun:first-attempt";

/** Batch job names longrun submits: the request id, `req_` and a ULID. */
export const REQUEST_JOB_NAME = /^req_[0-9A-Z]{26}$/;

/**
 * Batch's status reason for an attempt stopped by `timeout.attemptDurationSeconds`. The
 * Batch guide says such a job is terminated and not retried but does not print the reason;
 * this is the wording Batch reports. Matched case-insensitively anywhere in the reason.
 */
export const TIMEOUT_STATUS_REASON = /attempt duration exceeded timeout/i;

/**
 * Batch's status reason for an attempt whose instance went away under it: a Spot reclaim
 * or a host failure ("Host EC2 (instance i-0abc…) terminated."). The platform ended that
 * attempt, not the job: it is reported `lost` (SPEC §3). The retry strategy's
 * `Host EC2*` rule (batch-compute.ts EVALUATE_ON_EXIT) must EXIT on it for the core to see
 * it; a Batch retry would spend one of the attempts the job's own failures are allowed.
 */
export const PLATFORM_STATUS_REASON = /^Host EC2 \(instance [^)]*\) terminated/i;

/**
 * The EventBridge detail types read here: every state change, and the event Batch sends when
 * a RUNNABLE job blocks its queue (its detail is the job's, with the reason as statusReason).
 */
export const BATCH_EVENT_DETAIL_TYPES = [
  "Batch Job State Change",
  "Batch Job Queue Blocked",
] as const;

/**
 * The form of the reason Batch gives a RUNNABLE job it cannot place ("CAPACITY:INSUFFICIENT_
 * INSTANCE_CAPACITY - …", "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - …"): a category and a
 * code. Only such a reason is a reason the job waits for an instance; any other status
 * reason a RUNNABLE job carries (an earlier attempt's end) is not.
 */
export const BLOCKED_STATUS_REASON = /^[A-Z][A-Z_]*:[A-Z][A-Z_]*\b/;

export const BATCH_JOB_STATUSES = [
  "SUBMITTED",
  "PENDING",
  "RUNNABLE",
  "STARTING",
  "RUNNING",
  "SUCCEEDED",
  "FAILED",
] as const;
export type BatchJobStatus = (typeof BATCH_JOB_STATUSES)[number];

/** Finished statuses: the job will not change again. */
export function isFinishedBatchStatus(status: string | undefined): boolean {
  return status === "SUCCEEDED" || status === "FAILED";
}

// Batch leaves fields out rather than sending null, but a null is no reason to drop an event.
const optString = z.string().nullish();
const optEpoch = z.number().nullish();

const AttemptSchema = z.looseObject({
  container: z
    .looseObject({
      exitCode: z.number().int().nullish(),
      reason: optString,
      logStreamName: optString,
    })
    .nullish(),
  startedAt: optEpoch,
  stoppedAt: optEpoch,
  statusReason: optString,
});

/** The part of a JobDetail (event `detail` or DescribeJobs item) that longrun reads. */
export const BatchJobDetailSchema = z.looseObject({
  jobId: z.string().min(1),
  jobName: z.string(),
  jobQueue: optString,
  status: z.enum(BATCH_JOB_STATUSES),
  statusReason: optString,
  attempts: z.array(AttemptSchema).nullish(),
  createdAt: optEpoch,
  startedAt: optEpoch,
  stoppedAt: optEpoch,
  container: z
    .looseObject({
      exitCode: z.number().int().nullish(),
      reason: optString,
      logStreamName: optString,
      environment: z
        .array(z.looseObject({ name: optString, value: optString }))
        .nullish()
        .catch(null),
    })
    .nullish(),
  tags: z.record(z.string(), z.unknown()).nullish().catch(null),
});
export type BatchJobDetail = z.infer<typeof BatchJobDetailSchema>;

const EventSchema = z.looseObject({
  source: z.literal("aws.batch"),
  "detail-type": z.enum(BATCH_EVENT_DETAIL_TYPES),
  time: optString,
  detail: z.unknown(),
});

export interface ParseOptions {
  /** When given, events of other job queues are not ours. */
  jobQueueArn?: string;
  /** Fallback instant when the event carries none (default Date.now()). */
  now?: () => number;
}

/**
 * Reads one EventBridge event (an object, or its JSON text as an SQS body holds it) as a
 * JobEvent. Null when it is not a Batch job event of a longrun request (another
 * source or detail type, a foreign job name or job queue, a malformed detail).
 */
export function parseBatchEvent(raw: unknown, opts: ParseOptions = {}): JobEvent | null {
  let value = raw;
  if (typeof value === "string") {
    try {
      value = JSON.parse(value);
    } catch {
      return null;
    }
  }
  const event = EventSchema.safeParse(value);
  if (!event.success) return null;
  const detail = BatchJobDetailSchema.safeParse(event.data.detail);
  if (!detail.success) return null;
  if (opts.jobQueueArn && detail.data.jobQueue && detail.data.jobQueue !== opts.jobQueueArn) {
    return null;
  }
  const eventTime = event.data.time ? Date.parse(event.data.time) : Number.NaN;
  const fallback = Number.isFinite(eventTime) ? eventTime : (opts.now ?? Date.now)();
  return jobEventFromDetail(detail.data, fallback);
}

/**
 * The JobEvent a job detail implies (for events, and for the repair sweep reading
 * DescribeJobs). `fallbackAt` is used when the detail has no better instant. Null for a
 * job that is not a longrun request.
 */
export function jobEventFromDetail(detail: BatchJobDetail, fallbackAt: number): JobEvent | null {
  const requestId = detail.jobName;
  if (!REQUEST_JOB_NAME.test(requestId)) return null;
  const attempts = detail.attempts ?? [];
  const base = firstAttemptOf(detail) - 1;
  const jobRef = detail.jobId;
  switch (detail.status) {
    case "SUBMITTED":
    case "PENDING":
    case "RUNNABLE":
    case "STARTING": {
      // `starting` also carries the job id, which repairs a jobRef the dispatcher did not
      // get to record.
      const capacity = capacityOf(detail, fallbackAt);
      return {
        type: "starting",
        requestId,
        attempt: base + attempts.length + 1,
        at: fallbackAt,
        jobRef,
        ...(capacity ? { capacity } : {}),
      };
    }
    case "RUNNING":
      return {
        type: "running",
        requestId,
        attempt: base + attempts.length + 1,
        at: fallbackAt,
        jobRef,
      };
    case "SUCCEEDED":
    case "FAILED": {
      // A job that failed before any attempt ran (e.g. terminated while RUNNABLE) has no
      // attempt entry; it still ended its first attempt.
      const last = attempts.at(-1);
      const at = detail.stoppedAt ?? last?.stoppedAt ?? fallbackAt;
      const attempt = base + Math.max(attempts.length, 1);
      // The ended attempt's own start (metrics: run time per attempt); absent if it never ran.
      const ranFrom = last?.startedAt ?? null;
      const startedAt = ranFrom !== null ? { startedAt: ranFrom } : {};
      if (detail.status === "SUCCEEDED") {
        return {
          type: "exited",
          requestId,
          attempt,
          at,
          outcome: "succeeded",
          jobRef,
          ...startedAt,
        };
      }
      const reasons = [detail.statusReason, last?.statusReason];
      const platform = reasons.find((r) => r && PLATFORM_STATUS_REASON.test(r));
      if (platform) {
        return {
          type: "exited",
          requestId,
          attempt,
          at,
          outcome: "lost",
          jobRef,
          message: `attempt ${attempt} was ended by the platform (${platform})`,
        };
      }
      if (reasons.some((r) => r && TIMEOUT_STATUS_REASON.test(r))) {
        return {
          type: "exited",
          requestId,
          attempt,
          at,
          outcome: "timeout",
          jobRef,
          ...startedAt,
          message: `attempt ${attempt} ran longer than its timeout (${detail.statusReason ?? last?.statusReason})`,
        };
      }
      return {
        type: "exited",
        requestId,
        attempt,
        at,
        outcome: "failed",
        jobRef,
        ...startedAt,
        message: failureMessage(detail, last),
      };
    }
  }
}

type Attempt = NonNullable<BatchJobDetail["attempts"]>[number];

/**
 * What a starting job's state says of its wait for an instance: RUNNABLE waits, since its
 * previous attempt ended (a Batch retry) or else since it was created (SUBMITTED and PENDING
 * last seconds for a job without dependencies), with Batch's blocked reason when it gives
 * one; STARTING has its instance. SUBMITTED and PENDING say nothing.
 */
function capacityOf(detail: BatchJobDetail, fallbackAt: number): CapacityReport | undefined {
  if (detail.status === "STARTING") return { waiting: false, at: fallbackAt };
  if (detail.status !== "RUNNABLE") return undefined;
  const since = detail.attempts?.at(-1)?.stoppedAt ?? detail.createdAt ?? fallbackAt;
  const text = detail.statusReason?.trim() ?? "";
  const reason = BLOCKED_STATUS_REASON.test(text) ? text.slice(0, 1000) : null;
  return { waiting: true, since, reason };
}

function failureMessage(detail: BatchJobDetail, last: Attempt | undefined): string {
  const exitCode = last?.container?.exitCode ?? detail.container?.exitCode;
  const parts = [
    detail.statusReason,
    last?.statusReason,
    last?.container?.reason ?? detail.container?.reason,
    exitCode === null || exitCode === undefined ? null : `exit code ${exitCode}`,
  ];
  const unique = [...new Set(parts.filter((p): p is string => !!p && p.trim() !== ""))];
  const text = unique.length > 0 ? unique.join("; ") : "the Batch job failed";
  return text.length > 1000 ? `${text.slice(0, 997)}...` : text;
}

/** The request attempt of the job's first Batch attempt (1 when the job does not say). */
export function firstAttemptOf(detail: BatchJobDetail): number {
  const fromEnv = detail.container?.environment?.find((e) => e.name === FIRST_ATTEMPT_ENV)?.value;
  const fromTag = detail.tags?.[FIRST_ATTEMPT_TAG];
  for (const candidate of [fromEnv, fromTag]) {
    if (typeof candidate === "string" && /^[1-9][0-9]{0,5}$/.test(candidate)) {
      return Number(candidate);
    }
  }
  return 1;
}
