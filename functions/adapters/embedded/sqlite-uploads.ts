import type Database from "better-sqlite3";
import type { UploadStore } from "../../core/ports.ts";
import type { UploadRecord, UploadStatus } from "../../core/upload.ts";
import { openSqlite, statementCache } from "./sqlite-open.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS uploads (
  id         TEXT PRIMARY KEY,
  tenant     TEXT NOT NULL,
  filename   TEXT NOT NULL,
  size       INTEGER NOT NULL,
  sha256     TEXT,
  status     TEXT NOT NULL CHECK (status IN ('PENDING', 'READY')),
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
-- Retention: uploads by the instant they expire.
CREATE INDEX IF NOT EXISTS uploads_expiry ON uploads (expires_at);
`;

const SQL = {
  insert: `
    INSERT INTO uploads (id, tenant, filename, size, sha256, status, created_at, expires_at)
    VALUES (@id, @tenant, @filename, @size, @sha256, @status, @created_at, @expires_at)`,
  get: "SELECT * FROM uploads WHERE id = @id AND expires_at > @now",
  markReady: `
    UPDATE uploads SET status = 'READY'
    WHERE id = @id AND expires_at > @now
    RETURNING *`,
  findExpired: `
    SELECT id FROM uploads WHERE expires_at <= @now ORDER BY expires_at LIMIT @limit`,
  delete: "DELETE FROM uploads WHERE id = @id",
} as const;

interface UploadRow {
  id: string;
  tenant: string;
  filename: string;
  size: number;
  sha256: string | null;
  status: UploadStatus;
  created_at: number;
  expires_at: number;
}

function fromRow(row: UploadRow): UploadRecord {
  return {
    id: row.id,
    tenant: row.tenant,
    filename: row.filename,
    size: row.size,
    sha256: row.sha256,
    status: row.status,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
  };
}

/**
 * {@link UploadStore} in a SQLite file (the embedded server keeps it in its request
 * database). Each method is one statement on the primary key, or one range of the expiry
 * index for the retention sweep.
 */
export class SqliteUploadStore implements UploadStore {
  readonly #db: Database.Database;
  readonly #stmt: (name: keyof typeof SQL) => Database.Statement;

  constructor(path: string) {
    this.#db = openSqlite(path, (db) => db.exec(SCHEMA));
    this.#stmt = statementCache(this.#db, SQL);
  }

  async create(upload: UploadRecord): Promise<void> {
    this.#stmt("insert").run({
      id: upload.id,
      tenant: upload.tenant,
      filename: upload.filename,
      size: upload.size,
      sha256: upload.sha256,
      status: upload.status,
      created_at: upload.createdAt,
      expires_at: upload.expiresAt,
    });
  }

  async get(id: string, now: number): Promise<UploadRecord | null> {
    const row = this.#stmt("get").get({ id, now }) as UploadRow | undefined;
    return row ? fromRow(row) : null;
  }

  async markReady(id: string, now: number): Promise<UploadRecord | null> {
    const row = this.#stmt("markReady").get({ id, now }) as UploadRow | undefined;
    return row ? fromRow(row) : null;
  }

  async findExpired(now: number, limit: number): Promise<string[]> {
    return (this.#stmt("findExpired").all({ now, limit }) as { id: string }[]).map((r) => r.id);
  }

  async delete(id: string): Promise<boolean> {
    return this.#stmt("delete").run({ id }).changes > 0;
  }

  close(): void {
    this.#db.close();
  }
}
