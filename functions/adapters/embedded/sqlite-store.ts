import type Database from "better-sqlite3";
import {
  DomainError,
  IdempotencyConflictError,
  InvalidRequestError,
  QueueFullError,
  RateLimitedError,
} from "../../core/errors.ts";
import type {
  ClaimLimits,
  ClaimResult,
  IdempotencyClaim,
  ListPage,
  ListQuery,
  QueueCounts,
  RateLimitState,
  RequestStore,
  RunStats,
  SubmitLimits,
  SubmitOutcome,
  TransitionCommand,
  UsageFigures,
} from "../../core/ports.ts";
import { peekBucket, takeToken } from "../../core/rate-limit.ts";
import {
  counterDelta,
  type RequestPatch,
  type RequestRecord,
  RequestStatus,
  readyOrderKey,
} from "../../core/request.ts";
import {
  assertTransitionCommand,
  decodeListCursor,
  encodeListCursor,
  type FairTenant,
  fairPositionFinish,
  fairPositionPlan,
  pickFairHead,
  positionWalk,
} from "../../core/store-support.ts";
import { WalCheckpointer } from "./sqlite-checkpointer.ts";
import { openSqlite, statementCache } from "./sqlite-open.ts";

/**
 * Schema version kept in `PRAGMA user_version`. Bump it together with a migration step in
 * `#migrate` whenever the tables or indexes change.
 */
export const SQLITE_SCHEMA_VERSION = 4;

const DAY_MS = 86_400_000;

// The status literals below are spelled out in SQL text (not bound) on purpose: SQLite only
// uses a partial index when the query's WHERE clause literally implies the index's WHERE.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS requests (
  id                TEXT PRIMARY KEY,
  tenant            TEXT NOT NULL,
  queue             TEXT NOT NULL,
  status            TEXT NOT NULL CHECK (status IN
                      ('QUEUED','STARTING','RUNNING','SUCCEEDED','FAILED','CANCELLED','EXPIRED')),
  priority          INTEGER NOT NULL,
  input             TEXT NOT NULL,
  metadata          TEXT NOT NULL,
  webhook           TEXT,
  idempotency_key   TEXT,
  created_at        INTEGER NOT NULL,
  started_at        INTEGER,
  finished_at       INTEGER,
  updated_at        INTEGER NOT NULL,
  attempt           INTEGER NOT NULL,
  max_attempts      INTEGER NOT NULL,
  platform_retries  INTEGER NOT NULL DEFAULT 0,
  cancel_requested  INTEGER NOT NULL CHECK (cancel_requested IN (0, 1)),
  timeout_seconds   INTEGER NOT NULL,
  queue_ttl_seconds INTEGER NOT NULL,
  expires_at        INTEGER NOT NULL,
  progress          TEXT,
  error             TEXT,
  job_ref           TEXT
);

-- Listing, newest first, without and with a status filter.
CREATE INDEX IF NOT EXISTS requests_list
  ON requests (tenant, queue, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS requests_list_status
  ON requests (tenant, queue, status, created_at DESC, id DESC);

-- Queue-TTL sweep and restart recovery.
CREATE INDEX IF NOT EXISTS requests_expiry
  ON requests (expires_at) WHERE status = 'QUEUED';
CREATE INDEX IF NOT EXISTS requests_active
  ON requests (queue, created_at, id) WHERE status IN ('STARTING', 'RUNNING');

-- Webhook reconciliation at start: requests with a webhook by their last change.
CREATE INDEX IF NOT EXISTS requests_webhook
  ON requests (updated_at) WHERE webhook IS NOT NULL;

-- Retention: finished requests by the time they finished.
CREATE INDEX IF NOT EXISTS requests_finished
  ON requests (queue, finished_at) WHERE finished_at IS NOT NULL;

-- Exact per-queue counts, kept in step with the rows by every state-changing transaction.
CREATE TABLE IF NOT EXISTS queue_counters (
  queue   TEXT PRIMARY KEY,
  queued  INTEGER NOT NULL DEFAULT 0,
  running INTEGER NOT NULL DEFAULT 0
);

-- QUEUED requests per queue and priority (schema 2), kept in the same transactions: a
-- position sums the higher priorities here instead of counting their rows.
CREATE TABLE IF NOT EXISTS queued_by_priority (
  queue    TEXT NOT NULL,
  priority INTEGER NOT NULL,
  queued   INTEGER NOT NULL,
  PRIMARY KEY (queue, priority)
) WITHOUT ROWID;

-- Per tenant of a queue (schema 3), kept in the same transactions as queue_counters: the
-- SPEC §1 per-tenant limits and the fair claim read them. bucket_at is the tenant's token
-- bucket (core/rate-limit.ts), null until its first limited submit.
CREATE TABLE IF NOT EXISTS tenant_counters (
  queue     TEXT NOT NULL,
  tenant    TEXT NOT NULL,
  queued    INTEGER NOT NULL DEFAULT 0,
  running   INTEGER NOT NULL DEFAULT 0,
  bucket_at REAL,
  PRIMARY KEY (queue, tenant)
) WITHOUT ROWID;

-- Run times of finished requests per queue and day (schema 3), the rolling summary that
-- estimatedStartAt reads (the last two days); older days are deleted as new ones start.
CREATE TABLE IF NOT EXISTS queue_run_stats (
  queue    TEXT NOT NULL,
  day      INTEGER NOT NULL,
  total_ms INTEGER NOT NULL,
  n        INTEGER NOT NULL,
  PRIMARY KEY (queue, day)
) WITHOUT ROWID;

-- QUEUED requests per queue, tenant and priority (schema 3), in the same transactions: a
-- fair position takes a tenant's level and a new request's place from here, not from rows.
CREATE TABLE IF NOT EXISTS tenant_queued_by_priority (
  queue    TEXT NOT NULL,
  tenant   TEXT NOT NULL,
  priority INTEGER NOT NULL,
  queued   INTEGER NOT NULL,
  PRIMARY KEY (queue, tenant, priority)
) WITHOUT ROWID;

-- Start order of one tenant's waiting requests (schema 3): the fair claim takes each
-- waiting tenant's head from it, and positions count a tenant's requests along it.
CREATE INDEX IF NOT EXISTS requests_tenant_ready
  ON requests (queue, tenant, priority DESC, created_at, id) WHERE status = 'QUEUED';
`;

/** Schema 2 → 3: per-tenant counts, computed from the rows (buckets are kept). */
const BACKFILL_TENANT_COUNTERS = `
UPDATE tenant_counters SET queued = 0, running = 0;
INSERT INTO tenant_counters (queue, tenant, queued, running)
  SELECT queue, tenant, sum(status = 'QUEUED'), sum(status IN ('STARTING', 'RUNNING'))
  FROM requests WHERE status IN ('QUEUED', 'STARTING', 'RUNNING')
  GROUP BY queue, tenant
  ON CONFLICT (queue, tenant) DO UPDATE SET queued = excluded.queued, running = excluded.running;
DELETE FROM tenant_queued_by_priority;
INSERT INTO tenant_queued_by_priority (queue, tenant, priority, queued)
  SELECT queue, tenant, priority, count(*) FROM requests WHERE status = 'QUEUED'
  GROUP BY queue, tenant, priority;
`;

/** Schema 1 → 2: per-priority counts, computed once from the rows. */
const BACKFILL_QUEUED_BY_PRIORITY = `
DELETE FROM queued_by_priority;
INSERT INTO queued_by_priority (queue, priority, queued)
  SELECT queue, priority, count(*) FROM requests WHERE status = 'QUEUED'
  GROUP BY queue, priority;
`;

/**
 * Columns added after schema 2, each added where it is missing (a table an older schema made
 * keeps its columns through CREATE TABLE IF NOT EXISTS). Adding a column with a default
 * changes no index, so it needs no migration step of its own.
 */
const ADDED_COLUMNS: readonly (readonly [name: string, type: string])[] = [
  // Schema 3: the count of retries of attempts the platform ended (0 for older rows).
  ["platform_retries", "INTEGER NOT NULL DEFAULT 0"],
  // The request's input files, JSON `{name: {size}}` (uploads).
  ["files", "TEXT"],
  // The request this one retries.
  ["retry_of", "TEXT"],
  // Schema 4: the Idempotency-Key the request was created under and the hash of its body,
  // in the row itself (schema 3 had a table of its own, with two indexes).
  ["idem_key", "TEXT"],
  ["idem_hash", "TEXT"],
  // JSON request.ts CapacityWait: the current attempt's wait for an instance (a backend that
  // reports one through job events; the embedded GPU pool answers from memory instead).
  ["capacity_wait", "TEXT"],
];

/**
 * Indexes on columns of {@link ADDED_COLUMNS}, made once those exist. A key lives exactly
 * as long as its request: deleting the request (retention) frees it.
 */
const ADDED_INDEXES = `
CREATE UNIQUE INDEX IF NOT EXISTS requests_idempotency
  ON requests (tenant, idem_key) WHERE idem_key IS NOT NULL;
`;

/**
 * Schema 3 → 4: the keys move into their requests' rows, and requests_ready goes (an entry
 * written with every request that no statement reads: dispatch and positions read
 * requests_tenant_ready). requests_list stays: a page without a status filter served by
 * merging the seven ranges of requests_list_status measured 1.5–2× slower, for about 1.5%
 * of a submit.
 */
const MOVE_IDEMPOTENCY_KEYS = `
UPDATE requests SET idem_key = k.key, idem_hash = k.body_hash
  FROM idempotency_keys k WHERE k.request_id = requests.id;
DROP TABLE idempotency_keys;
`;
const DROP_UNUSED_INDEXES = `
DROP INDEX IF EXISTS requests_ready;
`;

function hasTable(db: Database.Database, name: string): boolean {
  return (
    db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !==
    undefined
  );
}

function addMissingColumns(db: Database.Database): void {
  const have = new Set(
    (db.prepare("PRAGMA table_info(requests)").all() as { name: string }[]).map((c) => c.name),
  );
  for (const [name, type] of ADDED_COLUMNS) {
    if (!have.has(name)) db.exec(`ALTER TABLE requests ADD COLUMN ${name} ${type}`);
  }
}

function migrate(db: Database.Database): void {
  db.transaction(() => {
    const version = db.pragma("user_version", { simple: true }) as number;
    if (version > SQLITE_SCHEMA_VERSION) {
      throw new Error(
        `database schema version ${version} is newer than this build supports (${SQLITE_SCHEMA_VERSION})`,
      );
    }
    db.exec(SCHEMA);
    addMissingColumns(db);
    if (version < 2) db.exec(BACKFILL_QUEUED_BY_PRIORITY);
    if (version < 3) db.exec(BACKFILL_TENANT_COUNTERS);
    if (version < 4) {
      if (hasTable(db, "idempotency_keys")) db.exec(MOVE_IDEMPOTENCY_KEYS);
      db.exec(DROP_UNUSED_INDEXES);
    }
    db.exec(ADDED_INDEXES);
    if (version < SQLITE_SCHEMA_VERSION) {
      db.pragma(`user_version = ${SQLITE_SCHEMA_VERSION}`);
    }
  }).immediate();
}

/** Every statement the store runs, by name, so tests can check their query plans. */
const SQL = {
  getById: "SELECT * FROM requests WHERE id = @id",
  insertRequest: `
    INSERT INTO requests (
      id, tenant, queue, status, priority, input, metadata, webhook, idempotency_key,
      created_at, started_at, finished_at, updated_at, attempt, max_attempts, platform_retries,
      cancel_requested, timeout_seconds, queue_ttl_seconds, expires_at, progress, error, job_ref,
      files, retry_of, capacity_wait, idem_key, idem_hash
    ) VALUES (
      @id, @tenant, @queue, @status, @priority, @input, @metadata, @webhook, @idempotency_key,
      @created_at, @started_at, @finished_at, @updated_at, @attempt, @max_attempts, @platform_retries,
      @cancel_requested, @timeout_seconds, @queue_ttl_seconds, @expires_at, @progress, @error, @job_ref,
      @files, @retry_of, @capacity_wait, @idem_key, @idem_hash
    )`,
  // The request a tenant's Idempotency-Key was claimed by, with its body's hash.
  getKey: "SELECT * FROM requests WHERE tenant = @tenant AND idem_key = @key",
  getCounts: "SELECT queued, running FROM queue_counters WHERE queue = @queue",
  addRunTime: `
    INSERT INTO queue_run_stats (queue, day, total_ms, n) VALUES (@queue, @day, @ms, 1)
    ON CONFLICT (queue, day) DO UPDATE SET total_ms = total_ms + excluded.total_ms, n = n + 1`,
  dropOldRunTimes: "DELETE FROM queue_run_stats WHERE queue = @queue AND day < @day - 1",
  runStats: `
    SELECT coalesce(sum(total_ms), 0) AS total_ms, coalesce(sum(n), 0) AS n
    FROM queue_run_stats WHERE queue = @queue AND day >= @day - 1`,
  getTenant: `
    SELECT queued, running, bucket_at FROM tenant_counters
    WHERE queue = @queue AND tenant = @tenant`,
  bumpTenant: `
    INSERT INTO tenant_counters (queue, tenant, queued, running) VALUES (@queue, @tenant, @dq, @dr)
    ON CONFLICT (queue, tenant) DO UPDATE SET
      queued = queued + excluded.queued,
      running = running + excluded.running`,
  bumpTenantPriority: `
    INSERT INTO tenant_queued_by_priority (queue, tenant, priority, queued)
    VALUES (@queue, @tenant, @priority, @dq)
    ON CONFLICT (queue, tenant, priority) DO UPDATE SET queued = queued + excluded.queued`,
  setBucket: `
    INSERT INTO tenant_counters (queue, tenant, bucket_at) VALUES (@queue, @tenant, @at)
    ON CONFLICT (queue, tenant) DO UPDATE SET bucket_at = excluded.bucket_at`,
  // The fair claim's one read: the head of every waiting tenant with its active count (one
  // probe of requests_tenant_ready per waiting tenant, whatever the queue's depth).
  tenantHeads: `
    SELECT t.running AS tenant_running, r.* FROM tenant_counters t
    JOIN requests r ON r.id = (
      SELECT h.id FROM requests h
      WHERE h.queue = t.queue AND h.tenant = t.tenant AND h.status = 'QUEUED'
      ORDER BY h.priority DESC, h.created_at ASC, h.id ASC
      LIMIT 1)
    WHERE t.queue = @queue AND t.queued > 0`,
  // For fair positions: each waiting tenant's active count, its QUEUED requests above the
  // priority (they all start first anyway) and at it, from the counts, not from rows.
  fairLevels: `
    SELECT t.tenant, t.running,
      (SELECT coalesce(sum(p.queued), 0) FROM tenant_queued_by_priority p
         WHERE p.queue = t.queue AND p.tenant = t.tenant AND p.priority > @priority) AS above,
      (SELECT coalesce(sum(p.queued), 0) FROM tenant_queued_by_priority p
         WHERE p.queue = t.queue AND p.tenant = t.tenant AND p.priority = @priority) AS queued
    FROM tenant_counters t
    WHERE t.queue = @queue AND t.queued > 0`,
  // Fair positions walk a tenant's index range at one priority (requests_tenant_ready) with
  // the statements below, every step in SQLite's C code: the Nth statements skip @skip
  // entries by OFFSET instead of handing them to JS (and tell whether a count would stop
  // within @skip entries: a count limited in a subquery costs three times a plain one).
  tenantBefore: `
    SELECT count(*) AS n FROM requests
    WHERE queue = @queue AND tenant = @tenant AND status = 'QUEUED' AND priority = @priority
      AND (created_at, id) < (@created_at, @id)`,
  tenantFrom: `
    SELECT count(*) AS n FROM requests
    WHERE queue = @queue AND tenant = @tenant AND status = 'QUEUED' AND priority = @priority
      AND (created_at, id) >= (@created_at, @id)`,
  tenantBetween: `
    SELECT count(*) AS n FROM requests
    WHERE queue = @queue AND tenant = @tenant AND status = 'QUEUED' AND priority = @priority
      AND (created_at, id) >= (@from_created_at, @from_id) AND (created_at, id) < (@created_at, @id)`,
  tenantNthAfter: `
    SELECT created_at, id FROM requests
    WHERE queue = @queue AND tenant = @tenant AND status = 'QUEUED' AND priority = @priority
      AND (created_at, id) > (@created_at, @id)
    ORDER BY created_at, id
    LIMIT 1 OFFSET @skip`,
  tenantNthBefore: `
    SELECT created_at, id FROM requests
    WHERE queue = @queue AND tenant = @tenant AND status = 'QUEUED' AND priority = @priority
      AND (created_at, id) < (@created_at, @id)
    ORDER BY created_at DESC, id DESC
    LIMIT 1 OFFSET @skip`,
  bumpPriority: `
    INSERT INTO queued_by_priority (queue, priority, queued) VALUES (@queue, @priority, @dq)
    ON CONFLICT (queue, priority) DO UPDATE SET queued = queued + excluded.queued`,
  bumpCounts: `
    INSERT INTO queue_counters (queue, queued, running) VALUES (@queue, @dq, @dr)
    ON CONFLICT (queue) DO UPDATE SET
      queued = queued + excluded.queued,
      running = running + excluded.running`,
  expireHead: `
    UPDATE requests SET status = 'EXPIRED', finished_at = @now, updated_at = @now, error = @error
    WHERE id = @id AND status = 'QUEUED'
    RETURNING *`,
  startHead: `
    UPDATE requests SET status = 'STARTING', attempt = attempt + 1, job_ref = NULL,
      updated_at = @now
    WHERE id = @id AND status = 'QUEUED'
    RETURNING *`,
  listAll: `
    SELECT * FROM requests
    WHERE tenant = @tenant AND queue = @queue
    ORDER BY created_at DESC, id DESC
    LIMIT @limit`,
  listAllAfter: `
    SELECT * FROM requests
    WHERE tenant = @tenant AND queue = @queue AND (created_at, id) < (@created_at, @id)
    ORDER BY created_at DESC, id DESC
    LIMIT @limit`,
  listStatus: `
    SELECT * FROM requests
    WHERE tenant = @tenant AND queue = @queue AND status = @status
    ORDER BY created_at DESC, id DESC
    LIMIT @limit`,
  listStatusAfter: `
    SELECT * FROM requests
    WHERE tenant = @tenant AND queue = @queue AND status = @status
      AND (created_at, id) < (@created_at, @id)
    ORDER BY created_at DESC, id DESC
    LIMIT @limit`,
  higherPriorities: `
    SELECT coalesce(sum(queued), 0) AS n FROM queued_by_priority
    WHERE queue = @queue AND priority > @priority`,
  findActive: `
    SELECT * FROM requests
    WHERE status IN ('STARTING', 'RUNNING')
    ORDER BY queue, created_at, id
    LIMIT @limit`,
  findExpired: `
    SELECT * FROM requests
    WHERE status = 'QUEUED' AND expires_at <= @now
    ORDER BY expires_at
    LIMIT @limit`,
  recount: `
    SELECT queue,
      sum(status = 'QUEUED') AS queued,
      sum(status IN ('STARTING', 'RUNNING')) AS running
    FROM requests GROUP BY queue`,
  allCounters: "SELECT queue, queued, running FROM queue_counters",
  withWebhookSince: `
    SELECT * FROM requests
    WHERE webhook IS NOT NULL AND updated_at >= @since
    ORDER BY updated_at
    LIMIT @limit`,
  findFinishedBefore: `
    SELECT id FROM requests
    WHERE queue = @queue AND finished_at IS NOT NULL AND finished_at < @cutoff
    ORDER BY finished_at
    LIMIT @limit`,
  deleteFinished: `
    DELETE FROM requests WHERE id = @id
      AND status IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'EXPIRED')`,
  oldestQueued:
    "SELECT min(created_at) AS oldest FROM requests WHERE queue = @queue AND status = 'QUEUED'",
  setCounts: `
    INSERT INTO queue_counters (queue, queued, running) VALUES (@queue, @queued, @running)
    ON CONFLICT (queue) DO UPDATE SET queued = excluded.queued, running = excluded.running`,
} as const;

type StatementName = keyof typeof SQL;

/** The read statements whose plans {@link SqliteRequestStore.explain} reports. */
export const EXPLAINABLE_QUERIES = [
  "getKey",
  "tenantHeads",
  "tenantBefore",
  "tenantFrom",
  "tenantBetween",
  "tenantNthAfter",
  "tenantNthBefore",
  "listAll",
  "listAllAfter",
  "listStatus",
  "listStatusAfter",
  "findActive",
  "findExpired",
  "findFinishedBefore",
  "withWebhookSince",
] as const satisfies readonly StatementName[];
/** One of {@link EXPLAINABLE_QUERIES}. */
export type SqliteQueryName = (typeof EXPLAINABLE_QUERIES)[number];

/** Sample values for every named parameter of the {@link EXPLAINABLE_QUERIES}. */
const EXPLAIN_PARAMS: Record<string, unknown> = {
  id: "req_x",
  tenant: "t",
  queue: "q",
  status: "QUEUED",
  priority: 0,
  created_at: 0,
  from_id: "req_a",
  from_created_at: 0,
  skip: 0,
  limit: 10,
  now: 0,
  cutoff: 0,
  since: 0,
  key: "k",
};

/** A `requests` row as SQLite returns it. */
interface RequestRow {
  id: string;
  tenant: string;
  queue: string;
  status: RequestStatus;
  priority: number;
  input: string;
  metadata: string;
  webhook: string | null;
  idempotency_key: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number;
  attempt: number;
  max_attempts: number;
  platform_retries: number;
  cancel_requested: 0 | 1;
  timeout_seconds: number;
  queue_ttl_seconds: number;
  expires_at: number;
  progress: string | null;
  error: string | null;
  job_ref: string | null;
  /** JSON `{name: {size}}`; null when the request has no files. */
  files: string | null;
  retry_of: string | null;
  /** The Idempotency-Key the request was created under (not part of the record). */
  idem_key: string | null;
  /** sha256 of that submit's canonical body. */
  idem_hash: string | null;
  /** JSON CapacityWait; null when none was reported. */
  capacity_wait: string | null;
}

function jsonOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : JSON.stringify(value);
}

function parseOrNull<T>(text: string | null): T | null {
  return text === null ? null : (JSON.parse(text) as T);
}

/** The `requests` row of a record (exported for bulk loading, e.g. the benchmarks). */
export function toRow(r: RequestRecord): RequestRow {
  return {
    id: r.id,
    tenant: r.tenant,
    queue: r.queue,
    status: r.status,
    priority: r.priority,
    // `input` is any JSON value, null included; undefined has no JSON form and reads back as null.
    input: JSON.stringify(r.input) ?? "null",
    metadata: JSON.stringify(r.metadata ?? {}),
    webhook: jsonOrNull(r.webhook),
    idempotency_key: r.idempotencyKey,
    created_at: r.createdAt,
    started_at: r.startedAt,
    finished_at: r.finishedAt,
    updated_at: r.updatedAt,
    attempt: r.attempt,
    max_attempts: r.maxAttempts,
    platform_retries: r.platformRetries,
    cancel_requested: r.cancelRequested ? 1 : 0,
    timeout_seconds: r.timeoutSeconds,
    queue_ttl_seconds: r.queueTtlSeconds,
    expires_at: r.expiresAt,
    progress: jsonOrNull(r.progress),
    error: jsonOrNull(r.error),
    job_ref: r.jobRef,
    files: r.files && Object.keys(r.files).length > 0 ? JSON.stringify(r.files) : null,
    retry_of: r.retryOf ?? null,
    idem_key: null,
    idem_hash: null,
    capacity_wait: jsonOrNull(r.capacityWait),
  };
}

function fromRow(row: RequestRow): RequestRecord {
  return {
    id: row.id,
    tenant: row.tenant,
    queue: row.queue,
    status: row.status,
    priority: row.priority,
    input: JSON.parse(row.input) as unknown,
    metadata: JSON.parse(row.metadata) as Record<string, string>,
    webhook: parseOrNull(row.webhook),
    idempotencyKey: row.idempotency_key,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    updatedAt: row.updated_at,
    attempt: row.attempt,
    maxAttempts: row.max_attempts,
    platformRetries: row.platform_retries,
    cancelRequested: row.cancel_requested === 1,
    timeoutSeconds: row.timeout_seconds,
    queueTtlSeconds: row.queue_ttl_seconds,
    expiresAt: row.expires_at,
    progress: parseOrNull(row.progress),
    error: parseOrNull(row.error),
    jobRef: row.job_ref,
    // Only when set, so a record without them reads back exactly as it was written.
    ...(row.files !== null && row.files !== undefined ? { files: JSON.parse(row.files) } : {}),
    ...(row.retry_of ? { retryOf: row.retry_of } : {}),
    ...(row.capacity_wait ? { capacityWait: JSON.parse(row.capacity_wait) } : {}),
  };
}

/** How each patchable field is stored: its column and its SQLite value. */
const PATCH_COLUMNS: {
  readonly [K in keyof Required<RequestPatch>]: {
    column: string;
    encode: (value: RequestPatch[K]) => string | number | null;
  };
} = {
  startedAt: { column: "started_at", encode: (v) => v ?? null },
  finishedAt: { column: "finished_at", encode: (v) => v ?? null },
  updatedAt: { column: "updated_at", encode: (v) => v ?? 0 },
  attempt: { column: "attempt", encode: (v) => v ?? 0 },
  platformRetries: { column: "platform_retries", encode: (v) => v ?? 0 },
  progress: { column: "progress", encode: jsonOrNull },
  error: { column: "error", encode: jsonOrNull },
  jobRef: { column: "job_ref", encode: (v) => v ?? null },
  cancelRequested: { column: "cancel_requested", encode: (v) => (v ? 1 : 0) },
  capacityWait: { column: "capacity_wait", encode: jsonOrNull },
};

const PATCH_FIELDS = Object.keys(PATCH_COLUMNS) as (keyof RequestPatch)[];

/** Newest first: created_at DESC, then id DESC. */
function newestFirst(a: RequestRow, b: RequestRow): number {
  if (a.created_at !== b.created_at) return b.created_at - a.created_at;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

/** A submit waiting for its group commit. */
interface PendingSubmit {
  request: RequestRecord;
  idempotency: IdempotencyClaim | null;
  limits: SubmitLimits;
  resolve: (outcome: SubmitOutcome) => void;
  reject: (error: unknown) => void;
}

/** What an accepted submit's checks read, for its writes and its answer. */
interface SubmitPlan {
  /** The queue's and the tenant's counts before this request. */
  queue: QueueCounts;
  tenant: QueueCounts;
  /** The tenant's bucket after this submit's token, when the queue has a rate limit. */
  bucket: { at: number; state: RateLimitState } | null;
}

/** How one submit of a group ended. */
type Settled = { ok: true; value: SubmitOutcome } | { ok: false; error: unknown };

/** Options of the {@link SqliteRequestStore} constructor. */
export interface SqliteRequestStoreOptions {
  /**
   * Checkpoint the WAL from a worker thread (sqlite-checkpointer.ts) instead of inside
   * this connection's commits: what a long-running server wants. Default false: tools and
   * tests that open a store briefly keep SQLite's automatic checkpoints.
   */
  backgroundCheckpoints?: boolean;
}

/** Options for {@link SqliteRequestStore.recount}. */
export interface RecountOptions {
  /** Also overwrite the stored counters with the recomputed ones (repair). */
  fix?: boolean;
}

/**
 * {@link RequestStore} on one SQLite file (better-sqlite3). Every state change is a single
 * `BEGIN IMMEDIATE` transaction, so any number of store instances, threads or processes
 * sharing the file serialize their writes; readers never block thanks to WAL.
 */
export class SqliteRequestStore implements RequestStore {
  readonly #db: Database.Database;
  readonly #stmt: (name: StatementName) => Database.Statement;
  /** UPDATE statements for transitions, one per shape (statuses, attempt, fields set). */
  readonly #transitionStmts = new Map<string, Database.Statement>();
  /** Submits waiting for the next group commit, in call order. */
  readonly #pending: PendingSubmit[] = [];
  readonly #submitCommits = { commits: 0, submits: 0 };
  /** The group transaction; `.immediate(batch)` runs {@link #runBatch} in BEGIN IMMEDIATE. */
  readonly #submitBatch: Database.Transaction<(batch: readonly PendingSubmit[]) => Settled[]>;

  readonly #checkpointer: WalCheckpointer | undefined;
  #checkpointerStopped: Promise<void> = Promise.resolve();

  /** Opens (creating if needed) the database at `path`, or a private one for ":memory:". */
  constructor(path: string, options: SqliteRequestStoreOptions = {}) {
    this.#db = openSqlite(path, (db) => {
      db.pragma("foreign_keys = ON");
      // A 64 MiB page cache (the default is 2 MiB) keeps the ready and list indexes of a
      // queue with tens of thousands of requests in memory: submits measured ~30% cheaper.
      db.pragma("cache_size = -65536");
      migrate(db);
    });
    this.#stmt = statementCache(this.#db, SQL);
    if (options.backgroundCheckpoints && path !== ":memory:") {
      this.#checkpointer = new WalCheckpointer(this.#db, path);
    }
    this.#submitBatch = this.#db.transaction((batch: readonly PendingSubmit[]) =>
      this.#runBatch(batch),
    );
  }

  /**
   * Moves the queue's and the tenant's counters; `tenant` and `priority` are those of the
   * request whose change moves them.
   */
  #bump(queue: string, tenant: string, priority: number, dq: number, dr: number): void {
    if (dq === 0 && dr === 0) return;
    this.#stmt("bumpCounts").run({ queue, dq, dr });
    this.#stmt("bumpTenant").run({ queue, tenant, dq, dr });
    if (dq !== 0) {
      this.#stmt("bumpPriority").run({ queue, priority, dq });
      this.#stmt("bumpTenantPriority").run({ queue, tenant, priority, dq });
    }
  }

  #tenantRow(
    queue: string,
    tenant: string,
  ): { queued: number; running: number; bucket_at: number | null } | undefined {
    return this.#stmt("getTenant").get({ queue, tenant }) as
      | { queued: number; running: number; bucket_at: number | null }
      | undefined;
  }

  #counts(queue: string): QueueCounts {
    const row = this.#stmt("getCounts").get({ queue }) as QueueCounts | undefined;
    return { queued: row?.queued ?? 0, running: row?.running ?? 0 };
  }

  /**
   * Submits are committed in groups: every submit called in the same turn of the event loop
   * joins one `BEGIN IMMEDIATE` transaction that runs them in call order, so each sees the
   * writes of those before it (a key claimed, the queue's and the tenant's counts, the
   * tenant's bucket) exactly as if it had run alone, and each gets its own answer or
   * refusal. A promise settles only after the commit: an answer never tells of a request
   * that a crash could still lose. A commit costs several times one request's INSERT, so
   * sharing it is what keeps the submit path near the floor (docs/design.md).
   */
  async submit(
    request: RequestRecord,
    idempotency: IdempotencyClaim | null,
    limits: SubmitLimits,
  ): Promise<SubmitOutcome> {
    if (request.status !== RequestStatus.QUEUED) {
      throw new Error(
        `submit of ${request.id}: a new request must be QUEUED, not ${request.status}`,
      );
    }
    return new Promise<SubmitOutcome>((resolve, reject) => {
      this.#pending.push({ request, idempotency, limits, resolve, reject });
      // setImmediate runs after the poll phase: every request whose bytes arrived in this
      // turn has reached its submit by then.
      if (this.#pending.length === 1) setImmediate(() => this.#flushSubmits());
    });
  }

  /** Figures of group commits so far: transactions that committed submits, and submits. */
  get submitCommits(): { commits: number; submits: number } {
    return { ...this.#submitCommits };
  }

  /**
   * Commits the pending submits as one transaction. If that transaction fails as a whole
   * (a fault inside a submit's writes, a failing COMMIT), nothing of it was stored or
   * answered, and each submit is run again in a transaction of its own, so the fault fails
   * only the submit that caused it.
   */
  #flushSubmits(): void {
    const batch = this.#pending.splice(0);
    if (batch.length === 0) return;
    let settled: Settled[];
    try {
      settled = this.#submitBatch.immediate(batch);
      this.#countCommit(settled);
    } catch (batchError) {
      if (batch.length === 1) {
        settled = [{ ok: false, error: batchError }];
      } else {
        settled = batch.map((s): Settled => {
          try {
            const one = this.#submitBatch.immediate([s]);
            this.#countCommit(one);
            return one[0] as Settled;
          } catch (error) {
            return { ok: false, error };
          }
        });
      }
    }
    batch.forEach((s, i) => {
      const out = settled[i] as Settled;
      if (out.ok) s.resolve(out.value);
      else s.reject(out.error);
    });
  }

  #countCommit(settled: readonly Settled[]): void {
    const ok = settled.filter((s) => s.ok).length;
    if (ok === 0) return;
    this.#submitCommits.commits++;
    this.#submitCommits.submits += ok;
  }

  /**
   * Runs the submits of a group in order inside the caller's transaction. A refusal (a
   * limit, a conflict) is thrown by the checks, before the submit writes anything, so it
   * fails that submit alone and the group goes on; any other error may come after some of
   * a submit's writes and fails the whole group, which {@link #flushSubmits} then runs
   * again one submit per transaction. (A savepoint per submit would undo a partial write
   * too, but costs more than the request's own INSERT.)
   */
  #runBatch(batch: readonly PendingSubmit[]): Settled[] {
    const out: Settled[] = [];
    for (const s of batch) {
      let checked: SubmitOutcome | SubmitPlan;
      try {
        checked = this.#checkSubmit(s.request, s.idempotency, s.limits);
      } catch (error) {
        if (!(error instanceof DomainError)) throw error;
        out.push({ ok: false, error });
        continue;
      }
      const value =
        "kind" in checked ? checked : this.#writeSubmit(s.request, s.idempotency, checked);
      out.push({ ok: true, value });
    }
    return out;
  }

  /**
   * The reads and checks of one submit, in a transaction, writing nothing: the replay of a
   * key already held, or what the write needs.
   * @throws DomainError the submit is refused (see {@link RequestStore.submit}).
   */
  #checkSubmit(
    request: RequestRecord,
    idempotency: IdempotencyClaim | null,
    limits: SubmitLimits,
  ): SubmitOutcome | SubmitPlan {
    if (idempotency) {
      const row = this.#stmt("getKey").get({
        tenant: request.tenant,
        key: idempotency.key,
      }) as RequestRow | undefined;
      if (row) {
        if (row.idem_hash !== idempotency.bodyHash) {
          throw new IdempotencyConflictError(idempotency.key, row.id);
        }
        // A replay takes no token; it is told where the bucket stands.
        const bucket = limits.rateLimit
          ? peekBucket(
              limits.rateLimit,
              this.#tenantRow(request.queue, request.tenant)?.bucket_at ?? null,
              request.createdAt,
            )
          : undefined;
        return {
          kind: "replayed",
          request: fromRow(row),
          ...(bucket ? { rateLimit: bucket } : {}),
        };
      }
    }
    const counts = this.#counts(request.queue);
    if (counts.queued >= limits.maxQueued) {
      throw new QueueFullError(request.queue, limits.maxQueued, limits.retryAfterSeconds);
    }
    const tenantRow = this.#tenantRow(request.queue, request.tenant);
    if (
      limits.maxQueuedPerTenant !== undefined &&
      (tenantRow?.queued ?? 0) >= limits.maxQueuedPerTenant
    ) {
      throw new QueueFullError(
        request.queue,
        limits.maxQueuedPerTenant,
        limits.retryAfterSeconds,
        "tenant",
      );
    }
    let bucket: SubmitPlan["bucket"] = null;
    if (limits.rateLimit) {
      const decision = takeToken(limits.rateLimit, tenantRow?.bucket_at ?? null, request.createdAt);
      if (!decision.allowed) {
        throw new RateLimitedError(request.queue, decision.retryAfterSeconds, decision.state);
      }
      bucket = { at: decision.at, state: decision.state };
    }
    return {
      queue: counts,
      tenant: { queued: tenantRow?.queued ?? 0, running: tenantRow?.running ?? 0 },
      bucket,
    };
  }

  /** The writes of one accepted submit, in the transaction its checks ran in. */
  #writeSubmit(
    request: RequestRecord,
    idempotency: IdempotencyClaim | null,
    plan: SubmitPlan,
  ): SubmitOutcome {
    if (plan.bucket) {
      this.#stmt("setBucket").run({
        queue: request.queue,
        tenant: request.tenant,
        at: plan.bucket.at,
      });
    }
    const row = toRow(request);
    if (idempotency) {
      row.idem_key = idempotency.key;
      row.idem_hash = idempotency.bodyHash;
    }
    this.#stmt("insertRequest").run(row);
    this.#bump(request.queue, request.tenant, request.priority, 1, 0);
    const ahead = this.#fairPositions([request]).get(request.id) as number;
    // The wait view's figures as this transaction leaves them, so the answer needs no reads
    // of its own after the commit (the counts the checks read, moved by this request).
    const usage: UsageFigures = {
      queue: { queued: plan.queue.queued + 1, running: plan.queue.running },
      tenant: { queued: plan.tenant.queued + 1, running: plan.tenant.running },
      run: this.#runStats(request.queue, request.createdAt),
    };
    return {
      kind: "created",
      request: fromRow(row),
      position: ahead,
      usage,
      ...(plan.bucket ? { rateLimit: plan.bucket.state } : {}),
    };
  }

  async get(id: string): Promise<RequestRecord | null> {
    const row = this.#stmt("getById").get({ id }) as RequestRow | undefined;
    return row ? fromRow(row) : null;
  }

  async claimNext(queue: string, limits: ClaimLimits, now: number): Promise<ClaimResult> {
    // Most wake-ups find the queue full or empty (every submit wakes its queue): the counters
    // say so without the write lock. They are exact and committed before any wake-up that
    // follows a change, so a stale answer here is corrected by that change's own wake-up.
    const counts = this.#counts(queue);
    if (counts.running >= limits.maxRunning) return { kind: "full" };
    if (counts.queued <= 0) return { kind: "empty" };
    return this.#db
      .transaction((): ClaimResult => {
        if (this.#counts(queue).running >= limits.maxRunning) return { kind: "full" };
        const heads = this.#stmt("tenantHeads").all({ queue }) as (RequestRow & {
          tenant_running: number;
        })[];
        if (heads.length === 0) return { kind: "empty" };
        const limitOf = limits.maxRunningOf ?? (() => limits.maxRunning);
        const head = pickFairHead(
          heads
            .filter((h) => h.tenant_running < limitOf(h.tenant))
            .map((h) => ({
              row: h,
              priority: h.priority,
              active: h.tenant_running,
              key: readyOrderKey({ priority: h.priority, createdAt: h.created_at, id: h.id }),
            })),
        )?.row;
        if (!head) return { kind: "held" };
        if (head.expires_at <= now) {
          const error = {
            code: "expired",
            message: `waited longer than its queue TTL of ${head.queue_ttl_seconds}s`,
          };
          const row = this.#stmt("expireHead").get({
            id: head.id,
            now,
            error: JSON.stringify(error),
          }) as RequestRow;
          this.#bump(queue, head.tenant, head.priority, -1, 0);
          return { kind: "expired", request: fromRow(row) };
        }
        const row = this.#stmt("startHead").get({ id: head.id, now }) as RequestRow;
        this.#bump(queue, head.tenant, head.priority, -1, 1);
        return { kind: "started", request: fromRow(row) };
      })
      .immediate();
  }

  async transition(cmd: TransitionCommand): Promise<RequestRecord | null> {
    assertTransitionCommand(cmd);
    const fields = PATCH_FIELDS.filter((f) => cmd.set?.[f] !== undefined);
    const stmt = this.#transitionStmt(cmd, fields);
    const params: Record<string, unknown> = { id: cmd.id };
    cmd.from.forEach((s, i) => {
      params[`from${i}`] = s;
    });
    if (cmd.to !== undefined) params.to = cmd.to;
    if (cmd.attempt !== undefined) params.where_attempt = cmd.attempt;
    if (cmd.cancelRequested !== undefined) params.where_cancel = cmd.cancelRequested ? 1 : 0;
    for (const f of fields) {
      const { encode } = PATCH_COLUMNS[f] as { encode: (v: unknown) => string | number | null };
      params[`set_${f}`] = encode(cmd.set?.[f]);
    }
    // All of `from` share one class (validated), so the first one gives the counter change.
    const first = cmd.from[0] as RequestStatus;
    const delta = cmd.to === undefined ? { queued: 0, running: 0 } : counterDelta(first, cmd.to);
    return this.#db
      .transaction((): RequestRecord | null => {
        const row = stmt.get(params) as RequestRow | undefined;
        if (!row) return null;
        this.#bump(row.queue, row.tenant, row.priority, delta.queued, delta.running);
        if (delta.running < 0) this.#recordRunTime(row);
        return fromRow(row);
      })
      .immediate();
  }

  #transitionStmt(cmd: TransitionCommand, fields: readonly (keyof RequestPatch)[]) {
    const key = `${cmd.from.length}|${cmd.to !== undefined}|${cmd.attempt !== undefined}|${cmd.cancelRequested !== undefined}|${fields.join(",")}`;
    let s = this.#transitionStmts.get(key);
    if (!s) {
      const sets = [cmd.to !== undefined ? "status = @to" : "status = status"];
      for (const f of fields) sets.push(`${PATCH_COLUMNS[f].column} = @set_${f}`);
      const inList = cmd.from.map((_, i) => `@from${i}`).join(", ");
      const sql =
        `UPDATE requests SET ${sets.join(", ")} WHERE id = @id AND status IN (${inList})` +
        `${cmd.attempt !== undefined ? " AND attempt = @where_attempt" : ""}` +
        `${cmd.cancelRequested !== undefined ? " AND cancel_requested = @where_cancel" : ""} RETURNING *`;
      s = this.#db.prepare(sql);
      this.#transitionStmts.set(key, s);
    }
    return s;
  }

  async list(query: ListQuery): Promise<ListPage> {
    const { limit } = query;
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new InvalidRequestError("limit must be a positive integer", "limit");
    }
    const after = query.cursor === undefined ? null : decodeListCursor(query.cursor);
    const base = {
      tenant: query.tenant,
      queue: query.queue,
      // One more than asked tells whether another page exists.
      limit: limit + 1,
      ...(after ? { created_at: after.createdAt, id: after.id } : {}),
    };
    const statuses = [...new Set(query.statuses ?? [])];
    // A deferred transaction gives the several per-status reads one consistent snapshot.
    const rows = this.#db
      .transaction((): RequestRow[] => {
        if (statuses.length === 0) {
          return this.#stmt(after ? "listAllAfter" : "listAll").all(base) as RequestRow[];
        }
        // One index range per status, merged here: `status IN (...)` would make SQLite walk
        // the tenant's whole queue (or sort every match), so cost would follow table size.
        const merged: RequestRow[] = [];
        for (const status of statuses) {
          const stmt = this.#stmt(after ? "listStatusAfter" : "listStatus");
          merged.push(...(stmt.all({ ...base, status }) as RequestRow[]));
        }
        return merged.sort(newestFirst).slice(0, limit + 1);
      })
      .deferred();
    const more = rows.length > limit;
    const items = rows.slice(0, limit).map(fromRow);
    const last = items.at(-1);
    return { items, nextCursor: more && last ? encodeListCursor(last) : null };
  }

  /**
   * Fair positions of QUEUED requests (store-support.ts fairPositionPlan), read together
   * so that a page costs about its costliest item, not the sum: per queue and priority, the
   * higher priorities and every waiting tenant's level and count come from the counts; each
   * request's rank within its tenant comes from one walk of that tenant's index range
   * across all its requests; and each other tenant's requests that a fair tie compares (one
   * per request) are read in one walk of its range too. Every walk steps in SQLite's C code
   * (counts and OFFSET skips, no rows in JS) and starts from the nearer end of the range,
   * so the entries stepped follow the requests' distance from the head or the tail.
   */
  #fairPositions(requests: readonly RequestRecord[]): Map<string, number> {
    const out = new Map<string, number>();
    for (const { queue, priority, ordered } of positionWalk(requests)) {
      const at = { queue, priority };
      const higher = (this.#stmt("higherPriorities").get(at) as { n: number }).n;
      const levels = this.#stmt("fairLevels").all(at) as {
        tenant: string;
        running: number;
        above: number;
        queued: number;
      }[];
      const byTenant = new Map(levels.map((t) => [t.tenant, t]));
      const mine = new Map<string, RequestRecord[]>();
      for (const r of ordered) {
        const list = mine.get(r.tenant);
        if (list) list.push(r);
        else mine.set(r.tenant, [r]);
      }
      const rank = new Map<string, number>();
      for (const [tenant, own] of mine) {
        const total = byTenant.get(tenant)?.queued ?? 0;
        for (const [id, n] of this.#ranks({ ...at, tenant }, total, own)) rank.set(id, n);
      }
      // The place, in each other tenant's start order, of the one request that could tie
      // with each of ours (fairPositionPlan's probes); read together per tenant below.
      const levelOf = (t: { running: number; above: number } | undefined) =>
        t ? t.running + t.above : 0;
      const wanted = new Map<string, Set<number>>();
      for (const r of ordered) {
        const level = levelOf(byTenant.get(r.tenant)) + (rank.get(r.id) ?? 0);
        for (const t of levels) {
          const index = level - levelOf(t);
          if (t.tenant === r.tenant || index < 0 || index >= t.queued) continue;
          const set = wanted.get(t.tenant);
          if (set) set.add(index);
          else wanted.set(t.tenant, new Set([index]));
        }
      }
      const keysAt = new Map<string, Map<number, string>>();
      for (const [tenant, indexes] of wanted) {
        const total = byTenant.get(tenant)?.queued ?? 0;
        keysAt.set(tenant, this.#keysAt({ ...at, tenant }, total, indexes));
      }
      for (const r of ordered) {
        const own = rank.get(r.id) ?? 0;
        const level = levelOf(byTenant.get(r.tenant));
        const tenants: FairTenant[] = [{ tenant: r.tenant, level, queued: 0 }];
        const keys = new Map<string, string | null>();
        for (const t of levels) {
          if (t.tenant === r.tenant) continue;
          tenants.push({ tenant: t.tenant, level: levelOf(t), queued: t.queued });
          keys.set(t.tenant, keysAt.get(t.tenant)?.get(level + own - levelOf(t)) ?? null);
        }
        const plan = fairPositionPlan({ tenant: r.tenant, higher, own, tenants });
        out.set(r.id, fairPositionFinish(r, plan, keys));
      }
    }
    return out;
  }

  /**
   * Each request's rank in its tenant's start order at its priority (`requests`, all of one
   * tenant and priority, in start order; `total` the tenant's QUEUED count there): one
   * anchor, then a count of each gap between neighbours. The anchor is the entries before
   * the first or from the last, whichever ends first, counted in rounds that stop at a
   * growing limit (16, 64, 256…), so a page of the newest costs as little as one of the
   * oldest.
   */
  #ranks(
    at: { queue: string; tenant: string; priority: number },
    total: number,
    requests: readonly RequestRecord[],
  ): Map<string, number> {
    const first = requests[0] as RequestRecord;
    const last = requests.at(-1) as RequestRecord;
    const keyOf = (r: RequestRecord) => ({ created_at: r.createdAt, id: r.id });
    const count = (name: "tenantBefore" | "tenantFrom", r: RequestRecord) =>
      (this.#stmt(name).get({ ...at, ...keyOf(r) }) as { n: number }).n;
    // Whether at least `limit` entries lie beyond `r` (after or before it, by the statement):
    // then a count from `r` that way would step at least that many.
    const beyond = (name: "tenantNthAfter" | "tenantNthBefore", r: RequestRecord, limit: number) =>
      this.#stmt(name).get({ ...at, ...keyOf(r), skip: limit - 1 }) !== undefined;
    const between = (from: RequestRecord, to: RequestRecord) =>
      (
        this.#stmt("tenantBetween").get({
          ...at,
          from_created_at: from.createdAt,
          from_id: from.id,
          ...keyOf(to),
        }) as { n: number }
      ).n;
    const ranks = new Map<string, number>();
    // From the tail first: a new request (every submit) and a newest-first page sit there.
    for (let limit = 16; ; limit *= 4) {
      if (!beyond("tenantNthAfter", last, limit)) {
        const from = count("tenantFrom", last);
        // The entries from the last one on are the rest of the total (the counts move with
        // the rows, in the same transactions).
        let n = Math.max(0, total - from);
        ranks.set(last.id, n);
        for (let i = requests.length - 2; i >= 0; i--) {
          n = Math.max(
            0,
            n - between(requests[i] as RequestRecord, requests[i + 1] as RequestRecord),
          );
          ranks.set((requests[i] as RequestRecord).id, n);
        }
        return ranks;
      }
      if (!beyond("tenantNthBefore", first, limit)) {
        let n = count("tenantBefore", first);
        ranks.set(first.id, n);
        for (let i = 1; i < requests.length; i++) {
          n += between(requests[i - 1] as RequestRecord, requests[i] as RequestRecord);
          ranks.set((requests[i] as RequestRecord).id, n);
        }
        return ranks;
      }
    }
  }

  /**
   * The {@link readyOrderKey} of a tenant's requests at the given ranks of its start order
   * at the priority (`total` its QUEUED count there): one walk from the nearer end, each
   * step an OFFSET skip past the entries between two wanted ranks.
   */
  #keysAt(
    at: { queue: string; tenant: string; priority: number },
    total: number,
    indexes: ReadonlySet<number>,
  ): Map<number, string> {
    const sorted = [...indexes].sort((a, b) => a - b);
    const lowest = sorted[0] ?? 0;
    const highest = sorted.at(-1) ?? 0;
    const fromHead = highest <= total - 1 - lowest;
    // Ranks as distances from the end the walk starts at, nearest first.
    const steps = fromHead ? sorted : sorted.map((i) => total - 1 - i).reverse();
    const stmt = this.#stmt(fromHead ? "tenantNthAfter" : "tenantNthBefore");
    // Before every key (created_at is never negative), or after every key.
    let cursor = fromHead
      ? { created_at: -1, id: "" }
      : { created_at: Number.MAX_SAFE_INTEGER, id: "" };
    let done = -1;
    const keys = new Map<number, string>();
    for (const step of steps) {
      const row = stmt.get({ ...at, ...cursor, skip: step - done - 1 }) as
        | { created_at: number; id: string }
        | undefined;
      if (!row) break;
      keys.set(
        fromHead ? step : total - 1 - step,
        readyOrderKey({ priority: at.priority, createdAt: row.created_at, id: row.id }),
      );
      cursor = row;
      done = step;
    }
    return keys;
  }

  async position(request: RequestRecord): Promise<number> {
    return this.#db
      .transaction(() => this.#fairPositions([request]).get(request.id) as number)
      .deferred();
  }

  /** Positions of several QUEUED requests (a list page), read in one snapshot. */
  async positions(requests: readonly RequestRecord[]): Promise<Map<string, number>> {
    return this.#db.transaction(() => this.#fairPositions(requests)).deferred();
  }

  /** Adds a request that left its slot for good to the queue's run-time summary. */
  #recordRunTime(row: RequestRow): void {
    if (row.started_at === null || row.finished_at === null) return;
    const day = Math.floor(row.finished_at / DAY_MS);
    const ms = Math.max(0, row.finished_at - row.started_at);
    this.#stmt("addRunTime").run({ queue: row.queue, day, ms });
    this.#stmt("dropOldRunTimes").run({ queue: row.queue, day });
  }

  async runStats(queue: string, now: number): Promise<RunStats | null> {
    return this.#runStats(queue, now);
  }

  #runStats(queue: string, now: number): RunStats | null {
    const row = this.#stmt("runStats").get({ queue, day: Math.floor(now / DAY_MS) }) as {
      total_ms: number;
      n: number;
    };
    return row.n > 0 ? { meanMs: row.total_ms / row.n, samples: row.n } : null;
  }

  async tenantCounts(queue: string, tenant: string): Promise<QueueCounts> {
    const row = this.#tenantRow(queue, tenant);
    return { queued: row?.queued ?? 0, running: row?.running ?? 0 };
  }

  async queueCounts(queue: string): Promise<QueueCounts> {
    return this.#counts(queue);
  }

  async findActive(limit: number): Promise<RequestRecord[]> {
    return (this.#stmt("findActive").all({ limit }) as RequestRow[]).map(fromRow);
  }

  /**
   * Requests with a webhook that changed at or after `since`, oldest change first: what a
   * restart checks against the webhook outbox, whose writes are not in the same transaction.
   */
  async withWebhookSince(since: number, limit: number): Promise<RequestRecord[]> {
    return (this.#stmt("withWebhookSince").all({ since, limit }) as RequestRow[]).map(fromRow);
  }

  /** Ids of the queue's requests that finished before `cutoff`, oldest first (retention). */
  async findFinishedBefore(queue: string, cutoff: number, limit: number): Promise<string[]> {
    const rows = this.#stmt("findFinishedBefore").all({ queue, cutoff, limit }) as { id: string }[];
    return rows.map((r) => r.id);
  }

  /** Deletes a finished request and with it its idempotency key; false if not finished. */
  async deleteFinished(id: string): Promise<boolean> {
    return this.#db
      .transaction(() => this.#stmt("deleteFinished").run({ id }).changes > 0)
      .immediate();
  }

  async findExpired(now: number, limit: number): Promise<RequestRecord[]> {
    return (this.#stmt("findExpired").all({ now, limit }) as RequestRow[]).map(fromRow);
  }

  /**
   * Counters recomputed from the rows, for every queue that has rows or a counter. With
   * `fix`, the stored counters are overwritten in the same transaction (repair after a bug
   * or a hand-edited file). Not part of the port: a full-table aggregate, for repair and
   * checks only.
   */
  /** createdAt of the queue's oldest QUEUED request (operations metric); O(queued) on the ready index. */
  async oldestQueuedAt(queue: string): Promise<number | null> {
    const row = this.#stmt("oldestQueued").get({ queue }) as { oldest: number | null };
    return row.oldest;
  }

  async recount(options: RecountOptions = {}): Promise<Record<string, QueueCounts>> {
    const compute = (): Record<string, QueueCounts> => {
      const out: Record<string, QueueCounts> = {};
      for (const c of this.#stmt("allCounters").all() as { queue: string }[]) {
        out[c.queue] = { queued: 0, running: 0 };
      }
      const rows = this.#stmt("recount").all() as (QueueCounts & { queue: string })[];
      for (const r of rows) out[r.queue] = { queued: r.queued, running: r.running };
      if (options.fix) {
        for (const [queue, c] of Object.entries(out)) {
          this.#stmt("setCounts").run({ queue, queued: c.queued, running: c.running });
        }
        this.#db.exec(BACKFILL_QUEUED_BY_PRIORITY);
        this.#db.exec(BACKFILL_TENANT_COUNTERS);
      }
      return out;
    };
    const txn = this.#db.transaction(compute);
    return options.fix ? txn.immediate() : txn.deferred();
  }

  /**
   * The `EXPLAIN QUERY PLAN` lines of one of the store's statements, bound with sample
   * values; tests use it to prove that dispatch, list and position read through indexes.
   */
  explain(name: SqliteQueryName): string[] {
    const sql = SQL[name];
    const params = Object.fromEntries(
      Object.entries(EXPLAIN_PARAMS).filter(([k]) => new RegExp(`@${k}\\b`).test(sql)),
    );
    const rows = this.#db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(params) as {
      detail: string;
    }[];
    return rows.map((r) => r.detail);
  }

  /** Closes the connection; the store must not be used afterwards. */
  close(): void {
    // Submits already called are committed (and answered) first, not lost with the handle.
    this.#flushSubmits();
    this.#checkpointerStopped = this.#checkpointer?.stop() ?? Promise.resolve();
    this.#db.close();
  }

  /**
   * Resolves once {@link close} is complete: the background checkpointer's connection is
   * closed too, so the file may be moved or deleted.
   */
  async closed(): Promise<void> {
    await this.#checkpointerStopped;
  }
}
