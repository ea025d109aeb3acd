import { afterEach, describe, expect, it } from "vitest";
import {
  InvalidRequestError,
  NoResultError,
  NotFoundError,
  NotReadyError,
} from "../../../functions/core/errors.ts";
import {
  cancelRequest,
  dispatchQueue,
  expireQueued,
} from "../../../functions/core/usecases/lifecycle.ts";
import {
  assertLimit,
  getRequest,
  getResult,
  listQueues,
  listRequests,
  queueStats,
  readLogs,
} from "../../../functions/core/usecases/queries.ts";
import { makeDeps, submitVia, type TestHarness, uid } from "../../helpers/fakes.ts";

let h: TestHarness;
afterEach(() => h?.close());

describe("getRequest", () => {
  it("gives each QUEUED request its position: higher priority first, then fair share", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 1 } });
    const tenant = uid("tenant");
    const running = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);
    const a = await submitVia(h, { tenant, priority: 0 });
    h.clock.advance(1);
    const b = await submitVia(h, { tenant, priority: 5 });
    h.clock.advance(1);
    const c = await submitVia(h, { tenant, priority: 0 });
    const d = await submitVia(h, { tenant, priority: 5 }); // same instant as c
    // Another tenant's request: newest, but its tenant runs nothing (SPEC §3 fair share).
    const other = await submitVia(h, { tenant: uid("other"), priority: 0 });

    // Act
    const views = await Promise.all(
      [running, a, b, c, d, other].map((r) => getRequest(r.tenant, r.id, h.deps)),
    );

    // Assess
    // The tenant runs one and starts b and d first, so at priority 0 the other tenant,
    // which runs none, goes before a and c.
    expect(views.map((v) => v.position)).toEqual([null, 3, 0, 4, 1, 2]);
    expect(views[1]?.request).toEqual(await h.store.get(a.id));
  });

  it("answers position null once the request is no longer QUEUED", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    await cancelRequest(tenant, r.id, h.deps);

    // Act
    const view = await getRequest(tenant, r.id, h.deps);

    // Assess
    expect(view).toMatchObject({ position: null, request: { status: "CANCELLED" } });
  });

  it("counts only the request's own queue", async () => {
    // Prepare
    h = makeDeps({ gpu: {}, cpu: {} });
    const tenant = uid("tenant");
    await submitVia(h, { tenant, queue: "gpu", priority: 9 });
    const r = await submitVia(h, { tenant, queue: "cpu" });

    // Act
    const view = await getRequest(tenant, r.id, h.deps);

    // Assess
    expect(view.position).toBe(0);
  });

  it("answers NotFoundError for another tenant's request", async () => {
    h = makeDeps();
    const r = await submitVia(h, { tenant: uid("owner") });
    await expect(getRequest(uid("other"), r.id, h.deps)).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe("getResult", () => {
  it("answers NotReadyError while QUEUED, STARTING or RUNNING", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 2 } });
    const tenant = uid("tenant");
    const running = await submitVia(h, { tenant });
    const starting = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(running.id, 1);
    const queued = await submitVia(h, { tenant });

    for (const [id, status] of [
      [queued.id, "QUEUED"],
      [starting.id, "STARTING"],
      [running.id, "RUNNING"],
    ] as const) {
      // Act
      const result = getResult(tenant, id, h.deps);

      // Assess
      await expect(result, status).rejects.toBeInstanceOf(NotReadyError);
      await expect(result, status).rejects.toMatchObject({ status });
    }
    expect(h.results.reads).toEqual([]);
  });

  it("answers NoResultError with the status and error for FAILED, CANCELLED and EXPIRED", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxAttempts: 1, maxRunning: 1 } });
    const tenant = uid("tenant");
    const failed = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);
    await h.compute.exited(failed.id, 1, "failed", h.clock.now(), "exit code 1");
    const cancelled = await submitVia(h, { tenant });
    await cancelRequest(tenant, cancelled.id, h.deps);
    const expired = await submitVia(h, { tenant, queueTtlSeconds: 1 });
    h.clock.advanceSeconds(1);
    await expireQueued(h.deps);

    for (const [id, status, code] of [
      [failed.id, "FAILED", "job_failed"],
      [cancelled.id, "CANCELLED", "cancelled"],
      [expired.id, "EXPIRED", "expired"],
    ] as const) {
      // Act
      const result = getResult(tenant, id, h.deps);

      // Assess
      await expect(result, status).rejects.toBeInstanceOf(NoResultError);
      await expect(result, status).rejects.toMatchObject({ status, error: { code } });
    }
  });

  it("returns output and artifacts once SUCCEEDED", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);
    await h.compute.exited(r.id, 1, "succeeded");
    const artifacts = [{ name: "model.npz", size: 1234, url: "http://x/model.npz" }];
    h.results.results.set(r.id, { output: { loss: 0.1 }, artifacts });

    // Act
    const result = await getResult(tenant, r.id, h.deps);

    // Assess
    expect(result).toEqual({ id: r.id, output: { loss: 0.1 }, artifacts });
  });

  it("answers NotFoundError for another tenant's finished request without reading results", async () => {
    // Prepare
    h = makeDeps();
    const r = await submitVia(h, { tenant: uid("owner") });
    await dispatchQueue("gpu", h.deps);
    await h.compute.exited(r.id, 1, "succeeded");

    // Act
    const result = getResult(uid("other"), r.id, h.deps);

    // Assess
    await expect(result).rejects.toBeInstanceOf(NotFoundError);
    expect(h.results.reads).toEqual([]);
  });
});

describe("readLogs", () => {
  it("pages through the request's log lines with the cursor", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const r = await submitVia(h, { tenant });
    h.logs.lines.set(r.id, ["a", "b", "c"]);

    // Act
    const first = await readLogs(tenant, r.id, undefined, 2, h.deps);
    const second = await readLogs(tenant, r.id, first.nextCursor, 2, h.deps);

    // Assess
    expect(first.lines).toEqual(["a", "b"]);
    expect(second.lines).toEqual(["c"]);
  });

  it("answers NotFoundError for another tenant's request", async () => {
    h = makeDeps();
    const r = await submitVia(h, { tenant: uid("owner") });
    h.logs.lines.set(r.id, ["secret"]);
    await expect(readLogs(uid("other"), r.id, undefined, 10, h.deps)).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });
});

describe("listRequests", () => {
  it("lists only the tenant's requests of the queue, newest first", async () => {
    // Prepare
    h = makeDeps({ gpu: {}, cpu: {} });
    const tenant = uid("tenant");
    const mine = [];
    for (let i = 0; i < 3; i++) {
      mine.push(await submitVia(h, { tenant }));
      h.clock.advance(1);
    }
    await submitVia(h, { tenant: uid("other") });
    await submitVia(h, { tenant, queue: "cpu" });

    // Act
    const page = await listRequests({ tenant, queue: "gpu", limit: 10 }, h.deps);

    // Assess
    expect(page.items.map((r) => r.id)).toEqual(mine.map((r) => r.id).reverse());
    expect(page.nextCursor).toBeNull();
    // Each QUEUED item with its position: what the route shows, from the use case. Fair
    // share puts the other tenant's request second: once our first has a slot, the other
    // tenant runs fewer (SPEC §3).
    expect(mine.map((r) => page.positions.get(r.id))).toEqual([0, 2, 3]);
  });

  it("filters by one or several statuses and treats an empty list as no filter", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 1 } });
    const tenant = uid("tenant");
    const starting = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);
    h.clock.advance(1);
    const cancelled = await submitVia(h, { tenant });
    await cancelRequest(tenant, cancelled.id, h.deps);
    h.clock.advance(1);
    const queued = await submitVia(h, { tenant });

    // Act
    const onlyQueued = await listRequests(
      { tenant, queue: "gpu", statuses: ["QUEUED"], limit: 10 },
      h.deps,
    );
    const two = await listRequests(
      { tenant, queue: "gpu", statuses: ["STARTING", "CANCELLED"], limit: 10 },
      h.deps,
    );
    const none = await listRequests({ tenant, queue: "gpu", statuses: [], limit: 10 }, h.deps);

    // Assess
    expect(onlyQueued.items.map((r) => r.id)).toEqual([queued.id]);
    expect(two.items.map((r) => r.id)).toEqual([cancelled.id, starting.id]);
    expect(none.items).toHaveLength(3);
  });

  it("visits every match exactly once following nextCursor", async () => {
    // Prepare
    h = makeDeps();
    const tenant = uid("tenant");
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      ids.push((await submitVia(h, { tenant })).id);
      if (i % 3 === 0) h.clock.advance(1); // some share a createdAt
    }

    // Act
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await listRequests({ tenant, queue: "gpu", limit: 3, cursor }, h.deps);
      seen.push(...page.items.map((r) => r.id));
      cursor = page.nextCursor ?? undefined;
      pages++;
    } while (cursor !== undefined && pages < 10);

    // Assess
    expect(pages).toBe(3);
    expect(seen).toEqual([...ids].reverse());
  });

  it("answers NotFoundError for an unknown queue", async () => {
    h = makeDeps();
    await expect(
      listRequests({ tenant: uid("t"), queue: "nope", limit: 10 }, h.deps),
    ).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe("queueStats and listQueues", () => {
  it("reports limits and counts, running counting STARTING and RUNNING", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 2, maxQueued: 50 }, cpu: { maxQueued: 7 } });
    const tenant = uid("tenant");
    const a = await submitVia(h, { tenant });
    await submitVia(h, { tenant });
    await submitVia(h, { tenant });
    const cancelled = await submitVia(h, { tenant });
    await cancelRequest(tenant, cancelled.id, h.deps);
    await dispatchQueue("gpu", h.deps);
    await h.compute.running(a.id, 1);

    // Act
    const gpu = await queueStats("gpu", h.deps);
    const all = await listQueues(h.deps);

    // Assess
    expect(gpu).toEqual({ name: "gpu", maxQueued: 50, maxRunning: 2, queued: 1, running: 2 });
    expect(all).toEqual([gpu, { name: "cpu", maxQueued: 7, maxRunning: 1, queued: 0, running: 0 }]);
  });

  it("answers NotFoundError for an unknown queue", async () => {
    h = makeDeps();
    await expect(queueStats("nope", h.deps)).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe("assertLimit", () => {
  it("accepts integers from 1 to max and refuses the rest", () => {
    expect(() => assertLimit(1, 1000)).not.toThrow();
    expect(() => assertLimit(1000, 1000)).not.toThrow();
    for (const bad of [0, -1, 1001, 1.5, Number.NaN]) {
      expect(() => assertLimit(bad, 1000), String(bad)).toThrow(InvalidRequestError);
    }
  });
});

describe("why a request waits", () => {
  it("says dispatching, starting, tenant_limit and slots_busy as the queue fills", async () => {
    // Prepare: two slots, one per tenant.
    h = makeDeps({ gpu: { maxRunning: 2, maxRunningPerTenant: 1 } });
    const [a, b, c] = [uid("a"), uid("b"), uid("c")];
    const a1 = await submitVia(h, { tenant: a });
    const first = await getRequest(a, a1.id, h.deps);
    const a2 = await submitVia(h, { tenant: a });
    const b1 = await submitVia(h, { tenant: b });
    await dispatchQueue("gpu", h.deps);
    const c1 = await submitVia(h, { tenant: c });

    // Act
    const [started, limited, busy] = await Promise.all([
      getRequest(a, a1.id, h.deps),
      getRequest(a, a2.id, h.deps),
      getRequest(c, c1.id, h.deps),
    ]);

    // Assess
    expect(first.wait.waitReason).toBe("dispatching");
    expect(started.request.status).toBe("STARTING");
    expect(started.wait).toEqual({
      waitReason: "starting",
      waitDetail: null,
      estimatedStartAt: null,
    });
    expect(limited.wait.waitReason).toBe("tenant_limit");
    expect(busy.wait.waitReason).toBe("slots_busy");
    expect((await getRequest(b, b1.id, h.deps)).wait.waitReason).toBe("starting");
  });

  it("says no_capacity with the compute's detail while the job waits for capacity", async () => {
    // Prepare
    h = makeDeps({ gpu: { maxRunning: 1 } });
    const tenant = uid("t");
    const r = await submitVia(h, { tenant });
    await dispatchQueue("gpu", h.deps);
    Object.assign(h.deps.compute, {
      capacityWait: (req: { id: string }) =>
        req.id === r.id ? { detail: "needs 2 GPUs; 0,1 busy" } : null,
    });

    // Act
    const view = await getRequest(tenant, r.id, h.deps);

    // Assess
    expect(view.wait).toEqual({
      waitReason: "no_capacity",
      waitDetail: "needs 2 GPUs; 0,1 busy",
      estimatedStartAt: null,
    });
  });

  it("estimates the start from the queue's recent run times, its slots and the position", async () => {
    // Prepare: two requests ran 10 s and 30 s; one slot, one request running.
    h = makeDeps({ gpu: { maxRunning: 1, maxQueued: 100 } });
    const tenant = uid("t");
    for (const seconds of [10, 30]) {
      const r = await submitVia(h, { tenant });
      await dispatchQueue("gpu", h.deps);
      const startedAt = h.clock.now();
      await h.store.transition({
        id: r.id,
        from: ["STARTING"],
        to: "RUNNING",
        attempt: 1,
        set: { startedAt },
      });
      h.clock.advance(seconds * 1000);
      await h.store.transition({
        id: r.id,
        from: ["RUNNING"],
        to: "SUCCEEDED",
        attempt: 1,
        set: { finishedAt: h.clock.now() },
      });
    }
    const before = await submitVia(h, { tenant });
    const unknown = makeDeps({ gpu: {} });
    const fresh = await submitVia(unknown, { tenant });
    await dispatchQueue("gpu", h.deps);
    const waiting = [await submitVia(h, { tenant }), await submitVia(h, { tenant })];

    // Act
    const views = await Promise.all(waiting.map((r) => getRequest(tenant, r.id, h.deps)));
    const noHistory = await getRequest(tenant, fresh.id, unknown.deps);
    unknown.close();

    // Assess: the mean is 20 s; the running one is half done on average, then one by one.
    const now = h.clock.now();
    expect((await h.store.get(before.id))?.status).toBe("STARTING");
    expect(views.map((v) => v.position)).toEqual([0, 1]);
    expect(views.map((v) => v.wait.estimatedStartAt)).toEqual([now + 10_000, now + 30_000]);
    expect(noHistory.wait.estimatedStartAt).toBeNull();
  });
});
