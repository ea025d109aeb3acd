/**
 * Builds the dashboard (ui/) with esbuild: one minified ES module, one style sheet, the
 * page and its icon. The embedded server builds it in memory on the first request for it
 * (`npm start` needs no build step); the CDK app writes it into the HTTP Lambda's bundle
 * (`node --import tsx functions/dashboard/build.ts <dir>`).
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { DashboardAssets, DashboardFile } from "../http/dashboard.ts";
import { contentTypeOf, DASHBOARD_FILES, memoised } from "./assets.ts";

/** The dashboard's sources. */
export const UI_SOURCE_DIR = join(import.meta.dirname, "ui");

/** Builds the dashboard's files in memory. */
export async function buildDashboard(): Promise<Map<string, DashboardFile>> {
  // esbuild is a build tool: loaded only when a build is asked for, never by a Lambda.
  const { build } = await import("esbuild");
  const result = await build({
    entryPoints: { app: join(UI_SOURCE_DIR, "main.tsx") },
    bundle: true,
    format: "esm",
    minify: true,
    write: false,
    outdir: "/ui",
    jsx: "automatic",
    jsxImportSource: "preact",
    target: ["chrome109", "firefox115", "safari16"],
    legalComments: "none",
    tsconfig: join(UI_SOURCE_DIR, "tsconfig.json"),
    logLevel: "silent",
  });
  const files = new Map<string, DashboardFile>();
  for (const out of result.outputFiles) {
    const name = out.path.split("/").pop() ?? "";
    files.set(name, { body: out.contents, contentType: contentTypeOf(name) });
  }
  for (const name of ["index.html", "favicon.svg"]) {
    files.set(name, {
      body: await readFile(join(UI_SOURCE_DIR, name)),
      contentType: contentTypeOf(name),
    });
  }
  for (const name of DASHBOARD_FILES) {
    if (!files.has(name)) throw new Error(`the dashboard build made no ${name}`);
  }
  return files;
}

/** The dashboard built on first use and kept (the embedded server's). */
export function dashboardFromBuild(): DashboardAssets {
  return memoised(buildDashboard);
}

/** Builds the dashboard into `dir`. */
export async function writeDashboard(dir: string): Promise<void> {
  const files = await buildDashboard();
  await mkdir(dir, { recursive: true });
  for (const [name, file] of files) await writeFile(join(dir, name), file.body);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write("usage: node --import tsx functions/dashboard/build.ts <out-dir>\n");
    process.exit(2);
  }
  await writeDashboard(dir);
}
