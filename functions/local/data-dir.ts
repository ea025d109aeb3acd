/**
 * The data directory's permissions (SPEC §5): nobody but the server reads tenants' inputs,
 * logs, outputs, the databases or the signing key.
 */
import { chmodSync, lstatSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";

/**
 * The server's umask: every file it (or SQLite, or a job it spawns) creates is 0600 and
 * every folder 0700 unless a mode is set explicitly.
 */
export const SERVER_UMASK = 0o077;

/** Folder of the jobs' work dirs (FsLayout.workDir); a job user must be able to reach it. */
const WORK = "work";

/**
 * Creates the data directory 0700, or tightens one that exists (an older version made it
 * 0755 and its databases 0644): the directory and everything at its top level lose every
 * permission for group and others. Deeper entries need no pass of their own: nobody else
 * can reach them through a 0700 directory.
 *
 * With a job user, the directory and its `work` folder are 0711 instead: the job user may
 * pass through to its own work dir (handed to it by the runner) but list nothing, and every
 * other entry stays 0700/0600, owned by the server.
 */
export function prepareDataDir(dataDir: string, options: { jobUser: boolean }): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const passThrough = options.jobUser ? 0o711 : 0o700;
  chmodSync(dataDir, passThrough);
  if (options.jobUser) mkdirSync(join(dataDir, WORK), { recursive: true, mode: 0o700 });
  for (const name of readdirSync(dataDir)) {
    const path = join(dataDir, name);
    const info = lstatSync(path);
    if (info.isSymbolicLink()) continue; // chmod would change the link's target
    if (info.isDirectory()) chmodSync(path, name === WORK ? passThrough : 0o700);
    else chmodSync(path, 0o600);
  }
}
