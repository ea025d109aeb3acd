/**
 * Where the dashboard's files come from at run time: a folder of built files (the Lambda
 * bundle ships one), or a build made on first use (the embedded server, build.ts).
 */
import { readdir, readFile } from "node:fs/promises";
import { extname, join } from "node:path";
import type { DashboardAssets, DashboardFile } from "../http/dashboard.ts";

/** The files a build holds, by name; nothing else is ever served. */
export const DASHBOARD_FILES = ["index.html", "app.js", "app.css", "favicon.svg"] as const;

const TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
};

/** The content type a dashboard file is served with. */
export function contentTypeOf(name: string): string {
  return TYPES[extname(name)] ?? "application/octet-stream";
}

/** Loads once, on first use, and keeps the result; a failed load is tried again next time. */
export function memoised(load: () => Promise<ReadonlyMap<string, DashboardFile>>): DashboardAssets {
  let pending: Promise<ReadonlyMap<string, DashboardFile>> | undefined;
  return () => {
    pending ??= load().catch((error: unknown) => {
      pending = undefined;
      throw error;
    });
    return pending;
  };
}

/** The dashboard as built into `dir` (see build.ts `writeDashboard`). */
export function dashboardFromDir(dir: string): DashboardAssets {
  return memoised(async () => {
    const present = new Set(await readdir(dir));
    const files = new Map<string, DashboardFile>();
    for (const name of DASHBOARD_FILES) {
      if (!present.has(name)) throw new Error(`the dashboard build in ${dir} lacks ${name}`);
      files.set(name, { body: await readFile(join(dir, name)), contentType: contentTypeOf(name) });
    }
    return files;
  });
}
