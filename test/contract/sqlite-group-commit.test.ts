/**
 * Group commit of SQLite submits: submits called in the same turn of the event loop share
 * one transaction, each keeping its own idempotency check, limits and answer, and a failing
 * one (a limit, a conflict, a fault raised inside the transaction) failing alone. Faults
 * are real SQLite faults: triggers a second connection adds to the file.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { ulid } from "ulidx";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteRequestStore } from "../../functions/adapters/embedded/sqlite-store.ts";
import {
  IdempotencyConflictError,
  QueueFullError,
  RateLimitedError,
} from "../../functions/core/errors.ts";
import type { SubmitLimits, SubmitOutcome } from "../../functions/core/ports.ts";
import type { RequestRecord } from "../../functions/core/request.ts";
import { queuedRecord } from "../helpers/records.ts";

const T0 = Date.UTC(2030, 0, 1);
const LIMITS: SubmitLimits = { maxQueued: 100, retryAfterSeconds: 1 };

function queued(overrides: Partial<RequestRecord> = {}): RequestRecord {
  return queuedRecord({
    id: `req_${ulid()}`,
    createdAt: T0,
    expiresAt: T0 + 3_600_000,
    ...overrides,
  });
}

/** Each promise's outcome, without letting one rejection hide the others. */
function settle(promises: Promise<SubmitOutcome>[]) {
  return Promise.allSettled(promises);
}

describe("SqliteRequestStore group commit", () => {
  let dir: string;
  let path: string;
  let store: SqliteRequestStore;
  let raw: Database.Database;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "longrun-group-"));
    path = join(dir, "longrun.db");
    store = new SqliteRequestStore(path);
    raw = new Database(path);
  });

  afterEach(() => {
    store.close();
    raw.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Requests of the file as another connection sees them. */
  const storedIds = () =>
    (raw.prepare("SELECT id FROM requests ORDER BY id").all() as { id: string }[]).map((r) => r.id);

  it("commits submits of the same tick together, each with its own exact position", async () => {
    // Prepare
    const requests = Array.from({ length: 5 }, (_, i) => queued({ createdAt: T0 + i }));

    // Act
    const outcomes = await Promise.all(requests.map((r) => store.submit(r, null, LIMITS)));

    // Assess
    expect(store.submitCommits).toEqual({ commits: 1, submits: 5 });
    expect(outcomes.map((o) => o.kind === "created" && o.position)).toEqual([0, 1, 2, 3, 4]);
    expect(outcomes.map((o) => o.kind === "created" && o.usage?.queue.queued)).toEqual([
      1, 2, 3, 4, 5,
    ]);
    expect(await store.queueCounts("q")).toEqual({ queued: 5, running: 0 });
    expect(await store.recount()).toEqual({ q: { queued: 5, running: 0 } });
  });

  it("replays a key already claimed earlier in the same group, and refuses another body", async () => {
    // Prepare
    const a = queued({ idempotencyKey: "k" });
    const b = queued({ idempotencyKey: "k" });
    const c = queued({ idempotencyKey: "k" });
    const other = queued();

    // Act
    const [created, replayed, conflicting, unrelated] = await settle([
      store.submit(a, { key: "k", bodyHash: "h1" }, LIMITS),
      store.submit(b, { key: "k", bodyHash: "h1" }, LIMITS),
      store.submit(c, { key: "k", bodyHash: "h2" }, LIMITS),
      store.submit(other, null, LIMITS),
    ]);

    // Assess
    expect(store.submitCommits).toEqual({ commits: 1, submits: 3 });
    expect(created).toMatchObject({ status: "fulfilled", value: { kind: "created" } });
    expect(replayed).toMatchObject({
      status: "fulfilled",
      value: { kind: "replayed", request: { id: a.id } },
    });
    expect(conflicting?.status === "rejected" && conflicting.reason).toBeInstanceOf(
      IdempotencyConflictError,
    );
    expect(unrelated).toMatchObject({ status: "fulfilled", value: { kind: "created" } });
    expect(storedIds()).toEqual([a.id, other.id].sort());
  });

  it("holds a group to maxQueued and maxQueuedPerTenant in call order", async () => {
    // Prepare: the queue takes 4, a tenant 2.
    const limits: SubmitLimits = { ...LIMITS, maxQueued: 4, maxQueuedPerTenant: 2 };
    const tenants = ["a", "a", "a", "b", "b", "c", "c"];
    const requests = tenants.map((tenant, i) => queued({ tenant, createdAt: T0 + i }));

    // Act
    const results = await settle(requests.map((r) => store.submit(r, null, limits)));

    // Assess
    const scopes = results.map((r) =>
      r.status === "fulfilled"
        ? "created"
        : r.reason instanceof QueueFullError
          ? r.reason.scope
          : String(r.reason),
    );
    expect(scopes).toEqual([
      "created",
      "created",
      "tenant",
      "created",
      "created",
      "queue",
      "queue",
    ]);
    expect(await store.queueCounts("q")).toEqual({ queued: 4, running: 0 });
    expect(await store.tenantCounts("q", "a")).toEqual({ queued: 2, running: 0 });
  });

  it("takes rate-limit tokens one submit after another, each answered with its own bucket", async () => {
    // Prepare: a burst of 2, refilled once a minute.
    const limits: SubmitLimits = {
      ...LIMITS,
      rateLimit: { requestsPerSecond: 1 / 60, burst: 2 },
    };
    const requests = Array.from({ length: 3 }, () => queued());

    // Act
    const results = await settle(requests.map((r) => store.submit(r, null, limits)));

    // Assess
    expect(
      results.map((r) => (r.status === "fulfilled" ? r.value.rateLimit?.remaining : "refused")),
    ).toEqual([1, 0, "refused"]);
    const refused = results[2];
    expect(refused?.status === "rejected" && refused.reason).toBeInstanceOf(RateLimitedError);
    expect(await store.queueCounts("q")).toEqual({ queued: 2, running: 0 });
  });

  it("fails only the cause of a fault raised amid a submit's writes, undoing all of its writes", async () => {
    // Prepare: counting tenant "boom" fails after its request row and the queue's count
    // were written.
    raw.exec(`
      CREATE TRIGGER fault_on_count BEFORE INSERT ON tenant_counters
      WHEN NEW.tenant = 'boom' BEGIN SELECT RAISE(ABORT, 'injected fault'); END`);
    const before = queued({ createdAt: T0 });
    const faulty = queued({ tenant: "boom", createdAt: T0 + 1 });
    const after = queued({ createdAt: T0 + 2 });

    // Act
    const results = await settle([
      store.submit(before, { key: "fine-1", bodyHash: "h" }, LIMITS),
      store.submit(faulty, { key: "boom", bodyHash: "h" }, LIMITS),
      store.submit(after, { key: "fine-2", bodyHash: "h" }, LIMITS),
    ]);

    // Assess
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/injected fault/);
    // The group was lost to the fault and its submits were committed again one by one.
    expect(store.submitCommits).toEqual({ commits: 2, submits: 2 });
    expect(storedIds()).toEqual([before.id, after.id].sort());
    expect(await store.recount()).toEqual({ q: { queued: 2, running: 0 } });
    expect(await store.queueCounts("q")).toEqual({ queued: 2, running: 0 });
    expect(await store.tenantCounts("q", "t1")).toEqual({ queued: 2, running: 0 });
    expect(await store.tenantCounts("q", "boom")).toEqual({ queued: 0, running: 0 });
    expect(results[2]).toMatchObject({ value: { position: 1 } });
  });

  it("loses the whole group to a fault that rolls the transaction back, then fails only its cause", async () => {
    // Prepare: RAISE(ROLLBACK) ends the whole transaction, savepoints and all.
    raw.exec(`
      CREATE TRIGGER fault_rollback BEFORE INSERT ON requests
      WHEN json_extract(NEW.input, '$.fault') = 1 BEGIN SELECT RAISE(ROLLBACK, 'rolled back'); END`);
    const before = queued({ createdAt: T0 });
    const faulty = queued({ createdAt: T0 + 1, input: { fault: 1 } });
    const after = queued({ createdAt: T0 + 2 });

    // Act
    const results = await settle([before, faulty, after].map((r) => store.submit(r, null, LIMITS)));

    // Assess: the others were committed again, each alone.
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/rolled back/);
    expect(store.submitCommits).toEqual({ commits: 2, submits: 2 });
    expect(storedIds()).toEqual([before.id, after.id].sort());
    expect(await store.recount()).toEqual({ q: { queued: 2, running: 0 } });
    expect(results[2]).toMatchObject({ value: { position: 1 } });
  });

  it("answers none of a group whose COMMIT fails, and stores none of it", async () => {
    // Prepare: a deferred foreign key is checked at COMMIT; the trigger breaks it for one
    // submit, so the group's COMMIT fails after every submit in it succeeded.
    raw.exec(`
      CREATE TABLE fault_parent (id INTEGER PRIMARY KEY);
      CREATE TABLE fault_child (
        parent INTEGER REFERENCES fault_parent (id) DEFERRABLE INITIALLY DEFERRED);
      CREATE TRIGGER fault_at_commit AFTER INSERT ON requests
      WHEN json_extract(NEW.input, '$.fault') = 1
      BEGIN INSERT INTO fault_child (parent) VALUES (42); END`);
    const requests = [queued(), queued({ input: { fault: 1 } }), queued()];
    const answeredBeforeCommitFailed: string[] = [];

    // Act
    const results = await settle(
      requests.map((r) =>
        store.submit(r, null, LIMITS).then((o) => {
          // Whatever is answered must be in the file when it is answered.
          if (!storedIds().includes(o.request.id)) answeredBeforeCommitFailed.push(o.request.id);
          return o;
        }),
      ),
    );

    // Assess
    expect(answeredBeforeCommitFailed).toEqual([]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/FOREIGN KEY/);
    expect(storedIds()).toEqual([requests[0]?.id, requests[2]?.id].sort());
    expect(raw.prepare("SELECT count(*) AS n FROM fault_child").get()).toEqual({ n: 0 });
    expect(await store.recount()).toEqual({ q: { queued: 2, running: 0 } });
  });

  it("commits submits still waiting for their group when the store is closed", async () => {
    // Prepare
    const r = queued();
    const pending = store.submit(r, null, LIMITS);

    // Act
    store.close();
    const outcome = await pending;
    store = new SqliteRequestStore(path);

    // Assess
    expect(outcome.kind).toBe("created");
    expect(await store.get(r.id)).toEqual(r);
  });
});
