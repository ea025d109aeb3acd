/**
 * Uploads and retry, black-box against a real server on both backends (SPEC §2 Uploads,
 * `files`, retry; §4 LONGRUN_INPUT_DIR): a 50 MB upload streamed to a job that echoes its
 * checksum, a PUT of the wrong length, forged URLs, another tenant's upload, and a retry
 * that resumes from the failed request's checkpoint.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BACKENDS, ROOT, TestServer } from "../helpers/server.ts";

const FILES_JOB = join(ROOT, "test/fixtures/jobs/files-job.mjs");

/** Deterministic bytes, different per seed, without holding a generator's state. */
function bytes(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32LE(x >>> 0, i - (i + 4 > size ? i + 4 - size : 0));
  }
  return out;
}

function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

describe.each(BACKENDS)("uploads and retry on the %s backend", (backend) => {
  let server: TestServer;

  beforeAll(async () => {
    server = new TestServer({
      backend,
      queues: {
        files: {
          command: [process.execPath, FILES_JOB],
          maxQueued: 50,
          maxRunning: 2,
          timeoutSeconds: 120,
          maxAttempts: 1,
          queueTtlSeconds: 600,
          cancelGraceSeconds: 2,
        },
      },
    });
    await server.start();
  }, 60_000);
  afterAll(async () => server?.dispose());

  /** POST /v1/uploads, then PUT `body` to its URL with its headers (overridable). */
  async function upload(
    body: Buffer,
    options: { size?: number; sha256?: string; token?: string } = {},
  ): Promise<{ id: string; put: Response; created: any }> {
    const created = await server.fetch("/v1/uploads", {
      body: {
        filename: "data.bin",
        size: options.size ?? body.length,
        ...(options.sha256 ? { sha256: options.sha256 } : {}),
      },
      ...(options.token ? { token: options.token } : {}),
    });
    expect(created.status).toBe(201);
    const put = await fetch(created.body.url, {
      method: "PUT",
      headers: { ...created.body.headers, "content-length": String(body.length) },
      body,
    });
    return { id: created.body.id, put, created: created.body };
  }

  it("streams a 50 MB upload to the job, whose result echoes its checksum", async () => {
    const data = bytes(50 * 1024 * 1024, 7);
    const digest = sha256(data);
    const { id, put, created } = await upload(data, { sha256: digest });
    expect(created.method).toBe("PUT");
    expect(Date.parse(created.expiresAt) - Date.now()).toBeGreaterThan(15 * 60_000);
    expect(put.status).toBe(200);
    const status = await server.fetch(`/v1/uploads/${id}`);
    expect(status.body).toMatchObject({ id, size: data.length, status: "READY" });

    const sub = await server.submit("files", { input: {}, files: { "train.bin": id } });
    expect(sub.status).toBe(202);
    expect(sub.body.files).toEqual({ "train.bin": { size: data.length } });
    const done = await server.waitForStatus(sub.body.id, ["SUCCEEDED", "FAILED"], 90_000);
    expect(done.status).toBe("SUCCEEDED");
    const result = await server.fetch(`/v1/requests/${sub.body.id}/result`);
    expect(result.body.output.files["train.bin"]).toMatchObject({
      size: data.length,
      sha256: digest,
    });
    // Laid out read-only.
    expect(result.body.output.files["train.bin"].mode).toBe("444");
  }, 180_000);

  it("gives a job without files an empty LONGRUN_INPUT_DIR", async () => {
    const sub = await server.submit("files", { input: {} });
    const done = await server.waitForStatus(sub.body.id, ["SUCCEEDED", "FAILED"], 60_000);
    expect(done.status).toBe("SUCCEEDED");
    expect(done.files).toEqual({});
    const result = await server.fetch(`/v1/requests/${sub.body.id}/result`);
    expect(result.body.output.files).toEqual({});
  }, 90_000);

  it("keeps an upload PENDING after a PUT of the wrong length, and a submit naming it gets 400", async () => {
    const data = bytes(1000, 3);
    const { id, put } = await upload(data.subarray(0, 999), { size: 1000 });
    // Embedded refuses the PUT; S3 would refuse its signature (moto does not check it), and
    // either way the upload never turns READY.
    if (backend === "embedded") expect(put.status).toBe(400);
    expect((await server.fetch(`/v1/uploads/${id}`)).body.status).toBe("PENDING");
    const sub = await server.submit("files", { input: {}, files: { "a.bin": id } });
    expect(sub.status).toBe(400);
    expect(sub.body.code).toBe("invalid_request");
    expect(sub.body.detail).toContain(id);
    expect(sub.body.errors[0].path).toBe('files["a.bin"]');
  }, 60_000);

  it("answers 400 naming another tenant's upload, and 404 to its GET", async () => {
    const { id, put } = await upload(bytes(10, 5));
    expect(put.status).toBe(200);
    const sub = await server.submit("files", { input: {}, files: { "x.bin": id } }, {}, "t-bob");
    expect(sub.status).toBe(400);
    expect(sub.body.detail).toContain(id);
    expect((await server.fetch(`/v1/uploads/${id}`, { token: "t-bob" })).status).toBe(404);
  }, 60_000);

  it.runIf(backend === "embedded")(
    "refuses a forged or altered upload URL with 403 and stores nothing",
    async () => {
      const created = await server.fetch("/v1/uploads", { body: { filename: "f", size: 4 } });
      const url = new URL(created.body.url);
      const forged = new URL(url);
      forged.searchParams.set("sig", "A".repeat(43));
      const later = new URL(url);
      later.searchParams.set("expires", String(Number(url.searchParams.get("expires")) + 3600));
      const past = new URL(url);
      past.searchParams.set("expires", "1000");
      for (const u of [forged, later, past]) {
        const r = await fetch(u, { method: "PUT", body: "abcd" });
        expect(r.status).toBe(403);
      }
      expect((await server.fetch(`/v1/uploads/${created.body.id}`)).body.status).toBe("PENDING");
    },
  );

  it("retries a FAILED request from its checkpoint: the new request resumes where it stopped", async () => {
    const first = await server.submit("files", {
      input: { steps: 5, failAt: 3 },
      metadata: { run: "r1" },
      priority: 4,
    });
    expect(first.status).toBe(202);
    const failed = await server.waitForStatus(first.body.id, ["FAILED", "SUCCEEDED"], 60_000);
    expect(failed.status).toBe("FAILED");

    const retry = await server.fetch(`/v1/requests/${first.body.id}/retry`, { body: {} });
    expect(retry.status).toBe(202);
    expect(retry.body).toMatchObject({
      retryOf: first.body.id,
      input: { steps: 5, failAt: 3 },
      metadata: { run: "r1" },
      priority: 4,
    });
    const done = await server.waitForStatus(retry.body.id, ["SUCCEEDED", "FAILED"], 60_000);
    expect(done.status).toBe("SUCCEEDED");
    const result = await server.fetch(`/v1/requests/${retry.body.id}/result`);
    expect(result.body.output).toMatchObject({ resumedFrom: 3, steps: 5 });
    // The old request is as it was.
    expect((await server.fetch(`/v1/requests/${first.body.id}`)).body.status).toBe("FAILED");

    // fromCheckpoint false starts clean, and so fails at step 3 again.
    const clean = await server.fetch(`/v1/requests/${first.body.id}/retry`, {
      body: { fromCheckpoint: false },
    });
    expect(clean.status).toBe(202);
    const again = await server.waitForStatus(clean.body.id, ["SUCCEEDED", "FAILED"], 60_000);
    expect(again.status).toBe("FAILED");
  }, 150_000);

  it("carries the failed request's files, its own copies, into the retry", async () => {
    const data = bytes(4096, 11);
    const { id } = await upload(data);
    const first = await server.submit("files", {
      input: { steps: 2, failAt: 1 },
      files: { "d.bin": id },
    });
    const failed = await server.waitForStatus(first.body.id, ["FAILED", "SUCCEEDED"], 60_000);
    expect(failed.status).toBe("FAILED");
    const retry = await server.fetch(`/v1/requests/${first.body.id}/retry`, { body: {} });
    expect(retry.status).toBe(202);
    expect(retry.body.files).toEqual({ "d.bin": { size: 4096 } });
    const done = await server.waitForStatus(retry.body.id, ["SUCCEEDED", "FAILED"], 60_000);
    expect(done.status).toBe("SUCCEEDED");
    const result = await server.fetch(`/v1/requests/${retry.body.id}/result`);
    expect(result.body.output.files["d.bin"].sha256).toBe(sha256(data));
  }, 120_000);
});
