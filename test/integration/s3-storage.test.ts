import { createHash, randomBytes } from "node:crypto";
import { link, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import {
  GetBucketEncryptionCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  S3Client,
} from "@aws-sdk/client-s3";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { createBucket } from "../../functions/adapters/aws/bootstrap-s3.ts";
import {
  S3AttemptStorage,
  S3InputStore,
  S3LogStore,
  S3ResultStore,
} from "../../functions/adapters/aws/s3-storage.ts";
import { InvalidRequestError } from "../../functions/core/errors.ts";
import { removeDir, tempDir } from "../runner/helpers.ts";

const endpoint = inject("awsEndpoint");
const bucket = `longrun-s3-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;

/** Commands seen by a client, by name, and hooks to fail or hold some of them. */
interface Instrumented {
  client: S3Client;
  counts: Map<string, number>;
  /** Return an Error to fail the command before it is sent; a Promise to hold it until it settles. */
  intercept:
    | ((name: string, input: Record<string, unknown>) => Error | Promise<void> | null)
    | null;
}

function instrumentedClient(): Instrumented {
  const client = new S3Client({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    forcePathStyle: true,
  });
  const state: Instrumented = { client, counts: new Map(), intercept: null };
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const name = context.commandName ?? "?";
      state.counts.set(name, (state.counts.get(name) ?? 0) + 1);
      const verdict = state.intercept?.(name, args.input as Record<string, unknown>) ?? null;
      if (verdict instanceof Error) throw verdict;
      if (verdict) await verdict;
      return next(args);
    },
    { step: "initialize", name: "longrunTestCounter" },
  );
  return state;
}

let s3: Instrumented;
let root: string;
let n = 0;
const newId = () => `req_s3${++n}${Date.now().toString(36)}`;

beforeAll(async () => {
  const { client } = instrumentedClient();
  await createBucket(client, bucket);
});

beforeEach(async () => {
  s3 = instrumentedClient();
  root = await tempDir("s3");
});
afterEach(async () => {
  await removeDir(root);
});
afterAll(() => {
  s3?.client.destroy();
});

const puts = () => s3.counts.get("PutObjectCommand") ?? 0;

async function folderWith(files: Record<string, string | Buffer>): Promise<string> {
  const dir = join(root, `src-${++n}`);
  await mkdir(dir, { recursive: true });
  await writeInto(dir, files);
  return dir;
}

async function writeInto(dir: string, files: Record<string, string | Buffer>): Promise<void> {
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(dir, name, ".."), { recursive: true });
    // Atomic replace, as the job contract asks of jobs: a new inode every time.
    const tmp = join(dir, `${name}.tmp-${++n}`);
    await writeFile(tmp, content);
    await rename(tmp, join(dir, name));
  }
}

/** Every file below `dir` with its content, keyed by "/"-joined relative path. */
async function contents(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string): Promise<void> => {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const full = join(d, entry.name);
      if (entry.isDirectory()) await walk(full);
      else out[relative(dir, full).split(sep).join("/")] = await readFile(full, "utf8");
    }
  };
  await walk(dir);
  return out;
}

async function restoreFresh(id: string): Promise<Record<string, string>> {
  const dir = join(root, `restore-${++n}`);
  await mkdir(dir, { recursive: true });
  await new S3AttemptStorage(s3.client, bucket, id).restoreCheckpoint(dir);
  return contents(dir);
}

async function keysUnder(prefix: string): Promise<string[]> {
  const res = await s3.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  return (res.Contents ?? []).map((o) => o.Key ?? "").sort();
}

describe("S3AttemptStorage checkpoints", () => {
  it("restores nothing before the first save", async () => {
    expect(await restoreFresh(newId())).toEqual({});
  });

  it("round-trips a folder with nested files through a save and a restore", async () => {
    const id = newId();
    const files = { "state.json": '{"step":3}', "weights/layer1.bin": "abc", "a/b/c.txt": "deep" };
    const dir = await folderWith(files);

    await new S3AttemptStorage(s3.client, bucket, id).saveCheckpoint(dir);

    expect(await restoreFresh(id)).toEqual(files);
    expect(await keysUnder(`checkpoints/${id}/`)).toContain(`checkpoints/${id}/CURRENT`);
  });

  it("publishes the latest save and deletes what no manifest names any more", async () => {
    const id = newId();
    const dir = await folderWith({ "state.json": '{"step":1}', "old.bin": "x" });
    const storage = new S3AttemptStorage(s3.client, bucket, id);
    await storage.saveCheckpoint(dir);

    await rm(join(dir, "old.bin"));
    await writeInto(dir, { "state.json": '{"step":2}' });
    await storage.saveCheckpoint(dir);

    expect(await restoreFresh(id)).toEqual({ "state.json": '{"step":2}' });
    const keys = await keysUnder(`checkpoints/${id}/`);
    // CURRENT and the one object of state.json: the first version is gone entirely.
    expect(keys).toHaveLength(2);
    expect(keys.filter((k) => k.endsWith("/old.bin"))).toEqual([]);
  });

  it("keeps the old checkpoint restorable when a save fails midway", async () => {
    const id = newId();
    const v1 = { "a.txt": "a1", "b.txt": "b1", "c.txt": "c1" };
    const dir = await folderWith(v1);
    const storage = new S3AttemptStorage(s3.client, bucket, id, { fileConcurrency: 1 });
    await storage.saveCheckpoint(dir);
    await writeInto(dir, { "a.txt": "a2", "b.txt": "b2", "c.txt": "c2" });
    let checkpointPuts = 0;
    s3.intercept = (name, input) =>
      name === "PutObjectCommand" &&
      String(input.Key).startsWith(`checkpoints/${id}/v-`) &&
      ++checkpointPuts === 2
        ? new Error("network cut during upload")
        : null;

    await expect(storage.saveCheckpoint(dir)).rejects.toThrow("network cut during upload");

    // One new file made it up, but CURRENT still names only the first version's objects.
    expect(checkpointPuts).toBeGreaterThanOrEqual(2);
    expect(await restoreFresh(id)).toEqual(v1);

    // The next save succeeds and sweeps the failed save's upload away.
    s3.intercept = null;
    await storage.saveCheckpoint(dir);
    expect(await restoreFresh(id)).toEqual({ "a.txt": "a2", "b.txt": "b2", "c.txt": "c2" });
    expect(await keysUnder(`checkpoints/${id}/`)).toHaveLength(4);
  });

  it("lets a reader during a save see the old version, and the new one once published", async () => {
    const id = newId();
    const dir = await folderWith({ "x.txt": "x1", "y.txt": "y1" });
    const storage = new S3AttemptStorage(s3.client, bucket, id);
    await storage.saveCheckpoint(dir);
    await writeInto(dir, { "x.txt": "x2", "y.txt": "y2" });
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let held = 0;
    s3.intercept = (name, input) => {
      if (name !== "PutObjectCommand" || String(input.Key) !== `checkpoints/${id}/CURRENT`) {
        return null;
      }
      held++;
      return gate;
    };

    const saving = storage.saveCheckpoint(dir);
    // Every file of the new version is up; only the publish is held back.
    for (let i = 0; i < 200 && held === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(held).toBe(1);
    const during = await restoreFresh(id);
    release();
    await saving;

    expect(during).toEqual({ "x.txt": "x1", "y.txt": "y1" });
    expect(await restoreFresh(id)).toEqual({ "x.txt": "x2", "y.txt": "y2" });
  });

  it("does not upload unchanged files again", async () => {
    const id = newId();
    const dir = await folderWith({ "a.bin": "aaaa", "b.bin": "bbbb", "state.json": "{}" });
    const storage = new S3AttemptStorage(s3.client, bucket, id);
    await storage.saveCheckpoint(dir);
    expect(puts()).toBe(4); // three files and CURRENT

    await storage.saveCheckpoint(dir);
    expect(puts()).toBe(5); // CURRENT only

    await writeInto(dir, { "state.json": '{"step":1}' });
    await storage.saveCheckpoint(dir);
    expect(puts()).toBe(7); // state.json and CURRENT

    // Rewritten with the same bytes (new inode and mtime): the hash says unchanged.
    await writeInto(dir, { "a.bin": "aaaa" });
    await storage.saveCheckpoint(dir);
    expect(puts()).toBe(8);
    expect(await restoreFresh(id)).toEqual({
      "a.bin": "aaaa",
      "b.bin": "bbbb",
      "state.json": '{"step":1}',
    });
  });

  it("skips unchanged files on the first save after a restore (a new attempt)", async () => {
    const id = newId();
    const first = await folderWith({ "a.bin": "aaaa", "b.bin": "bbbb" });
    await new S3AttemptStorage(s3.client, bucket, id).saveCheckpoint(first);
    const dir = join(root, "attempt-2");
    await mkdir(dir);
    const storage = new S3AttemptStorage(s3.client, bucket, id);
    await storage.restoreCheckpoint(dir);
    const before = puts();

    await writeInto(dir, { "b.bin": "BBBB" });
    await storage.saveCheckpoint(dir);

    expect(puts() - before).toBe(2); // b.bin and CURRENT
    expect(await restoreFresh(id)).toEqual({ "a.bin": "aaaa", "b.bin": "BBBB" });
  });

  it("round-trips a checkpoint file larger than a multipart part", async () => {
    const id = newId();
    const big = randomBytes(6 * 1024 * 1024 + 123);
    const dir = await folderWith({ "weights.bin": big });

    await new S3AttemptStorage(s3.client, bucket, id).saveCheckpoint(dir);

    expect(s3.counts.get("CreateMultipartUploadCommand")).toBe(1);
    const back = join(root, "big-restore");
    await mkdir(back);
    await new S3AttemptStorage(s3.client, bucket, id).restoreCheckpoint(back);
    expect((await readFile(join(back, "weights.bin"))).equals(big)).toBe(true);
  });
});

describe("S3AttemptStorage outputs and S3ResultStore", () => {
  it("returns the parsed result.json and presigned artifact URLs a plain GET can fetch", async () => {
    const id = newId();
    const dir = await folderWith({
      "result.json": '{"loss":0.25}',
      "model.npz": "weights!",
      "plots/curve.txt": "1,2,3",
    });
    await new S3AttemptStorage(s3.client, bucket, id).saveOutputs(dir);

    const result = await new S3ResultStore(s3.client, bucket).getResult(id);

    expect(result.output).toEqual({ loss: 0.25 });
    expect(result.artifacts.map(({ name, size }) => ({ name, size }))).toEqual([
      { name: "model.npz", size: 8 },
      { name: "plots/curve.txt", size: 5 },
    ]);
    for (const artifact of result.artifacts) {
      expect(new URL(artifact.url).searchParams.get("X-Amz-Expires")).toBe("3600");
      const res = await fetch(artifact.url);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe(artifact.name === "model.npz" ? "weights!" : "1,2,3");
    }
  });

  it("uploads only the job user's own files: not a hard link, not another owner's file", async () => {
    const id = newId();
    const secret = join(root, `secret-${id}`);
    await writeFile(secret, "server credentials");
    const dir = await folderWith({ "result.json": "{}", "own.bin": "mine" });
    await link(secret, join(dir, "linked.bin"));
    const uid = process.getuid?.() ?? 0;

    await new S3AttemptStorage(s3.client, bucket, id, { jobUid: uid }).saveOutputs(dir);

    const result = await new S3ResultStore(s3.client, bucket).getResult(id);
    expect(result.artifacts.map((a) => a.name)).toEqual(["own.bin"]);
    // The same folder saved for a job of another user uploads none of it.
    const other = newId();
    const again = await folderWith({ "result.json": "{}", "own.bin": "mine" });
    await new S3AttemptStorage(s3.client, bucket, other, { jobUid: uid + 1 }).saveOutputs(again);
    expect(await new S3ResultStore(s3.client, bucket).getResult(other)).toEqual({
      output: null,
      artifacts: [],
    });
  });

  it("answers no output and no artifacts for a request without outputs", async () => {
    expect(await new S3ResultStore(s3.client, bucket).getResult(newId())).toEqual({
      output: null,
      artifacts: [],
    });
  });

  it("reads a damaged result.json as no output", async () => {
    const id = newId();
    const dir = await folderWith({ "result.json": "{not json" });
    await new S3AttemptStorage(s3.client, bucket, id).saveOutputs(dir);

    expect((await new S3ResultStore(s3.client, bucket).getResult(id)).output).toBeNull();
  });

  it("replaces outputs an earlier attempt left behind", async () => {
    const id = newId();
    const storage = new S3AttemptStorage(s3.client, bucket, id);
    await storage.saveOutputs(await folderWith({ "result.json": "1", "stale.bin": "old" }));

    await storage.saveOutputs(await folderWith({ "result.json": "2", "fresh.bin": "new" }));

    const result = await new S3ResultStore(s3.client, bucket).getResult(id);
    expect(result.output).toBe(2);
    expect(result.artifacts.map((a) => a.name)).toEqual(["fresh.bin"]);
  });

  it("uploads an output larger than 5 MiB as a multipart upload", async () => {
    const id = newId();
    const big = randomBytes(5 * 1024 * 1024 + 4096);
    const dir = await folderWith({ "result.json": "{}", "model.bin": big });

    await new S3AttemptStorage(s3.client, bucket, id).saveOutputs(dir);

    expect(s3.counts.get("CreateMultipartUploadCommand")).toBe(1);
    expect(s3.counts.get("CompleteMultipartUploadCommand")).toBe(1);
    const [artifact] = (await new S3ResultStore(s3.client, bucket).getResult(id)).artifacts;
    expect(artifact?.size).toBe(big.length);
    const body = Buffer.from(await (await fetch(artifact!.url)).arrayBuffer());
    const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
    expect(sha(body)).toBe(sha(big));
  });
});

describe("S3InputStore", () => {
  it("stores an input at inputs/<id>.json and reads it back", async () => {
    const id = newId();
    const inputs = new S3InputStore(s3.client, bucket);
    const input = { epochs: 3, text: "é".repeat(1000), nested: [1, { a: null }] };

    await inputs.putInput(id, input);

    expect(await inputs.getInput(id)).toEqual({ input });
    const raw = await s3.client.send(
      new GetObjectCommand({ Bucket: bucket, Key: `inputs/${id}.json` }),
    );
    expect(JSON.parse(await raw.Body!.transformToString())).toEqual(input);
  });

  it("answers null for a request without a stored input", async () => {
    expect(await new S3InputStore(s3.client, bucket).getInput(newId())).toBeNull();
  });
});

describe("S3LogStore", () => {
  /** Follows cursors with pages of `limit` until a page comes back empty. */
  async function readAll(logs: S3LogStore, id: string, limit: number) {
    const pages: string[][] = [];
    let cursor: string | undefined;
    for (let i = 0; i < 100; i++) {
      const page = await logs.read(id, cursor, limit);
      expect(typeof page.nextCursor).toBe("string");
      if (page.lines.length === 0) return { pages, cursor: page.nextCursor };
      pages.push(page.lines);
      cursor = page.nextCursor;
    }
    throw new Error("log did not end");
  }

  it("writes appends as numbered chunks and reads every attempt back oldest first", async () => {
    const id = newId();
    const logs = new S3LogStore(s3.client, bucket, { flushIntervalMs: 60_000 });
    void logs.append(id, ["--- attempt 1 ---", "one", "two"], 1);
    await logs.flush(id);
    void logs.append(id, ["three"], 1);
    void logs.append(id, ["--- attempt 2 ---", "four\nwith a newline"], 2);
    await logs.flush();

    expect(await keysUnder(`logs/${id}/`)).toEqual([
      `logs/${id}/000001/0000000000.log`,
      `logs/${id}/000001/0000000001.log`,
      `logs/${id}/000002/0000000000.log`,
    ]);
    const { pages } = await readAll(logs, id, 2);
    expect(pages).toEqual([
      ["--- attempt 1 ---", "one"],
      ["two", "three"],
      ["--- attempt 2 ---", "four with a newline"],
    ]);
  });

  it("buffers appends until the line limit, the interval or a flush", async () => {
    const id = newId();
    const logs = new S3LogStore(s3.client, bucket, { flushIntervalMs: 150, flushLines: 3 });

    const firstTwo = logs.append(id, ["a", "b"], 1);
    await new Promise((r) => setTimeout(r, 20));
    expect(puts()).toBe(0);

    const third = logs.append(id, ["c"], 1); // reaches flushLines: written now
    await third;
    await firstTwo;
    expect(puts()).toBe(1);

    const late = logs.append(id, ["d"], 1); // written by the timer, no flush called
    await late;
    expect(puts()).toBe(2);
    expect((await logs.read(id, undefined, 10)).lines).toEqual(["a", "b", "c", "d"]);
  });

  it("continues a cursor that reached the end once new lines arrive", async () => {
    const id = newId();
    const logs = new S3LogStore(s3.client, bucket);
    void logs.append(id, ["l1", "l2"], 1);
    await logs.flush(id);
    const first = await logs.read(id, undefined, 10);
    expect(first.lines).toEqual(["l1", "l2"]);
    expect((await logs.read(id, first.nextCursor, 10)).lines).toEqual([]);

    void logs.append(id, ["l3"], 1);
    await logs.flush(id);

    expect((await logs.read(id, first.nextCursor, 10)).lines).toEqual(["l3"]);
  });

  it("keeps order when a new store instance (a restarted server) writes the same stream", async () => {
    const id = newId();
    const before = new S3LogStore(s3.client, bucket);
    void before.append(id, ["before restart"]);
    await before.flush();

    const after = new S3LogStore(s3.client, bucket);
    void after.append(id, ["after restart"]);
    await after.flush();

    expect((await after.read(id, undefined, 10)).lines).toEqual([
      "before restart",
      "after restart",
    ]);
  });

  it("answers an empty page with a string cursor for a request without logs", async () => {
    const page = await new S3LogStore(s3.client, bucket).read(newId(), undefined, 10);
    expect(page).toEqual({ lines: [], nextCursor: "" });
  });

  it("rejects a cursor it did not issue with InvalidRequestError on field cursor", async () => {
    const id = newId();
    const other = newId();
    const logs = new S3LogStore(s3.client, bucket);
    void logs.append(other, ["x"], 1);
    await logs.flush();
    const foreign = (await logs.read(other, undefined, 10)).nextCursor;
    const bad = [
      "not base64!",
      Buffer.from("garbage").toString("base64url"),
      Buffer.from(`logs/${id}/000001/0000000000.log:abc`).toString("base64url"),
      foreign,
    ];

    for (const cursor of bad) {
      const error = await logs.read(id, cursor, 10).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidRequestError);
      expect((error as InvalidRequestError).field).toBe("cursor");
    }
  });
});

describe("createBucket", () => {
  it("creates a bucket once, with public access blocked and SSE-S3 by default", async () => {
    const name = `longrun-boot-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;

    const first = await createBucket(s3.client, name);
    const again = await createBucket(s3.client, name);

    expect(first.created).toBe(true);
    expect(again.created).toBe(false);
    if (first.encrypted) {
      const enc = await s3.client.send(new GetBucketEncryptionCommand({ Bucket: name }));
      expect(
        enc.ServerSideEncryptionConfiguration?.Rules?.[0]?.ApplyServerSideEncryptionByDefault
          ?.SSEAlgorithm,
      ).toBe("AES256");
    }
    // moto implements both settings; an emulator that lacks one reports it instead of failing.
    expect(first).toMatchObject({ publicAccessBlocked: true, encrypted: true });
  });
});
