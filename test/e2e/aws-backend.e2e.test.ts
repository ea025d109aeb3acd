import { existsSync } from "node:fs";
import { join } from "node:path";
import {
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { HeadBucketCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { GetQueueAttributesCommand, GetQueueUrlCommand, SQSClient } from "@aws-sdk/client-sqs";
import { afterAll, describe, expect, inject, it } from "vitest";
import { INDEXES, resourceNames } from "../../functions/adapters/aws/definitions.ts";
import { demoQueue, type ServerOptions, TestServer, uniquePrefix } from "../helpers/server.ts";

/**
 * What only `LONGRUN_BACKEND=aws` does (the shared e2e suites cover the API on it): create
 * its resources with LONGRUN_AWS_BOOTSTRAP=1, keep its state in them, run on resources it
 * is given by name, and refuse to start, naming the setting, when one is missing.
 */
describe("embedded server on the AWS backend (moto, e2e)", () => {
  const config = {
    endpoint: inject("awsEndpoint"),
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  };
  const dynamo = new DynamoDBClient(config);
  const sqs = new SQSClient(config);
  const s3 = new S3Client({ ...config, forcePathStyle: true });
  const servers: TestServer[] = [];
  const newServer = (options: Omit<ServerOptions, "backend">) => {
    const server = new TestServer({ ...options, backend: "aws" });
    servers.push(server);
    return server;
  };
  afterAll(async () => {
    for (const s of servers) await s.dispose();
    for (const c of [dynamo, sqs, s3]) c.destroy();
  });

  const first = newServer({ queues: { q: demoQueue({ maxRunning: 1 }) } });
  const names = resourceNames(first.awsPrefix);
  let doneId = "";

  it("creates its table, queues and bucket at start and keeps requests, files and logs there", async () => {
    await first.start();
    expect(first.output).toContain(`table ${names.tableName}`);

    const { Table } = await dynamo.send(new DescribeTableCommand({ TableName: names.tableName }));
    expect((Table?.GlobalSecondaryIndexes ?? []).map((i) => i.IndexName).sort()).toEqual(
      Object.values(INDEXES)
        .map((i) => i.name)
        .sort(),
    );
    const { QueueUrl } = await sqs.send(
      new GetQueueUrlCommand({ QueueName: names.dispatchQueueName }),
    );
    const attrs = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ["FifoQueue", "RedrivePolicy"] }),
    );
    expect(attrs.Attributes?.FifoQueue).toBe("true");
    expect(JSON.parse(attrs.Attributes?.RedrivePolicy ?? "{}").deadLetterTargetArn).toMatch(
      /-dlq\.fifo$/,
    );
    await sqs.send(new GetQueueUrlCommand({ QueueName: names.eventsQueueName }));
    await s3.send(new HeadBucketCommand({ Bucket: names.bucketName }));

    const sub = await first.submit("q", {
      input: { steps: 3, sleepMs: 20, fail: "first-attempt", artifactBytes: 64 },
    });
    const done = await first.waitForStatus(sub.body.id, "SUCCEEDED");
    expect(done.attempt).toBe(2);
    doneId = sub.body.id;

    const item = await dynamo.send(
      new GetItemCommand({
        TableName: names.tableName,
        Key: { pk: { S: `REQ#${doneId}` }, sk: { S: "REQ" } },
        ConsistentRead: true,
      }),
    );
    expect(item.Item?.status?.S).toBe("SUCCEEDED");
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: names.bucketName }));
    const keys = (listed.Contents ?? []).map((o) => o.Key ?? "");
    expect(keys).toEqual(
      expect.arrayContaining([
        `outputs/${doneId}/result.json`,
        `outputs/${doneId}/artifact.bin`,
        `checkpoints/${doneId}/CURRENT`,
      ]),
    );
    // Both attempts logged, each under its own attempt number.
    expect(keys.some((k) => k.startsWith(`logs/${doneId}/000001/`))).toBe(true);
    expect(keys.some((k) => k.startsWith(`logs/${doneId}/000002/`))).toBe(true);
    // Nothing of it went to SQLite or the data directory's file stores.
    for (const local of ["longrun.db", "outputs", "checkpoints", "logs"]) {
      expect(existsSync(join(first.dataDir, local)), local).toBe(false);
    }
  });

  it("runs on resources given by name without bootstrapping, with the state they hold, and repairs", async () => {
    await first.stop();
    const { QueueUrl } = await sqs.send(
      new GetQueueUrlCommand({ QueueName: names.dispatchQueueName }),
    );
    const second = newServer({
      queues: { q: demoQueue({ maxRunning: 1 }) },
      env: {
        LONGRUN_AWS_BOOTSTRAP: "",
        LONGRUN_AWS_PREFIX: "",
        LONGRUN_TABLE: names.tableName,
        LONGRUN_BUCKET: names.bucketName,
        LONGRUN_DISPATCH_QUEUE_URL: QueueUrl ?? "",
        // Every 30th sweep is a repair sweep: one every 3 s here.
        LONGRUN_SWEEP_INTERVAL_MS: "100",
      },
    });
    await second.start();
    const old = await second.fetch(`/v1/requests/${doneId}/result`);
    expect(old.status).toBe(200);
    expect(old.body.output).toMatchObject({ attempt: 2, resumedFrom: 2 });
    const sub = await second.submit("q", { input: { steps: 1, sleepMs: 1 } });
    expect((await second.waitForStatus(sub.body.id, "SUCCEEDED")).attempt).toBe(1);

    // The repair sweep recounts the queue from its requests and reports a hand-edited counter.
    await dynamo.send(
      new UpdateItemCommand({
        TableName: names.tableName,
        Key: { pk: { S: "QUEUE#q" }, sk: { S: "COUNTERS" } },
        UpdateExpression: "ADD queued :n",
        ExpressionAttributeValues: { ":n": { N: "3" } },
      }),
    );
    const deadline = Date.now() + 15_000;
    while (!second.output.includes("differ from a recount") && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(second.output).toMatch(/queue q: stored counters \{"queued":3,"running":0\} differ/);
    expect(second.output).not.toContain("sweep failed");
  });

  it.each([
    [{}, "LONGRUN_TABLE must be set"],
    [{ LONGRUN_TABLE: "t" }, "LONGRUN_BUCKET must be set"],
    [{ LONGRUN_TABLE: "t", LONGRUN_BUCKET: "b" }, "LONGRUN_DISPATCH_QUEUE_URL must be set"],
  ])(
    "refuses to start without bootstrap when a setting is missing (%j)",
    async (given, message) => {
      const server = newServer({
        queues: { q: demoQueue() },
        env: {
          LONGRUN_AWS_BOOTSTRAP: "",
          LONGRUN_TABLE: "",
          LONGRUN_BUCKET: "",
          LONGRUN_DISPATCH_QUEUE_URL: "",
          ...given,
        },
      });
      await expect(server.start()).rejects.toThrow(/exited with 1 before it was ready/);
      expect(server.exitCode).toBe(1);
      expect(server.output).toContain(`longrun: ${message}`);
      expect(server.output).toContain("LONGRUN_AWS_BOOTSTRAP=1");
    },
  );

  it("refuses to start on a table that does not exist, naming it", async () => {
    const missing = `${uniquePrefix()}-requests`;
    const server = newServer({
      queues: { q: demoQueue() },
      env: {
        LONGRUN_AWS_BOOTSTRAP: "",
        LONGRUN_TABLE: missing,
        LONGRUN_BUCKET: names.bucketName,
        LONGRUN_DISPATCH_QUEUE_URL: (
          await sqs.send(new GetQueueUrlCommand({ QueueName: names.dispatchQueueName }))
        ).QueueUrl as string,
      },
    });
    await expect(server.start()).rejects.toThrow(/exited with 1/);
    expect(server.output).toContain(`longrun: DynamoDB table ${missing} does not exist`);
  });

  it("refuses a resource prefix that S3, DynamoDB and SQS cannot all use", async () => {
    const server = newServer({
      queues: { q: demoQueue() },
      env: { LONGRUN_AWS_PREFIX: "Bad_Name" },
    });
    await expect(server.start()).rejects.toThrow(/exited with 1/);
    expect(server.exitCode).toBe(1);
    expect(server.output).toContain("longrun: LONGRUN_AWS_PREFIX must be");
  });
});
