/**
 * Signatures of a checkpoint folder, so the runner can skip saving a folder that is
 * exactly what the storage already holds (an empty one on a first attempt, or one the job
 * has not touched since the last save), without reading any file's content.
 *
 * A signature lists every entry below the folder (the folder included) with its type,
 * mode, size, inode, mtime and ctime. A change to an entry or to a folder's list of names
 * moves that entry's or folder's ctime, which nobody can set back. Timestamps have a
 * granularity (a kernel tick, a second on some filesystems), so a change right after the
 * signature was taken could leave them as they were: the signature then vouches only for
 * entries whose ctime is strictly older than a clock file written just before their
 * `lstat`, on the same filesystem (its clock, not this process's). Any later change gets a
 * ctime at least as new as that clock, so it cannot look unchanged. An entry changed too
 * recently to tell ("racy", as git calls it) makes the whole signature unusable (null),
 * and the folder is saved as before.
 */
import { readdirSync } from "node:fs";
import { lstat, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * The signature of an empty folder. It describes content, not timestamps: an empty folder
 * at exit is the same checkpoint as an empty one (or none) restored before the job started.
 */
export const EMPTY_FOLDER = "empty";

/**
 * The signature of `dir` (see the module comment): {@link EMPTY_FOLDER} when it holds
 * nothing; null when it cannot vouch for the folder (missing or not a folder, unreadable,
 * or an entry changed too recently). `clockFile` is rewritten to read the filesystem's
 * clock; it must be on the same filesystem as `dir` and outside it.
 */
export async function folderSignature(dir: string, clockFile: string): Promise<string | null> {
  try {
    // Synchronous: most checkpoint folders are empty, and this is on the path from a job's
    // exit to the next start.
    if (readdirSync(dir).length === 0) return EMPTY_FOLDER;
    await writeFile(clockFile, `${Date.now()}\n`);
    const clock = (await lstat(clockFile, { bigint: true })).ctimeNs;
    // Folders are read after their own lstat: a name added or removed since then moves
    // the folder's ctime past the clock.
    const walk = async (path: string, rel: string): Promise<string[][] | null> => {
      const st = await lstat(path, { bigint: true });
      if (st.ctimeNs >= clock) return null;
      // A symlink in place of the folder: its target could change without any of this.
      if (rel === "" && !st.isDirectory()) return null;
      const out = [[rel, st.mode, st.size, st.ino, st.dev, st.mtimeNs, st.ctimeNs].map(String)];
      if (!st.isDirectory()) return out;
      const names = (await readdir(path)).sort();
      const subs = await Promise.all(
        names.map((name) => walk(join(path, name), rel === "" ? name : `${rel}/${name}`)),
      );
      for (const sub of subs) {
        if (sub === null) return null;
        out.push(...sub);
      }
      return out;
    };
    const entries = await walk(dir, "");
    return entries === null ? null : JSON.stringify(entries);
  } catch {
    return null;
  }
}
