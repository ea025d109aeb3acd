/**
 * {@link FileStore} on the embedded server's data directory (layout in fs-storage.ts):
 * uploads' bytes at `uploads/<id>`, a request's own files at `inputs/<request id>/<name>`.
 * A request's copy of an upload is a hard link: made in one system call whatever the size,
 * and the bytes stay for as long as any link does, so the upload's retention deleting its
 * own name leaves the request's file whole.
 */
import { copyFile, link, mkdir, readdir, rm, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { InvalidRequestError } from "../../core/errors.ts";
import type { FileStore, UploadTarget } from "../../core/ports.ts";
import type { UploadRecord } from "../../core/upload.ts";
import type { ArtifactUrlSigner } from "./artifact-urls.ts";
import { FsAttemptStorage, type FsLayout } from "./fs-storage.ts";

/** The signed-URL purpose of an upload's PUT (see ArtifactUrlSigner.signFields). */
export const UPLOAD_URL_PURPOSE = "upload-put";

/** The path of an upload's PUT route; upload-receiver.ts serves it. */
export function uploadPutPath(uploadId: string): string {
  return `/v1/uploads/${encodeURIComponent(uploadId)}/content`;
}

/** The fields an upload URL's signature covers: the upload and its exact size. */
export function uploadUrlFields(upload: Pick<UploadRecord, "id" | "size">): string[] {
  return [upload.id, String(upload.size)];
}

function code(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException).code;
}

/** Links `from` to `to`, or copies it when they are on different filesystems. */
async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (error) {
    if (code(error) !== "EXDEV") throw error;
    await copyFile(from, to);
  }
}

export class FsFileStore implements FileStore {
  constructor(
    private readonly layout: FsLayout,
    private readonly signer: ArtifactUrlSigner,
    private readonly baseUrl: () => string,
  ) {}

  async uploadTarget(upload: UploadRecord, expiresAt: number): Promise<UploadTarget> {
    const expires = Math.floor(expiresAt / 1000);
    const sig = this.signer.signFields(UPLOAD_URL_PURPOSE, uploadUrlFields(upload), expires);
    return {
      url: `${this.baseUrl()}${uploadPutPath(upload.id)}?expires=${expires}&sig=${sig}`,
      headers: { "content-length": String(upload.size) },
      expiresAt: expires * 1000,
    };
  }

  async uploadedSize(upload: UploadRecord): Promise<number | null> {
    try {
      return (await stat(this.layout.uploadFile(upload.id))).size;
    } catch (error) {
      if (code(error) === "ENOENT") return null;
      throw error;
    }
  }

  async attachUpload(requestId: string, name: string, upload: UploadRecord): Promise<void> {
    const dir = this.layout.inputDir(requestId);
    const target = join(dir, name);
    await mkdir(dir, { recursive: true });
    try {
      await linkOrCopy(this.layout.uploadFile(upload.id), target);
    } catch (error) {
      if (code(error) !== "ENOENT") throw error;
      throw new InvalidRequestError(
        `upload ${upload.id} does not exist`,
        `files[${JSON.stringify(name)}]`,
      );
    }
    // The link is what the request keeps: check it, not the name it was made from.
    if ((await stat(target)).size !== upload.size) {
      await unlink(target);
      throw new InvalidRequestError(
        `upload ${upload.id} is not READY: its bytes are not ${upload.size} long`,
        `files[${JSON.stringify(name)}]`,
      );
    }
  }

  async copyRequestFiles(from: string, to: string, names: readonly string[]): Promise<void> {
    const dir = this.layout.inputDir(to);
    await mkdir(dir, { recursive: true });
    for (const name of names) {
      await linkOrCopy(join(this.layout.inputDir(from), name), join(dir, name));
    }
  }

  async deleteRequestFiles(requestId: string): Promise<void> {
    await rm(this.layout.inputDir(requestId), { recursive: true, force: true });
  }

  async copyCheckpoint(from: string, to: string): Promise<boolean> {
    const current = await new FsAttemptStorage(this.layout, from).currentCheckpoint();
    if (current === null) return false;
    try {
      // A save of `to` copies the folder into a version of its own and publishes it.
      await new FsAttemptStorage(this.layout, to).saveCheckpoint(current);
    } catch (error) {
      if (code(error) === "ENOENT") return false;
      throw error;
    }
    return true;
  }

  async deleteCheckpoint(requestId: string): Promise<void> {
    await rm(this.layout.checkpointRoot(requestId), { recursive: true, force: true });
  }

  /** Deletes temp files of PUTs that a crash interrupted, older than `before` (epoch ms). */
  async deleteLeftoverTemps(before: number): Promise<void> {
    const dir = this.layout.uploadsDir();
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names) {
      if (!name.startsWith(".tmp-")) continue;
      const info = await stat(join(dir, name)).catch(() => null);
      if (info && info.mtimeMs < before) await rm(join(dir, name), { force: true });
    }
  }

  /** Deletes an upload's bytes (retention); a request's links keep theirs. */
  async deleteUpload(uploadId: string): Promise<void> {
    await rm(this.layout.uploadFile(uploadId), { force: true });
  }
}
