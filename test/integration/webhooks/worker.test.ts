/**
 * The webhook worker end to end: outbox (SQLite file) → signing → delivery to a real loopback
 * receiver, with a test clock so that retry delays pass instantly.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteWebhookOutbox } from "../../../functions/adapters/embedded/sqlite-webhooks.ts";
import { dispatchQueue } from "../../../functions/core/usecases/lifecycle.ts";
import { submitRequest } from "../../../functions/core/usecases/submit.ts";
import { createDeliverer, type DeliveryResult } from "../../../functions/webhooks/deliver.ts";
import {
  createWebhookNotifier,
  type NewWebhookDelivery,
  type WebhookDelivery,
  type WebhookOutbox,
} from "../../../functions/webhooks/outbox.ts";
import { MAX_ATTEMPTS } from "../../../functions/webhooks/schedule.ts";
import { WebhookWorker } from "../../../functions/webhooks/worker.ts";
import { makeDeps } from "../../helpers/fakes.ts";
import { independentVerify, type Receiver, startReceiver } from "./receiver.ts";

const T = 1_800_000_000_000;
let dir: string;
let outbox: SqliteWebhookOutbox;
let receivers: Receiver[] = [];
const workers: WebhookWorker[] = [];
const clock = { t: T, now: () => clock.t };

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "longrun-webhook-worker-"));
  outbox = new SqliteWebhookOutbox(join(dir, "webhooks.db"));
  clock.t = T;
});
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop()));
  await Promise.all(receivers.map((r) => r.close()));
  receivers = [];
  outbox.close();
  rmSync(dir, { recursive: true, force: true });
});

async function receiver(answer?: Receiver["answer"]): Promise<Receiver> {
  const r = await startReceiver(answer ? { answer } : {});
  receivers.push(r);
  return r;
}

function worker(over: Partial<ConstructorParameters<typeof WebhookWorker>[0]> = {}) {
  const attempts: { delivery: WebhookDelivery; result: DeliveryResult }[] = [];
  const logs: string[] = [];
  const w = new WebhookWorker({
    outbox,
    secrets: outbox,
    deliver: createDeliverer({ allowPrivate: true, timeoutMs: 300 }),
    clock,
    concurrency: 4,
    pollMs: 20,
    random: () => 0.5,
    log: (line) => logs.push(line),
    onAttempt: (delivery, result) => attempts.push({ delivery, result }),
    ...over,
  });
  workers.push(w);
  return { w, attempts, logs };
}

let n = 0;
function delivery(url: string, over: Partial<NewWebhookDelivery> = {}): NewWebhookDelivery {
  n++;
  return {
    id: `msg_w${n}`,
    requestId: `req_w${n}`,
    tenant: "alice",
    event: "completed",
    url,
    payload: JSON.stringify({ type: "request.completed", data: { id: `req_w${n}` } }),
    dedupKey: `req_w${n}:completed`,
    createdAt: clock.t,
    ...over,
  };
}

/** Advances the test clock to the delivery's next try and drains. */
async function nextTry(w: WebhookWorker, id: string): Promise<number> {
  clock.t = Math.max(clock.t, outbox.get(id)!.nextAttemptAt);
  return w.drain();
}

describe("WebhookWorker", () => {
  it("retries after 500s with the same webhook-id, fresh timestamps and valid signatures", async () => {
    const r = await receiver((i) => (i < 2 ? 500 : 200));
    const d = delivery(`${r.url}/hook`);
    await outbox.enqueue(d);
    const { w } = worker();
    expect(await w.drain()).toBe(1);
    expect(outbox.get(d.id)).toMatchObject({
      status: "pending",
      attempts: 1,
      lastError: "HTTP 500",
    });
    // first retry about 5 s later (random 0.5: exactly the table)
    expect(outbox.get(d.id)!.nextAttemptAt).toBe(T + 5_000);
    expect(await w.drain()).toBe(0);
    await nextTry(w, d.id);
    expect(outbox.get(d.id)!.nextAttemptAt).toBe(T + 5_000 + 30_000);
    await nextTry(w, d.id);
    expect(outbox.get(d.id)).toMatchObject({ status: "delivered", attempts: 3, lastStatus: 200 });

    const secret = await outbox.secretFor("alice");
    expect(r.received.map((x) => x.headers["webhook-id"])).toEqual([d.id, d.id, d.id]);
    expect(r.received.map((x) => x.headers["webhook-timestamp"])).toEqual([
      String(T / 1000),
      String(T / 1000 + 5),
      String(T / 1000 + 35),
    ]);
    for (const got of r.received) {
      expect(got.body).toBe(d.payload);
      expect(independentVerify(secret, got.headers, got.body)).toBe(true);
      expect(
        independentVerify(`whsec_${Buffer.alloc(32).toString("base64")}`, got.headers, got.body),
      ).toBe(false);
    }
  });

  it("retries after a timeout", async () => {
    const r = await receiver((i) => (i === 0 ? "hang" : 204));
    const d = delivery(r.url);
    await outbox.enqueue(d);
    const { w, attempts } = worker();
    await w.drain();
    expect(attempts[0]!.result).toMatchObject({ ok: false, retryable: true });
    expect(outbox.get(d.id)!.lastError).toMatch(/no answer within 300 ms/);
    await nextTry(w, d.id);
    expect(outbox.get(d.id)).toMatchObject({ status: "delivered", attempts: 2, lastStatus: 204 });
    expect(r.received.map((x) => x.headers["webhook-id"])).toEqual([d.id, d.id]);
  });

  it("gives up after the last try, more than a day after the first, and keeps it dead", async () => {
    const r = await receiver(() => 503);
    const d = delivery(r.url);
    await outbox.enqueue(d);
    const { w, logs } = worker();
    await w.drain();
    while (outbox.get(d.id)!.status === "pending") await nextTry(w, d.id);
    expect(outbox.get(d.id)).toMatchObject({ status: "dead", attempts: MAX_ATTEMPTS });
    expect(r.received).toHaveLength(MAX_ATTEMPTS);
    expect(clock.t - T).toBeGreaterThanOrEqual(24 * 3_600_000);
    expect(logs.join("\n")).toMatch(/is dead after 10 tries: HTTP 503/);
    expect(await w.drain()).toBe(0);
  });

  it("declares a refused target dead at once without connecting", async () => {
    const r = await receiver();
    const d = delivery(r.url.replace("http:", "https:"));
    await outbox.enqueue(d);
    const { w } = worker({ deliver: createDeliverer({ allowPrivate: false }) });
    await w.drain();
    expect(outbox.get(d.id)).toMatchObject({ status: "dead", attempts: 1 });
    expect(outbox.get(d.id)!.lastError).toMatch(/non-public address 127\.0\.0\.1/);
    expect(r.received).toHaveLength(0);
  });

  it("re-delivers a delivery whose worker died once its lease ends, same webhook-id", async () => {
    const r = await receiver();
    const d = delivery(r.url);
    await outbox.enqueue(d);
    // a worker claimed it and died before recording anything
    expect(await outbox.claimDue(T, 10, 60_000)).toHaveLength(1);
    const { w } = worker({ leaseMs: 60_000 });
    expect(await w.drain()).toBe(0);
    clock.t = T + 60_000;
    expect(await w.drain()).toBe(1);
    expect(r.received[0]!.headers["webhook-id"]).toBe(d.id);
    expect(outbox.get(d.id)!.status).toBe("delivered");
  });

  it("delivers started before completed for a request, even when started must be retried", async () => {
    const r = await receiver((i) => (i === 0 ? 500 : 200));
    const h = makeDeps({ gpu: { maxRunning: 1 } });
    try {
      h.clock.set(T);
      const notifier = createWebhookNotifier({ outbox, clock: h.clock });
      h.deps.onChange = notifier.onChange;
      const { request } = await submitRequest(
        {
          tenant: "alice",
          queue: "gpu",
          body: { input: { epochs: 1 }, webhook: { url: r.url, events: ["started", "completed"] } },
          rawBody: {},
        },
        h.deps,
      );
      await dispatchQueue("gpu", h.deps);
      await h.compute.running(request.id, 1);
      h.clock.advance(1000);
      await h.compute.exited(request.id, 1, "succeeded");
      await notifier.idle();
      expect(outbox.deliveriesOf(request.id).map((d) => d.event)).toEqual(["started", "completed"]);

      const { w } = worker({ clock: h.clock });
      await w.drain(); // started fails; completed must wait for it
      expect(r.received).toHaveLength(1);
      const startedId = outbox.deliveriesOf(request.id)[0]!.id;
      h.clock.set(outbox.get(startedId)!.nextAttemptAt);
      await w.drain();
      const types = r.received.map((x) => JSON.parse(x.body).type);
      expect(types).toEqual(["request.started", "request.started", "request.completed"]);
      const last = JSON.parse(r.received[2]!.body);
      expect(last.data).toMatchObject({
        id: request.id,
        status: "SUCCEEDED",
        input: { epochs: 1 },
      });
      const secret = await outbox.secretFor("alice");
      for (const got of r.received)
        expect(independentVerify(secret, got.headers, got.body)).toBe(true);
    } finally {
      h.close();
    }
  });

  it("runs on its own after start(), woken by the notifier", async () => {
    const r = await receiver();
    const realClock = { now: () => Date.now() };
    const { w } = worker({ clock: realClock, pollMs: 10_000 });
    const notifier = createWebhookNotifier({
      outbox,
      clock: realClock,
      onEnqueued: () => w.wake(),
    });
    w.start();
    const base = {
      id: "req_live",
      tenant: "alice",
      queue: "gpu",
      priority: 0,
      input: null,
      metadata: {},
      webhook: { url: r.url, events: ["started" as const, "completed" as const] },
      idempotencyKey: null,
      createdAt: Date.now(),
      startedAt: Date.now(),
      finishedAt: null,
      updatedAt: Date.now(),
      attempt: 1,
      maxAttempts: 1,
      platformRetries: 0,
      cancelRequested: false,
      timeoutSeconds: 60,
      queueTtlSeconds: 60,
      expiresAt: Date.now() + 60_000,
      progress: null,
      error: null,
      jobRef: null,
    };
    notifier.onChange({ ...base, status: "RUNNING" }, "started");
    notifier.onChange({ ...base, status: "SUCCEEDED", finishedAt: Date.now() }, "completed");
    await r.waitFor(2, 5000);
    await w.stop();
    expect(r.received.map((x) => JSON.parse(x.body).type)).toEqual([
      "request.started",
      "request.completed",
    ]);
  });

  it("keeps going when the outbox or the secrets fail", async () => {
    const r = await receiver();
    const d = delivery(r.url);
    await outbox.enqueue(d);
    let failSecrets = true;
    const { w, logs } = worker({
      secrets: {
        secretFor: (tenant) => outbox.secretFor(tenant),
        rotate: (tenant, now) => outbox.rotate(tenant, now),
        signingSecretsFor: async (tenant, now) => {
          if (failSecrets) throw new Error("secrets unavailable");
          return outbox.signingSecretsFor(tenant, now);
        },
      },
      leaseMs: 1000,
    });
    await w.drain();
    expect(logs.join("\n")).toMatch(/delivery msg_w\d+ failed: Error: secrets unavailable/);
    expect(r.received).toHaveLength(0);
    failSecrets = false;
    clock.t += 1000; // the lease ends; the delivery is due again
    await w.drain();
    expect(outbox.get(d.id)!.status).toBe("delivered");

    const failing: WebhookOutbox = {
      enqueue: (x) => outbox.enqueue(x),
      claimDue: async () => {
        throw new Error("disk full");
      },
      complete: (id, result) => outbox.complete(id, result),
      reschedule: (id, at, error) => outbox.reschedule(id, at, error),
      markDead: (id, error) => outbox.markDead(id, error),
    };
    const broken = worker({ outbox: failing });
    broken.w.start();
    expect(await broken.w.drain()).toBe(0);
    await broken.w.stop();
    expect(broken.logs.join("\n")).toMatch(/claiming due deliveries failed: Error: disk full/);
  });
});
