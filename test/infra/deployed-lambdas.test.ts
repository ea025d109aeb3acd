/**
 * The Lambda code as `cdk deploy` ships it, run. The app is synthesized with bundling on
 * (the local esbuild, no Docker); each handler's bundle is taken from the cloud assembly's
 * asset folder and run in a plain Node process (lambda-invoke.mjs) with only the
 * environment its template gives it, plus what the Lambda runtime adds (region, task root,
 * function name), the emulator endpoint and dummy credentials. The resources the template
 * would create are made on moto under new names, and the template's Refs resolve to them.
 *
 * One request goes through: submit (API event) → dispatch (the wake-up really sent) → Batch
 * state changes (RUNNING, SUCCEEDED; moto emits none) → result (API event). The sweep and
 * webhooks bundles run once each. A module the bundle lacks, or a variable the template
 * forgot, fails the handler in its process and so this test.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { BatchClient, DescribeJobsCommand, ListJobsCommand } from "@aws-sdk/client-batch";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import {
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import type { APIGatewayProxyEventV2WithJWTAuthorizer } from "aws-lambda";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTable } from "../../functions/adapters/aws/bootstrap.ts";
import { createBucket } from "../../functions/adapters/aws/bootstrap-s3.ts";
import { createQueues, createWebhooksQueue } from "../../functions/adapters/aws/bootstrap-sqs.ts";
import { resourceNames } from "../../functions/adapters/aws/definitions.ts";
import { S3AttemptStorage } from "../../functions/adapters/aws/s3-storage.ts";
import { HANDLER_ENTRIES, LAMBDA_CONFIG_PATH } from "../../infra/constructs/functions.ts";
import { registerEmulatorJobDefinition } from "../helpers/emulator-batch.ts";
import { awsClientConfig, createBatchQueue, uniqueName } from "../integration/aws.ts";
import { batchStateChangeEvent, toRecord } from "../integration/handlers/harness.ts";
import { buildStack, PROJECT_ROOT } from "./helpers.ts";

const run = promisify(execFile);
const INVOKER = join(PROJECT_ROOT, "test", "infra", "lambda-invoke.mjs");
const REGION = "us-east-1";
const ACCOUNT = "123456789012";

type HandlerName = keyof typeof HANDLER_ENTRIES;
interface CfnResource {
  Type: string;
  Properties: Record<string, any>;
}
interface Deployed {
  assetDir: string;
  handler: string;
  env: Record<string, string>;
}

let outDir: string;
let work: string;
let resources: Record<string, CfnResource>;
const deployed = new Map<HandlerName, Deployed>();
const config = awsClientConfig();
const sqs = new SQSClient(config);
const batch = new BatchClient(config);
const s3 = new S3Client({ ...config, forcePathStyle: true });
const dynamo = new DynamoDBClient(config);
let urls: { dispatch: string; events: string; webhooks: string };
let bucketName: string;
let jobQueueArn: string;

/** Template values (Ref, Fn::GetAtt, Fn::Join) with the moto resources' names in. */
function resolver(refs: Record<string, string>, atts: Record<string, string>) {
  const resolve = (v: unknown): string => {
    if (typeof v === "string") return v;
    if (v && typeof v === "object") {
      const o = v as Record<string, any>;
      if ("Ref" in o) {
        const out = refs[o.Ref];
        if (out === undefined) throw new Error(`the template refers to ${o.Ref}, not created`);
        return out;
      }
      if ("Fn::GetAtt" in o) {
        const [id, attr] = o["Fn::GetAtt"] as [string, string];
        const out = atts[`${id}.${attr}`];
        if (out === undefined) throw new Error(`the template reads ${id}.${attr}, not created`);
        return out;
      }
      if ("Fn::Join" in o) {
        const [sep, parts] = o["Fn::Join"] as [string, unknown[]];
        return parts.map(resolve).join(sep);
      }
    }
    throw new Error(`cannot resolve ${JSON.stringify(v)}`);
  };
  return resolve;
}

/** The one resource of `type` whose logical id matches. */
function logicalId(type: string, pattern: RegExp): string {
  const ids = Object.keys(resources).filter(
    (id) => resources[id]?.Type === type && pattern.test(id),
  );
  if (ids.length !== 1) throw new Error(`${type} ${pattern}: ${ids.length} matches`);
  return ids[0] as string;
}

beforeAll(async () => {
  outDir = mkdtempSync(join(tmpdir(), "longrun-deployed-"));
  work = mkdtempSync(join(tmpdir(), "longrun-invoke-"));
  // Bundles every function with the local esbuild, as `cdk synth` does (cdk.json context).
  const { app } = buildStack({ "aws:cdk:bundling-stacks": ["**"] }, { outdir: outDir });
  const assembly = app.synth();
  const stack = assembly.getStackByName("Longrun");
  resources = (stack.template as { Resources: Record<string, CfnResource> }).Resources;
  const assetManifest = JSON.parse(readFileSync(join(outDir, "Longrun.assets.json"), "utf8")) as {
    files: Record<string, { source: { path: string; packaging?: string } }>;
  };

  // What the template would create, on moto.
  const prefix = uniqueName("deployed");
  const names = resourceNames(prefix);
  bucketName = names.bucketName;
  await createTable(dynamo, names.tableName);
  await createBucket(s3, names.bucketName);
  const queues = await createQueues(sqs, names);
  const webhooks = await createWebhooksQueue(sqs, names);
  urls = {
    dispatch: queues.dispatchQueueUrl,
    events: queues.eventsQueueUrl,
    webhooks: webhooks.url,
  };
  const batchQueue = await createBatchQueue(prefix);
  jobQueueArn = batchQueue.jobQueueArn;

  const refs: Record<string, string> = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    [logicalId("AWS::DynamoDB::Table", /^RequestsTable/)]: names.tableName,
    [logicalId("AWS::S3::Bucket", /^DataBucket/)]: names.bucketName,
    [logicalId("AWS::SQS::Queue", /^QueuesDispatch(?!Dlq)/)]: urls.dispatch,
    [logicalId("AWS::SQS::Queue", /^QueuesEvents(?!Dlq)/)]: urls.events,
    [logicalId("AWS::SQS::Queue", /^QueuesWebhooks(?!Dlq)/)]: urls.webhooks,
    [logicalId("AWS::Logs::LogGroup", /^JobsJobLogs/)]: `${prefix}-jobs`,
  };
  for (const id of Object.keys(resources)) {
    const match = /^JobsQueue(.+)JobDefinition[0-9A-F]{8}$/.exec(id);
    if (resources[id]?.Type !== "AWS::Batch::JobDefinition" || !match) continue;
    refs[id] = await registerEmulatorJobDefinition(batch, `${prefix}-${match[1]}`);
  }
  const atts: Record<string, string> = {
    [`${logicalId("AWS::Batch::JobQueue", /^ComputeJobQueue/)}.JobQueueArn`]: jobQueueArn,
  };
  const resolve = resolver(refs, atts);

  const taskRoot = dirname(LAMBDA_CONFIG_PATH);
  for (const name of Object.keys(HANDLER_ENTRIES) as HandlerName[]) {
    const id = logicalId("AWS::Lambda::Function", new RegExp(`^Handlers${name}[0-9A-F]{8}$`));
    const fn = resources[id] as CfnResource;
    const hash = String(fn.Properties.Code.S3Key).replace(/\.zip$/, "");
    const source = assetManifest.files[hash]?.source;
    if (!source) throw new Error(`${name}: no asset ${hash} in the cloud assembly`);
    const assetDir = join(outDir, source.path);
    const env: Record<string, string> = {};
    for (const [key, value] of Object.entries(fn.Properties.Environment?.Variables ?? {})) {
      // The runtime unpacks the asset at /var/task: here, the asset folder itself.
      env[key] = resolve(value).replace(`${taskRoot}/`, `${assetDir}/`);
    }
    deployed.set(name, { assetDir, handler: fn.Properties.Handler, env });
  }
}, 240_000);

afterAll(() => {
  for (const c of [sqs, batch, s3, dynamo]) c.destroy();
  rmSync(outDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

let invocations = 0;

/** One invocation of a deployed handler in a process of its own; its result. */
async function invoke(name: HandlerName, event: unknown): Promise<any> {
  const fn = deployed.get(name);
  if (!fn) throw new Error(`${name} was not deployed`);
  const n = ++invocations;
  const eventFile = join(work, `${n}-event.json`);
  const resultFile = join(work, `${n}-result.json`);
  writeFileSync(eventFile, JSON.stringify(event));
  const env = {
    ...fn.env,
    // What the Lambda runtime adds, and the emulator in place of AWS.
    AWS_REGION: REGION,
    AWS_DEFAULT_REGION: REGION,
    AWS_LAMBDA_FUNCTION_NAME: `longrun-${name}`,
    LAMBDA_TASK_ROOT: fn.assetDir,
    AWS_ENDPOINT_URL: config.endpoint,
    AWS_ACCESS_KEY_ID: config.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: config.credentials.secretAccessKey,
  };
  try {
    await run(process.execPath, [INVOKER, fn.assetDir, fn.handler, eventFile, resultFile], {
      env,
      cwd: fn.assetDir,
      timeout: 60_000,
    });
  } catch (error) {
    const e = error as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${name} failed: ${e.message}\n${e.stderr ?? ""}\n${e.stdout ?? ""}`);
  }
  return JSON.parse(readFileSync(resultFile, "utf8"));
}

/** An API Gateway HTTP API (payload v2) event with the JWT authorizer's claims. */
function apiEvent(
  method: string,
  path: string,
  body?: unknown,
): APIGatewayProxyEventV2WithJWTAuthorizer {
  return {
    version: "2.0",
    routeKey: "$default",
    rawPath: path,
    rawQueryString: "",
    headers: { host: "api.example.com", "content-type": "application/json" },
    requestContext: {
      accountId: ACCOUNT,
      apiId: "api",
      domainName: "api.example.com",
      domainPrefix: "api",
      http: { method, path, protocol: "HTTP/1.1", sourceIp: "192.0.2.1", userAgent: "test" },
      requestId: crypto.randomUUID(),
      routeKey: "$default",
      stage: "$default",
      time: new Date().toUTCString(),
      timeEpoch: Date.now(),
      authorizer: {
        principalId: "",
        integrationLatency: 0,
        jwt: { claims: { sub: "acme", client_id: "acme" }, scopes: ["longrun/api"] },
      },
    },
    isBase64Encoded: false,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  };
}

/** SQS records of the messages waiting on `url`, as Lambda's event source hands them over. */
async function records(url: string, expected: number): Promise<{ Records: unknown[] }> {
  const arn = (
    await sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["QueueArn"] }))
  ).Attributes?.QueueArn as string;
  const messages: Message[] = [];
  for (let tries = 0; messages.length < expected && tries < 20; tries++) {
    const out = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
        MessageSystemAttributeNames: ["All"],
      }),
    );
    messages.push(...(out.Messages ?? []));
  }
  expect(messages.length, `messages on ${url}`).toBe(expected);
  return { Records: messages.map((m) => toRecord(m, arn)) };
}

describe("the deployed Lambda bundles on moto", () => {
  it("ship the config file and a handler in every asset", () => {
    expect([...deployed.keys()].sort()).toEqual(Object.keys(HANDLER_ENTRIES).sort());
    for (const [name, fn] of deployed) {
      expect(existsSync(join(fn.assetDir, "longrun.config.json")), name).toBe(true);
      expect(fn.env.LONGRUN_CONFIG, name).toBe(join(fn.assetDir, "longrun.config.json"));
    }
  });

  it("take one request from submit through dispatch and Batch events to its result", async () => {
    const submitted = await invoke(
      "http",
      apiEvent("POST", "/v1/queues/demo/requests", { input: { hello: "deployed" } }),
    );
    expect(submitted.statusCode, submitted.body).toBe(202);
    const id = JSON.parse(submitted.body).id as string;

    // The submit woke the dispatcher through the dispatch queue; deliver that message.
    const dispatched = await invoke("dispatcher", await records(urls.dispatch, 1));
    expect(dispatched).toEqual({ batchItemFailures: [] });
    const starting = await invoke("http", apiEvent("GET", `/v1/requests/${id}`));
    expect(JSON.parse(starting.body)).toMatchObject({ id, status: "STARTING" });

    // The job Batch now holds for it; moto runs nothing, so the job's outputs and its
    // state changes come from here, through the events queue as EventBridge sends them.
    const listed = await batch.send(
      new ListJobsCommand({ jobQueue: jobQueueArn, filters: [{ name: "JOB_NAME", values: [id] }] }),
    );
    const jobId = listed.jobSummaryList?.[0]?.jobId as string;
    const job = (await batch.send(new DescribeJobsCommand({ jobs: [jobId] }))).jobs?.[0];
    if (!job) throw new Error(`no Batch job for ${id}`);
    const outputs = join(work, "outputs");
    await mkdir(outputs, { recursive: true });
    writeFileSync(join(outputs, "result.json"), JSON.stringify({ greeting: "hello deployed" }));
    await new S3AttemptStorage(s3, bucketName, id).saveOutputs(outputs);
    for (const status of ["RUNNING", "SUCCEEDED"]) {
      await sqs.send(
        new SendMessageCommand({
          QueueUrl: urls.events,
          MessageBody: JSON.stringify(batchStateChangeEvent(job, status)),
        }),
      );
      expect(await invoke("batchEvents", await records(urls.events, 1))).toEqual({
        batchItemFailures: [],
      });
    }

    const result = await invoke("http", apiEvent("GET", `/v1/requests/${id}/result`));
    expect(result.statusCode, result.body).toBe(200);
    expect(JSON.parse(result.body)).toMatchObject({ id, output: { greeting: "hello deployed" } });
    const done = await invoke("http", apiEvent("GET", `/v1/requests/${id}`));
    expect(JSON.parse(done.body)).toMatchObject({ id, status: "SUCCEEDED" });
  });

  it("run the sweep and the webhooks handler", async () => {
    const report = await invoke("sweep", {
      version: "0",
      "detail-type": "Scheduled Event",
      source: "aws.events",
      detail: {},
    });
    expect(report).toEqual(expect.any(Object));
    expect(await invoke("webhooks", { Records: [] })).toEqual({ batchItemFailures: [] });
  });
});
