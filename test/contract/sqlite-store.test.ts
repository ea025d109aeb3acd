import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { ulid } from "ulidx";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  SQLITE_SCHEMA_VERSION,
  SqliteRequestStore,
} from "../../functions/adapters/embedded/sqlite-store.ts";
import { IdempotencyConflictError } from "../../functions/core/errors.ts";
import type { RequestRecord } from "../../functions/core/request.ts";
import { queuedRecord } from "../helpers/records.ts";
import { describeRequestStoreContract } from "./request-store.contract.ts";
import type { RaceReport, RaceTask } from "./sqlite-race-worker.ts";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, "..", "..");
const T0 = Date.UTC(2030, 0, 1);

function tempDbPath(): { path: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), "longrun-sqlite-"));
  return { dir, path: join(dir, "longrun.db") };
}

describeRequestStoreContract("SqliteRequestStore", async () => {
  const { dir, path } = tempDbPath();
  const opened = [new SqliteRequestStore(path)];
  return {
    store: opened[0] as SqliteRequestStore,
    async another() {
      const s = new SqliteRequestStore(path);
      opened.push(s);
      return s;
    },
    async cleanup() {
      for (const s of opened) s.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

function queuedRequest(queue: string, overrides: Partial<RequestRecord> = {}): RequestRecord {
  return queuedRecord({
    id: `req_${ulid()}`,
    queue,
    createdAt: T0,
    updatedAt: 0,
    expiresAt: T0 + 3_600_000,
    ...overrides,
  });
}

describe("SqliteRequestStore on a file", () => {
  let dir: string;
  let path: string;
  const toClose: { close(): void }[] = [];

  beforeEach(() => {
    ({ dir, path } = tempDbPath());
  });

  afterEach(() => {
    for (const c of toClose.splice(0)) c.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("opens the file in WAL mode with foreign keys and records its schema version", () => {
    // Act
    toClose.push(new SqliteRequestStore(path));
    const raw = new Database(path);
    toClose.push(raw);

    // Assess
    expect(raw.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(raw.pragma("user_version", { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
    const tables = raw
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
      .all()
      .map((r) => (r as { name: string }).name);
    expect(tables).toEqual([
      "queue_counters",
      "queue_run_stats",
      "queued_by_priority",
      "requests",
      "tenant_counters",
      "tenant_queued_by_priority",
    ]);
  });

  it("reopens an existing file without losing or duplicating anything", async () => {
    // Prepare
    const first = new SqliteRequestStore(path);
    const r = queuedRequest("q");
    await first.submit(r, { key: "k", bodyHash: "h" }, { maxQueued: 10, retryAfterSeconds: 1 });
    first.close();

    // Act
    const again = new SqliteRequestStore(path);
    toClose.push(again);

    // Assess
    expect(await again.get(r.id)).toEqual(r);
    expect(await again.queueCounts("q")).toEqual({ queued: 1, running: 0 });
    const replay = await again.submit(
      queuedRequest("q"),
      { key: "k", bodyHash: "h" },
      { maxQueued: 10, retryAfterSeconds: 1 },
    );
    expect(replay.kind).toBe("replayed");
  });

  it("upgrades a schema 1 file: the per-priority counts are computed from its rows", async () => {
    // Prepare: a file as schema 1 left it (no per-priority table), with requests waiting.
    const old = new SqliteRequestStore(path);
    const limits = { maxQueued: 10, retryAfterSeconds: 1 };
    const high = queuedRequest("q", { priority: 7, createdAt: T0 + 2 });
    const low = queuedRequest("q", { priority: 2, createdAt: T0 + 1 });
    await old.submit(high, null, limits);
    await old.submit(queuedRequest("q", { priority: 7, createdAt: T0 + 3 }), null, limits);
    await old.submit(low, null, limits);
    old.close();
    const raw = new Database(path);
    raw.exec("DROP TABLE queued_by_priority");
    raw.pragma("user_version = 1");
    raw.close();

    // Act
    const upgraded = new SqliteRequestStore(path);
    toClose.push(upgraded);
    const next = await upgraded.submit(
      queuedRequest("q", { priority: 5, createdAt: T0 + 4 }),
      null,
      limits,
    );

    // Assess
    expect(await upgraded.position(low)).toBe(3);
    expect(await upgraded.position(high)).toBe(0);
    expect(next).toMatchObject({ kind: "created", position: 2 });
  });

  it("upgrades a schema 2 file: its requests read as never retried by the platform", async () => {
    // Prepare: a file as schema 2 left it (no platform_retries column), a request in it.
    const old = new SqliteRequestStore(path);
    const r = queuedRequest("q", { createdAt: T0 });
    await old.submit(r, null, { maxQueued: 10, retryAfterSeconds: 1 });
    old.close();
    const raw = new Database(path);
    raw.exec("ALTER TABLE requests DROP COLUMN platform_retries");
    raw.pragma("user_version = 2");
    raw.close();

    // Act
    const upgraded = new SqliteRequestStore(path);
    toClose.push(upgraded);
    const claim = await upgraded.claimNext("q", { maxRunning: 1 }, T0);
    const retried =
      claim.kind === "started"
        ? await upgraded.transition({
            id: r.id,
            from: ["STARTING"],
            attempt: 1,
            set: { attempt: 2, platformRetries: 1 },
          })
        : null;

    // Assess
    expect(claim).toMatchObject({ kind: "started", request: { platformRetries: 0 } });
    expect(retried).toMatchObject({ attempt: 2, platformRetries: 1 });
    expect(await upgraded.get(r.id)).toMatchObject({ attempt: 2, platformRetries: 1 });
  });

  it("upgrades a schema 2 file: the per-tenant counts are computed from its rows", async () => {
    // Prepare: a file as schema 2 left it (no per-tenant table), one tenant already running.
    const old = new SqliteRequestStore(path);
    const limits = { maxQueued: 10, retryAfterSeconds: 1 };
    for (let i = 0; i < 3; i++) {
      await old.submit(queuedRequest("q", { tenant: "busy", createdAt: T0 + i }), null, limits);
    }
    await old.claimNext("q", { maxRunning: 10 }, T0);
    await old.submit(queuedRequest("q", { tenant: "idle", createdAt: T0 + 9 }), null, limits);
    old.close();
    const raw = new Database(path);
    raw.exec(
      "DROP INDEX requests_tenant_ready; DROP TABLE tenant_counters; DROP TABLE tenant_queued_by_priority",
    );
    raw.pragma("user_version = 2");
    raw.close();

    // Act
    const upgraded = new SqliteRequestStore(path);
    toClose.push(upgraded);
    const claim = await upgraded.claimNext("q", { maxRunning: 10 }, T0);

    // Assess: the idle tenant goes first although its request is the newest.
    expect(await upgraded.tenantCounts("q", "busy")).toEqual({ queued: 2, running: 1 });
    expect(claim).toMatchObject({ kind: "started", request: { tenant: "idle" } });
    expect(await upgraded.tenantCounts("q", "idle")).toEqual({ queued: 0, running: 1 });
  });

  it("upgrades a schema 3 file: its keys move into their requests and the ready index goes", async () => {
    // Prepare: a file as schema 3 left it: keys in a table of their own (with its index on
    // request_id), the ready index, no key columns in requests.
    const old = new SqliteRequestStore(path);
    const limits = { maxQueued: 10, retryAfterSeconds: 1 };
    const keyed = queuedRequest("q", { tenant: "a", createdAt: T0 });
    const plain = queuedRequest("q", { tenant: "a", createdAt: T0 + 1 });
    await old.submit(keyed, { key: "k1", bodyHash: "h1" }, limits);
    await old.submit(plain, null, limits);
    old.close();
    const raw = new Database(path);
    raw.exec(`
      CREATE TABLE idempotency_keys (
        tenant TEXT NOT NULL, key TEXT NOT NULL,
        request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
        body_hash TEXT NOT NULL, PRIMARY KEY (tenant, key));
      CREATE INDEX idempotency_keys_request ON idempotency_keys (request_id);
      INSERT INTO idempotency_keys SELECT tenant, idem_key, id, idem_hash FROM requests
        WHERE idem_key IS NOT NULL;
      DROP INDEX requests_idempotency;
      ALTER TABLE requests DROP COLUMN idem_key;
      ALTER TABLE requests DROP COLUMN idem_hash;
      CREATE INDEX requests_ready
        ON requests (queue, priority DESC, created_at, id) WHERE status = 'QUEUED';`);
    raw.pragma("user_version = 3");
    raw.close();

    // Act
    const upgraded = new SqliteRequestStore(path);
    toClose.push(upgraded);
    const replay = await upgraded.submit(
      queuedRequest("q", { tenant: "a" }),
      { key: "k1", bodyHash: "h1" },
      limits,
    );
    const conflict = upgraded.submit(
      queuedRequest("q", { tenant: "a" }),
      { key: "k1", bodyHash: "other" },
      limits,
    );

    // Assess
    expect(replay).toMatchObject({ kind: "replayed", request: { id: keyed.id } });
    await expect(conflict).rejects.toBeInstanceOf(IdempotencyConflictError);
    const check = new Database(path);
    toClose.push(check);
    expect(check.pragma("user_version", { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
    const names = (
      check.prepare("SELECT name FROM sqlite_master WHERE tbl_name = 'requests'").all() as {
        name: string;
      }[]
    ).map((r) => r.name);
    expect(names).toContain("requests_idempotency");
    expect(names).not.toContain("requests_ready");
    expect(
      check.prepare("SELECT name FROM sqlite_master WHERE name LIKE 'idempotency_keys%'").all(),
    ).toEqual([]);
    const page = await upgraded.list({ tenant: "a", queue: "q", limit: 10 });
    expect(page.items.map((r) => r.id)).toEqual([plain.id, keyed.id]);
    expect(await upgraded.get(keyed.id)).toEqual(keyed);
  });

  it("gives the exact position at submit even for a request dated before others of its priority", async () => {
    // Prepare
    const store = new SqliteRequestStore(path);
    toClose.push(store);
    const limits = { maxQueued: 10, retryAfterSeconds: 1 };
    await store.submit(queuedRequest("q", { priority: 8, createdAt: T0 + 20 }), null, limits);
    const later = queuedRequest("q", { priority: 3, createdAt: T0 + 10 });
    await store.submit(later, null, limits);
    const earlier = queuedRequest("q", { priority: 3, createdAt: T0 + 5 });

    // Act
    const outcome = await store.submit(earlier, null, limits);

    // Assess
    expect(outcome).toMatchObject({ kind: "created", position: 1 });
    expect(await store.position(later)).toBe(2);
  });

  it("refuses to open a file written by a newer schema version", () => {
    // Prepare
    const raw = new Database(path);
    raw.pragma(`user_version = ${SQLITE_SCHEMA_VERSION + 1}`);
    raw.close();

    // Act
    const open = () => new SqliteRequestStore(path);

    // Assess
    expect(open).toThrow(/newer than this build supports/);
  });

  it("works on a private in-memory database", async () => {
    // Prepare
    const mem = new SqliteRequestStore(":memory:");
    toClose.push(mem);
    const r = queuedRequest("q");

    // Act
    await mem.submit(r, null, { maxQueued: 1, retryAfterSeconds: 1 });

    // Assess
    expect(await mem.get(r.id)).toEqual(r);
  });

  it("frees an idempotency key together with its request", async () => {
    // Prepare: retention deletes old requests straight from the table.
    const store = new SqliteRequestStore(path);
    toClose.push(store);
    const old = queuedRequest("q", { idempotencyKey: "k" });
    const limits = { maxQueued: 10, retryAfterSeconds: 1 };
    await store.submit(old, { key: "k", bodyHash: "h1" }, limits);
    const raw = new Database(path);
    toClose.push(raw);
    raw.pragma("foreign_keys = ON");
    raw.prepare("DELETE FROM requests WHERE id = ?").run(old.id);

    // Act
    const outcome = await store.submit(queuedRequest("q"), { key: "k", bodyHash: "h2" }, limits);

    // Assess
    expect(outcome.kind).toBe("created");
  });

  it("recounts the counters from the rows and repairs them when asked", async () => {
    // Prepare
    const store = new SqliteRequestStore(path);
    toClose.push(store);
    const limits = { maxQueued: 10, retryAfterSeconds: 1 };
    for (let i = 0; i < 3; i++) await store.submit(queuedRequest("q"), null, limits);
    await store.claimNext("q", { maxRunning: 5 }, T0);
    const raw = new Database(path);
    toClose.push(raw);
    raw.prepare("UPDATE queue_counters SET queued = 9, running = 0 WHERE queue = 'q'").run();

    // Act
    const counted = await store.recount();
    const before = await store.queueCounts("q");
    const repaired = await store.recount({ fix: true });
    const after = await store.queueCounts("q");

    // Assess
    expect(counted).toEqual({ q: { queued: 2, running: 1 } });
    expect(before).toEqual({ queued: 9, running: 0 });
    expect(repaired).toEqual({ q: { queued: 2, running: 1 } });
    expect(after).toEqual({ queued: 2, running: 1 });
  });

  it("keeps the counters equal to the rows through a mixed history", async () => {
    // Prepare
    const store = new SqliteRequestStore(path);
    toClose.push(store);
    const limits = { maxQueued: 100, retryAfterSeconds: 1 };
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const r = queuedRequest(i % 2 ? "a" : "b", { expiresAt: T0 + (i % 3 === 0 ? 0 : 1e9) });
      ids.push((await store.submit(r, null, limits)).request.id);
    }

    // Act
    for (const q of ["a", "b"]) {
      for (let i = 0; i < 4; i++) await store.claimNext(q, { maxRunning: 3 }, T0);
    }
    for (const id of ids) {
      await store.transition({ id, from: ["STARTING"], to: "RUNNING", attempt: 1 });
      await store.transition({ id, from: ["QUEUED"], to: "CANCELLED" });
    }
    const first = ids[1] as string;
    await store.transition({ id: first, from: ["RUNNING"], to: "STARTING", set: { attempt: 2 } });

    // Assess
    const recounted = await store.recount();
    expect(await store.queueCounts("a")).toEqual(recounted.a);
    expect(await store.queueCounts("b")).toEqual(recounted.b);
  });
});

/** Starts one worker process per task, releases them together, collects their reports. */
async function race(tasks: RaceTask[]): Promise<RaceReport[]> {
  const worker = join(here, "sqlite-race-worker.ts");
  const children: ChildProcess[] = [];
  try {
    const runs = tasks.map((task) => {
      const child = spawn(process.execPath, ["--import", "tsx", worker, JSON.stringify(task)], {
        cwd: repoRoot,
        stdio: ["pipe", "pipe", "pipe"],
      });
      children.push(child);
      let stderr = "";
      child.stderr?.on("data", (d: Buffer) => {
        stderr += d.toString();
      });
      const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
      let markReady: () => void = () => {};
      const ready = new Promise<void>((resolve) => {
        markReady = resolve;
      });
      const report = new Promise<RaceReport>((resolve, reject) => {
        lines.on("line", (line) => {
          if (line === "ready") markReady();
          else if (line.startsWith("{")) resolve(JSON.parse(line) as RaceReport);
        });
        child.on("exit", (code) => {
          if (code !== 0) reject(new Error(`worker exited ${code}: ${stderr}`));
        });
      });
      // A worker that dies before `ready` must fail the test, not hang it.
      return { child, ready: Promise.race([ready, report.then(() => {})]), report };
    });
    await Promise.all(runs.map((r) => r.ready));
    for (const r of runs) r.child.stdin?.write("go\n");
    return await Promise.all(runs.map((r) => r.report));
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill();
  }
}

describe("SqliteRequestStore across processes", () => {
  let dir: string;
  let path: string;
  let store: SqliteRequestStore;

  beforeEach(() => {
    ({ dir, path } = tempDbPath());
    store = new SqliteRequestStore(path);
  });

  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("creates exactly one request when 4 processes send 20 submits with one key", async () => {
    // Prepare
    const base = { path, tenant: "t1", queue: "q", key: "race", bodyHash: "h", createdAt: T0 };
    const tasks: RaceTask[] = Array.from({ length: 4 }, () => ({
      mode: "submit",
      ...base,
      count: 5,
    }));

    // Act
    const reports = await race(tasks);

    // Assess
    const created = reports.flatMap((r) => (r.mode === "submit" ? r.created : []));
    const replayed = reports.flatMap((r) => (r.mode === "submit" ? r.replayed : []));
    expect(created).toHaveLength(1);
    expect(replayed).toHaveLength(19);
    expect(new Set(replayed)).toEqual(new Set(created));
    const page = await store.list({ tenant: "t1", queue: "q", limit: 100 });
    expect(page.items.map((r) => r.id)).toEqual(created);
    expect(await store.queueCounts("q")).toEqual({ queued: 1, running: 0 });
  });

  it("never exceeds maxRunning nor claims a request twice with 4 dispatcher processes", async () => {
    // Prepare
    const total = 40;
    const maxRunning = 3;
    const limits = { maxQueued: 1000, retryAfterSeconds: 1 };
    const submitted = new Set<string>();
    for (let i = 0; i < total; i++) {
      const r = queuedRequest("gpu", { priority: i % 3, createdAt: T0 + i });
      submitted.add((await store.submit(r, null, limits)).request.id);
    }
    const task: RaceTask = { mode: "dispatch", path, queue: "gpu", maxRunning, now: T0 };

    // Act
    const reports = await race([task, task, task, task]);

    // Assess
    const claimed = reports.flatMap((r) => (r.mode === "dispatch" ? r.claimed : []));
    const mostActive = Math.max(...reports.map((r) => (r.mode === "dispatch" ? r.mostActive : 0)));
    expect(claimed).toHaveLength(total);
    expect(new Set(claimed)).toEqual(submitted);
    expect(mostActive).toBeGreaterThan(0);
    expect(mostActive).toBeLessThanOrEqual(maxRunning);
    expect(await store.queueCounts("gpu")).toEqual({ queued: 0, running: 0 });
    expect(await store.recount()).toEqual({ gpu: { queued: 0, running: 0 } });
  });
});
