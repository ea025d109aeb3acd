import { PutEventsCommand } from "@aws-sdk/client-eventbridge";
import { beforeAll, describe, expect, it } from "vitest";
import { STOP_REASONS } from "../../../functions/adapters/aws/batch-compute.ts";
import { createHarness, type Harness } from "./harness.ts";
import { jobEventsBus } from "./job-events-bus.ts";

let h: Harness;

beforeAll(async () => {
  h = await createHarness("hevt");
});

/** Submits to finetune and dispatches it: a STARTING request with its Batch job. */
async function started(): Promise<string> {
  const id = await h.submit("finetune", { input: { run: Math.random() } });
  await h.drainDispatch();
  expect(await h.jobsOf(id)).toHaveLength(1);
  return id;
}

/** Submits, dispatches and reports RUNNING: a RUNNING request at attempt 1. */
async function running(): Promise<string> {
  const id = await started();
  await h.deliverEvents(await h.batchEvent(id, "RUNNING"));
  expect((await h.get(id)).status).toBe("RUNNING");
  return id;
}

describe("cancel through the HTTP handler", () => {
  it("cancels a QUEUED request at once and gives its place back", async () => {
    // Prepare
    const id = await h.submit("small", { input: "wait" });
    const before = await h.counts("small");

    // Act
    const res = await h.api("POST", `/v1/requests/${id}/cancel`);
    const again = await h.api("POST", `/v1/requests/${id}/cancel`);

    // Assess
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({
      status: "CANCELLED",
      cancelRequested: true,
      error: { code: "cancelled" },
    });
    expect(again.status).toBe(202);
    expect(again.body).toEqual(res.body);
    expect(await h.counts("small")).toEqual({ queued: before.queued - 1, running: 0 });
    await h.drainDispatch();
    expect(await h.jobsOf(id)).toEqual([]);
  });

  it("terminates the Batch job of a RUNNING request and cancels it once the job has stopped", async () => {
    // Prepare
    const id = await running();
    const jobId = (await h.jobsOf(id))[0]?.jobId;
    const calls = h.batchCalls.length;

    // Act
    const res = await h.api("POST", `/v1/requests/${id}/cancel`);

    // Assess: asked to stop, still holding its slot
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ status: "RUNNING", cancelRequested: true });
    expect(h.batchCalls.slice(calls).filter((c) => c.name === "TerminateJobCommand")).toEqual([
      { name: "TerminateJobCommand", input: { jobId, reason: STOP_REASONS.cancel } },
    ]);
    expect((await h.counts("finetune")).running).toBeGreaterThanOrEqual(1);

    // Act: Batch reports the terminated job as FAILED with the terminate reason
    const running0 = (await h.counts("finetune")).running;
    await h.deliverEvents(
      await h.batchEvent(id, "FAILED", { statusReason: STOP_REASONS.cancel, exitCode: 143 }),
    );

    // Assess
    const done = await h.api("GET", `/v1/requests/${id}`);
    expect(done.body).toMatchObject({ status: "CANCELLED", error: { code: "cancelled" } });
    expect((await h.counts("finetune")).running).toBe(running0 - 1);
    const { stored, counted } = await h.countersAndRecount();
    expect(stored).toEqual(counted);
  });
});

describe("late, duplicate and out-of-order Batch events", () => {
  it("ignores RUNNING after SUCCEEDED, a second SUCCEEDED and a FAILED of the same finished job", async () => {
    // Prepare
    const id = await running();
    await h.deliverEvents(await h.batchEvent(id, "SUCCEEDED"));
    const before = await h.get(id);
    const counters = await h.counts("finetune");
    expect(before.status).toBe("SUCCEEDED");

    // Act
    const late = await h.deliverEvents(
      await h.batchEvent(id, "RUNNING"),
      await h.batchEvent(id, "SUCCEEDED"),
      await h.batchEvent(id, "FAILED", { exitCode: 1 }),
    );

    // Assess
    expect(late.failed).toEqual([]);
    expect(await h.get(id)).toEqual(before);
    expect(await h.counts("finetune")).toEqual(counters);
  });

  it("ignores events of unknown jobs, foreign job names and other job queues", async () => {
    // Prepare
    const id = await running();
    const before = await h.get(id);
    const counters = await h.counts("finetune");
    const unknown = await h.batchEvent(id, "SUCCEEDED", {
      jobName: "req_01JD3K8Q7V2X5N9M4B6C0T1Y2Z",
    });
    const foreignName = await h.batchEvent(id, "SUCCEEDED", { jobName: "nightly-etl" });
    const foreignQueue = await h.batchEvent(id, "SUCCEEDED", {
      jobQueue: `${h.jobQueueArn}-other`,
    });

    // Act
    const d = await h.deliverEvents(unknown, foreignName, foreignQueue);

    // Assess
    expect(d.failed).toEqual([]);
    expect(await h.get(id)).toEqual(before);
    expect(await h.counts("finetune")).toEqual(counters);
    await h.deliverEvents(await h.batchEvent(id, "SUCCEEDED"));
  });

  it("follows a Batch retry to SUCCEEDED at attempt 2, ignoring a stale attempt's events", async () => {
    // Prepare
    const id = await running();

    // Act: attempt 1 failed and Batch queued attempt 2
    await h.deliverEvents(await h.batchEvent(id, "RUNNABLE", { attempts: 1 }));
    const retrying = await h.get(id);
    await h.deliverEvents(await h.batchEvent(id, "RUNNING", { attempts: 1 }));
    const second = await h.get(id);
    // Late news of attempt 1, and of another job of the request, change nothing.
    await h.deliverEvents(
      await h.batchEvent(id, "RUNNING", { attempts: 0 }),
      await h.batchEvent(id, "FAILED", { attempts: 1, jobId: crypto.randomUUID() }),
    );
    const afterStale = await h.get(id);
    await h.deliverEvents(await h.batchEvent(id, "SUCCEEDED", { attempts: 2 }));

    // Assess
    expect(retrying).toMatchObject({ status: "STARTING", attempt: 2 });
    expect(second).toMatchObject({ status: "RUNNING", attempt: 2 });
    expect(afterStale).toEqual(second);
    const done = await h.api("GET", `/v1/requests/${id}`);
    expect(done.body).toMatchObject({ status: "SUCCEEDED", attempt: 2, error: null });
    expect(await h.jobsOf(id)).toHaveLength(1);
  });

  it("fails a request whose attempt exceeded its timeout with code timeout", async () => {
    // Prepare
    const id = await running();

    // Act
    await h.deliverEvents(
      await h.batchEvent(id, "FAILED", {
        statusReason: "Job attempt duration exceeded timeout",
        exitCode: 143,
      }),
    );

    // Assess
    const res = await h.api("GET", `/v1/requests/${id}`);
    expect(res.body).toMatchObject({ status: "FAILED", error: { code: "timeout" } });
    const result = await h.api("GET", `/v1/requests/${id}/result`);
    expect(result.body).toMatchObject({ status: 409, code: "no_result" });
  });
});

describe("the EventBridge rule the stack deploys", () => {
  it("routes this job queue's Batch state changes to the events handler and no others", async () => {
    // Prepare: the rule's pattern exactly as CDK synthesizes it, on a bus of our own
    const { eb, bus, rules } = await jobEventsBus(h, "bus");
    expect(rules).toHaveLength(1);
    const id = await started();
    const ours = await h.batchEvent(id, "RUNNING");
    const foreign = await h.batchEvent(id, "SUCCEEDED", { jobQueue: `${h.jobQueueArn}-other` });
    const entry = (e: any) => ({
      EventBusName: bus,
      Source: e.source,
      DetailType: e["detail-type"],
      Resources: e.resources,
      Time: new Date(e.time),
      Detail: JSON.stringify(e.detail),
    });

    // Act: Batch publishes (moto emits nothing itself); the rule delivers to SQS
    const put = await eb.send(new PutEventsCommand({ Entries: [entry(foreign), entry(ours)] }));
    const d = await h.drainEvents(1);

    // Assess: only our queue's event matched, and the handler applied it
    expect(put.FailedEntryCount).toBe(0);
    expect(d.received).toBe(1);
    expect(d.failed).toEqual([]);
    expect(d.bodies[0]).toMatchObject({
      source: "aws.batch",
      "detail-type": "Batch Job State Change",
      detail: { jobName: id, jobQueue: h.jobQueueArn, status: "RUNNING" },
    });
    expect((await h.get(id)).status).toBe("RUNNING");
    await h.deliverEvents(await h.batchEvent(id, "SUCCEEDED"));
  });
});
