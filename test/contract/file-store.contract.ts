/**
 * The FileStore contract: one suite run on the filesystem adapter and on S3 (moto). It
 * speaks the port, plus fixture hooks that play the caller's PUT and the runner's
 * checkpoint saves through the backend's real attempt storage. Ids are unique per test.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monotonicFactory } from "ulidx";
import { afterAll, describe, expect, it } from "vitest";
import { InvalidRequestError } from "../../functions/core/errors.ts";
import type { FileStore } from "../../functions/core/ports.ts";
import { UPLOAD_LIFETIME_MS, type UploadRecord } from "../../functions/core/upload.ts";

export interface FileStoreFixture {
  files: FileStore;
  /** Stores `bytes` as the upload's bytes, as the caller's PUT would. */
  putUploadBytes(upload: UploadRecord, bytes: Buffer): Promise<void>;
  /** A request's file `name` as a job would be given it; null when there is none. */
  readRequestFile(requestId: string, name: string): Promise<Buffer | null>;
  /** Saves `dir` as the request's checkpoint, as the runner does. */
  saveCheckpoint(requestId: string, dir: string): Promise<void>;
  /** Restores the request's checkpoint into `dir`, as the runner does. */
  restoreCheckpoint(requestId: string, dir: string): Promise<void>;
  cleanup(): Promise<void>;
}

const nextUlid = monotonicFactory();
const requestId = () => `req_${nextUlid()}`;

function upload(size: number): UploadRecord {
  const now = Date.now();
  return {
    id: `upl_${nextUlid()}`,
    tenant: "tenant/one",
    filename: "d.bin",
    size,
    sha256: null,
    status: "READY",
    createdAt: now,
    expiresAt: now + UPLOAD_LIFETIME_MS,
  };
}

export function describeFileStoreContract(name: string, open: () => Promise<FileStoreFixture>) {
  describe(`FileStore contract: ${name}`, () => {
    const fixture = open();
    afterAll(async () => (await fixture).cleanup());

    it("reports an upload's stored size, null before its bytes arrive", async () => {
      const f = await fixture;
      const u = upload(5);
      expect(await f.files.uploadedSize(u)).toBeNull();
      await f.putUploadBytes(u, Buffer.from("hello"));
      expect(await f.files.uploadedSize(u)).toBe(5);
    });

    it("gives a request its own copy of an upload, and refuses a missing or mis-sized one", async () => {
      const f = await fixture;
      const u = upload(5);
      await f.putUploadBytes(u, Buffer.from("hello"));
      const id = requestId();
      await f.files.attachUpload(id, "a.txt", u);
      expect((await f.readRequestFile(id, "a.txt"))?.toString()).toBe("hello");

      await expect(f.files.attachUpload(id, "b.txt", upload(3))).rejects.toBeInstanceOf(
        InvalidRequestError,
      );
      const wrong = upload(6);
      await f.putUploadBytes(wrong, Buffer.from("hello"));
      await expect(f.files.attachUpload(id, "c.txt", wrong)).rejects.toBeInstanceOf(
        InvalidRequestError,
      );
      expect(await f.readRequestFile(id, "c.txt")).toBeNull();
    });

    it("copies a request's files to another, and deletes one request's without the other's", async () => {
      const f = await fixture;
      const u = upload(3);
      await f.putUploadBytes(u, Buffer.from("abc"));
      const a = requestId();
      const b = requestId();
      await f.files.attachUpload(a, "x.csv", u);
      await f.files.copyRequestFiles(a, b, ["x.csv"]);
      await f.files.deleteRequestFiles(a);
      await f.files.deleteRequestFiles(a);
      expect(await f.readRequestFile(a, "x.csv")).toBeNull();
      expect((await f.readRequestFile(b, "x.csv"))?.toString()).toBe("abc");
    });

    it("copies the last checkpoint to another request and leaves the first as it was", async () => {
      const f = await fixture;
      const from = requestId();
      const to = requestId();
      expect(await f.files.copyCheckpoint(from, to)).toBe(false);

      const dir = await mkdtemp(join(tmpdir(), "longrun-fsc-"));
      try {
        await writeFile(join(dir, "step.json"), '{"step":3}');
        await f.saveCheckpoint(from, dir);
        expect(await f.files.copyCheckpoint(from, to)).toBe(true);
        const restored = await mkdtemp(join(tmpdir(), "longrun-fsc-"));
        await f.restoreCheckpoint(to, restored);
        expect(await readFile(join(restored, "step.json"), "utf8")).toBe('{"step":3}');
        // The copy is independent: deleting it leaves the first request's checkpoint.
        await f.files.deleteCheckpoint(to);
        const again = await mkdtemp(join(tmpdir(), "longrun-fsc-"));
        await f.restoreCheckpoint(from, again);
        expect(await readFile(join(again, "step.json"), "utf8")).toBe('{"step":3}');
        const gone = await mkdtemp(join(tmpdir(), "longrun-fsc-"));
        await f.restoreCheckpoint(to, gone);
        await expect(readFile(join(gone, "step.json"), "utf8")).rejects.toThrow();
        for (const d of [restored, again, gone]) await rm(d, { recursive: true, force: true });
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
}
