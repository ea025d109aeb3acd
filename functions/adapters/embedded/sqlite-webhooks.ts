/**
 * The webhook outbox and tenant secrets of the embedded runtime, on one SQLite file
 * (better-sqlite3, WAL). Deliveries are rows: a pending one survives any crash, and a claim
 * is a lease kept in the row, so a delivery whose worker died is due again when the lease
 * ends. Every method is one `BEGIN IMMEDIATE` transaction.
 *
 * The tables do not touch `PRAGMA user_version`, so they may share a file with
 * SqliteRequestStore; a file of their own (`webhooks.db`) keeps webhook traffic from
 * contending for the request store's write lock.
 */
import type Database from "better-sqlite3";
import {
  type DeliveredInfo,
  type NewWebhookDelivery,
  type StoredWebhookSecret,
  signingSecrets,
  type WebhookDelivery,
  type WebhookDeliveryStatus,
  type WebhookOutbox,
  type WebhookSecrets,
} from "../../webhooks/outbox.ts";
import { generateSecret } from "../../webhooks/signing.ts";
import { openSqlite, statementCache } from "./sqlite-open.ts";

// Status literals are spelled out in SQL text so that SQLite can use the partial indexes.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS webhook_deliveries (
  id              TEXT PRIMARY KEY,
  -- Enqueue order; a request's deliveries are handed out in this order, one at a time.
  seq             INTEGER NOT NULL UNIQUE,
  request_id      TEXT NOT NULL,
  tenant          TEXT NOT NULL,
  event           TEXT NOT NULL CHECK (event IN ('started', 'progress', 'completed')),
  url             TEXT NOT NULL,
  payload         TEXT NOT NULL,
  dedup_key       TEXT NOT NULL UNIQUE,
  attempts        INTEGER NOT NULL DEFAULT 0,
  -- Due time; while leased, the end of the lease (so one index serves both).
  next_attempt_at INTEGER NOT NULL,
  lease_until     INTEGER,
  status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'delivered', 'dead', 'superseded')),
  last_error      TEXT,
  last_status     INTEGER,
  created_at      INTEGER NOT NULL,
  delivered_at    INTEGER
);

-- Due pending deliveries in due order: claimDue reads a range of it, never the table.
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
  ON webhook_deliveries (next_attempt_at, seq) WHERE status = 'pending';

-- A request's pending deliveries in order: head-of-line check and progress superseding.
CREATE INDEX IF NOT EXISTS webhook_deliveries_request
  ON webhook_deliveries (request_id, seq) WHERE status = 'pending';

-- Finished deliveries by age, for purging.
CREATE INDEX IF NOT EXISTS webhook_deliveries_finished
  ON webhook_deliveries (created_at) WHERE status <> 'pending';

CREATE TABLE IF NOT EXISTS webhook_secrets (
  tenant          TEXT PRIMARY KEY,
  secret          TEXT NOT NULL,
  created_at      INTEGER NOT NULL,
  -- The secret the last rotation replaced, and when (it keeps signing for a while).
  previous_secret TEXT,
  rotated_at      INTEGER
);
`;

/** Columns added after the first release, with their definitions, for older files. */
const ADDED_SECRET_COLUMNS = {
  previous_secret: "TEXT",
  rotated_at: "INTEGER",
} as const;

/** Adds the columns an older file lacks (inside the schema transaction). */
function migrate(db: Database.Database): void {
  const have = new Set(
    (db.prepare("PRAGMA table_info(webhook_secrets)").all() as { name: string }[]).map(
      (c) => c.name,
    ),
  );
  for (const [column, type] of Object.entries(ADDED_SECRET_COLUMNS)) {
    if (!have.has(column)) db.exec(`ALTER TABLE webhook_secrets ADD COLUMN ${column} ${type}`);
  }
}

/** Every statement, by name, so tests can check their query plans. */
const SQL = {
  byDedupKey: `
    SELECT id, event, status, attempts, lease_until FROM webhook_deliveries
    WHERE dedup_key = @dedup_key`,
  replacePayload: "UPDATE webhook_deliveries SET payload = @payload WHERE id = @id",
  insert: `
    INSERT INTO webhook_deliveries (
      id, seq, request_id, tenant, event, url, payload, dedup_key, attempts, next_attempt_at,
      lease_until, status, last_error, last_status, created_at, delivered_at
    ) VALUES (
      @id, (SELECT ifnull(max(seq), 0) + 1 FROM webhook_deliveries), @request_id, @tenant,
      @event, @url, @payload, @dedup_key, 0, @created_at, NULL, 'pending', NULL, NULL,
      @created_at, NULL
    ) RETURNING seq`,
  supersede: `
    UPDATE webhook_deliveries SET status = 'superseded', lease_until = NULL
    WHERE request_id = @request_id AND status = 'pending' AND seq < @seq
      AND event = 'progress' AND (lease_until IS NULL OR lease_until <= @now)`,
  due: `
    SELECT d.* FROM webhook_deliveries d
    WHERE d.status = 'pending' AND d.next_attempt_at <= @now
      AND NOT EXISTS (
        SELECT 1 FROM webhook_deliveries e
        WHERE e.request_id = d.request_id AND e.status = 'pending' AND e.seq < d.seq)
    ORDER BY d.next_attempt_at, d.seq
    LIMIT @limit`,
  lease: `
    UPDATE webhook_deliveries SET lease_until = @until, next_attempt_at = @until
    WHERE id = @id AND status = 'pending'`,
  complete: `
    UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1,
      delivered_at = @at, last_status = @status, lease_until = NULL
    WHERE id = @id AND status IN ('pending', 'superseded')`,
  reschedule: `
    UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = @next,
      lease_until = NULL, last_error = @error
    WHERE id = @id AND status = 'pending'`,
  markDead: `
    UPDATE webhook_deliveries SET status = 'dead', attempts = attempts + 1,
      lease_until = NULL, last_error = @error
    WHERE id = @id AND status = 'pending'`,
  get: "SELECT * FROM webhook_deliveries WHERE id = @id",
  ofRequest: "SELECT * FROM webhook_deliveries WHERE request_id = @request_id ORDER BY seq",
  purge: `
    DELETE FROM webhook_deliveries
    WHERE status <> 'pending' AND created_at < @before`,
  insertSecret: `
    INSERT INTO webhook_secrets (tenant, secret, created_at) VALUES (@tenant, @secret, @now)
    ON CONFLICT (tenant) DO NOTHING`,
  getSecret: `
    SELECT secret, previous_secret, rotated_at FROM webhook_secrets WHERE tenant = @tenant`,
  rotateSecret: `
    INSERT INTO webhook_secrets (tenant, secret, created_at, previous_secret, rotated_at)
    VALUES (@tenant, @secret, @now, NULL, @now)
    ON CONFLICT (tenant) DO UPDATE SET
      previous_secret = webhook_secrets.secret, secret = excluded.secret, rotated_at = @now`,
} as const;

type StatementName = keyof typeof SQL;

/** The statements whose plans {@link SqliteWebhookOutbox.explain} reports. */
export const WEBHOOK_EXPLAINABLE = ["due", "supersede", "byDedupKey", "purge"] as const;

/** A `webhook_deliveries` row as SQLite returns it. */
interface DeliveryRow {
  id: string;
  seq: number;
  request_id: string;
  tenant: string;
  event: NewWebhookDelivery["event"];
  url: string;
  payload: string;
  dedup_key: string;
  attempts: number;
  next_attempt_at: number;
  lease_until: number | null;
  status: WebhookDeliveryStatus;
  last_error: string | null;
  last_status: number | null;
  created_at: number;
  delivered_at: number | null;
}

/** A stored delivery with its bookkeeping, for inspection. */
export interface StoredWebhookDelivery extends WebhookDelivery {
  status: WebhookDeliveryStatus;
  nextAttemptAt: number;
  leaseUntil: number | null;
  lastStatus: number | null;
  deliveredAt: number | null;
}

function toDelivery(row: DeliveryRow): WebhookDelivery {
  return {
    id: row.id,
    requestId: row.request_id,
    tenant: row.tenant,
    event: row.event,
    url: row.url,
    payload: row.payload,
    dedupKey: row.dedup_key,
    createdAt: row.created_at,
    attempts: row.attempts,
    lastError: row.last_error,
  };
}

function fromRow(row: DeliveryRow): StoredWebhookDelivery {
  return {
    ...toDelivery(row),
    status: row.status,
    nextAttemptAt: row.next_attempt_at,
    leaseUntil: row.lease_until,
    lastStatus: row.last_status,
    deliveredAt: row.delivered_at,
  };
}

/**
 * {@link WebhookOutbox} and {@link WebhookSecrets} on one SQLite file. Any number of
 * instances and processes may share the file: writes serialize on SQLite's lock.
 */
export class SqliteWebhookOutbox implements WebhookOutbox, WebhookSecrets {
  readonly #db: Database.Database;
  readonly #stmt: (name: StatementName) => Database.Statement;

  /** Opens (creating if needed) the database at `path`, or a private one for ":memory:". */
  constructor(path: string) {
    this.#db = openSqlite(path, (db) =>
      db
        .transaction(() => {
          db.exec(SCHEMA);
          migrate(db);
        })
        .immediate(),
    );
    this.#stmt = statementCache(this.#db, SQL);
  }

  /** {@inheritDoc WebhookOutbox.enqueue} Also supersedes older waiting progress. */
  async enqueue(delivery: NewWebhookDelivery): Promise<boolean> {
    return this.#db
      .transaction((): boolean => {
        const now = delivery.createdAt;
        const existing = this.#stmt("byDedupKey").get({ dedup_key: delivery.dedupKey }) as
          | Pick<DeliveryRow, "id" | "event" | "status" | "attempts" | "lease_until">
          | undefined;
        if (existing) {
          const waiting =
            existing.status === "pending" &&
            existing.attempts === 0 &&
            (existing.lease_until === null || existing.lease_until <= now);
          // The same second's progress, not yet tried: send the newest state instead.
          if (existing.event === "progress" && delivery.event === "progress" && waiting) {
            this.#stmt("replacePayload").run({ id: existing.id, payload: delivery.payload });
          }
          return false;
        }
        const { seq } = this.#stmt("insert").get({
          id: delivery.id,
          request_id: delivery.requestId,
          tenant: delivery.tenant,
          event: delivery.event,
          url: delivery.url,
          payload: delivery.payload,
          dedup_key: delivery.dedupKey,
          created_at: delivery.createdAt,
        }) as { seq: number };
        if (delivery.event === "progress" || delivery.event === "completed") {
          this.#stmt("supersede").run({ request_id: delivery.requestId, seq, now });
        }
        return true;
      })
      .immediate();
  }

  /** {@inheritDoc WebhookOutbox.claimDue} */
  async claimDue(now: number, limit: number, leaseMs: number): Promise<WebhookDelivery[]> {
    return this.#db
      .transaction((): WebhookDelivery[] => {
        const rows = this.#stmt("due").all({ now, limit }) as DeliveryRow[];
        const until = now + leaseMs;
        const lease = this.#stmt("lease");
        return rows.map((row) => {
          lease.run({ id: row.id, until });
          return toDelivery(row);
        });
      })
      .immediate();
  }

  async complete(id: string, result: DeliveredInfo): Promise<void> {
    this.#db
      .transaction(() => this.#stmt("complete").run({ id, at: result.at, status: result.status }))
      .immediate();
  }

  async reschedule(id: string, nextAt: number, lastError: string): Promise<void> {
    this.#db
      .transaction(() => this.#stmt("reschedule").run({ id, next: nextAt, error: lastError }))
      .immediate();
  }

  async markDead(id: string, lastError: string): Promise<void> {
    this.#db.transaction(() => this.#stmt("markDead").run({ id, error: lastError })).immediate();
  }

  /** {@inheritDoc WebhookSecrets.secretFor} */
  async secretFor(tenant: string): Promise<string> {
    return this.#storedSecret(tenant).secret;
  }

  /** {@inheritDoc WebhookSecrets.signingSecretsFor} */
  async signingSecretsFor(tenant: string, now: number): Promise<string[]> {
    return signingSecrets(this.#storedSecret(tenant), now);
  }

  /** {@inheritDoc WebhookSecrets.rotate} One upsert: the replaced secret moves to `previous`. */
  async rotate(tenant: string, now: number): Promise<string> {
    const secret = generateSecret();
    this.#db.transaction(() => this.#stmt("rotateSecret").run({ tenant, secret, now })).immediate();
    return secret;
  }

  #storedSecret(tenant: string): StoredWebhookSecret {
    return this.#db
      .transaction((): StoredWebhookSecret => {
        this.#stmt("insertSecret").run({ tenant, secret: generateSecret(), now: Date.now() });
        const row = this.#stmt("getSecret").get({ tenant }) as {
          secret: string;
          previous_secret: string | null;
          rotated_at: number | null;
        };
        return { secret: row.secret, previous: row.previous_secret, rotatedAt: row.rotated_at };
      })
      .immediate();
  }

  /** One stored delivery with its bookkeeping, or null. */
  get(id: string): StoredWebhookDelivery | null {
    const row = this.#stmt("get").get({ id }) as DeliveryRow | undefined;
    return row ? fromRow(row) : null;
  }

  /** Every stored delivery of a request, in enqueue order (dead ones included). */
  deliveriesOf(requestId: string): StoredWebhookDelivery[] {
    return (this.#stmt("ofRequest").all({ request_id: requestId }) as DeliveryRow[]).map(fromRow);
  }

  /**
   * Deletes delivered, superseded and dead deliveries created before `before` (epoch ms).
   * @returns how many were deleted.
   */
  purgeFinished(before: number): number {
    return this.#db.transaction(() => this.#stmt("purge").run({ before }).changes).immediate();
  }

  /** SQLite's query plan of a named statement (EXPLAIN QUERY PLAN details). */
  explain(name: (typeof WEBHOOK_EXPLAINABLE)[number]): string[] {
    const params: Record<string, unknown> = {
      now: 0,
      limit: 10,
      request_id: "req_x",
      seq: 1,
      dedup_key: "k",
      before: 0,
    };
    const sql = SQL[name];
    const used = Object.fromEntries(Object.entries(params).filter(([k]) => sql.includes(`@${k}`)));
    const rows = this.#db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(used) as { detail: string }[];
    return rows.map((r) => r.detail);
  }

  /** Closes the database file; the instance is unusable afterwards. */
  close(): void {
    this.#db.close();
  }
}
