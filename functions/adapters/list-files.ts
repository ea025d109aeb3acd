import type { Stats } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { join, relative, sep } from "node:path";

/**
 * Whether a file found in a job's outputs or checkpoint is the job's own: a regular file,
 * owned by the user jobs run as, with no other name. A job that hard-links a file it can
 * reach (the server's signing key, a database, credentials) into its outputs gives that
 * file a second link and, run as its own user, someone else's owner: it is never listed,
 * served, uploaded nor copied. `jobUid` null skips the owner check.
 */
export function isOwnOutput(info: Stats, jobUid: number | null): boolean {
  return info.isFile() && info.nlink === 1 && (jobUid === null || info.uid === jobUid);
}

/**
 * Every regular file below `dir`, as paths relative to it joined with "/", sorted: the names
 * outputs and checkpoints are stored under, on the filesystem and in S3 alike.
 * @param options.ownedBy only files {@link isOwnOutput} accepts for this uid.
 */
export async function listFiles(
  dir: string,
  options: { ownedBy?: number } = {},
): Promise<string[]> {
  const out: string[] = [];
  const { ownedBy } = options;
  const walk = async (d: string): Promise<void> => {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const full = join(d, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (entry.isFile()) {
        if (ownedBy !== undefined) {
          const info = await lstat(full).catch(() => null);
          if (info === null || !isOwnOutput(info, ownedBy)) continue;
        }
        out.push(relative(dir, full).split(sep).join("/"));
      }
    }
  };
  await walk(dir);
  return out.sort();
}
