import { readdir } from "node:fs/promises";
import { join, relative, sep } from "node:path";

/**
 * Every regular file below `dir`, as paths relative to it joined with "/", sorted: the names
 * outputs and checkpoints are stored under, on the filesystem and in S3 alike.
 */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const full = join(d, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (entry.isFile()) out.push(relative(dir, full).split(sep).join("/"));
    }
  };
  await walk(dir);
  return out.sort();
}
