/**
 * S3 counterparts of the embedded filesystem storage (fs-storage.ts), under one bucket:
 *
 * ```
 * inputs/<id>.json                               the request's input (large inputs, Batch runner)
 * inputs/<id>/<name>                             the request's own input files (s3-files.ts)
 * uploads/<tenant>/<upload id>                   uploads' bytes, PUT by callers (s3-files.ts)
 * checkpoints/<id>/CURRENT                       manifest of the saved checkpoint (the publish point)
 * checkpoints/<id>/v-<ulid>/<relative path>      files uploaded by the save that made version v-<ulid>
 * outputs/<id>/<relative path>                   outputs of the successful attempt
 * logs/<id>/<attempt, 6 digits>/<seq, 10 digits>.log   log chunks, immutable, in key order
 * ```
 */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { chmod, type FileHandle, lstat, mkdir, open } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import {
  CopyObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { monotonicFactory } from "ulidx";
import type { AttemptStorage } from "../../../jobs/runner/attempt.ts";
import { InvalidRequestError } from "../../core/errors.ts";
import type { Artifact, LogPage, LogStore, ResultStore } from "../../core/ports.ts";
import { isFileName } from "../../core/upload.ts";
import { listFiles } from "../list-files.ts";
import { requestObjects, S3_PREFIX } from "./definitions.ts";

/** Request ids become key segments: accept only what cannot reach another request's keys. */
function safeId(requestId: string): string {
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(requestId)) {
    throw new Error(`refusing request id ${JSON.stringify(requestId)} as an S3 key segment`);
  }
  return requestId;
}

/** Whether an SDK error means "no such object". */
function isNoSuchKey(error: unknown): boolean {
  const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === "NoSuchKey" || e?.name === "NotFound" || e?.$metadata?.httpStatusCode === 404;
}

/** Every key under `prefix`, following continuation tokens. */
async function listKeys(
  client: S3Client,
  bucket: string,
  prefix: string,
): Promise<{ key: string; size: number }[]> {
  const out: { key: string; size: number }[] = [];
  let token: string | undefined;
  do {
    const page: ListObjectsV2CommandOutput = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const o of page.Contents ?? []) {
      if (o.Key !== undefined) out.push({ key: o.Key, size: o.Size ?? 0 });
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

/** Deletes keys in batches of 1000 (the DeleteObjects limit); returns the keys it could not. */
async function deleteKeys(
  client: S3Client,
  bucket: string,
  keys: readonly string[],
): Promise<string[]> {
  const failed: string[] = [];
  for (let i = 0; i < keys.length; i += 1000) {
    const batch = keys.slice(i, i + 1000);
    const res = await client.send(
      new DeleteObjectsCommand({
        Bucket: bucket,
        Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
      }),
    );
    for (const e of res.Errors ?? []) if (e.Key) failed.push(e.Key);
  }
  return failed;
}

/** Runs `work` over `items` with at most `limit` in flight; rejects with the first failure. */
async function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * A relative path from a manifest or key, as local path parts; null when it could leave
 * the folder it is restored into (a manifest is data from the bucket, not trusted code).
 */
function safeRelativeParts(path: string): string[] | null {
  const parts = path.split("/");
  if (
    parts.some((p) => p === "" || p === "." || p === ".." || p.includes("\\") || p.includes("\0"))
  )
    return null;
  return parts;
}

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  json: "application/json",
  txt: "text/plain; charset=utf-8",
  log: "text/plain; charset=utf-8",
  csv: "text/csv",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  html: "text/html; charset=utf-8",
};

/** A content type for a download, so a browser opening an artifact URL shows it sensibly. */
function contentTypeOf(name: string): string {
  const ext = name.slice(name.lastIndexOf(".") + 1).toLowerCase();
  return CONTENT_TYPES[ext] ?? "application/octet-stream";
}

/** Options shared by the S3 adapters that upload files. */
export interface S3UploadOptions {
  /** Multipart part size in bytes (default and minimum 5 MiB, S3's own minimum). */
  partSize?: number;
  /** Parts of one file uploaded at once (default 4). */
  partConcurrency?: number;
  /** Files uploaded or downloaded at once (default 4). */
  fileConcurrency?: number;
}

const MIN_PART_SIZE = 5 * 1024 * 1024;

/**
 * Uploads the file behind an open handle from its start; lib-storage switches to multipart
 * above `partSize`. Reading through the handle pins the inode: a job replacing the file by
 * rename meanwhile cannot mix two contents into one object.
 */
async function uploadFromHandle(
  client: S3Client,
  bucket: string,
  key: string,
  handle: FileHandle,
  size: number,
  options: S3UploadOptions,
): Promise<void> {
  const upload = new Upload({
    client,
    params: {
      Bucket: bucket,
      Key: key,
      Body: handle.createReadStream({ start: 0, autoClose: false }),
      // A stream with a `start` and no `end` reads as infinitely long to lib-storage's part count check.
      ContentLength: size,
      ContentType: contentTypeOf(key),
    },
    partSize: Math.max(MIN_PART_SIZE, options.partSize ?? MIN_PART_SIZE),
    queueSize: options.partConcurrency ?? 4,
    // A failed multipart upload must not leave invisible, billed parts behind.
    leavePartsOnError: false,
  });
  await upload.done();
}

/** Uploads the file at `file` to `key`. */
async function uploadFile(
  client: S3Client,
  bucket: string,
  key: string,
  file: string,
  options: S3UploadOptions,
): Promise<void> {
  const handle = await open(file, "r");
  try {
    const { size } = await handle.stat();
    await uploadFromHandle(client, bucket, key, handle, size, options);
  } finally {
    await handle.close();
  }
}

/** What CURRENT holds: the version it publishes and, per file, the object holding it. */
interface CheckpointManifest {
  format: 1;
  version: string;
  savedAt: number;
  files: Record<string, { key: string; size: number; sha256: string }>;
}

function parseManifest(text: string, root: string): CheckpointManifest {
  const value = JSON.parse(text) as Partial<CheckpointManifest> | null;
  if (
    value?.format !== 1 ||
    typeof value.version !== "string" ||
    typeof value.files !== "object" ||
    value.files === null
  ) {
    throw new Error(`${root}CURRENT is not a checkpoint manifest`);
  }
  for (const [path, entry] of Object.entries(value.files)) {
    if (
      safeRelativeParts(path) === null ||
      typeof entry?.key !== "string" ||
      !entry.key.startsWith(root) ||
      typeof entry.size !== "number" ||
      typeof entry.sha256 !== "string"
    ) {
      throw new Error(`${root}CURRENT has an invalid entry for ${JSON.stringify(path)}`);
    }
  }
  return value as CheckpointManifest;
}

/** What a local file was when it was last saved or restored, to skip it when unchanged. */
interface LocalFileState {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  sha256: string;
  key: string;
}

/** Options of {@link S3AttemptStorage}. */
export interface S3AttemptStorageOptions extends S3UploadOptions {
  /** Told about best-effort clean-up that failed (old versions left behind). */
  onWarning?: (message: string) => void;
}

/**
 * Checkpoints and outputs of one request in S3, for the job runner (jobs/runner).
 *
 * A save uploads the files that changed since the last save or restore to a new version
 * prefix `checkpoints/<id>/v-<ulid>/`, then writes the manifest `checkpoints/<id>/CURRENT`
 * naming the object of every file (changed files in the new prefix, unchanged ones where an
 * earlier save put them). A single PutObject is atomic, so a reader sees the old manifest
 * or the new one, and either names only objects that were complete before it was written.
 * Objects no manifest names any more are deleted afterwards, best effort.
 *
 * Saves of one instance run one after another. Two instances saving the same request at
 * once are not supported: Batch never runs two attempts of one request together.
 */
export class S3AttemptStorage implements AttemptStorage {
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #root: string;
  readonly #options: S3AttemptStorageOptions;
  readonly #ulid = monotonicFactory();
  /** Local state per relative path as of the last save or restore. */
  #local = new Map<string, LocalFileState>();
  /** The manifest this instance last published or restored. */
  #published: CheckpointManifest | null = null;
  /** Objects uploaded by saves that failed before publishing: garbage for the next save. */
  #orphans = new Set<string>();
  /** The first save lists the prefix once to collect leftovers of a crashed earlier attempt. */
  #sweptLeftovers = false;
  #queue: Promise<void> = Promise.resolve();

  constructor(
    client: S3Client,
    bucket: string,
    requestId: string,
    options: S3AttemptStorageOptions = {},
  ) {
    this.#client = client;
    this.#bucket = bucket;
    this.#root = requestObjects(safeId(requestId)).checkpoints;
    this.#options = options;
  }

  /** The key of the manifest that publishes the current checkpoint. */
  get currentKey(): string {
    return `${this.#root}CURRENT`;
  }

  /** The published manifest, or null before the first save. */
  async #readCurrent(): Promise<CheckpointManifest | null> {
    try {
      const res = await this.#client.send(
        new GetObjectCommand({ Bucket: this.#bucket, Key: this.currentKey }),
      );
      return parseManifest(await res.Body!.transformToString(), this.#root);
    } catch (error) {
      if (isNoSuchKey(error)) return null;
      throw error;
    }
  }

  async restoreCheckpoint(dir: string): Promise<void> {
    // A save elsewhere may publish and delete the objects of the manifest just read; read
    // the newer manifest and start again rather than restore a mix of two versions.
    for (let tries = 1; ; tries++) {
      const manifest = await this.#readCurrent();
      if (manifest === null) return;
      try {
        await this.#download(manifest, dir);
        return;
      } catch (error) {
        if (!isNoSuchKey(error) || tries >= 3) throw error;
      }
    }
  }

  async #download(manifest: CheckpointManifest, dir: string): Promise<void> {
    const local = new Map<string, LocalFileState>();
    const target = resolve(dir);
    await forEachLimit(
      Object.entries(manifest.files),
      this.#options.fileConcurrency ?? 4,
      async ([path, entry]) => {
        const file = join(target, ...(safeRelativeParts(path) ?? []));
        await mkdir(dirname(file), { recursive: true });
        const res = await this.#client.send(
          new GetObjectCommand({ Bucket: this.#bucket, Key: entry.key }),
        );
        await pipeline(res.Body as Readable, createWriteStream(file));
        const st = await lstat(file);
        local.set(path, {
          size: st.size,
          mtimeMs: st.mtimeMs,
          ctimeMs: st.ctimeMs,
          ino: st.ino,
          sha256: entry.sha256,
          key: entry.key,
        });
      },
    );
    this.#local = local;
    this.#published = manifest;
  }

  /**
   * Downloads the request's input files (`inputs/<id>/<name>`) into `dir`, each made
   * read-only (0444) once complete.
   */
  async restoreInputs(dir: string): Promise<void> {
    const prefix = `${S3_PREFIX.inputs}${this.#root.slice(S3_PREFIX.checkpoints.length)}`;
    const objects = await listKeys(this.#client, this.#bucket, prefix);
    await forEachLimit(objects, this.#options.fileConcurrency ?? 4, async ({ key }) => {
      const name = key.slice(prefix.length);
      // Names are checked at submit; anything else under the prefix is not a file of the job's.
      if (!isFileName(name)) return;
      const file = join(resolve(dir), name);
      const res = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key }));
      await pipeline(res.Body as Readable, createWriteStream(file, { mode: 0o600 }));
      // Read-only for whoever runs the job, whatever the process umask (the embedded server
      // runs with 0077, which would leave a creation mode of 0444 at 0400).
      await chmod(file, 0o444);
    });
  }

  saveCheckpoint(dir: string): Promise<void> {
    const run = this.#queue.then(() => this.#save(dir));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #save(dir: string): Promise<void> {
    const version = `v-${this.#ulid()}`;
    const files: CheckpointManifest["files"] = {};
    const local = new Map<string, LocalFileState>();
    const uploaded: string[] = [];
    const names = await listFiles(dir);
    try {
      await forEachLimit(names, this.#options.fileConcurrency ?? 4, async (path) => {
        const state = await this.#saveFile(dir, path, version, uploaded);
        if (state === null) return; // vanished between listing and reading it
        local.set(path, state);
        files[path] = { key: state.key, size: state.size, sha256: state.sha256 };
      });
    } catch (error) {
      for (const key of uploaded) this.#orphans.add(key);
      throw error;
    }

    const manifest: CheckpointManifest = { format: 1, version, savedAt: Date.now(), files };
    try {
      await this.#client.send(
        new PutObjectCommand({
          Bucket: this.#bucket,
          Key: this.currentKey,
          Body: JSON.stringify(manifest),
          ContentType: "application/json",
        }),
      );
    } catch (error) {
      for (const key of uploaded) this.#orphans.add(key);
      throw error;
    }
    const previous = this.#published;
    this.#published = manifest;
    this.#local = local;
    await this.#collectGarbage(manifest, previous).catch((error: unknown) => {
      this.#options.onWarning?.(
        `could not delete old checkpoint versions of ${this.#root}: ${(error as Error).message}`,
      );
    });
  }

  /**
   * Makes sure `path` is stored: reuses the object of the last save when the file's
   * identity is unchanged, or when its content hashes the same; uploads it otherwise.
   */
  async #saveFile(
    dir: string,
    path: string,
    version: string,
    uploaded: string[],
  ): Promise<LocalFileState | null> {
    const file = join(dir, ...path.split("/"));
    const known = this.#local.get(path);
    // One open handle for stat, hash and upload, so the hash describes what is uploaded.
    let handle: FileHandle;
    try {
      handle = await open(file, "r");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw error;
    }
    try {
      const st = await handle.stat();
      const identity = { size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino };
      if (
        known &&
        known.size === st.size &&
        known.mtimeMs === st.mtimeMs &&
        known.ctimeMs === st.ctimeMs &&
        known.ino === st.ino
      ) {
        return known;
      }
      const hash = createHash("sha256");
      for await (const chunk of handle.createReadStream({ start: 0, autoClose: false })) {
        hash.update(chunk as Buffer);
      }
      const sha256 = hash.digest("hex");
      // Rewritten with the same bytes (jobs often rewrite every file at each checkpoint).
      if (known && known.sha256 === sha256 && known.size === st.size) {
        return { ...known, ...identity };
      }
      const key = `${this.#root}${version}/${path}`;
      uploaded.push(key);
      await uploadFromHandle(this.#client, this.#bucket, key, handle, st.size, this.#options);
      return { ...identity, sha256, key };
    } finally {
      await handle.close();
    }
  }

  /**
   * Deletes objects no manifest names any more: those of the previous manifest that the new
   * one dropped, uploads of failed saves and, once per instance, whatever a crashed earlier
   * attempt left under the prefix. Only objects of versions older than the one just
   * published are touched by the sweep, never CURRENT.
   */
  async #collectGarbage(
    manifest: CheckpointManifest,
    previous: CheckpointManifest | null,
  ): Promise<void> {
    const keep = new Set(Object.values(manifest.files).map((f) => f.key));
    const doomed = new Set<string>();
    for (const f of Object.values(previous?.files ?? {})) if (!keep.has(f.key)) doomed.add(f.key);
    for (const key of this.#orphans) if (!keep.has(key)) doomed.add(key);
    this.#orphans.clear();
    if (!this.#sweptLeftovers) {
      this.#sweptLeftovers = true;
      for (const { key } of await listKeys(this.#client, this.#bucket, this.#root)) {
        const version = key.slice(this.#root.length).split("/")[0] ?? "";
        if (key !== this.currentKey && !keep.has(key) && version < manifest.version) {
          doomed.add(key);
        }
      }
    }
    if (doomed.size === 0) return;
    const failed = await deleteKeys(this.#client, this.#bucket, [...doomed]);
    // Keys that could not be deleted are tried again at the next save.
    for (const key of failed) this.#orphans.add(key);
  }

  /**
   * Uploads every file of `dir` to `outputs/<id>/<relative path>` and then deletes objects
   * there that `dir` does not hold (left by an earlier attempt whose save failed midway).
   * The request becomes SUCCEEDED only after this resolves, so nobody reads a half set.
   */
  async saveOutputs(dir: string): Promise<void> {
    const prefix = `${S3_PREFIX.outputs}${this.#root.slice(S3_PREFIX.checkpoints.length)}`;
    const names = await listFiles(dir);
    await forEachLimit(names, this.#options.fileConcurrency ?? 4, (name) =>
      uploadFile(
        this.#client,
        this.#bucket,
        `${prefix}${name}`,
        join(dir, ...name.split("/")),
        this.#options,
      ),
    );
    const wanted = new Set(names.map((n) => `${prefix}${n}`));
    const stale = (await listKeys(this.#client, this.#bucket, prefix))
      .map((o) => o.key)
      .filter((k) => !wanted.has(k));
    if (stale.length > 0) await deleteKeys(this.#client, this.#bucket, stale);
  }
}

/** Deletes every object under `prefix`; idempotent. */
export async function deletePrefix(
  client: S3Client,
  bucket: string,
  prefix: string,
): Promise<void> {
  const keys = (await listKeys(client, bucket, prefix)).map((o) => o.key);
  if (keys.length > 0) await deleteKeys(client, bucket, keys);
}

/** `CopySource` of an object: bucket and key, the key URL-encoded per segment. */
export function copySource(bucket: string, key: string): string {
  return `${bucket}/${key.split("/").map(encodeURIComponent).join("/")}`;
}

/**
 * Copies the published checkpoint of request `from` to request `to` inside S3 (CopyObject:
 * the bytes never leave the bucket): every file of `from`'s manifest to one new version of
 * `to`, then `to`'s manifest, written last as a save writes it, so `to` has the whole
 * checkpoint or none. `from` is not changed.
 * @returns false when `from` has no checkpoint.
 */
export async function copyCheckpointObjects(
  client: S3Client,
  bucket: string,
  from: string,
  to: string,
): Promise<boolean> {
  const fromRoot = `${S3_PREFIX.checkpoints}${safeId(from)}/`;
  const toRoot = `${S3_PREFIX.checkpoints}${safeId(to)}/`;
  let manifest: CheckpointManifest;
  try {
    const res = await client.send(
      new GetObjectCommand({ Bucket: bucket, Key: `${fromRoot}CURRENT` }),
    );
    manifest = parseManifest(await res.Body!.transformToString(), fromRoot);
  } catch (error) {
    if (isNoSuchKey(error)) return false;
    throw error;
  }
  const version = `v-${monotonicFactory()()}`;
  const files: CheckpointManifest["files"] = {};
  await forEachLimit(Object.entries(manifest.files), 8, async ([path, entry]) => {
    const key = `${toRoot}${version}/${path}`;
    await client.send(
      new CopyObjectCommand({
        Bucket: bucket,
        Key: key,
        CopySource: copySource(bucket, entry.key),
      }),
    );
    files[path] = { ...entry, key };
  });
  const copy: CheckpointManifest = { format: 1, version, savedAt: Date.now(), files };
  await client.send(
    new PutObjectCommand({
      Bucket: bucket,
      Key: `${toRoot}CURRENT`,
      Body: JSON.stringify(copy),
      ContentType: "application/json",
    }),
  );
  return true;
}

/** Options of {@link S3ResultStore}. */
export interface S3ResultStoreOptions {
  /** Lifetime of artifact URLs in seconds (default 3600; SPEC asks for at least 15 min). */
  urlExpiresInSeconds?: number;
}

/**
 * Results of succeeded requests from `outputs/<id>/`: `result.json` parsed as the output,
 * every other object an artifact with a presigned GET URL.
 *
 * A presigned URL stops working when the credentials that signed it expire, whatever its
 * own lifetime: sign with credentials that outlive it (a Lambda role's session does).
 */
export class S3ResultStore implements ResultStore {
  readonly #expiresIn: number;

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    options: S3ResultStoreOptions = {},
  ) {
    this.#expiresIn = options.urlExpiresInSeconds ?? 3600;
  }

  async getResult(requestId: string): Promise<{ output: unknown; artifacts: Artifact[] }> {
    const prefix = requestObjects(safeId(requestId)).outputs;
    const objects = (await listKeys(this.client, this.bucket, prefix)).sort((a, b) =>
      a.key < b.key ? -1 : a.key > b.key ? 1 : 0,
    );
    let output: unknown = null;
    const artifacts: Artifact[] = [];
    for (const { key, size } of objects) {
      const name = key.slice(prefix.length);
      if (name === "result.json") {
        output = await this.#readJson(key);
        continue;
      }
      const url = await getSignedUrl(
        this.client,
        new GetObjectCommand({ Bucket: this.bucket, Key: key }),
        { expiresIn: this.#expiresIn },
      );
      artifacts.push({ name, size, url });
    }
    return { output, artifacts };
  }

  async #readJson(key: string): Promise<unknown> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return JSON.parse(await res.Body!.transformToString());
    } catch (error) {
      // The runner checked it before saving; gone or damaged since reads as no output.
      if (isNoSuchKey(error) || error instanceof SyntaxError) return null;
      throw error;
    }
  }
}

/**
 * Request inputs at `inputs/<id>.json`. The AWS submit path stores an input there when it is
 * too large to travel in the Batch job's overrides; the Batch runner reads it back.
 */
export class S3InputStore {
  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
  ) {}

  /** The key of a request's input. */
  key(requestId: string): string {
    return requestObjects(safeId(requestId)).input;
  }

  /** Stores `input` as JSON (overwriting: an input never changes once submitted). */
  async putInput(requestId: string, input: unknown): Promise<void> {
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: this.key(requestId),
        Body: JSON.stringify(input ?? null),
        ContentType: "application/json",
      }),
    );
  }

  /** The stored input, or null when none was stored for this request. */
  async getInput(requestId: string): Promise<{ input: unknown } | null> {
    try {
      const res = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key(requestId) }),
      );
      return { input: JSON.parse(await res.Body!.transformToString()) };
    } catch (error) {
      if (isNoSuchKey(error)) return null;
      throw error;
    }
  }
}

/** Options of {@link S3LogStore}. */
export interface S3LogStoreOptions {
  /** Longest time appended lines wait before they are written (default 1000 ms). */
  flushIntervalMs?: number;
  /** A buffer this many lines long is written at once (default 1000). */
  flushLines?: number;
  /** Chunks fetched by one `read` at most, so a page's cost stays bounded (default 20). */
  maxChunksPerRead?: number;
}

interface LogBuffer {
  lines: string[];
  /** Resolves when the lines now in `lines` are stored. */
  written: Promise<void>;
  resolve: () => void;
  reject: (error: unknown) => void;
  timer: NodeJS.Timeout;
}

const ATTEMPT_DIGITS = 6;
const SEQ_DIGITS = 10;
const CHUNK_KEY = /^logs\/[A-Za-z0-9_-]{1,128}\/[0-9]{6}\/[0-9]{10}\.log$/;

/**
 * Job logs as immutable chunk objects `logs/<id>/<attempt>/<seq>.log`, both numbers
 * zero-padded so that key order is write order: appending never reads or rewrites an
 * object, and `read` lists from the cursor's chunk on.
 *
 * Appends are buffered per request and attempt and written at most about every
 * `flushIntervalMs` or every `flushLines` lines, and on {@link flush}: a chatty job costs a
 * PutObject a second, not one per line.
 *
 * A cursor is the base64url of `<chunkKey>:<lines of it already returned>`, with `*` for
 * "all of it": chunks never change, so it stays valid for as long as the log is kept.
 */
export class S3LogStore implements LogStore {
  readonly #buffers = new Map<string, LogBuffer>();
  /** The last write per stream; writes of one stream run in order. */
  readonly #writes = new Map<string, Promise<void>>();
  /** Next sequence number per stream, learnt from a listing on the first write. */
  readonly #nextSeq = new Map<string, number>();
  readonly #intervalMs: number;
  readonly #flushLines: number;
  readonly #maxChunks: number;

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    options: S3LogStoreOptions = {},
  ) {
    this.#intervalMs = options.flushIntervalMs ?? 1000;
    this.#flushLines = options.flushLines ?? 1000;
    this.#maxChunks = options.maxChunksPerRead ?? 20;
  }

  #prefix(requestId: string, attempt: number): string {
    return `${S3_PREFIX.logs}${safeId(requestId)}/${String(attempt).padStart(ATTEMPT_DIGITS, "0")}/`;
  }

  /**
   * Appends lines to attempt `attempt` of a request's log; resolves once they are stored.
   * Callers that do not know the attempt may leave it 0: order is still kept, because each
   * stream continues after its highest stored chunk.
   */
  append(requestId: string, lines: readonly string[], attempt = 0): Promise<void> {
    if (!Number.isInteger(attempt) || attempt < 0 || attempt >= 10 ** ATTEMPT_DIGITS) {
      return Promise.reject(new Error(`invalid attempt ${attempt}`));
    }
    const stream = this.#prefix(requestId, attempt);
    const clean = lines.map((l) => l.replaceAll("\r", " ").replaceAll("\n", " "));
    let buffer = this.#buffers.get(stream);
    if (!buffer) {
      let resolveFn!: () => void;
      let rejectFn!: (e: unknown) => void;
      const written = new Promise<void>((res, rej) => {
        resolveFn = res;
        rejectFn = rej;
      });
      buffer = {
        lines: [],
        written,
        resolve: resolveFn,
        reject: rejectFn,
        timer: setTimeout(() => this.#writeBuffer(stream), this.#intervalMs),
      };
      // A pending log write must not keep a finished process alive.
      buffer.timer.unref();
      this.#buffers.set(stream, buffer);
    }
    buffer.lines.push(...clean);
    const written = buffer.written;
    if (buffer.lines.length >= this.#flushLines) this.#writeBuffer(stream);
    return written;
  }

  /** Takes the buffer of `stream` and queues its write after the stream's earlier writes. */
  #writeBuffer(stream: string): Promise<void> {
    const buffer = this.#buffers.get(stream);
    if (!buffer) return this.#writes.get(stream) ?? Promise.resolve();
    this.#buffers.delete(stream);
    clearTimeout(buffer.timer);
    const previous = this.#writes.get(stream) ?? Promise.resolve();
    const write = previous.then(() => this.#putChunk(stream, buffer.lines));
    write.then(buffer.resolve, buffer.reject);
    const settled = write.catch(() => {});
    this.#writes.set(stream, settled);
    void settled.then(() => {
      if (this.#writes.get(stream) === settled) this.#writes.delete(stream);
    });
    return settled;
  }

  async #putChunk(stream: string, lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return;
    let seq = this.#nextSeq.get(stream);
    if (seq === undefined) {
      // Another process (a restarted server) may have written this stream before.
      const keys = await listKeys(this.client, this.bucket, stream);
      const last = keys
        .map((k) => k.key)
        .sort()
        .at(-1);
      seq = last ? Number(last.slice(stream.length, stream.length + SEQ_DIGITS)) + 1 : 0;
    }
    const key = `${stream}${String(seq).padStart(SEQ_DIGITS, "0")}.log`;
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: key,
        Body: lines.map((l) => `${l}\n`).join(""),
        ContentType: "text/plain; charset=utf-8",
      }),
    );
    this.#nextSeq.set(stream, seq + 1);
  }

  /** Writes every buffered line (of one request, or of all) and waits for the writes. */
  async flush(requestId?: string): Promise<void> {
    const prefix =
      requestId === undefined ? S3_PREFIX.logs : `${S3_PREFIX.logs}${safeId(requestId)}/`;
    const streams = new Set([...this.#buffers.keys(), ...this.#writes.keys()]);
    await Promise.all(
      [...streams].filter((s) => s.startsWith(prefix)).map((s) => this.#writeBuffer(s)),
    );
  }

  async read(requestId: string, cursor: string | undefined, limit: number): Promise<LogPage> {
    const root = requestObjects(safeId(requestId)).logs;
    const position = decodeLogCursor(cursor, root);
    const max = Math.max(1, Math.floor(limit));
    const lines: string[] = [];
    let at = position;
    let fetched = 0;

    // The rest of a partly returned chunk first.
    if (at !== null && at.index !== "all") {
      const chunk = await this.#getLines(at.key);
      fetched++;
      const take = chunk.slice(at.index, at.index + (max - lines.length));
      lines.push(...take);
      const index = at.index + take.length;
      at = { key: at.key, index: index >= chunk.length ? "all" : index };
    }

    let token: string | undefined;
    listing: while (lines.length < max && fetched < this.#maxChunks) {
      const page: ListObjectsV2CommandOutput = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: root,
          ...(token ? { ContinuationToken: token } : at ? { StartAfter: at.key } : {}),
          MaxKeys: Math.min(1000, this.#maxChunks - fetched + 1),
        }),
      );
      for (const object of page.Contents ?? []) {
        const key = object.Key;
        if (key === undefined || !CHUNK_KEY.test(key)) continue;
        if (lines.length >= max || fetched >= this.#maxChunks) break listing;
        const chunk = await this.#getLines(key);
        fetched++;
        const take = chunk.slice(0, max - lines.length);
        lines.push(...take);
        at = { key, index: take.length >= chunk.length ? "all" : take.length };
      }
      if (!page.IsTruncated) break;
      token = page.NextContinuationToken;
    }
    return { lines, nextCursor: at === null ? (cursor ?? "") : encodeLogCursor(at) };
  }

  async #getLines(key: string): Promise<string[]> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      const text = await res.Body!.transformToString("utf8");
      const lines = text.split("\n");
      if (lines.at(-1) === "") lines.pop();
      return lines;
    } catch (error) {
      // Deleted by retention between the listing and the read: nothing left to return.
      if (isNoSuchKey(error)) return [];
      throw error;
    }
  }
}

interface LogPosition {
  key: string;
  index: number | "all";
}

function encodeLogCursor(at: LogPosition): string {
  return Buffer.from(`${at.key}:${at.index === "all" ? "*" : at.index}`, "utf8").toString(
    "base64url",
  );
}

/** The position a cursor names; null for the start. Anything this store did not issue → 400. */
function decodeLogCursor(cursor: string | undefined, root: string): LogPosition | null {
  if (cursor === undefined || cursor === "") return null;
  const invalid = () => new InvalidRequestError("cursor is not one this API returned", "cursor");
  if (!/^[A-Za-z0-9_-]{1,400}$/.test(cursor)) throw invalid();
  const text = Buffer.from(cursor, "base64url").toString("utf8");
  const colon = text.lastIndexOf(":");
  const key = text.slice(0, colon);
  const index = text.slice(colon + 1);
  if (colon < 0 || !key.startsWith(root) || !CHUNK_KEY.test(key)) throw invalid();
  if (index === "*") return { key, index: "all" };
  if (!/^[0-9]{1,9}$/.test(index)) throw invalid();
  return { key, index: Number(index) };
}
