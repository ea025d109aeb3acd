/**
 * The server's stream poller (`LONGRUN_BACKEND=aws`) on the emulator's DynamoDB stream: every
 * record handled in order; a record whose step failed is read again; a restarted poller
 * resumes after the last handled record (its checkpoint file): nothing lost, nothing old
 * handled again.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CreateTableCommand, DynamoDBClient, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { type _Record, DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTable,
  requestTableDefinition,
  tableStreamArn,
} from "../../../functions/adapters/aws/bootstrap.ts";
import { createBucket } from "../../../functions/adapters/aws/bootstrap-s3.ts";
import {
  createQueues,
  createWebhooksQueue,
} from "../../../functions/adapters/aws/bootstrap-sqs.ts";
import { resourceNames } from "../../../functions/adapters/aws/definitions.ts";
import { createAwsClients } from "../../../functions/adapters/aws/wiring.ts";
import { AWS_ENV } from "../../../functions/config/env.ts";
import { resolveAwsResources } from "../../../functions/local/aws-runtime.ts";
import { StartupError } from "../../../functions/local/env.ts";
import { StreamPoller } from "../../../functions/local/webhook-pollers.ts";
import { awsClientConfig, uniqueName } from "../aws.ts";

const dynamo = new DynamoDBClient(awsClientConfig());
const streams = new DynamoDBStreamsClient(awsClientConfig());
const dir = mkdtempSync(join(tmpdir(), "longrun-stream-poller-"));
const checkpointPath = join(dir, "webhooks-stream.json");
const tableName = uniqueName("stream-poller");
let streamArn = "";

beforeAll(async () => {
  await createTable(dynamo, tableName);
  streamArn = await tableStreamArn(dynamo, tableName);
});
afterAll(() => {
  dynamo.destroy();
  streams.destroy();
  rmSync(dir, { recursive: true, force: true });
});

async function put(n: number): Promise<void> {
  await dynamo.send(
    new PutItemCommand({
      TableName: tableName,
      Item: { pk: { S: `ITEM#${n}` }, sk: { S: "X" }, n: { N: String(n) } },
    }),
  );
}

/** A poller whose step records each item's `n`, failing while `fail(n)` holds. */
function poller(seen: number[], fail: (n: number) => boolean = () => false): StreamPoller {
  return new StreamPoller({
    streams,
    streamArn,
    checkpointPath,
    handle: async (record: _Record) => {
      const n = Number(record.dynamodb?.NewImage?.n?.N);
      if (fail(n)) throw new Error(`step failed on ${n}`);
      seen.push(n);
    },
    log: () => {},
  });
}

describe("the aws server's webhook settings", () => {
  it("refuses a webhooks queue on a table whose stream is off, and turns it on when bootstrapping", async () => {
    const name = uniqueName("no-stream");
    const { StreamSpecification: _on, ...definition } = requestTableDefinition(name);
    await dynamo.send(new CreateTableCommand(definition));
    const clients = createAwsClients(awsClientConfig());
    // Everything else exists, so the only refusal can be the stream's.
    const names = resourceNames(name);
    const [queues, hooks] = await Promise.all([
      createQueues(clients.sqs, names),
      createWebhooksQueue(clients.sqs, names),
      createBucket(clients.s3, names.bucketName),
    ]);
    const env = {
      [AWS_ENV.table]: name,
      [AWS_ENV.bucket]: names.bucketName,
      [AWS_ENV.dispatchQueueUrl]: queues.dispatchQueueUrl,
      [AWS_ENV.webhooksQueueUrl]: hooks.url,
    };
    const error = await resolveAwsResources(env, clients, () => {}).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StartupError);
    expect((error as Error).message).toMatch(
      new RegExp(`table ${name} has no NEW_AND_OLD_IMAGES stream.*${AWS_ENV.webhooksQueueUrl}`),
    );
    // The bootstrap's createTable turns the stream on for a table made without it.
    await createTable(dynamo, name);
    expect(await tableStreamArn(dynamo, name)).toMatch(/stream/);
    await expect(resolveAwsResources(env, clients, () => {})).resolves.toMatchObject({
      webhooksQueueUrl: hooks.url,
    });
    for (const c of Object.values(clients)) c.destroy();
  });
});

describe("stream poller", () => {
  it("handles every record in order, re-reads a failed one, and resumes after a restart", async () => {
    for (const n of [1, 2, 3]) await put(n);
    const first: number[] = [];
    let failing = true;
    const a = poller(first, (n) => n === 2 && failing);
    expect(await a.pollOnce()).toBe(1);
    expect(first).toEqual([1]);
    // The failed record (and what follows it) is read again, not skipped.
    expect(await a.pollOnce()).toBe(0);
    failing = false;
    expect(await a.pollOnce()).toBe(2);
    expect(first).toEqual([1, 2, 3]);

    // A restart: a new poller on the same checkpoint handles only what came since.
    await put(4);
    await put(5);
    const second: number[] = [];
    const b = poller(second);
    expect(await b.pollOnce()).toBe(2);
    expect(second).toEqual([4, 5]);
    expect(await b.pollOnce()).toBe(0);

    // Without the checkpoint, a poller starts at the oldest record the stream keeps.
    rmSync(checkpointPath);
    const replay: number[] = [];
    expect(await poller(replay).pollOnce()).toBe(5);
    expect(replay).toEqual([1, 2, 3, 4, 5]);
  });

  it("runs as a loop until stopped", async () => {
    const seen: number[] = [];
    const p = poller(seen);
    await p.pollOnce();
    seen.length = 0;
    p.start();
    await put(6);
    for (let n = 0; n < 200 && seen.length === 0; n++) await new Promise((r) => setTimeout(r, 25));
    await p.stop();
    expect(seen).toEqual([6]);
  });
});
