/**
 * Webhooks derived from committed writes (AWS): which change event a write makes, the
 * deliveries one stream record makes (the same ones however often it is read), and the
 * per-request order rule that keeps a request's events from reaching a receiver backwards.
 */
import { SQSClient } from "@aws-sdk/client-sqs";
import { marshall } from "@aws-sdk/util-dynamodb";
import { describe, expect, it } from "vitest";
import { toItem } from "../../../functions/adapters/aws/dynamo-request-store.ts";
import {
  createStreamRecordHandler,
  deliveriesFromRecord,
} from "../../../functions/adapters/aws/stream-webhooks.ts";
import type { RequestRecord } from "../../../functions/core/request.ts";
import {
  type ClaimVerdict,
  decideClaim,
  deliveryOrder,
  type OrderedDelivery,
  type OrderState,
} from "../../../functions/webhooks/order.ts";
import { changesBetween } from "../../../functions/webhooks/outbox.ts";
import { T0 } from "../../helpers/fakes.ts";

function record(over: Partial<RequestRecord> = {}): RequestRecord {
  return {
    id: "req_01",
    tenant: "alice",
    queue: "gpu",
    status: "QUEUED",
    priority: 5,
    input: { epochs: 3 },
    metadata: {},
    webhook: { url: "https://hooks.example/x", events: ["started", "progress", "completed"] },
    idempotencyKey: null,
    createdAt: T0,
    startedAt: null,
    finishedAt: null,
    updatedAt: T0,
    attempt: 0,
    maxAttempts: 3,
    cancelRequested: false,
    timeoutSeconds: 60,
    queueTtlSeconds: 600,
    expiresAt: T0 + 600_000,
    progress: null,
    error: null,
    jobRef: null,
    platformRetries: 0,
    ...over,
  };
}

const queued = record();
const starting = record({ status: "STARTING", attempt: 1, updatedAt: T0 + 100 });
const running = record({ status: "RUNNING", attempt: 1, startedAt: T0 + 200, updatedAt: T0 + 200 });
const progressed = (current: number, at: number) =>
  record({
    ...running,
    progress: { current, total: 10, message: null, updatedAt: at },
  });
const succeeded = record({
  ...running,
  status: "SUCCEEDED",
  finishedAt: T0 + 900,
  updatedAt: T0 + 900,
});
const retried = record({ ...running, status: "RUNNING", attempt: 2, updatedAt: T0 + 700 });

describe("changesBetween: which write makes which event", () => {
  it.each([
    ["submit", null, queued, []],
    ["dispatch", queued, starting, []],
    ["first RUNNING", starting, running, ["started"]],
    ["progress", running, progressed(1, T0 + 300), ["progress"]],
    ["a heartbeat (progress unchanged)", progressed(1, T0 + 300), progressed(1, T0 + 300), []],
    ["new progress", progressed(1, T0 + 300), progressed(2, T0 + 400), ["progress"]],
    ["a retry's RUNNING", record({ ...running, status: "STARTING" }), retried, []],
    ["SUCCEEDED", running, succeeded, ["completed"]],
    ["a write after the end", succeeded, { ...succeeded, updatedAt: T0 + 999 }, []],
    ["a request seen without its past, running", null, running, ["started"]],
    ["a request seen without its past, finished", null, succeeded, ["started", "completed"]],
  ] as const)("%s", (_name, before, after, expected) => {
    expect(changesBetween(before, after)).toEqual(expected);
  });
});

/** A stream record of a write from `before` to `after` (the item at revision `rev`). */
function streamRecord(before: RequestRecord | null, after: RequestRecord, rev: number) {
  const image = (r: RequestRecord, v: number) =>
    marshall({ ...toItem(r, null), status: r.status, rev: v }, { removeUndefinedValues: true });
  return {
    eventName: before ? "MODIFY" : "INSERT",
    dynamodb: {
      ...(before ? { OldImage: image(before, rev - 1) } : {}),
      NewImage: image(after, rev),
      SequenceNumber: String(rev),
    },
  };
}

describe("deliveriesFromRecord", () => {
  it("makes the same deliveries however often a record is read", () => {
    const r = streamRecord(starting, running, 3);
    const first = deliveriesFromRecord(r);
    expect(first).toHaveLength(1);
    expect(first[0]).toMatchObject({
      event: "started",
      requestId: "req_01",
      dedupKey: "req_01:started",
      order: deliveryOrder(3, "started"),
      attempt: 0,
      createdAt: running.updatedAt,
    });
    expect(JSON.parse(first[0]?.payload ?? "{}").timestamp).toBe(
      new Date(running.updatedAt).toISOString(),
    );
    expect(deliveriesFromRecord(r)).toEqual(first);
  });

  it("keys progress by the second the runner reported it in", () => {
    const a = deliveriesFromRecord(streamRecord(running, progressed(1, T0 + 5_100), 4));
    const b = deliveriesFromRecord(
      streamRecord(progressed(1, T0 + 5_100), progressed(2, T0 + 5_900), 5),
    );
    const c = deliveriesFromRecord(
      streamRecord(progressed(2, T0 + 5_900), progressed(3, T0 + 6_100), 6),
    );
    expect(a[0]?.id).toBe(b[0]?.id);
    expect(c[0]?.id).not.toBe(a[0]?.id);
    expect((b[0]?.order ?? 0) > (a[0]?.order ?? 0)).toBe(true);
  });

  it("makes nothing for other item kinds, removals and unchosen events", () => {
    expect(
      deliveriesFromRecord({
        eventName: "MODIFY",
        dynamodb: { NewImage: marshall({ pk: "QUEUE#gpu", sk: "COUNTERS", queued: 1 }) },
      }),
    ).toEqual([]);
    expect(deliveriesFromRecord({ eventName: "REMOVE", dynamodb: {} })).toEqual([]);
    const quiet = record({ ...running, webhook: { url: "https://hooks.example/x", events: [] } });
    expect(
      deliveriesFromRecord(
        streamRecord({ ...quiet, status: "STARTING", startedAt: null }, quiet, 3),
      ),
    ).toEqual([]);
  });
});

describe("the stream step", () => {
  it("skips a record it cannot read, reporting it, instead of holding up the shard", async () => {
    const broken = streamRecord(starting, running, 3);
    broken.dynamodb.NewImage = { ...broken.dynamodb.NewImage, input: { S: "{not json" } };
    const unreadable: unknown[] = [];
    const sqs = new SQSClient({ region: "us-east-1" });
    const step = createStreamRecordHandler({
      sqs,
      queueUrl: "http://127.0.0.1:9/unused",
      onUnreadable: (_record, error) => unreadable.push(error),
    });
    expect(await step(broken)).toBe(0);
    expect(unreadable).toHaveLength(1);
    sqs.destroy();
  });
});

describe("decideClaim: a request's deliveries never go out backwards", () => {
  const NOW = T0 + 10_000;
  const state = (over: Partial<OrderState>): OrderState => ({
    order: deliveryOrder(3, "started"),
    deliveryId: "msg_started",
    event: "started",
    done: true,
    leaseUntil: 0,
    ...over,
  });
  const started = {
    id: "msg_started",
    requestId: "req_01",
    event: "started" as const,
    order: deliveryOrder(3, "started"),
  };
  const progress = {
    id: "msg_p1",
    requestId: "req_01",
    event: "progress" as const,
    order: deliveryOrder(4, "progress"),
  };
  const completed = {
    id: "msg_done",
    requestId: "req_01",
    event: "completed" as const,
    order: deliveryOrder(6, "completed"),
  };

  it.each<[string, OrderState | null, OrderedDelivery, ClaimVerdict]>([
    ["first delivery of a request", null, started, "claim"],
    ["a try in flight holds the record", state({ leaseUntil: NOW + 1 }), completed, "busy"],
    ["even for a copy of the same delivery", state({ leaseUntil: NOW + 1 }), started, "busy"],
    [
      "a lease that ran out holds nothing",
      state({ done: false, leaseUntil: NOW }),
      completed,
      "claim",
    ],
    ["the retry of a delivery not yet delivered", state({ done: false }), started, "claim"],
    ["a copy of a delivered delivery", state({}), started, "duplicate"],
    ["the next event after a delivered one", state({}), progress, "claim"],
    ["completed after a started still retried", state({ done: false }), completed, "claim"],
    ["progress while a started is still retried", state({ done: false }), progress, "held"],
    [
      "started after its completed went out",
      state({ order: completed.order, deliveryId: completed.id, event: "completed" }),
      started,
      "stale",
    ],
    [
      "started after its completed was claimed, not yet delivered",
      state({ order: completed.order, deliveryId: completed.id, event: "completed", done: false }),
      started,
      "stale",
    ],
    [
      "an older progress after a newer one",
      state({ order: deliveryOrder(8, "progress"), deliveryId: "msg_p2", event: "progress" }),
      progress,
      "stale",
    ],
    [
      "a newer payload of the same second's progress, not yet delivered",
      state({
        order: deliveryOrder(4, "progress"),
        deliveryId: "msg_p1",
        event: "progress",
        done: false,
      }),
      { ...progress, order: deliveryOrder(5, "progress") },
      "claim",
    ],
    [
      "a newer payload of the same second's progress, once delivered",
      state({ order: deliveryOrder(4, "progress"), deliveryId: "msg_p1", event: "progress" }),
      { ...progress, order: deliveryOrder(5, "progress") },
      "duplicate",
    ],
    [
      "the older payload of a second whose newer one was claimed",
      state({
        order: deliveryOrder(5, "progress"),
        deliveryId: "msg_p1",
        event: "progress",
        done: false,
      }),
      progress,
      "stale",
    ],
  ])("%s", (_name, s, delivery, verdict) => {
    expect(decideClaim(s, delivery, NOW)).toBe(verdict);
  });

  it("orders the events of one write started, progress, completed", () => {
    expect(deliveryOrder(3, "started")).toBeLessThan(deliveryOrder(3, "progress"));
    expect(deliveryOrder(3, "progress")).toBeLessThan(deliveryOrder(3, "completed"));
    expect(deliveryOrder(3, "completed")).toBeLessThan(deliveryOrder(4, "started"));
  });
});
