import Database from "better-sqlite3";

/** How long a writer waits for another connection's write lock before SQLITE_BUSY. */
const BUSY_TIMEOUT_MS = 5000;

/**
 * Opens (creating if needed) the SQLite file at `path` (":memory:" for a private one) the
 * way every embedded store does, then runs `setup` (its own pragmas and schema). A file that
 * cannot be set up is closed again: its handle and locks do not outlive the failure.
 */
export function openSqlite(
  path: string,
  setup: (db: Database.Database) => void,
): Database.Database {
  const db = new Database(path);
  try {
    // busy_timeout first: the pragmas and the schema may need another writer's lock.
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.pragma("journal_mode = WAL");
    // NORMAL under WAL stays consistent after a crash; only the last commits may be lost on
    // power failure, which a process kill (the case SPEC §5 names) never causes.
    db.pragma("synchronous = NORMAL");
    setup(db);
    return db;
  } catch (cause) {
    db.close();
    throw cause;
  }
}

/**
 * Prepares each of `sql`'s statements on first use and keeps it: `stmt(name)` returns the
 * same prepared statement every time.
 */
export function statementCache<N extends string>(
  db: Database.Database,
  sql: Readonly<Record<N, string>>,
): (name: N) => Database.Statement {
  const prepared = new Map<N, Database.Statement>();
  return (name) => {
    let s = prepared.get(name);
    if (!s) {
      s = db.prepare(sql[name]);
      prepared.set(name, s);
    }
    return s;
  };
}
