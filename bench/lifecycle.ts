/**
 * One request's life through longrun's real Lambda handlers on an AWS endpoint (moto), with
 * every AWS call the handlers and the Batch runner make metered per phase (meter.ts).
 *
 * What AWS does on longrun's behalf is played by an unmetered "plumbing" client set, as the
 * platform would: the Lambda event source mapping receiving and deleting SQS messages, the
 * EventBridge rule putting Batch state changes on the events queue (moto emits none), and
 * the resource setup. Those requests are billed too; prices.ts adds them from documented
 * rules, beside the measured figures, never mixed with them.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DescribeJobsCommand, ListJobsCommand } from "@aws-sdk/client-batch";
import { IAMClient } from "@aws-sdk/client-iam";
import {
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  SendMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type {
  APIGatewayProxyEventV2WithJWTAuthorizer,
  Context,
  SQSBatchResponse,
  SQSEvent,
} from "aws-lambda";
import { createTable } from "../functions/adapters/aws/bootstrap.ts";
import { createBucket } from "../functions/adapters/aws/bootstrap-s3.ts";
import { createQueues } from "../functions/adapters/aws/bootstrap-sqs.ts";
import { INDEXES, resourceNames, TABLE_KEY } from "../functions/adapters/aws/definitions.ts";
import { S3AttemptStorage, S3InputStore } from "../functions/adapters/aws/s3-storage.ts";
import { createAwsClients, createAwsDeps } from "../functions/adapters/aws/wiring.ts";
import { parseConfig } from "../functions/config/load.ts";
import type { QueueConfigInput } from "../functions/config/schema.ts";
import { createBatchEventsHandler } from "../functions/handlers/batch-events.ts";
import { logger } from "../functions/handlers/context.ts";
import { createDispatcherHandler } from "../functions/handlers/dispatcher.ts";
import { createHttpHandler } from "../functions/handlers/http.ts";
import { dynamoProgressWriter } from "../jobs/runner/batch-main.ts";
import {
  createEmulatorJobQueue,
  registerEmulatorJobDefinition,
} from "../test/helpers/emulator-batch.ts";
import { CapacityCalculator, type CapacityUnits, type TableShape } from "./capacity.ts";
import { AwsMeter, type PhaseUsage } from "./meter.ts";

/** The phases of one lifecycle, in order. */
export const PHASES = [
  "submit",
  "dispatch",
  "running event",
  "runner input",
  "progress",
  "runner outputs",
  "succeeded event",
  "slot-freed dispatch",
  "status",
  "result",
] as const;
export type Phase = (typeof PHASES)[number];

/**
 * The fewest AWS calls each phase needs under longrun's design (docs/design.md,
 * docs/aws.md), derived by hand from what each step must make durable or learn:
 *
 * - submit: one TransactWriteItems (request item + queue's `queued` counters, atomically,
 *   bounded by maxQueued), one SendMessage (wake the queue's dispatcher), one GetItem
 *   (the 202 answer carries the request's position: the counters item's per-priority
 *   split says how many wait at its priority and above).
 * - dispatch: one Query (the head of the ready index), one TransactWriteItems (claim:
 *   request QUEUED→STARTING with `queued−1, running+1` bounded by maxRunning), one PutObject
 *   (the input goes to S3: up to 256 KiB does not fit a container's environment), one
 *   SubmitJob, one UpdateItem (record the job id, known only after SubmitJob).
 * - running event: one UpdateItem (STARTING→RUNNING, conditioned on status and attempt;
 *   no counter moves, so no transaction).
 * - runner input: one GetObject (the input).
 * - progress: one UpdateItem (conditional on status and attempt).
 * - runner outputs: one PutObject per output file (this lifecycle has one, result.json).
 * - succeeded event: one TransactWriteItems (request →SUCCEEDED with `running−1`), one
 *   SendMessage (wake the dispatcher: a slot is free).
 * - slot-freed dispatch: the wake-up the finish sent reaches the dispatcher, which must
 *   look for the next request: one consistent GetItem of the queue's counters, which says
 *   nothing is QUEUED here (with a waiting request, its claim is that request's "dispatch").
 * - status: one GetItem.
 * - result: one GetItem (ownership and status), one ListObjectsV2 (the outputs), one
 *   GetObject (result.json). Artifact URLs are presigned locally: no call.
 *
 * Reads the design could skip only by trusting stale or unconditioned state (the read of a
 * request before its claim or an event's write, the counters' early "full/empty" answer,
 * the dispatcher's second "settle" pass) are not in the floor: the ratio measured/floor
 * shows what they cost.
 */
export const FLOORS: Record<Phase, Record<string, number>> = {
  submit: { "DynamoDB TransactWriteItems": 1, "SQS SendMessage": 1, "DynamoDB GetItem": 1 },
  dispatch: {
    "DynamoDB Query": 1,
    "DynamoDB TransactWriteItems": 1,
    "S3 PutObject": 1,
    "Batch SubmitJob": 1,
    "DynamoDB UpdateItem": 1,
  },
  "running event": { "DynamoDB UpdateItem": 1 },
  "runner input": { "S3 GetObject": 1 },
  progress: { "DynamoDB UpdateItem": 1 },
  "runner outputs": { "S3 PutObject": 1 },
  "succeeded event": { "DynamoDB TransactWriteItems": 1, "SQS SendMessage": 1 },
  "slot-freed dispatch": { "DynamoDB GetItem": 1 },
  status: { "DynamoDB GetItem": 1 },
  result: { "DynamoDB GetItem": 1, "S3 ListObjectsV2": 1, "S3 GetObject": 1 },
};

/** Messages the platform moves per lifecycle (for prices.ts): Lambda deliveries. */
export const PLATFORM = {
  /** Lambda invocations: HTTP submit, status, result; dispatcher ×2; events handler ×2. */
  lambdaInvocations: 7,
  /** HTTP API requests: submit, status, result. */
  httpApiRequests: 3,
  /** Messages EventBridge puts on the (standard) events queue: RUNNING, SUCCEEDED. */
  eventMessages: 2,
  /** Dispatch (FIFO) messages sent per lifecycle (submit, finish), each consumed once. */
  dispatchMessagesConsumed: 2,
} as const;

/** One lifecycle's usage per phase. */
export type LifecycleUsage = Record<Phase, PhaseUsage>;

export interface LifecycleBench {
  /** Runs one lifecycle on a queue of its own and returns what each phase cost. */
  runOnce(): Promise<LifecycleUsage>;
}

const REGION = "us-east-1";
const CREDENTIALS = { accessKeyId: "bench", secretAccessKey: "bench" };

function uniquePrefix(): string {
  return `bench-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** The request table's shape for capacity.ts, from definitions.ts. */
const TABLE_SHAPE: TableShape = {
  partitionKey: TABLE_KEY.partitionKey,
  sortKey: TABLE_KEY.sortKey,
  indexes: Object.values(INDEXES),
};

function lambdaContext(functionName: string): Context {
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName,
    functionVersion: "$LATEST",
    invokedFunctionArn: `arn:aws:lambda:${REGION}:123456789012:function:${functionName}`,
    memoryLimitInMB: "512",
    awsRequestId: crypto.randomUUID(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: "bench",
    getRemainingTimeInMillis: () => 60_000,
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}

/** An HTTP API (payload 2.0) event with a JWT authorizer naming tenant `bench`. */
function httpEvent(method: string, path: string, body?: unknown) {
  const now = Date.now();
  return {
    version: "2.0",
    routeKey: "$default",
    rawPath: path,
    rawQueryString: "",
    headers: { "content-type": "application/json", host: "bench.execute-api.local" },
    requestContext: {
      accountId: "123456789012",
      apiId: "bench",
      authorizer: {
        principalId: "",
        integrationLatency: 0,
        jwt: { claims: { sub: "bench" }, scopes: [] },
      },
      domainName: "bench.execute-api.local",
      domainPrefix: "bench",
      http: { method, path, protocol: "HTTP/1.1", sourceIp: "127.0.0.1", userAgent: "bench" },
      requestId: crypto.randomUUID(),
      routeKey: "$default",
      stage: "$default",
      time: new Date(now).toUTCString(),
      timeEpoch: now,
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    isBase64Encoded: false,
  } as unknown as APIGatewayProxyEventV2WithJWTAuthorizer;
}

/** Receives what waits on `url` (as the event source mapping would) into one SQS event. */
async function receiveAll(sqs: SQSClient, url: string, arn: string, want: number) {
  const messages: Message[] = [];
  for (let round = 0; messages.length < want && round < 40; round++) {
    const out = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 0,
        MessageSystemAttributeNames: ["All"],
      }),
    );
    messages.push(...(out.Messages ?? []));
    if (!out.Messages?.length) await new Promise((r) => setTimeout(r, 25));
  }
  if (messages.length !== want) {
    throw new Error(`expected ${want} message(s) on ${url}, received ${messages.length}`);
  }
  const event: SQSEvent = {
    Records: messages.map((m) => ({
      messageId: m.MessageId ?? "",
      receiptHandle: m.ReceiptHandle ?? "",
      body: m.Body ?? "",
      attributes: {
        ApproximateReceiveCount: m.Attributes?.ApproximateReceiveCount ?? "1",
        SentTimestamp: m.Attributes?.SentTimestamp ?? String(Date.now()),
        SenderId: m.Attributes?.SenderId ?? "bench",
        ApproximateFirstReceiveTimestamp:
          m.Attributes?.ApproximateFirstReceiveTimestamp ?? String(Date.now()),
        ...(m.Attributes?.MessageGroupId ? { MessageGroupId: m.Attributes.MessageGroupId } : {}),
        ...(m.Attributes?.SequenceNumber ? { SequenceNumber: m.Attributes.SequenceNumber } : {}),
        ...(m.Attributes?.MessageDeduplicationId
          ? { MessageDeduplicationId: m.Attributes.MessageDeduplicationId }
          : {}),
      },
      messageAttributes: {},
      md5OfBody: m.MD5OfBody ?? "",
      eventSource: "aws:sqs",
      eventSourceARN: arn,
      awsRegion: REGION,
    })),
  };
  return { messages, event };
}

/** Hands an SQS event to a handler and deletes the messages it did not fail. */
async function deliver(
  sqs: SQSClient,
  url: string,
  received: { messages: Message[]; event: SQSEvent },
  handler: (e: SQSEvent, c: Context) => Promise<SQSBatchResponse>,
  name: string,
): Promise<void> {
  const res = await handler(received.event, lambdaContext(name));
  if (res.batchItemFailures.length > 0) {
    throw new Error(`${name} failed ${res.batchItemFailures.length} record(s)`);
  }
  for (const m of received.messages) {
    await sqs.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: m.ReceiptHandle }));
  }
}

async function arnOf(sqs: SQSClient, url: string): Promise<string> {
  const out = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["QueueArn"] }),
  );
  return out.Attributes?.QueueArn ?? "";
}

const FIXTURES = join(import.meta.dirname, "../test/fixtures/batch-events");

/**
 * Builds a deployment on `endpoint` (table, queues, bucket, Batch job queue, and `lifecycles`
 * longrun queues: each lifecycle gets its own, so that no dispatch wake-up of one is
 * deduplicated against another's within the FIFO window) and the handlers over it.
 */
export async function createLifecycleBench(
  endpoint: string,
  lifecycles: number,
): Promise<LifecycleBench> {
  logger.setLogLevel("SILENT");
  const settings = { endpoint, region: REGION, credentials: CREDENTIALS };
  const prefix = uniquePrefix();
  const names = resourceNames(prefix);
  const clients = createAwsClients(settings);
  const plumbing = createAwsClients(settings);
  const iam = new IAMClient(settings);
  const [queues, jobQueueArn] = await Promise.all([
    createQueues(plumbing.sqs, names),
    createEmulatorJobQueue(plumbing.batch, iam, prefix),
    createTable(plumbing.dynamo, names.tableName),
    createBucket(plumbing.s3, names.bucketName),
  ]);
  const queueNames = Array.from({ length: lifecycles }, (_, i) => `lc-${i}`);
  const queueConfigs: Record<string, QueueConfigInput> = {};
  for (const q of queueNames) {
    queueConfigs[q] = {
      command: ["python3", "train.py"],
      maxQueued: 100,
      maxRunning: 2,
      timeoutSeconds: 3600,
      maxAttempts: 3,
    };
  }
  const config = parseConfig({ queues: queueConfigs }, tmpdir(), `${prefix}.config.json`);
  const jobDefinitions: Record<string, string> = {};
  for (const q of queueNames) {
    jobDefinitions[q] = await registerEmulatorJobDefinition(plumbing.batch, `${prefix}-${q}`);
  }
  const resources = {
    tableName: names.tableName,
    bucketName: names.bucketName,
    dispatchQueueUrl: queues.dispatchQueueUrl,
    batchJobQueue: jobQueueArn,
    jobDefinitions,
  };
  const meter = new AwsMeter(clients, new CapacityCalculator(plumbing.dynamo, () => TABLE_SHAPE));
  const deps = createAwsDeps({ config, resources, clients });
  const http = createHttpHandler(deps, "sub");
  // The dispatcher waits for the dedup window to close before its pass; the calls are the
  // same without the wait, so the bench does not sleep.
  const dispatcher = createDispatcherHandler(deps, { sleep: async () => {} });
  const events = createBatchEventsHandler(deps, { jobQueueArn });
  // The Batch runner's writer, on the metered client (the container makes its own).
  const writeProgress = dynamoProgressWriter(clients.dynamo, names.tableName);
  const dispatchArn = await arnOf(plumbing.sqs, queues.dispatchQueueUrl);
  const eventsArn = await arnOf(plumbing.sqs, queues.eventsQueueUrl);
  const fixtures = {
    RUNNING: JSON.parse(await readFile(join(FIXTURES, "running.json"), "utf8")),
    SUCCEEDED: JSON.parse(await readFile(join(FIXTURES, "succeeded.json"), "utf8")),
  };

  const api = async (method: string, path: string, body?: unknown) => {
    const out = await http(httpEvent(method, path, body));
    const status = out.statusCode ?? 200;
    const parsed = out.body ? JSON.parse(out.body) : null;
    return { status, body: parsed };
  };

  /** A Batch state change for the request's job, as EventBridge delivers it. */
  const batchEvent = async (requestId: string, status: "RUNNING" | "SUCCEEDED") => {
    const listed = await plumbing.batch.send(
      new ListJobsCommand({
        jobQueue: jobQueueArn,
        filters: [{ name: "JOB_NAME", values: [requestId] }],
      }),
    );
    const jobId = listed.jobSummaryList?.find((j) => j.jobName === requestId)?.jobId;
    if (!jobId) throw new Error(`no Batch job for ${requestId}`);
    const job = (await plumbing.batch.send(new DescribeJobsCommand({ jobs: [jobId] }))).jobs?.[0];
    if (!job) throw new Error(`moto does not describe job ${jobId}`);
    const event = structuredClone(fixtures[status]);
    const now = Date.now();
    const jobArn = job.jobArn ?? `arn:aws:batch:${REGION}:123456789012:job/${jobId}`;
    Object.assign(event, { id: crypto.randomUUID(), time: new Date(now).toISOString() });
    event.resources = [jobArn];
    Object.assign(event.detail, {
      jobArn,
      jobId,
      jobName: job.jobName,
      jobQueue: job.jobQueue,
      jobDefinition: job.jobDefinition,
      status,
      createdAt: job.createdAt ?? now - 60_000,
      tags: { ...(job.tags ?? {}), resourceArn: jobArn },
    });
    event.detail.container.environment = job.container?.environment ?? [];
    if (status === "RUNNING") {
      event.detail.attempts = [];
      event.detail.startedAt = now;
    } else {
      delete event.detail.statusReason;
      event.detail.attempts = [
        {
          container: { exitCode: 0, taskArn: "bench", networkInterfaces: [] },
          startedAt: now - 30_000,
          stoppedAt: now,
          statusReason: "Essential container in task exited",
        },
      ];
      event.detail.stoppedAt = now;
    }
    return event;
  };

  /** EventBridge → events queue → the events handler. */
  const deliverEvent = async (event: unknown) => {
    await plumbing.sqs.send(
      new SendMessageCommand({
        QueueUrl: queues.eventsQueueUrl,
        MessageBody: JSON.stringify(event),
      }),
    );
    const received = await receiveAll(plumbing.sqs, queues.eventsQueueUrl, eventsArn, 1);
    await deliver(plumbing.sqs, queues.eventsQueueUrl, received, events, "batch-events");
  };

  let next = 0;
  return {
    async runOnce() {
      const queue = queueNames[next++];
      if (!queue) throw new Error(`this bench was built for ${lifecycles} lifecycle(s)`);
      meter.reset();

      meter.phase("submit");
      const submitted = await api("POST", `/v1/queues/${queue}/requests`, {
        input: { epochs: 2, dataset: "s3://bench/data" },
      });
      if (submitted.status !== 202) {
        throw new Error(`submit answered ${submitted.status}: ${JSON.stringify(submitted.body)}`);
      }
      const id = submitted.body.id as string;

      meter.phase("dispatch");
      const wake = await receiveAll(plumbing.sqs, queues.dispatchQueueUrl, dispatchArn, 1);
      await deliver(plumbing.sqs, queues.dispatchQueueUrl, wake, dispatcher, "dispatcher");

      meter.phase("running event");
      await deliverEvent(await batchEvent(id, "RUNNING"));

      // The runner, as jobs/runner/batch-main.ts does it: input download, progress, outputs.
      meter.phase("runner input");
      const input = await new S3InputStore(clients.s3, names.bucketName).getInput(id);
      if (!input) throw new Error(`no input stored for ${id}`);

      meter.phase("progress");
      const accepted = await writeProgress({
        requestId: id,
        attempt: 1,
        heartbeatAt: Date.now(),
        progress: { current: 1, total: 2, message: "epoch 1", updatedAt: Date.now() },
      });
      if (!accepted) throw new Error(`progress of ${id} was refused`);

      meter.phase("runner outputs");
      const outDir = await mkdtemp(join(tmpdir(), "longrun-bench-"));
      try {
        await writeFile(join(outDir, "result.json"), JSON.stringify({ loss: 0.125 }));
        await new S3AttemptStorage(clients.s3, names.bucketName, id).saveOutputs(outDir);
      } finally {
        await rm(outDir, { recursive: true, force: true });
      }

      meter.phase("succeeded event");
      await deliverEvent(await batchEvent(id, "SUCCEEDED"));

      meter.phase("slot-freed dispatch");
      const freed = await receiveAll(plumbing.sqs, queues.dispatchQueueUrl, dispatchArn, 1);
      await deliver(plumbing.sqs, queues.dispatchQueueUrl, freed, dispatcher, "dispatcher");

      meter.phase("status");
      const status = await api("GET", `/v1/requests/${id}`);
      if (status.body?.status !== "SUCCEEDED") {
        throw new Error(`request ${id} ended ${JSON.stringify(status.body)}`);
      }

      meter.phase("result");
      const result = await api("GET", `/v1/requests/${id}/result`);
      if (result.status !== 200 || result.body?.output?.loss !== 0.125) {
        throw new Error(`result of ${id}: ${result.status} ${JSON.stringify(result.body)}`);
      }

      const usage = meter.usage();
      const out = {} as LifecycleUsage;
      for (const phase of PHASES) {
        const u = usage.get(phase);
        if (!u) throw new Error(`phase ${phase} was not measured`);
        out[phase] = structuredClone(u);
      }
      return out;
    },
  };
}

/** Sum of a lifecycle's phases. */
export function totalOf(usage: LifecycleUsage): PhaseUsage {
  const total: PhaseUsage = {
    calls: {},
    sends: {},
    computed: { read: 0, write: 0 },
    reported: { read: 0, write: 0 },
    reportedComplete: true,
  };
  const add = (into: Record<string, number>, from: Record<string, number>) => {
    for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
  };
  const addUnits = (into: CapacityUnits, from: CapacityUnits) => {
    into.read += from.read;
    into.write += from.write;
  };
  for (const phase of PHASES) {
    const u = usage[phase];
    add(total.calls, u.calls);
    add(total.sends, u.sends);
    addUnits(total.computed, u.computed);
    addUnits(total.reported, u.reported);
    total.reportedComplete &&= u.reportedComplete;
  }
  return total;
}

/** Sums a floor table (for the whole lifecycle). */
export function totalFloor(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const phase of PHASES) {
    for (const [k, v] of Object.entries(FLOORS[phase])) out[k] = (out[k] ?? 0) + v;
  }
  return out;
}

/** Runs `n` lifecycles on `endpoint`, one after another. */
export async function measureLifecycles(endpoint: string, n: number): Promise<LifecycleUsage[]> {
  const bench = await createLifecycleBench(endpoint, n);
  const runs: LifecycleUsage[] = [];
  for (let i = 0; i < n; i++) runs.push(await bench.runOnce());
  return runs;
}
