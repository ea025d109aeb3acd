/**
 * Which events a state change sends, what their payload is, and the notifier that turns the
 * core's onChange into outbox rows (over a real in-memory SQLite outbox).
 */
import { afterEach, describe, expect, it } from "vitest";
import { SqliteWebhookOutbox } from "../../../functions/adapters/embedded/sqlite-webhooks.ts";
import type { RequestRecord, WebhookEvent } from "../../../functions/core/request.ts";
import { requestView } from "../../../functions/http/views.ts";
import {
  createWebhookNotifier,
  dedupKeyFor,
  webhookDeliveriesFor,
  webhookEventsFor,
} from "../../../functions/webhooks/outbox.ts";
import { T0 } from "../../helpers/fakes.ts";

function record(over: Partial<RequestRecord> = {}): RequestRecord {
  return {
    id: "req_01",
    tenant: "alice",
    queue: "gpu",
    status: "RUNNING",
    priority: 5,
    input: { epochs: 3 },
    metadata: { k: "v" },
    webhook: { url: "https://hooks.example/x", events: ["started", "progress", "completed"] },
    idempotencyKey: null,
    createdAt: T0,
    startedAt: T0 + 1000,
    finishedAt: null,
    updatedAt: T0 + 1000,
    attempt: 1,
    maxAttempts: 3,
    platformRetries: 0,
    cancelRequested: false,
    timeoutSeconds: 60,
    queueTtlSeconds: 600,
    expiresAt: T0 + 600_000,
    progress: null,
    error: null,
    jobRef: "job-1",
    ...over,
  };
}

describe("webhookEventsFor", () => {
  it("sends only the chosen events; completed by default", () => {
    const all = record();
    expect(webhookEventsFor(all, "started")).toEqual(["started"]);
    expect(webhookEventsFor(all, "progress")).toEqual(["progress"]);
    expect(webhookEventsFor({ ...all, status: "FAILED" }, "completed")).toEqual(["completed"]);
    const onlyDone = record({ webhook: { url: "https://h.example/", events: ["completed"] } });
    expect(webhookEventsFor(onlyDone, "started")).toEqual([]);
    expect(webhookEventsFor(onlyDone, "progress")).toEqual([]);
    const defaulted = record({ webhook: { url: "https://h.example/", events: [] } });
    expect(webhookEventsFor({ ...defaulted, status: "SUCCEEDED" }, "completed")).toEqual([
      "completed",
    ]);
    expect(webhookEventsFor(defaulted, "started")).toEqual([]);
    expect(webhookEventsFor(record({ webhook: null }), "completed")).toEqual([]);
  });

  it("sends started only for a RUNNING request", () => {
    expect(webhookEventsFor(record({ status: "STARTING" }), "started")).toEqual([]);
  });
});

describe("webhookDeliveriesFor", () => {
  it("builds the SPEC body around the Request view, with per-event dedup keys", () => {
    const now = T0 + 5_432;
    const r = record({
      status: "SUCCEEDED",
      finishedAt: now,
      progress: { current: 3, total: 3, message: "done", updatedAt: now },
    });
    const [d, ...rest] = webhookDeliveriesFor(r, "completed", now, () => "msg_fixed");
    expect(rest).toEqual([]);
    expect(d).toMatchObject({
      id: "msg_fixed",
      requestId: "req_01",
      tenant: "alice",
      event: "completed",
      url: "https://hooks.example/x",
      dedupKey: "req_01:completed",
      createdAt: now,
    });
    const body = JSON.parse(d!.payload);
    expect(body).toEqual({
      type: "request.completed",
      timestamp: new Date(now).toISOString(),
      data: JSON.parse(JSON.stringify(requestView(r))),
    });
    // the view keeps inside things inside
    expect(d!.payload).not.toContain("job-1");
    expect(d!.payload).not.toContain("hooks.example");
    expect(Object.keys(body.data).slice(0, 5)).toEqual([
      "id",
      "queue",
      "status",
      "priority",
      "input",
    ]);
  });

  it("keys progress by second and the others by event", () => {
    expect(dedupKeyFor("r", "progress", 12_999)).toBe("r:progress:12");
    expect(dedupKeyFor("r", "progress", 13_000)).toBe("r:progress:13");
    expect(dedupKeyFor("r", "started", 13_000)).toBe("r:started");
    expect(webhookDeliveriesFor(record({ webhook: null }), "completed", T0)).toEqual([]);
  });
});

describe("createWebhookNotifier", () => {
  let outbox: SqliteWebhookOutbox;
  afterEach(() => outbox?.close());

  it("enqueues in notification order, once per started/completed, waking the worker", async () => {
    outbox = new SqliteWebhookOutbox(":memory:");
    let now = T0;
    let wakes = 0;
    let n = 0;
    const notifier = createWebhookNotifier({
      outbox,
      clock: { now: () => now },
      onEnqueued: () => wakes++,
      newId: () => `msg_${++n}`,
    });
    const r = record();
    notifier.onChange(r, "started");
    notifier.onChange(r, "started"); // a repeated notification is harmless
    now += 300;
    notifier.onChange(
      { ...r, progress: { current: 1, total: 3, message: null, updatedAt: now } },
      "progress",
    );
    now += 300;
    notifier.onChange(
      { ...r, progress: { current: 2, total: 3, message: null, updatedAt: now } },
      "progress",
    );
    now += 1000;
    notifier.onChange({ ...r, status: "SUCCEEDED", finishedAt: now }, "completed");
    await notifier.idle();
    const rows = outbox.deliveriesOf("req_01");
    const seen = rows.map((d) => [d.event, d.status] as [WebhookEvent, string]);
    expect(seen).toEqual([
      ["started", "pending"],
      ["progress", "superseded"],
      ["completed", "pending"],
    ]);
    // the same second's second progress replaced the first one's payload before it was superseded
    expect(JSON.parse(rows[1]!.payload).data.progress.current).toBe(2);
    expect(wakes).toBe(3);
  });

  it("never throws out of onChange, and reports enqueue failures", async () => {
    outbox = new SqliteWebhookOutbox(":memory:");
    const lines: string[] = [];
    const notifier = createWebhookNotifier({
      outbox,
      clock: { now: () => T0 },
      log: (line) => lines.push(line),
    });
    outbox.close();
    expect(() => notifier.onChange(record({ status: "SUCCEEDED" }), "completed")).not.toThrow();
    await notifier.idle();
    expect(lines.join("\n")).toMatch(/completed of req_01 not enqueued/);
    outbox = new SqliteWebhookOutbox(":memory:");
  });
});
