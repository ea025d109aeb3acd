import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { SqliteRequestStore } from "../../functions/adapters/embedded/sqlite-store.ts";
import { parseConfig } from "../../functions/config/load.ts";
import type { RequestRecord } from "../../functions/core/request.ts";
import { EmbeddedRuntime } from "../../functions/local/runtime.ts";

/**
 * The webhook outbox is a separate database: a crash right after a state change and before
 * the enqueue must not lose the webhook. A restart offers recent changes to the outbox again.
 */
describe("webhook reconciliation at start", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  function request(id: string, overrides: Partial<RequestRecord>): RequestRecord {
    const now = Date.now();
    return {
      id,
      tenant: "t1",
      queue: "q",
      status: "QUEUED",
      priority: 0,
      input: {},
      metadata: {},
      webhook: { url: "http://127.0.0.1:9/hook", events: ["started", "completed"] },
      idempotencyKey: null,
      createdAt: now,
      startedAt: null,
      finishedAt: null,
      updatedAt: now,
      attempt: 0,
      maxAttempts: 1,
      platformRetries: 0,
      cancelRequested: false,
      timeoutSeconds: 60,
      queueTtlSeconds: 600,
      expiresAt: now + 600_000,
      progress: null,
      error: null,
      jobRef: null,
      ...overrides,
    };
  }

  it("enqueues the completed webhook of a request that finished just before a crash, once", async () => {
    // Prepare: a request finished in the store, as a server killed before its enqueue left it.
    const dataDir = mkdtempSync(join(tmpdir(), "longrun-reconcile-"));
    dirs.push(dataDir);
    const id = "req_01M8BS5K93H6S466KRJV9FMVGN";
    const store = new SqliteRequestStore(join(dataDir, "longrun.db"));
    await store.submit(request(id, {}), null, { maxQueued: 10, retryAfterSeconds: 1 });
    await store.transition({
      id,
      from: ["QUEUED"],
      to: "CANCELLED",
      set: { finishedAt: Date.now(), updatedAt: Date.now(), cancelRequested: true },
    });
    store.close();
    const config = parseConfig({ queues: { q: { command: ["true"] } } }, "/");
    const open = () =>
      new EmbeddedRuntime({
        config,
        dataDir,
        allowPrivateWebhooks: true,
        sweepIntervalMs: 60_000,
        baseUrl: () => "http://127.0.0.1:1",
        log: () => {},
      });

    // Act: start twice, as two restarts would.
    for (let i = 0; i < 2; i++) {
      const runtime = open();
      await runtime.start();
      const deliveries = runtime.hooks.deliveriesOf(id);
      await runtime.stop(100);

      // Assess
      expect(deliveries.map((d) => d.event)).toEqual(["completed"]);
      expect(JSON.parse(deliveries[0]?.payload ?? "{}").data).toMatchObject({
        id,
        status: "CANCELLED",
      });
    }
  });
});
