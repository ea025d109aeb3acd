/**
 * The embedded server as an attacker and an operator meet it (issue 10, points 1 and 3–6):
 * a real server process, real jobs, real files.
 */
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestServer } from "../helpers/server.ts";

const isRoot = process.getuid?.() === 0;
/** A user without privileges, for the cases that need one while the suite runs as root. */
const nobody = isRoot
  ? {
      uid: Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" })),
      gid: Number(execFileSync("id", ["-g", "nobody"], { encoding: "utf8" })),
    }
  : undefined;

/** A job (node -e) that writes `a.bin` and runs `extra` (JS) with fs, path and `out` in scope. */
function jobQueue(extra = "", overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const script = [
    "const fs = require('node:fs'); const path = require('node:path');",
    "const out = process.env.LONGRUN_OUTPUT_DIR;",
    "fs.writeFileSync(path.join(out, 'a.bin'), 'x'.repeat(100));",
    extra,
    "fs.writeFileSync(path.join(out, 'result.json'), JSON.stringify(globalThis.result ?? {}));",
  ].join("\n");
  return {
    command: [process.execPath, "-e", script],
    maxQueued: 10,
    maxRunning: 2,
    timeoutSeconds: 60,
    maxAttempts: 1,
    queueTtlSeconds: 600,
    cancelGraceSeconds: 1,
    ...overrides,
  };
}

function modeOf(path: string): number {
  return statSync(path).mode & 0o777;
}

/** A data directory path that does not exist yet, inside a fresh temporary folder. */
function freshDataDir(): string {
  return join(mkdtempSync(join(tmpdir(), "longrun-hardening-")), "data");
}

async function startFails(server: TestServer): Promise<string> {
  try {
    await server.start();
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error("the server started");
}

describe("artifact download of an output the server cannot open (e2e)", () => {
  // The server must not be root here: root opens a mode-000 file anyway.
  const dataDir = mkdtempSync(join(tmpdir(), "longrun-e2e-"));
  if (nobody) chownSync(dataDir, nobody.uid, nobody.gid);
  const server = new TestServer({
    dataDir,
    queues: { jobs: jobQueue() },
    ...(nobody ? { user: nobody } : {}),
  });
  beforeAll(() => server.start());
  afterAll(() => server.dispose());

  it("answers 404 for a mode-000 artifact and keeps serving", async () => {
    const sub = await server.submit("jobs", { input: {} });
    await server.waitForStatus(sub.body.id, "SUCCEEDED");
    const result = await server.fetch(`/v1/requests/${sub.body.id}/result`);
    const artifact = result.body.artifacts.find((a: { name: string }) => a.name === "a.bin");
    expect(artifact.size).toBe(100);
    chmodSync(join(dataDir, "outputs", sub.body.id, "a.bin"), 0o000);

    const download = await fetch(artifact.url);
    expect(download.status).toBe(404);
    expect((await server.fetch("/v1/health")).status).toBe(200);
    expect(server.exitCode).toBeNull();
  });
});

describe("start-up refusals (e2e)", () => {
  it("refuses a non-loopback address without LONGRUN_TOKENS", async () => {
    const server = new TestServer({
      queues: { jobs: jobQueue() },
      env: { LONGRUN_TOKENS: "", LONGRUN_HOST: "0.0.0.0" },
    });
    try {
      const message = await startFails(server);
      expect(server.exitCode).toBe(1);
      expect(message).toMatch(/LONGRUN_HOST=0\.0\.0\.0 .*LONGRUN_TOKENS is not set/);
    } finally {
      await server.dispose();
    }
  });

  it("refuses a signing key shorter than 32 bytes, naming the file", async () => {
    const dataDir = freshDataDir();
    mkdirSync(dataDir, { recursive: true });
    const keyFile = join(dataDir, "artifact-url.key");
    // What a crash in the middle of the old, non-atomic write left: an empty file.
    for (const content of ["", Buffer.alloc(16, 1).toString("base64")]) {
      writeFileSync(keyFile, content);
      const server = new TestServer({ dataDir, queues: { jobs: jobQueue() } });
      const message = await startFails(server);
      expect(server.exitCode).toBe(1);
      expect(message).toContain(`signing key ${keyFile} holds`);
      expect(message).toContain("fewer than 32");
    }
    rmSync(join(dataDir, ".."), { recursive: true, force: true });
  });
});

describe("data directory permissions (e2e)", () => {
  it("creates the data directory 0700 with its files 0600, the key whole", async () => {
    const dataDir = freshDataDir();
    const server = new TestServer({ dataDir, queues: { jobs: jobQueue() } });
    try {
      await server.start();
      const sub = await server.submit("jobs", { input: {} });
      await server.waitForStatus(sub.body.id, "SUCCEEDED");
      expect(modeOf(dataDir)).toBe(0o700);
      for (const name of readdirSync(dataDir)) {
        const path = join(dataDir, name);
        expect(modeOf(path), name).toBe(statSync(path).isDirectory() ? 0o700 : 0o600);
      }
      for (const path of [
        "longrun.db",
        "webhooks.db",
        "artifact-url.key",
        `logs/${sub.body.id}.log`,
        `outputs/${sub.body.id}/a.bin`,
      ]) {
        expect(modeOf(join(dataDir, path)), path).toBe(0o600);
      }
      expect(modeOf(join(dataDir, "outputs", sub.body.id))).toBe(0o700);
      // Written whole through a temporary file that is gone again.
      const key = readFileSync(join(dataDir, "artifact-url.key"), "utf8");
      expect(Buffer.from(key, "base64").length).toBe(32);
      expect(readdirSync(dataDir).filter((n) => n.includes(".tmp-"))).toEqual([]);
    } finally {
      await server.dispose();
      rmSync(join(dataDir, ".."), { recursive: true, force: true });
    }
  });

  it("tightens a data directory an older version left 0755 with 0644 files", async () => {
    const dataDir = freshDataDir();
    const first = new TestServer({ dataDir, queues: { jobs: jobQueue() } });
    await first.start();
    await first.stop();
    chmodSync(dataDir, 0o755);
    chmodSync(join(dataDir, "longrun.db"), 0o644);
    chmodSync(join(dataDir, "artifact-url.key"), 0o644);
    mkdirSync(join(dataDir, "outputs"), { recursive: true });
    chmodSync(join(dataDir, "outputs"), 0o755);

    const second = new TestServer({ dataDir, queues: { jobs: jobQueue() } });
    try {
      await second.start();
      expect(modeOf(dataDir)).toBe(0o700);
      expect(modeOf(join(dataDir, "longrun.db"))).toBe(0o600);
      expect(modeOf(join(dataDir, "artifact-url.key"))).toBe(0o600);
      expect(modeOf(join(dataDir, "outputs"))).toBe(0o700);
    } finally {
      await second.dispose();
      rmSync(join(dataDir, ".."), { recursive: true, force: true });
    }
  });
});

/**
 * Job code that tries to read each of `targets` (paths in the data directory, three levels
 * above its work dir) and to hard-link the signing key into its outputs, and records in
 * result.json what it got. (No "../" in it: the config resolves path-like arguments.)
 */
const PROBE = `
const dataDir = path.dirname(path.dirname(path.dirname(process.cwd())));
const targets = JSON.parse(fs.readFileSync(process.env.LONGRUN_INPUT_FILE, 'utf8')).targets;
globalThis.result = { uid: process.getuid(), read: {}, linked: null };
for (const t of targets) {
  try { globalThis.result.read[t] = fs.readFileSync(path.join(dataDir, t)).length; }
  catch (e) { globalThis.result.read[t] = e.code; }
}
try { fs.linkSync(path.join(dataDir, 'artifact-url.key'), path.join(out, 'key.bin')); globalThis.result.linked = true; }
catch (e) { globalThis.result.linked = e.code; }
`;

describe("jobs and the server's secrets (e2e)", () => {
  it("does not list a signing key a job hard-linked into its outputs", async () => {
    const dataDir = freshDataDir();
    const server = new TestServer({ dataDir, queues: { jobs: jobQueue(PROBE) } });
    try {
      await server.start();
      const sub = await server.submit("jobs", { input: { targets: [] } });
      await server.waitForStatus(sub.body.id, "SUCCEEDED");
      const result = await server.fetch(`/v1/requests/${sub.body.id}/result`);
      // Same user as the server: the link succeeds (its own file), and still is not served.
      expect(result.body.output.linked).toBe(true);
      expect(existsSync(join(dataDir, "outputs", sub.body.id, "key.bin"))).toBe(true);
      expect(result.body.artifacts.map((a: { name: string }) => a.name)).toEqual(["a.bin"]);
    } finally {
      await server.dispose();
      rmSync(join(dataDir, ".."), { recursive: true, force: true });
    }
  });

  it.runIf(isRoot)(
    "with LONGRUN_JOB_USER, a job reads neither keys, databases nor other requests' files",
    async () => {
      const dataDir = freshDataDir();
      // The job user must be able to pass through every folder above the data directory.
      chmodSync(join(dataDir, ".."), 0o711);
      const server = new TestServer({
        dataDir,
        queues: { jobs: jobQueue(PROBE) },
        env: { LONGRUN_JOB_USER: "nobody" },
      });
      try {
        await server.start();
        const first = await server.submit("jobs", { input: { targets: [] } });
        await server.waitForStatus(first.body.id, "SUCCEEDED");
        const targets = [
          "artifact-url.key",
          "longrun.db",
          "webhooks.db",
          `outputs/${first.body.id}/a.bin`,
          `logs/${first.body.id}.log`,
        ];
        const sub = await server.submit("jobs", { input: { targets } });
        await server.waitForStatus(sub.body.id, "SUCCEEDED");
        const result = await server.fetch(`/v1/requests/${sub.body.id}/result`);
        const output = result.body.output;
        expect(output.uid).toBe(nobody?.uid);
        for (const t of targets) expect(output.read[t], t).toBe("EACCES");
        // Linking someone else's file: refused by the kernel (protected_hardlinks) or, where
        // allowed, not served: either way the key is not among the artifacts.
        expect(
          output.linked === "EPERM" || output.linked === "EACCES" || output.linked === true,
        ).toBe(true);
        expect(result.body.artifacts.map((a: { name: string }) => a.name)).toEqual(["a.bin"]);
        expect(modeOf(dataDir)).toBe(0o711);
      } finally {
        await server.dispose();
        rmSync(join(dataDir, ".."), { recursive: true, force: true });
      }
    },
  );
});
