/**
 * The Batch entrypoint lays a request's files out read-only in LONGRUN_INPUT_DIR (SPEC §4):
 * runBatchAttempt against the emulator's S3, with the request's copies where a submit puts
 * them (`inputs/<id>/<name>`).
 */
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { afterAll, afterEach, beforeAll, beforeEach, expect, inject, it } from "vitest";
import { createBucket } from "../../functions/adapters/aws/bootstrap-s3.ts";
import { S3InputStore, S3ResultStore } from "../../functions/adapters/aws/s3-storage.ts";
import { runBatchAttempt } from "../../jobs/runner/batch-main.ts";
import { REPO, removeDir, tempDir } from "../runner/helpers.ts";

const FILES_JOB = join(REPO, "test/fixtures/jobs/files-job.mjs");
const bucket = `longrun-batch-in-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
const s3 = new S3Client({
  endpoint: inject("awsEndpoint"),
  region: "us-east-1",
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
  forcePathStyle: true,
});

beforeAll(() => createBucket(s3, bucket));
afterAll(() => s3.destroy());
let root: string;
beforeEach(async () => {
  root = await tempDir("batch-inputs");
});
afterEach(() => removeDir(root));

async function run(id: string): Promise<number> {
  const sink = new PassThrough().resume();
  return runBatchAttempt(
    {
      PATH: process.env.PATH,
      LONGRUN_REQUEST_ID: id,
      LONGRUN_QUEUE: "files",
      LONGRUN_BUCKET: bucket,
      LONGRUN_TABLE: "unused",
      AWS_BATCH_JOB_ATTEMPT: "1",
      LONGRUN_WORK_ROOT: root,
    },
    {
      argv: ["node", "batch-main.ts", "--", process.execPath, FILES_JOB],
      s3,
      writeProgress: async () => true,
      stdout: sink,
      stderr: sink,
      pollIntervalMs: 25,
    },
  );
}

it("downloads the request's files into LONGRUN_INPUT_DIR, read-only", async () => {
  const id = `req_batchin${Date.now().toString(36)}`;
  const bytes = randomBytes(300_000);
  await new S3InputStore(s3, bucket).putInput(id, {});
  await s3.send(
    new PutObjectCommand({ Bucket: bucket, Key: `inputs/${id}/train.csv`, Body: bytes }),
  );

  expect(await run(id)).toBe(0);

  const { output } = await new S3ResultStore(s3, bucket).getResult(id);
  expect(output).toMatchObject({
    files: {
      "train.csv": {
        size: bytes.length,
        sha256: createHash("sha256").update(bytes).digest("hex"),
        mode: "444",
      },
    },
  });
});

it("gives a request without files an empty LONGRUN_INPUT_DIR", async () => {
  const id = `req_batchin0${Date.now().toString(36)}`;
  await new S3InputStore(s3, bucket).putInput(id, {});
  expect(await run(id)).toBe(0);
  const { output } = await new S3ResultStore(s3, bucket).getResult(id);
  expect(output).toMatchObject({ files: {} });
});
