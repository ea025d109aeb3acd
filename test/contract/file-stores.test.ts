import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { inject } from "vitest";
import { createBucket } from "../../functions/adapters/aws/bootstrap-s3.ts";
import { S3FileStore, uploadKey } from "../../functions/adapters/aws/s3-files.ts";
import { S3AttemptStorage } from "../../functions/adapters/aws/s3-storage.ts";
import { ArtifactUrlSigner } from "../../functions/adapters/embedded/artifact-urls.ts";
import { FsFileStore } from "../../functions/adapters/embedded/fs-files.ts";
import { FsAttemptStorage, FsLayout } from "../../functions/adapters/embedded/fs-storage.ts";
import { describeFileStoreContract } from "./file-store.contract.ts";

describeFileStoreContract("FsFileStore", async () => {
  const dir = await mkdtemp(join(tmpdir(), "longrun-filestore-"));
  const layout = new FsLayout(dir);
  const signer = new ArtifactUrlSigner(randomBytes(32), () => "http://x");
  return {
    files: new FsFileStore(layout, signer, () => "http://x"),
    async putUploadBytes(upload, bytes) {
      await mkdir(layout.uploadsDir(), { recursive: true });
      await writeFile(layout.uploadFile(upload.id), bytes, { mode: 0o444 });
    },
    readRequestFile: (id, name) => readFile(join(layout.inputDir(id), name)).catch(() => null),
    saveCheckpoint: (id, from) => new FsAttemptStorage(layout, id).saveCheckpoint(from),
    restoreCheckpoint: (id, to) => new FsAttemptStorage(layout, id).restoreCheckpoint(to),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

describeFileStoreContract("S3FileStore", async () => {
  const s3 = new S3Client({
    endpoint: inject("awsEndpoint"),
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    forcePathStyle: true,
  });
  const bucket = `longrun-filestore-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
  await createBucket(s3, bucket);
  return {
    files: new S3FileStore(s3, bucket),
    async putUploadBytes(upload, bytes) {
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: uploadKey(upload), Body: bytes }));
    },
    async readRequestFile(id, name) {
      try {
        const res = await s3.send(
          new GetObjectCommand({ Bucket: bucket, Key: `inputs/${id}/${name}` }),
        );
        return Buffer.from(await res.Body!.transformToByteArray());
      } catch {
        return null;
      }
    },
    saveCheckpoint: (id, from) => new S3AttemptStorage(s3, bucket, id).saveCheckpoint(from),
    restoreCheckpoint: (id, to) => new S3AttemptStorage(s3, bucket, id).restoreCheckpoint(to),
    cleanup: async () => s3.destroy(),
  };
});
