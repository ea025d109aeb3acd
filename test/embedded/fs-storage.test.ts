import {
  access,
  appendFile,
  link,
  lutimes,
  mkdir,
  readdir,
  readFile,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  FsAttemptStorage,
  FsLayout,
  FsLogStore,
  FsResultStore,
} from "../../functions/adapters/embedded/fs-storage.ts";
import { InvalidRequestError } from "../../functions/core/errors.ts";
import { removeDir, tempDir } from "../runner/helpers.ts";

let dataDir: string;
let layout: FsLayout;
let n = 0;
const newId = () => `req_fs${++n}${Date.now()}`;

beforeEach(async () => {
  dataDir = await tempDir("fs");
  layout = new FsLayout(dataDir);
});
afterEach(async () => {
  await removeDir(dataDir);
});

async function folderWith(files: Record<string, string>): Promise<string> {
  const dir = join(dataDir, `src-${++n}`);
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(dir, name, ".."), { recursive: true });
    await writeFile(join(dir, name), content);
  }
  await mkdir(dir, { recursive: true });
  return dir;
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

async function readTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) {
      const full = join(e.parentPath, e.name);
      out[full.slice(dir.length + 1)] = await readFile(full, "utf8");
    }
  }
  return out;
}

describe("FsAttemptStorage checkpoints", () => {
  it("restores nothing before the first save", async () => {
    const storage = new FsAttemptStorage(layout, newId());
    const target = await folderWith({});

    await storage.restoreCheckpoint(target);

    expect(await readTree(target)).toEqual({});
  });

  it("restores exactly the last saved folder, files removed since included", async () => {
    const storage = new FsAttemptStorage(layout, newId());
    await storage.saveCheckpoint(await folderWith({ "a.txt": "1", "old.txt": "x" }));
    await storage.saveCheckpoint(await folderWith({ "a.txt": "2", "deep/b.bin": "b" }));
    const target = await folderWith({});

    await storage.restoreCheckpoint(target);

    expect(await readTree(target)).toEqual({ "a.txt": "2", "deep/b.bin": "b" });
  });

  it("with a job user, does not copy a file hard-linked into the checkpoint", async () => {
    const storage = new FsAttemptStorage(layout, newId(), { jobUid: process.getuid?.() ?? 0 });
    const secret = join(dataDir, "artifact-url.key");
    await writeFile(secret, "key material");
    const dir = await folderWith({ "state.json": "{}" });
    await link(secret, join(dir, "stolen.key"));

    await storage.saveCheckpoint(dir);
    const target = await folderWith({});
    await storage.restoreCheckpoint(target);

    expect(await readTree(target)).toEqual({ "state.json": "{}" });
  });

  it("keeps one version, and ignores then removes what a crash mid-save left behind", async () => {
    const id = newId();
    const storage = new FsAttemptStorage(layout, id);
    await storage.saveCheckpoint(await folderWith({ "a.txt": "good" }));
    const root = layout.checkpointRoot(id);
    // A crash after copying a new version but before swapping the link leaves these.
    await mkdir(join(root, "v-crashed"));
    await writeFile(join(root, "v-crashed", "a.txt"), "half");
    await symlink("v-crashed", join(root, "link-crashed"));
    await mkdir(join(root, "v-in-flight"));
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(join(root, "v-crashed"), hourAgo, hourAgo);
    await lutimes(join(root, "link-crashed"), hourAgo, hourAgo);
    const target = await folderWith({});

    await storage.restoreCheckpoint(target);
    await storage.saveCheckpoint(await folderWith({ "a.txt": "next" }));

    expect(await readTree(target)).toEqual({ "a.txt": "good" });
    // The old leftovers are gone; a fresh one may be another save in flight and stays.
    const entries = (await readdir(root)).filter((e) => e !== "v-in-flight").sort();
    expect(entries).toHaveLength(2);
    expect(entries[0]).toBe("current");
    expect(entries[1]).toMatch(/^v-[0-9a-f]+$/);
    expect(await readdir(root)).toContain("v-in-flight");
  });

  it("serializes concurrent saves so the last one called wins", async () => {
    const storage = new FsAttemptStorage(layout, newId());
    const dirs = await Promise.all([1, 2, 3, 4].map((i) => folderWith({ "n.txt": String(i) })));

    await Promise.all(dirs.map((d) => storage.saveCheckpoint(d)));
    const target = await folderWith({});
    await storage.restoreCheckpoint(target);

    expect(await readTree(target)).toEqual({ "n.txt": "4" });
  });

  it("restores nothing when `current` names a version that is gone", async () => {
    const id = newId();
    const root = layout.checkpointRoot(id);
    await mkdir(root, { recursive: true });
    await symlink("v-gone", join(root, "current"));
    const target = await folderWith({});

    await new FsAttemptStorage(layout, id).restoreCheckpoint(target);

    expect(await readTree(target)).toEqual({});
  });

  it("refuses a request id that could leave its folder", () => {
    expect(() => new FsAttemptStorage(layout, "../etc")).toThrow(/refusing request id/);
  });
});

describe("FsAttemptStorage outputs", () => {
  it("moves the output folder into place in a new data directory", async () => {
    const id = newId();
    const source = await folderWith({ "result.json": "1", "sub/x.txt": "ab" });

    await new FsAttemptStorage(layout, id).saveOutputs(source);

    expect(await readTree(layout.outputDir(id))).toEqual({ "result.json": "1", "sub/x.txt": "ab" });
    expect(await exists(source)).toBe(false);
  });

  it("replaces outputs an earlier attempt left, leaving no folder aside", async () => {
    const id = newId();
    const storage = new FsAttemptStorage(layout, id);
    await storage.saveOutputs(await folderWith({ "result.json": "1", "old.bin": "x" }));

    await storage.saveOutputs(await folderWith({ "result.json": "2" }));

    expect(await readTree(layout.outputDir(id))).toEqual({ "result.json": "2" });
    expect(await readdir(join(dataDir, "outputs"))).toEqual([id]);
  });

  it("leaves an empty output folder in place and removes outputs an earlier attempt left", async () => {
    // Arrange: outputs saved by an attempt whose request did not end SUCCEEDED.
    const id = newId();
    const storage = new FsAttemptStorage(layout, id);
    await storage.saveOutputs(await folderWith({ "result.json": "1" }));
    const empty = await folderWith({});

    // Act: an attempt with no outputs succeeds.
    await storage.saveOutputs(empty);

    // Assert: its folder stays for reuse, and no result reads as this attempt's.
    expect(await exists(empty)).toBe(true);
    expect(await exists(layout.outputDir(id))).toBe(false);
    expect(await new FsResultStore(dataDir, () => "").getResult(id)).toEqual({
      output: null,
      artifacts: [],
    });
  });

  it("fails when the output folder is missing, leaving earlier outputs alone", async () => {
    const id = newId();
    const storage = new FsAttemptStorage(layout, id);
    await storage.saveOutputs(await folderWith({ "result.json": "1" }));

    await expect(storage.saveOutputs(join(dataDir, "no-such-folder"))).rejects.toMatchObject({
      code: "ENOENT",
    });
    expect(await readTree(layout.outputDir(id))).toEqual({ "result.json": "1" });
  });
});

describe("FsResultStore", () => {
  const urlFor = (id: string, name: string) => `http://x/v1/requests/${id}/artifacts/${name}`;

  it("returns result.json as output and every other file as an artifact named by its path", async () => {
    const id = newId();
    const storage = new FsAttemptStorage(layout, id);
    await storage.saveOutputs(
      await folderWith({ "result.json": '{"loss": 0.5}', "model.npz": "12345", "sub/x.txt": "ab" }),
    );
    const results = new FsResultStore(layout, urlFor);

    const result = await results.getResult(id);

    expect(result).toEqual({
      output: { loss: 0.5 },
      artifacts: [
        { name: "model.npz", size: 5, url: urlFor(id, "model.npz") },
        { name: "sub/x.txt", size: 2, url: urlFor(id, "sub/x.txt") },
      ],
    });
  });

  it("gives null output without result.json, and nothing for an unknown request", async () => {
    const id = newId();
    await new FsAttemptStorage(layout, id).saveOutputs(await folderWith({ "a.bin": "z" }));
    const results = new FsResultStore(dataDir, urlFor);

    expect((await results.getResult(id)).output).toBeNull();
    expect(await results.getResult(newId())).toEqual({ output: null, artifacts: [] });
  });

  it("opens artifacts and refuses names that escape the outputs folder", async () => {
    const id = newId();
    await new FsAttemptStorage(layout, id).saveOutputs(
      await folderWith({ "result.json": "1", "sub/x.txt": "ab" }),
    );
    const results = new FsResultStore(layout, urlFor);

    const opened = await results.openArtifact(id, "sub/x.txt");
    expect(opened?.size).toBe(2);
    expect((await opened?.handle.readFile())?.toString()).toBe("ab");
    await opened?.handle.close();
    for (const bad of ["../x", "sub/../../x", "/etc/passwd", "sub", "result.json", "nope", ""]) {
      expect(await results.openArtifact(id, bad)).toBeNull();
    }
  });
});

describe("FsLogStore", () => {
  it("returns lines oldest first in pages whose cursors visit every line once", async () => {
    const id = newId();
    const logs = new FsLogStore(layout);
    await logs.append(id, ["--- attempt 1 ---", "one", "twö ✓", "three"]);
    await logs.append(id, ["four"]);

    const page1 = await logs.read(id, undefined, 2);
    const page2 = await logs.read(id, page1.nextCursor, 2);
    const page3 = await logs.read(id, page2.nextCursor, 2);
    const page4 = await logs.read(id, page3.nextCursor, 2);

    expect(page1.lines).toEqual(["--- attempt 1 ---", "one"]);
    expect(page2.lines).toEqual(["twö ✓", "three"]);
    expect(page3.lines).toEqual(["four"]);
    expect(page4).toEqual({ lines: [], nextCursor: page3.nextCursor });
  });

  it("holds back a line still being written until its newline arrives", async () => {
    const id = newId();
    const logs = new FsLogStore(layout);
    await logs.append(id, ["done"]);
    await appendFile(layout.logFile(id), "half");

    const first = await logs.read(id, undefined, 100);
    await appendFile(layout.logFile(id), " line\n");
    const second = await logs.read(id, first.nextCursor, 100);

    expect(first.lines).toEqual(["done"]);
    expect(second.lines).toEqual(["half line"]);
  });

  it("answers a request without logs with no lines and a cursor to keep polling with", async () => {
    const logs = new FsLogStore(layout);

    expect(await logs.read(newId(), undefined, 10)).toEqual({ lines: [], nextCursor: "0" });
    expect(await logs.read(newId(), "42", 10)).toEqual({ lines: [], nextCursor: "42" });
  });

  it("rejects a malformed cursor as an invalid request naming the field", async () => {
    const logs = new FsLogStore(layout);

    for (const bad of ["abc", "-1", "1.5", "99999999999999999999"]) {
      const error = await logs.read(newId(), bad, 10).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidRequestError);
      expect((error as InvalidRequestError).field).toBe("cursor");
    }
  });

  it("keeps appends of one request in call order without awaiting each", async () => {
    const id = newId();
    const logs = new FsLogStore(dataDir);

    for (let i = 0; i < 50; i++) void logs.append(id, [`line ${i}`]);
    await logs.flush(id);

    const page = await logs.read(id, undefined, 1000);
    expect(page.lines).toEqual(Array.from({ length: 50 }, (_, i) => `line ${i}`));
  });
});

describe("FsLayout", () => {
  it("deletes everything a request left", async () => {
    const id = newId();
    await new FsAttemptStorage(layout, id).saveCheckpoint(await folderWith({ a: "1" }));
    await new FsAttemptStorage(layout, id).saveOutputs(await folderWith({ b: "2" }));
    await new FsLogStore(layout).append(id, ["x"]);

    await layout.deleteRequest(id);

    expect(await readdir(join(dataDir, "checkpoints"))).toEqual([]);
    expect(await readdir(join(dataDir, "outputs"))).toEqual([]);
    expect(await readdir(join(dataDir, "logs"))).toEqual([]);
  });
});
