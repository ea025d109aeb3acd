/**
 * The embedded upload PUT route on a real node:http server, real files and a fake clock:
 * what it accepts, what it refuses (expired, forged, wrong length, wrong bytes) and that a
 * refusal leaves nothing behind.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ArtifactUrlSigner } from "../../functions/adapters/embedded/artifact-urls.ts";
import { FsFileStore } from "../../functions/adapters/embedded/fs-files.ts";
import { FsLayout } from "../../functions/adapters/embedded/fs-storage.ts";
import { SqliteUploadStore } from "../../functions/adapters/embedded/sqlite-uploads.ts";
import {
  UPLOAD_PUT_ROUTE,
  UploadReceiver,
} from "../../functions/adapters/embedded/upload-receiver.ts";
import { newUploadId } from "../../functions/adapters/ids.ts";
import { createUpload, getUpload } from "../../functions/core/usecases/uploads.ts";
import { FakeClock } from "../helpers/fakes.ts";

let dir: string;
let server: Server;
let base: string;
let clock: FakeClock;
let uploads: SqliteUploadStore;
let deps: Parameters<typeof createUpload>[1];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "longrun-receiver-"));
  clock = new FakeClock(Date.now());
  const layout = new FsLayout(dir);
  const signer = new ArtifactUrlSigner(
    randomBytes(32),
    () => base,
    () => clock.now(),
  );
  uploads = new SqliteUploadStore(":memory:");
  const receiver = new UploadReceiver({ layout, uploads, signer, clock });
  deps = {
    uploads,
    files: new FsFileStore(layout, signer, () => base),
    clock,
    ids: { requestId: () => "req_x", uploadId: newUploadId },
  };
  server = createServer((req, res) => {
    const url = new URL(`http://localhost${req.url}`);
    const match = url.pathname.match(UPLOAD_PUT_ROUTE);
    if (req.method === "PUT" && match) void receiver.handle(match, url, req, res);
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(async () => {
  await new Promise((r) => server.close(r));
  uploads.close();
  rmSync(dir, { recursive: true, force: true });
});

/** PUTs `body` with node:http; `chunked` leaves out Content-Length. */
function put(
  url: string,
  body: Buffer,
  options: { chunked?: boolean; length?: number } = {},
): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (options.chunked) headers["transfer-encoding"] = "chunked";
    else headers["content-length"] = String(options.length ?? body.length);
    const req = request(url, { method: "PUT", headers }, (res) => {
      let text = "";
      res.on("data", (c: Buffer) => {
        text += c.toString();
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : null }),
      );
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** What the uploads folder holds, temp files included. */
function stored(): string[] {
  try {
    return readdirSync(join(dir, "uploads"));
  } catch {
    return [];
  }
}

describe("embedded upload PUT", () => {
  it("stores exactly the declared bytes, read-only, and the upload turns READY", async () => {
    const data = randomBytes(100_000);
    const sha256 = createHash("sha256").update(data).digest("hex");
    const { upload, target } = await createUpload(
      { tenant: "t", filename: "d", size: data.length, sha256 },
      deps,
    );
    expect(target.headers).toEqual({ "content-length": String(data.length) });
    const r = await put(target.url, data);
    expect(r.status).toBe(200);
    expect(stored()).toEqual([upload.id]);
    expect(readFileSync(join(dir, "uploads", upload.id)).equals(data)).toBe(true);
    expect(statSync(join(dir, "uploads", upload.id)).mode & 0o777).toBe(0o444);
    expect((await getUpload("t", upload.id, deps)).status).toBe("READY");
  });

  it("refuses a URL past its expiry with 403, and keeps nothing", async () => {
    const { upload, target } = await createUpload({ tenant: "t", filename: "d", size: 4 }, deps);
    const expires = Number(new URL(target.url).searchParams.get("expires"));
    clock.set(expires * 1000 + 1000);
    const r = await put(target.url, Buffer.from("abcd"));
    expect(r.status).toBe(403);
    expect(r.body.code).toBe("forbidden");
    expect(stored()).toEqual([]);
    clock.set(expires * 1000 - 1000);
    expect((await getUpload("t", upload.id, deps)).status).toBe("PENDING");
  });

  it("refuses a forged signature, and a URL of one upload used for another", async () => {
    const a = await createUpload({ tenant: "t", filename: "a", size: 4 }, deps);
    const b = await createUpload({ tenant: "t", filename: "b", size: 4 }, deps);
    const forged = new URL(a.target.url);
    forged.searchParams.set("sig", `${forged.searchParams.get("sig")?.slice(0, -2)}AA`);
    expect((await put(forged.toString(), Buffer.from("abcd"))).status).toBe(403);
    const swapped = a.target.url.replace(a.upload.id, b.upload.id);
    expect((await put(swapped, Buffer.from("abcd"))).status).toBe(403);
    expect(stored()).toEqual([]);
  });

  it("refuses a Content-Length other than the declared size before reading the body", async () => {
    const { upload, target } = await createUpload({ tenant: "t", filename: "d", size: 10 }, deps);
    const r = await put(target.url, Buffer.from("123456789"));
    expect(r.status).toBe(400);
    expect(r.body.detail).toContain("10");
    expect(stored()).toEqual([]);
    expect((await getUpload("t", upload.id, deps)).status).toBe("PENDING");
  });

  it("refuses a chunked body shorter than the declared size, and removes its temp file", async () => {
    const { upload, target } = await createUpload({ tenant: "t", filename: "d", size: 10 }, deps);
    const r = await put(target.url, Buffer.from("12345"), { chunked: true });
    expect(r.status).toBe(400);
    expect(r.body.detail).toContain("5 bytes arrived");
    expect(stored().filter((n) => n !== "")).toEqual([]);
    expect((await getUpload("t", upload.id, deps)).status).toBe("PENDING");
  });

  it("cuts off a chunked body longer than the declared size, and keeps nothing", async () => {
    const { upload, target } = await createUpload({ tenant: "t", filename: "d", size: 10 }, deps);
    const outcome = await put(target.url, randomBytes(1_000_000), { chunked: true }).then(
      (r) => r.status,
      () => "connection closed",
    );
    expect([400, "connection closed"]).toContain(outcome);
    expect(stored()).toEqual([]);
    expect((await getUpload("t", upload.id, deps)).status).toBe("PENDING");
  });

  it("refuses bytes whose SHA-256 is not the declared one", async () => {
    const { upload, target } = await createUpload(
      { tenant: "t", filename: "d", size: 4, sha256: "0".repeat(64) },
      deps,
    );
    const r = await put(target.url, Buffer.from("abcd"));
    expect(r.status).toBe(400);
    expect(r.body.detail).toContain("sha256");
    expect(stored()).toEqual([]);
    expect((await getUpload("t", upload.id, deps)).status).toBe("PENDING");
  });

  it("refuses an upload above the deployment's limit when it is created", async () => {
    await expect(
      createUpload({ tenant: "t", filename: "d", size: 11 }, { ...deps, maxUploadBytes: 10 }),
    ).rejects.toThrow(/at most 10 bytes/);
  });
});
