import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type Database from "better-sqlite3";

/**
 * WAL frames at which the owning connection checkpoints by itself while a background
 * checkpointer runs (SQLite's default, used without one, is 1000). The checkpointer copies
 * pages as they come, so this backstop finds little left to copy; it is what restarts the
 * WAL under continuous writes (SQLite restarts it only at a write that finds every frame
 * copied) and what bounds it (about 40 MiB) should the checkpointer fall behind or stop.
 */
export const BACKSTOP_CHECKPOINT_FRAMES = 10_000;

/** Default of {@link WalCheckpointerOptions.intervalMs}. */
const INTERVAL_MS = 100;

/** Options of {@link WalCheckpointer}. */
export interface WalCheckpointerOptions {
  /** How often the worker runs a passive checkpoint (default 100 ms). */
  intervalMs?: number;
}

// The worker is plain JavaScript, so it runs the same under tsx, a bundle or plain node.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.driver);
const db = new Database(workerData.path);
db.pragma("busy_timeout = 0");
const timer = setInterval(() => {
  try {
    db.pragma("wal_checkpoint(PASSIVE)");
  } catch {
    // Busy or locked: the next tick tries again; the owner's backstop bounds the WAL.
  }
}, workerData.intervalMs);
parentPort.on("message", () => {
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

/**
 * Checkpoints a WAL-mode SQLite file from a worker thread with a connection of its own.
 * A checkpoint copies the WAL's pages into the database file and fsyncs both; run by the
 * writing connection (SQLite's automatic checkpoint, every 1000 frames) it blocked the
 * event loop for milliseconds, every few dozen submits. PASSIVE checkpoints never wait for
 * readers or the writer, so the owner's transactions go on meanwhile. The owning
 * connection keeps an automatic checkpoint at {@link BACKSTOP_CHECKPOINT_FRAMES}, and
 * returns to SQLite's default should the worker die.
 */
export class WalCheckpointer {
  readonly #worker: Worker;
  #stopped = false;

  /** Starts checkpointing `path`, whose connection `db` this process writes with. */
  constructor(db: Database.Database, path: string, options: WalCheckpointerOptions = {}) {
    db.pragma(`wal_autocheckpoint = ${BACKSTOP_CHECKPOINT_FRAMES}`);
    this.#worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        driver: createRequire(import.meta.url).resolve("better-sqlite3"),
        path,
        intervalMs: options.intervalMs ?? INTERVAL_MS,
      },
    });
    // The worker must not keep a process alive that has nothing else to do.
    this.#worker.unref();
    const fallBack = () => {
      if (this.#stopped || !db.open) return;
      db.pragma("wal_autocheckpoint = 1000");
    };
    this.#worker.once("error", fallBack);
    this.#worker.once("exit", fallBack);
  }

  /** Stops the worker; resolves once its connection is closed. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    const exited = new Promise<void>((resolve) => this.#worker.once("exit", () => resolve()));
    this.#worker.postMessage("stop");
    await exited;
  }
}
