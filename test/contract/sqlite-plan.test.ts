/**
 * SPEC §2 and §3 ask that listing cost follows `limit`, not table size, and dispatch picks
 * the head without scanning. These tests read SQLite's own query plans for the store's
 * statements: each must walk one index range, with no full table scan and no sort.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { ulid } from "ulidx";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  EXPLAINABLE_QUERIES,
  type SqliteQueryName,
  SqliteRequestStore,
} from "../../functions/adapters/embedded/sqlite-store.ts";
import { RequestStatus } from "../../functions/core/request.ts";

const EXPECTED_INDEX: Record<SqliteQueryName, string> = {
  getKey: "requests_idempotency",
  tenantHeads: "requests_tenant_ready",
  tenantBefore: "requests_tenant_ready",
  tenantFrom: "requests_tenant_ready",
  tenantBetween: "requests_tenant_ready",
  tenantNthAfter: "requests_tenant_ready",
  tenantNthBefore: "requests_tenant_ready",
  listAll: "requests_list",
  listAllAfter: "requests_list",
  listStatus: "requests_list_status",
  listStatusAfter: "requests_list_status",
  findActive: "requests_active",
  findExpired: "requests_expiry",
  findFinishedBefore: "requests_finished",
  withWebhookSince: "requests_webhook",
};

/** Lines that mean the cost grows with the table: a plain scan, or a sort of every match. */
function costlyLines(plan: string[]): string[] {
  return plan.filter((l) => /^SCAN requests$/.test(l) || /TEMP B-TREE/.test(l));
}

/** Fills the store with a skewed mix of tenants, queues and statuses. */
async function populate(store: SqliteRequestStore): Promise<void> {
  const T0 = Date.UTC(2030, 0, 1);
  for (let i = 0; i < 600; i++) {
    const queue = i % 5 === 0 ? "q" : "other";
    const createdAt = T0 + i;
    await store.submit(
      {
        id: `req_${ulid()}`,
        tenant: i % 7 === 0 ? "t" : "big-tenant",
        queue,
        status: RequestStatus.QUEUED,
        priority: i % 10,
        input: { i },
        metadata: {},
        webhook: null,
        idempotencyKey: null,
        createdAt,
        startedAt: null,
        finishedAt: null,
        updatedAt: 0,
        attempt: 0,
        maxAttempts: 1,
        platformRetries: 0,
        cancelRequested: false,
        timeoutSeconds: 60,
        queueTtlSeconds: 60,
        expiresAt: createdAt + 60_000,
        progress: null,
        error: null,
        jobRef: null,
      },
      null,
      { maxQueued: 10_000, retryAfterSeconds: 1 },
    );
  }
  for (let i = 0; i < 200; i++) await store.claimNext("other", { maxRunning: 150 }, T0);
}

describe("SqliteRequestStore query plans", () => {
  let store: SqliteRequestStore;

  beforeEach(() => {
    store = new SqliteRequestStore(":memory:");
  });

  afterEach(() => {
    store.close();
  });

  it.each(EXPLAINABLE_QUERIES)("reads %s through its index on an empty database", (name) => {
    // Act
    const plan = store.explain(name);

    // Assess
    expect(plan.join(" | ")).toContain(`INDEX ${EXPECTED_INDEX[name]}`);
    expect(costlyLines(plan)).toEqual([]);
  });

  it("keeps every plan on its index once the table is full and analysed", async () => {
    // Prepare: statistics from ANALYZE are what could tempt the planner into a scan.
    const dir = mkdtempSync(join(tmpdir(), "longrun-plan-"));
    const path = join(dir, "plan.db");
    const filler = new SqliteRequestStore(path);
    await populate(filler);
    filler.close();
    const raw = new Database(path);
    raw.exec("ANALYZE");
    raw.close();
    const analysed = new SqliteRequestStore(path);

    // Act
    const plans = Object.fromEntries(EXPLAINABLE_QUERIES.map((n) => [n, analysed.explain(n)]));
    analysed.close();
    rmSync(dir, { recursive: true, force: true });

    // Assess
    for (const name of EXPLAINABLE_QUERIES) {
      const plan = plans[name] ?? [];
      expect(plan.join(" | "), name).toContain(`INDEX ${EXPECTED_INDEX[name]}`);
      expect(costlyLines(plan), name).toEqual([]);
    }
  });

  it("counts a tenant's requests before one on its own priority's index range", () => {
    // Act
    const plan = store.explain("tenantBefore");

    // Assess
    expect(plan.filter((l) => l.startsWith("SEARCH"))).toEqual([
      "SEARCH requests USING COVERING INDEX requests_tenant_ready (queue=? AND tenant=? AND priority=? AND (created_at,id)<(?,?))",
    ]);
  });

  it("looks an Idempotency-Key up with one probe of its unique index", () => {
    // Act
    const plan = store.explain("getKey");

    // Assess
    expect(plan).toEqual([
      "SEARCH requests USING INDEX requests_idempotency (tenant=? AND idem_key=?)",
    ]);
  });

  it("takes each waiting tenant's head with one probe of its index range", () => {
    // Act
    const plan = store.explain("tenantHeads");

    // Assess
    expect(plan.join(" | ")).toContain("SEARCH t USING PRIMARY KEY (queue=?)");
    expect(plan.join(" | ")).toContain("INDEX requests_tenant_ready (queue=? AND tenant=?)");
    expect(costlyLines(plan)).toEqual([]);
  });
});
