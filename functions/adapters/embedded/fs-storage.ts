/**
 * The embedded server's files under its data directory:
 *
 * ```
 * <dataDir>/checkpoints/<id>/current -> v-<rand>   the saved checkpoint (a symlink swapped atomically)
 * <dataDir>/checkpoints/<id>/v-<rand>/             checkpoint versions (only `current`'s is kept)
 * <dataDir>/outputs/<id>/                          outputs of the successful attempt (result.json + artifacts)
 * <dataDir>/logs/<id>.log                          stdout/stderr of every attempt, appended
 * <dataDir>/work/<id>/<attempt>/                   an attempt's work dir while it runs
 * <dataDir>/work/.spare/<server>/                  work dirs and empty files made ahead (spare-pool.ts)
 * <dataDir>/uploads/<upload id>                    an upload's bytes, read-only (fs-files.ts)
 * <dataDir>/inputs/<id>/<name>                     the request's own input files (hard links)
 * ```
 */
import { randomBytes } from "node:crypto";
import { constants, existsSync, readdirSync, readlinkSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import {
  appendFile,
  chmod,
  copyFile,
  cp,
  link,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  realpath,
  rename,
  rm,
  symlink,
} from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import type { AttemptStorage } from "../../../jobs/runner/attempt.ts";
import { InvalidRequestError } from "../../core/errors.ts";
import type { Artifact, LogPage, LogStore, ResultStore } from "../../core/ports.ts";
import { isOwnOutput, listFiles } from "../list-files.ts";

/** Request ids become path segments: accept only what cannot escape its folder. */
function safeId(requestId: string): string {
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(requestId)) {
    throw new Error(`refusing request id ${JSON.stringify(requestId)} as a path segment`);
  }
  return requestId;
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

/** Paths of the data directory's layout (see the module comment). */
export class FsLayout {
  constructor(readonly dataDir: string) {}

  checkpointRoot(requestId: string): string {
    return join(this.dataDir, "checkpoints", safeId(requestId));
  }
  outputDir(requestId: string): string {
    return join(this.dataDir, "outputs", safeId(requestId));
  }
  logFile(requestId: string): string {
    return join(this.dataDir, "logs", `${safeId(requestId)}.log`);
  }
  workDir(requestId: string, attempt: number): string {
    return join(this.dataDir, "work", safeId(requestId), String(attempt));
  }
  workRoot(requestId: string): string {
    return join(this.dataDir, "work", safeId(requestId));
  }
  /** The request's input files (SPEC §2 `files`), one per name. */
  inputDir(requestId: string): string {
    return join(this.dataDir, "inputs", safeId(requestId));
  }
  /** Folder of uploads' bytes and of the temp files PUTs stream into. */
  uploadsDir(): string {
    return join(this.dataDir, "uploads");
  }
  /** An upload's bytes once a PUT of exactly its size completed. */
  uploadFile(uploadId: string): string {
    return join(this.dataDir, "uploads", safeId(uploadId));
  }

  /** Deletes everything kept for a request (retention). */
  async deleteRequest(requestId: string): Promise<void> {
    await Promise.all([
      rm(this.checkpointRoot(requestId), { recursive: true, force: true }),
      rm(this.outputDir(requestId), { recursive: true, force: true }),
      rm(this.logFile(requestId), { force: true }),
      rm(this.workRoot(requestId), { recursive: true, force: true }),
      rm(this.inputDir(requestId), { recursive: true, force: true }),
    ]);
  }
}

function toLayout(data: FsLayout | string): FsLayout {
  return typeof data === "string" ? new FsLayout(data) : data;
}

const CURRENT = "current";
/** Age after which a version or link that `current` does not name is a crash's leftover. */
const LEFTOVER_AGE_MS = 10 * 60 * 1000;

/**
 * Checkpoints and outputs of one request on the local filesystem.
 *
 * A checkpoint is saved as a new version folder, and then the `current` symlink is
 * replaced by rename, which is atomic: a crash at any step leaves `current` pointing at a
 * complete version (or absent before the first save), never at a half-copied one. A
 * directory cannot be renamed over a non-empty one, hence the symlink. The version a save
 * replaces is removed right after the swap; leftovers of a crash are removed by a later
 * save once they are old enough not to be another save in flight.
 */
export class FsAttemptStorage implements AttemptStorage {
  readonly #layout: FsLayout;
  readonly #requestId: string;
  readonly #jobUid: number | null;
  /** Saves of one request run one after another, so versions never race for `current`. */
  #queue: Promise<void> = Promise.resolve();

  /**
   * @param options.jobUid the uid jobs run as: a checkpoint file that is not its own (a
   *   hard link to one of the server's files) is not copied, since the copy would hand its
   *   content to the next attempt. Default: no owner check.
   */
  constructor(layout: FsLayout, requestId: string, options: { jobUid?: number } = {}) {
    this.#layout = layout;
    this.#requestId = safeId(requestId);
    this.#jobUid = options.jobUid ?? null;
  }

  /** The folder the current checkpoint lives in, or null before the first save. */
  async currentCheckpoint(): Promise<string | null> {
    return this.#currentCheckpointSync();
  }

  /** Whether a checkpoint was saved: one readlink, without a trip through the thread pool. */
  hasCheckpoint(): boolean {
    return this.#currentCheckpointSync() !== null;
  }

  async restoreCheckpoint(dir: string): Promise<void> {
    const current = this.#currentCheckpointSync();
    if (current === null) return;
    try {
      await cp(current, dir, { recursive: true, force: true });
    } catch (error) {
      // `current` naming a version that is gone reads as no checkpoint, as it always has.
      if (isMissing(error) && (await lstat(current).catch(() => null)) === null) return;
      throw error;
    }
  }

  /** {@link currentCheckpoint}, synchronously: one readlink. */
  #currentCheckpointSync(): string | null {
    const root = this.#layout.checkpointRoot(this.#requestId);
    try {
      // One readlink, not a realpath that reads every folder up to the root.
      return resolve(root, readlinkSync(join(root, CURRENT)));
    } catch (error) {
      if (isMissing(error)) return null;
      // Not a symlink: a folder put there by hand is the checkpoint itself.
      if ((error as NodeJS.ErrnoException).code === "EINVAL") return join(root, CURRENT);
      throw error;
    }
  }

  /** Links the request's input files into `dir`, read-only (see {@link linkInputs}). */
  async restoreInputs(dir: string): Promise<void> {
    await linkInputs(this.#layout.inputDir(this.#requestId), dir);
  }

  saveCheckpoint(dir: string): Promise<void> {
    const run = this.#queue.then(() => this.#save(dir));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #save(dir: string): Promise<void> {
    const root = this.#layout.checkpointRoot(this.#requestId);
    const previous = await readlink(join(root, CURRENT)).catch(async (error: unknown) => {
      // Before the first save the folder may not exist yet.
      if (isMissing(error)) await mkdir(root, { recursive: true });
      return null;
    });
    const tag = randomBytes(6).toString("hex");
    const version = `v-${tag}`;
    const jobUid = this.#jobUid;
    await cp(dir, join(root, version), {
      recursive: true,
      ...(jobUid === null
        ? {}
        : {
            filter: async (src: string) => {
              const info = await lstat(src).catch(() => null);
              return info !== null && (!info.isFile() || isOwnOutput(info, jobUid));
            },
          }),
    });
    const link = join(root, `link-${tag}`);
    await symlink(version, link);
    await rename(link, join(root, CURRENT));
    if (previous !== null && previous !== version && /^v-[0-9a-f]+$/.test(previous)) {
      await rm(join(root, previous), { recursive: true, force: true });
    }
    await this.#collectLeftovers(root, version);
  }

  /**
   * Removes versions and links a crash left mid-save. Only old ones: a fresh one may belong
   * to a save still in flight elsewhere (a dying server's runner racing the reaper).
   */
  async #collectLeftovers(root: string, keep: string): Promise<void> {
    const cutoff = Date.now() - LEFTOVER_AGE_MS;
    for (const name of await readdir(root)) {
      if (name === CURRENT || name === keep) continue;
      const info = await lstat(join(root, name)).catch(() => null);
      if (info && info.mtimeMs < cutoff) {
        await rm(join(root, name), { recursive: true, force: true });
      }
    }
  }

  /**
   * Replaces the request's outputs with `dir`, which is moved into place (the runner is done
   * with it): one rename on the same filesystem, else a copy made aside and renamed into
   * place. The request is marked SUCCEEDED only after this resolves, so a crash midway
   * leaves a request that is retried, never one whose result is half there.
   */
  async saveOutputs(dir: string): Promise<void> {
    const target = this.#layout.outputDir(this.#requestId);
    // No outputs: nothing is moved (a missing folder reads as none), so the work dir keeps its
    // `output/` for the next job (spare-pool.ts: no folder to make again), and outputs an
    // earlier attempt left cannot read as this one's.
    if (isEmptyFolder(dir)) {
      // Looked for synchronously: there is none nearly always, and a job's exit waits here.
      if (existsSync(target)) await rm(target, { recursive: true, force: true });
      return;
    }
    let error = await moveAside(dir, target);
    if (error?.code === "ENOENT") {
      // The outputs folder does not exist yet (a new data directory), or `dir` is gone.
      await mkdir(dirname(target), { recursive: true });
      error = await moveAside(dir, target);
    }
    if (error === null) return;
    // EXDEV: another filesystem. ENOTEMPTY, EEXIST, ENOTDIR: outputs of an earlier attempt
    // whose request was not marked SUCCEEDED (a crash right after saving them).
    if (!["EXDEV", "ENOTEMPTY", "EEXIST", "ENOTDIR"].includes(error.code ?? "")) throw error;
    const tmp = `${target}.tmp-${randomBytes(6).toString("hex")}`;
    const aside = await moveAside(dir, tmp);
    if (aside?.code === "EXDEV") await cp(dir, tmp, { recursive: true });
    else if (aside !== null) throw aside;
    await rm(target, { recursive: true, force: true });
    await rename(tmp, target);
  }
}

/**
 * Hard-links every file of `from` into `to` (a copy across filesystems); nothing when `from`
 * does not exist. The files are 0444 from the moment they were stored, and a job running as
 * another user (`LONGRUN_JOB_USER`) cannot change the mode of a file it does not own, so the
 * links are read-only to it; one link per attempt means the job cannot rename the request's
 * own copy away either.
 */
export async function linkInputs(from: string, to: string): Promise<void> {
  let names: string[];
  try {
    // Synchronous: most requests have no input files, and every launch waits for this.
    names = readdirSync(from);
  } catch (error) {
    if (isMissing(error)) return;
    throw error;
  }
  for (const name of names) {
    try {
      await link(join(from, name), join(to, name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EXDEV") throw error;
      await copyFile(join(from, name), join(to, name));
      await chmod(join(to, name), 0o444);
    }
  }
}

/** Whether `path` is a folder with nothing in it (synchronous: one small read on a job's exit). */
function isEmptyFolder(path: string): boolean {
  try {
    return readdirSync(path).length === 0;
  } catch {
    return false;
  }
}

/** Renames `from` to `to`; the error instead of a rejection, null when it worked. */
async function moveAside(from: string, to: string): Promise<NodeJS.ErrnoException | null> {
  try {
    await rename(from, to);
    return null;
  } catch (error) {
    return error as NodeJS.ErrnoException;
  }
}

/** An artifact opened for download: the open file and its size when it was opened. */
export interface OpenArtifact {
  handle: FileHandle;
  size: number;
}

export interface FsResultStoreOptions {
  /**
   * The uid jobs run as (`LONGRUN_JOB_USER`, else the server's own): only files it owns are
   * outputs. null skips the owner check (a platform without uids).
   */
  jobUid?: number | null;
}

/**
 * Results of succeeded requests from `<dataDir>/outputs/<id>/`. Artifact URLs come from
 * `urlFor`, so the server decides how they are signed and served.
 */
export class FsResultStore implements ResultStore {
  private readonly layout: FsLayout;
  readonly #jobUid: number | null;

  /** @param data the data directory, or its {@link FsLayout} */
  constructor(
    data: FsLayout | string,
    private readonly urlFor: (requestId: string, name: string) => string,
    options: FsResultStoreOptions = {},
  ) {
    this.layout = toLayout(data);
    this.#jobUid = options.jobUid !== undefined ? options.jobUid : (process.getuid?.() ?? null);
  }

  async getResult(requestId: string): Promise<{ output: unknown; artifacts: Artifact[] }> {
    const dir = this.layout.outputDir(requestId);
    let names: string[];
    try {
      names = await listFiles(dir);
    } catch (error) {
      if (isMissing(error)) return { output: null, artifacts: [] };
      throw error;
    }
    let output: unknown = null;
    const artifacts: Artifact[] = [];
    for (const name of names) {
      // lstat: the listing's file types come from the directory, this is the file itself.
      const info = await lstat(join(dir, name)).catch(() => null);
      if (!info || !isOwnOutput(info, this.#jobUid)) continue;
      if (name === "result.json") {
        // The runner checked it before saving; a file damaged since reads as no output.
        try {
          output = JSON.parse(await readFile(join(dir, name), "utf8"));
        } catch {
          output = null;
        }
        continue;
      }
      artifacts.push({ name, size: info.size, url: this.urlFor(requestId, name) });
    }
    return { output, artifacts };
  }

  /**
   * Opens artifact `name` of a request for the server's download route; null when there is
   * none, when the name or a link on its way leaves the request's outputs folder, or when
   * the file is not the job's own ({@link isOwnOutput}). The file is opened first and then
   * inspected through its descriptor, so what is checked is what is sent, even if the path
   * is removed or replaced meanwhile (retention, a leftover job).
   */
  async openArtifact(requestId: string, name: string): Promise<OpenArtifact | null> {
    const parts = name.split("/");
    if (
      name === "result.json" ||
      parts.some((p) => p === "" || p === "." || p === ".." || p.includes("\\") || p.includes("\0"))
    ) {
      return null;
    }
    let file: string;
    try {
      // Links are resolved here and the result must still lie inside the folder: a link
      // a job left in its outputs never reaches a file elsewhere.
      const base = await realpath(this.layout.outputDir(requestId));
      file = await realpath(join(base, ...parts));
      if (!file.startsWith(base + sep)) return null;
    } catch (error) {
      if (isUnavailable(error)) return null;
      throw error;
    }
    let handle: FileHandle;
    try {
      // O_NOFOLLOW: a link swapped in after the check is refused, not followed. O_NONBLOCK:
      // a FIFO does not hang the open (it is then refused as not a regular file).
      handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (error) {
      if (isUnavailable(error)) return null;
      throw error;
    }
    try {
      const info = await handle.stat();
      if (!isOwnOutput(info, this.#jobUid)) {
        await handle.close();
        return null;
      }
      return { handle, size: info.size };
    } catch (error) {
      await handle.close().catch(() => {});
      throw error;
    }
  }
}

/**
 * Errors that mean "no such artifact" to a downloader: gone (retention), unreadable (mode
 * 000), a link where none may be (ELOOP from O_NOFOLLOW), a device without a reader.
 */
function isUnavailable(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return (
    isMissing(error) ||
    code === "EACCES" ||
    code === "EPERM" ||
    code === "ELOOP" ||
    code === "ENXIO" ||
    code === "EISDIR"
  );
}

/** Upper bound of bytes one `read` scans, so a page costs the same however big the log is. */
const MAX_PAGE_BYTES = 1024 * 1024;

/**
 * Job logs, one file per request at `<dataDir>/logs/<id>.log`, every attempt appended.
 * Each line of the file is one log line; LocalProcessCompute starts every attempt with
 * `--- attempt <n> ---` and writes the runner's own notes as `[longrun] ...` lines.
 *
 * Cursors are byte offsets into the file, as decimal strings: stable while the file only
 * grows, and a read costs what it returns. Only complete lines are returned; a line still
 * being written is returned by a later call.
 */
export class FsLogStore implements LogStore {
  /** The last write per request; writes of one request run one after another. */
  readonly #writes = new Map<string, Promise<void>>();
  /**
   * Lines waiting for the write in flight to end. They go out together in one write, so a
   * job printing thousands of lines a second costs a few writes, not one per line.
   */
  readonly #waiting = new Map<string, { parts: string[]; written: Promise<void> }>();

  private readonly layout: FsLayout;

  /** @param data the data directory, or its {@link FsLayout} */
  constructor(data: FsLayout | string) {
    this.layout = toLayout(data);
  }

  /** Appends lines to a request's log, in call order; resolves once they are written. */
  append(requestId: string, lines: readonly string[]): Promise<void> {
    const text = lines.map((l) => `${l.replaceAll("\n", " ")}\n`).join("");
    const waiting = this.#waiting.get(requestId);
    if (waiting) {
      waiting.parts.push(text);
      return waiting.written;
    }
    const file = this.layout.logFile(requestId);
    const parts = [text];
    const previous = this.#writes.get(requestId) ?? Promise.resolve();
    const written = previous.then(async () => {
      // From here on, new lines wait for the next write.
      this.#waiting.delete(requestId);
      const batch = parts.join("");
      try {
        await appendFile(file, batch);
      } catch (error) {
        if (!isMissing(error)) throw error;
        await mkdir(join(file, ".."), { recursive: true });
        await appendFile(file, batch);
      }
    });
    this.#waiting.set(requestId, { parts, written });
    const settled = written.catch(() => {});
    this.#writes.set(requestId, settled);
    void settled.then(() => {
      if (this.#writes.get(requestId) === settled) this.#writes.delete(requestId);
    });
    return written;
  }

  /** Resolves once every append issued so far has been written. */
  async flush(requestId?: string): Promise<void> {
    if (requestId !== undefined) await this.#writes.get(requestId);
    else await Promise.all(this.#writes.values());
  }

  async read(requestId: string, cursor: string | undefined, limit: number): Promise<LogPage> {
    const offset = parseCursor(cursor);
    const max = Math.max(1, Math.floor(limit));
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      handle = await open(this.layout.logFile(requestId), "r");
    } catch (error) {
      if (isMissing(error)) return { lines: [], nextCursor: String(offset) };
      throw error;
    }
    try {
      const lines: string[] = [];
      let position = offset;
      let pending = Buffer.alloc(0);
      let scanned = 0;
      const chunk = Buffer.alloc(64 * 1024);
      while (lines.length < max && scanned < MAX_PAGE_BYTES) {
        const { bytesRead } = await handle.read(chunk, 0, chunk.length, offset + scanned);
        if (bytesRead === 0) break;
        scanned += bytesRead;
        pending = Buffer.concat([pending, chunk.subarray(0, bytesRead)]);
        let start = 0;
        let nl = pending.indexOf(0x0a, start);
        while (nl >= 0 && lines.length < max) {
          lines.push(pending.toString("utf8", start, nl));
          position += nl + 1 - start;
          start = nl + 1;
          nl = pending.indexOf(0x0a, start);
        }
        pending = pending.subarray(start);
      }
      // A page that found no newline in all it may scan returns that text as one line, so
      // a reader is never stuck behind an enormous line.
      if (lines.length === 0 && scanned >= MAX_PAGE_BYTES && pending.length > 0) {
        lines.push(pending.toString("utf8"));
        position += pending.length;
      }
      return { lines, nextCursor: String(position) };
    } finally {
      await handle.close();
    }
  }
}

function parseCursor(cursor: string | undefined): number {
  if (cursor === undefined || cursor === "") return 0;
  if (!/^[0-9]{1,15}$/.test(cursor)) {
    throw new InvalidRequestError("cursor is not one this API returned", "cursor");
  }
  return Number(cursor);
}
