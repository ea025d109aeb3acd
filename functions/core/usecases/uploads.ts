import { InvalidRequestError, NotFoundError } from "../errors.ts";
import type { UploadTarget } from "../ports.ts";
import type { RequestFile, RequestRecord } from "../request.ts";
import {
  UPLOAD_LIFETIME_MS,
  UPLOAD_URL_TTL_SECONDS,
  type UploadRecord,
  UploadStatus,
} from "../upload.ts";
import type { CoreDeps } from "./deps.ts";

/** What the use cases of uploads and request files need. */
export type FilesDeps = Pick<CoreDeps, "uploads" | "files" | "clock"> &
  Partial<Pick<CoreDeps, "ids" | "maxUploadBytes">>;

/** Default of `LONGRUN_MAX_UPLOAD_BYTES` (SPEC §2): 5 GiB, the largest single S3 PUT. */
export const DEFAULT_MAX_UPLOAD_BYTES = 5 * 1024 ** 3;

export interface CreateUploadCommand {
  tenant: string;
  filename: string;
  size: number;
  /** Lower-case hex SHA-256 of the bytes, when the caller knows it. */
  sha256?: string | undefined;
}

function uploadsOrThrow(deps: FilesDeps) {
  const { uploads, files } = deps;
  if (!uploads || !files) throw new NotFoundError("upload", "(uploads are not enabled here)");
  return { uploads, files };
}

/**
 * Creates a PENDING upload and the signed PUT its bytes go to (SPEC §2 POST /v1/uploads).
 * @throws InvalidRequestError `size` above the deployment's limit.
 */
export async function createUpload(
  cmd: CreateUploadCommand,
  deps: FilesDeps,
): Promise<{ upload: UploadRecord; target: UploadTarget }> {
  const { uploads, files } = uploadsOrThrow(deps);
  const max = deps.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  if (cmd.size > max) {
    throw new InvalidRequestError(`size must be at most ${max} bytes`, "size");
  }
  if (!deps.ids?.uploadId) throw new Error("uploads need an upload id generator");
  const now = deps.clock.now();
  const upload: UploadRecord = {
    id: deps.ids.uploadId(),
    tenant: cmd.tenant,
    filename: cmd.filename,
    size: cmd.size,
    sha256: cmd.sha256 ?? null,
    status: UploadStatus.PENDING,
    createdAt: now,
    expiresAt: now + UPLOAD_LIFETIME_MS,
  };
  await uploads.create(upload);
  const target = await files.uploadTarget(
    upload,
    Math.min(upload.expiresAt, now + UPLOAD_URL_TTL_SECONDS * 1000),
  );
  return { upload, target };
}

/**
 * The upload, READY once its bytes are stored with the declared size. Readiness is checked
 * on read (a HEAD on S3, a stat embedded) and recorded by one conditional write, so a PUT
 * that just ended is seen at once, with no notification pipeline to wait for.
 */
async function refreshed(upload: UploadRecord, deps: FilesDeps): Promise<UploadRecord> {
  if (upload.status === UploadStatus.READY) return upload;
  const { uploads, files } = uploadsOrThrow(deps);
  const size = await files.uploadedSize(upload);
  if (size !== upload.size) return upload;
  return (await uploads.markReady(upload.id, deps.clock.now())) ?? upload;
}

/**
 * GET /v1/uploads/{id}: another tenant's upload, or an expired one, is not found.
 */
export async function getUpload(
  tenant: string,
  id: string,
  deps: FilesDeps,
): Promise<UploadRecord> {
  const { uploads } = uploadsOrThrow(deps);
  const upload = await uploads.get(id, deps.clock.now());
  if (!upload || upload.tenant !== tenant) throw new NotFoundError("upload", id);
  return refreshed(upload, deps);
}

/** Runs `work` over `items`, at most `limit` at once. */
async function eachLimit<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * Checks each named upload (it exists, is the tenant's, is READY) and makes the request's
 * own copy of its bytes. The copy is the check that counts: it fails when the bytes are gone
 * or have another length, so a request is never written naming a file that an expiry
 * removed meanwhile. On any failure the copies made so far are deleted.
 * @throws InvalidRequestError naming the first refused file and its upload id.
 */
export async function attachUploads(
  request: RequestRecord,
  named: Readonly<Record<string, string>>,
  deps: FilesDeps,
): Promise<Record<string, RequestFile>> {
  const entries = Object.entries(named);
  if (!deps.uploads || !deps.files) {
    throw new InvalidRequestError("uploads are not enabled on this deployment", "files");
  }
  const { files } = uploadsOrThrow(deps);
  const now = deps.clock.now();
  const out: Record<string, RequestFile> = {};
  try {
    await eachLimit(entries, 8, async ([name, uploadId]) => {
      const field = `files[${JSON.stringify(name)}]`;
      const found = await deps.uploads?.get(uploadId, now);
      if (!found || found.tenant !== request.tenant) {
        throw new InvalidRequestError(`upload ${uploadId} does not exist`, field);
      }
      const upload = await refreshed(found, deps);
      if (upload.status !== UploadStatus.READY) {
        throw new InvalidRequestError(
          `upload ${uploadId} is not READY: PUT exactly ${upload.size} bytes to its URL first`,
          field,
        );
      }
      await files.attachUpload(request.id, name, upload);
      out[name] = { size: upload.size };
    });
  } catch (error) {
    await files.deleteRequestFiles(request.id).catch(() => {});
    throw error;
  }
  // Key order as the caller wrote it, whatever order the copies finished in.
  return Object.fromEntries(entries.map(([name]) => [name, out[name] as RequestFile]));
}

/**
 * Deletes uploads past their lifetime with their bytes (embedded retention; on AWS DynamoDB
 * TTL and an S3 lifecycle rule do it). Bytes go first and the record last, so a crash in
 * between leaves a record the next run deletes. A request's own copies are not touched.
 * @returns how many uploads were deleted.
 */
export async function purgeExpiredUploads(
  deps: Pick<CoreDeps, "uploads" | "clock"> & {
    deleteBytes: (upload: { id: string }) => Promise<void>;
  },
  limit = 500,
): Promise<number> {
  const { uploads } = deps;
  if (!uploads?.findExpired || !uploads.delete) return 0;
  let deleted = 0;
  for (const id of await uploads.findExpired(deps.clock.now(), limit)) {
    await deps.deleteBytes({ id });
    if (await uploads.delete(id)) deleted++;
  }
  return deleted;
}
