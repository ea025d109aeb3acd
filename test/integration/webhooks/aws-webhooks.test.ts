/**
 * Webhooks on AWS, on the emulator: the real handlers change requests; the table's stream
 * (read with GetRecords, handed to the webhooks handler as the event-source mapping would)
 * becomes deliveries on the webhooks queue; the webhooks handler signs and sends them to a
 * real loopback receiver, re-sends a failed one with the next attempt and a message timer,
 * and keeps each request's events in order through its order record.
 */
import type { _Record } from "@aws-sdk/client-dynamodb-streams";
import type { Message } from "@aws-sdk/client-sqs";
import type { SQSBatchResponse, SQSEvent } from "aws-lambda";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DynamoDeliveryOrder,
  DynamoWebhookSecrets,
  MAX_SQS_DELAY_SECONDS,
  parseWebhookMessage,
  type WebhookMessage,
} from "../../../functions/adapters/aws/sqs-webhooks.ts";
import { createWebhooksHandler } from "../../../functions/handlers/webhooks.ts";
import { createDeliverer } from "../../../functions/webhooks/deliver.ts";
import { ROTATION_OVERLAP_MS } from "../../../functions/webhooks/outbox.ts";
import { RETRY_DELAYS_MS } from "../../../functions/webhooks/schedule.ts";
import { dynamoProgressWriter } from "../../../jobs/runner/batch-main.ts";
import {
  crashOn,
  createHarness,
  type Harness,
  type HarnessWebhooks,
  lambdaContext,
  recordCommands,
  toRecord,
} from "../handlers/harness.ts";
import { type Answer, independentVerify, type Receiver, startReceiver } from "./receiver.ts";
import { StreamReader, streamEvent } from "./stream.ts";

let h: Harness;
let hooks: HarnessWebhooks;
let stream: StreamReader;
const receivers: Receiver[] = [];

beforeAll(async () => {
  h = await createHarness("hwh", undefined, { webhooks: true });
  if (!h.webhooks) throw new Error("the harness made no webhooks queue");
  hooks = h.webhooks;
  stream = new StreamReader(h.clients, h.resources.tableName);
  await stream.start();
});
afterAll(async () => {
  stream?.close();
  await Promise.all(receivers.map((r) => r.close()));
});

async function receiver(answer: (n: number) => Answer): Promise<Receiver> {
  const r = await startReceiver({ answer });
  receivers.push(r);
  return r;
}

/** The webhooks handler over the harness's queue, table and clients. */
function webhooksHandler(clock = { now: () => Date.now() }) {
  return createWebhooksHandler({
    secrets: hooks.secrets,
    order: new DynamoDeliveryOrder(h.clients.dynamo, h.resources.tableName),
    deliver: createDeliverer({ allowPrivate: true }),
    sqs: h.clients.sqs,
    queueUrl: hooks.queueUrl,
    clock,
    random: () => 0.5,
  });
}

/** The same handler typed for the queue's events. */
function queueHandler(clock?: { now(): number }) {
  const handler = webhooksHandler(clock);
  return (e: SQSEvent, c = lambdaContext("webhooks")) => handler(e, c) as Promise<SQSBatchResponse>;
}

/** Hands stream records to the handler as one mapping batch; the failed sequence numbers. */
async function fromStream(records: readonly _Record[]): Promise<string[]> {
  const res = await webhooksHandler()(
    streamEvent(records, h.resources.tableName),
    lambdaContext("webhooks"),
  );
  return res.batchItemFailures.map((f) => f.itemIdentifier);
}

/**
 * Receives from the webhooks queue until `count` messages of `requestId` came (or tries run
 * out); another request's message (an earlier test's retry) is left in flight.
 */
async function receiveHooks(count: number, requestId: string, tries = 40): Promise<Message[]> {
  const got: Message[] = [];
  for (let n = 0; got.length < count && n < tries; n++) {
    const batch = await h.receive(hooks.queueUrl, 10);
    got.push(...batch.filter((m) => bodyOf(m).requestId === requestId));
    if (batch.length === 0) await new Promise((r) => setTimeout(r, 50));
  }
  return got;
}

function bodyOf(m: Message): WebhookMessage {
  const parsed = parseWebhookMessage(m.Body ?? "");
  if (!parsed) throw new Error(`not a webhook message: ${m.Body}`);
  return parsed;
}

/** Hands messages to the handler one at a time, in the given order. */
async function deliverOneByOne(messages: readonly Message[]): Promise<void> {
  for (const m of messages) {
    const d = await h.invoke(hooks.queueUrl, hooks.queueArn, [m], queueHandler());
    expect(d).toMatchObject({ failed: [], threw: false });
  }
}

/** Submits with a webhook to `url` and runs it to RUNNING through the real handlers. */
async function runToRunning(url: string, events: string[]): Promise<string> {
  const id = await h.submit("finetune", {
    input: { n: Math.random() },
    webhook: { url: `${url}/hook`, events },
  });
  await h.drainDispatch();
  await h.deliverEvents(await h.batchEvent(id, "RUNNING"));
  return id;
}

/** ... and on to SUCCEEDED. */
async function runToCompletion(url: string, events = ["started", "completed"]): Promise<string> {
  const id = await runToRunning(url, events);
  await h.deliverEvents(await h.batchEvent(id, "SUCCEEDED"));
  return id;
}

const typeOf = (body: string) => JSON.parse(body).type as string;

describe("webhooks on AWS", () => {
  it("derives started and completed from the stream, and the handler delivers them signed", async () => {
    const r = await receiver(() => 204);
    const id = await runToCompletion(r.url);
    expect(await fromStream(await stream.readFor(id))).toEqual([]);

    const messages = await receiveHooks(2, id);
    const bodies = messages.map(bodyOf);
    expect(bodies.map((b) => b.event).sort()).toEqual(["completed", "started"]);
    for (const b of bodies) {
      expect(b).toMatchObject({ requestId: id, tenant: "acme", attempt: 0 });
      expect(b.dedupKey).toBe(`${id}:${b.event}`);
      expect(b.id).toMatch(/^msg_[0-9a-f]{32}$/);
      expect(b.order).toEqual(expect.any(Number));
    }
    const sorted = [...messages].sort((a, b) => (bodyOf(a).order ?? 0) - (bodyOf(b).order ?? 0));
    await deliverOneByOne(sorted);
    expect(r.received.map((g) => typeOf(g.body))).toEqual(["request.started", "request.completed"]);

    const secret = (await h.api("GET", "/v1/webhook-secret")).body.secret as string;
    for (const got of r.received) {
      expect(independentVerify(secret, got.headers, got.body)).toBe(true);
      const payload = JSON.parse(got.body);
      expect(payload.data.id).toBe(id);
      const sent = bodies.find((b) => b.id === got.headers["webhook-id"]);
      expect(sent && payload.type).toBe(`request.${sent?.event}`);
    }
    const completed = r.received.find((g) => typeOf(g.body) === "request.completed");
    expect(JSON.parse(completed?.body ?? "{}").data.status).toBe("SUCCEEDED");
    // Everything was handled: nothing re-sent, nothing waiting.
    expect(await h.receive(hooks.queueUrl)).toHaveLength(0);
  });

  it("sends progress from the runner's writes, at most one per second", async () => {
    const r = await receiver(() => 204);
    const id = await runToRunning(r.url, ["progress", "completed"]);
    const { attempt } = await h.get(id);
    const write = dynamoProgressWriter(h.clients.dynamo, h.resources.tableName);
    // Two reports inside one second, then one in the next second.
    const second = Math.floor(Date.now() / 1000) * 1000;
    for (const [current, at] of [
      [1, second + 100],
      [2, second + 900],
      [3, second + 1_100],
    ] as const) {
      const ok = await write({
        requestId: id,
        attempt,
        heartbeatAt: at,
        progress: { current, total: 3, message: null, updatedAt: at },
      });
      expect(ok).toBe(true);
    }
    // A heartbeat alone changes no progress: no webhook.
    await write({ requestId: id, attempt, heartbeatAt: second + 1_200 });
    await h.deliverEvents(await h.batchEvent(id, "SUCCEEDED"));
    expect(await fromStream(await stream.readFor(id))).toEqual([]);

    const messages = await receiveHooks(4, id);
    const bodies = messages.map(bodyOf);
    expect(bodies.map((b) => b.event).sort()).toEqual([
      "completed",
      "progress",
      "progress",
      "progress",
    ]);
    // The two reports of one second are one delivery (one webhook-id).
    expect(new Set(bodies.filter((b) => b.event === "progress").map((b) => b.id)).size).toBe(2);

    const sorted = [...messages].sort((a, b) => (bodyOf(a).order ?? 0) - (bodyOf(b).order ?? 0));
    await deliverOneByOne(sorted);
    const got = r.received.map((g) => JSON.parse(g.body));
    expect(got.map((p) => p.type)).toEqual([
      "request.progress",
      "request.progress",
      "request.completed",
    ]);
    expect(got[0].data.progress.current).toBe(1);
    expect(got[1].data.progress.current).toBe(3);
    expect(new Set(r.received.map((g) => g.headers["webhook-id"])).size).toBe(3);
  });

  it("re-sends a failed delivery with attempt + 1 and the schedule's delay", async () => {
    const r = await receiver(() => 500);
    const id = await h.submit("finetune", {
      input: { n: 2 },
      webhook: { url: `${r.url}/hook`, events: ["started"] },
    });
    await h.drainDispatch();
    await h.deliverEvents(await h.batchEvent(id, "RUNNING"));
    expect(await fromStream(await stream.readFor(id))).toEqual([]);
    const [first] = await receiveHooks(1, id);
    if (!first) throw new Error("no webhook message was enqueued");

    const sent = recordCommands(h.clients.sqs);
    const d = await h.invoke(hooks.queueUrl, hooks.queueArn, [first], queueHandler());
    expect(d.failed).toHaveLength(0);
    expect(r.received).toHaveLength(1);

    const resend = sent.find((c) => c.name === "SendMessageCommand");
    // jitter 0.5 → factor 1: exactly the first delay of the table.
    expect(resend?.input.DelaySeconds).toBe(RETRY_DELAYS_MS[0]! / 1000);
    expect(resend?.input.MessageAttributes.attempt.StringValue).toBe("1");
    const again = JSON.parse(resend?.input.MessageBody) as WebhookMessage;
    expect(again).toMatchObject({
      id: bodyOf(first).id,
      attempt: 1,
      lastError: expect.stringContaining("500"),
    });
    expect(again.notBefore).toBeUndefined();

    // The re-sent message arrives after its timer with the same webhook-id.
    await new Promise((res) => setTimeout(res, RETRY_DELAYS_MS[0]! + 500));
    const [second] = await receiveHooks(1, id);
    if (!second) throw new Error("the failed delivery was not re-sent");
    expect(bodyOf(second)).toMatchObject({ id: bodyOf(first).id, attempt: 1 });
    await h.invoke(hooks.queueUrl, hooks.queueArn, [second], queueHandler());
    expect(r.received).toHaveLength(2);
    expect(r.received[1]?.headers["webhook-id"]).toBe(r.received[0]?.headers["webhook-id"]);
  }, 20_000);

  it("waits longer than 15 minutes in hops of 900 s with notBefore", async () => {
    const r = await receiver(() => 503);
    const t0 = Date.now();
    const clock = { t: t0, now: () => clock.t };
    const handler = queueHandler(clock);
    const message: WebhookMessage = {
      v: 1,
      id: "msg_long_wait",
      requestId: "req_long_wait",
      tenant: "acme",
      event: "completed",
      url: `${r.url}/hook`,
      payload: '{"type":"request.completed"}',
      dedupKey: "req_long_wait:completed",
      createdAt: t0,
      // The fifth try fails: the next waits 30 minutes.
      attempt: 4,
    };
    const sent = recordCommands(h.clients.sqs);
    const record = (m: WebhookMessage): Message => ({
      MessageId: crypto.randomUUID(),
      ReceiptHandle: "unused",
      Body: JSON.stringify(m),
    });
    const run = async (m: WebhookMessage) => {
      const res = await handler(
        { Records: [toRecord(record(m), hooks.queueArn)] },
        lambdaContext("webhooks"),
      );
      expect(res.batchItemFailures).toEqual([]);
      const cmd = sent.pop();
      return { delay: cmd?.input.DelaySeconds as number, body: JSON.parse(cmd?.input.MessageBody) };
    };

    const first = await run(message);
    expect(first.delay).toBe(MAX_SQS_DELAY_SECONDS);
    expect(first.body).toMatchObject({ attempt: 5, notBefore: t0 + RETRY_DELAYS_MS[4]! });
    expect(r.received).toHaveLength(1);

    // Received after 15 minutes: not due, delayed again by the remaining 15 minutes, not tried.
    clock.t = t0 + MAX_SQS_DELAY_SECONDS * 1000;
    const hop = await run(first.body);
    expect(hop.delay).toBe(RETRY_DELAYS_MS[4]! / 1000 - MAX_SQS_DELAY_SECONDS);
    expect(hop.body).toMatchObject({ attempt: 5, notBefore: first.body.notBefore });
    expect(r.received).toHaveLength(1);

    // Due: tried again.
    clock.t = first.body.notBefore;
    const tried = await run(hop.body);
    expect(r.received).toHaveLength(2);
    expect(tried.body.attempt).toBe(6);
  });

  it("gives up after the last try: the dead message fails until the queue dead-letters it", async () => {
    const r = await receiver(() => 500);
    const handler = queueHandler();
    const sent = recordCommands(h.clients.sqs);
    const last: WebhookMessage = {
      v: 1,
      id: "msg_last_try",
      requestId: "req_last_try",
      tenant: "acme",
      event: "completed",
      url: `${r.url}/hook`,
      payload: "{}",
      dedupKey: "req_last_try:completed",
      createdAt: Date.now(),
      attempt: RETRY_DELAYS_MS.length,
    };
    const ok = await handler(
      {
        Records: [
          toRecord(
            { MessageId: "m1", ReceiptHandle: "x", Body: JSON.stringify(last) },
            hooks.queueArn,
          ),
        ],
      },
      lambdaContext("webhooks"),
    );
    expect(ok.batchItemFailures).toEqual([]);
    const dead = JSON.parse(sent.pop()?.input.MessageBody) as WebhookMessage;
    expect(dead).toMatchObject({ dead: true, attempt: RETRY_DELAYS_MS.length + 1 });
    expect(r.received).toHaveLength(1);

    const failed = await handler(
      {
        Records: [
          toRecord(
            { MessageId: "m2", ReceiptHandle: "y", Body: JSON.stringify(dead) },
            hooks.queueArn,
          ),
          toRecord({ MessageId: "m3", ReceiptHandle: "z", Body: "not json" }, hooks.queueArn),
        ],
      },
      lambdaContext("webhooks"),
    );
    // The dead one fails (redrive → DLQ); the unusable one is dropped; nothing is sent.
    expect(failed.batchItemFailures).toEqual([{ itemIdentifier: "m2" }]);
    expect(r.received).toHaveLength(1);
  });
});

/**
 * Receives from the webhooks queue until it stays empty; only `requestId`'s messages are
 * kept (an earlier test's retry may arrive meanwhile: it is left in flight).
 */
async function drainHooks(requestId: string): Promise<Message[]> {
  const got: Message[] = [];
  for (let empty = 0; empty < 3; ) {
    const batch = await h.receive(hooks.queueUrl, 10);
    got.push(...batch.filter((m) => bodyOf(m).requestId === requestId));
    empty = batch.length === 0 ? empty + 1 : 0;
    if (batch.length === 0) await new Promise((r) => setTimeout(r, 50));
  }
  return got;
}

const byOrder = (a: Message, b: Message) => (bodyOf(a).order ?? 0) - (bodyOf(b).order ?? 0);

/** The event types a receiver got, in arrival order, only counting 2xx answers given. */
function accepted(r: Receiver, status: (n: number) => number): string[] {
  return r.received.filter((_, n) => status(n) < 300).map((g) => typeOf(g.body));
}

/**
 * Crash injection: the step between the stream read and the enqueue fails (before the queue
 * got the messages, and after it got them with the answer lost), records come twice and out
 * of order, and queue messages are handled out of order and twice. A finished request's
 * events all reach the receiver once, in order; a `started` that would come after its
 * `completed` is dropped, never sent.
 */
describe("webhooks on AWS under crashes, duplicates and reordering", () => {
  it("loses no event when the enqueue after the stream read fails, and sends each once", async () => {
    const r = await receiver(() => 204);
    const id = await runToCompletion(r.url);
    const records = await stream.readFor(id);
    expect(records.length).toBeGreaterThanOrEqual(3);

    // The enqueue fails before anything reached the queue: the batch reports the record...
    const before = crashOn(h.clients.sqs, "SendMessageBatchCommand", { when: "before" });
    const failed = await fromStream(records);
    expect(before.fired).toBe(true);
    expect(failed).toHaveLength(1);
    // ...and the mapping hands the batch in again from the first failed record. This time the
    // queue takes the messages but the answer is lost: reported again, retried again.
    const from = records.findIndex((x) => x.dynamodb?.SequenceNumber === failed[0]);
    expect(from).toBeGreaterThanOrEqual(0);
    const after = crashOn(h.clients.sqs, "SendMessageBatchCommand", { when: "after" });
    expect(await fromStream(records.slice(from))).toHaveLength(1);
    expect(after.fired).toBe(true);
    expect(await fromStream(records.slice(from))).toEqual([]);
    // A replay of every record, twice and in reverse (a poller restarted without its
    // checkpoint reads them again).
    expect(await fromStream([...records, ...[...records].reverse()])).toEqual([]);

    const messages = await drainHooks(id);
    const ids = new Set(messages.map((m) => bodyOf(m).id));
    expect(ids.size).toBe(2);
    expect(messages.length).toBeGreaterThan(2);
    // Every copy, in order of the events, with the duplicates interleaved.
    await deliverOneByOne([...messages].sort(byOrder));
    expect(r.received.map((g) => typeOf(g.body))).toEqual(["request.started", "request.completed"]);
    expect(new Set(r.received.map((g) => g.headers["webhook-id"]))).toEqual(ids);
  });

  it("never sends a started after its completed, however the queue orders them", async () => {
    const r = await receiver(() => 204);
    const id = await runToCompletion(r.url);
    expect(await fromStream(await stream.readFor(id))).toEqual([]);
    const messages = await drainHooks(id);
    expect(messages.map((m) => bodyOf(m).event).sort()).toEqual(["completed", "started"]);
    // The queue hands out completed first, then started, then both again.
    const reversed = [...messages].sort(byOrder).reverse();
    await deliverOneByOne([...reversed, ...reversed]);
    expect(r.received.map((g) => typeOf(g.body))).toEqual(["request.completed"]);
  });

  it("drops the retry of a failed started once its completed went out", async () => {
    // The first try (the started) fails; everything after it is accepted.
    const status = (n: number) => (n === 0 ? 500 : 204);
    const r = await receiver(status);
    const id = await runToCompletion(r.url);
    expect(await fromStream(await stream.readFor(id))).toEqual([]);
    const [started, completed] = (await drainHooks(id)).sort(byOrder);
    if (!started || !completed) throw new Error("expected a started and a completed delivery");
    await deliverOneByOne([started, completed]);
    expect(r.received.map((g) => typeOf(g.body))).toEqual(["request.started", "request.completed"]);
    // The started's retry arrives after its timer: claimed by nothing, dropped, not sent.
    await new Promise((res) => setTimeout(res, RETRY_DELAYS_MS[0]! + 500));
    const retry = await receiveHooks(1, id);
    expect(retry.map((m) => bodyOf(m))).toMatchObject([{ id: bodyOf(started).id, attempt: 1 }]);
    await deliverOneByOne(retry);
    expect(r.received).toHaveLength(2);
    expect(accepted(r, status)).toEqual(["request.completed"]);
  }, 20_000);

  it("sends a batch's deliveries of one request one after another, in order", async () => {
    const r = await receiver(() => 204);
    const id = await runToCompletion(r.url);
    expect(await fromStream(await stream.readFor(id))).toEqual([]);
    const messages = (await drainHooks(id)).sort(byOrder).reverse();
    // One batch, completed first: the handler still sends started, then completed.
    const d = await h.invoke(hooks.queueUrl, hooks.queueArn, messages, queueHandler());
    expect(d.failed).toEqual([]);
    expect(r.received.map((g) => typeOf(g.body))).toEqual(["request.started", "request.completed"]);
  });

  it("lets one try per request out at a time; another instance's try comes back later", async () => {
    const r = await receiver(() => 204);
    const id = await runToCompletion(r.url);
    expect(await fromStream(await stream.readFor(id))).toEqual([]);
    const [started, completed] = (await drainHooks(id)).sort(byOrder);
    if (!started || !completed) throw new Error("expected a started and a completed delivery");
    // The first try to claim the request's order record stays in flight until released.
    let release = () => {};
    const gate = new Promise<void>((res) => {
      release = res;
    });
    const real = createDeliverer({ allowPrivate: true });
    const gated = createWebhooksHandler({
      secrets: hooks.secrets,
      order: new DynamoDeliveryOrder(h.clients.dynamo, h.resources.tableName),
      deliver: async (req) => {
        await gate;
        return real(req);
      },
      sqs: h.clients.sqs,
      queueUrl: hooks.queueUrl,
      clock: { now: () => Date.now() },
    });
    const handler = (e: SQSEvent) =>
      gated(e, lambdaContext("webhooks")) as Promise<SQSBatchResponse>;
    const sent = recordCommands(h.clients.sqs);
    // Two instances, one message each, at once.
    const a = h.invoke(hooks.queueUrl, hooks.queueArn, [started], handler);
    const b = h.invoke(hooks.queueUrl, hooks.queueArn, [completed], handler);
    // The one that lost the claim sends its message back with a short timer, untried.
    for (let n = 0; n < 200 && !sent.some((c) => c.name === "SendMessageCommand"); n++) {
      await new Promise((res) => setTimeout(res, 25));
    }
    expect(r.received).toHaveLength(0);
    release();
    const results = await Promise.all([a, b]);
    expect(results.map((x) => x.failed)).toEqual([[], []]);
    const back = sent.filter((c) => c.name === "SendMessageCommand");
    expect(back).toHaveLength(1);
    expect(back[0]?.input.DelaySeconds).toBe(5);
    expect(JSON.parse(back[0]?.input.MessageBody).attempt).toBe(0);
    expect(r.received).toHaveLength(1);
  });
});

describe("webhook secrets in DynamoDB", () => {
  it("gives concurrent first uses the same secret", async () => {
    const tenant = `t#${crypto.randomUUID()}`;
    const instances = Array.from(
      { length: 8 },
      () => new DynamoWebhookSecrets(h.clients.dynamo, h.resources.tableName),
    );
    const secrets = await Promise.all(instances.map((s) => s.secretFor(tenant)));
    expect(new Set(secrets).size).toBe(1);
    expect(secrets[0]).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    // Another tenant whose name would collide without escaping gets its own.
    const other = await instances[0]?.secretFor(`t%23${tenant.slice(2)}`);
    expect(other).not.toBe(secrets[0]);
  });

  it("rotates through the http handler: both keys sign for 24 hours", async () => {
    const tenant = `rot-${crypto.randomUUID()}`;
    const old = (await h.api("GET", "/v1/webhook-secret", { tenant })).body.secret as string;
    const rotated = await h.api("POST", "/v1/webhook-secret/rotate", { tenant });
    expect(rotated.status).toBe(200);
    const fresh = rotated.body.secret as string;
    expect(fresh).toMatch(/^whsec_/);
    expect(fresh).not.toBe(old);
    expect((await h.api("GET", "/v1/webhook-secret", { tenant })).body.secret).toBe(fresh);
    const now = Date.now();
    expect(await hooks.secrets.signingSecretsFor(tenant, now)).toEqual([fresh, old]);
    expect(
      await hooks.secrets.signingSecretsFor(tenant, now + ROTATION_OVERLAP_MS + 60_000),
    ).toEqual([fresh]);
    // Concurrent rotations each replace the secret they read: every caller's secret was
    // current once, and the last one stands.
    const many = await Promise.all(
      Array.from({ length: 4 }, () => hooks.secrets.rotate(tenant, Date.now())),
    );
    expect(many).toContain(await hooks.secrets.secretFor(tenant));
    expect(new Set(many).size).toBe(4);
  });

  it("answers GET /v1/webhook-secret per tenant through the http handler", async () => {
    const a = await h.api("GET", "/v1/webhook-secret", { tenant: "tenant-a" });
    const again = await h.api("GET", "/v1/webhook-secret", { tenant: "tenant-a" });
    const b = await h.api("GET", "/v1/webhook-secret", { tenant: "tenant-b" });
    expect(a.status).toBe(200);
    expect(a.body.secret).toMatch(/^whsec_/);
    expect(again.body.secret).toBe(a.body.secret);
    expect(b.body.secret).not.toBe(a.body.secret);
    expect(await hooks.secrets.secretFor("tenant-a")).toBe(a.body.secret);
  });
});
