/**
 * A crash injected at each write of each flow (an SDK middleware that fails the Nth call of
 * one command, then removes itself), the failure surfacing where it would on AWS (a 500, or
 * an SQS record left for redelivery), then SQS redelivery and the repair sweep: the request
 * must end where it should, nothing lost, counters equal to a recount, and never a second
 * Batch job for one request.
 */
import { beforeAll, describe, expect, it } from "vitest";
import type { RequestStatus } from "../../../functions/core/request.ts";
import { crashOn, createHarness, type Harness } from "./harness.ts";

let h: Harness;

beforeAll(async () => {
  h = await createHarness("hcrash");
});

async function assertConverged(id: string, status: RequestStatus, tenant = "acme") {
  const res = await h.api("GET", `/v1/requests/${id}`, { tenant });
  expect(res.body.status).toBe(status);
  expect(await h.jobsOf(id)).toHaveLength(1);
  const { stored, counted } = await h.countersAndRecount();
  expect(stored).toEqual(counted);
}

/** Sweeps until nothing in flight is left to reconcile (moto's jobs are SUCCEEDED at once). */
async function sweepUntilSettled(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    h.advance(1000);
    const report = await h.sweep();
    if (report.reconciled === 0 && report.relaunched === 0 && report.woken.length === 0) return;
    await h.drainDispatch();
  }
}

describe("crash during submit", () => {
  it("answers 500 when the transaction's answer is lost; the retried key replays the stored request", async () => {
    // Prepare
    const key = `crash-${Date.now()}`;
    const body = { input: { lost: "answer" } };
    const crash = crashOn(h.clients.dynamo, "TransactWriteItemsCommand", { when: "after" });

    // Act
    const first = await h.api("POST", "/v1/queues/finetune/requests", {
      body,
      headers: { "Idempotency-Key": key },
    });
    const retry = await h.api("POST", "/v1/queues/finetune/requests", {
      body,
      headers: { "Idempotency-Key": key },
    });
    await h.drainDispatch();
    await sweepUntilSettled();

    // Assess
    expect(crash.fired).toBe(true);
    expect(first.status).toBe(500);
    expect(first.body).toMatchObject({ status: 500, code: "internal" });
    expect(retry.status).toBe(200);
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    await assertConverged(retry.body.id, "SUCCEEDED");
  });

  it("answers 500 when the wake-up fails after the write; the sweep wakes the queue and the request runs", async () => {
    // Prepare
    const tenant = `t-${Date.now()}`;
    const crash = crashOn(h.clients.sqs, "SendMessageCommand", { when: "before" });

    // Act
    const res = await h.api("POST", "/v1/queues/finetune/requests", {
      tenant,
      body: { input: { wake: "lost" } },
    });
    const list = await h.api("GET", "/v1/queues/finetune/requests", { tenant });
    const nothingToDispatch = await h.drainDispatch();
    const report = await h.sweep();
    const woken = await h.drainDispatch();
    await sweepUntilSettled();

    // Assess: the caller saw a 500, yet the request was kept and runs once
    expect(crash.fired).toBe(true);
    expect(res.status).toBe(500);
    expect(list.body.items).toHaveLength(1);
    const id = list.body.items[0].id as string;
    expect(nothingToDispatch.received).toBe(0);
    expect(report.woken).toContain("finetune");
    expect(woken.received).toBeGreaterThanOrEqual(1);
    await assertConverged(id, "SUCCEEDED", tenant);
  });
});

describe("crash during dispatch", () => {
  it("relaunches a request claimed by a dispatcher that died right after the claim transaction", async () => {
    // Prepare
    const id = await h.submit("finetune", { input: { claim: "crash" } });
    const crash = crashOn(h.clients.dynamo, "TransactWriteItemsCommand", { when: "after" });

    // Act: the claim commits, the invocation fails; SQS redelivers its message
    const failed = await h.drainDispatch();
    const claimed = await h.get(id);
    await h.redeliver(h.queues.dispatchQueueUrl, failed.failed);
    const redelivered = await h.drainDispatch();
    h.advance(1000);
    const report = await h.sweep();
    const relaunched = await h.get(id);
    await sweepUntilSettled();

    // Assess
    expect(crash.fired).toBe(true);
    // One record in the batch, so Powertools fails the whole invocation.
    expect(failed.threw).toBe(true);
    expect(failed.failed).toHaveLength(1);
    expect(claimed).toMatchObject({ status: "STARTING", attempt: 1, jobRef: null });
    expect(redelivered).toMatchObject({ received: 1, failed: [] });
    expect(report.relaunched).toBe(1);
    expect(relaunched.jobRef).toBe((await h.jobsOf(id))[0]?.jobId);
    await assertConverged(id, "SUCCEEDED");
  });

  it("adopts the job a dispatcher submitted but could not record, never submitting a second", async () => {
    // Prepare
    const id = await h.submit("finetune", { input: { jobRef: "lost" } });
    // The first UpdateItem of a dispatch is the one recording the job id.
    const crash = crashOn(h.clients.dynamo, "UpdateItemCommand", { when: "before" });

    // Act
    const failed = await h.drainDispatch();
    const unrecorded = await h.get(id);
    const jobs = await h.jobsOf(id);
    await h.redeliver(h.queues.dispatchQueueUrl, failed.failed);
    await h.drainDispatch();
    h.advance(1000);
    const report = await h.sweep();
    const adopted = await h.get(id);
    await sweepUntilSettled();

    // Assess
    expect(crash.fired).toBe(true);
    expect(failed.failed).toHaveLength(1);
    expect(unrecorded).toMatchObject({ status: "STARTING", jobRef: null });
    expect(jobs).toHaveLength(1);
    expect(report.relaunched).toBe(1);
    expect(adopted.jobRef).toBe(jobs[0]?.jobId);
    await assertConverged(id, "SUCCEEDED");
  });
});

describe("crash while applying a Batch event", () => {
  async function runningRequest(queue: string): Promise<string> {
    const id = await h.submit(queue, { input: { q: queue, r: Math.random() } });
    await h.drainDispatch();
    await h.deliverEvents(await h.batchEvent(id, "RUNNING"));
    expect((await h.get(id)).status).toBe("RUNNING");
    return id;
  }

  it("applies RUNNING on redelivery after the write failed between read and write", async () => {
    // Prepare
    const id = await h.submit("finetune", { input: { ev: "running" } });
    await h.drainDispatch();
    const before = await h.get(id);
    const crash = crashOn(h.clients.dynamo, "UpdateItemCommand", { when: "before" });

    // Act
    const failed = await h.deliverEvents(await h.batchEvent(id, "RUNNING"));
    const unchanged = await h.get(id);
    await h.redeliver(h.queues.eventsQueueUrl, failed.failed);
    const redelivered = await h.drainEvents(1);

    // Assess
    expect(crash.fired).toBe(true);
    expect(failed.failed).toHaveLength(1);
    expect(unchanged).toEqual(before);
    expect(redelivered.failed).toEqual([]);
    expect((await h.get(id)).status).toBe("RUNNING");
    await h.deliverEvents(await h.batchEvent(id, "SUCCEEDED"));
    await assertConverged(id, "SUCCEEDED");
  });

  it("finishes on redelivery after the finishing transaction failed", async () => {
    // Prepare
    const id = await runningRequest("finetune");
    const before = await h.get(id);
    const crash = crashOn(h.clients.dynamo, "TransactWriteItemsCommand", { when: "before" });

    // Act
    const failed = await h.deliverEvents(await h.batchEvent(id, "SUCCEEDED"));
    const unchanged = await h.get(id);
    await h.redeliver(h.queues.eventsQueueUrl, failed.failed);
    await h.drainEvents(1);

    // Assess
    expect(crash.fired).toBe(true);
    expect(failed.failed).toHaveLength(1);
    expect(unchanged).toEqual(before);
    await assertConverged(id, "SUCCEEDED");
  });

  const lostWakeUps = [
    { what: "the finishing transaction's answer is lost", command: "TransactWriteItemsCommand" },
    { what: "the wake-up after the finish fails", command: "SendMessageCommand" },
  ] as const;
  for (const { what, command } of lostWakeUps) {
    it(`starts the next waiting request through the sweep when ${what}`, async () => {
      // Prepare: small runs one at a time; a second request waits behind the first
      const first = await runningRequest("small");
      const next = await h.submit("small", { input: { waiting: command } });
      await h.drainDispatch();
      expect((await h.get(next)).status).toBe("QUEUED");
      const crash =
        command === "SendMessageCommand"
          ? crashOn(h.clients.sqs, command, { when: "before" })
          : crashOn(h.clients.dynamo, command, { when: "after" });

      // Act
      const failed = await h.deliverEvents(await h.batchEvent(first, "SUCCEEDED"));
      await h.redeliver(h.queues.eventsQueueUrl, failed.failed);
      const redelivered = await h.drainEvents(1);
      const stillWaiting = await h.get(next);
      const report = await h.sweep();
      await h.drainDispatch();
      const started = await h.get(next);
      await sweepUntilSettled();

      // Assess
      expect(crash.fired).toBe(true);
      expect(failed.failed).toHaveLength(1);
      expect(redelivered.failed).toEqual([]);
      expect(stillWaiting.status).toBe("QUEUED");
      expect(report.woken).toContain("small");
      expect(started).toMatchObject({ status: "STARTING", attempt: 1 });
      await assertConverged(first, "SUCCEEDED");
      await assertConverged(next, "SUCCEEDED");
    });
  }
});
