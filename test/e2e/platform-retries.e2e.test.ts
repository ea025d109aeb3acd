/**
 * SPEC §3/§5 on a real embedded server: a restart, graceful or a SIGKILL, ends attempts
 * without spending the request's maxAttempts; an orphan that outlived its timeoutSeconds
 * while no server watched it ends FAILED `timeout` on restart.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { jobPids } from "../helpers/procs.ts";
import { TestServer } from "../helpers/server.ts";

/**
 * A job that marks its start (`started-<attempt>`), marks `overran-<attempt>` once it has
 * run longer than OVERRUN_MS, and exits 0 with its attempt as output when `release`
 * appears. It prints nothing, so a dead server's closed pipes do not end it.
 */
const HELD_JOB = `
const fs = require('node:fs'); const path = require('node:path');
const dir = process.env.MARKERS; const attempt = process.env.LONGRUN_ATTEMPT;
fs.writeFileSync(path.join(dir, 'started-' + attempt), '');
const t0 = Date.now();
const tick = () => {
  if (Date.now() - t0 > Number(process.env.OVERRUN_MS)) fs.writeFileSync(path.join(dir, 'overran-' + attempt), '');
  if (fs.existsSync(path.join(dir, 'release'))) {
    fs.writeFileSync(path.join(process.env.LONGRUN_OUTPUT_DIR, 'result.json'), JSON.stringify({ attempt: Number(attempt) }));
    process.exit(0);
  }
  setTimeout(tick, 50);
};
tick();
`;

/** Resolves once `path` exists (a condition the job sets, not a duration). */
async function until(path: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("attempts the platform ended (embedded, e2e)", () => {
  const markers = mkdtempSync(join(tmpdir(), "longrun-markers-"));
  const servers: TestServer[] = [];
  afterAll(async () => {
    writeFileSync(join(markers, "release"), "");
    for (const s of servers) await s.dispose();
    rmSync(markers, { recursive: true, force: true });
  });
  const queue = (timeoutSeconds: number, overrunMs: number) => ({
    command: [process.execPath, "-e", HELD_JOB],
    env: { MARKERS: markers, OVERRUN_MS: String(overrunMs) },
    maxQueued: 10,
    maxRunning: 1,
    timeoutSeconds,
    maxAttempts: 1,
    queueTtlSeconds: 600,
    cancelGraceSeconds: 1,
  });

  it("retries through a graceful restart and a SIGKILL with maxAttempts 1", async () => {
    const server = new TestServer({ queues: { q: queue(600, 3_600_000) } });
    servers.push(server);
    await server.start();
    const sub = await server.submit("q", { input: {} });
    const id = sub.body.id;
    await until(join(markers, "started-1"));

    await server.stop(); // SIGTERM: a graceful restart
    await server.start();
    await until(join(markers, "started-2"));
    const second = await server.waitForStatus(id, "RUNNING");
    await server.kill("SIGKILL");
    await server.start();
    await until(join(markers, "started-3"));
    writeFileSync(join(markers, "release"), "");
    const done = await server.waitForStatus(id, ["SUCCEEDED", "FAILED"]);

    expect(second).toMatchObject({ attempt: 2, maxAttempts: 1, error: null });
    expect(done).toMatchObject({ status: "SUCCEEDED", attempt: 3, maxAttempts: 1 });
    const result = await server.fetch(`/v1/requests/${id}/result`);
    expect(result.body.output).toEqual({ attempt: 3 });
    rmSync(join(markers, "release"));
  });

  it("ends an orphan that outlived its timeout FAILED timeout on restart, not retried", async () => {
    const server = new TestServer({ queues: { slow: queue(3, 3_500) } });
    servers.push(server);
    await server.start();
    const sub = await server.submit("slow", { input: {} });
    const id = sub.body.id;
    await server.waitForStatus(id, "RUNNING");
    await server.kill("SIGKILL");
    const orphans = jobPids(id);
    expect(orphans.length).toBeGreaterThan(0);
    // No server enforces the timeout now: the job runs on past it.
    await until(join(markers, "overran-1"));

    await server.start();
    const done = await server.waitForStatus(id, ["FAILED", "SUCCEEDED"]);

    expect(done).toMatchObject({ status: "FAILED", attempt: 1, error: { code: "timeout" } });
    expect(done.error.message).toContain("outlived its server");
    expect(jobPids(id)).toEqual([]);
  });
});
