/**
 * Drives longrun's real Lambda handlers on the emulator: each test file builds its own
 * uniquely named table, queues, bucket and Batch job queue, and invokes the handlers with the
 * event shapes AWS delivers (API Gateway HTTP API v2 with JWT claims, SQS records built from
 * messages really received from the emulator's queues, EventBridge Batch state changes).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  type BatchClient,
  DescribeJobsCommand,
  type JobDetail,
  type JobSummary,
  ListJobsCommand,
} from "@aws-sdk/client-batch";
import {
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  SendMessageCommand,
} from "@aws-sdk/client-sqs";
import type {
  APIGatewayProxyEventV2,
  APIGatewayProxyEventV2WithJWTAuthorizer,
  Context,
  SQSBatchResponse,
  SQSEvent,
  SQSRecord,
} from "aws-lambda";
import { createTable } from "../../../functions/adapters/aws/bootstrap.ts";
import { createBucket } from "../../../functions/adapters/aws/bootstrap-s3.ts";
import {
  createQueues,
  createWebhooksQueue,
  type QueueUrls,
} from "../../../functions/adapters/aws/bootstrap-sqs.ts";
import { resourceNames } from "../../../functions/adapters/aws/definitions.ts";
import type { DynamoRequestStore } from "../../../functions/adapters/aws/dynamo-request-store.ts";
import { DynamoWebhookSecrets } from "../../../functions/adapters/aws/sqs-webhooks.ts";
import {
  type AwsClients,
  type AwsResources,
  createAwsClients,
  createAwsDeps,
} from "../../../functions/adapters/aws/wiring.ts";
import { parseConfig } from "../../../functions/config/load.ts";
import type { LongrunConfig, QueueConfigInput } from "../../../functions/config/schema.ts";
import type { QueueCounts } from "../../../functions/core/ports.ts";
import type { RequestRecord } from "../../../functions/core/request.ts";
import type { CoreDeps } from "../../../functions/core/usecases/deps.ts";
import type { RepairOptions, RepairReport } from "../../../functions/core/usecases/repair.ts";
import { createBatchEventsHandler } from "../../../functions/handlers/batch-events.ts";
import { createDispatcherHandler } from "../../../functions/handlers/dispatcher.ts";
import { createHttpHandler } from "../../../functions/handlers/http.ts";
import { createSweepHandler, LOST_JOB_AFTER_MS } from "../../../functions/handlers/sweep.ts";
import { registerEmulatorJobDefinition } from "../../helpers/emulator-batch.ts";
import { awsClientConfig, createBatchQueue, uniqueName } from "../aws.ts";

const FIXTURES = join(import.meta.dirname, "../../fixtures/batch-events");

/** Queues every harness configures unless a file passes its own. */
export const DEFAULT_QUEUES: Record<string, QueueConfigInput> = {
  finetune: {
    command: ["python3", "train.py"],
    maxQueued: 100,
    maxRunning: 2,
    timeoutSeconds: 3600,
    maxAttempts: 3,
    queueTtlSeconds: 86_400,
    env: { EPOCHS_DEFAULT: "3" },
  },
  small: {
    command: ["python3", "small.py"],
    maxQueued: 2,
    maxRunning: 1,
    timeoutSeconds: 600,
    maxAttempts: 2,
  },
};

export interface ApiAnswer {
  status: number;
  headers: Record<string, string>;
  /** The body parsed as JSON (null when empty). */
  body: any;
}

export interface ApiOptions {
  /** The JWT `sub` claim; null: no authorizer context at all. Default "acme". */
  tenant?: string | null;
  body?: unknown;
  headers?: Record<string, string>;
  query?: Record<string, string>;
}

/** What one delivery of SQS messages to a handler did. */
export interface Delivery {
  /** Messages handed to the handler. */
  received: number;
  /** Messages the handler reported as failed (left on the queue for SQS to redeliver). */
  failed: Message[];
  /** The handler threw (Powertools does when every record of a batch failed). */
  threw: boolean;
}

export interface BatchEventOptions {
  /** Ended attempts listed in `attempts[]` (default 0 before the end, 1 at the end). */
  attempts?: number;
  statusReason?: string;
  /** Exit code of the last ended attempt (default 0 for SUCCEEDED, 1 for FAILED). */
  exitCode?: number;
  /** Overrides the job queue ARN in the detail (a foreign queue's events). */
  jobQueue?: string;
  /** Overrides the job name (a job longrun did not submit). */
  jobName?: string;
  /** Overrides the job id (another job of the same request). */
  jobId?: string;
}

const FIXTURE_OF: Record<string, string> = {
  RUNNABLE: "runnable.json",
  STARTING: "starting.json",
  RUNNING: "running.json",
  SUCCEEDED: "succeeded.json",
  FAILED: "failed-exit-code.json",
};

/**
 * A "Batch Job State Change" EventBridge event for `job` (as DescribeJobs shows it) moved to
 * `status`, built on the fixture of that status; log streams are named under `logPrefix`.
 */
export function batchStateChangeEvent(
  job: JobDetail,
  status: string,
  opts: BatchEventOptions = {},
  logPrefix = "longrun",
): any {
  const fixtureName = FIXTURE_OF[status];
  if (!fixtureName) throw new Error(`no fixture for status ${status}`);
  const event = JSON.parse(readFileSync(join(FIXTURES, fixtureName), "utf8"));
  const now = Date.now();
  const jobId = opts.jobId ?? job.jobId;
  const jobArn =
    opts.jobId === undefined && job.jobArn
      ? job.jobArn
      : `arn:aws:batch:us-east-1:123456789012:job/${jobId}`;
  const finished = status === "SUCCEEDED" || status === "FAILED";
  const ended = opts.attempts ?? (finished ? 1 : 0);
  const attempts = Array.from({ length: ended }, (_, i) => {
    const last = i === ended - 1 && finished;
    const exitCode = last ? (opts.exitCode ?? (status === "SUCCEEDED" ? 0 : 1)) : 1;
    return {
      container: {
        containerInstanceArn: "arn:aws:ecs:us-east-1:123456789012:container-instance/abc",
        taskArn: `arn:aws:ecs:us-east-1:123456789012:task/longrun/${i}`,
        exitCode,
        logStreamName: `${logPrefix}/default/${job.jobId}-${i}`,
        networkInterfaces: [],
      },
      startedAt: now - 60_000 * (ended - i),
      stoppedAt: now - 60_000 * (ended - i) + 30_000,
      statusReason: last
        ? (opts.statusReason ?? "Essential container in task exited")
        : "Essential container in task exited",
    };
  });
  event.id = crypto.randomUUID();
  event.time = new Date(now).toISOString();
  event.resources = [jobArn];
  const d = event.detail;
  d.jobArn = jobArn;
  d.jobId = jobId;
  d.jobName = opts.jobName ?? job.jobName;
  d.jobQueue = opts.jobQueue ?? job.jobQueue;
  d.jobDefinition = job.jobDefinition;
  d.status = status;
  d.attempts = attempts;
  d.createdAt = job.createdAt ?? now - 120_000;
  if (opts.statusReason !== undefined) d.statusReason = opts.statusReason;
  else if (status === "SUCCEEDED") delete d.statusReason;
  if (status === "RUNNING") d.startedAt = now;
  if (finished) d.stoppedAt = now;
  d.container.environment = job.container?.environment ?? [];
  d.tags = { ...(job.tags ?? {}), resourceArn: jobArn };
  return event;
}

/** A Lambda context good enough for Powertools (it reads the remaining time and ids). */
export function lambdaContext(functionName: string): Context {
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName,
    functionVersion: "$LATEST",
    invokedFunctionArn: `arn:aws:lambda:us-east-1:123456789012:function:${functionName}`,
    memoryLimitInMB: "512",
    awsRequestId: crypto.randomUUID(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: "2026/11/26/[$LATEST]0123456789abcdef",
    getRemainingTimeInMillis: () => 60_000,
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}

/** Any of the SDK clients longrun makes. */
export type AnyClient = AwsClients[keyof AwsClients];

/** The client's middleware stack, typed loosely enough to take one middleware for every client. */
function stackOf(client: AnyClient): BatchClient["middlewareStack"] {
  return client.middlewareStack as unknown as BatchClient["middlewareStack"];
}

/** Records every command a client sends (name and input), from now on. */
export function recordCommands(client: AnyClient): { name: string; input: any }[] {
  const sent: { name: string; input: any }[] = [];
  stackOf(client).add(
    (next, context) => async (args) => {
      sent.push({ name: context.commandName as string, input: structuredClone(args.input) });
      return next(args);
    },
    { step: "initialize", name: `record-${crypto.randomUUID()}` },
  );
  return sent;
}

/** A crash injected into one SDK call: whether it fired yet. */
export interface Injection {
  readonly fired: boolean;
  /** Removes the middleware if it has not fired (idempotent). */
  remove(): void;
}

/**
 * Makes the `nth` call (counted from now) of `commandName` on `client` fail, then removes
 * itself. `before`: the call never reaches the endpoint (nothing written); `after`: the
 * call is applied and its answer lost (the caller sees an error all the same).
 */
export function crashOn(
  client: AnyClient,
  commandName: string,
  opts: { nth?: number; when: "before" | "after" },
): Injection {
  const name = `crash-${crypto.randomUUID()}`;
  let calls = 0;
  let fired = false;
  const remove = () => {
    stackOf(client).remove(name);
  };
  stackOf(client).add(
    (next, context) => async (args) => {
      if (fired || context.commandName !== commandName || ++calls !== (opts.nth ?? 1)) {
        return next(args);
      }
      fired = true;
      remove();
      if (opts.when === "after") await next(args);
      throw Object.assign(new Error(`injected crash ${opts.when} ${commandName}`), {
        name: "InjectedCrash",
      });
    },
    { step: "initialize", name },
  );
  return {
    get fired() {
      return fired;
    },
    remove,
  };
}

/** The webhooks queue of a harness made with `{ webhooks: true }`. */
export interface HarnessWebhooks {
  queueUrl: string;
  dlqUrl: string;
  /** The queue's ARN (the records' eventSourceARN). */
  queueArn: string;
  /** The tenants' secrets in the harness's table (what the http handler answers). */
  secrets: DynamoWebhookSecrets;
}

export interface Harness {
  prefix: string;
  /**
   * Present when made with `{ webhooks: true }`: the webhooks handler enqueues deliveries
   * there from the table's stream.
   */
  webhooks?: HarnessWebhooks;
  /** Receives up to `max` messages of any queue, leaving them in flight. */
  receive(queueUrl: string, max?: number): Promise<Message[]>;
  /** Hands messages received from `queueUrl` to `handler` as one SQS event (see Delivery). */
  invoke(
    queueUrl: string,
    queueArn: string,
    messages: Message[],
    handler: (e: SQSEvent, c: Context) => Promise<SQSBatchResponse>,
  ): Promise<Delivery>;
  config: LongrunConfig;
  clients: AwsClients;
  resources: AwsResources;
  queues: QueueUrls;
  deps: CoreDeps;
  store: DynamoRequestStore;
  jobQueueArn: string;
  /** longrun queue → Batch job definition ARN. */
  jobDefinitions: Record<string, string>;
  /** Every command the Batch client sent. */
  batchCalls: { name: string; input: any }[];
  /** The handlers under test, for invocations a test builds itself. */
  handlers: {
    dispatcher: (e: SQSEvent, c: Context) => Promise<SQSBatchResponse>;
    events: (e: SQSEvent, c: Context) => Promise<SQSBatchResponse>;
  };
  /** ARNs of the dispatch and events queues (the records' eventSourceARN). */
  queueArns: { dispatch: string; events: string };
  /** Receives up to 10 dispatch messages and leaves them in flight (not deleted). */
  receiveDispatch(): Promise<Message[]>;
  /** Moves the handlers' clock (submit times, TTLs, the sweep's thresholds) forward. */
  advance(ms: number): void;
  api(method: string, path: string, opts?: ApiOptions): Promise<ApiAnswer>;
  /** Submits to `queue` as `tenant` and returns the new request's id (asserting 202). */
  submit(queue: string, body?: unknown, opts?: ApiOptions): Promise<string>;
  /** Receives every dispatch message and hands each batch to the dispatcher handler. */
  drainDispatch(): Promise<Delivery>;
  /** Messages waiting on the dispatch queue, received and released again at once. */
  peekDispatch(): Promise<Message[]>;
  /** A realistic Batch state-change event for the job moto holds for the request. */
  batchEvent(requestId: string, status: string, opts?: BatchEventOptions): Promise<any>;
  /** Sends events to the events queue, receives them and hands them to the events handler. */
  deliverEvents(...events: unknown[]): Promise<Delivery>;
  /** Receives what waits on the events queue (an EventBridge rule's deliveries) and handles it. */
  drainEvents(expected: number): Promise<Delivery & { bodies: any[] }>;
  /** Makes messages a handler failed visible again at once (SQS would after the timeout). */
  redeliver(queueUrl: string, messages: Message[]): Promise<void>;
  /** Runs the repair sweep handler (relaunch threshold 0 unless given). */
  sweep(options?: RepairOptions): Promise<RepairReport>;
  /** Batch jobs named after the request in this file's job queue. */
  jobsOf(requestId: string): Promise<JobSummary[]>;
  describeJob(jobId: string): Promise<JobDetail>;
  get(id: string): Promise<RequestRecord>;
  counts(queue: string): Promise<QueueCounts>;
  /** Stored counters and a recount of every queue. */
  countersAndRecount(): Promise<{
    stored: Record<string, QueueCounts>;
    counted: Record<string, QueueCounts>;
  }>;
}

async function queueArnOf(clients: AwsClients, url: string): Promise<string> {
  const out = await clients.sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["QueueArn"] }),
  );
  return out.Attributes?.QueueArn ?? "";
}

/** An SQS Lambda record for a message received from the queue `queueArn`. */
export function toRecord(m: Message, queueArn: string): SQSRecord {
  const a = m.Attributes ?? {};
  const attributes: Record<string, string> = {
    ApproximateReceiveCount: a.ApproximateReceiveCount ?? "1",
    SentTimestamp: a.SentTimestamp ?? String(Date.now()),
    SenderId: a.SenderId ?? "AIDAIENQZJOLO23YVJ4VO",
    ApproximateFirstReceiveTimestamp: a.ApproximateFirstReceiveTimestamp ?? String(Date.now()),
  };
  for (const k of ["SequenceNumber", "MessageGroupId", "MessageDeduplicationId"] as const) {
    if (a[k] !== undefined) attributes[k] = a[k];
  }
  return {
    messageId: m.MessageId ?? "",
    receiptHandle: m.ReceiptHandle ?? "",
    body: m.Body ?? "",
    attributes: attributes as unknown as SQSRecord["attributes"],
    messageAttributes: {},
    md5OfBody: m.MD5OfBody ?? "",
    eventSource: "aws:sqs",
    eventSourceARN: queueArn,
    awsRegion: "us-east-1",
  };
}

/** Builds every resource under a new unique prefix and the handlers over them. */
export async function createHarness(
  label: string,
  queueConfigs: Record<string, QueueConfigInput> = DEFAULT_QUEUES,
  options: {
    /** Create a webhooks queue and allow loopback webhook URLs. */
    webhooks?: boolean;
  } = {},
): Promise<Harness> {
  const prefix = uniqueName(label);
  const names = resourceNames(prefix);
  const clients = createAwsClients(awsClientConfig());
  // The tests' own calls (queue plumbing, Batch look-ups) go through separate clients, so
  // that recorders and injected crashes on `clients` only ever see the handlers' calls.
  const plumbing = createAwsClients(awsClientConfig());
  const [queues, batchSetup] = await Promise.all([
    createQueues(clients.sqs, names),
    createBatchQueue(prefix),
    createTable(clients.dynamo, names.tableName),
    createBucket(clients.s3, names.bucketName),
  ]);
  const config = parseConfig({ queues: queueConfigs }, "/tmp", `${prefix}.config.json`);
  // One job definition per longrun queue, as the CDK app registers them.
  const jobDefinitions: Record<string, string> = {};
  for (const name of Object.keys(config.queues)) {
    jobDefinitions[name] = await registerEmulatorJobDefinition(clients.batch, `${prefix}-${name}`);
  }
  const hooksQueue = options.webhooks ? await createWebhooksQueue(clients.sqs, names) : undefined;
  const resources: AwsResources = {
    tableName: names.tableName,
    bucketName: names.bucketName,
    dispatchQueueUrl: queues.dispatchQueueUrl,
    batchJobQueue: batchSetup.jobQueueArn,
    jobDefinitions,
    webhooksQueueUrl: hooksQueue?.url,
  };
  let offset = 0;
  const clock = { now: () => Date.now() + offset };
  const batchCalls = recordCommands(clients.batch);
  const deps: CoreDeps = {
    ...createAwsDeps({
      config,
      resources,
      clients,
      allowPrivateWebhooks: options.webhooks === true,
    }),
    clock,
  };
  const store = deps.store as DynamoRequestStore;
  const dispatchArn = await queueArnOf(clients, queues.dispatchQueueUrl);
  const eventsArn = await queueArnOf(clients, queues.eventsQueueUrl);

  const webhooks: HarnessWebhooks | undefined = hooksQueue
    ? {
        queueUrl: hooksQueue.url,
        dlqUrl: hooksQueue.dlqUrl,
        queueArn: await queueArnOf(clients, hooksQueue.url),
        secrets: new DynamoWebhookSecrets(clients.dynamo, names.tableName),
      }
    : undefined;
  const http = createHttpHandler(
    deps,
    "sub",
    webhooks
      ? {
          webhookSecret: (t) => webhooks.secrets.secretFor(t),
          rotateWebhookSecret: (t) => webhooks.secrets.rotate(t, Date.now()),
          allowInsecureWebhooks: true,
        }
      : {},
  );
  const dispatcher = createDispatcherHandler(deps, { sleep: async () => {} });
  const events = createBatchEventsHandler(deps, { jobQueueArn: batchSetup.jobQueueArn });

  const api = async (method: string, path: string, opts: ApiOptions = {}): Promise<ApiAnswer> => {
    const tenant = opts.tenant === undefined ? "acme" : opts.tenant;
    const now = new Date();
    const query = opts.query;
    const event = {
      version: "2.0",
      routeKey: "$default",
      rawPath: path,
      rawQueryString: query ? new URLSearchParams(query).toString() : "",
      headers: {
        accept: "application/json",
        "content-type": "application/json",
        host: "abc123.execute-api.us-east-1.amazonaws.com",
        "user-agent": "longrun-tests",
        "x-forwarded-proto": "https",
        ...(opts.headers ?? {}),
      },
      ...(query ? { queryStringParameters: query } : {}),
      requestContext: {
        accountId: "123456789012",
        apiId: "abc123",
        ...(tenant === null
          ? {}
          : {
              authorizer: {
                principalId: "",
                integrationLatency: 0,
                jwt: {
                  claims: {
                    sub: tenant,
                    iss: "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_test",
                    token_use: "access",
                    exp: String(Math.floor(now.getTime() / 1000) + 3600),
                  },
                  scopes: [],
                },
              },
            }),
        domainName: "abc123.execute-api.us-east-1.amazonaws.com",
        domainPrefix: "abc123",
        http: {
          method,
          path,
          protocol: "HTTP/1.1",
          sourceIp: "203.0.113.7",
          userAgent: "longrun-tests",
        },
        requestId: crypto.randomUUID(),
        routeKey: "$default",
        stage: "$default",
        time: now.toUTCString(),
        timeEpoch: now.getTime(),
      },
      ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
      isBase64Encoded: false,
    } as APIGatewayProxyEventV2WithJWTAuthorizer | APIGatewayProxyEventV2;
    const out = await http(event);
    const text =
      out.body === undefined
        ? ""
        : out.isBase64Encoded
          ? Buffer.from(out.body, "base64").toString("utf8")
          : out.body;
    return {
      status: out.statusCode ?? 200,
      headers: Object.fromEntries(
        Object.entries(out.headers ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]),
      ),
      body: text === "" ? null : JSON.parse(text),
    };
  };

  const receive = async (url: string, max = 10): Promise<Message[]> => {
    const out = await plumbing.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: max,
        WaitTimeSeconds: 0,
        MessageSystemAttributeNames: ["All"],
      }),
    );
    return out.Messages ?? [];
  };

  /** Hands `messages` to `handler` as one SQS event; deletes those it did not fail. */
  const invoke = async (
    url: string,
    arn: string,
    messages: Message[],
    handler: (e: SQSEvent, c: Context) => Promise<SQSBatchResponse>,
    fn: string,
  ): Promise<Delivery> => {
    const event: SQSEvent = { Records: messages.map((m) => toRecord(m, arn)) };
    let failedIds: Set<string>;
    let threw = false;
    try {
      const res = await handler(event, lambdaContext(fn));
      failedIds = new Set(res.batchItemFailures.map((f) => f.itemIdentifier));
    } catch {
      // Lambda fails the whole batch: every message comes back after its visibility timeout.
      threw = true;
      failedIds = new Set(messages.map((m) => m.MessageId ?? ""));
    }
    const failed = messages.filter((m) => failedIds.has(m.MessageId ?? ""));
    for (const m of messages) {
      if (failedIds.has(m.MessageId ?? "")) continue;
      await plumbing.sqs.send(
        new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: m.ReceiptHandle }),
      );
    }
    return { received: messages.length, failed, threw };
  };

  const h: Harness = {
    prefix,
    ...(webhooks ? { webhooks } : {}),
    receive: (url, max) => receive(url, max),
    invoke: (url, arn, messages, handler) => invoke(url, arn, messages, handler, "webhooks"),
    config,
    clients,
    resources,
    queues,
    deps,
    store,
    jobQueueArn: batchSetup.jobQueueArn,
    jobDefinitions,
    batchCalls,
    handlers: { dispatcher, events },
    queueArns: { dispatch: dispatchArn, events: eventsArn },
    receiveDispatch: () => receive(queues.dispatchQueueUrl),
    advance(ms) {
      offset += ms;
    },
    api,
    async submit(queue, body = { input: { n: 1 } }, opts = {}) {
      const res = await api("POST", `/v1/queues/${queue}/requests`, { ...opts, body });
      if (res.status !== 202) {
        throw new Error(`submit answered ${res.status}: ${JSON.stringify(res.body)}`);
      }
      return res.body.id as string;
    },
    async drainDispatch() {
      const total: Delivery = { received: 0, failed: [], threw: false };
      for (let round = 0; round < 50; round++) {
        const messages = await receive(queues.dispatchQueueUrl);
        if (messages.length === 0) break;
        for (const m of messages) {
          if (!m.Attributes?.MessageGroupId || !m.Attributes.SequenceNumber) {
            throw new Error("a FIFO message came without its group id or sequence number");
          }
        }
        const d = await invoke(
          queues.dispatchQueueUrl,
          dispatchArn,
          messages,
          dispatcher,
          "dispatcher",
        );
        total.received += d.received;
        total.failed.push(...d.failed);
        total.threw ||= d.threw;
      }
      return total;
    },
    async peekDispatch() {
      const messages = await receive(queues.dispatchQueueUrl);
      await h.redeliver(queues.dispatchQueueUrl, messages);
      return messages;
    },
    async batchEvent(requestId, status, opts = {}) {
      const jobs = await h.jobsOf(requestId);
      const summary = jobs[0];
      if (!summary?.jobId) throw new Error(`moto holds no job for ${requestId}`);
      const job = await h.describeJob(summary.jobId);
      return batchStateChangeEvent(job, status, opts, prefix);
    },
    async deliverEvents(...batch) {
      for (const e of batch) {
        await plumbing.sqs.send(
          new SendMessageCommand({
            QueueUrl: queues.eventsQueueUrl,
            MessageBody: JSON.stringify(e),
          }),
        );
      }
      const messages: Message[] = [];
      for (let tries = 0; messages.length < batch.length && tries < 20; tries++) {
        messages.push(...(await receive(queues.eventsQueueUrl, batch.length - messages.length)));
      }
      if (messages.length !== batch.length) {
        throw new Error(`sent ${batch.length} events, received ${messages.length}`);
      }
      return invoke(queues.eventsQueueUrl, eventsArn, messages, events, "batch-events");
    },
    async drainEvents(expected) {
      const messages: Message[] = [];
      for (let tries = 0; messages.length < expected && tries < 50; tries++) {
        const got = await receive(queues.eventsQueueUrl);
        messages.push(...got);
        if (got.length === 0) await new Promise((r) => setTimeout(r, 50));
      }
      const d = await invoke(queues.eventsQueueUrl, eventsArn, messages, events, "batch-events");
      return { ...d, bodies: messages.map((m) => JSON.parse(m.Body ?? "null")) };
    },
    async redeliver(queueUrl, messages) {
      for (const m of messages) {
        await plumbing.sqs.send(
          new ChangeMessageVisibilityCommand({
            QueueUrl: queueUrl,
            ReceiptHandle: m.ReceiptHandle,
            VisibilityTimeout: 0,
          }),
        );
      }
    },
    async sweep(options) {
      return createSweepHandler(
        deps,
        options ?? { relaunchStartingAfterMs: 0, lostJobAfterMs: LOST_JOB_AFTER_MS },
      )();
    },
    async jobsOf(requestId) {
      const out = await plumbing.batch.send(
        new ListJobsCommand({
          jobQueue: batchSetup.jobQueueArn,
          filters: [{ name: "JOB_NAME", values: [requestId] }],
        }),
      );
      return (out.jobSummaryList ?? [])
        .filter((j) => j.jobName === requestId)
        .sort((a, b) => (b.createdAt ?? 0) - (a.createdAt ?? 0));
    },
    async describeJob(jobId) {
      const out = await plumbing.batch.send(new DescribeJobsCommand({ jobs: [jobId] }));
      const job = out.jobs?.[0];
      if (!job) throw new Error(`moto does not know job ${jobId}`);
      return job;
    },
    async get(id) {
      const r = await store.get(id);
      if (!r) throw new Error(`request ${id} is not stored`);
      return r;
    },
    counts: (queue) => store.queueCounts(queue),
    async countersAndRecount() {
      const counted = await store.recount();
      const stored: Record<string, QueueCounts> = {};
      for (const q of Object.keys(config.queues)) stored[q] = await store.queueCounts(q);
      return { stored, counted };
    },
  };
  return h;
}
