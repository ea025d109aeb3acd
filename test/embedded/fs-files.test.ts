/**
 * Files on the embedded backend through the use cases (real SQLite, real files, fake
 * clock): a submit's own copies outlive the upload's expiry, and an upload whose bytes an
 * expiry removed just before the submit's copy is refused without writing anything.
 */
import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ArtifactUrlSigner } from "../../functions/adapters/embedded/artifact-urls.ts";
import { FsFileStore } from "../../functions/adapters/embedded/fs-files.ts";
import { FsAttemptStorage, FsLayout } from "../../functions/adapters/embedded/fs-storage.ts";
import { SqliteUploadStore } from "../../functions/adapters/embedded/sqlite-uploads.ts";
import { newUploadId } from "../../functions/adapters/ids.ts";
import { InvalidRequestError } from "../../functions/core/errors.ts";
import { UPLOAD_LIFETIME_MS } from "../../functions/core/upload.ts";
import { submitRequest } from "../../functions/core/usecases/submit.ts";
import { createUpload, purgeExpiredUploads } from "../../functions/core/usecases/uploads.ts";
import { makeDeps, type TestHarness } from "../helpers/fakes.ts";

let dir: string;
let h: TestHarness;
let uploads: SqliteUploadStore;
let files: FsFileStore;
let layout: FsLayout;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "longrun-files-"));
  layout = new FsLayout(dir);
  h = makeDeps({ gpu: {} });
  uploads = new SqliteUploadStore(":memory:");
  files = new FsFileStore(
    layout,
    new ArtifactUrlSigner(randomBytes(32), () => "http://x"),
    () => "http://x",
  );
  h.deps.uploads = uploads;
  h.deps.files = files;
  h.deps.ids = { requestId: () => h.ids.requestId(), uploadId: newUploadId };
});
afterEach(() => {
  h.close();
  uploads.close();
  rmSync(dir, { recursive: true, force: true });
});

/** An upload of `bytes` whose PUT completed (its bytes in place, read-only). */
async function readyUpload(bytes: Buffer, tenant = "alice") {
  const { upload } = await createUpload({ tenant, filename: "d", size: bytes.length }, h.deps);
  mkdirSync(layout.uploadsDir(), { recursive: true });
  writeFileSync(layout.uploadFile(upload.id), bytes, { mode: 0o444 });
  return upload;
}

async function submitWith(filesByName: Record<string, string>) {
  return submitRequest(
    { tenant: "alice", queue: "gpu", body: { input: {}, files: filesByName }, rawBody: {} },
    h.deps,
  );
}

describe("request files on the embedded backend", () => {
  it("keeps the request's copy whole after the upload expires and is purged", async () => {
    const bytes = randomBytes(10_000);
    const upload = await readyUpload(bytes);
    const outcome = await submitWith({ "train.bin": upload.id });
    const id = outcome.request.id;
    expect(outcome.request.files).toEqual({ "train.bin": { size: bytes.length } });

    h.clock.advance(UPLOAD_LIFETIME_MS + 1);
    const purged = await purgeExpiredUploads({
      ...h.deps,
      deleteBytes: (u) => files.deleteUpload(u.id),
    });
    expect(purged).toBe(1);
    expect(existsSync(layout.uploadFile(upload.id))).toBe(false);
    expect(await uploads.get(upload.id, 0)).toBeNull();
    // The request's own copy, and what a job of it is given.
    expect(readFileSync(join(layout.inputDir(id), "train.bin")).equals(bytes)).toBe(true);
    const work = join(dir, "work-input");
    mkdirSync(work);
    await new FsAttemptStorage(layout, id).restoreInputs(work);
    expect(readFileSync(join(work, "train.bin")).equals(bytes)).toBe(true);
  });

  it("refuses a submit whose upload's bytes were removed after it turned READY, and writes nothing", async () => {
    const a = await readyUpload(randomBytes(100));
    const b = await readyUpload(randomBytes(200));
    // READY is recorded by a read; then an expiry removes b's bytes before the submit's copy.
    await uploads.markReady(b.id, h.clock.now());
    rmSync(layout.uploadFile(b.id));
    const before = await h.store.queueCounts("gpu");
    const error = await submitWith({ "a.bin": a.id, "b.bin": b.id }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidRequestError);
    expect((error as Error).message).toContain(b.id);
    expect(await h.store.queueCounts("gpu")).toEqual(before);
    // The copy of a.bin made before the refusal is gone again.
    expect(existsSync(join(dir, "inputs")) ? readdirSync(join(dir, "inputs")) : []).toEqual([]);
  });

  it("refuses another tenant's upload as unknown, naming it", async () => {
    const bobs = await readyUpload(randomBytes(10), "bob");
    await expect(submitWith({ "x.bin": bobs.id })).rejects.toThrow(
      `upload ${bobs.id} does not exist`,
    );
  });
});
