import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { progressView } from "../../functions/cli/format.ts";
import type { LongrunRequest } from "../../functions/client/index.ts";
import { Hold } from "../helpers/hold.ts";
import { BACKENDS, demoQueue, ROOT, TestServer } from "../helpers/server.ts";

const BIN = join(ROOT, "bin/longrun.mjs");

// Every wait below is on a condition; a test runs several CLI processes, each of which can
// take seconds to start on a loaded machine with others starting beside it.
vi.setConfig({ testTimeout: 180_000 });

/** Artifact URLs: the embedded server's own signature, or an S3 presigned GET. */
const SIGNED_URL = {
  embedded: /^http:\/\/.*[?&]sig=/,
  aws: /^http:\/\/.*[?&]X-Amz-Signature=[0-9a-f]{64}/,
} as const;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const address = server.address();
  await new Promise<void>((r) => server.close(() => r()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/**
 * The `longrun` command line (SPEC §7) run for real, as a child process, against a real
 * server on each backend.
 */
// Concurrent: each test uses its own requests (and `listing` is one test's alone), and a CLI
// process takes most of a second to start, so running them side by side keeps this file quick.
describe.concurrent.each(BACKENDS)("longrun command line (%s backend, e2e)", (backend) => {
  const server = new TestServer({
    backend,
    queues: {
      jobs: demoQueue({ maxRunning: 10 }),
      once: demoQueue({ maxAttempts: 1 }),
      listing: demoQueue({ maxRunning: 1 }),
    },
  });
  // The CLI runs from an unrelated directory: nothing may depend on the repo being the cwd.
  const cwd = mkdtempSync(join(tmpdir(), "longrun-cli-"));
  // Jobs that must still run while the CLI looks at them hold on this file until released.
  const hold = new Hold();
  const held = { steps: 1, sleepMs: 1, holdFile: hold.path };

  /**
   * Runs `node bin/longrun.mjs …args` with LONGRUN_URL/LONGRUN_TOKEN for alice;
   * `onStderr` sees its stderr as it grows.
   */
  function cli(
    args: string[],
    env: Record<string, string> = {},
    onStderr?: (soFar: string) => void,
  ): Promise<Run> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, ...args], {
        cwd,
        env: { ...process.env, LONGRUN_URL: server.url, LONGRUN_TOKEN: "t-alice", ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (c: Buffer) => {
        stdout += c.toString();
      });
      child.stderr.on("data", (c: Buffer) => {
        stderr += c.toString();
        onStderr?.(stderr);
      });
      child.once("error", reject);
      child.once("close", (code) => resolve({ code, stdout, stderr }));
    });
  }

  /** Submits through the CLI and returns the printed id. */
  async function submitId(queue: string, input: unknown): Promise<string> {
    const run = await cli(["submit", queue, "--input", JSON.stringify(input)]);
    expect(run.code, run.stderr).toBe(0);
    return run.stdout.trim();
  }

  beforeAll(() => server.start());
  afterAll(async () => {
    await server.dispose();
    rmSync(cwd, { recursive: true, force: true });
    hold.dispose();
  });

  it("submit prints the id of the new request, with every submit flag passed on", async () => {
    writeFileSync(join(cwd, "input.json"), JSON.stringify({ steps: 1, sleepMs: 1, tag: "file" }));
    const run = await cli([
      "submit",
      "jobs",
      "--input-file",
      "input.json",
      "--priority",
      "7",
      "--timeout",
      "30",
      "--ttl",
      "120",
      "--idempotency-key",
      "cli-1",
    ]);
    expect(run.code, run.stderr).toBe(0);
    const id = run.stdout.trim();
    expect(id).toMatch(/^req_[0-9A-Z]{26}$/);
    const stored = await server.fetch(`/v1/requests/${id}`);
    expect(stored.body).toMatchObject({
      priority: 7,
      input: { steps: 1, sleepMs: 1, tag: "file" },
    });

    const again = await cli([
      "submit",
      "jobs",
      "--input-file",
      "input.json",
      "--priority",
      "7",
      "--timeout",
      "30",
      "--ttl",
      "120",
      "--idempotency-key",
      "cli-1",
      "--json",
    ]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ id, queue: "jobs", priority: 7 });
    expect(again.stderr).toMatch(/replayed/);
  });

  it("submit --wait shows progress, prints the output JSON and exits 0 when it SUCCEEDED", async () => {
    // The job holds at step 3 until the CLI has shown it there, however slow its polls.
    const release = new Hold();
    const input = { steps: 6, sleepMs: 10, holdFile: release.path, holdAtStep: 3 };
    const run = await cli(
      [
        "submit",
        "jobs",
        "--input",
        JSON.stringify({ ...input, output: { accuracy: 0.93 } }),
        "--wait",
      ],
      {},
      (soFar) => {
        if (soFar.includes("3/6 50% RUNNING")) release.release();
      },
    ).finally(() => release.dispose());
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({
      steps: 6,
      resumedFrom: 0,
      attempt: 1,
      output: { accuracy: 0.93 },
    });
    // Not a terminal: plain progress lines on stderr, one per change, ending in SUCCEEDED.
    const lines = run.stderr.trim().split("\n");
    expect(lines[0]).toMatch(/^req_\w+ submitted to jobs$/);
    expect(lines.some((l) => / RUNNING/.test(l))).toBe(true);
    expect(lines.some((l) => /\d\/6 \d+% RUNNING/.test(l))).toBe(true);
    expect(lines.at(-1)).toMatch(/ SUCCEEDED$/);
    expect(new Set(lines).size).toBe(lines.length);
  });

  it("submit --wait exits 1 with the request's error when the job fails", async () => {
    const run = await cli([
      "submit",
      "once",
      "--input",
      '{"fail": "always", "steps": 2}',
      "--wait",
    ]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(/ended FAILED: job_failed: /);

    const json = await cli(["submit", "once", "--input", '{"fail": "always"}', "--wait", "--json"]);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({
      status: "FAILED",
      attempt: 1,
      error: { code: "job_failed" },
    });
  });

  it("status prints a summary, and the Request with --json", async () => {
    const id = await submitId("jobs", { steps: 1, sleepMs: 1 });
    await server.waitForStatus(id, "SUCCEEDED");
    const json = await cli(["status", id, "--json"]);
    expect(json.code).toBe(0);
    const request = JSON.parse(json.stdout) as LongrunRequest;
    expect(request).toEqual((await server.fetch(`/v1/requests/${id}`)).body);
    const text = await cli(["status", id]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^id +${id}$`, "m"));
    expect(text.stdout).toMatch(/^status +SUCCEEDED$/m);
    expect(text.stdout).toMatch(/^progress +1\/1 /m);
  });

  it("list prints an aligned table, and a page as JSON with --json", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(await submitId("listing", { steps: 0 }));
    for (const id of ids) await server.waitForStatus(id, "SUCCEEDED");

    const table = await cli(["list", "listing"]);
    expect(table.code).toBe(0);
    const [header, ...rows] = table.stdout.trimEnd().split("\n");
    expect(header).toMatch(/^ID +STATUS +PRIORITY +ATTEMPT +PROGRESS +CREATED$/);
    expect(rows.map((r) => r.split(/ +/)[0])).toEqual([...ids].reverse());
    for (const column of ["STATUS", "PRIORITY", "CREATED"]) {
      const at = header!.indexOf(column);
      for (const row of rows) expect(row[at - 1]).toBe(" ");
      for (const row of rows) expect(row[at]).not.toBe(" ");
    }

    const page = await cli(["list", "listing", "--limit", "2", "--status", "SUCCEEDED", "--json"]);
    expect(page.code).toBe(0);
    const body = JSON.parse(page.stdout) as { items: { id: string }[]; nextCursor: string | null };
    expect(body.items.map((r) => r.id)).toEqual([ids[2], ids[1]]);
    expect(body.nextCursor).toEqual(expect.any(String));

    const none = await cli(["list", "listing", "--status", "queued,running", "--json"]);
    expect(JSON.parse(none.stdout)).toEqual({ items: [], nextCursor: null });
  });

  it("cancel stops a running request, and a finished one answers the problem with exit 1", async () => {
    const id = await submitId("jobs", held);
    await server.waitForStatus(id, "RUNNING");
    const run = await cli(["cancel", id]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^${id} (RUNNING|CANCELLED)`));
    await server.waitForStatus(id, "CANCELLED");

    const done = await submitId("jobs", { steps: 0 });
    await server.waitForStatus(done, "SUCCEEDED");
    const conflict = await cli(["cancel", done]);
    expect(conflict.code).toBe(1);
    const problem = await server.fetch(`/v1/requests/${done}/cancel`, { method: "POST" });
    expect(conflict.stderr).toContain(problem.body.detail);
  });

  it("logs prints the job's lines; logs --follow tails them until the request ends", async () => {
    const id = await submitId("jobs", { steps: 6, sleepMs: 200 });
    const follow = await cli(["logs", id, "--follow"]);
    expect(follow.code, follow.stderr).toBe(0);
    // It returned only because the request ended, after printing every line.
    const after = await server.fetch(`/v1/requests/${id}`);
    expect(after.body.status).toBe("SUCCEEDED");
    const lines = follow.stdout.trimEnd().split("\n");
    expect(lines.filter((l) => /^demo: step \d\/6$/.test(l))).toHaveLength(6);
    expect(lines.some((l) => /demo: done, 6 steps/.test(l))).toBe(true);

    const all = await cli(["logs", id]);
    expect(all.code).toBe(0);
    expect(all.stdout).toBe(follow.stdout);
  });

  it("result --download saves every artifact with its size and prints the paths", async () => {
    const id = await submitId("jobs", {
      steps: 1,
      sleepMs: 1,
      artifactBytes: 70_000,
      output: { ok: true },
    });
    await server.waitForStatus(id, "SUCCEEDED");
    const api = (await server.fetch(`/v1/requests/${id}/result`)).body as {
      artifacts: { name: string; size: number }[];
    };
    expect(api.artifacts.length).toBeGreaterThan(0);

    const run = await cli(["result", id, "--download", "out"]);
    expect(run.code, run.stderr).toBe(0);
    const paths = run.stdout.trim().split("\n");
    expect(paths).toEqual(api.artifacts.map((a) => join("out", a.name)));
    for (const a of api.artifacts) expect(statSync(join(cwd, "out", a.name)).size).toBe(a.size);

    const output = await cli(["result", id]);
    expect(output.code).toBe(0);
    expect(JSON.parse(output.stdout)).toMatchObject({ steps: 1, output: { ok: true } });
    const json = await cli(["result", id, "--json"]);
    // Artifact URLs are signed when asked for, so only their form can be compared.
    const withoutUrls = (r: typeof api) => ({
      ...r,
      artifacts: r.artifacts.map((a) => ({
        ...a,
        url: expect.stringMatching(SIGNED_URL[backend]),
      })),
    });
    expect(JSON.parse(json.stdout)).toEqual(withoutUrls(api));
  });

  it("result of a request still running answers not_ready with exit 1", async () => {
    const id = await submitId("jobs", held);
    await server.waitForStatus(id, "RUNNING");
    const run = await cli(["result", id]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/RUNNING/);
    await server.fetch(`/v1/requests/${id}/cancel`, { method: "POST" });
  });

  it("queues prints a table, and the queues as JSON with --json", async () => {
    const table = await cli(["queues"]);
    expect(table.code).toBe(0);
    const [header, ...rows] = table.stdout.trimEnd().split("\n");
    // YOURS and YOUR MAX: the caller's queued/running and its own limits there.
    expect(header).toMatch(/^NAME +QUEUED +RUNNING +MAX QUEUED +MAX RUNNING +YOURS +YOUR MAX$/);
    expect(rows.map((r) => r.split(/ +/)[0]).sort()).toEqual(["jobs", "listing", "once"]);
    for (const row of rows) expect(row).toMatch(/ \d+\/\d+ +\d+\/\d+$/);
    const json = await cli(["queues", "--json"]);
    const queues = JSON.parse(json.stdout) as { name: string; maxRunning: number }[];
    expect(queues.find((q) => q.name === "listing")).toMatchObject({ maxRunning: 1 });
  });

  it("usage errors exit 2 with a usage line; --help exits 0", async () => {
    const cases = [
      ["submit"],
      ["submit", "jobs", "--input", "{not json"],
      ["submit", "jobs", "--input", "1", "--input-file", "x.json"],
      ["submit", "jobs", "--priority", "high"],
      ["list", "jobs", "--status", "DONE"],
      ["status", "req_x", "--follow"],
      ["frobnicate"],
      [],
    ];
    const runs = await Promise.all(cases.map((args) => cli(args)));
    for (const [i, run] of runs.entries()) {
      const args = cases[i]!.join(" ");
      expect(run.code, args).toBe(2);
      expect(run.stderr, args).toMatch(/^usage: longrun /m);
      expect(run.stdout, args).toBe("");
    }
    const help = await cli(["--help"]);
    expect(help.code).toBe(0);
    for (const command of ["submit", "status", "result", "cancel", "list", "logs", "queues"]) {
      expect(help.stdout).toMatch(new RegExp(`^ {2}longrun ${command} `, "m"));
    }
  });

  it("an unknown token exits 1 with the problem's detail", async () => {
    const run = await cli(["queues"], { LONGRUN_TOKEN: "not-a-token" });
    expect(run.code).toBe(1);
    const problem = await server.fetch("/v1/queues", { token: "not-a-token" });
    expect(problem.status).toBe(401);
    expect(run.stderr).toContain(problem.body.detail);
    const flag = await cli(["queues", "--token", "not-a-token"]);
    expect(flag.code).toBe(1);
    expect(flag.stderr).toContain(problem.body.detail);
  });

  it("an unreachable server exits 1 with a clear message", async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const run = await cli(["status", "req_01JD3ZZZZZZZZZZZZZZZZZZZZZ", "--url", url]);
    expect(run.code).toBe(1);
    expect(run.stderr.trim()).toMatch(
      new RegExp(`^longrun: cannot reach longrun at ${url}: .*ECONNREFUSED`),
    );
  });
});

describe("submit --wait progress on a terminal", () => {
  it("draws a bar that fills with the request's progress", async () => {
    const out = new PassThrough();
    let drawn = "";
    out.on("data", (c: Buffer) => {
      drawn += c.toString();
    });
    const tty = Object.assign(out, { isTTY: true, columns: 120 });
    const view = progressView(tty);
    const base = {
      id: "req_01JD3ZZZZZZZZZZZZZZZZZZZZZ",
      queue: "jobs",
      priority: 0,
      input: {},
      metadata: {},
      createdAt: "2026-11-26T10:00:00.000Z",
      startedAt: "2026-11-26T10:00:01.000Z",
      finishedAt: null,
      attempt: 1,
      maxAttempts: 3,
      cancelRequested: false,
      position: null,
      error: null,
      files: {},
      retryOf: null,
      waitReason: null,
      waitDetail: null,
      estimatedStartAt: null,
    } satisfies Partial<LongrunRequest>;
    const at = (current: number, status: LongrunRequest["status"]): LongrunRequest => ({
      ...base,
      status,
      progress: { current, total: 4, message: `epoch ${current}`, updatedAt: base.startedAt },
    });
    // Updates arrive once per poll (a second apart); the bar redraws at most every 200 ms.
    const pause = () => new Promise((r) => setTimeout(r, 250));
    view.update(at(1, "RUNNING"));
    await pause();
    view.update(at(2, "RUNNING"));
    await pause();
    view.update(at(4, "SUCCEEDED"));
    view.stop();
    expect(drawn).toContain("2/4 50% | RUNNING · attempt 1/3 · epoch 2");
    expect(drawn).toContain("4/4 100% | SUCCEEDED");
    expect(drawn).toMatch(/█{30} 4\/4/);
  });
});
