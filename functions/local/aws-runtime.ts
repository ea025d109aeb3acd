/**
 * `LONGRUN_BACKEND=aws` (SPEC §5): the embedded server on the AWS adapters — DynamoDB for
 * requests, the SQS FIFO dispatch queue for wake-ups, S3 for checkpoints, outputs and logs —
 * against whatever endpoint the SDK is given (`AWS_ENDPOINT_URL`), with jobs still run as
 * local processes. What the dispatcher Lambda and the scheduled repair sweep do on AWS is
 * done here by a dispatch poller and a sweep timer, and what the webhooks Lambda does (the
 * table's stream to deliveries, the webhooks queue to receivers) by two webhook pollers.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { DescribeTableCommand } from "@aws-sdk/client-dynamodb";
import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import { HeadBucketCommand } from "@aws-sdk/client-s3";
import { GetQueueAttributesCommand } from "@aws-sdk/client-sqs";
import { createTable, tableStreamArn } from "../adapters/aws/bootstrap.ts";
import { createBucket } from "../adapters/aws/bootstrap-s3.ts";
import { createQueues, createWebhooksQueue } from "../adapters/aws/bootstrap-sqs.ts";
import { resourceNames } from "../adapters/aws/definitions.ts";
import { S3AttemptStorage, S3LogStore } from "../adapters/aws/s3-storage.ts";
import { DynamoDeliveryOrder, DynamoWebhookSecrets } from "../adapters/aws/sqs-webhooks.ts";
import { createStreamRecordHandler } from "../adapters/aws/stream-webhooks.ts";
import { createDeliveryStep, runDeliveryBatch } from "../adapters/aws/webhook-delivery.ts";
import {
  type AwsClients,
  type AwsResources,
  AwsSettingsError,
  createAwsClients,
  createAwsDeps,
  readAwsResources,
} from "../adapters/aws/wiring.ts";
import { LocalProcessCompute } from "../adapters/embedded/local-process-compute.ts";
import { AWS_ENV, ENV } from "../config/env.ts";
import type { LongrunConfig } from "../config/schema.ts";
import {
  type CoreDeps,
  dispatchQueue,
  expireQueued,
  type LifecycleListener,
  recordJobEvent,
  recoverInFlight,
  repairSweep,
} from "../core/index.ts";
import type { JobEvent } from "../core/ports.ts";
import { createDeliverer } from "../webhooks/deliver.ts";
import type { WebhookSecrets } from "../webhooks/outbox.ts";
import { DispatchPoller } from "./dispatch-poller.ts";
import { type JobUser, StartupError } from "./env.ts";
import { StreamPoller, WebhookQueuePoller } from "./webhook-pollers.ts";

export interface AwsRuntimeOptions {
  config: LongrunConfig;
  /** Work dirs of running attempts live here (checkpoints, outputs and logs go to S3). */
  dataDir: string;
  /** Where AWS_ENV settings, LONGRUN_AWS_BOOTSTRAP and LONGRUN_AWS_PREFIX are read. */
  env: NodeJS.ProcessEnv;
  allowPrivateWebhooks: boolean;
  /** Period of the TTL expiry sweep; every 30th sweep is a repair sweep. */
  sweepIntervalMs: number;
  /** Who jobs run as (LONGRUN_JOB_USER); null or absent: the server's user. */
  jobUser?: JobUser | null;
  log: (line: string) => void;
  /** Told of every state change (metrics, the queue history). */
  listeners?: readonly LifecycleListener[];
  /** Told of every webhook delivery try (metrics). */
  onWebhookTried?: (ok: boolean) => void;
  /** SDK clients (default: made from the environment, `AWS_ENDPOINT_URL` included). */
  clients?: AwsClients;
  /** Largest upload accepted (`LONGRUN_MAX_UPLOAD_BYTES`). */
  maxUploadBytes?: number;
}

/** Resource names of bootstrap-created resources must suit S3, DynamoDB and SQS alike. */
const PREFIX_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$/;
/** The order lease of this server's webhook tries (see createDeliveryStep's `leaseMs`). */
const SERVER_ORDER_LEASE_MS = 30_000;
/** Every this many sweeps (30 s at the default second), the repair sweep runs instead. */
const REPAIR_EVERY_SWEEPS = 30;

function errorName(error: unknown): string {
  return (error as { name?: string })?.name ?? "";
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/**
 * The table, bucket and dispatch queue to use. With `LONGRUN_AWS_BOOTSTRAP=1`, what is
 * missing is created (named by the AWS_ENV variable when set, else from LONGRUN_AWS_PREFIX);
 * without it every name must be given and every resource must exist.
 */
export async function resolveAwsResources(
  env: NodeJS.ProcessEnv,
  clients: AwsClients,
  log: (line: string) => void,
): Promise<AwsResources> {
  if (env[AWS_ENV.bootstrap] !== "1") {
    let resources: AwsResources;
    try {
      resources = readAwsResources(env, { needBatch: false });
    } catch (error) {
      if (!(error instanceof AwsSettingsError)) throw error;
      throw new StartupError(
        `${error.message} for ${ENV.backend}=aws (or set ${AWS_ENV.bootstrap}=1 to create the table, queues and bucket)`,
      );
    }
    await checkResources(resources, clients);
    return resources;
  }
  const prefix = env[AWS_ENV.resourcePrefix] || "longrun";
  if (!PREFIX_PATTERN.test(prefix)) {
    throw new StartupError(
      `${AWS_ENV.resourcePrefix} must be 1 to 40 lower-case letters, digits or inner hyphens, got ${JSON.stringify(prefix)}`,
    );
  }
  const names = resourceNames(prefix);
  const tableName = env[AWS_ENV.table] || names.tableName;
  const bucketName = env[AWS_ENV.bucket] || names.bucketName;
  const givenQueueUrl = env[AWS_ENV.dispatchQueueUrl];
  const givenWebhooksUrl = env[AWS_ENV.webhooksQueueUrl];
  const [, bucket, dispatchQueueUrl, webhooksQueueUrl] = await Promise.all([
    createTable(clients.dynamo, tableName),
    createBucket(clients.s3, bucketName),
    givenQueueUrl
      ? Promise.resolve(givenQueueUrl)
      : createQueues(clients.sqs, names).then((urls) => urls.dispatchQueueUrl),
    givenWebhooksUrl
      ? Promise.resolve(givenWebhooksUrl)
      : createWebhooksQueue(clients.sqs, names).then((q) => q.url),
  ]);
  if (bucket.created) log(`created bucket ${bucketName}`);
  return { tableName, bucketName, dispatchQueueUrl, webhooksQueueUrl, jobDefinitions: {} };
}

/** Fails start-up with a message naming a resource that does not exist. */
async function checkResources(resources: AwsResources, clients: AwsClients): Promise<void> {
  const hint = `(create it, or set ${AWS_ENV.bootstrap}=1)`;
  await Promise.all([
    resources.webhooksQueueUrl
      ? tableStreamArn(clients.dynamo, resources.tableName).catch((error: unknown) => {
          if (errorName(error) === "ResourceNotFoundException") return;
          throw new StartupError(
            `${(error as Error).message} (${AWS_ENV.webhooksQueueUrl} is set; enable the stream, or set ${AWS_ENV.bootstrap}=1)`,
          );
        })
      : Promise.resolve(),
    clients.dynamo
      .send(new DescribeTableCommand({ TableName: resources.tableName }))
      .catch((error: unknown) => {
        if (errorName(error) !== "ResourceNotFoundException") throw error;
        throw new StartupError(`DynamoDB table ${resources.tableName} does not exist ${hint}`);
      }),
    clients.s3
      .send(new HeadBucketCommand({ Bucket: resources.bucketName }))
      .catch((error: unknown) => {
        if (httpStatus(error) !== 404 && errorName(error) !== "NotFound") throw error;
        throw new StartupError(`S3 bucket ${resources.bucketName} does not exist ${hint}`);
      }),
    clients.sqs
      .send(
        new GetQueueAttributesCommand({
          QueueUrl: resources.dispatchQueueUrl,
          AttributeNames: ["FifoQueue"],
        }),
      )
      .then((out) => {
        if (out.Attributes?.FifoQueue !== "true") {
          throw new StartupError(
            `${AWS_ENV.dispatchQueueUrl} must name a FIFO queue, got ${resources.dispatchQueueUrl}`,
          );
        }
      })
      .catch((error: unknown) => {
        if (error instanceof StartupError) throw error;
        if (!/NonExistentQueue|QueueDoesNotExist/.test(errorName(error))) throw error;
        throw new StartupError(`SQS queue ${resources.dispatchQueueUrl} does not exist ${hint}`);
      }),
  ]);
}

/**
 * The server's engine on the AWS adapters: the same core use cases as EmbeddedRuntime, with
 * local job processes whose checkpoints, outputs and logs live in S3, a dispatch poller in
 * place of the dispatcher Lambda and a sweep timer in place of the scheduled repair sweep.
 * Artifact URLs are S3 presigned GETs, so there is no signer.
 */
export class AwsRuntime {
  readonly deps: CoreDeps;
  readonly compute: LocalProcessCompute;
  readonly logs: S3LogStore;
  readonly resources: AwsResources;
  readonly #clients: AwsClients;
  readonly #poller: DispatchPoller;
  /** The tenants' webhook secrets; absent when the deployment has no webhooks queue. */
  readonly webhookSecrets: WebhookSecrets | undefined;
  readonly #webhooks: { stream: StreamPoller; queue: WebhookQueuePoller } | undefined;
  readonly #streams: DynamoDBStreamsClient | undefined;
  readonly #options: AwsRuntimeOptions;
  #sweep: NodeJS.Timeout | undefined;
  #sweeping: Promise<void> | null = null;
  #sweeps = 0;

  /** Resolves (or, with bootstrap, creates) the resources and wires the runtime. */
  static async create(options: AwsRuntimeOptions): Promise<AwsRuntime> {
    const clients = options.clients ?? createAwsClients();
    try {
      await clients.dynamo.config.region();
    } catch {
      throw new StartupError(`AWS_REGION must be set for ${ENV.backend}=aws`);
    }
    const resources = await resolveAwsResources(options.env, clients, options.log);
    const streamArn = resources.webhooksQueueUrl
      ? await tableStreamArn(clients.dynamo, resources.tableName)
      : undefined;
    return new AwsRuntime(options, clients, resources, streamArn);
  }

  private constructor(
    options: AwsRuntimeOptions,
    clients: AwsClients,
    resources: AwsResources,
    streamArn: string | undefined,
  ) {
    this.#options = options;
    this.#clients = clients;
    this.resources = resources;
    mkdirSync(options.dataDir, { recursive: true });
    const { s3 } = clients;
    const bucket = resources.bucketName;
    this.logs = new S3LogStore(s3, bucket);
    this.compute = new LocalProcessCompute({
      dataDir: options.dataDir,
      onEvent: (event) => this.#onJobEvent(event),
      logs: this.logs,
      storageFor: (request) =>
        new S3AttemptStorage(s3, bucket, request.id, {
          onWarning: options.log,
          ...(options.jobUser ? { jobUid: options.jobUser.uid } : {}),
        }),
      onError: (error, context) => options.log(`${context}: ${String(error)}`),
      ...(options.jobUser ? { jobUser: options.jobUser } : {}),
    });
    this.deps = createAwsDeps({
      config: options.config,
      resources,
      clients,
      compute: this.compute,
      logs: this.logs,
      allowPrivateWebhooks: options.allowPrivateWebhooks,
      ...(options.maxUploadBytes !== undefined ? { maxUploadBytes: options.maxUploadBytes } : {}),
      ...(options.listeners ? { listeners: options.listeners } : {}),
    });
    this.#poller = new DispatchPoller({
      client: clients.sqs,
      queueUrl: resources.dispatchQueueUrl,
      dispatch: (queue) => dispatchQueue(queue, this.deps),
      isKnownQueue: (queue) => Object.hasOwn(this.deps.queues, queue),
      log: options.log,
    });
    const queueUrl = resources.webhooksQueueUrl;
    if (queueUrl && streamArn) {
      const secrets = new DynamoWebhookSecrets(clients.dynamo, resources.tableName);
      this.webhookSecrets = secrets;
      // The same endpoint, region and credentials as the table's client.
      const d = clients.dynamo.config;
      this.#streams = new DynamoDBStreamsClient({
        region: d.region,
        credentials: d.credentials,
        ...(d.endpoint ? { endpoint: d.endpoint } : {}),
      });
      const note = (message: string, fields?: Record<string, unknown>) =>
        options.log(`${message} ${JSON.stringify(fields ?? {})}`);
      const stream = createStreamRecordHandler({
        sqs: clients.sqs,
        queueUrl,
        onUnreadable: (record, error) =>
          note("unreadable stream record skipped", {
            sequenceNumber: record.dynamodb?.SequenceNumber,
            error: String(error),
          }),
      });
      const step = createDeliveryStep({
        secrets,
        order: new DynamoDeliveryOrder(clients.dynamo, resources.tableName),
        deliver: createDeliverer({ allowPrivate: options.allowPrivateWebhooks }),
        sqs: clients.sqs,
        queueUrl,
        clock: { now: () => Date.now() },
        log: { info: () => {}, warn: note, error: note },
        // Tries are bounded (10 s lookup, 10 s answer) and this process has no Lambda time
        // limit to outlive: a shorter lease lets a restart resume a killed try sooner.
        leaseMs: SERVER_ORDER_LEASE_MS,
        ...(options.onWebhookTried ? { onTried: options.onWebhookTried } : {}),
      });
      this.#webhooks = {
        stream: new StreamPoller({
          streams: this.#streams,
          streamArn,
          checkpointPath: join(options.dataDir, "webhooks-stream.json"),
          handle: stream,
          log: options.log,
        }),
        queue: new WebhookQueuePoller({
          sqs: clients.sqs,
          queueUrl,
          run: (messages) => runDeliveryBatch(messages, step, note),
          log: options.log,
        }),
      };
    }
  }

  /**
   * Events are conditional writes that ignore duplicates and stale attempts, so one that
   * failed on a transient error is simply sent again.
   */
  async #onJobEvent(event: JobEvent): Promise<void> {
    for (let tries = 1; ; tries++) {
      try {
        await recordJobEvent(event, this.deps);
        return;
      } catch (error) {
        if (tries >= 3) {
          this.#options.log(
            `recording ${event.type} of ${event.requestId} attempt ${event.attempt} failed: ${String(error)}`,
          );
          return;
        }
        await new Promise((r) => setTimeout(r, 250 * tries));
      }
    }
  }

  /**
   * Recovers what a previous server left in flight (its job processes are stopped first and
   * their checkpoints saved to S3), then starts dispatching and the sweep timer.
   * @returns how many in-flight requests were recovered.
   */
  async start(): Promise<number> {
    const recovered = await recoverInFlight(this.deps);
    await expireQueued(this.deps);
    this.#poller.start();
    this.#webhooks?.stream.start();
    this.#webhooks?.queue.start();
    this.#sweep = setInterval(() => {
      this.#sweeping ??= this.#runSweep().finally(() => {
        this.#sweeping = null;
      });
    }, this.#options.sweepIntervalMs);
    this.#sweep.unref();
    return recovered;
  }

  async #runSweep(): Promise<void> {
    try {
      if (++this.#sweeps % REPAIR_EVERY_SWEEPS === 0) {
        // No relaunch of STARTING requests: only this process dispatches, and a restart
        // recovers what a crash left STARTING.
        const report = await repairSweep(this.deps);
        for (const d of report.counterDrift) {
          this.#options.log(
            `queue ${d.queue}: stored counters ${JSON.stringify(d.stored)} differ from a recount ${JSON.stringify(d.counted)}`,
          );
        }
      } else {
        await expireQueued(this.deps);
      }
    } catch (error) {
      this.#options.log(`sweep failed: ${String(error)}`);
    }
  }

  /**
   * Graceful stop: no new dispatches, running jobs get SIGTERM (SIGKILL after their grace)
   * and save their checkpoints to S3; their requests stay active and the next start retries
   * them. Buffered log lines are written before the clients close.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.#sweep) clearInterval(this.#sweep);
    await this.#poller.stop();
    await this.#sweeping;
    await this.#webhooks?.stream.stop();
    await this.#webhooks?.queue.stop();
    await this.compute.shutdown(graceMs);
    await this.logs.flush();
    for (const client of Object.values(this.#clients)) client.destroy();
    this.#streams?.destroy();
  }
}
