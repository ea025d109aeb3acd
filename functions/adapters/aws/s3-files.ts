/**
 * {@link FileStore} on the deployment's bucket: uploads at `uploads/<tenant>/<id>` (PUT by
 * the caller through a presigned URL, so the bytes never pass through Lambda or the API
 * server), a request's own files at `inputs/<request id>/<name>`, made by server-side
 * CopyObject at submit. The bucket's lifecycle rule deletes `uploads/` a day after
 * creation; the request's copies live as long as the request.
 */
import {
  CopyObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { InvalidRequestError } from "../../core/errors.ts";
import type { FileStore, UploadTarget } from "../../core/ports.ts";
import type { UploadRecord } from "../../core/upload.ts";
import { S3_PREFIX } from "./definitions.ts";
import { copyCheckpointObjects, copySource, deletePrefix } from "./s3-storage.ts";

/** The key of an upload's bytes; the tenant is escaped so it stays one key segment. */
export function uploadKey(upload: Pick<UploadRecord, "tenant" | "id">): string {
  return `${S3_PREFIX.uploads}${encodeURIComponent(upload.tenant)}/${upload.id}`;
}

function inputPrefix(requestId: string): string {
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(requestId)) {
    throw new Error(`refusing request id ${JSON.stringify(requestId)} as an S3 key segment`);
  }
  return `${S3_PREFIX.inputs}${requestId}/`;
}

/** The base64 of a hex SHA-256, as S3's `x-amz-checksum-sha256` wants it. */
function checksumHeader(sha256Hex: string): string {
  return Buffer.from(sha256Hex, "hex").toString("base64");
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

function isGone(error: unknown): boolean {
  const name = (error as { name?: string })?.name;
  // 412: the object changed between the HEAD and the copy (CopySourceIfMatch).
  return name === "NoSuchKey" || name === "NotFound" || [404, 412].includes(httpStatus(error) ?? 0);
}

export class S3FileStore implements FileStore {
  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    /**
     * Client that signs upload URLs (default: `client`). It must not add SDK checksums of its
     * own to what it signs: a URL signed with the checksum of an empty body refuses every PUT.
     */
    private readonly signer: S3Client = client,
  ) {}

  /**
   * An S3 presigned PUT whose signature covers `Content-Length` (S3 refuses a PUT of another
   * length) and, when the caller declared one, `x-amz-checksum-sha256` (S3 refuses other
   * bytes). Both are signed headers, not query parameters, so the caller must send them.
   */
  async uploadTarget(upload: UploadRecord, expiresAt: number): Promise<UploadTarget> {
    const expiresIn = Math.max(1, Math.floor((expiresAt - Date.now()) / 1000));
    const headers: Record<string, string> = { "content-length": String(upload.size) };
    if (upload.sha256) headers["x-amz-checksum-sha256"] = checksumHeader(upload.sha256);
    const url = await getSignedUrl(
      this.signer,
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: uploadKey(upload),
        ContentLength: upload.size,
        ...(upload.sha256 ? { ChecksumSHA256: checksumHeader(upload.sha256) } : {}),
      }),
      {
        expiresIn,
        signableHeaders: new Set(Object.keys(headers)),
        unhoistableHeaders: new Set(Object.keys(headers)),
      },
    );
    return { url, headers, expiresAt: Date.now() + expiresIn * 1000 };
  }

  async uploadedSize(upload: UploadRecord): Promise<number | null> {
    try {
      const head = await this.client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: uploadKey(upload) }),
      );
      return head.ContentLength ?? 0;
    } catch (error) {
      if (isGone(error)) return null;
      throw error;
    }
  }

  /**
   * HEAD then CopyObject conditioned on the ETag the HEAD saw, so the copy is exactly the
   * object whose size was checked; a lifecycle deletion in between fails the copy.
   */
  async attachUpload(requestId: string, name: string, upload: UploadRecord): Promise<void> {
    const field = `files[${JSON.stringify(name)}]`;
    const source = uploadKey(upload);
    try {
      const head = await this.client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: source }),
      );
      if (head.ContentLength !== upload.size) {
        throw new InvalidRequestError(
          `upload ${upload.id} is not READY: its bytes are not ${upload.size} long`,
          field,
        );
      }
      await this.client.send(
        new CopyObjectCommand({
          Bucket: this.bucket,
          Key: `${inputPrefix(requestId)}${name}`,
          CopySource: copySource(this.bucket, source),
          ...(head.ETag ? { CopySourceIfMatch: head.ETag } : {}),
        }),
      );
    } catch (error) {
      if (isGone(error)) throw new InvalidRequestError(`upload ${upload.id} does not exist`, field);
      throw error;
    }
  }

  async copyRequestFiles(from: string, to: string, names: readonly string[]): Promise<void> {
    for (const name of names) {
      await this.client.send(
        new CopyObjectCommand({
          Bucket: this.bucket,
          Key: `${inputPrefix(to)}${name}`,
          CopySource: copySource(this.bucket, `${inputPrefix(from)}${name}`),
        }),
      );
    }
  }

  async deleteRequestFiles(requestId: string): Promise<void> {
    await deletePrefix(this.client, this.bucket, inputPrefix(requestId));
  }

  copyCheckpoint(from: string, to: string): Promise<boolean> {
    return copyCheckpointObjects(this.client, this.bucket, from, to);
  }

  async deleteCheckpoint(requestId: string): Promise<void> {
    await deletePrefix(
      this.client,
      this.bucket,
      `${S3_PREFIX.checkpoints}${inputPrefix(requestId).slice(S3_PREFIX.inputs.length)}`,
    );
  }
}
