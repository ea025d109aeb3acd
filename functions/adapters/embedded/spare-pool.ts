/**
 * Inodes made before they are needed, so that a job's start renames or links them into place
 * instead of creating them (issue 15). On the machines the bench runs on, creating a file or a
 * folder costs 0.1–0.7 ms of CPU while a rename or a link costs about 0.02 ms, and a start
 * used to create eight: the work dir and its three folders, `input.json`, the launch record
 * and the log (launcher.mjs), and the work root.
 *
 * - **Work dirs** are recycled: an attempt's work dir, once its job has ended, is renamed
 *   into the pool, scrubbed back to its skeleton (empty `checkpoint/`, `input/`, `output/`
 *   folders and an `input.json` file, nothing else, every entry a plain file or folder of
 *   this process's user with the mode a fresh one gets) and renamed into the place of the
 *   next attempt's work dir. Anything unexpected found on the way (a link, another owner, a
 *   file that will not go) and the folder is removed instead. A few skeletons are made in the
 *   background when the pool runs low, so the first starts find one too.
 * - **Empty files** are made in the background for the job launcher, which links one into
 *   place as the launch record (link(2) fails if the name exists, as the exclusive create it
 *   replaces did) and one as a new log.
 *
 * Only for a server whose jobs run as its own user: a job user's work dir is handed to that
 * user, and what it leaves there is not the server's to reuse. Each server has its own pool
 * folder under `<dataDir>/work/.spare/` (a name no request id can take); pools of servers
 * that are gone are removed when a new one starts.
 */
import { mkdirSync, renameSync } from "node:fs";
import { chmod, lstat, mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";

/** The folders of a work dir's skeleton (jobs/runner attemptPaths). */
const SKELETON_DIRS = ["checkpoint", "input", "output"] as const;
const INPUT_FILE = "input.json";

export interface SparePoolOptions {
  /** Skeletons kept ready (made in the background below this; default 4). */
  dirsLow?: number;
  /** Most skeletons kept; a recycled one beyond this is removed (default 64). */
  dirsMax?: number;
  /** Empty files kept ready (default 16). */
  filesLow?: number;
  /** Told about a failure that has no caller (the pool then works without the spare). */
  onError?: (error: unknown, context: string) => void;
}

/** See the module comment. Methods that put things in place are synchronous and never throw. */
export class SparePool {
  readonly #root: string;
  readonly #opts: Required<Omit<SparePoolOptions, "onError">> & Pick<SparePoolOptions, "onError">;
  readonly #dirs: string[] = [];
  readonly #files: string[] = [];
  #next = 0;
  #makingDirs = 0;
  #makingFiles = 0;
  /** Modes of a fresh folder and file under this process's umask, read from what it made. */
  #modes: { dir: number; file: number } | null = null;
  readonly #uid = process.getuid?.() ?? -1;
  readonly #ready: Promise<boolean>;
  #closed = false;

  /** @param workFolder `<dataDir>/work` */
  constructor(workFolder: string, options: SparePoolOptions = {}) {
    const parent = join(workFolder, ".spare");
    this.#root = join(parent, `${process.pid}-${Date.now().toString(36)}`);
    this.#opts = { dirsLow: 4, dirsMax: 64, filesLow: 16, ...options };
    this.#ready = this.#init(parent).catch((error: unknown) => {
      this.#opts.onError?.(error, "preparing the spare pool");
      return false;
    });
  }

  async #init(parent: string): Promise<boolean> {
    await mkdir(this.#root, { recursive: true });
    // Pools of servers that are gone (their pid no longer runs).
    for (const name of await readdir(parent)) {
      const pid = Number(name.split("-")[0]);
      if (join(parent, name) === this.#root || (Number.isSafeInteger(pid) && alive(pid))) continue;
      await rm(join(parent, name), { recursive: true, force: true });
    }
    const probe = join(this.#root, "probe");
    await mkdir(probe);
    const handle = await open(join(probe, INPUT_FILE), "wx");
    await handle.close();
    this.#modes = {
      dir: (await stat(probe)).mode & 0o7777,
      file: (await stat(join(probe, INPUT_FILE))).mode & 0o7777,
    };
    await rm(probe, { recursive: true, force: true });
    return true;
  }

  #name(): string {
    return join(this.#root, String(this.#next++));
  }

  /**
   * Renames a skeleton into `workDir` (its parent is made if needed); false when none is
   * ready or it cannot go there (`workDir` exists and is not empty): the caller makes one.
   */
  takeDir(workDir: string): boolean {
    const spare = this.#dirs.pop();
    this.#topUpDirs();
    if (spare === undefined) return false;
    try {
      mkdirSync(dirname(workDir), { recursive: true });
      renameSync(spare, workDir);
      return true;
    } catch {
      this.#discard(spare);
      return false;
    }
  }

  /** An empty file of this process's user, or undefined when none is ready. */
  takeFile(): string | undefined {
    const spare = this.#files.pop();
    this.#topUpFiles();
    return spare;
  }

  /**
   * Takes an ended attempt's work dir into the pool (or removes it): resolves once
   * `workDir` is gone from its place, never rejects.
   */
  async recycleDir(workDir: string): Promise<void> {
    if (this.#closed || !(await this.#ready) || this.#dirs.length >= this.#opts.dirsMax) {
      await rm(workDir, { recursive: true, force: true }).catch((error: unknown) =>
        this.#opts.onError?.(error, `cleaning ${workDir}`),
      );
      return;
    }
    const spare = this.#name();
    try {
      await rename(workDir, spare);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
      await rm(workDir, { recursive: true, force: true }).catch(() => {});
      return;
    }
    let clean = false;
    try {
      clean = await this.#scrub(spare);
    } catch {
      clean = false;
    }
    if (clean && !this.#closed) this.#dirs.push(spare);
    else this.#discard(spare);
  }

  /**
   * Brings a folder back to the skeleton; false when it holds something this process may
   * not reuse (the folder is then removed by the caller).
   */
  async #scrub(dir: string): Promise<boolean> {
    const modes = this.#modes;
    if (modes === null || !(await this.#plainOwn(dir, "dir"))) return false;
    const keep = new Set<string>([...SKELETON_DIRS, INPUT_FILE]);
    const extra = (await readdir(dir)).filter((name) => !keep.has(name));
    await Promise.all(extra.map((name) => rm(join(dir, name), { recursive: true, force: true })));
    for (const name of SKELETON_DIRS) {
      const path = join(dir, name);
      const info = await lstat(path).catch(() => null);
      // `output/` was moved away with the outputs of a successful attempt.
      if (info === null) {
        await mkdir(path);
        continue;
      }
      if (!(await this.#plainOwn(path, "dir"))) return false;
      const inside = await readdir(path);
      await Promise.all(
        inside.map((entry) => rm(join(path, entry), { recursive: true, force: true })),
      );
      if ((await readdir(path)).length > 0) return false;
    }
    const input = join(dir, INPUT_FILE);
    if ((await lstat(input).catch(() => null)) === null) {
      await (await open(input, "wx")).close();
    } else if (!(await this.#plainOwn(input, "file"))) {
      return false;
    }
    return (await readdir(dir)).length === keep.size;
  }

  /**
   * Whether `path` is a folder (or a file with one link) of this user, with the mode set
   * back to a fresh one's: a job may have changed it.
   */
  async #plainOwn(path: string, kind: "dir" | "file"): Promise<boolean> {
    const info = await lstat(path);
    const modes = this.#modes;
    if (modes === null || (this.#uid >= 0 && info.uid !== this.#uid)) return false;
    if (kind === "dir" ? !info.isDirectory() : !info.isFile() || info.nlink !== 1) return false;
    const mode = kind === "dir" ? modes.dir : modes.file;
    if ((info.mode & 0o7777) !== mode) await chmod(path, mode);
    return true;
  }

  #topUpDirs(): void {
    while (!this.#closed && this.#dirs.length + this.#makingDirs < this.#opts.dirsLow) {
      this.#makingDirs++;
      void this.#makeDir().finally(() => {
        this.#makingDirs--;
      });
    }
  }

  async #makeDir(): Promise<void> {
    if (!(await this.#ready)) return;
    const dir = this.#name();
    try {
      await mkdir(dir);
      await Promise.all(SKELETON_DIRS.map((name) => mkdir(join(dir, name))));
      await (await open(join(dir, INPUT_FILE), "wx")).close();
      if (!this.#closed) {
        this.#dirs.push(dir);
        return;
      }
    } catch (error) {
      this.#opts.onError?.(error, "making a spare work dir");
    }
    this.#discard(dir);
  }

  #topUpFiles(): void {
    while (!this.#closed && this.#files.length + this.#makingFiles < this.#opts.filesLow) {
      this.#makingFiles++;
      void this.#makeFile().finally(() => {
        this.#makingFiles--;
      });
    }
  }

  async #makeFile(): Promise<void> {
    if (!(await this.#ready)) return;
    const file = this.#name();
    try {
      await (await open(file, "wx", 0o600)).close();
      if (!this.#closed) this.#files.push(file);
      else this.#discard(file);
    } catch (error) {
      this.#opts.onError?.(error, "making a spare file");
    }
  }

  #discard(path: string): void {
    void rm(path, { recursive: true, force: true }).catch(() => {});
  }

  /** Stops making spares and removes the pool's folder. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#dirs.length = 0;
    this.#files.length = 0;
    await this.#ready;
    await rm(this.#root, { recursive: true, force: true }).catch(() => {});
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

