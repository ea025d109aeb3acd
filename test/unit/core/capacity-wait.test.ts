/**
 * SPEC §2 `no_capacity` on a backend that reports a job's wait for an instance through its
 * job events (AWS Batch RUNNABLE): the rule as data (request.ts), and the core applying it
 * with an injected clock through recordJobEvent and getRequest on the SQLite store.
 */
import { afterEach, describe, expect, it } from "vitest";
import {
  type CapacityWait,
  capacityWaitAfter,
  NO_CAPACITY_AFTER_MS,
  noCapacityDetail,
  type RequestRecord,
  RequestStatus,
} from "../../../functions/core/request.ts";
import { dispatchQueue } from "../../../functions/core/usecases/lifecycle.ts";
import { getRequest } from "../../../functions/core/usecases/queries.ts";
import { makeDeps, submitVia, T0, type TestHarness, uid } from "../../helpers/fakes.ts";

const REASON =
  "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Service cannot fulfill the capacity requested for instance type [g5.xlarge]";

function starting(overrides: Partial<RequestRecord> = {}) {
  return {
    status: RequestStatus.STARTING,
    attempt: 1,
    capacityWait: null as CapacityWait | null,
    ...overrides,
  };
}

function wait(overrides: Partial<CapacityWait> = {}): CapacityWait {
  return { attempt: 1, since: T0, reason: REASON, endedAt: null, ...overrides };
}

describe("noCapacityDetail", () => {
  it("says nothing until the job has waited longer than NO_CAPACITY_AFTER_MS", () => {
    const r = starting({ capacityWait: wait() });

    expect(noCapacityDetail(r, T0)).toBeNull();
    expect(noCapacityDetail(r, T0 + NO_CAPACITY_AFTER_MS)).toBeNull();
    expect(noCapacityDetail(r, T0 + NO_CAPACITY_AFTER_MS + 1)).toBe(
      `waiting for an instance since 2026-11-26T10:00:00.000Z: ${REASON}`,
    );
  });

  it("says how long without a reason when the backend gave none", () => {
    const r = starting({ capacityWait: wait({ reason: null }) });

    expect(noCapacityDetail(r, T0 + 3 * 60_000)).toBe(
      "waiting for an instance since 2026-11-26T10:00:00.000Z",
    );
  });

  it("ignores a wait of another attempt, a wait that ended, and a request not STARTING", () => {
    const later = T0 + 10 * 60_000;

    expect(noCapacityDetail(starting({ attempt: 2, capacityWait: wait() }), later)).toBeNull();
    expect(noCapacityDetail(starting({ capacityWait: wait({ endedAt: T0 + 1 }) }), later)).toBe(
      null,
    );
    for (const status of [RequestStatus.QUEUED, RequestStatus.RUNNING, RequestStatus.FAILED]) {
      expect(noCapacityDetail(starting({ status, capacityWait: wait() }), later)).toBeNull();
    }
    expect(noCapacityDetail(starting(), later)).toBeNull();
  });
});

describe("capacityWaitAfter", () => {
  const now = T0 + 30_000;

  it("writes nothing for a job that has just become RUNNABLE without a reason", () => {
    const report = { waiting: true as const, since: T0, reason: null };

    expect(capacityWaitAfter(starting(), 1, report, now)).toBeUndefined();
  });

  it("stores a wait that has a reason, or that has lasted past the threshold", () => {
    const withReason = { waiting: true as const, since: T0, reason: REASON };
    const old = { waiting: true as const, since: T0, reason: null };

    expect(capacityWaitAfter(starting(), 1, withReason, now)).toEqual(wait());
    expect(capacityWaitAfter(starting(), 1, old, T0 + NO_CAPACITY_AFTER_MS + 1)).toEqual(
      wait({ reason: null }),
    );
  });

  it("writes nothing for a duplicate, keeps the earliest start and the last reason", () => {
    const stored = starting({ capacityWait: wait({ since: T0 + 5_000, reason: "OLD:REASON" }) });

    expect(
      capacityWaitAfter(
        starting({ capacityWait: wait() }),
        1,
        { waiting: true, since: T0, reason: REASON },
        now,
      ),
    ).toBeUndefined();
    expect(capacityWaitAfter(stored, 1, { waiting: true, since: T0, reason: null }, now)).toEqual(
      wait({ reason: "OLD:REASON" }),
    );
    expect(
      capacityWaitAfter(stored, 1, { waiting: true, since: T0 + 9_000, reason: REASON }, now),
    ).toEqual(wait({ since: T0 + 5_000 }));
  });

  it("ends a stored wait once the job has its instance, for good", () => {
    const ended = capacityWaitAfter(
      starting({ capacityWait: wait() }),
      1,
      { waiting: false, at: now },
      now,
    );

    expect(ended).toEqual(wait({ endedAt: now }));
    // A late RUNNABLE report of the same attempt changes nothing.
    expect(
      capacityWaitAfter(
        starting({ capacityWait: ended ?? null }),
        1,
        { waiting: true, since: T0, reason: "CAPACITY:OTHER - later" },
        now + 1,
      ),
    ).toBeUndefined();
    // Nothing stored: nothing to end, no write.
    expect(capacityWaitAfter(starting(), 1, { waiting: false, at: now }, now)).toBeUndefined();
  });

  it("writes nothing for another attempt, a request not STARTING, or no report", () => {
    const report = { waiting: true as const, since: T0, reason: REASON };

    expect(capacityWaitAfter(starting({ attempt: 2 }), 1, report, now)).toBeUndefined();
    expect(
      capacityWaitAfter(starting({ status: RequestStatus.RUNNING }), 1, report, now),
    ).toBeUndefined();
    expect(capacityWaitAfter(starting(), 1, undefined, now)).toBeUndefined();
  });

  it("starts afresh for a new attempt, whatever the earlier attempt's wait said", () => {
    const r = starting({ attempt: 2, capacityWait: wait({ endedAt: T0 + 1 }) });

    expect(
      capacityWaitAfter(r, 2, { waiting: true, since: T0 + 60_000, reason: REASON }, now),
    ).toEqual(wait({ attempt: 2, since: T0 + 60_000 }));
  });
});

describe("recordJobEvent and getRequest: a job waiting for an instance", () => {
  let h: TestHarness;
  afterEach(() => h?.close());

  async function startOne(): Promise<RequestRecord> {
    h = makeDeps();
    h.compute.retries = "backend";
    const r = await submitVia(h, { tenant: uid("t") });
    await dispatchQueue(r.queue, h.deps);
    const started = await h.store.get(r.id);
    if (started?.status !== "STARTING") throw new Error("not started");
    return started;
  }

  it("says starting, then no_capacity with the backend's reason after two minutes", async () => {
    // Prepare
    const r = await startOne();
    const since = h.clock.now();
    h.clock.advance(20_000);
    await h.compute.emit({
      type: "starting",
      requestId: r.id,
      attempt: 1,
      at: h.clock.now(),
      capacity: { waiting: true, since, reason: REASON },
    });

    // Act
    const early = await getRequest(r.tenant, r.id, h.deps);
    h.clock.set(since + NO_CAPACITY_AFTER_MS + 1);
    const late = await getRequest(r.tenant, r.id, h.deps);

    // Assess
    expect(early.wait.waitReason).toBe("starting");
    expect(late.wait).toEqual({
      waitReason: "no_capacity",
      waitDetail: `waiting for an instance since ${new Date(since).toISOString()}: ${REASON}`,
      estimatedStartAt: null,
    });
    // A note on the wait is no change of status, attempt or job: updatedAt stays.
    expect((await h.store.get(r.id))?.updatedAt).toBe(r.updatedAt);
  });

  it("says starting again once the job has its instance, and nothing once it runs", async () => {
    // Prepare
    const r = await startOne();
    const since = h.clock.now();
    await h.compute.emit({
      type: "starting",
      requestId: r.id,
      attempt: 1,
      at: since,
      capacity: { waiting: true, since, reason: REASON },
    });
    h.clock.advance(5 * 60_000);
    const waiting = await getRequest(r.tenant, r.id, h.deps);

    // Act
    await h.compute.emit({
      type: "starting",
      requestId: r.id,
      attempt: 1,
      at: h.clock.now(),
      capacity: { waiting: false, at: h.clock.now() },
    });
    const placed = await getRequest(r.tenant, r.id, h.deps);
    await h.compute.running(r.id, 1);
    // A late RUNNABLE report after RUNNING changes nothing.
    await h.compute.emit({
      type: "starting",
      requestId: r.id,
      attempt: 1,
      at: since,
      capacity: { waiting: true, since, reason: REASON },
    });
    const running = await getRequest(r.tenant, r.id, h.deps);

    // Assess
    expect(waiting.wait.waitReason).toBe("no_capacity");
    expect(placed.wait).toEqual({
      waitReason: "starting",
      waitDetail: null,
      estimatedStartAt: null,
    });
    expect(running.wait.waitReason).toBeNull();
    expect((await h.store.get(r.id))?.capacityWait?.endedAt).toBe(since + 5 * 60_000);
  });

  it("lets the compute's own view (the embedded GPU pool) speak first", async () => {
    // Prepare
    const r = await startOne();
    await h.compute.emit({
      type: "starting",
      requestId: r.id,
      attempt: 1,
      at: h.clock.now(),
      capacity: { waiting: true, since: h.clock.now(), reason: REASON },
    });
    h.clock.advance(3 * 60_000);
    Object.assign(h.deps.compute, { capacityWait: () => ({ detail: "needs 2 GPUs; busy: 0,1" }) });

    // Act
    const view = await getRequest(r.tenant, r.id, h.deps);

    // Assess
    expect(view.wait.waitDetail).toBe("needs 2 GPUs; busy: 0,1");
  });
});
