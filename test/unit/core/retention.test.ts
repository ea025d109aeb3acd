import { afterEach, describe, expect, it } from "vitest";
import { cancelRequest } from "../../../functions/core/usecases/lifecycle.ts";
import { purgeExpiredRequests } from "../../../functions/core/usecases/retention.ts";
import { submitRequest } from "../../../functions/core/usecases/submit.ts";
import { makeDeps, submitVia, type TestHarness } from "../../helpers/fakes.ts";

const DAY = 86_400_000;

describe("retention of finished requests", () => {
  let h: TestHarness;
  afterEach(() => h.close());

  it("deletes a request finished longer ago than retentionDays, its files first, then frees its key", async () => {
    // Prepare
    h = makeDeps({ gpu: { retentionDays: 2 } });
    const purged: string[] = [];
    const old = await submitVia(h, { idempotencyKey: "k-old" });
    await cancelRequest("tenant-a", old.id, h.deps);
    h.clock.advance(2 * DAY + 1);
    const recent = await submitVia(h);
    await cancelRequest("tenant-a", recent.id, h.deps);
    const live = await submitVia(h);

    // Act
    const deleted = await purgeExpiredRequests({
      ...h.deps,
      purgeData: async (id) => {
        purged.push(id);
      },
    });

    // Assess
    expect(deleted).toBe(1);
    expect(purged).toEqual([old.id]);
    expect(await h.store.get(old.id)).toBeNull();
    expect(await h.store.get(recent.id)).not.toBeNull();
    expect(await h.store.get(live.id)).not.toBeNull();
    // The key is free again: the same key now makes a new request rather than a replay.
    const again = await submitRequest(
      {
        tenant: "tenant-a",
        queue: "gpu",
        body: { input: { other: true } },
        rawBody: { input: { other: true } },
        idempotencyKey: "k-old",
      },
      h.deps,
    );
    expect(again.kind).toBe("created");
  });

  it("never deletes a request that has not finished, however old", async () => {
    h = makeDeps({ gpu: { retentionDays: 1 } });
    const waiting = await submitVia(h, { queueTtlSeconds: 30 * 86_400 });
    h.clock.advance(10 * DAY);
    const deleted = await purgeExpiredRequests({ ...h.deps, purgeData: async () => {} });
    expect(deleted).toBe(0);
    expect((await h.store.get(waiting.id))?.status).toBe("QUEUED");
  });

  it("leaves the row when deleting the files fails, so the next run tries again", async () => {
    h = makeDeps({ gpu: { retentionDays: 1 } });
    const r = await submitVia(h);
    await cancelRequest("tenant-a", r.id, h.deps);
    h.clock.advance(2 * DAY);
    await expect(
      purgeExpiredRequests({
        ...h.deps,
        purgeData: async () => {
          throw new Error("disk busy");
        },
      }),
    ).rejects.toThrow("disk busy");
    expect(await h.store.get(r.id)).not.toBeNull();
    expect(await purgeExpiredRequests({ ...h.deps, purgeData: async () => {} })).toBe(1);
  });
});
