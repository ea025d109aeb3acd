/**
 * The WAL checkpointer of the server's request store: the WAL's pages reach the database
 * file from a worker thread, not inside the store's commits.
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ulid } from "ulidx";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteRequestStore } from "../../functions/adapters/embedded/sqlite-store.ts";
import type { RequestRecord } from "../../functions/core/request.ts";
import { queuedRecord } from "../helpers/records.ts";

const T0 = Date.UTC(2030, 0, 1);

function queued(i: number): RequestRecord {
  return queuedRecord({
    id: `req_${ulid()}`,
    tenant: `t${i % 3}`,
    priority: i % 10,
    input: { i, text: "x".repeat(200) },
    createdAt: T0 + i,
    expiresAt: T0 + 3_600_000,
  });
}

/** Resolves once `check` holds; fails after `timeoutMs`. */
async function until(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("SqliteRequestStore background checkpoints", () => {
  let dir: string;
  let path: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "longrun-ckpt-"));
    path = join(dir, "longrun.db");
  });

  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("copies committed pages into the database file after the store stopped writing", async () => {
    // Prepare: a few hundred WAL frames, fewer than any automatic checkpoint waits for, so
    // nothing in the store's own commits copies them.
    const store = new SqliteRequestStore(path, { backgroundCheckpoints: true });
    try {
      for (let b = 0; b < 20; b++) {
        await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            store.submit(
              queued(b * 10 + i),
              { key: `k-${b}-${i}`, bodyHash: "h" },
              {
                maxQueued: 1000,
                retryAfterSeconds: 1,
              },
            ),
          ),
        );
      }
      const frames = statSync(`${path}-wal`).size / 4120;
      expect(frames).toBeLessThan(1000);
      const before = statSync(path).size;

      // Act: no more writes; the worker's passive checkpoints are all that can grow the file.
      await until(() => statSync(path).size > before);

      // Assess
      expect(await store.queueCounts("q")).toEqual({ queued: 200, running: 0 });
    } finally {
      store.close();
      await store.closed();
    }
  });

  it("stops with the store, and the file reopened without it holds every submit", async () => {
    // Prepare
    const store = new SqliteRequestStore(path, { backgroundCheckpoints: true });
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) {
      const r = queued(i);
      ids.push(r.id);
      await store.submit(r, null, { maxQueued: 1000, retryAfterSeconds: 1 });
    }

    // Act
    store.close();
    await store.closed();
    const plain = new SqliteRequestStore(path);

    // Assess
    try {
      for (const id of ids) expect(await plain.get(id)).not.toBeNull();
      expect(await plain.recount()).toEqual({ q: { queued: 30, running: 0 } });
    } finally {
      plain.close();
    }
  });
});
