import {
  DeleteMessageCommand,
  type Message,
  ReceiveMessageCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import { beforeAll, describe, expect, it } from "vitest";
import { createQueues } from "../../functions/adapters/aws/bootstrap-sqs.ts";
import {
  CLOCK_SKEW_MARGIN_MS,
  dispatchMessageFor,
  dispatchUntilSettled,
  dispatchWhenSettled,
  parseDispatchMessage,
  SqsDispatchTrigger,
} from "../../functions/adapters/aws/sqs-trigger.ts";
import { FakeClock, T0 } from "../helpers/fakes.ts";
import { awsClientConfig, uniqueName } from "./aws.ts";

let sqs: SQSClient;
let prefix: string;
let n = 0;

beforeAll(() => {
  sqs = new SQSClient(awsClientConfig());
  prefix = uniqueName("trig");
});

/** A fresh dispatch queue per test, so that deduplication history never leaks between tests. */
async function dispatchQueue(): Promise<string> {
  const urls = await createQueues(sqs, {
    dispatchQueueName: `${prefix}-${++n}-dispatch.fifo`,
    eventsQueueName: `${prefix}-${n}-events`,
  });
  return urls.dispatchQueueUrl;
}

async function receiveAll(url: string, deleteThem = true): Promise<Message[]> {
  const all: Message[] = [];
  for (;;) {
    const out = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 0,
        MessageSystemAttributeNames: ["MessageGroupId", "MessageDeduplicationId"],
      }),
    );
    const batch = out.Messages ?? [];
    if (batch.length === 0) return all;
    all.push(...batch);
    if (deleteThem) {
      for (const m of batch) {
        await sqs.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: m.ReceiptHandle }));
      }
    }
  }
}

describe("SqsDispatchTrigger", () => {
  it("collapses a burst of 50 wake-ups of one queue into few messages", async () => {
    const url = await dispatchQueue();
    const trigger = new SqsDispatchTrigger({ client: sqs, queueUrl: url });

    const started = Date.now();
    await Promise.all(Array.from({ length: 50 }, () => trigger.wake("finetune")));
    const seconds = Math.ceil((Date.now() - started) / 1000);

    const messages = await receiveAll(url);
    // One per 1 s bucket the burst touched.
    expect(messages.length).toBeGreaterThanOrEqual(1);
    expect(messages.length).toBeLessThanOrEqual(seconds + 1);
    for (const m of messages) {
      expect(parseDispatchMessage(m.Body ?? "")?.queue).toBe("finetune");
    }
  });

  it("collapses exactly to one message per bucket under a fixed clock", async () => {
    const url = await dispatchQueue();
    const clock = new FakeClock(T0 + 100);
    const trigger = new SqsDispatchTrigger({ client: sqs, queueUrl: url, clock });

    await Promise.all(Array.from({ length: 50 }, () => trigger.wake("finetune")));
    clock.set(T0 + 999);
    await trigger.wake("finetune");
    clock.set(T0 + 1000);
    await trigger.wake("finetune");

    const messages = await receiveAll(url);
    expect(messages.map((m) => parseDispatchMessage(m.Body ?? ""))).toEqual([
      { queue: "finetune", settleAt: T0 + 1000 + CLOCK_SKEW_MARGIN_MS },
      { queue: "finetune", settleAt: T0 + 2000 + CLOCK_SKEW_MARGIN_MS },
    ]);
  });

  it("puts each queue in its own message group and never collapses two queues", async () => {
    const url = await dispatchQueue();
    const clock = new FakeClock();
    const trigger = new SqsDispatchTrigger({ client: sqs, queueUrl: url, clock });

    await Promise.all(["alpha", "beta", "alpha", "gamma", "beta"].map((q) => trigger.wake(q)));

    const messages = await receiveAll(url);
    const groups = messages.map((m) => m.Attributes?.MessageGroupId).sort();
    expect(groups).toEqual(["alpha", "beta", "gamma"]);
    for (const m of messages) {
      expect(parseDispatchMessage(m.Body ?? "")?.queue).toBe(m.Attributes?.MessageGroupId);
      expect(m.Attributes?.MessageDeduplicationId).toMatch(
        new RegExp(`^${m.Attributes?.MessageGroupId}#1000:\\d+$`),
      );
    }
  });

  it("loses no wake-up that is deduplicated against a message already being dispatched", async () => {
    // Prepare: the queue's state is a list of waiting requests the dispatcher drains; a
    // submit writes first, then wakes (as the core does).
    const url = await dispatchQueue();
    const clock = new FakeClock(T0 + 200);
    const trigger = new SqsDispatchTrigger({ client: sqs, queueUrl: url, clock });
    const waiting: string[] = [];
    const started: string[] = [];
    const submit = async (id: string) => {
      waiting.push(id);
      await trigger.wake("finetune");
    };
    await submit("r1");
    const [first] = await receiveAll(url, false);
    const message = parseDispatchMessage(first?.Body ?? "");
    expect(message).not.toBeNull();

    // Act: the dispatcher drains while holding the message; during its pass, in the same
    // 1 s bucket, another request arrives and its wake-up is dropped by SQS.
    let passes = 0;
    const drain = async () => {
      passes++;
      started.push(...waiting.splice(0));
      if (passes === 1) {
        clock.set(T0 + 700);
        await submit("r2");
      }
    };
    const sleeps: number[] = [];
    const ran = await dispatchUntilSettled(message!, drain, {
      clock,
      sleep: async (ms) => {
        sleeps.push(ms);
        clock.advance(ms);
      },
    });
    await sqs.send(
      new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: first?.ReceiptHandle }),
    );

    // Assess: SQS really dropped r2's wake-up (no message left to deliver it) …
    expect(await receiveAll(url)).toEqual([]);
    // … and the settling pass still started r2.
    expect(ran).toBe(2);
    expect(sleeps).toEqual([T0 + 1000 + CLOCK_SKEW_MARGIN_MS - (T0 + 700)]);
    expect(started).toEqual(["r1", "r2"]);
    expect(waiting).toEqual([]);
  });

  it("loses no wake-up when the dispatcher waits for the settle instant and runs one pass", async () => {
    // Prepare: as above, the queue's state is a list the dispatcher drains.
    const url = await dispatchQueue();
    const clock = new FakeClock(T0 + 200);
    const trigger = new SqsDispatchTrigger({ client: sqs, queueUrl: url, clock });
    const waiting: string[] = [];
    const passes: { at: number; started: string[] }[] = [];
    const submit = async (id: string) => {
      waiting.push(id);
      await trigger.wake("finetune");
    };
    await submit("r1");
    const [first] = await receiveAll(url, false);
    const message = parseDispatchMessage(first?.Body ?? "");
    expect(message).not.toBeNull();

    // Act: while the dispatcher holds the message and waits, in the same 1 s bucket,
    // another request arrives and its wake-up is dropped by SQS.
    const waited = await dispatchWhenSettled(
      message!,
      async () => {
        passes.push({ at: clock.now(), started: waiting.splice(0) });
      },
      {
        clock,
        sleep: async (ms) => {
          clock.set(T0 + 700);
          await submit("r2");
          clock.set(T0 + 200 + ms);
        },
      },
    );
    await sqs.send(
      new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: first?.ReceiptHandle }),
    );

    // Assess: SQS really dropped r2's wake-up, and the one pass, begun at the settle
    // instant, started both.
    expect(await receiveAll(url)).toEqual([]);
    expect(waited).toBe(1000 + CLOCK_SKEW_MARGIN_MS - 200);
    expect(passes).toEqual([{ at: T0 + 1000 + CLOCK_SKEW_MARGIN_MS, started: ["r1", "r2"] }]);
  });

  it("delivers a wake-up of the next bucket as a new message", async () => {
    const url = await dispatchQueue();
    const clock = new FakeClock(T0 + 200);
    const trigger = new SqsDispatchTrigger({ client: sqs, queueUrl: url, clock });

    await trigger.wake("finetune");
    const [first] = await receiveAll(url, false);
    clock.set(T0 + 1200);
    await trigger.wake("finetune");
    await sqs.send(
      new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: first?.ReceiptHandle }),
    );

    const rest = await receiveAll(url);
    expect(rest).toHaveLength(1);
    expect(parseDispatchMessage(rest[0]?.Body ?? "")?.settleAt).toBe(
      T0 + 2000 + CLOCK_SKEW_MARGIN_MS,
    );
  });
});

describe("dispatchUntilSettled", () => {
  it("runs one pass when the message is consumed after its settle instant", async () => {
    const clock = new FakeClock(T0 + 5000);
    const queues: string[] = [];
    const ran = await dispatchUntilSettled(
      { queue: "q", settleAt: T0 + 1250 },
      async (q) => {
        queues.push(q);
      },
      { clock, sleep: async () => expect.fail("must not wait") },
    );
    expect(ran).toBe(1);
    expect(queues).toEqual(["q"]);
  });

  it("does not wait when the first pass outlasted the settle instant", async () => {
    const clock = new FakeClock(T0);
    const ran = await dispatchUntilSettled(
      { queue: "q", settleAt: T0 + 1250 },
      async () => {
        clock.advance(3000);
      },
      { clock, sleep: async () => expect.fail("must not wait") },
    );
    expect(ran).toBe(2);
  });
});

describe("dispatchWhenSettled", () => {
  it("runs its one pass at once when the message is consumed after its settle instant", async () => {
    const clock = new FakeClock(T0 + 5000);
    const queues: string[] = [];
    const waited = await dispatchWhenSettled(
      { queue: "q", settleAt: T0 + 1250 },
      async (q) => {
        queues.push(q);
      },
      { clock, sleep: async () => expect.fail("must not wait") },
    );
    expect(waited).toBe(0);
    expect(queues).toEqual(["q"]);
  });
});

describe("dispatchMessageFor and parseDispatchMessage", () => {
  it("round-trips a wake-up", () => {
    const m = dispatchMessageFor("finetune", T0 + 10, 500);
    expect(m.groupId).toBe("finetune");
    expect(m.deduplicationId).toBe(`finetune#500:${Math.floor((T0 + 10) / 500)}`);
    expect(m.deduplicationId.length).toBeLessThanOrEqual(128);
    expect(parseDispatchMessage(m.body)).toEqual({
      queue: "finetune",
      settleAt: Math.floor((T0 + 10) / 500) * 500 + 500 + CLOCK_SKEW_MARGIN_MS,
    });
  });

  it("accepts a hand-written wake-up without settleAt as needing one pass", () => {
    expect(parseDispatchMessage('{"queue":"finetune","extra":1}')).toEqual({
      queue: "finetune",
      settleAt: 0,
    });
  });

  it("returns null for bodies that are not wake-ups", () => {
    for (const body of ["", "nope", "null", "[]", '{"queue":"Bad Name"}', '{"queue":1}']) {
      expect(parseDispatchMessage(body)).toBeNull();
    }
    expect(parseDispatchMessage('{"queue":"q","settleAt":-1}')).toBeNull();
  });

  it("refuses a window that is not a positive integer", () => {
    expect(() => new SqsDispatchTrigger({ client: sqs, queueUrl: "u", windowMs: 0 })).toThrow(
      RangeError,
    );
  });
});
