/**
 * Runs request attempts as AWS Batch jobs (one job queue, one job definition per longrun
 * queue). Batch retries failed attempts itself (`retries = "backend"`) and reports every
 * state change through EventBridge (see batch-events.ts).
 */
import {
  type BatchClient,
  DescribeJobsCommand,
  type EvaluateOnExit,
  type JobDetail,
  type JobSummary,
  ListJobsCommand,
  SubmitJobCommand,
  TerminateJobCommand,
} from "@aws-sdk/client-batch";
import { AWS_ENV, JOB_ENV } from "../../config/env.ts";
import type { QueueConfig } from "../../config/schema.ts";
import { PermanentLaunchError } from "../../core/errors.ts";
import type { Compute, JobEvent, LaunchOptions, StopReason } from "../../core/ports.ts";
import type { RequestRecord } from "../../core/request.ts";
import {
  BatchJobDetailSchema,
  type BatchJobStatus,
  FIRST_ATTEMPT_ENV,
  FIRST_ATTEMPT_TAG,
  isFinishedBatchStatus,
  jobEventFromDetail,
} from "./batch-events.ts";

/** Batch refuses `attemptDurationSeconds` below this. */
export const BATCH_MIN_TIMEOUT_SECONDS = 60;
/** Batch accepts 1–10 attempts per job. */
export const BATCH_MAX_ATTEMPTS = 10;
/** DescribeJobs takes at most this many ids per call. */
const DESCRIBE_BATCH = 100;

/** The TerminateJob reasons (they show as the job's statusReason). */
export const STOP_REASONS: Readonly<Record<StopReason | "superseded", string>> = {
  cancel: "longrun: cancelled by the caller",
  timeout: "longrun: timeout",
  shutdown: "longrun: shutdown",
  superseded: "longrun: superseded by a newer attempt",
};

/**
 * Tags every job gets at submit (propagated to its ECS task), for cost reports and
 * searches; `jobQueue` is also what the handlers' TerminateJob permission is conditioned
 * on (aws:ResourceTag), so they can stop only jobs longrun submitted to this deployment.
 */
export const JOB_TAGS = {
  requestId: "longrun:request",
  tenant: "longrun:tenant",
  queue: "longrun:queue",
  firstAttempt: FIRST_ATTEMPT_TAG,
  jobQueue: "longrun:job-queue",
} as const;

/**
 * The retry strategy's exit rules, first match wins (Batch allows 5):
 * - an instance taken away (Spot reclaim, host failure: "Host EC2 (instance …) terminated")
 *   exits: the job ends FAILED, the event reads as `lost` (batch-events.ts) and the core
 *   retries it with a new job that resumes from the checkpoint, counted against the
 *   platform's bound and not against `maxAttempts` (SPEC §3); a Batch retry would spend
 *   one of the job's own attempts;
 * - a job stopped by longrun (TerminateJob with a `longrun:` reason) exits; Batch never
 *   retries terminated or cancelled jobs anyway, this only makes the intent explicit;
 * - any non-zero exit code is retried while attempts remain;
 * - anything else (a container that never started, e.g. an image pull error, has no exit
 *   code) is retried too: most such causes are transient.
 * Timeouts need no rule: Batch does not retry a job terminated for exceeding
 * `attemptDurationSeconds`, which is what SPEC §3 asks.
 */
export const EVALUATE_ON_EXIT: readonly EvaluateOnExit[] = [
  { onStatusReason: "Host EC2*", action: "EXIT" },
  { onStatusReason: "longrun:*", action: "EXIT" },
  { onExitCode: "*", action: "RETRY" },
  { onReason: "*", action: "RETRY" },
];

export interface BatchComputeOptions {
  client: BatchClient;
  /** ARN (or name) of the Batch job queue every longrun queue submits to. */
  jobQueueArn: string;
  /** The job definition (name, name:revision or ARN) of a longrun queue. */
  jobDefinitionFor: (queue: QueueConfig) => string;
  /** Bucket of inputs, outputs, checkpoints (the runner in the container uses it). */
  bucket: string;
  /** DynamoDB table of requests (the runner writes progress to it). */
  table: string;
  /** More container variables (e.g. AWS_REGION for an emulator); the contract's win. */
  extraEnv?: Readonly<Record<string, string>>;
}

/** What DescribeJobs says about a job, for the repair sweep. */
export interface BatchJobState {
  jobRef: string;
  /** null: Batch does not know the job (never existed, or aged out of its history). */
  status: BatchJobStatus | null;
  /** The job name, which is the request id for longrun jobs. */
  requestId: string | null;
  statusReason: string | null;
  /** The JobEvent this state implies: what a missed state-change event would have said. */
  event: JobEvent | null;
}

/**
 * {@link Compute} on AWS Batch. Batch has no idempotency token, so `start` looks for a job
 * of the request (job name = request id) before it submits one.
 *
 * `reap` terminates: the port asks that nothing of an earlier attempt keep running before
 * the core starts a new one, and a Batch job outlives any server process. (The AWS
 * deployment does not call it; its repair sweep reconciles with {@link describe}.)
 */
export class BatchCompute implements Compute {
  /** Batch's retry strategy retries failed attempts; the core only follows them. */
  readonly retries = "backend" as const;
  readonly #opts: BatchComputeOptions;

  constructor(opts: BatchComputeOptions) {
    this.#opts = opts;
  }

  async start(
    request: RequestRecord,
    queue: QueueConfig,
    options: LaunchOptions = {},
  ): Promise<{ jobRef: string }> {
    const attempt = Math.max(request.attempt, 1);
    // Only a job submitted for this very attempt is the same launch (a dispatcher that
    // crashed after SubmitJob, a sweep settling a STARTING request). A live job of an
    // earlier attempt was given up by the core: stop it rather than run two at once.
    // A job of this attempt that has already finished is the same launch too (its events
    // were missed): its end is recorded from its state, never by running the work again.
    // The dispatcher's first launch of a request it has just claimed has nothing to find.
    const jobs = options.firstLaunch ? [] : await this.#jobsOf(request.id, { finished: true });
    let reuse: string | null = null;
    for (const job of jobs) {
      if (reuse === null && job.firstAttempt === attempt) {
        reuse = job.jobId;
        continue;
      }
      if (!job.finished) await this.#terminate(job.jobId, STOP_REASONS.superseded);
    }
    if (reuse !== null) return { jobRef: reuse };

    let jobDefinition: string;
    try {
      jobDefinition = this.#opts.jobDefinitionFor(queue);
    } catch (cause) {
      throw new PermanentLaunchError(`no job definition for queue ${queue.name}`, { cause });
    }
    const out = await this.#opts.client
      .send(
        new SubmitJobCommand({
          jobName: request.id,
          jobQueue: this.#opts.jobQueueArn,
          jobDefinition,
          containerOverrides: { environment: this.#environment(request, queue, attempt) },
          timeout: { attemptDurationSeconds: batchTimeoutSeconds(request.timeoutSeconds) },
          retryStrategy: {
            attempts: batchAttempts(request.maxAttempts, attempt, request.platformRetries),
            evaluateOnExit: [...EVALUATE_ON_EXIT],
          },
          tags: {
            [JOB_TAGS.requestId]: request.id,
            [JOB_TAGS.tenant]: tagValue(request.tenant),
            [JOB_TAGS.queue]: request.queue,
            [JOB_TAGS.firstAttempt]: String(attempt),
            [JOB_TAGS.jobQueue]: this.#opts.jobQueueArn,
          },
          propagateTags: true,
        }),
      )
      .catch((error: unknown) => {
        // Batch's ClientException is its 4xx: the request itself is refused, so no job exists
        // and a retry would be refused again. Anything else may hide a created job.
        if ((error as { name?: string }).name === "ClientException") {
          throw new PermanentLaunchError(`Batch refused the job: ${(error as Error).message}`, {
            cause: error,
          });
        }
        throw error;
      });
    if (!out.jobId) throw new Error(`SubmitJob for ${request.id} returned no job id`);
    return { jobRef: out.jobId };
  }

  /**
   * TerminateJob: Batch sends SIGTERM, then SIGKILL 30 s later (Batch's own grace; the
   * queue's `cancelGraceSeconds` cannot change it). A job that has finished or that Batch
   * does not know is no error. Without a recorded jobRef the request's live jobs are found
   * by name.
   */
  async stop(request: RequestRecord, reason: StopReason): Promise<void> {
    if (request.jobRef !== null) {
      await this.#terminate(request.jobRef, STOP_REASONS[reason]);
      return;
    }
    for (const job of await this.#liveJobs(request.id)) {
      await this.#terminate(job.jobId, STOP_REASONS[reason]);
    }
  }

  /**
   * Terminates every live job of the request (see the class doc). A Batch job has its own
   * timeout, so what it ran meanwhile is not reported: undefined.
   */
  async reap(request: RequestRecord): Promise<undefined> {
    const ids = new Set((await this.#liveJobs(request.id)).map((j) => j.jobId));
    if (request.jobRef !== null) ids.add(request.jobRef);
    for (const id of ids) await this.#terminate(id, STOP_REASONS.shutdown);
    return undefined;
  }

  /**
   * The current state of each job, in the order given (DescribeJobs, 100 ids per call).
   * Unknown ids come back with `status: null`.
   */
  async describe(jobRefs: readonly string[]): Promise<BatchJobState[]> {
    const found = new Map<string, JobDetail>();
    const unique = [...new Set(jobRefs)];
    for (let i = 0; i < unique.length; i += DESCRIBE_BATCH) {
      const out = await this.#opts.client.send(
        new DescribeJobsCommand({ jobs: unique.slice(i, i + DESCRIBE_BATCH) }),
      );
      for (const job of out.jobs ?? []) if (job.jobId) found.set(job.jobId, job);
    }
    return jobRefs.map((jobRef) => {
      const job = found.get(jobRef);
      if (!job) return { jobRef, status: null, requestId: null, statusReason: null, event: null };
      const parsed = BatchJobDetailSchema.safeParse(job);
      const at = job.stoppedAt ?? job.startedAt ?? job.createdAt ?? Date.now();
      return {
        jobRef,
        status: (job.status as BatchJobStatus | undefined) ?? null,
        requestId: job.jobName ?? null,
        statusReason: job.statusReason ?? null,
        event: parsed.success ? jobEventFromDetail(parsed.data, at) : null,
      };
    });
  }

  /**
   * The repair sweep's view of each request's current job: the event its state implies,
   * null when Batch no longer knows the job; states that imply nothing (SUBMITTED, PENDING)
   * are left out.
   */
  async inspect(requests: readonly RequestRecord[]): Promise<ReadonlyMap<string, JobEvent | null>> {
    const withJob = requests.filter((r) => r.jobRef !== null);
    const states = await this.describe(withJob.map((r) => r.jobRef as string));
    const byRef = new Map(states.map((s) => [s.jobRef, s]));
    const out = new Map<string, JobEvent | null>();
    for (const r of withJob) {
      const state = byRef.get(r.jobRef as string);
      if (!state) continue;
      if (state.status === null) out.set(r.id, null);
      else if (state.event) out.set(r.id, state.event);
    }
    return out;
  }

  /** Jobs named after the request that have not finished, with the attempt they began at. */
  async #liveJobs(requestId: string): Promise<{ jobId: string; firstAttempt: number | null }[]> {
    return this.#jobsOf(requestId, { finished: false });
  }

  /**
   * Jobs named after the request, newest first, with the attempt they began at; finished
   * ones only when asked for.
   */
  async #jobsOf(
    requestId: string,
    opts: { finished: boolean },
  ): Promise<{ jobId: string; firstAttempt: number | null; finished: boolean }[]> {
    const summaries: JobSummary[] = [];
    let nextToken: string | undefined;
    do {
      // With a filter, ListJobs returns jobs of every status (jobStatus is ignored).
      const page = await this.#opts.client.send(
        new ListJobsCommand({
          jobQueue: this.#opts.jobQueueArn,
          filters: [{ name: "JOB_NAME", values: [requestId] }],
          nextToken,
        }),
      );
      summaries.push(...(page.jobSummaryList ?? []));
      nextToken = page.nextToken;
    } while (nextToken);
    const mine = summaries.filter(
      (s) =>
        s.jobId && s.jobName === requestId && (opts.finished || !isFinishedBatchStatus(s.status)),
    );
    if (mine.length === 0) return [];
    // ListJobs does not show tags; DescribeJobs does.
    const out = await this.#opts.client.send(
      new DescribeJobsCommand({ jobs: mine.map((s) => s.jobId as string) }),
    );
    const firstAttempt = new Map<string, number | null>();
    for (const job of out.jobs ?? []) {
      const tag = job.tags?.[FIRST_ATTEMPT_TAG];
      if (job.jobId) firstAttempt.set(job.jobId, tag && /^\d+$/.test(tag) ? Number(tag) : null);
    }
    return mine
      .sort((a, b) => (b.createdAt ?? 0) - (a.createdAt ?? 0))
      .map((s) => ({
        jobId: s.jobId as string,
        firstAttempt: firstAttempt.get(s.jobId as string) ?? null,
        finished: isFinishedBatchStatus(s.status),
      }));
  }

  async #terminate(jobId: string, reason: string): Promise<void> {
    try {
      await this.#opts.client.send(new TerminateJobCommand({ jobId, reason }));
    } catch (error) {
      // Batch answers a job it cannot terminate (unknown id, already gone) with a
      // ClientException; that job is not running, which is all stop() promises.
      if ((error as { name?: string }).name === "ClientException") return;
      throw error;
    }
  }

  #environment(
    request: RequestRecord,
    queue: QueueConfig,
    attempt: number,
  ): { name: string; value: string }[] {
    // Later entries win: the queue's env, then the deployment's, then the job contract,
    // which a queue must not be able to override.
    const env: Record<string, string> = {
      ...queue.env,
      ...this.#opts.extraEnv,
      [JOB_ENV.requestId]: request.id,
      [JOB_ENV.queue]: request.queue,
      [AWS_ENV.bucket]: this.#opts.bucket,
      [AWS_ENV.table]: this.#opts.table,
      // The runner derives LONGRUN_ATTEMPT = this − 1 + AWS_BATCH_JOB_ATTEMPT; the input,
      // output, checkpoint and progress paths are local to the container.
      [FIRST_ATTEMPT_ENV]: String(attempt),
    };
    return Object.entries(env).map(([name, value]) => ({ name, value }));
  }
}

/** Batch's per-attempt limit for a request timeout: never below Batch's 60 s floor. */
export function batchTimeoutSeconds(timeoutSeconds: number): number {
  return Math.max(BATCH_MIN_TIMEOUT_SECONDS, Math.ceil(timeoutSeconds));
}

/**
 * Attempts left for a job whose first Batch attempt is request attempt `attempt` (1–10):
 * what `maxAttempts` leaves after the earlier attempts the job itself ended, that is all
 * but the `platformRetries` the platform ended (request.ts jobAttempts).
 */
export function batchAttempts(maxAttempts: number, attempt: number, platformRetries = 0): number {
  return Math.min(BATCH_MAX_ATTEMPTS, Math.max(1, maxAttempts - (attempt - 1 - platformRetries)));
}

/** Tag values allow letters, digits, spaces and `_.:/=+-@`, at most 256 characters. */
function tagValue(value: string): string {
  return value.replace(/[^\p{L}\p{N}\s_.:/=+\-@]/gu, "_").slice(0, 256);
}
