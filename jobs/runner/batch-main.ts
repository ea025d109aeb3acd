/**
 * The AWS Batch container entrypoint: runs one attempt of a request under the job contract
 * (SPEC §4) with S3 storage, and reports progress to the request's DynamoDB item.
 *
 *     node --import tsx jobs/runner/batch-main.ts -- <the queue's command...>
 *
 * Batch gives the container LONGRUN_REQUEST_ID, LONGRUN_QUEUE, LONGRUN_BUCKET, LONGRUN_TABLE
 * (from the job definition and SubmitJob's overrides) and AWS_BATCH_JOB_ATTEMPT. The job's
 * stdout and stderr are copied to the container's, which the awslogs driver ships to
 * CloudWatch. The container's exit code is the job's: Batch's retry strategy decides on it.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import { STSClient } from "@aws-sdk/client-sts";
import { DynamoDBDocumentClient, UpdateCommand } from "@aws-sdk/lib-dynamodb";
import { FIRST_ATTEMPT_ENV } from "../../functions/adapters/aws/batch-events.ts";
import { type ProgressUpdate, progressUpdateInput } from "../../functions/adapters/aws/items.ts";
import { S3AttemptStorage, S3InputStore } from "../../functions/adapters/aws/s3-storage.ts";
import { AWS_ENV, JOB_ENV } from "../../functions/config/env.ts";
import { type AttemptResult, startAttempt } from "./attempt.ts";
import {
  ScopedCredentials,
  type ServedCredentials,
  withServedCredentials,
} from "./scoped-credentials.ts";

/**
 * Variables the Batch entrypoint reads besides {@link JOB_ENV}'s request id and queue and
 * {@link AWS_ENV}'s bucket and table.
 */
export const BATCH_ENV = {
  /** Set by AWS Batch: 1 for the job's first attempt, 2 for its first retry, … */
  batchAttempt: "AWS_BATCH_JOB_ATTEMPT",
  /** Set by BatchCompute: the request attempt of the job's first Batch attempt (default 1). */
  firstAttempt: FIRST_ATTEMPT_ENV,
  /** Optional backstop; Batch's attemptDurationSeconds is what enforces the queue's timeout. */
  timeoutSeconds: "LONGRUN_TIMEOUT_SECONDS",
  /** SIGTERM-to-SIGKILL wait for the job (default 25 s, inside ECS's default 30 s stop timeout). */
  cancelGraceSeconds: "LONGRUN_CANCEL_GRACE_SECONDS",
  /** Folder for the attempt's work dir (default: the OS temp dir). */
  workRoot: "LONGRUN_WORK_ROOT",
  /**
   * Set by the job definition: the queue's scoped role. The runner assumes it for its own
   * request and hands only those credentials to the job (scoped-credentials.ts). Unset
   * (emulators, runs outside Batch): the job inherits the container's credentials.
   */
  scopedRoleArn: AWS_ENV.jobScopedRole,
} as const;

/** What the entrypoint was asked to run, parsed from its environment and argv. */
export interface BatchAttemptConfig {
  requestId: string;
  queue: string;
  bucket: string;
  table: string;
  attempt: number;
  command: string[];
  timeoutSeconds: number;
  cancelGraceSeconds: number;
  workRoot: string;
}

/** A progress report or heartbeat for the request item (its layout lives in items.ts). */
export type { ProgressUpdate };

/**
 * Writes a progress update to the request item. Resolves `false` when the item refused it
 * (the request is no longer STARTING/RUNNING at this attempt): a stale attempt must not
 * overwrite what a newer one or the final status says.
 */
export type ProgressWriter = (update: ProgressUpdate) => Promise<boolean>;

/** What {@link runBatchAttempt} needs from the outside; tests pass their own. */
export interface BatchAttemptDeps {
  /** The process argv; the job's command is everything after the first `--`. */
  argv: readonly string[];
  s3: S3Client;
  writeProgress: ProgressWriter;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Where SIGTERM/SIGINT arrive (default: `process`). */
  signals?: Pick<NodeJS.EventEmitter, "on" | "off">;
  /** Time between heartbeats while the job runs (default 30 s). */
  heartbeatIntervalMs?: number;
  /** Progress-file poll period (default: the runner's). */
  pollIntervalMs?: number;
  /** Told when `runAttempt` is underway (tests use it to know the job was spawned). */
  onStarted?: (pid: number) => void;
  /**
   * Credentials to serve the job instead of the container's (see scoped-credentials.ts);
   * the entrypoint passes the same ones its `s3` and `writeProgress` use.
   */
  jobCredentials?: Pick<ScopedCredentials, "serve">;
  clock?: () => number;
}

/** Thrown for a missing or malformed variable or argument; the entrypoint exits 2 on it. */
export class BatchConfigError extends Error {
  override name = "BatchConfigError";
}

function required(env: Readonly<Record<string, string | undefined>>, name: string): string {
  const value = env[name];
  if (value === undefined || value === "") throw new BatchConfigError(`${name} is not set`);
  return value;
}

function positiveNumber(
  env: Readonly<Record<string, string | undefined>>,
  name: string,
  fallback: number,
): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) {
    throw new BatchConfigError(`${name} must be a non-negative number, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function positiveInteger(
  env: Readonly<Record<string, string | undefined>>,
  name: string,
  fallback: number,
): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^[1-9][0-9]{0,5}$/.test(raw)) {
    throw new BatchConfigError(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  }
  return Number(raw);
}

/** Parses and checks the entrypoint's inputs. */
export function parseBatchAttemptConfig(
  env: Readonly<Record<string, string | undefined>>,
  argv: readonly string[],
): BatchAttemptConfig {
  const dashes = argv.indexOf("--");
  const command = dashes < 0 ? [] : argv.slice(dashes + 1);
  if (command.length === 0) {
    throw new BatchConfigError("no job command: pass it after `--`");
  }
  // A job submitted for request attempt k runs request attempts k, k+1, … as Batch retries
  // it (see batch-events.ts). LONGRUN_ATTEMPT alone is accepted for runs outside Batch.
  const batchAttempt = env[BATCH_ENV.batchAttempt];
  const attempt =
    batchAttempt === undefined
      ? positiveInteger(env, JOB_ENV.attempt, 1)
      : positiveInteger(env, BATCH_ENV.firstAttempt, 1) -
        1 +
        positiveInteger(env, BATCH_ENV.batchAttempt, 1);
  return {
    requestId: required(env, JOB_ENV.requestId),
    queue: required(env, JOB_ENV.queue),
    bucket: required(env, AWS_ENV.bucket),
    table: required(env, AWS_ENV.table),
    attempt,
    command,
    // 0 means no runner-side limit: setTimeout's ceiling (about 24 days) then applies.
    timeoutSeconds: positiveNumber(env, BATCH_ENV.timeoutSeconds, 0) || 2 ** 31 / 1000,
    cancelGraceSeconds: positiveNumber(env, BATCH_ENV.cancelGraceSeconds, 25),
    workRoot: env[BATCH_ENV.workRoot] || tmpdir(),
  };
}

/**
 * The environment the job inherits. In a Batch container every variable was put there for
 * this job (the queue's `env` arrives this way), so all pass through except the runner's
 * own; the runner adds the LONGRUN_* contract variables on top.
 */
function jobBaseEnv(env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const out: Record<string, string> = { PYTHONUNBUFFERED: "1" };
  const own = new Set<string>([
    AWS_ENV.bucket,
    AWS_ENV.table,
    ...Object.values(BATCH_ENV).filter((n) => n.startsWith("LONGRUN_")),
  ]);
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && !own.has(name)) out[name] = value;
  }
  return out;
}

/**
 * The exit code that tells Batch how the attempt went. Only a saved success is 0: a job
 * that exits 0 after SIGTERM (a Spot interruption) or whose outputs could not be saved must
 * be retried, so it maps to a failure.
 */
export function exitCodeOf(result: AttemptResult): number {
  if (result.outcome === "succeeded") return 0;
  if (result.exitCode !== null && result.exitCode !== 0) return result.exitCode;
  if (result.signal !== null) return 128 + (constants.signals[result.signal] ?? 0);
  return result.stopReason !== null ? 128 + constants.signals.SIGTERM : 1;
}

/**
 * Runs the attempt the environment describes and resolves with the exit code the container
 * should end with. Never rejects: a failure before the job starts is printed and exits 1
 * (2 for a configuration error, which no retry fixes).
 */
export async function runBatchAttempt(
  env: Readonly<Record<string, string | undefined>>,
  deps: BatchAttemptDeps,
): Promise<number> {
  const note = (text: string) => deps.stderr.write(`[longrun] ${text}\n`);
  let config: BatchAttemptConfig;
  try {
    config = parseBatchAttemptConfig(env, deps.argv);
  } catch (error) {
    note(`configuration error: ${(error as Error).message}`);
    return 2;
  }
  const now = deps.clock ?? Date.now;
  const signals = deps.signals ?? process;
  const { requestId, attempt } = config;

  // Progress and heartbeats go out one at a time, in order, and never fail the job.
  let writes: Promise<void> = Promise.resolve();
  let warnedStale = false;
  const write = (progress?: ProgressUpdate["progress"]) => {
    writes = writes.then(async () => {
      try {
        const update: ProgressUpdate = { requestId, attempt, heartbeatAt: now() };
        if (progress) update.progress = progress;
        const accepted = await deps.writeProgress(update);
        if (!accepted && !warnedStale) {
          warnedStale = true;
          note(`request ${requestId} is no longer active at attempt ${attempt}; progress ignored`);
        }
      } catch (error) {
        note(`could not write progress: ${(error as Error).message}`);
      }
    });
    return writes;
  };

  let workDir: string | undefined;
  let handle: ReturnType<typeof startAttempt> | undefined;
  let stopRequested: string | null = null;
  const onSignal = (signal: NodeJS.Signals) => {
    note(`received ${signal}: stopping the job and saving its checkpoint`);
    stopRequested = signal;
    handle?.stop(signal);
  };
  signals.on("SIGTERM", onSignal);
  signals.on("SIGINT", onSignal);
  let heartbeat: NodeJS.Timeout | undefined;
  let served: ServedCredentials | undefined;
  try {
    if (deps.jobCredentials) {
      try {
        served = await deps.jobCredentials.serve();
      } catch (error) {
        note(`could not assume the request's scoped role: ${(error as Error).message}`);
        return 1;
      }
    }
    const stored = await new S3InputStore(deps.s3, config.bucket).getInput(requestId);
    if (stored === null) {
      note(`no input stored for ${requestId} in s3://${config.bucket}`);
      return 1;
    }
    workDir = await mkdtemp(join(config.workRoot, `longrun-${requestId}-`));
    const storage = new S3AttemptStorage(deps.s3, config.bucket, requestId, {
      onWarning: (message) => note(message),
    });
    handle = startAttempt({
      command: config.command,
      job: { requestId, queue: config.queue, attempt },
      workDir,
      input: stored.input,
      storage,
      timeoutSeconds: config.timeoutSeconds,
      cancelGraceSeconds: config.cancelGraceSeconds,
      baseEnv: served ? withServedCredentials(jobBaseEnv(env), served.env) : jobBaseEnv(env),
      ...(deps.pollIntervalMs ? { pollIntervalMs: deps.pollIntervalMs } : {}),
      logSink: (line, stream) => {
        (stream === "stdout" ? deps.stdout : deps.stderr).write(`${line}\n`);
      },
      onStarted: ({ pid }) => {
        void write();
        heartbeat = setInterval(() => void write(), deps.heartbeatIntervalMs ?? 30_000);
        heartbeat.unref();
        deps.onStarted?.(pid);
      },
      // Awaited by the runner, so the item's progress never runs ahead of the saved checkpoint.
      onProgress: (p) => write({ ...p, updatedAt: now() }),
    });
    // A signal that came while the input was downloading had no job to stop yet.
    if (stopRequested !== null) handle.stop(stopRequested);
    const result = await handle.done;
    clearInterval(heartbeat);
    await writes;
    note(`attempt ${attempt}: ${result.message}`);
    return exitCodeOf(result);
  } catch (error) {
    note(`attempt ${attempt} could not run: ${(error as Error).message}`);
    return 1;
  } finally {
    clearInterval(heartbeat);
    signals.off("SIGTERM", onSignal);
    signals.off("SIGINT", onSignal);
    await served?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true }).catch(() => {});
  }
}

/**
 * The production {@link ProgressWriter}: one conditional UpdateItem on the request item,
 * built by items.ts (applied only while the request is STARTING or RUNNING at this attempt,
 * bumping `rev` as every writer must).
 */
export function dynamoProgressWriter(
  client: DynamoDBClient | DynamoDBDocumentClient,
  table: string,
): ProgressWriter {
  const doc =
    client instanceof DynamoDBDocumentClient
      ? client
      : DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });
  return async (update) => {
    try {
      await doc.send(new UpdateCommand(progressUpdateInput(table, update)));
      return true;
    } catch (error) {
      if ((error as { name?: string }).name === "ConditionalCheckFailedException") return false;
      throw error;
    }
  };
}

/** S3 client for the container; path-style addressing when an emulator endpoint is given. */
function s3ClientFromEnv(
  env: NodeJS.ProcessEnv,
  credentials: ScopedCredentials["provider"] | undefined,
): S3Client {
  const endpoint = env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
  return new S3Client({
    ...(endpoint ? { forcePathStyle: true } : {}),
    ...(credentials ? { credentials } : {}),
  });
}

/**
 * The request's scoped credentials when the job definition names a scoped role; undefined
 * without one, or when the configuration is unusable (runBatchAttempt then reports it).
 */
export function scopedCredentialsFromEnv(
  env: Readonly<Record<string, string | undefined>>,
  argv: readonly string[],
  sts: STSClient,
): ScopedCredentials | undefined {
  const roleArn = env[BATCH_ENV.scopedRoleArn];
  if (!roleArn) return undefined;
  let config: BatchAttemptConfig;
  try {
    config = parseBatchAttemptConfig(env, argv);
  } catch {
    return undefined;
  }
  return new ScopedCredentials(sts, {
    roleArn,
    requestId: config.requestId,
    bucket: config.bucket,
    table: config.table,
  });
}

/** The entrypoint: wires real clients to {@link runBatchAttempt} and exits with its code. */
export async function main(): Promise<void> {
  // STS itself is called with the container's (task role) credentials: all they allow.
  const scoped = scopedCredentialsFromEnv(process.env, process.argv, new STSClient({}));
  const credentials = scoped?.provider;
  const s3 = s3ClientFromEnv(process.env, credentials);
  const table = process.env[AWS_ENV.table] ?? "";
  const code = await runBatchAttempt(process.env, {
    argv: process.argv,
    s3,
    writeProgress: dynamoProgressWriter(
      new DynamoDBClient(credentials ? { credentials } : {}),
      table,
    ),
    stdout: process.stdout,
    stderr: process.stderr,
    ...(scoped ? { jobCredentials: scoped } : {}),
  });
  process.exitCode = code;
}

// Imported (tests, other tools) it only exports; run as a program it runs the attempt.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
