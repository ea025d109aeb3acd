/**
 * Webhooks on AWS, on the emulator: the real handlers enqueue deliveries on the webhooks
 * queue as a request changes state, the webhooks handler signs and sends them to a real
 * loopback receiver, and re-sends a failed one with the next attempt and a message timer.
 */
import type { Message } from "@aws-sdk/client-sqs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DynamoWebhookSecrets,
  MAX_SQS_DELAY_SECONDS,
  parseWebhookMessage,
  type WebhookMessage,
} from "../../../functions/adapters/aws/sqs-webhooks.ts";
import { createWebhooksHandler } from "../../../functions/handlers/webhooks.ts";
import { createDeliverer } from "../../../functions/webhooks/deliver.ts";
import { RETRY_DELAYS_MS } from "../../../functions/webhooks/schedule.ts";
import {
  createHarness,
  type Harness,
  type HarnessWebhooks,
  lambdaContext,
  recordCommands,
  toRecord,
} from "../handlers/harness.ts";
import { independentVerify, type Receiver, startReceiver } from "./receiver.ts";

let h: Harness;
let hooks: HarnessWebhooks;
const receivers: Receiver[] = [];

beforeAll(async () => {
  h = await createHarness("hwh", undefined, { webhooks: true });
  if (!h.webhooks) throw new Error("the harness made no webhooks queue");
  hooks = h.webhooks;
});
afterAll(async () => {
  await Promise.all(receivers.map((r) => r.close()));
});

async function receiver(answer: (n: number) => number): Promise<Receiver> {
  const r = await startReceiver({ answer });
  receivers.push(r);
  return r;
}

/** The webhooks handler over the harness's queue, table and clients. */
function webhooksHandler(clock = { now: () => Date.now() }) {
  return createWebhooksHandler({
    secrets: hooks.secrets,
    deliver: createDeliverer({ allowPrivate: true }),
    sqs: h.clients.sqs,
    queueUrl: hooks.queueUrl,
    clock,
    random: () => 0.5,
  });
}

/** Receives from the webhooks queue until `count` messages came (or tries run out). */
async function receiveHooks(count: number): Promise<Message[]> {
  const got: Message[] = [];
  for (let tries = 0; got.length < count && tries < 40; tries++) {
    const batch = await h.receive(hooks.queueUrl, 10);
    got.push(...batch);
    if (batch.length === 0) await new Promise((r) => setTimeout(r, 50));
  }
  return got;
}

function bodyOf(m: Message): WebhookMessage {
  const parsed = parseWebhookMessage(m.Body ?? "");
  if (!parsed) throw new Error(`not a webhook message: ${m.Body}`);
  return parsed;
}

/** Submits with a webhook to `url` and runs it to SUCCEEDED through the real handlers. */
async function runToCompletion(url: string): Promise<string> {
  const id = await h.submit("finetune", {
    input: { n: Math.random() },
    webhook: { url: `${url}/hook`, events: ["started", "completed"] },
  });
  await h.drainDispatch();
  await h.deliverEvents(await h.batchEvent(id, "RUNNING"));
  await h.deliverEvents(await h.batchEvent(id, "SUCCEEDED"));
  return id;
}

describe("webhooks on AWS", () => {
  it("enqueues started and completed, and the handler delivers them signed", async () => {
    const r = await receiver(() => 204);
    const id = await runToCompletion(r.url);

    const messages = await receiveHooks(2);
    const bodies = messages.map(bodyOf);
    expect(bodies.map((b) => b.event).sort()).toEqual(["completed", "started"]);
    for (const b of bodies) {
      expect(b).toMatchObject({ requestId: id, tenant: "acme", attempt: 0 });
      expect(b.dedupKey).toBe(`${id}:${b.event}`);
      expect(b.id).toMatch(/^msg_/);
    }

    const delivery = await h.invoke(hooks.queueUrl, hooks.queueArn, messages, webhooksHandler());
    expect(delivery).toMatchObject({ received: 2, failed: [], threw: false });
    expect(r.received).toHaveLength(2);

    const secret = (await h.api("GET", "/v1/webhook-secret")).body.secret as string;
    for (const got of r.received) {
      expect(independentVerify(secret, got.headers, got.body)).toBe(true);
      const payload = JSON.parse(got.body);
      expect(payload.data.id).toBe(id);
      const sent = bodies.find((b) => b.id === got.headers["webhook-id"]);
      expect(sent && payload.type).toBe(`request.${sent?.event}`);
    }
    const completed = r.received.find((g) => JSON.parse(g.body).type === "request.completed");
    expect(JSON.parse(completed?.body ?? "{}").data.status).toBe("SUCCEEDED");
    // Everything was handled: nothing re-sent, nothing waiting.
    expect(await h.receive(hooks.queueUrl)).toHaveLength(0);
  });

  it("re-sends a failed delivery with attempt + 1 and the schedule's delay", async () => {
    const r = await receiver(() => 500);
    const id = await h.submit("finetune", {
      input: { n: 2 },
      webhook: { url: `${r.url}/hook`, events: ["started"] },
    });
    await h.drainDispatch();
    await h.deliverEvents(await h.batchEvent(id, "RUNNING"));
    const [first] = await receiveHooks(1);
    if (!first) throw new Error("no webhook message was enqueued");

    const sent = recordCommands(h.clients.sqs);
    const d = await h.invoke(hooks.queueUrl, hooks.queueArn, [first], webhooksHandler());
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
    const [second] = await receiveHooks(1);
    if (!second) throw new Error("the failed delivery was not re-sent");
    expect(bodyOf(second)).toMatchObject({ id: bodyOf(first).id, attempt: 1 });
    await h.invoke(hooks.queueUrl, hooks.queueArn, [second], webhooksHandler());
    expect(r.received).toHaveLength(2);
    expect(r.received[1]?.headers["webhook-id"]).toBe(r.received[0]?.headers["webhook-id"]);
  }, 20_000);

  it("waits longer than 15 minutes in hops of 900 s with notBefore", async () => {
    const r = await receiver(() => 503);
    const t0 = Date.now();
    const clock = { t: t0, now: () => clock.t };
    const handler = webhooksHandler(clock);
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
    const handler = webhooksHandler();
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
