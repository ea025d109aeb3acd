/**
 * Job logs of AWS Batch jobs, read from CloudWatch Logs: the log stream of every attempt,
 * oldest first.
 */
import { type BatchClient, DescribeJobsCommand } from "@aws-sdk/client-batch";
import { type CloudWatchLogsClient, GetLogEventsCommand } from "@aws-sdk/client-cloudwatch-logs";
import { z } from "zod";
import { InvalidRequestError } from "../../core/errors.ts";
import type { LogPage, LogStore } from "../../core/ports.ts";

/** Batch's log group for jobs that use the awslogs driver without options. */
export const DEFAULT_BATCH_LOG_GROUP = "/aws/batch/job";

/** GetLogEvents calls one read may make, so that a page's latency stays bounded. */
const MAX_CALLS_PER_READ = 20;
/** GetLogEvents returns at most this many events per call. */
const MAX_EVENTS_PER_CALL = 10_000;

export interface CloudWatchLogStoreOptions {
  logs: CloudWatchLogsClient;
  batch: BatchClient;
  /** Log group of the job definitions' awslogs driver (default {@link DEFAULT_BATCH_LOG_GROUP}). */
  logGroup?: string;
  /** The request's Batch job id (its jobRef), null before it has one. */
  jobRefOf: (requestId: string) => Promise<string | null>;
  /**
   * The job's log streams, one per attempt, oldest first. Defaults to
   * {@link batchAttemptStreams}; replaceable where logs are not written by Batch.
   */
  streamsOf?: (jobRef: string) => Promise<string[]>;
}

/** What GetLogEvents answers to a `nextToken` it cannot use. */
const INVALID_TOKEN_ERRORS: ReadonlySet<string> = new Set([
  "InvalidParameterException",
  "ValidationException",
]);

/** Where a reader stopped: which stream (attempt) and the forward token within it. */
interface Position {
  attemptIndex: number;
  token: string | null;
}

const PositionSchema = z.strictObject({
  attemptIndex: z.number().int().min(0).max(1000),
  token: z.string().min(1).max(4096).nullable(),
});

/**
 * {@link LogStore} over CloudWatch Logs. The cursor is opaque to callers: base64url JSON of
 * the attempt index and CloudWatch's forward token. A stream is left for the next attempt's
 * only once CloudWatch answers with the token it was given (nothing more in it) and a
 * later stream exists, so the running attempt's stream is followed as it grows.
 */
export class CloudWatchLogStore implements LogStore {
  readonly #opts: CloudWatchLogStoreOptions;
  readonly #logGroup: string;

  constructor(opts: CloudWatchLogStoreOptions) {
    this.#opts = opts;
    this.#logGroup = opts.logGroup ?? DEFAULT_BATCH_LOG_GROUP;
  }

  async read(requestId: string, cursor: string | undefined, limit: number): Promise<LogPage> {
    let pos = decodeCursor(cursor);
    // The token the caller's cursor carried: CloudWatch refusing it is the caller's fault.
    const callerToken = pos.token;
    const jobRef = await this.#opts.jobRefOf(requestId);
    const streams = jobRef
      ? await (this.#opts.streamsOf ?? ((ref) => batchAttemptStreams(this.#opts.batch, ref)))(
          jobRef,
        )
      : [];
    const lines: string[] = [];
    for (let calls = 0; calls < MAX_CALLS_PER_READ && lines.length < limit; calls++) {
      const stream = streams[pos.attemptIndex];
      if (stream === undefined) break;
      const page = await this.#page(
        stream,
        pos.token,
        Math.min(limit - lines.length, MAX_EVENTS_PER_CALL),
        pos.token !== null && pos.token === callerToken,
      );
      for (const e of page.messages) lines.push(e);
      // CloudWatch may answer an empty page with a new token while more follows; only the
      // token it was given back means "nothing more for now".
      const exhausted = page.next === null || page.next === pos.token;
      if (!exhausted) {
        pos = { attemptIndex: pos.attemptIndex, token: page.next };
        continue;
      }
      if (pos.attemptIndex + 1 < streams.length) {
        pos = { attemptIndex: pos.attemptIndex + 1, token: null };
        continue;
      }
      break;
    }
    return { lines, nextCursor: encodeCursor(pos) };
  }

  /** One GetLogEvents call; `tokenFromCaller`: `token` came from the caller's cursor. */
  async #page(
    stream: string,
    token: string | null,
    limit: number,
    tokenFromCaller: boolean,
  ): Promise<{ messages: string[]; next: string | null }> {
    try {
      const out = await this.#opts.logs.send(
        new GetLogEventsCommand({
          logGroupName: this.#logGroup,
          logStreamName: stream,
          startFromHead: true,
          limit,
          ...(token ? { nextToken: token } : {}),
        }),
      );
      return {
        messages: (out.events ?? []).map((e) => (e.message ?? "").replace(/\r?\n$/, "")),
        next: out.nextForwardToken ?? null,
      };
    } catch (error) {
      // The stream of an attempt that just started may not exist yet: nothing to read.
      const name = (error as { name?: string }).name;
      if (name === "ResourceNotFoundException") {
        return { messages: [], next: token };
      }
      // A token CloudWatch did not issue (or one it no longer accepts) is refused with
      // InvalidParameterException; the stream name and limit are ours, so the token is
      // what it refused: a bad cursor (400), not a failure of the service (500).
      if (tokenFromCaller && INVALID_TOKEN_ERRORS.has(name ?? "")) {
        throw new InvalidRequestError(
          "cursor is not one this API returned, or has expired",
          "cursor",
        );
      }
      throw error;
    }
  }
}

/**
 * The log streams of a Batch job, oldest attempt first: those of ended attempts
 * (`attempts[].container.logStreamName`), then the running attempt's (`container`), which
 * is not in `attempts` until it ends. Empty when Batch does not know the job.
 */
export async function batchAttemptStreams(batch: BatchClient, jobRef: string): Promise<string[]> {
  const out = await batch.send(new DescribeJobsCommand({ jobs: [jobRef] }));
  const job = out.jobs?.find((j) => j.jobId === jobRef);
  if (!job) return [];
  const streams: string[] = [];
  for (const attempt of job.attempts ?? []) {
    const name = attempt.container?.logStreamName;
    if (name && !streams.includes(name)) streams.push(name);
  }
  const current = job.container?.logStreamName;
  if (current && !streams.includes(current)) streams.push(current);
  return streams;
}

function encodeCursor(pos: Position): string {
  return Buffer.from(JSON.stringify(pos)).toString("base64url");
}

function decodeCursor(cursor: string | undefined): Position {
  if (cursor === undefined || cursor === "") return { attemptIndex: 0, token: null };
  const invalid = () => new InvalidRequestError("cursor is not one this API returned", "cursor");
  if (!/^[A-Za-z0-9_-]{1,8192}$/.test(cursor)) throw invalid();
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    throw invalid();
  }
  const parsed = PositionSchema.safeParse(raw);
  if (!parsed.success) throw invalid();
  return parsed.data;
}
