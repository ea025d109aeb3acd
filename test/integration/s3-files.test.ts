/**
 * S3FileStore on the emulator: the presigned PUT (what it signs and for how long: moto does
 * not check presigned URLs, so their expiry and signed headers are checked here on the URL
 * itself), the server-side copies a submit and a retry make, and what they refuse.
 */
import { createHash, randomBytes } from "node:crypto";
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createBucket } from "../../functions/adapters/aws/bootstrap-s3.ts";
import { S3FileStore, uploadKey } from "../../functions/adapters/aws/s3-files.ts";
import { InvalidRequestError } from "../../functions/core/errors.ts";
import { UPLOAD_LIFETIME_MS, type UploadRecord } from "../../functions/core/upload.ts";

const bucket = `longrun-files-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
const s3 = new S3Client({
  endpoint: inject("awsEndpoint"),
  region: "us-east-1",
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
  forcePathStyle: true,
});
const files = new S3FileStore(s3, bucket);
let n = 0;

function upload(overrides: Partial<UploadRecord> = {}): UploadRecord {
  const now = Date.now();
  return {
    id: `upl_01JD3ZZZZZZZZZZZZZZZZZZ${String(++n).padStart(3, "0")}`,
    tenant: "team/a#1",
    filename: "d.bin",
    size: 5,
    sha256: null,
    status: "READY",
    createdAt: now,
    expiresAt: now + UPLOAD_LIFETIME_MS,
    ...overrides,
  };
}

async function text(key: string): Promise<string> {
  const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return res.Body!.transformToString();
}

beforeAll(async () => {
  await createBucket(s3, bucket);
});
afterAll(() => s3.destroy());

describe("S3FileStore", () => {
  it("presigns a PUT that signs Content-Length and expires within the hour", async () => {
    const u = upload();
    const expiresAt = Date.now() + 3600_000;
    const target = await files.uploadTarget(u, expiresAt);
    const url = new URL(target.url);
    expect(url.pathname).toBe(
      `/${bucket}/${uploadKey(u).split("/").map(encodeURIComponent).join("/")}`,
    );
    expect(url.searchParams.get("X-Amz-SignedHeaders")?.split(";")).toContain("content-length");
    const signedAt = Date.parse(
      (url.searchParams.get("X-Amz-Date") ?? "").replace(
        /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/,
        "$1-$2-$3T$4:$5:$6Z",
      ),
    );
    const lifetime = Number(url.searchParams.get("X-Amz-Expires"));
    // At least SPEC's 15 minutes, and it ends where the answer says it does.
    expect(lifetime).toBeGreaterThanOrEqual(15 * 60);
    expect(Math.abs(signedAt + lifetime * 1000 - target.expiresAt)).toBeLessThan(2000);
    // No SDK checksum of an empty body: it would refuse every real PUT.
    expect(target.url).not.toMatch(/checksum-crc32|sdk-checksum/i);
    expect(target.headers).toEqual({ "content-length": "5" });
  });

  it("signs the checksum header when the caller declared a SHA-256", async () => {
    const sha256 = createHash("sha256").update("hello").digest("hex");
    const target = await files.uploadTarget(upload({ sha256 }), Date.now() + 3600_000);
    const signed = new URL(target.url).searchParams.get("X-Amz-SignedHeaders")?.split(";");
    expect(signed).toEqual(expect.arrayContaining(["content-length", "x-amz-checksum-sha256"]));
    expect(target.headers["x-amz-checksum-sha256"]).toBe(
      Buffer.from(sha256, "hex").toString("base64"),
    );
  });

  it("copies a READY upload under the request, and refuses one that is gone or of another size", async () => {
    const u = upload();
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: uploadKey(u), Body: "hello" }));
    expect(await files.uploadedSize(u)).toBe(5);
    await files.attachUpload("req_a1", "train.csv", u);
    expect(await text("inputs/req_a1/train.csv")).toBe("hello");

    const gone = upload();
    expect(await files.uploadedSize(gone)).toBeNull();
    await expect(files.attachUpload("req_a1", "x.csv", gone)).rejects.toBeInstanceOf(
      InvalidRequestError,
    );
    const short = upload({ size: 6 });
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: uploadKey(short), Body: "hello" }));
    await expect(files.attachUpload("req_a1", "y.csv", short)).rejects.toThrow(/not READY/);

    // A retry gets copies of the request's own files; deleting them leaves the old ones.
    await files.copyRequestFiles("req_a1", "req_a2", ["train.csv"]);
    await files.deleteRequestFiles("req_a1");
    expect(await text("inputs/req_a2/train.csv")).toBe("hello");
  });

  it("copies a request's published checkpoint to another request, leaving the first as it was", async () => {
    expect(await files.copyCheckpoint("req_none", "req_c2")).toBe(false);
    const manifest = {
      format: 1,
      version: "v-01",
      savedAt: 1,
      files: {
        "step.json": { key: "checkpoints/req_c1/v-01/step.json", size: 10, sha256: "x" },
      },
    };
    await s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: "checkpoints/req_c1/v-01/step.json",
        Body: '{"step":3}',
      }),
    );
    await s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: "checkpoints/req_c1/CURRENT",
        Body: JSON.stringify(manifest),
      }),
    );
    expect(await files.copyCheckpoint("req_c1", "req_c2")).toBe(true);
    const copied = JSON.parse(await text("checkpoints/req_c2/CURRENT"));
    const key = copied.files["step.json"].key as string;
    expect(key.startsWith("checkpoints/req_c2/")).toBe(true);
    expect(await text(key)).toBe('{"step":3}');
    expect(JSON.parse(await text("checkpoints/req_c1/CURRENT"))).toEqual(manifest);
    await files.deleteCheckpoint("req_c2");
    await expect(text("checkpoints/req_c2/CURRENT")).rejects.toThrow();
  });
});
