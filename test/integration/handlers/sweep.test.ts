import { DeleteMessageCommand, SQSClient } from "@aws-sdk/client-sqs";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { LOST_JOB_AFTER_MS, SWEEP_METRIC_NAMES } from "../../../functions/handlers/sweep.ts";
import { awsClientConfig } from "../aws.ts";
import { crashOn, createHarness, type Harness } from "./harness.ts";

let h: Harness;

beforeAll(async () => {
  h = await createHarness("hsweep");
});

afterEach(() => {
  vi.restoreAllMocks();
});

describe("the repair sweep handler", () => {
  it("applies the job states whose events were missed, read with DescribeJobs", async () => {
    // Prepare: two dispatched requests, one of them told RUNNING; no further events come
    const quiet = await h.submit("finetune", { input: { quiet: 1 } });
    const half = await h.submit("finetune", { input: { quiet: 2 } });
    await h.drainDispatch();
    await h.deliverEvents(await h.batchEvent(half, "RUNNING"));
    const calls = h.batchCalls.length;

    // Act: moto's jobs are SUCCEEDED the moment they are submitted
    const report = await h.sweep();

    // Assess
    expect(report.reconciled).toBe(2);
    expect(h.batchCalls.slice(calls).map((c) => c.name)).toContain("DescribeJobsCommand");
    expect(h.batchCalls.slice(calls).map((c) => c.name)).not.toContain("SubmitJobCommand");
    for (const id of [quiet, half]) {
      expect(await h.get(id)).toMatchObject({ status: "SUCCEEDED", attempt: 1, error: null });
      expect(await h.jobsOf(id)).toHaveLength(1);
    }
    const { stored, counted } = await h.countersAndRecount();
    expect(stored).toEqual(counted);
    expect(report.counterDrift).toEqual([]);
  });

  it("expires a request that waited longer than its queue TTL", async () => {
    // Prepare
    const id = await h.submit("small", { input: { ttl: true }, queueTtlSeconds: 60 });
    const before = await h.counts("small");
    h.advance(61_000);

    // Act
    const report = await h.sweep();

    // Assess
    expect(report.expired).toBe(1);
    const res = await h.api("GET", `/v1/requests/${id}`);
    expect(res.body).toMatchObject({ status: "EXPIRED", error: { code: "expired" } });
    expect(await h.counts("small")).toEqual({ queued: before.queued - 1, running: 0 });
    await h.drainDispatch();
    expect(await h.jobsOf(id)).toEqual([]);
  });

  it("wakes a queue that has work and free slots but lost its wake-up", async () => {
    // Prepare: the submit's wake-up is consumed and lost (e.g. dead-lettered)
    const id = await h.submit("finetune", { input: { wake: "lost" } });
    const sqs = new SQSClient(awsClientConfig());
    for (const m of await h.receiveDispatch()) {
      await sqs.send(
        new DeleteMessageCommand({
          QueueUrl: h.queues.dispatchQueueUrl,
          ReceiptHandle: m.ReceiptHandle,
        }),
      );
    }
    expect(await h.peekDispatch()).toEqual([]);

    // Act
    const report = await h.sweep();
    const waiting = await h.peekDispatch();
    await h.drainDispatch();

    // Assess
    expect(report.woken).toEqual(["finetune"]);
    expect(waiting).toHaveLength(1);
    expect(waiting[0]?.Attributes?.MessageGroupId).toBe("finetune");
    expect(JSON.parse(waiting[0]?.Body ?? "{}")).toMatchObject({ queue: "finetune" });
    expect(await h.get(id)).toMatchObject({ status: "STARTING", attempt: 1 });
    expect(await h.jobsOf(id)).toHaveLength(1);
    await h.sweep();
    expect((await h.get(id)).status).toBe("SUCCEEDED");
  });

  it("reports stuck STARTING requests and the oldest wait per queue, and publishes them as metrics", async () => {
    // Prepare: a claim whose dispatcher died before launching, and a request waiting in small
    const stuck = await h.submit("finetune", { input: { stuck: 1 } });
    crashOn(h.clients.dynamo, "TransactWriteItemsCommand", { when: "after" });
    await h.drainDispatch();
    expect(await h.get(stuck)).toMatchObject({ status: "STARTING", jobRef: null });
    const waiting = await h.submit("small", { input: { waiting: 1 } });
    h.advance(120_000);
    const printed: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    vi.spyOn(process.stdout, "write").mockImplementation((chunk: any, ...rest: any[]) => {
      printed.push(String(chunk));
      return write(chunk, ...rest);
    });

    // Act: no relaunch yet (the default waits 10 minutes)
    const report = await h.sweep({
      lostJobAfterMs: LOST_JOB_AFTER_MS,
      stuckStartingAfterMs: 60_000,
    });
    vi.restoreAllMocks();

    // Assess
    expect(report.relaunched).toBe(0);
    expect(report.health.finetune?.stuckStarting).toBe(1);
    expect(report.health.small?.oldestQueuedAgeSeconds).toBeGreaterThanOrEqual(120);
    const emf = printed
      .flatMap((p) => p.split("\n"))
      .filter((l) => l.includes('"_aws"'))
      .map((l) => JSON.parse(l));
    expect(emf).toContainEqual(
      expect.objectContaining({ queue: "finetune", [SWEEP_METRIC_NAMES.stuckStarting]: 1 }),
    );
    expect(emf).toContainEqual(
      expect.objectContaining({
        queue: "small",
        [SWEEP_METRIC_NAMES.oldestQueuedAge]: expect.any(Number),
      }),
    );

    // Clean up: relaunch and settle, cancel the waiting one
    await h.sweep();
    await h.sweep();
    expect(await h.get(stuck)).toMatchObject({ status: "SUCCEEDED" });
    expect(await h.jobsOf(stuck)).toHaveLength(1);
    expect((await h.api("POST", `/v1/requests/${waiting}/cancel`)).status).toBe(202);
  });
});
