/**
 * The upload routes and submit `files` over the API harness, with the embedded adapters for
 * uploads (SQLite, files in a temp folder): answers' shapes, tenancy, limits.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ArtifactUrlSigner } from "../../../functions/adapters/embedded/artifact-urls.ts";
import { FsFileStore } from "../../../functions/adapters/embedded/fs-files.ts";
import { FsLayout } from "../../../functions/adapters/embedded/fs-storage.ts";
import { SqliteUploadStore } from "../../../functions/adapters/embedded/sqlite-uploads.ts";
import { newUploadId } from "../../../functions/adapters/ids.ts";
import {
  ProblemSchema,
  RequestSchema,
  UploadCreatedSchema,
  UploadSchema,
} from "../../../functions/http/schemas.ts";
import { T0 } from "../../helpers/fakes.ts";
import { type ApiHarness, makeApi } from "./api-harness.ts";

let h: ApiHarness;
let dir: string;
let uploads: SqliteUploadStore;
let layout: FsLayout;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "longrun-upload-routes-"));
  layout = new FsLayout(dir);
  h = makeApi();
  uploads = new SqliteUploadStore(":memory:");
  const signer = new ArtifactUrlSigner(randomBytes(32), () => "http://srv");
  h.deps.uploads = uploads;
  h.deps.files = new FsFileStore(layout, signer, () => "http://srv");
  h.deps.ids = { requestId: () => h.ids.requestId(), uploadId: newUploadId };
  h.deps.maxUploadBytes = 1000;
});
afterEach(() => {
  h.close();
  uploads.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("upload routes", () => {
  it("creates a PENDING upload: 201 with a signed PUT URL and its headers", async () => {
    const r = await h.call("POST", "/v1/uploads", { body: { filename: "train.jsonl", size: 12 } });
    expect(r.status).toBe(201);
    const created = UploadCreatedSchema.parse(r.json);
    expect(r.headers.location).toBe(`/v1/uploads/${created.id}`);
    expect(created.url).toMatch(
      new RegExp(`^http://srv/v1/uploads/${created.id}/content\\?expires=\\d+&sig=`),
    );
    expect(created.headers).toEqual({ "content-length": "12" });
    expect(Date.parse(created.expiresAt) - T0).toBeGreaterThanOrEqual(15 * 60_000);

    const got = await h.call("GET", `/v1/uploads/${created.id}`);
    expect(UploadSchema.parse(got.json)).toEqual({
      id: created.id,
      filename: "train.jsonl",
      size: 12,
      status: "PENDING",
      createdAt: new Date(T0).toISOString(),
      expiresAt: new Date(T0 + 86_400_000).toISOString(),
    });
  });

  it("answers READY once the bytes are in place, 404 to another tenant, and 404 once expired", async () => {
    const r = await h.call("POST", "/v1/uploads", { body: { filename: "f", size: 3 } });
    mkdirSync(layout.uploadsDir(), { recursive: true });
    writeFileSync(layout.uploadFile(r.json.id), "abc");
    expect((await h.call("GET", `/v1/uploads/${r.json.id}`)).json.status).toBe("READY");
    expect((await h.call("GET", `/v1/uploads/${r.json.id}`, { token: "tok-bob" })).status).toBe(
      404,
    );
    h.clock.advance(86_400_000);
    expect((await h.call("GET", `/v1/uploads/${r.json.id}`)).status).toBe(404);
  });

  it("refuses a size above LONGRUN_MAX_UPLOAD_BYTES, and malformed bodies, with 400", async () => {
    for (const body of [
      { filename: "f", size: 1001 },
      { filename: "", size: 1 },
      { filename: "f", size: -1 },
      { filename: "f", size: 1.5 },
      { filename: "f", size: 1, sha256: "XYZ" },
      { filename: "f", size: 1, other: true },
      { filename: "a\u0007b", size: 1 },
    ]) {
      const r = await h.call("POST", "/v1/uploads", { body });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(ProblemSchema.parse(r.json).code).toBe("invalid_request");
    }
  });

  it("submits with files: the Request lists them with their sizes", async () => {
    const r = await h.call("POST", "/v1/uploads", { body: { filename: "f", size: 3 } });
    mkdirSync(layout.uploadsDir(), { recursive: true });
    writeFileSync(layout.uploadFile(r.json.id), "abc");
    const sub = await h.call("POST", "/v1/queues/gpu/requests", {
      body: { input: {}, files: { "a.csv": r.json.id } },
    });
    expect(sub.status).toBe(202);
    expect(RequestSchema.parse(sub.json).files).toEqual({ "a.csv": { size: 3 } });
  });

  it("refuses bad file names, too many files and unknown uploads with 400 naming them", async () => {
    const id = "upl_01JD3ZZZZZZZZZZZZZZZZZZZZZ";
    const many = Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`f${i}`, id]));
    for (const files of [{ "..": id }, { "a/b": id }, { "a.csv": "x" }, many]) {
      const raw = JSON.stringify({ input: {}, files });
      const r = await h.call("POST", "/v1/queues/gpu/requests", { rawBody: raw });
      expect(r.status, raw.slice(0, 80)).toBe(400);
    }
    const proto = await h.call("POST", "/v1/queues/gpu/requests", {
      rawBody: `{"input":{},"files":{"__proto__":"${id}"}}`,
    });
    expect(proto.status).toBe(400);
    const unknown = await h.call("POST", "/v1/queues/gpu/requests", {
      body: { input: {}, files: { "a.csv": id } },
    });
    expect(unknown.status).toBe(400);
    expect(unknown.json.detail).toContain(id);
    expect(unknown.json.errors[0].path).toBe('files["a.csv"]');
  });
});
