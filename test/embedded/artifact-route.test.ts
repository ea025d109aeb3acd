/**
 * The embedded server's artifact download route (functions/local/node-server.ts) on a real
 * HTTP server over a real outputs folder: links a job leaves in its outputs never reach a
 * file elsewhere, and what cannot be opened is a 404, not a crash.
 */
import { link, mkdir, symlink, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ArtifactUrlSigner } from "../../functions/adapters/embedded/artifact-urls.ts";
import { FsLayout, FsResultStore } from "../../functions/adapters/embedded/fs-storage.ts";
import { createRequestListener } from "../../functions/local/node-server.ts";
import { removeDir, tempDir } from "../runner/helpers.ts";

let dataDir: string;
let server: Server;
let baseUrl = "";
let results: FsResultStore;
let layout: FsLayout;
const id = "req_01HZZZZZZZZZZZZZZZZZZZZZZZ";
const secret = "the server's secret";

beforeEach(async () => {
  dataDir = await tempDir("artifact-route");
  layout = new FsLayout(dataDir);
  const signer = new ArtifactUrlSigner(Buffer.alloc(32, 7), () => baseUrl);
  results = new FsResultStore(layout, (rid, name) => signer.urlFor(rid, name));
  server = createServer(
    createRequestListener({
      handle: async () => ({ status: 200, headers: {}, body: "api" }),
      maxBodyBytes: 1024,
      artifacts: { signer, open: (rid, name) => results.openArtifact(rid, name) },
      log: () => {},
    }),
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  await mkdir(layout.outputDir(id), { recursive: true });
  await writeFile(join(dataDir, "secret.key"), secret);
  await writeFile(join(layout.outputDir(id), "ok.txt"), "fine");
});
afterEach(async () => {
  await new Promise<void>((r) => server.close(() => r()));
  await removeDir(dataDir);
});

/** A signed URL for `name`, whether or not the listing offers it. */
function urlOf(name: string): string {
  const signer = new ArtifactUrlSigner(Buffer.alloc(32, 7), () => baseUrl);
  return signer.urlFor(id, name);
}

describe("artifact route", () => {
  it("serves an output and refuses a symlink to a file outside the outputs folder", async () => {
    await symlink(join(dataDir, "secret.key"), join(layout.outputDir(id), "leak.txt"));
    await mkdir(join(layout.outputDir(id), "sub"));
    // A link to a folder outside, then a real file name under it.
    await symlink(dataDir, join(layout.outputDir(id), "sub", "up"));

    const ok = await fetch(urlOf("ok.txt"));
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe("fine");
    for (const name of ["leak.txt", "sub/up/secret.key"]) {
      const res = await fetch(urlOf(name));
      const body = await res.text();
      expect(res.status, name).toBe(404);
      expect(body).not.toContain(secret);
    }
    const listed = (await results.getResult(id)).artifacts.map((a) => a.name);
    expect(listed).toEqual(["ok.txt"]);
  });

  it("neither lists nor serves a file hard-linked into the outputs", async () => {
    await link(join(dataDir, "secret.key"), join(layout.outputDir(id), "key.bin"));

    const res = await fetch(urlOf("key.bin"));
    expect(res.status).toBe(404);
    expect(await res.text()).not.toContain(secret);
    expect((await results.getResult(id)).artifacts.map((a) => a.name)).toEqual(["ok.txt"]);
  });

  it("answers 404 for a file removed before the download and keeps serving", async () => {
    const url = urlOf("gone.txt");
    await writeFile(join(layout.outputDir(id), "gone.txt"), "soon gone");
    await removeDir(join(layout.outputDir(id), "gone.txt"));

    expect((await fetch(url)).status).toBe(404);
    expect((await fetch(urlOf("ok.txt"))).status).toBe(200);
  });
});
