import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { CreateTableCommand, DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import { STSClient } from "@aws-sdk/client-sts";
import { DynamoDBDocumentClient, GetCommand, PutCommand } from "@aws-sdk/lib-dynamodb";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { createBucket } from "../../functions/adapters/aws/bootstrap-s3.ts";
import { REQUEST_SESSION_TAG } from "../../functions/adapters/aws/definitions.ts";
import {
  S3AttemptStorage,
  S3InputStore,
  S3ResultStore,
} from "../../functions/adapters/aws/s3-storage.ts";
import { AWS_ENV } from "../../functions/config/env.ts";
import {
  type BatchAttemptDeps,
  dynamoProgressWriter,
  type ProgressUpdate,
  parseBatchAttemptConfig,
  runBatchAttempt,
} from "../../jobs/runner/batch-main.ts";
import { assumeRoleInput, ScopedCredentials } from "../../jobs/runner/scoped-credentials.ts";
import { DEMO, REPO, removeDir, tempDir, waitFor } from "../runner/helpers.ts";

/** A job that reports the credentials it was handed (see the file). */
const SCOPED_JOB = join(REPO, "test", "integration", "scoped-job.mjs");

const endpoint = inject("awsEndpoint");
const suffix = `${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
const bucket = `longrun-batch-${suffix}`;
const table = `longrun-batch-${suffix}`;
const awsConfig = {
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
};
const s3 = new S3Client({ ...awsConfig, forcePathStyle: true });
const dynamo = new DynamoDBClient(awsConfig);
const doc = DynamoDBDocumentClient.from(dynamo);

beforeAll(async () => {
  await createBucket(s3, bucket);
  // Only the key schema the progress write needs; the request store owns the real table.
  await dynamo.send(
    new CreateTableCommand({
      TableName: table,
      BillingMode: "PAY_PER_REQUEST",
      AttributeDefinitions: [
        { AttributeName: "pk", AttributeType: "S" },
        { AttributeName: "sk", AttributeType: "S" },
      ],
      KeySchema: [
        { AttributeName: "pk", KeyType: "HASH" },
        { AttributeName: "sk", KeyType: "RANGE" },
      ],
    }),
  );
});
afterAll(() => {
  s3.destroy();
  dynamo.destroy();
});

let root: string;
beforeEach(async () => {
  root = await tempDir("batch");
});
afterEach(async () => {
  await removeDir(root);
});

let n = 0;
const newId = () => `req_batch${++n}${Date.now().toString(36)}`;

/** A stream that keeps what was written to it. */
function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = "";
  stream.on("data", (c: Buffer) => {
    text += c.toString();
  });
  return { stream, text: () => text };
}

interface Harness {
  deps: BatchAttemptDeps;
  updates: ProgressUpdate[];
  stdout: () => string;
  stderr: () => string;
  signals: EventEmitter;
}

/** Dependencies with the progress writer recorded and the signals under the test's control. */
function harness(extra: Partial<BatchAttemptDeps> = {}): Harness {
  const out = capture();
  const err = capture();
  const updates: ProgressUpdate[] = [];
  const signals = new EventEmitter();
  return {
    updates,
    signals,
    stdout: out.text,
    stderr: err.text,
    deps: {
      argv: ["node", "batch-main.ts", "--", process.execPath, DEMO],
      s3,
      writeProgress: async (u) => {
        updates.push(u);
        return true;
      },
      stdout: out.stream,
      stderr: err.stream,
      signals,
      pollIntervalMs: 25,
      ...extra,
    },
  };
}

function batchEnv(id: string, batchAttempt: number, more: Record<string, string> = {}) {
  return {
    PATH: process.env.PATH,
    LONGRUN_REQUEST_ID: id,
    LONGRUN_QUEUE: "demo",
    LONGRUN_BUCKET: bucket,
    LONGRUN_TABLE: table,
    AWS_BATCH_JOB_ATTEMPT: String(batchAttempt),
    LONGRUN_WORK_ROOT: root,
    ...more,
  };
}

/** What the request's saved checkpoint holds in state.json (the demo job's steps done). */
async function checkpointStep(id: string): Promise<number | null> {
  const dir = join(root, `restore-${++n}`);
  await mkdir(dir, { recursive: true });
  await new S3AttemptStorage(s3, bucket, id).restoreCheckpoint(dir);
  try {
    return (JSON.parse(await readFile(join(dir, "state.json"), "utf8")) as { step: number }).step;
  } catch {
    return null;
  }
}

describe("runBatchAttempt", () => {
  it("resumes a failed attempt from its S3 checkpoint and saves outputs and progress", async () => {
    const id = newId();
    await new S3InputStore(s3, bucket).putInput(id, {
      steps: 6,
      sleepMs: 30,
      fail: "first-attempt",
      failAtStep: 3,
      output: { hello: "batch" },
      artifactBytes: 64,
    });

    const first = harness();
    const code1 = await runBatchAttempt(batchEnv(id, 1), first.deps);

    expect(code1).toBe(1);
    expect(await checkpointStep(id)).toBe(3);
    expect(first.stderr()).toContain("failing on purpose at step 3 (attempt 1)");

    const second = harness();
    const code2 = await runBatchAttempt(batchEnv(id, 2), second.deps);

    expect(code2).toBe(0);
    expect(second.stderr()).toContain("demo: attempt 2 starting at step 3 of 6");
    expect(second.stdout()).toContain("demo: step 6/6");
    const result = await new S3ResultStore(s3, bucket).getResult(id);
    expect(result.output).toEqual({
      steps: 6,
      resumedFrom: 3,
      attempt: 2,
      output: { hello: "batch" },
    });
    expect(result.artifacts.map((a) => [a.name, a.size])).toEqual([["artifact.bin", 64]]);
    const progress = second.updates.filter((u) => u.progress).map((u) => u.progress!.current);
    expect(progress.at(-1)).toBe(6);
    expect(progress).toEqual([...progress].sort());
    expect(second.updates.every((u) => u.attempt === 2 && u.requestId === id)).toBe(true);
    expect(second.updates.at(-1)?.progress).toMatchObject({ total: 6, message: "step 6/6" });
  });

  it("numbers the attempt from LONGRUN_FIRST_ATTEMPT plus the Batch attempt", async () => {
    const id = newId();
    await new S3InputStore(s3, bucket).putInput(id, { steps: 1, sleepMs: 1 });
    const h = harness();

    const code = await runBatchAttempt(batchEnv(id, 2, { LONGRUN_FIRST_ATTEMPT: "3" }), h.deps);

    expect(code).toBe(0);
    expect((await new S3ResultStore(s3, bucket).getResult(id)).output).toMatchObject({
      attempt: 4,
    });
    expect(h.updates.map((u) => u.attempt)).toContain(4);
  });

  it("passes the job's exit code through", async () => {
    const id = newId();
    await new S3InputStore(s3, bucket).putInput(id, {
      steps: 2,
      sleepMs: 1,
      fail: "always",
      exitCode: 7,
    });

    expect(await runBatchAttempt(batchEnv(id, 1), harness().deps)).toBe(7);
  });

  it("stops the job on SIGTERM, saves its checkpoint and exits 143", async () => {
    const id = newId();
    await new S3InputStore(s3, bucket).putInput(id, { steps: 1000, sleepMs: 40 });
    const h = harness({ heartbeatIntervalMs: 50 });

    const running = runBatchAttempt(batchEnv(id, 1), h.deps);
    await waitFor(() => h.updates.some((u) => (u.progress?.current ?? 0) >= 2), 15_000, "progress");
    h.signals.emit("SIGTERM", "SIGTERM");
    const code = await running;

    expect(code).toBe(143);
    expect(h.stdout()).toMatch(/demo: got SIGTERM at step \d+, checkpoint saved/);
    const lastReported = Math.max(...h.updates.map((u) => u.progress?.current ?? 0));
    // The checkpoint saved at exit holds at least every step that was reported.
    expect(await checkpointStep(id)).toBeGreaterThanOrEqual(lastReported);
    expect((await new S3ResultStore(s3, bucket).getResult(id)).output).toBeNull();
    // Heartbeats (updates without progress) went out while it ran.
    expect(h.updates.some((u) => u.progress === undefined)).toBe(true);
    expect(h.signals.listenerCount("SIGTERM")).toBe(0);
  });

  it("exits 1 without running anything when no input is stored", async () => {
    const h = harness();

    expect(await runBatchAttempt(batchEnv(newId(), 1), h.deps)).toBe(1);
    expect(h.stderr()).toContain("no input stored");
    expect(h.updates).toEqual([]);
  });

  it("exits 2 on a configuration error", async () => {
    const h = harness({ argv: ["node", "batch-main.ts"] });

    expect(await runBatchAttempt(batchEnv(newId(), 1), h.deps)).toBe(2);
    expect(h.stderr()).toContain("no job command");
  });
});

describe("parseBatchAttemptConfig", () => {
  it("names the variable that is missing or malformed", () => {
    const argv = ["node", "x", "--", "job"];
    const env = batchEnv("req_x", 1);

    expect(parseBatchAttemptConfig(env, argv)).toMatchObject({
      requestId: "req_x",
      attempt: 1,
      command: ["job"],
    });
    expect(() => parseBatchAttemptConfig({ ...env, LONGRUN_BUCKET: undefined }, argv)).toThrow(
      "LONGRUN_BUCKET",
    );
    expect(() => parseBatchAttemptConfig({ ...env, AWS_BATCH_JOB_ATTEMPT: "0" }, argv)).toThrow(
      "AWS_BATCH_JOB_ATTEMPT",
    );
  });
});

describe("dynamoProgressWriter", () => {
  async function putRequest(id: string, status: string, attempt: number): Promise<void> {
    await doc.send(
      new PutCommand({
        TableName: table,
        Item: { pk: `REQ#${id}`, sk: "REQ", id, status, attempt, progress: null, rev: 0 },
      }),
    );
  }
  const item = async (id: string) =>
    (await doc.send(new GetCommand({ TableName: table, Key: { pk: `REQ#${id}`, sk: "REQ" } })))
      .Item;

  it("writes progress and the heartbeat while the request runs this attempt", async () => {
    const id = newId();
    await putRequest(id, "RUNNING", 2);
    const write = dynamoProgressWriter(dynamo, table);
    const progress = { current: 2, total: null, message: "epoch 2", updatedAt: 1_700_000_000_000 };

    expect(await write({ requestId: id, attempt: 2, heartbeatAt: 1234, progress })).toBe(true);
    expect(await item(id)).toMatchObject({ progress, heartbeatAt: 1234, rev: 1 });

    expect(await write({ requestId: id, attempt: 2, heartbeatAt: 5678 })).toBe(true);
    expect(await item(id)).toMatchObject({ progress, heartbeatAt: 5678, rev: 2 });
  });

  it("refuses a write for another attempt or a request that is no longer active", async () => {
    const stale = newId();
    const done = newId();
    await putRequest(stale, "STARTING", 3);
    await putRequest(done, "SUCCEEDED", 1);
    const write = dynamoProgressWriter(dynamo, table);
    const progress = { current: 1, total: 2, message: null, updatedAt: 1 };

    expect(await write({ requestId: stale, attempt: 2, heartbeatAt: 1, progress })).toBe(false);
    expect(await write({ requestId: done, attempt: 1, heartbeatAt: 1, progress })).toBe(false);
    expect(await write({ requestId: newId(), attempt: 1, heartbeatAt: 1, progress })).toBe(false);
    expect((await item(stale))?.progress).toBeNull();
    expect((await item(done))?.heartbeatAt).toBeUndefined();
  });
});

describe("the batch-main entrypoint as a process", () => {
  it("reports progress to DynamoDB, saves the checkpoint on SIGTERM and exits 143", async () => {
    const id = newId();
    await doc.send(
      new PutCommand({
        TableName: table,
        Item: { pk: `REQ#${id}`, sk: "REQ", id, status: "RUNNING", attempt: 1, rev: 0 },
      }),
    );
    await new S3InputStore(s3, bucket).putInput(id, { steps: 1000, sleepMs: 40 });
    const child = spawn(
      process.execPath,
      ["--import", "tsx", join(REPO, "jobs/runner/batch-main.ts"), "--", process.execPath, DEMO],
      {
        cwd: REPO,
        env: {
          ...batchEnv(id, 1),
          HOME: process.env.HOME ?? "/tmp",
          AWS_ENDPOINT_URL: endpoint,
          AWS_REGION: "us-east-1",
          AWS_ACCESS_KEY_ID: "test",
          AWS_SECRET_ACCESS_KEY: "test",
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    const exited = new Promise<number | null>((res) => child.once("exit", (code) => res(code)));

    try {
      await waitFor(
        async () => ((await item(id))?.progress?.current ?? 0) >= 2,
        30_000,
        `progress in DynamoDB (stderr: ${stderr.slice(-500)})`,
      );
      child.kill("SIGTERM");
      const code = await exited;

      expect(code).toBe(143);
      expect(stdout).toMatch(/demo: step 2\/1000/);
      expect(stderr).toContain("received SIGTERM");
      const stored = await item(id);
      expect(stored?.heartbeatAt).toEqual(expect.any(Number));
      expect(stored?.progress).toMatchObject({ total: 1000, updatedAt: expect.any(Number) });
      expect(await checkpointStep(id)).toBeGreaterThanOrEqual(stored?.progress.current as number);
    } finally {
      child.kill("SIGKILL");
    }
  });

  async function item(id: string) {
    return (
      await doc.send(new GetCommand({ TableName: table, Key: { pk: `REQ#${id}`, sk: "REQ" } }))
    ).Item;
  }
});

describe("credentials scoped to the request", () => {
  const roleArn = "arn:aws:iam::123456789012:role/longrun-scoped-demo";
  const sts = new STSClient(awsConfig);
  afterAll(() => sts.destroy());

  it("builds a session policy and tag that name only the request's objects and item", () => {
    const id = "req_01SCOPEDPOLICY";
    const input = assumeRoleInput({ roleArn, requestId: id, bucket: "b", table: "t" });

    expect(input).toMatchObject({
      RoleArn: roleArn,
      RoleSessionName: `longrun-${id}`,
      DurationSeconds: 3600,
      Tags: [{ Key: REQUEST_SESSION_TAG, Value: id }],
    });
    // moto does not evaluate policies: the document sent is what is checked.
    expect(JSON.parse(input.Policy as string)).toEqual({
      Version: "2012-10-17",
      Statement: [
        {
          Effect: "Allow",
          Action: ["s3:GetObject"],
          Resource: [`arn:aws:s3:::b/inputs/${id}.json`],
        },
        {
          Effect: "Allow",
          Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
          Resource: [`arn:aws:s3:::b/checkpoints/${id}/*`],
        },
        {
          Effect: "Allow",
          Action: ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
          Resource: [`arn:aws:s3:::b/outputs/${id}/*`],
        },
        {
          Effect: "Allow",
          Action: ["s3:PutObject", "s3:AbortMultipartUpload"],
          Resource: [`arn:aws:s3:::b/logs/${id}/*`],
        },
        {
          Effect: "Allow",
          Action: ["s3:ListBucket"],
          Resource: ["arn:aws:s3:::b"],
          Condition: {
            StringLike: {
              "s3:prefix": [`inputs/${id}.json`, `checkpoints/${id}/*`, `outputs/${id}/*`],
            },
          },
        },
        {
          Effect: "Allow",
          Action: ["dynamodb:UpdateItem"],
          Resource: ["arn:aws:dynamodb:*:*:table/t"],
          Condition: { "ForAllValues:StringEquals": { "dynamodb:LeadingKeys": [`REQ#${id}`] } },
        },
      ],
    });
    // STS refuses session policies over 2048 packed characters; stay well inside.
    expect((input.Policy as string).length).toBeLessThan(1500);
  });

  it("hands the job only the assumed role's credentials, served on loopback", async () => {
    const id = newId();
    await new S3InputStore(s3, bucket).putInput(id, {});
    const scoped = new ScopedCredentials(sts, { roleArn, requestId: id, bucket, table });
    // The runner's own S3 calls go out with the scoped credentials too.
    const scopedS3 = new S3Client({
      ...awsConfig,
      forcePathStyle: true,
      credentials: scoped.provider,
    });
    const h = harness({
      argv: ["node", "batch-main.ts", "--", process.execPath, SCOPED_JOB],
      s3: scopedS3,
      jobCredentials: scoped,
    });
    // What a Batch container holds: the task role's credentials endpoint (and keys here).
    const env = batchEnv(id, 1, {
      AWS_ENDPOINT_URL: endpoint,
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: "task-role-key",
      AWS_SECRET_ACCESS_KEY: "task-role-secret",
      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: "/v2/credentials/task-role",
      [AWS_ENV.jobScopedRole]: roleArn,
    });

    const code = await runBatchAttempt(env, h.deps);

    expect(code, h.stderr()).toBe(0);
    const { output } = await new S3ResultStore(s3, bucket).getResult(id);
    const seen = output as { arn: string; accessKeyId: string; given: string[] };
    // Only the loopback endpoint and its token; none of the container's credentials.
    expect(seen.given).toEqual([
      "AWS_CONTAINER_AUTHORIZATION_TOKEN",
      "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ]);
    // The identity is the scoped role's session for this request.
    expect(seen.arn).toBe(
      `arn:aws:sts::123456789012:assumed-role/longrun-scoped-demo/longrun-${id}`,
    );
    expect(seen.accessKeyId).toBe((await scoped.get()).accessKeyId);
    expect(seen.accessKeyId).not.toBe("task-role-key");
    scopedS3.destroy();
  });

  it("assumes the role again only when the session nears its end, once for many callers", async () => {
    let now = Date.now();
    const scoped = new ScopedCredentials(
      sts,
      { roleArn, requestId: "req_01REFRESH", bucket, table },
      () => now,
    );

    const first = await Promise.all([scoped.get(), scoped.get(), scoped.provider()]);
    now += 40 * 60_000;
    const later = await scoped.get();
    now += 10 * 60_000;
    const renewed = await scoped.get();

    // One session for the concurrent first callers, kept 40 minutes into its hour.
    expect(new Set(first.map((c) => c.accessKeyId)).size).toBe(1);
    expect(later.accessKeyId).toBe(first[0]?.accessKeyId);
    // Ten minutes before its end: a new session.
    expect(renewed.accessKeyId).not.toBe(first[0]?.accessKeyId);
    expect(renewed.expiration.getTime()).toBeGreaterThan(Date.now() + 50 * 60_000);
  });

  it("serves credentials only to a caller holding the token", async () => {
    const scoped = new ScopedCredentials(sts, {
      roleArn,
      requestId: "req_01TOKEN",
      bucket,
      table,
    });
    const served = await scoped.serve();
    try {
      const url = served.env.AWS_CONTAINER_CREDENTIALS_FULL_URI as string;
      expect(new URL(url).hostname).toBe("127.0.0.1");
      expect((await fetch(url)).status).toBe(403);
      expect((await fetch(url, { headers: { authorization: "wrong" } })).status).toBe(403);
      const ok = await fetch(url, {
        headers: { authorization: served.env.AWS_CONTAINER_AUTHORIZATION_TOKEN as string },
      });
      expect(ok.status).toBe(200);
      expect(await ok.json()).toMatchObject({
        AccessKeyId: (await scoped.get()).accessKeyId,
        Token: expect.any(String),
        Expiration: expect.any(String),
      });
    } finally {
      await served.close();
    }
  });
});
