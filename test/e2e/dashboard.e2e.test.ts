/**
 * The dashboard in real headless Chromium against a real embedded server running real demo
 * jobs: sign in, queues, a request going QUEUED → RUNNING → SUCCEEDED with its progress bar
 * moving and its logs following, an artifact download, cancel, retry, problem details, a
 * phone-width layout; every request the page makes stays on the server's origin and the
 * console shows no error but the failed calls the test provoked on purpose.
 *
 * With LONGRUN_SCREENSHOTS_DIR set (npm run screenshots) the README's screenshots are
 * written there.
 */
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BrowserSession, launchChromium } from "../helpers/browser.ts";
import { demoQueue, TestServer } from "../helpers/server.ts";

const SHOTS = process.env.LONGRUN_SCREENSHOTS_DIR;

let server: TestServer;
let browser: BrowserSession;
/** Console errors the test provokes on purpose: the failed calls of its bad actions. */
const expectedErrors: RegExp[] = [];

async function screenshot(page: Page, name: string): Promise<void> {
  const dir = SHOTS ?? join(server.dataDir, "screenshots");
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
}

async function submit(queue: string, input: unknown): Promise<string> {
  const res = await server.submit(queue, { input });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  return res.body.id as string;
}

async function open(page: Page, hash: string): Promise<void> {
  // Page-side code as text: the test's own types know nothing of the DOM.
  await page.evaluate(`location.hash = ${JSON.stringify(hash)}`);
}

/** The value of the request page's progress bar, or null while it has none. */
async function progressValue(page: Page): Promise<number | null> {
  const bar = page.locator("progress#progress");
  if ((await bar.count()) === 0) return null;
  return Number(await bar.getAttribute("value"));
}

function statusBadge(page: Page) {
  return page.locator(".status-line .badge");
}

beforeAll(async () => {
  server = new TestServer({
    queues: {
      // One slot: a long job holds it, so the next request is seen waiting.
      demo: demoQueue({ maxRunning: 1, cancelGraceSeconds: 2 }),
      // One attempt, room for one waiting request: failures stay failed, a full queue is easy.
      solo: demoQueue({ maxRunning: 1, maxQueued: 1, maxAttempts: 1 }),
    },
  });
  await server.start();
  browser = await launchChromium();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.dispose();
});

describe("dashboard in Chromium", () => {
  it("refuses a bad token with the problem's detail, then signs in by keyboard", async () => {
    const { page } = browser;
    await page.goto(`${server.url}/`);
    expect(new URL(page.url()).pathname).toBe("/ui/");
    const token = page.getByLabel("API token");
    await expect.poll(() => page.evaluate("document.activeElement?.id")).toBe("token");

    await token.fill("not-a-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    expectedErrors.push(/status of 401/);
    await expect
      .poll(() => page.getByRole("alert").textContent())
      .toContain("a valid Authorization: Bearer <token> header is required");

    await token.fill("t-alice");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Queues" }).waitFor();
    expect(await page.evaluate('sessionStorage.getItem("longrun.token")')).toBe("t-alice");
    expect(await page.evaluate("document.cookie")).toBe("");
    expect(page.url()).not.toContain("t-alice");
    const row = page.getByRole("row", { name: /demo/ });
    await expect.poll(() => row.textContent()).toContain("0 / 1");
  });

  it("watches a request QUEUED → RUNNING → SUCCEEDED, follows its logs, cancels the job ahead", async () => {
    const { page } = browser;
    const blocker = await submit("demo", { steps: 300, sleepMs: 100 });
    await server.waitForStatus(blocker, "RUNNING");
    const watched = await submit("demo", {
      steps: 6,
      sleepMs: 600,
      artifactBytes: 4096,
      output: { answer: 42 },
    });

    // The queue: its counts, its chart, the two requests newest first.
    await page.getByRole("link", { name: "demo" }).click();
    await page.getByRole("heading", { name: "Queue demo" }).waitFor();
    const rows = page.locator("tbody tr");
    await expect.poll(() => rows.count()).toBe(2);
    expect(await rows.nth(0).textContent()).toContain(watched);
    expect(await rows.nth(0).textContent()).toContain("QUEUED");
    expect(await rows.nth(1).textContent()).toContain("RUNNING");
    await page.locator("svg.chart").first().waitFor();
    await page.getByLabel("Status").selectOption("RUNNING");
    await expect.poll(() => rows.count()).toBe(1);
    expect(await rows.nth(0).textContent()).toContain(blocker);
    await page.getByLabel("Status").selectOption("");
    await expect.poll(() => rows.count()).toBe(2);
    if (SHOTS) await screenshot(page, "dashboard-queue");

    // The waiting request shows where it stands.
    await page.getByRole("link", { name: watched }).click();
    await expect.poll(() => statusBadge(page).textContent()).toBe("QUEUED");
    await expect.poll(() => page.locator(".waiting").textContent()).toContain("Position");

    // Cancel the running job ahead of it.
    await open(page, `#/requests/${blocker}`);
    await expect.poll(() => statusBadge(page).textContent()).toBe("RUNNING");
    await page.getByRole("button", { name: "Cancel" }).click();
    await expect.poll(() => page.getByRole("status").textContent()).toMatch(/Cancel/);
    await expect.poll(() => statusBadge(page).textContent(), { timeout: 20_000 }).toBe("CANCELLED");
    await expect.poll(() => page.getByTestId("logs").textContent()).toContain("got SIGTERM");

    // Now the watched request runs: its bar moves and its log follows.
    await open(page, `#/requests/${watched}`);
    await expect.poll(() => statusBadge(page).textContent(), { timeout: 20_000 }).toBe("RUNNING");
    await expect.poll(() => progressValue(page), { timeout: 20_000 }).toBeGreaterThanOrEqual(1);
    const first = (await progressValue(page)) ?? 0;
    await expect.poll(() => progressValue(page), { timeout: 20_000 }).toBeGreaterThan(first);
    await expect.poll(() => page.getByTestId("logs").textContent()).toMatch(/demo: step \d\/6/);
    await expect.poll(() => statusBadge(page).textContent(), { timeout: 30_000 }).toBe("SUCCEEDED");
    expect(await progressValue(page)).toBe(6);
    await expect.poll(() => page.getByTestId("logs").textContent()).toContain("demo: done");
    await expect.poll(() => page.getByTestId("output").textContent()).toContain('"answer": 42');

    // The artifact downloads with its bytes.
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("link", { name: "artifact.bin" }).click(),
    ]);
    const bytes = readFileSync((await download.path()) as string);
    expect(bytes.length).toBe(4096);
    expect(bytes[300]).toBe(300 % 251);
    if (SHOTS) await screenshot(page, "dashboard-request");
  }, 120_000);

  it("shows the problem's detail for a request that is not there", async () => {
    const { page } = browser;
    await open(page, "#/requests/req_00000000000000000000000000");
    expectedErrors.push(/status of 404/);
    await expect
      .poll(() => page.getByRole("alert").textContent())
      .toContain("req_00000000000000000000000000");
  });

  it("retries a failed request, and shows the detail when the queue is full", async () => {
    const { page } = browser;
    const failed = await submit("solo", { steps: 2, sleepMs: 50, fail: "always" });
    await server.waitForStatus(failed, "FAILED");
    await open(page, `#/requests/${failed}`);
    await expect.poll(() => statusBadge(page).textContent()).toBe("FAILED");
    await page.getByRole("button", { name: "Retry" }).click();
    const outcome = page.getByRole("status");
    await expect.poll(() => outcome.textContent()).toMatch(/Retried as req_/);
    const retry = ((await outcome.textContent()) ?? "").match(/req_[0-9A-Z]{26}/)?.[0] ?? "";
    await page.getByRole("link", { name: retry }).click();
    await expect.poll(() => page.locator("h1").textContent()).toBe(retry);
    await expect.poll(() => page.locator(".facts").first().textContent()).toBeTruthy();
    await expect.poll(() => page.getByRole("link", { name: failed }).count()).toBe(1);
    await expect.poll(() => statusBadge(page).textContent(), { timeout: 20_000 }).toBe("FAILED");

    // Fill the queue: one running, one waiting; a retry now is refused with 429.
    const holder = await submit("solo", { steps: 300, sleepMs: 100 });
    await server.waitForStatus(holder, "RUNNING");
    await submit("solo", { steps: 1 });
    await open(page, `#/requests/${failed}`);
    await expect.poll(() => statusBadge(page).textContent()).toBe("FAILED");
    await page.getByRole("button", { name: "Retry" }).click();
    expectedErrors.push(/status of 429/);
    await expect
      .poll(() => page.getByRole("alert").textContent())
      .toMatch(/queue "solo" already holds 1 queued/);
    await server.fetch(`/v1/requests/${holder}/cancel`, { method: "POST" });
  }, 120_000);

  it("fits a phone-width screen", async () => {
    const { page } = browser;
    await page.setViewportSize({ width: 375, height: 740 });
    for (const hash of ["#/", "#/queues/demo"]) {
      await open(page, hash);
      await page.locator("h1").waitFor();
      const overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth",
      );
      expect(overflow, hash).toBeLessThanOrEqual(0);
    }
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it("signs out: the token is gone and the sign-in form is back", async () => {
    const { page } = browser;
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("API token").waitFor();
    expect(await page.evaluate('sessionStorage.getItem("longrun.token")')).toBeNull();
  });

  it("loaded nothing from elsewhere and logged no error but the provoked ones", () => {
    const origin = new URL(server.url).origin;
    for (const url of browser.requests) expect(new URL(url).origin, url).toBe(origin);
    const unexpected = browser.errors.filter(
      (e) => !expectedErrors.some((re) => /^Failed to load resource/.test(e) && re.test(e)),
    );
    expect(unexpected).toEqual([]);
  });
});
