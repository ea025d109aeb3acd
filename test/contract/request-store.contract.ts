/**
 * The RequestStore contract: one suite every adapter runs (SQLite here, DynamoDB on moto
 * later). It speaks only the port, so the same expectations hold for every backend.
 *
 * Every test works in its own tenant and queue, so a backing store shared between tests (a
 * DynamoDB table) cannot leak one test's rows into another's assertions.
 */
import { monotonicFactory, ulid } from "ulidx";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  IdempotencyConflictError,
  InvalidRequestError,
  QueueFullError,
  RateLimitedError,
} from "../../functions/core/errors.ts";
import type { ClaimResult, RequestStore } from "../../functions/core/ports.ts";
import {
  ACTIVE_STATUSES,
  type RequestRecord,
  RequestStatus,
} from "../../functions/core/request.ts";

/** What an adapter's test file hands to {@link describeRequestStoreContract}. */
export interface RequestStoreFixture {
  store: RequestStore;
  /** Opens another independent connection/instance on the same backing store. */
  another(): Promise<RequestStore>;
  /** Releases every instance the fixture opened and whatever backs them. */
  cleanup(): Promise<void>;
}

/** A fixed instant, so that times in assertions are exact and TTLs never race the clock. */
const T0 = Date.UTC(2030, 0, 1, 12, 0, 0);

// Monotonic within this process, so ids made later in a test sort later.
const nextUlid = monotonicFactory();

function newId(): string {
  return `req_${nextUlid()}`;
}

/** A name no other test (or earlier run against a persistent backend) has used. */
function unique(prefix: string): string {
  return `${prefix}-${ulid().toLowerCase()}`;
}

/** Test scope: one tenant and one queue of its own, and a request factory for them. */
interface Scope {
  tenant: string;
  queue: string;
  request(overrides?: Partial<RequestRecord>): RequestRecord;
}

function newScope(): Scope {
  const tenant = unique("tenant");
  const queue = unique("queue");
  return {
    tenant,
    queue,
    request(overrides = {}) {
      const createdAt = overrides.createdAt ?? T0;
      const queueTtlSeconds = overrides.queueTtlSeconds ?? 3600;
      return {
        id: newId(),
        tenant,
        queue,
        status: RequestStatus.QUEUED,
        priority: 0,
        input: { n: 1 },
        metadata: {},
        webhook: null,
        idempotencyKey: null,
        createdAt,
        startedAt: null,
        finishedAt: null,
        updatedAt: 0,
        attempt: 0,
        maxAttempts: 3,
        platformRetries: 0,
        cancelRequested: false,
        timeoutSeconds: 600,
        queueTtlSeconds,
        expiresAt: createdAt + queueTtlSeconds * 1000,
        progress: null,
        error: null,
        jobRef: null,
        ...overrides,
      };
    },
  };
}

const ROOMY = { maxQueued: 1_000_000, retryAfterSeconds: 10 };
const MANY_SLOTS = { maxRunning: 1_000_000 };

/**
 * Registers the RequestStore contract suite for one adapter. `factory` runs before every
 * test and must give a working store; its `cleanup` runs after the test.
 */
export function describeRequestStoreContract(
  name: string,
  factory: () => Promise<RequestStoreFixture>,
): void {
  describe(`RequestStore contract: ${name}`, () => {
    let fx: RequestStoreFixture;
    let store: RequestStore;
    let s: Scope;

    beforeEach(async () => {
      fx = await factory();
      store = fx.store;
      s = newScope();
    });

    afterEach(async () => {
      await fx.cleanup();
    });

    /** Submits without an idempotency key and returns the stored request. */
    async function put(overrides: Partial<RequestRecord> = {}): Promise<RequestRecord> {
      const outcome = await store.submit(s.request(overrides), null, ROOMY);
      return outcome.request;
    }

    /** Ids of every request of the scope's queue in the given statuses, via list. */
    async function idsIn(statuses?: RequestStatus[], tenant = s.tenant): Promise<string[]> {
      const ids: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.list({
          tenant,
          queue: s.queue,
          limit: 50,
          ...(statuses ? { statuses } : {}),
          ...(cursor ? { cursor } : {}),
        });
        ids.push(...page.items.map((r) => r.id));
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      return ids;
    }

    describe("submit and get", () => {
      it("returns every field of a submitted request exactly as given", async () => {
        // Prepare
        const request = s.request({
          priority: 7,
          input: { prompt: "héllo ✓", nested: { list: [1, 2.5, null, true, "x"] } },
          metadata: { team: "search", run: "42" },
          webhook: { url: "https://example.com/hook", events: ["started", "completed"] },
          idempotencyKey: "key-1",
          timeoutSeconds: 1234,
          queueTtlSeconds: 99,
          expiresAt: T0 + 99_000,
          maxAttempts: 5,
        });

        // Act
        const outcome = await store.submit(request, { key: "key-1", bodyHash: "h1" }, ROOMY);
        const fetched = await store.get(request.id);

        // Assess
        expect({ kind: outcome.kind, request: outcome.request }).toEqual({
          kind: "created",
          request,
        });
        expect(fetched).toEqual(request);
      });

      it("keeps inputs that are not objects, null included", async () => {
        // Prepare
        const inputs: unknown[] = [null, "text", 0, false, [1, "two"]];

        // Act
        const stored: RequestRecord[] = [];
        for (const input of inputs) stored.push(await put({ input }));

        // Assess
        for (const [i, r] of stored.entries()) {
          expect((await store.get(r.id))?.input).toEqual(inputs[i]);
        }
      });

      it("returns every field set by later transitions", async () => {
        // Prepare
        const r = await put();
        await store.claimNext(s.queue, MANY_SLOTS, T0);

        // Act
        await store.transition({
          id: r.id,
          from: [RequestStatus.STARTING],
          to: RequestStatus.RUNNING,
          attempt: 1,
          set: {
            startedAt: T0 + 5,
            jobRef: "job-7",
            cancelRequested: true,
            progress: { current: 2, total: null, message: "epoch 2", updatedAt: T0 + 6 },
          },
        });
        await store.transition({
          id: r.id,
          from: [RequestStatus.RUNNING],
          to: RequestStatus.CANCELLED,
          attempt: 1,
          set: {
            finishedAt: T0 + 9,
            updatedAt: T0 + 9,
            error: { code: "cancelled", message: "by caller" },
          },
        });
        const fetched = await store.get(r.id);

        // Assess
        expect(fetched).toEqual({
          ...r,
          status: RequestStatus.CANCELLED,
          attempt: 1,
          startedAt: T0 + 5,
          finishedAt: T0 + 9,
          updatedAt: T0 + 9,
          jobRef: "job-7",
          cancelRequested: true,
          progress: { current: 2, total: null, message: "epoch 2", updatedAt: T0 + 6 },
          error: { code: "cancelled", message: "by caller" },
        });
      });

      it("returns null for an id it never stored", async () => {
        // Act
        const fetched = await store.get(newId());

        // Assess
        expect(fetched).toBeNull();
      });

      it("counts a submitted request as queued", async () => {
        // Act
        await put();
        await put();

        // Assess
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 2, running: 0 });
      });

      it("reports zero counts for a queue it has never seen", async () => {
        // Act
        const counts = await store.queueCounts(unique("never"));

        // Assess
        expect(counts).toEqual({ queued: 0, running: 0 });
      });
    });

    describe("idempotency", () => {
      it("replays the earlier request when the same key comes with the same body", async () => {
        // Prepare
        const first = s.request({ idempotencyKey: "k" });
        await store.submit(first, { key: "k", bodyHash: "same" }, ROOMY);
        const second = s.request({ idempotencyKey: "k", priority: 3 });

        // Act
        const outcome = await store.submit(second, { key: "k", bodyHash: "same" }, ROOMY);

        // Assess
        expect(outcome).toEqual({ kind: "replayed", request: first });
        expect(await store.get(second.id)).toBeNull();
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 1, running: 0 });
      });

      it("replays the request in its current state, not as it was submitted", async () => {
        // Prepare
        const first = s.request({ idempotencyKey: "k" });
        await store.submit(first, { key: "k", bodyHash: "same" }, ROOMY);
        await store.claimNext(s.queue, MANY_SLOTS, T0);

        // Act
        const outcome = await store.submit(
          s.request({ idempotencyKey: "k" }),
          { key: "k", bodyHash: "same" },
          ROOMY,
        );

        // Assess
        expect(outcome.kind).toBe("replayed");
        expect(outcome.request).toMatchObject({
          id: first.id,
          status: RequestStatus.STARTING,
          attempt: 1,
        });
      });

      it("refuses the same key with another body and changes nothing", async () => {
        // Prepare
        const first = s.request({ idempotencyKey: "k" });
        await store.submit(first, { key: "k", bodyHash: "body-a" }, ROOMY);
        const second = s.request({ idempotencyKey: "k" });

        // Act
        const attempt = store.submit(second, { key: "k", bodyHash: "body-b" }, ROOMY);

        // Assess
        await expect(attempt).rejects.toBeInstanceOf(IdempotencyConflictError);
        await expect(attempt).rejects.toMatchObject({ key: "k", requestId: first.id });
        expect(await store.get(second.id)).toBeNull();
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 1, running: 0 });
        const replay = await store.submit(
          s.request({ idempotencyKey: "k" }),
          { key: "k", bodyHash: "body-a" },
          ROOMY,
        );
        expect(replay).toEqual({ kind: "replayed", request: first });
      });

      it("scopes keys to the tenant: another tenant's same key creates its own request", async () => {
        // Prepare
        const mine = s.request({ idempotencyKey: "shared" });
        await store.submit(mine, { key: "shared", bodyHash: "h" }, ROOMY);
        const theirs = s.request({ tenant: unique("other"), idempotencyKey: "shared" });

        // Act
        const outcome = await store.submit(theirs, { key: "shared", bodyHash: "h" }, ROOMY);

        // Assess
        expect({ kind: outcome.kind, request: outcome.request }).toEqual({
          kind: "created",
          request: theirs,
        });
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 2, running: 0 });
      });

      it("replays a known key even when the queue is full", async () => {
        // Prepare
        const limits = { maxQueued: 1, retryAfterSeconds: 5 };
        const first = s.request({ idempotencyKey: "k" });
        await store.submit(first, { key: "k", bodyHash: "h" }, limits);

        // Act
        const outcome = await store.submit(
          s.request({ idempotencyKey: "k" }),
          { key: "k", bodyHash: "h" },
          limits,
        );

        // Assess
        expect(outcome).toEqual({ kind: "replayed", request: first });
      });
    });

    describe("queue capacity", () => {
      it("rejects a submit once maxQueued requests wait, and the rejection changes nothing", async () => {
        // Prepare
        const limits = { maxQueued: 2, retryAfterSeconds: 7 };
        await store.submit(s.request(), null, limits);
        await store.submit(s.request(), null, limits);
        const third = s.request({ idempotencyKey: "k3" });

        // Act
        const attempt = store.submit(third, { key: "k3", bodyHash: "a" }, limits);

        // Assess
        await expect(attempt).rejects.toBeInstanceOf(QueueFullError);
        await expect(attempt).rejects.toMatchObject({
          queue: s.queue,
          maxQueued: 2,
          retryAfterSeconds: 7,
        });
        expect(await store.get(third.id)).toBeNull();
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 2, running: 0 });
        // The key was not kept: once there is room, the same key with another body is new.
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        const retry = s.request({ idempotencyKey: "k3" });
        const outcome = await store.submit(retry, { key: "k3", bodyHash: "b" }, limits);
        expect({ kind: outcome.kind, request: outcome.request }).toEqual({
          kind: "created",
          request: retry,
        });
      });

      it("counts only QUEUED requests against maxQueued", async () => {
        // Prepare
        const limits = { maxQueued: 1, retryAfterSeconds: 1 };
        await store.submit(s.request(), null, limits);
        await store.claimNext(s.queue, MANY_SLOTS, T0);

        // Act
        const outcome = await store.submit(s.request(), null, limits);

        // Assess
        expect(outcome.kind).toBe("created");
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 1, running: 1 });
      });

      it("keeps each queue's capacity separate", async () => {
        // Prepare
        const limits = { maxQueued: 1, retryAfterSeconds: 1 };
        await store.submit(s.request(), null, limits);

        // Act
        const outcome = await store.submit(s.request({ queue: unique("other") }), null, limits);

        // Assess
        expect(outcome.kind).toBe("created");
      });
    });

    describe("claimNext", () => {
      it("starts the highest priority first, then the oldest, then the smallest id", async () => {
        // Prepare: submitted in an order that matches none of the expected start order.
        const lowOld = await put({ priority: 1, createdAt: T0 });
        const highNew = await put({ priority: 9, createdAt: T0 + 50 });
        const midNew = await put({ priority: 5, createdAt: T0 + 20 });
        const midOld = await put({ priority: 5, createdAt: T0 + 10 });
        const tieA = newId();
        const tieB = newId();
        await put({ id: tieB, priority: 5, createdAt: T0 + 30 });
        await put({ id: tieA, priority: 5, createdAt: T0 + 30 });

        // Act
        const order: string[] = [];
        for (let i = 0; i < 6; i++) {
          const claim = await store.claimNext(s.queue, MANY_SLOTS, T0);
          if (claim.kind === "started") order.push(claim.request.id);
        }

        // Assess
        expect(order).toEqual([highNew.id, midOld.id, midNew.id, tieA, tieB, lowOld.id]);
      });

      it("moves the claimed request to STARTING with the next attempt and no job reference", async () => {
        // Prepare
        const r = await put({ attempt: 0, jobRef: null });

        // Act
        const claim = await store.claimNext(s.queue, { maxRunning: 1 }, T0);

        // Assess
        expect(claim).toEqual({
          kind: "started",
          request: {
            ...r,
            status: RequestStatus.STARTING,
            attempt: 1,
            jobRef: null,
            updatedAt: T0,
          },
        });
        expect(await store.get(r.id)).toMatchObject({ status: "STARTING", attempt: 1 });
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 0, running: 1 });
      });

      it("reports full and claims nothing once maxRunning requests hold slots", async () => {
        // Prepare
        await put();
        await put();
        const waiting = await put();
        await store.claimNext(s.queue, { maxRunning: 2 }, T0);
        await store.claimNext(s.queue, { maxRunning: 2 }, T0);

        // Act
        const claim = await store.claimNext(s.queue, { maxRunning: 2 }, T0);

        // Assess
        expect(claim).toEqual({ kind: "full" });
        expect(await store.get(waiting.id)).toMatchObject({ status: "QUEUED", attempt: 0 });
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 1, running: 2 });
      });

      it("reports empty when nothing waits in the queue", async () => {
        // Prepare: work in another queue must not be taken.
        await store.submit(s.request({ queue: unique("other") }), null, ROOMY);

        // Act
        const claim = await store.claimNext(s.queue, MANY_SLOTS, T0);

        // Assess
        expect(claim).toEqual({ kind: "empty" });
      });

      it("expires a head request whose queue TTL has passed instead of starting it", async () => {
        // Prepare
        const stale = await put({ priority: 9, queueTtlSeconds: 60, expiresAt: T0 + 60_000 });
        const fresh = await put({ priority: 1, queueTtlSeconds: 3600 });
        const now = T0 + 60_000; // exactly at expiresAt: expired

        // Act
        const claim = await store.claimNext(s.queue, MANY_SLOTS, now);

        // Assess
        expect(claim).toEqual({
          kind: "expired",
          request: {
            ...stale,
            status: RequestStatus.EXPIRED,
            finishedAt: now,
            updatedAt: now,
            error: { code: "expired", message: "waited longer than its queue TTL of 60s" },
          },
        });
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 1, running: 0 });
        const next = await store.claimNext(s.queue, MANY_SLOTS, now);
        expect(next.kind === "started" && next.request.id).toBe(fresh.id);
      });

      it("starts a head request one millisecond before it would expire", async () => {
        // Prepare
        const r = await put({ expiresAt: T0 + 1000 });

        // Act
        const claim = await store.claimNext(s.queue, MANY_SLOTS, T0 + 999);

        // Assess
        expect(claim.kind).toBe("started");
        expect(claim.kind === "started" && claim.request.id).toBe(r.id);
      });

      it("reports full before looking at an expired head", async () => {
        // Prepare
        await put();
        const stale = await put({ expiresAt: T0 + 1 });
        await store.claimNext(s.queue, { maxRunning: 1 }, T0);

        // Act
        const claim = await store.claimNext(s.queue, { maxRunning: 1 }, T0 + 10);

        // Assess
        expect(claim).toEqual({ kind: "full" });
        expect(await store.get(stale.id)).toMatchObject({ status: "QUEUED" });
      });
    });

    describe("transition", () => {
      it("applies a transition whose status and attempt match and returns the updated request", async () => {
        // Prepare
        const r = await put();
        await store.claimNext(s.queue, MANY_SLOTS, T0);

        // Act
        const updated = await store.transition({
          id: r.id,
          from: [RequestStatus.STARTING],
          to: RequestStatus.RUNNING,
          attempt: 1,
          set: { startedAt: T0 + 1 },
        });

        // Assess
        expect(updated).toEqual({
          ...r,
          status: RequestStatus.RUNNING,
          attempt: 1,
          startedAt: T0 + 1,
          updatedAt: T0, // stamped by the claim; this transition did not set it
        });
        expect(await store.get(r.id)).toEqual(updated);
      });

      it("returns null and changes nothing when the status does not match", async () => {
        // Prepare
        const r = await put();

        // Act
        const updated = await store.transition({
          id: r.id,
          from: [RequestStatus.STARTING],
          to: RequestStatus.RUNNING,
          set: { startedAt: T0 + 1 },
        });

        // Assess
        expect(updated).toBeNull();
        expect(await store.get(r.id)).toEqual(r);
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 1, running: 0 });
      });

      it("returns null and changes nothing when the attempt does not match", async () => {
        // Prepare
        await put();
        const claim = await store.claimNext(s.queue, MANY_SLOTS, T0);
        if (claim.kind !== "started") throw new Error("setup: expected a started claim");

        // Act
        const updated = await store.transition({
          id: claim.request.id,
          from: [RequestStatus.STARTING],
          to: RequestStatus.FAILED,
          attempt: 2,
          set: { finishedAt: T0 + 1, error: { code: "job_failed", message: "stale" } },
        });

        // Assess
        expect(updated).toBeNull();
        expect(await store.get(claim.request.id)).toEqual(claim.request);
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 0, running: 1 });
      });

      it("returns null for an id it never stored", async () => {
        // Act
        const updated = await store.transition({
          id: newId(),
          from: [RequestStatus.QUEUED],
          to: RequestStatus.CANCELLED,
        });

        // Assess
        expect(updated).toBeNull();
      });

      it("updates fields without changing status or counters when `to` is omitted", async () => {
        // Prepare
        await put();
        const claim = await store.claimNext(s.queue, MANY_SLOTS, T0);
        if (claim.kind !== "started") throw new Error("setup: expected a started claim");
        const progress = { current: 1, total: 3, message: "epoch 1", updatedAt: T0 + 2 };

        // Act
        const updated = await store.transition({
          id: claim.request.id,
          from: ACTIVE_STATUSES,
          attempt: 1,
          set: { jobRef: "pid-42", progress },
        });

        // Assess
        expect(updated).toEqual({ ...claim.request, jobRef: "pid-42", progress });
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 0, running: 1 });
      });

      it("clears nullable fields set to null", async () => {
        // Prepare
        await put();
        const claim = await store.claimNext(s.queue, MANY_SLOTS, T0);
        if (claim.kind !== "started") throw new Error("setup: expected a started claim");
        const id = claim.request.id;
        await store.transition({
          id,
          from: ACTIVE_STATUSES,
          set: {
            jobRef: "j",
            progress: { current: 1, total: 2, message: null, updatedAt: T0 },
          },
        });

        // Act
        const updated = await store.transition({
          id,
          from: ACTIVE_STATUSES,
          set: { jobRef: null, progress: null },
        });

        // Assess
        expect(updated).toMatchObject({ jobRef: null, progress: null });
        expect(await store.get(id)).toMatchObject({ jobRef: null, progress: null });
      });

      it("accepts a request in any of several statuses of one class", async () => {
        // Prepare
        await put();
        const claim = await store.claimNext(s.queue, MANY_SLOTS, T0);
        if (claim.kind !== "started") throw new Error("setup: expected a started claim");

        // Act
        const updated = await store.transition({
          id: claim.request.id,
          from: [RequestStatus.RUNNING, RequestStatus.STARTING],
          to: RequestStatus.SUCCEEDED,
          attempt: 1,
          set: { finishedAt: T0 + 3 },
        });

        // Assess
        expect(updated).toMatchObject({ status: "SUCCEEDED", finishedAt: T0 + 3 });
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 0, running: 0 });
      });

      it("moves the counters along queued → starting → running → succeeded", async () => {
        // Prepare
        const r = await put();
        const seen = [await store.queueCounts(s.queue)];

        // Act
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        seen.push(await store.queueCounts(s.queue));
        await store.transition({ id: r.id, from: ["STARTING"], to: "RUNNING", attempt: 1 });
        seen.push(await store.queueCounts(s.queue));
        await store.transition({ id: r.id, from: ["RUNNING"], to: "SUCCEEDED", attempt: 1 });
        seen.push(await store.queueCounts(s.queue));

        // Assess
        expect(seen).toEqual([
          { queued: 1, running: 0 },
          { queued: 0, running: 1 },
          { queued: 0, running: 1 },
          { queued: 0, running: 0 },
        ]);
      });

      it("keeps the slot when a running attempt is retried as STARTING", async () => {
        // Prepare
        const r = await put();
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        await store.transition({ id: r.id, from: ["STARTING"], to: "RUNNING", attempt: 1 });

        // Act
        const retried = await store.transition({
          id: r.id,
          from: ACTIVE_STATUSES,
          to: RequestStatus.STARTING,
          attempt: 1,
          set: { attempt: 2, jobRef: null },
        });

        // Assess
        expect(retried).toMatchObject({ status: "STARTING", attempt: 2, jobRef: null });
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 0, running: 1 });
      });

      it("moves attempt and platformRetries together in a platform retry, keeping the slot", async () => {
        // Prepare
        const r = await put({ maxAttempts: 1 });
        const claim = await store.claimNext(s.queue, MANY_SLOTS, T0);
        await store.transition({ id: r.id, from: ["STARTING"], to: "RUNNING", attempt: 1 });

        // Act
        const retried = await store.transition({
          id: r.id,
          from: ACTIVE_STATUSES,
          to: RequestStatus.STARTING,
          attempt: 1,
          set: { attempt: 2, platformRetries: 1, jobRef: null },
        });

        // Assess
        expect(claim).toMatchObject({ kind: "started", request: { platformRetries: 0 } });
        expect(retried).toMatchObject({ status: "STARTING", attempt: 2, platformRetries: 1 });
        expect(await store.get(r.id)).toMatchObject({ attempt: 2, platformRetries: 1 });
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 0, running: 1 });
      });

      it("refuses a platform retry decided on an attempt that has moved on", async () => {
        // Prepare: the loss was already retried once (attempt 2, platformRetries 1).
        const r = await put();
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        await store.transition({
          id: r.id,
          from: ACTIVE_STATUSES,
          to: RequestStatus.STARTING,
          attempt: 1,
          set: { attempt: 2, platformRetries: 1 },
        });
        const before = await store.get(r.id);

        // Act: a duplicate of the same loss, decided on attempt 1.
        const late = await store.transition({
          id: r.id,
          from: ACTIVE_STATUSES,
          to: RequestStatus.STARTING,
          attempt: 1,
          set: { attempt: 2, platformRetries: 1 },
        });

        // Assess
        expect(late).toBeNull();
        expect(await store.get(r.id)).toEqual(before);
      });

      it("frees the queued count when a waiting request is cancelled", async () => {
        // Prepare
        const r = await put();

        // Act
        const cancelled = await store.transition({
          id: r.id,
          from: [RequestStatus.QUEUED],
          to: RequestStatus.CANCELLED,
          set: {
            cancelRequested: true,
            finishedAt: T0 + 1,
            error: { code: "cancelled", message: "by caller" },
          },
        });

        // Assess
        expect(cancelled).toMatchObject({ status: "CANCELLED", cancelRequested: true });
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 0, running: 0 });
        expect(await store.claimNext(s.queue, MANY_SLOTS, T0)).toEqual({ kind: "empty" });
      });

      it("frees the slot when an active request is cancelled", async () => {
        // Prepare
        const r = await put();
        await store.claimNext(s.queue, MANY_SLOTS, T0);

        // Act
        await store.transition({
          id: r.id,
          from: ACTIVE_STATUSES,
          to: RequestStatus.CANCELLED,
          attempt: 1,
        });

        // Assess
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 0, running: 0 });
      });

      it("refuses a transition the lifecycle table forbids, changing nothing", async () => {
        // Prepare
        const r = await put();

        // Act
        const illegal = store.transition({
          id: r.id,
          from: [RequestStatus.QUEUED],
          to: RequestStatus.SUCCEEDED,
        });

        // Assess
        await expect(illegal).rejects.toThrow(/not allowed/);
        await expect(illegal).rejects.not.toBeInstanceOf(InvalidRequestError);
        expect(await store.get(r.id)).toEqual(r);
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 1, running: 0 });
      });

      it("refuses a field update of a request in a terminal status", async () => {
        // Act
        const update = store.transition({
          id: newId(),
          from: [RequestStatus.SUCCEEDED],
          set: { jobRef: "late" },
        });

        // Assess
        await expect(update).rejects.toThrow(/not allowed/);
      });

      it("refuses a from list that mixes status classes", async () => {
        // Prepare
        const r = await put();

        // Act
        const mixed = store.transition({
          id: r.id,
          from: [RequestStatus.QUEUED, RequestStatus.RUNNING],
          to: RequestStatus.CANCELLED,
        });

        // Assess
        await expect(mixed).rejects.toThrow(/status classes/);
        expect(await store.get(r.id)).toEqual(r);
      });
    });

    describe("list", () => {
      it("lists the tenant's requests of the queue newest first, equal times by id", async () => {
        // Prepare
        const a = await put({ createdAt: T0 });
        const b = await put({ createdAt: T0 + 10 });
        const c1 = await put({ createdAt: T0 + 5 });
        const c2 = await put({ createdAt: T0 + 5 });

        // Act
        const page = await store.list({ tenant: s.tenant, queue: s.queue, limit: 10 });

        // Assess
        expect(page.items.map((r) => r.id)).toEqual([b.id, c2.id, c1.id, a.id]);
        expect(page.nextCursor).toBeNull();
        expect(page.items[0]).toEqual(b);
      });

      it("shows neither another tenant's requests nor another queue's", async () => {
        // Prepare
        const mine = await put();
        await put({ tenant: unique("intruder") });
        await put({ queue: unique("elsewhere") });

        // Act
        const page = await store.list({ tenant: s.tenant, queue: s.queue, limit: 10 });

        // Assess
        expect(page.items.map((r) => r.id)).toEqual([mine.id]);
      });

      it("returns an empty page for a tenant with no requests", async () => {
        // Act
        const page = await store.list({ tenant: unique("nobody"), queue: s.queue, limit: 5 });

        // Assess
        expect(page).toEqual({ items: [], nextCursor: null });
      });

      it("filters by one status or by several", async () => {
        // Prepare
        const queued = await put({ createdAt: T0 + 3 });
        const starting = await put({ createdAt: T0 + 1, priority: 9 });
        const cancelled = await put({ createdAt: T0 + 2 });
        await store.claimNext(s.queue, { maxRunning: 1 }, T0);
        await store.transition({ id: cancelled.id, from: ["QUEUED"], to: "CANCELLED" });

        // Act
        const onlyQueued = await idsIn([RequestStatus.QUEUED]);
        const twoKinds = await idsIn([RequestStatus.STARTING, RequestStatus.CANCELLED]);
        const none = await idsIn([RequestStatus.SUCCEEDED]);

        // Assess
        expect(onlyQueued).toEqual([queued.id]);
        expect(twoKinds).toEqual([cancelled.id, starting.id]);
        expect(none).toEqual([]);
      });

      it("visits every match exactly once, newest first, when following nextCursor", async () => {
        // Prepare: 37 requests, some sharing a createdAt, a third of them cancelled.
        const all: RequestRecord[] = [];
        for (let i = 0; i < 37; i++) all.push(await put({ createdAt: T0 + Math.floor(i / 3) }));
        for (const r of all.filter((_, i) => i % 3 === 0)) {
          await store.transition({ id: r.id, from: ["QUEUED"], to: "CANCELLED" });
        }
        const newestFirst = [...all].sort((x, y) =>
          x.createdAt !== y.createdAt ? y.createdAt - x.createdAt : x.id < y.id ? 1 : -1,
        );

        // Act
        const pages: string[][] = [];
        let cursor: string | undefined;
        do {
          const page = await store.list({
            tenant: s.tenant,
            queue: s.queue,
            limit: 4,
            ...(cursor ? { cursor } : {}),
          });
          pages.push(page.items.map((r) => r.id));
          cursor = page.nextCursor ?? undefined;
        } while (cursor);
        const cancelledOnly = await idsIn([RequestStatus.CANCELLED]);
        const both = await idsIn([RequestStatus.CANCELLED, RequestStatus.QUEUED]);

        // Assess
        expect(pages.flat()).toEqual(newestFirst.map((r) => r.id));
        expect(pages).toHaveLength(10);
        expect(pages.every((p) => p.length > 0 && p.length <= 4)).toBe(true);
        expect(cancelledOnly).toEqual(
          newestFirst.filter((r) => all.indexOf(r) % 3 === 0).map((r) => r.id),
        );
        expect(both).toEqual(newestFirst.map((r) => r.id));
      });

      it("pages a status filter of several statuses with a small limit without gaps", async () => {
        // Prepare
        const all: RequestRecord[] = [];
        for (let i = 0; i < 12; i++) all.push(await put({ createdAt: T0 + i }));
        for (const r of all.filter((_, i) => i % 2 === 0)) {
          await store.transition({ id: r.id, from: ["QUEUED"], to: "CANCELLED" });
        }

        // Act
        const seen: string[] = [];
        let cursor: string | undefined;
        do {
          const page = await store.list({
            tenant: s.tenant,
            queue: s.queue,
            statuses: [RequestStatus.QUEUED, RequestStatus.CANCELLED],
            limit: 5,
            ...(cursor ? { cursor } : {}),
          });
          seen.push(...page.items.map((r) => r.id));
          cursor = page.nextCursor ?? undefined;
        } while (cursor);

        // Assess
        expect(seen).toEqual([...all].reverse().map((r) => r.id));
      });

      it("gives no cursor when the last page is exactly full", async () => {
        // Prepare
        for (let i = 0; i < 4; i++) await put({ createdAt: T0 + i });

        // Act
        const first = await store.list({ tenant: s.tenant, queue: s.queue, limit: 2 });
        const second = await store.list({
          tenant: s.tenant,
          queue: s.queue,
          limit: 2,
          cursor: first.nextCursor ?? "missing",
        });

        // Assess
        expect(first.items).toHaveLength(2);
        expect(first.nextCursor).not.toBeNull();
        expect(second.items).toHaveLength(2);
        expect(second.nextCursor).toBeNull();
      });

      it.each([
        ["not base64url", "%%%not-a-cursor%%%"],
        ["not JSON", Buffer.from("hello").toString("base64url")],
        ["JSON of the wrong shape", Buffer.from('{"a":1}').toString("base64url")],
        ["a tuple with the wrong types", Buffer.from('["x", 1]').toString("base64url")],
        ["a tuple too short", Buffer.from("[1]").toString("base64url")],
        // Ids no store makes, which would otherwise reach a key condition: a lone surrogate
        // (not valid UTF-8 on the wire), a key separator, an id longer than any key allows.
        ["an id with a lone surrogate", Buffer.from('[1,"req_\\ud800"]').toString("base64url")],
        ["an id with a separator", Buffer.from('[1,"req_a#b"]').toString("base64url")],
        ["an id too long", Buffer.from(`[1,"${"a".repeat(700)}"]`).toString("base64url")],
        ["empty", ""],
      ])(
        "rejects a cursor that is %s as an invalid request on the cursor field",
        async (_, cursor) => {
          // Prepare
          await put();

          // Act
          const listing = store.list({ tenant: s.tenant, queue: s.queue, limit: 5, cursor });

          // Assess
          await expect(listing).rejects.toBeInstanceOf(InvalidRequestError);
          await expect(listing).rejects.toMatchObject({ field: "cursor" });
        },
      );
    });

    describe("position", () => {
      it("counts the waiting requests that will start before this one", async () => {
        // Prepare
        const high = await put({ priority: 8, createdAt: T0 + 50 });
        const mid1 = await put({ priority: 4, createdAt: T0 + 1 });
        const mid2 = await put({ priority: 4, createdAt: T0 + 2 });
        const low = await put({ priority: 0, createdAt: T0 });
        await put({ queue: unique("other"), priority: 9 });

        // Act
        const positions = await Promise.all([high, mid1, mid2, low].map((r) => store.position(r)));

        // Assess
        expect(positions).toEqual([0, 1, 2, 3]);
      });

      it("answers a new request's position with its submit, when it does, as position() would", async () => {
        // Prepare: priorities mixed, one started and one cancelled in between.
        const plan: Array<{ priority: number; createdAt: number }> = [
          { priority: 4, createdAt: T0 + 10 },
          { priority: 4, createdAt: T0 + 20 },
          { priority: 7, createdAt: T0 + 5 },
          { priority: 4, createdAt: T0 + 21 },
          { priority: 0, createdAt: T0 + 30 },
          { priority: 9, createdAt: T0 + 40 },
          { priority: 4, createdAt: T0 + 50 },
        ];
        const given: Array<[number, number]> = [];

        // Act
        for (const [i, step] of plan.entries()) {
          if (i === 4) await store.claimNext(s.queue, MANY_SLOTS, T0);
          if (i === 5) {
            const victim = (await idsIn(["QUEUED"])).at(-1) as string;
            await store.transition({ id: victim, from: ["QUEUED"], to: "CANCELLED" });
          }
          const outcome = await store.submit(s.request(step), null, ROOMY);
          if (outcome.kind === "created" && outcome.position !== undefined) {
            given.push([outcome.position, await store.position(outcome.request)]);
          }
        }

        // Assess
        for (const [fromSubmit, fromPosition] of given) expect(fromSubmit).toBe(fromPosition);
        expect(given.length === 0 || given.length === plan.length).toBe(true);
      });

      it("counts a page's positions together, each as position() alone would", async () => {
        // Prepare: several priorities, ties of time, one started and one cancelled.
        const plan = [4, 7, 4, 0, 9, 4, 7, 2, 4, 0].map((priority, i) => ({
          priority,
          createdAt: T0 + (i % 3),
        }));
        const all: RequestRecord[] = [];
        for (const step of plan) all.push(await put(step));
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        await store.transition({
          id: (all[5] as RequestRecord).id,
          from: ["QUEUED"],
          to: "CANCELLED",
        });
        const waiting = await Promise.all(
          (await idsIn(["QUEUED"])).map(async (id) => (await store.get(id)) as RequestRecord),
        );

        // Act
        const together = await store.positions(waiting);

        // Assess
        expect(waiting).toHaveLength(plan.length - 2);
        for (const r of waiting) expect(together.get(r.id)).toBe(await store.position(r));
        expect([...together.values()].sort((a, b) => a - b)).toEqual(
          Array.from({ length: waiting.length }, (_, i) => i),
        );
        expect(await store.positions([])).toEqual(new Map());
      });

      it("breaks ties of priority and time by id, as dispatch does", async () => {
        // Prepare
        const first = newId();
        const second = newId();
        const b = await put({ id: second, createdAt: T0 });
        const a = await put({ id: first, createdAt: T0 });

        // Act
        const [pa, pb] = [await store.position(a), await store.position(b)];

        // Assess
        expect([pa, pb]).toEqual([0, 1]);
      });

      it("no longer counts requests that started or were cancelled", async () => {
        // Prepare
        await put({ priority: 9 });
        const cancelled = await put({ priority: 8 });
        await put({ priority: 7 });
        const me = await put({ priority: 1 });
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        await store.transition({ id: cancelled.id, from: ["QUEUED"], to: "CANCELLED" });

        // Act
        const position = await store.position(me);

        // Assess
        expect(position).toBe(1);
      });
    });

    describe("sweeps", () => {
      it("finds the STARTING and RUNNING requests and nothing else", async () => {
        // Prepare
        const running = await put({ priority: 9 });
        const starting = await put({ priority: 8 });
        const done = await put({ priority: 7 });
        await put({ priority: 0 });
        for (let i = 0; i < 3; i++) await store.claimNext(s.queue, MANY_SLOTS, T0);
        await store.transition({ id: running.id, from: ["STARTING"], to: "RUNNING" });
        await store.transition({ id: done.id, from: ["STARTING"], to: "SUCCEEDED" });

        // Act
        const active = (await store.findActive(10_000)).filter((r) => r.queue === s.queue);

        // Assess
        expect(active.map((r) => r.id).sort()).toEqual([running.id, starting.id].sort());
        expect(active.find((r) => r.id === running.id)?.status).toBe("RUNNING");
      });

      it("returns at most `limit` active requests", async () => {
        // Prepare
        for (let i = 0; i < 3; i++) await put();
        for (let i = 0; i < 3; i++) await store.claimNext(s.queue, MANY_SLOTS, T0);

        // Act
        const active = await store.findActive(2);

        // Assess
        expect(active).toHaveLength(2);
      });

      it("finds QUEUED requests whose expiresAt is at or before now, and only those", async () => {
        // Prepare
        const past = await put({ expiresAt: T0 + 100 });
        const atNow = await put({ expiresAt: T0 + 200 });
        await put({ expiresAt: T0 + 201 });
        const startedLate = await put({ expiresAt: T0 + 50, priority: 9 });
        await store.claimNext(s.queue, MANY_SLOTS, T0);

        // Act
        const expired = (await store.findExpired(T0 + 200, 10_000)).filter(
          (r) => r.queue === s.queue,
        );

        // Assess
        expect(expired.map((r) => r.id).sort()).toEqual([past.id, atNow.id].sort());
        expect(expired.map((r) => r.id)).not.toContain(startedLate.id);
      });

      it("returns at most `limit` expired requests", async () => {
        // Prepare
        for (let i = 0; i < 3; i++) await put({ expiresAt: T0 });

        // Act
        const expired = await store.findExpired(T0, 2);

        // Assess
        expect(expired).toHaveLength(2);
      });
    });

    describe("sharing a queue between tenants", () => {
      /** Submits one request of `tenant` in the scope's queue. */
      async function putAs(
        tenant: string,
        overrides: Partial<RequestRecord> = {},
      ): Promise<RequestRecord> {
        return (await store.submit(s.request({ tenant, ...overrides }), null, ROOMY)).request;
      }

      /** Claims until the store says anything but "started"; returns the started ones. */
      async function claimAll(
        limits: Parameters<RequestStore["claimNext"]>[1] = MANY_SLOTS,
      ): Promise<{ started: RequestRecord[]; last: ClaimResult }> {
        const started: RequestRecord[] = [];
        for (;;) {
          const claim = await store.claimNext(s.queue, limits, T0);
          if (claim.kind !== "started") return { started, last: claim };
          started.push(claim.request);
        }
      }

      it("gives the next slot to the tenant with the fewest active requests, ties to the oldest", async () => {
        // Prepare: a submitted three first; b's one request is the newest of all.
        const [a, b] = [`${s.tenant}-a`, `${s.tenant}-b`];
        const a1 = await putAs(a, { createdAt: T0 });
        const a2 = await putAs(a, { createdAt: T0 + 1 });
        const a3 = await putAs(a, { createdAt: T0 + 2 });
        const b1 = await putAs(b, { createdAt: T0 + 10 });

        // Act
        const { started, last } = await claimAll();

        // Assess
        expect(started.map((r) => r.id)).toEqual([a1.id, b1.id, a2.id, a3.id]);
        expect(last.kind).toBe("empty");
      });

      it("counts a tenant's requests that already run when it picks", async () => {
        // Prepare: a runs two; b waits with a newer request than a's third.
        const [a, b] = [`${s.tenant}-a`, `${s.tenant}-b`];
        await putAs(a, { createdAt: T0 });
        await putAs(a, { createdAt: T0 + 1 });
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        const a3 = await putAs(a, { createdAt: T0 + 2 });
        const b1 = await putAs(b, { createdAt: T0 + 3 });

        // Act
        const { started } = await claimAll();

        // Assess
        expect(started.map((r) => r.id)).toEqual([b1.id, a3.id]);
      });

      it("shares starts evenly among five tenants, whoever submitted first", async () => {
        // Prepare: tenant 0 submits all of its requests first, then tenant 1, and so on.
        const tenants = Array.from({ length: 5 }, (_, i) => `${s.tenant}-${i}`);
        for (const [i, tenant] of tenants.entries()) {
          for (let j = 0; j < 4; j++) await putAs(tenant, { createdAt: T0 + i * 10 + j });
        }

        // Act
        const { started } = await claimAll();

        // Assess: every round of five starts gives each tenant one.
        expect(started).toHaveLength(20);
        for (let round = 0; round < 4; round++) {
          const who = started.slice(round * 5, round * 5 + 5).map((r) => r.tenant);
          expect(new Set(who)).toEqual(new Set(tenants));
        }
      });

      it("starts a higher priority first, however many the tenant already runs", async () => {
        // Prepare
        const [a, b] = [`${s.tenant}-a`, `${s.tenant}-b`];
        await putAs(a);
        await putAs(a);
        await claimAll();
        const low = await putAs(b, { priority: 0, createdAt: T0 - 5 });
        const high = await putAs(a, { priority: 5, createdAt: T0 + 5 });

        // Act
        const { started } = await claimAll();

        // Assess
        expect(started.map((r) => r.id)).toEqual([high.id, low.id]);
      });

      it("passes over a tenant at its limit without holding back another tenant", async () => {
        // Prepare
        const [a, b] = [`${s.tenant}-a`, `${s.tenant}-b`];
        const a1 = await putAs(a, { createdAt: T0, priority: 9 });
        const a2 = await putAs(a, { createdAt: T0 + 1, priority: 9 });
        const b1 = await putAs(b, { createdAt: T0 + 2 });
        const b2 = await putAs(b, { createdAt: T0 + 3 });
        const limits = { maxRunning: 10, maxRunningOf: (t: string) => (t === a ? 1 : 10) };

        // Act
        const first = await claimAll(limits);
        await store.transition({ id: a1.id, from: ["STARTING"], to: "SUCCEEDED", attempt: 1 });
        const second = await claimAll(limits);

        // Assess
        expect(first.started.map((r) => r.id)).toEqual([a1.id, b1.id, b2.id]);
        expect(first.last.kind).toBe("held");
        expect(second.started.map((r) => r.id)).toEqual([a2.id]);
        expect(second.last.kind).toBe("empty");
        expect(await store.tenantCounts(s.queue, a)).toEqual({ queued: 0, running: 1 });
      });

      it("applies each tenant's own limit (overrides) and the queue's above them", async () => {
        // Prepare
        const [a, b, c] = [`${s.tenant}-a`, `${s.tenant}-b`, `${s.tenant}-c`];
        for (const tenant of [a, b, c]) for (let i = 0; i < 5; i++) await putAs(tenant);
        const limits = { maxRunning: 5, maxRunningOf: (t: string) => (t === a ? 3 : 1) };

        // Act
        const { started, last } = await claimAll(limits);

        // Assess
        const count = (t: string) => started.filter((r) => r.tenant === t).length;
        expect([count(a), count(b), count(c)]).toEqual([3, 1, 1]);
        expect(last.kind).toBe("full");
        expect(await store.tenantCounts(s.queue, a)).toEqual({ queued: 2, running: 3 });
      });

      it("reports held, not full, when only tenants at their limit wait", async () => {
        // Prepare
        const a = `${s.tenant}-a`;
        await putAs(a);
        await putAs(a);
        const limits = { maxRunning: 10, maxRunningOf: () => 1 };
        await store.claimNext(s.queue, limits, T0);

        // Act
        const claim = await store.claimNext(s.queue, limits, T0);

        // Assess
        expect(claim.kind).toBe("held");
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 1, running: 1 });
      });

      it("breaks ties by the oldest request even when a tenant's older one was submitted later", async () => {
        // Prepare: a's newer request arrives first (two submitters' clocks disagree).
        const [a, b] = [`${s.tenant}-a`, `${s.tenant}-b`];
        const a2 = await putAs(a, { createdAt: T0 + 20 });
        const a1 = await putAs(a, { createdAt: T0 + 5 });
        const b1 = await putAs(b, { createdAt: T0 + 10 });

        // Act
        const { started } = await claimAll();

        // Assess
        expect(started.map((r) => r.id)).toEqual([a1.id, b1.id, a2.id]);
      });

      it("breaks ties by the oldest request still waiting once a tenant's oldest is cancelled", async () => {
        // Prepare: a's oldest goes; a's other one is newer than b's, and so is c's second.
        const [a, b, c] = [`${s.tenant}-a`, `${s.tenant}-b`, `${s.tenant}-c`];
        const a1 = await putAs(a, { createdAt: T0 });
        const a2 = await putAs(a, { createdAt: T0 + 20 });
        const b1 = await putAs(b, { createdAt: T0 + 10 });
        const c1 = await putAs(c, { createdAt: T0 + 1 });
        const c2 = await putAs(c, { createdAt: T0 + 30 });
        const c3 = await putAs(c, { createdAt: T0 + 31 });
        await store.transition({ id: a1.id, from: ["QUEUED"], to: "CANCELLED" });
        await store.transition({ id: c1.id, from: ["QUEUED"], to: "CANCELLED" });

        // Act
        const { started } = await claimAll();

        // Assess
        expect(started.map((r) => r.id)).toEqual([b1.id, a2.id, c2.id, c3.id]);
      });

      it("never claims past a limit on what a dispatch pass read before another's claims", async () => {
        // Prepare: c's request (priority 5) comes first; a and b wait at priority 0.
        const [a, b, c] = [`${s.tenant}-a`, `${s.tenant}-b`, `${s.tenant}-c`];
        const a1 = await putAs(a, { createdAt: T0 });
        await putAs(a, { createdAt: T0 + 1 });
        const b1 = await putAs(b, { createdAt: T0 + 2 });
        const c1 = await putAs(c, { createdAt: T0 + 3, priority: 5 });
        const other = await fx.another();
        const limits = { maxRunning: 3, maxRunningOf: () => 1 };
        const [mine, theirs] = [{}, {}];

        // Act: my pass reads the queue with nobody running; another dispatcher starts a's
        // first meanwhile; my pass, still holding a with nobody running, goes on.
        const first = await store.claimNext(s.queue, limits, T0, mine);
        const between = await other.claimNext(s.queue, limits, T0, theirs);
        const second = await store.claimNext(s.queue, limits, T0, mine);
        const third = await store.claimNext(s.queue, limits, T0, mine);

        // Assess: a gets no second slot, and the queue no fourth.
        expect([first, between, second].map((x) => x.kind === "started" && x.request.id)).toEqual([
          c1.id,
          a1.id,
          b1.id,
        ]);
        expect(third.kind).toBe("full");
        expect(await store.tenantCounts(s.queue, a)).toEqual({ queued: 1, running: 1 });
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 1, running: 3 });
      });

      it("keeps per-tenant counts through submit, start, finish and cancel", async () => {
        // Prepare
        const [a, b] = [`${s.tenant}-a`, `${s.tenant}-b`];
        const a1 = await putAs(a, { createdAt: T0 });
        const a2 = await putAs(a, { createdAt: T0 + 1 });
        await putAs(b, { createdAt: T0 + 2 });

        // Act
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        const afterStart = await store.tenantCounts(s.queue, a);
        await store.transition({ id: a2.id, from: ["QUEUED"], to: "CANCELLED" });
        await store.transition({ id: a1.id, from: ["STARTING"], to: "RUNNING", attempt: 1 });
        const afterRun = await store.tenantCounts(s.queue, a);
        await store.transition({ id: a1.id, from: ["RUNNING"], to: "FAILED", attempt: 1 });

        // Assess
        expect(afterStart).toEqual({ queued: 1, running: 1 });
        expect(afterRun).toEqual({ queued: 0, running: 1 });
        expect(await store.tenantCounts(s.queue, a)).toEqual({ queued: 0, running: 0 });
        expect(await store.tenantCounts(s.queue, b)).toEqual({ queued: 1, running: 0 });
        expect(await store.tenantCounts(s.queue, `${s.tenant}-never`)).toEqual({
          queued: 0,
          running: 0,
        });
      });

      it("refuses a tenant beyond maxQueuedPerTenant (scope tenant) while others still submit", async () => {
        // Prepare
        const [a, b] = [`${s.tenant}-a`, `${s.tenant}-b`];
        const limits = { maxQueued: 3, maxQueuedPerTenant: 2, retryAfterSeconds: 5 };
        await store.submit(s.request({ tenant: a }), null, limits);
        await store.submit(s.request({ tenant: a }), null, limits);

        // Act: one after the other, so that which limit is met is known.
        const refused = await store
          .submit(s.request({ tenant: a }), { key: "k", bodyHash: "h" }, limits)
          .catch((error: unknown) => error);
        const admitted = await store.submit(s.request({ tenant: b }), null, limits);
        const queueFull = await store
          .submit(s.request({ tenant: b }), null, limits)
          .catch((error: unknown) => error);

        // Assess
        expect(refused).toBeInstanceOf(QueueFullError);
        expect(refused).toMatchObject({ scope: "tenant", maxQueued: 2 });
        expect(queueFull).toMatchObject({ scope: "queue", maxQueued: 3 });
        expect(admitted.kind).toBe("created");
        expect(await store.tenantCounts(s.queue, a)).toEqual({ queued: 2, running: 0 });
        // The refused submit's key was not taken.
        await store.transition({
          id: (await idsIn(["QUEUED"], a))[0] as string,
          from: ["QUEUED"],
          to: "CANCELLED",
        });
        const later = await store.submit(
          s.request({ tenant: a }),
          { key: "k", bodyHash: "h" },
          { ...limits, maxQueued: 10 },
        );
        expect(later.kind).toBe("created");
      });

      it("takes a token per submit, refuses an empty bucket with the wait, and refills it", async () => {
        // Prepare: 1 per second, bursts of 2.
        const rateLimit = { requestsPerSecond: 1, burst: 2 };
        const limits = { ...ROOMY, rateLimit };
        const at = (createdAt: number, tenant = s.tenant) =>
          s.request({ tenant, createdAt, expiresAt: createdAt + 3_600_000 });

        // Act
        const first = await store.submit(at(T0), { key: "one", bodyHash: "h" }, limits);
        const second = await store.submit(at(T0 + 100), null, limits);
        const refused = await store
          .submit(at(T0 + 200), null, limits)
          .catch((error: unknown) => error);
        const replay = await store.submit(at(T0 + 300), { key: "one", bodyHash: "h" }, limits);
        const other = await store.submit(at(T0 + 300, `${s.tenant}-b`), null, limits);
        const refilled = await store.submit(at(T0 + 1100), null, limits);

        // Assess
        expect(first).toMatchObject({
          kind: "created",
          rateLimit: { remaining: 1, policy: rateLimit },
        });
        expect(second).toMatchObject({
          kind: "created",
          rateLimit: { remaining: 0, resetSeconds: 2 },
        });
        expect(refused).toBeInstanceOf(RateLimitedError);
        expect(refused).toMatchObject({ retryAfterSeconds: 1 });
        expect(replay).toMatchObject({ kind: "replayed", rateLimit: { remaining: 0 } });
        expect(other).toMatchObject({ kind: "created", rateLimit: { remaining: 1 } });
        expect(refilled).toMatchObject({ kind: "created", rateLimit: { remaining: 0 } });
        expect(await store.tenantCounts(s.queue, s.tenant)).toEqual({ queued: 3, running: 0 });
      });

      it("gives each waiting request the place it then starts at, across tenants and priorities", async () => {
        // Prepare: three tenants, mixed priorities and ages, one tenant already running.
        const [a, b, c] = [`${s.tenant}-a`, `${s.tenant}-b`, `${s.tenant}-c`];
        await putAs(a, { createdAt: T0 - 100, priority: 9 });
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        const plan: Array<[string, number, number]> = [
          [a, 4, 1],
          [a, 4, 2],
          [b, 4, 3],
          [a, 7, 4],
          [c, 4, 5],
          [b, 4, 6],
          [c, 0, 7],
          [b, 4, 7],
          [a, 4, 8],
          [c, 4, 9],
          [b, 7, 10],
        ];
        const waiting: RequestRecord[] = [];
        for (const [tenant, priority, dt] of plan) {
          waiting.push(await putAs(tenant, { priority, createdAt: T0 + dt }));
        }

        // Act
        const positions = await Promise.all(waiting.map((r) => store.position(r)));
        const together = await store.positions(waiting);
        const { started } = await claimAll();

        // Assess
        const order = started.map((r) => r.id);
        expect(positions).toEqual(waiting.map((r) => order.indexOf(r.id)));
        for (const [i, r] of waiting.entries()) expect(together.get(r.id)).toBe(positions[i]);
      });

      /**
       * Positions of `waiting` now, one by one and as a page, and each one's place in the
       * order the rest of the queue starts in (claimed to the end): they must agree.
       */
      async function expectPositionsFollowStarts(waiting: RequestRecord[]): Promise<void> {
        const alone = await Promise.all(waiting.map((r) => store.position(r)));
        const together = await store.positions(waiting);
        const { started } = await claimAll();
        const order = started.map((r) => r.id);
        expect(alone).toEqual(waiting.map((r) => order.indexOf(r.id)));
        for (const [i, r] of waiting.entries()) expect(together.get(r.id)).toBe(alone[i]);
      }

      /** The requests of `ids` still QUEUED, as the store reads them. */
      async function stillQueued(ids: readonly string[]): Promise<RequestRecord[]> {
        const records = await Promise.all(ids.map((id) => store.get(id)));
        return records.filter((r): r is RequestRecord => r?.status === RequestStatus.QUEUED);
      }

      it("keeps deep positions exact with cancellations and expiries ahead of and behind a request", async () => {
        // Prepare: one tenant, 24 requests at priority 3 and a few at 6, then requests leave
        // QUEUED out of order: cancelled and expired near the head, in the middle and at the
        // end, and the head claimed.
        const mine: RequestRecord[] = [];
        for (let i = 0; i < 24; i++) {
          mine.push(await put({ priority: i % 9 === 4 ? 6 : 3, createdAt: T0 + i * 10 }));
        }
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        for (const i of [2, 3, 11, 15, 23]) {
          await store.transition({
            id: (mine[i] as RequestRecord).id,
            from: ["QUEUED"],
            to: "CANCELLED",
          });
        }
        await store.transition({
          id: (mine[19] as RequestRecord).id,
          from: ["QUEUED"],
          to: "EXPIRED",
        });
        // A submit after the gaps, so that a store pruning what it keeps of them has done so.
        mine.push(await put({ priority: 3, createdAt: T0 + 1000 }));
        const waiting = await stillQueued(mine.map((r) => r.id));

        // Act + Assess
        expect(waiting).toHaveLength(25 - 7);
        await expectPositionsFollowStarts(waiting);
      });

      it("keeps positions exact across a claim, with three tenants at one priority", async () => {
        // Prepare: a, b and c interleaved at priority 2 (a already running one), a few at 5,
        // some cancelled; positions are checked, a few start, and they are checked again.
        const [a, b, c] = [`${s.tenant}-a`, `${s.tenant}-b`, `${s.tenant}-c`];
        await putAs(a, { createdAt: T0 - 100, priority: 9 });
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        const submitted: RequestRecord[] = [];
        for (let i = 0; i < 24; i++) {
          const tenant = [a, b, c, a, b, a][i % 6] as string;
          submitted.push(
            await putAs(tenant, { priority: i % 11 === 7 ? 5 : 2, createdAt: T0 + i * 10 }),
          );
        }
        for (const i of [1, 4, 13, 22]) {
          await store.transition({
            id: (submitted[i] as RequestRecord).id,
            from: ["QUEUED"],
            to: "CANCELLED",
          });
        }
        const before = await stillQueued(submitted.map((r) => r.id));
        const earlier = await store.positions(before);
        const first = await claimAll({ maxRunning: 6 });

        // Act + Assess: the first positions, by the starts that followed them.
        const rest = await stillQueued(submitted.map((r) => r.id));
        const restPositions = await Promise.all(rest.map((r) => store.position(r)));
        const { started } = await claimAll();
        const order = [...first.started, ...started].map((r) => r.id);
        expect(first.started.length).toBeGreaterThan(0);
        for (const r of before) expect(earlier.get(r.id)).toBe(order.indexOf(r.id));
        const restOrder = started.map((r) => r.id);
        expect(restPositions).toEqual(rest.map((r) => restOrder.indexOf(r.id)));
      });

      it("answers a submit's position, when it does, as position() would with other tenants waiting", async () => {
        // Prepare: a and b take turns at one priority, b with one running.
        const [a, b] = [`${s.tenant}-a`, `${s.tenant}-b`];
        await putAs(b, { priority: 6, createdAt: T0 - 10 });
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        const given: Array<[number, number]> = [];

        // Act
        for (let i = 0; i < 8; i++) {
          const outcome = await store.submit(
            s.request({ tenant: i % 3 === 0 ? b : a, priority: 6, createdAt: T0 + i * 10 }),
            null,
            ROOMY,
          );
          if (outcome.kind === "created" && outcome.position !== undefined) {
            given.push([outcome.position, await store.position(outcome.request)]);
          }
        }

        // Assess
        for (const [fromSubmit, fromPosition] of given) expect(fromSubmit).toBe(fromPosition);
      });

      it("gives a list page's QUEUED items the places they start at", async () => {
        // Prepare: two tenants at one priority, a page of the newest 6 of a's 12.
        const [a, b] = [`${s.tenant}-a`, `${s.tenant}-b`];
        for (let i = 0; i < 18; i++) {
          await putAs(i % 3 === 2 ? b : a, { priority: 1, createdAt: T0 + i * 10 });
        }
        const page = await store.list({ tenant: a, queue: s.queue, limit: 6 });

        // Act
        const positions = await store.positions(page.items);
        const { started } = await claimAll();

        // Assess
        const order = started.map((r) => r.id);
        expect(page.items).toHaveLength(6);
        for (const r of page.items) expect(positions.get(r.id)).toBe(order.indexOf(r.id));
      });

      it("gives pages deep in long tenant queues the places they start at", async () => {
        // Prepare: a (with requests above) and b (one running) take turns at priority 2,
        // long enough that a store may place a page from either end of a tenant's queue;
        // some of both leave near the heads and the tails.
        const [a, b] = [`${s.tenant}-a`, `${s.tenant}-b`];
        await putAs(b, { priority: 9, createdAt: T0 - 10 });
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        const submitted: RequestRecord[] = [];
        for (let i = 0; i < 72; i++) {
          const [tenant, priority] = i % 2 === 0 ? [b, 2] : i % 9 === 1 ? [a, 5] : [a, 2];
          submitted.push(await putAs(tenant as string, { priority, createdAt: T0 + i * 10 }));
        }
        for (const i of [0, 3, 8, 58, 64, 67, 69, 71]) {
          await store.transition({
            id: (submitted[i] as RequestRecord).id,
            from: ["QUEUED"],
            to: "CANCELLED",
          });
        }
        const first = await store.list({ tenant: a, queue: s.queue, limit: 8 });
        const second = await store.list({
          tenant: a,
          queue: s.queue,
          limit: 8,
          cursor: first.nextCursor ?? undefined,
        });
        const middle = await stillQueued(submitted.slice(30, 40).map((r) => r.id));

        // Act
        const waiting = (page: RequestRecord[]) =>
          page.filter((r) => r.status === RequestStatus.QUEUED);
        const pages = [waiting(first.items), waiting(second.items), middle];
        const together = await Promise.all(pages.map((p) => store.positions(p)));
        const alone = await Promise.all(middle.map((r) => store.position(r)));
        const { started } = await claimAll();

        // Assess
        const order = started.map((r) => r.id);
        expect(pages.map((p) => p.length)).toEqual([5, 8, 10]);
        for (const [i, page] of pages.entries()) {
          for (const r of page) expect(together[i]?.get(r.id), r.id).toBe(order.indexOf(r.id));
        }
        expect(alone).toEqual(middle.map((r) => order.indexOf(r.id)));
      });

      it("places a request dated before one already waiting (another host's clock) by its age", async () => {
        // Prepare: submits of one tenant and priority whose dates go back and forth, and two
        // tenants; then the early-dated ones leave, one claimed and one cancelled.
        const [a, b] = [`${s.tenant}-a`, `${s.tenant}-b`];
        const dates = [50, 60, 55, 70, 10, 80, 90, 65, 100];
        const mine: RequestRecord[] = [];
        for (const [i, dt] of dates.entries()) {
          mine.push(await putAs(a, { priority: 4, createdAt: T0 + dt }));
          if (i % 3 === 0) await putAs(b, { priority: 4, createdAt: T0 + dt + 1 });
        }
        const skewed = await stillQueued(mine.map((r) => r.id));
        const positions = await store.positions(skewed);
        await store.transition({
          id: (mine[7] as RequestRecord).id,
          from: ["QUEUED"],
          to: "CANCELLED",
        });
        const afterCancel = await stillQueued(mine.map((r) => r.id));

        // Act + Assess
        const positionsAfter = await store.positions(afterCancel);
        const { started } = await claimAll();
        const order = started.map((r) => r.id);
        const startsOf = (r: RequestRecord) => order.indexOf(r.id);
        // The cancelled one started nowhere: everyone behind it moves up by one.
        const cancelledAt = [...positions.entries()].find(([id]) => id === mine[7]?.id)?.[1] ?? -1;
        for (const r of skewed) {
          if (r.id === mine[7]?.id) continue;
          const was = positions.get(r.id) ?? -1;
          expect(was - (was > cancelledAt ? 1 : 0)).toBe(startsOf(r));
        }
        for (const r of afterCancel) expect(positionsAfter.get(r.id)).toBe(startsOf(r));
        // The oldest-dated request, submitted fifth, starts first of its tenant.
        expect(startsOf(mine[4] as RequestRecord)).toBeLessThan(startsOf(mine[0] as RequestRecord));
      });

      it("keeps a rolling summary of how long finished requests held their slot", async () => {
        // Prepare: two ran (1 s and 3 s), one retried, one cancelled before it started.
        const ran = [await put(), await put(), await put()];
        const cancelled = await put();
        await store.transition({ id: cancelled.id, from: ["QUEUED"], to: "CANCELLED" });
        for (let i = 0; i < 3; i++) await store.claimNext(s.queue, MANY_SLOTS, T0);
        const [one, three, retried] = ran as [RequestRecord, RequestRecord, RequestRecord];
        for (const r of ran) {
          await store.transition({
            id: r.id,
            from: ["STARTING"],
            to: "RUNNING",
            attempt: 1,
            set: { startedAt: T0 },
          });
        }
        await store.transition({ id: retried.id, from: ["RUNNING"], to: "STARTING", attempt: 1 });
        for (const [r, ms] of [
          [one, 1000],
          [three, 3000],
        ] as const) {
          await store.transition({
            id: r.id,
            from: ["RUNNING"],
            to: "SUCCEEDED",
            attempt: 1,
            set: { finishedAt: T0 + ms },
          });
        }

        // Act
        const recent = await store.runStats?.(s.queue, T0 + 5000);
        const stale = await store.runStats?.(s.queue, T0 + 3 * 86_400_000);

        // Assess
        if (!store.runStats) return;
        expect(recent).toEqual({ meanMs: 2000, samples: 2 });
        expect(stale).toBeNull();
      });

      it("admits exactly maxQueuedPerTenant of one tenant's racing submits", async () => {
        // Prepare
        const stores = [store, await fx.another(), await fx.another()];
        const limits = { maxQueued: 100, maxQueuedPerTenant: 4, retryAfterSeconds: 1 };

        // Act
        const results = await Promise.allSettled(
          Array.from({ length: 12 }, (_, i) =>
            (stores[i % stores.length] as RequestStore).submit(s.request(), null, limits),
          ),
        );

        // Assess
        expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(4);
        expect(await store.tenantCounts(s.queue, s.tenant)).toEqual({ queued: 4, running: 0 });
      });

      it("admits exactly a burst of one tenant's racing submits", async () => {
        // Prepare
        const stores = [store, await fx.another(), await fx.another()];
        const limits = { ...ROOMY, rateLimit: { requestsPerSecond: 0.001, burst: 3 } };

        // Act
        const results = await Promise.allSettled(
          Array.from({ length: 10 }, (_, i) =>
            (stores[i % stores.length] as RequestStore).submit(
              s.request({ createdAt: T0 + i }),
              null,
              limits,
            ),
          ),
        );

        // Assess
        const refused = results.filter((r) => r.status === "rejected");
        expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
        expect(refused.every((r) => r.reason instanceof RateLimitedError)).toBe(true);
      });

      it("keeps positions exact when several instances submit for one tenant at once", async () => {
        // Prepare: another tenant waits; three instances then submit 15 requests of one
        // tenant at one priority together, each from its own (soon stale) view of the queue.
        const stores = [store, await fx.another(), await fx.another()];
        const [mine, theirs] = [`${s.tenant}-a`, `${s.tenant}-b`];
        for (let i = 0; i < 3; i++) await putAs(theirs, { priority: 4, createdAt: T0 + i * 7 });
        const wanted = Array.from({ length: 15 }, (_, i) =>
          s.request({ tenant: mine, priority: 4, createdAt: T0 + 1 + i * 3 }),
        );

        // Act
        await Promise.all(
          wanted.map((r, i) => (stores[i % stores.length] as RequestStore).submit(r, null, ROOMY)),
        );
        const waiting = await stillQueued(wanted.map((r) => r.id));
        const seen = await Promise.all(stores.map((st) => st.positions(waiting)));
        const half = await claimAll({ maxRunning: 8 });
        const rest = await stillQueued(wanted.map((r) => r.id));
        const later = await store.positions(rest);
        const { started } = await claimAll();

        // Assess: every instance answers the places the claims then keep.
        const order = [...half.started, ...started].map((r) => r.id);
        expect(waiting).toHaveLength(15);
        for (const positions of seen) {
          for (const r of waiting) expect(positions.get(r.id)).toBe(order.indexOf(r.id));
        }
        const restOrder = started.map((r) => r.id);
        for (const r of rest) expect(later.get(r.id)).toBe(restOrder.indexOf(r.id));
      });

      it("never lets a tenant exceed its limit with parallel dispatchers", async () => {
        // Prepare
        const tenants = [`${s.tenant}-a`, `${s.tenant}-b`, `${s.tenant}-c`];
        for (let i = 0; i < 8; i++) for (const t of tenants) await putAs(t, { createdAt: T0 + i });
        const limits = { maxRunning: 5, maxRunningOf: (t: string) => (t === tenants[0] ? 3 : 2) };
        const stores = [store, await fx.another(), await fx.another(), await fx.another()];
        const held = new Map<string, number>();
        let worst = 0;
        const claimed: string[] = [];

        // Act
        const deadline = Date.now() + 60_000;
        const dispatcher = async (own: RequestStore): Promise<void> => {
          for (;;) {
            if (Date.now() > deadline) throw new Error("dispatchers stopped making progress");
            const claim = await own.claimNext(s.queue, limits, T0);
            if (claim.kind === "empty") return;
            if (claim.kind !== "started") {
              await new Promise((resolve) => setTimeout(resolve, 1));
              continue;
            }
            const { id, attempt, tenant } = claim.request;
            claimed.push(id);
            held.set(tenant, (held.get(tenant) ?? 0) + 1);
            worst = Math.max(
              worst,
              ...tenants.map((t) => (held.get(t) ?? 0) - limits.maxRunningOf(t)),
            );
            // Released before the write that frees the slot: never overstates what is held.
            held.set(tenant, (held.get(tenant) ?? 0) - 1);
            await own.transition({ id, from: ["STARTING"], to: "SUCCEEDED", attempt });
          }
        };
        await Promise.all(stores.map(dispatcher));

        // Assess
        expect(new Set(claimed).size).toBe(24);
        expect(claimed).toHaveLength(24);
        expect(worst).toBeLessThanOrEqual(0);
        for (const t of tenants) {
          expect(await store.tenantCounts(s.queue, t)).toEqual({ queued: 0, running: 0 });
        }
      });
    });

    describe("concurrency", () => {
      it("creates exactly one request when 20 submits race with one Idempotency-Key", async () => {
        // Prepare
        const stores = [store, await fx.another(), await fx.another(), await fx.another()];
        const contenders = Array.from({ length: 20 }, () => s.request({ idempotencyKey: "race" }));

        // Act
        const outcomes = await Promise.all(
          contenders.map((r, i) =>
            (stores[i % stores.length] as RequestStore).submit(
              r,
              { key: "race", bodyHash: "h" },
              ROOMY,
            ),
          ),
        );

        // Assess
        const created = outcomes.filter((o) => o.kind === "created");
        expect(created).toHaveLength(1);
        const winner = created[0]?.request.id;
        expect(outcomes.every((o) => o.request.id === winner)).toBe(true);
        expect(await idsIn()).toEqual([winner]);
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 1, running: 0 });
      });

      it("admits exactly maxQueued requests when submits race for the last places", async () => {
        // Prepare
        const stores = [store, await fx.another(), await fx.another()];
        const limits = { maxQueued: 7, retryAfterSeconds: 1 };

        // Act
        const results = await Promise.allSettled(
          Array.from({ length: 20 }, (_, i) =>
            (stores[i % stores.length] as RequestStore).submit(s.request(), null, limits),
          ),
        );

        // Assess
        const ok = results.filter((r) => r.status === "fulfilled");
        const refused = results.filter((r) => r.status === "rejected");
        expect(ok).toHaveLength(7);
        expect(refused.every((r) => r.reason instanceof QueueFullError)).toBe(true);
        expect(await idsIn()).toHaveLength(7);
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 7, running: 0 });
      });

      it("applies one contended transition once", async () => {
        // Prepare
        const r = await put();
        const stores = [store, await fx.another(), await fx.another()];

        // Act
        const results = await Promise.all(
          Array.from({ length: 9 }, (_, i) =>
            (stores[i % stores.length] as RequestStore).transition({
              id: r.id,
              from: [RequestStatus.QUEUED],
              to: RequestStatus.CANCELLED,
            }),
          ),
        );

        // Assess
        expect(results.filter((x) => x !== null)).toHaveLength(1);
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 0, running: 0 });
      });

      it("counts one loss once when several handlers retry it at the same time", async () => {
        // Prepare: a server restart and a late event both see attempt 1 lost.
        const r = await put();
        await store.claimNext(s.queue, MANY_SLOTS, T0);
        const stores = [store, await fx.another(), await fx.another()];

        // Act
        const results = await Promise.all(
          stores.map((own) =>
            own.transition({
              id: r.id,
              from: ACTIVE_STATUSES,
              to: RequestStatus.STARTING,
              attempt: 1,
              cancelRequested: false,
              set: { attempt: 2, platformRetries: 1, jobRef: null },
            }),
          ),
        );

        // Assess
        expect(results.filter((x) => x !== null)).toHaveLength(1);
        expect(await store.get(r.id)).toMatchObject({ attempt: 2, platformRetries: 1 });
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 0, running: 1 });
      });

      it("never exceeds maxRunning nor claims a request twice with parallel dispatchers", async () => {
        // Prepare
        const maxRunning = 3;
        const total = 30;
        const submitted = new Set<string>();
        for (let i = 0; i < total; i++) submitted.add((await put({ priority: i % 4 })).id);
        const stores = [store, await fx.another(), await fx.another(), await fx.another()];
        const claimed: string[] = [];
        // Claims seen and not yet being released. A release is counted before its write,
        // so this never overstates what the store holds: above maxRunning is a real breach.
        let held = 0;
        let mostHeld = 0;
        let mostCounted = 0;

        // Act
        // A store that leaks slots would leave the dispatchers waiting on "full" forever: fail
        // when no claim succeeded for a while (a stall), not when the whole run is slow (a
        // loaded machine and a shared emulator stretch every call).
        let lastClaimAt = Date.now();
        const dispatcher = async (own: RequestStore): Promise<void> => {
          for (;;) {
            if (Date.now() - lastClaimAt > 20_000) {
              throw new Error("dispatchers stopped making progress");
            }
            const claim = await own.claimNext(s.queue, { maxRunning }, T0);
            if (claim.kind === "empty") return;
            if (claim.kind === "full" || claim.kind === "expired" || claim.kind === "held") {
              await new Promise((resolve) => setTimeout(resolve, 1));
              continue;
            }
            lastClaimAt = Date.now();
            held++;
            mostHeld = Math.max(mostHeld, held);
            claimed.push(claim.request.id);
            mostCounted = Math.max(mostCounted, (await own.queueCounts(s.queue)).running);
            const { id, attempt } = claim.request;
            await own.transition({ id, from: ["STARTING"], to: "RUNNING", attempt });
            held--;
            await own.transition({ id, from: ["RUNNING"], to: "SUCCEEDED", attempt });
          }
        };
        await Promise.all(stores.map(dispatcher));

        // Assess
        expect(claimed).toHaveLength(total);
        expect(new Set(claimed)).toEqual(submitted);
        expect(mostHeld).toBeLessThanOrEqual(maxRunning);
        expect(mostCounted).toBeLessThanOrEqual(maxRunning);
        expect(await store.queueCounts(s.queue)).toEqual({ queued: 0, running: 0 });
        expect(await idsIn([RequestStatus.SUCCEEDED])).toHaveLength(total);
      }, 180_000);
    });

    describe("a job's wait for an instance", () => {
      it("keeps the wait a STARTING attempt reported, and only for that attempt", async () => {
        // Prepare
        await put();
        const claim = await store.claimNext(s.queue, MANY_SLOTS, T0);
        if (claim.kind !== "started") throw new Error(`expected a start, got ${claim.kind}`);
        const { id } = claim.request;
        const capacityWait = {
          attempt: 1,
          since: T0,
          reason: "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - no g5.xlarge",
          endedAt: null,
        };

        // Act
        const noted = await store.transition({
          id,
          from: [RequestStatus.STARTING],
          attempt: 1,
          set: { capacityWait },
        });
        const otherAttempt = await store.transition({
          id,
          from: [RequestStatus.STARTING],
          attempt: 2,
          set: { capacityWait: { ...capacityWait, attempt: 2 } },
        });
        await store.transition({ id, from: [RequestStatus.STARTING], to: "RUNNING", attempt: 1 });
        const afterRunning = await store.transition({
          id,
          from: [RequestStatus.STARTING],
          attempt: 1,
          set: { capacityWait: { ...capacityWait, reason: "late" } },
        });

        // Assess
        expect(claim.request).not.toHaveProperty("capacityWait");
        expect(noted?.capacityWait).toEqual(capacityWait);
        expect(otherAttempt).toBeNull();
        expect(afterRunning).toBeNull();
        expect(await store.get(id)).toMatchObject({ status: "RUNNING", capacityWait });
        expect((await store.list({ tenant: s.tenant, queue: s.queue, limit: 5 })).items).toEqual([
          await store.get(id),
        ]);
      });
    });
  });
}
