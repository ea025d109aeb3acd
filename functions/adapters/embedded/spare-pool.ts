/**
 * Work dirs made before they are needed, so that a job's start renames one into place instead
 * of creating five folders (issue 15): on the machines the bench runs on, creating a folder
 * or a file costs 0.1–0.7 ms of CPU, a rename about 0.02 ms, and a start waits for them.
 *
 * A spare is shaped as a request's work root holding one work dir, `<spare>/1/`: a first
 * attempt (the work root not there yet) renames the whole spare into place as its work root;
 * any other start renames only the inner folder into the existing work root.
 *
 * An attempt's work dir, once its job has ended, is renamed into the pool and scrubbed back to
 * its skeleton: empty `checkpoint/`, `input/` and `output/` folders and an empty `input.json`
 * (writing into a file costs a tenth of creating one), nothing else, each a plain folder or
 * file (one link) of this process's user, with the mode a fresh one gets. Anything unexpected
 * on the way (a link, another owner, an entry that will not go) and it is removed instead. The pool keeps up
 * to `dirsMax` (beyond that a work dir is removed as before): enough for a deep queue's
 * drain to recycle every work dir, which costs its server's event loop about a fifth of
 * making one (the bench's dispatchScale: 2.9 instead of 3.6 ms of server CPU per job). A
 * couple are made in the background when it runs low, so the first starts find one too.
 *
 * Only for a server whose jobs run as its own user: a job user's work dir is handed to that
 * user, and what it leaves there is not the server's to reuse. Each server has its own pool
 * folder under `<dataDir>/work/.spare/` (a name no request id can take); pools of servers that
 * are gone are removed when a new one starts. The job launcher keeps its spare files (launch
 * records, logs) there too (launcher.mjs).
 */
import { mkdirSync, renameSync } from "node:fs";
import {
  chmod,
  lstat,
  mkdir,
  readdir,
  rename,
  rm,
  stat,
  truncate,
  writeFile,
} from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** The folders of a work dir's skeleton (jobs/runner attemptPaths). */
const SKELETON_DIRS = ["checkpoint", "input", "output"] as const;
/** The work dir's name inside a spare: a first attempt's (FsLayout.workDir). */
const INNER = "1";
const INPUT_FILE = "input.json";

export interface SparePoolOptions {
  /** Skeletons kept ready (made in the background below this; default 2). */
  dirsLow?: number;
  /** Most skeletons kept; a work dir ended beyond this is removed (default 128). */
  dirsMax?: number;
  /** Told about a failure that has no caller (the pool then works without the spare). */
  onError?: (error: unknown, context: string) => void;
}

/** See the module comment. */
export class SparePool {
  /** This server's pool folder; the launcher's spare files live here too. */
  readonly folder: string;
  readonly #opts: SparePoolOptions & { dirsLow: number; dirsMax: number };
  readonly #dirs: string[] = [];
  #next = 0;
  /** Skeletons being made or scrubbed: they count against `dirsMax` and `dirsLow`. */
  #coming = 0;
  /** Modes of a fresh folder and file under this process's umask, read from ones it made. */
  #dirMode: number | null = null;
  #fileMode: number | null = null;
  readonly #uid = process.getuid?.() ?? -1;
  readonly #ready: Promise<boolean>;
  #closed = false;

  /** @param workFolder `<dataDir>/work` */
  constructor(workFolder: string, options: SparePoolOptions = {}) {
    const parent = join(workFolder, ".spare");
    this.folder = join(parent, `${process.pid}-${Date.now().toString(36)}`);
    this.#opts = { dirsLow: 2, dirsMax: 128, ...options };
    this.#ready = this.#init(parent).catch((error: unknown) => {
      this.#opts.onError?.(error, "preparing the spare pool");
      return false;
    });
  }

  async #init(parent: string): Promise<boolean> {
    await mkdir(this.folder, { recursive: true });
    // Pools of servers that are gone (their pid no longer runs).
    for (const name of await readdir(parent)) {
      const pid = Number(name.split("-")[0]);
      if (join(parent, name) === this.folder) continue;
      if (Number.isSafeInteger(pid) && pid > 0 && alive(pid)) continue;
      await rm(join(parent, name), { recursive: true, force: true });
    }
    this.#dirMode = (await stat(this.folder)).mode & 0o7777;
    const probe = join(this.folder, "probe");
    await writeFile(probe, "");
    this.#fileMode = (await stat(probe)).mode & 0o7777;
    await rm(probe, { force: true });
    return true;
  }

  /** Resolves once the pool's folder exists (false: it could not be made). */
  ready(): Promise<boolean> {
    return this.#ready;
  }

  /** How many skeletons are ready now. */
  get size(): number {
    return this.#dirs.length;
  }

  #name(): string {
    return join(this.folder, `d${this.#next++}`);
  }

  /**
   * Renames a skeleton into `workDir`; false when none is ready or it cannot go there
   * (`workDir` exists and is not empty): the caller makes one. Synchronous, so a launch
   * awaits nothing for it.
   */
  takeDir(workDir: string): boolean {
    const spare = this.#dirs.pop();
    this.#topUp();
    if (spare === undefined) return false;
    const inner = join(spare, INNER);
    const root = dirname(workDir);
    try {
      if (basename(workDir) === INNER) {
        try {
          // A new work root: the spare is one (rename(2) fails on a root with entries, and
          // replaces only an empty one).
          renameSync(spare, root);
          return true;
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if (code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "ENOENT") throw error;
          if (code === "ENOENT") mkdirSync(dirname(root), { recursive: true });
          else {
            renameSync(inner, workDir);
            this.#discard(spare);
            return true;
          }
          renameSync(spare, root);
          return true;
        }
      }
      mkdirSync(root, { recursive: true });
      renameSync(inner, workDir);
      this.#discard(spare);
      return true;
    } catch {
      this.#discard(spare);
      return false;
    }
  }

  /**
   * Takes an ended attempt's work dir into the pool, or removes it: resolves once `workDir`
   * is gone from its place, never rejects.
   */
  async recycleDir(workDir: string): Promise<void> {
    const full = this.#dirs.length + this.#coming >= this.#opts.dirsMax;
    if (this.#closed || full || !(await this.#ready)) {
      await rm(workDir, { recursive: true, force: true }).catch((error: unknown) =>
        this.#opts.onError?.(error, `cleaning ${workDir}`),
      );
      return;
    }
    this.#coming++;
    const spare = this.#name();
    try {
      try {
        // The spare's own folder is made here, off the path to any start.
        await mkdir(spare);
        await rename(workDir, join(spare, INNER));
      } catch (error) {
        this.#discard(spare);
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
          await rm(workDir, { recursive: true, force: true }).catch(() => {});
        }
        return;
      }
      const clean = await this.#scrub(join(spare, INNER)).catch(() => false);
      if (clean && !this.#closed) this.#dirs.push(spare);
      else this.#discard(spare);
    } finally {
      this.#coming--;
    }
  }

  /**
   * Brings a folder back to the skeleton; false when it holds something this process may
   * not reuse (the caller then removes it).
   */
  async #scrub(dir: string): Promise<boolean> {
    if (!(await this.#plainOwn(dir, "dir"))) return false;
    const keep = new Set<string>([...SKELETON_DIRS, INPUT_FILE]);
    const extra = (await readdir(dir)).filter((name) => !keep.has(name));
    await Promise.all(extra.map((name) => rm(join(dir, name), { recursive: true, force: true })));
    for (const name of SKELETON_DIRS) {
      const path = join(dir, name);
      // `output/` went away with the outputs of a successful attempt.
      if ((await lstat(path).catch(() => null)) === null) {
        await mkdir(path);
        continue;
      }
      if (!(await this.#plainOwn(path, "dir"))) return false;
      const inside = await readdir(path);
      if (inside.length === 0) continue;
      await Promise.all(
        inside.map((entry) => rm(join(path, entry), { recursive: true, force: true })),
      );
      if ((await readdir(path)).length > 0) return false;
    }
    const input = join(dir, INPUT_FILE);
    if ((await lstat(input).catch(() => null)) === null) await writeFile(input, "");
    else if (!(await this.#plainOwn(input, "file"))) return false;
    else await truncate(input, 0);
    // Nothing came back meanwhile (a process of the job that outlived it, say).
    return (await readdir(dir)).length === keep.size;
  }

  /**
   * Whether `path` is a folder, or a file with one link, of this user (never a link); its
   * mode set back to a fresh one's.
   */
  async #plainOwn(path: string, kind: "dir" | "file"): Promise<boolean> {
    const info = await lstat(path);
    const mode = kind === "dir" ? this.#dirMode : this.#fileMode;
    if (mode === null) return false;
    if (kind === "dir" ? !info.isDirectory() : !info.isFile() || info.nlink !== 1) return false;
    if (this.#uid >= 0 && info.uid !== this.#uid) return false;
    if ((info.mode & 0o7777) !== mode) await chmod(path, mode);
    return true;
  }

  #topUp(): void {
    while (!this.#closed && this.#dirs.length + this.#coming < this.#opts.dirsLow) {
      this.#coming++;
      void this.#make().finally(() => {
        this.#coming--;
      });
    }
  }

  async #make(): Promise<void> {
    if (!(await this.#ready)) return;
    const dir = this.#name();
    try {
      await mkdir(join(dir, INNER), { recursive: true });
      await Promise.all(SKELETON_DIRS.map((name) => mkdir(join(dir, INNER, name))));
      await writeFile(join(dir, INNER, INPUT_FILE), "");
      if (!this.#closed) {
        this.#dirs.push(dir);
        return;
      }
    } catch (error) {
      this.#opts.onError?.(error, "making a spare work dir");
    }
    this.#discard(dir);
  }

  #discard(path: string): void {
    void rm(path, { recursive: true, force: true }).catch(() => {});
  }

  /** Stops keeping skeletons and removes the pool's folder. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#dirs.length = 0;
    await this.#ready;
    await rm(this.folder, { recursive: true, force: true }).catch(() => {});
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
