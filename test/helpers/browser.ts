/**
 * Real headless Chromium for the dashboard's tests, driven by playwright-core: Debian's
 * `chromium` package (`.ci/run` installs it), never a browser download. Without it the
 * tests fail and say so; they do not skip.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium, type Page } from "playwright-core";

/** Where Debian installs Chromium; `LONGRUN_CHROMIUM` names another binary. */
export const CHROMIUM_PATH = process.env.LONGRUN_CHROMIUM ?? "/usr/bin/chromium";

/** Flags for a quiet, sandbox-free headless run that talks to nothing but the page's server. */
export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export interface BrowserSession {
  context: BrowserContext;
  page: Page;
  /** Console messages of type error and uncaught page errors, in order. */
  errors: string[];
  /** Every URL the page requested. */
  requests: string[];
  close(): Promise<void>;
}

/** Launches Chromium with a fresh profile and opens one page that records errors and requests. */
export async function launchChromium(
  viewport = { width: 1280, height: 900 },
): Promise<BrowserSession> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `Chromium is not installed at ${CHROMIUM_PATH}: the dashboard's browser tests need it ` +
        "(apt-get update && apt-get install -y chromium; .ci/run does this), or set LONGRUN_CHROMIUM",
    );
  }
  const profile = mkdtempSync(join(tmpdir(), "longrun-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport,
    acceptDownloads: true,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const errors: string[] = [];
  const requests: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("request", (r) => requests.push(r.url()));
  return {
    context,
    page,
    errors,
    requests,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
