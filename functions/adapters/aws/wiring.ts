import { BatchClient } from "@aws-sdk/client-batch";
import { CloudWatchLogsClient } from "@aws-sdk/client-cloudwatch-logs";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import { SQSClient } from "@aws-sdk/client-sqs";
import { AWS_ENV } from "../../config/env.ts";
import type { LongrunConfig, QueueConfig } from "../../config/schema.ts";
import type { Compute, LaunchOptions, LogStore } from "../../core/ports.ts";
import type { RequestRecord } from "../../core/request.ts";
import { type CoreDeps, type LifecycleListener, listenAll } from "../../core/usecases/deps.ts";
import { newRequestId, newUploadId } from "../ids.ts";
import { createWebhookGuard } from "../net/webhook-guard.ts";
import { BatchCompute } from "./batch-compute.ts";
import { CloudWatchLogStore } from "./cloudwatch-logs.ts";
import { DynamoRequestStore } from "./dynamo-request-store.ts";
import { DynamoUploadStore } from "./dynamo-uploads.ts";
import { S3FileStore } from "./s3-files.ts";
import { S3InputStore, S3ResultStore } from "./s3-storage.ts";
import { SqsDispatchTrigger } from "./sqs-trigger.ts";

/** Where the deployment's resources are, as the CDK app (or the bootstrap) tells each process. */
export interface AwsResources {
  tableName: string;
  bucketName: string;
  dispatchQueueUrl: string;
  /** Batch job queue ARN; absent where jobs run as local processes. */
  batchJobQueue?: string | undefined;
  /** longrun queue name → Batch job definition ARN. */
  jobDefinitions: Record<string, string>;
  jobLogGroup?: string | undefined;
  /**
   * The webhooks queue; absent: no webhooks. Deliveries are enqueued by the consumer of the
   * table's stream (functions/adapters/aws/stream-webhooks.ts), not by the writers.
   */
  webhooksQueueUrl?: string | undefined;
}

export class AwsSettingsError extends Error {
  override name = "AwsSettingsError";
}

function required(env: NodeJS.ProcessEnv, name: string): string {
  const v = env[name];
  if (!v) throw new AwsSettingsError(`${name} must be set`);
  return v;
}

/** Reads the resource settings of one process from its environment (AWS_ENV names). */
export function readAwsResources(
  env: NodeJS.ProcessEnv,
  opts: { needBatch: boolean },
): AwsResources {
  let jobDefinitions: Record<string, string> = {};
  const rawDefs = env[AWS_ENV.jobDefinitions];
  if (rawDefs) {
    try {
      jobDefinitions = JSON.parse(rawDefs) as Record<string, string>;
    } catch {
      throw new AwsSettingsError(`${AWS_ENV.jobDefinitions} must be a JSON object`);
    }
  }
  return {
    tableName: required(env, AWS_ENV.table),
    bucketName: required(env, AWS_ENV.bucket),
    dispatchQueueUrl: required(env, AWS_ENV.dispatchQueueUrl),
    batchJobQueue: opts.needBatch
      ? required(env, AWS_ENV.batchJobQueue)
      : env[AWS_ENV.batchJobQueue],
    jobDefinitions,
    jobLogGroup: env[AWS_ENV.jobLogGroup],
    webhooksQueueUrl: env[AWS_ENV.webhooksQueueUrl] || undefined,
  };
}

export interface AwsClients {
  dynamo: DynamoDBClient;
  sqs: SQSClient;
  s3: S3Client;
  batch: BatchClient;
  logs: CloudWatchLogsClient;
}

/**
 * One client per service, made once per process. The SDK reads the region, credentials and
 * `AWS_ENDPOINT_URL` (an emulator) from the environment; S3 then needs path-style addressing.
 */
export function createAwsClients(
  overrides: {
    endpoint?: string;
    region?: string;
    credentials?: { accessKeyId: string; secretAccessKey: string };
  } = {},
): AwsClients {
  const endpoint = overrides.endpoint ?? process.env.AWS_ENDPOINT_URL;
  const common = {
    ...(overrides.endpoint ? { endpoint: overrides.endpoint } : {}),
    ...(overrides.region ? { region: overrides.region } : {}),
    ...(overrides.credentials ? { credentials: overrides.credentials } : {}),
  };
  return {
    dynamo: new DynamoDBClient(common),
    sqs: new SQSClient(common),
    s3: new S3Client({ ...common, ...(endpoint ? { forcePathStyle: true } : {}) }),
    batch: new BatchClient(common),
    logs: new CloudWatchLogsClient(common),
  };
}

/**
 * A Compute that stores the request's input in S3 before the job starts, where the job's
 * runner reads it (an item's input may be up to 256 KiB; a container environment cannot
 * carry that). The put is idempotent, so a relaunch writes the same object again.
 */
export class InputUploadingCompute implements Compute {
  readonly retries: Compute["retries"];
  readonly inspect: Compute["inspect"];

  constructor(
    private readonly inner: Compute,
    private readonly inputs: S3InputStore,
  ) {
    this.retries = inner.retries;
    this.inspect = inner.inspect?.bind(inner);
  }

  async start(
    request: RequestRecord,
    queue: QueueConfig,
    options?: LaunchOptions,
  ): Promise<{ jobRef: string }> {
    await this.inputs.putInput(request.id, request.input);
    return this.inner.start(request, queue, options);
  }

  stop: Compute["stop"] = (request, reason) => this.inner.stop(request, reason);
  reap: Compute["reap"] = (request) => this.inner.reap(request);
}

export interface AwsDepsOptions {
  config: LongrunConfig;
  resources: AwsResources;
  clients: AwsClients;
  /** Default: AWS Batch (needs `resources.batchJobQueue`). */
  compute?: Compute;
  /** Default: CloudWatch Logs of the Batch jobs. */
  logs?: LogStore;
  allowPrivateWebhooks?: boolean;
  /** Largest upload accepted (`LONGRUN_MAX_UPLOAD_BYTES`); default 5 GiB, S3's PUT limit. */
  maxUploadBytes?: number;
  /**
   * Told of every state change (metrics, the queue history); webhooks follow from the
   * table's stream instead.
   */
  listeners?: readonly LifecycleListener[];
}

/** The core's ports on AWS: DynamoDB, SQS, S3, Batch and CloudWatch Logs. */
export function createAwsDeps(opts: AwsDepsOptions): CoreDeps {
  const { config, resources, clients } = opts;
  const queues = config.queues;
  const store = new DynamoRequestStore({
    client: clients.dynamo,
    tableName: resources.tableName,
    queues: () => Object.keys(queues),
    retentionDaysFor: (q) => queues[q]?.retentionDays ?? 30,
  });
  let compute = opts.compute;
  if (!compute) {
    const jobQueueArn = resources.batchJobQueue;
    if (!jobQueueArn) throw new AwsSettingsError(`${AWS_ENV.batchJobQueue} must be set`);
    compute = new InputUploadingCompute(
      new BatchCompute({
        client: clients.batch,
        jobQueueArn,
        jobDefinitionFor: (q) => {
          const def = resources.jobDefinitions[q.name];
          if (!def) throw new AwsSettingsError(`no job definition for queue ${q.name}`);
          return def;
        },
        bucket: resources.bucketName,
        table: resources.tableName,
      }),
      new S3InputStore(clients.s3, resources.bucketName),
    );
  }
  const logs =
    opts.logs ??
    new CloudWatchLogStore({
      logs: clients.logs,
      batch: clients.batch,
      ...(resources.jobLogGroup ? { logGroup: resources.jobLogGroup } : {}),
      jobRefOf: async (id) => (await store.get(id))?.jobRef ?? null,
    });
  return {
    store,
    trigger: new SqsDispatchTrigger({ client: clients.sqs, queueUrl: resources.dispatchQueueUrl }),
    compute,
    results: new S3ResultStore(clients.s3, resources.bucketName),
    logs,
    clock: { now: () => Date.now() },
    ids: { requestId: newRequestId, uploadId: newUploadId },
    queues,
    webhookGuard: createWebhookGuard({ allowPrivate: opts.allowPrivateWebhooks === true }),
    uploads: new DynamoUploadStore(clients.dynamo, resources.tableName),
    files: new S3FileStore(clients.s3, resources.bucketName),
    ...(opts.maxUploadBytes !== undefined ? { maxUploadBytes: opts.maxUploadBytes } : {}),
    ...listenAll(opts.listeners ?? []),
  };
}
