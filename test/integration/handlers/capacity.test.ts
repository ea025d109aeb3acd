/**
 * SPEC §2 `no_capacity` on AWS: a request whose Batch job has waited in RUNNABLE for over
 * two minutes says so, with Batch's reason, through the real handlers on the emulator's
 * DynamoDB, SQS and EventBridge. Batch's RUNNABLE and "job queue blocked" events are built
 * from the fixtures (moto emits none). moto's Batch jobs are SUCCEEDED the moment they are
 * submitted, so the sweep's DescribeJobs answers for a RUNNABLE job are given by
 * aws-sdk-client-mock on one BatchClient instance, for that call's shape and errors only.
 */
import {
  BatchClient,
  DescribeJobsCommand,
  type DescribeJobsCommandInput,
  type JobDetail,
} from "@aws-sdk/client-batch";
import { PutEventsCommand } from "@aws-sdk/client-eventbridge";
import { mockClient } from "aws-sdk-client-mock";
import { beforeAll, describe, expect, it } from "vitest";
import { BatchCompute } from "../../../functions/adapters/aws/batch-compute.ts";
import { FIRST_ATTEMPT_ENV } from "../../../functions/adapters/aws/batch-events.ts";
import { describeRequest } from "../../../functions/cli/format.ts";
import type { QueueConfigInput } from "../../../functions/config/schema.ts";
import { NO_CAPACITY_AFTER_MS } from "../../../functions/core/request.ts";
import { createSweepHandler, LOST_JOB_AFTER_MS } from "../../../functions/handlers/sweep.ts";
import { awsClientConfig } from "../aws.ts";
import {
  type BatchEventOptions,
  createHarness,
  DEFAULT_QUEUES,
  type Harness,
  recordCommands,
} from "./harness.ts";
import { jobEventsBus } from "./job-events-bus.ts";

const REASON =
  "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Service cannot fulfill the capacity requested for instance type [g5.xlarge]";
const MISCONFIGURED =
  "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - The job resource requirement is higher than the compute environments can meet";

/** Slots enough that every test's requests stay STARTING side by side. */
const QUEUES: Record<string, QueueConfigInput> = {
  finetune: { command: ["python3", "train.py"], ...DEFAULT_QUEUES.finetune, maxRunning: 50 },
};

let h: Harness;

beforeAll(async () => {
  h = await createHarness("hcap", QUEUES);
});

/** Submits to finetune and dispatches it: a STARTING request with its Batch job. */
async function started(): Promise<{ id: string; job: JobDetail }> {
  const id = await h.submit("finetune", { input: { run: Math.random() } });
  await h.drainDispatch();
  const [summary] = await h.jobsOf(id);
  if (!summary?.jobId) throw new Error("no job submitted");
  return { id, job: await h.describeJob(summary.jobId) };
}

/**
 * A Batch event for the request's job (harness.ts batchEvent) with its times on the handlers'
 * clock, which earlier tests moved forward: Batch and the handlers agree on the time.
 */
async function event(id: string, status: string, opts: BatchEventOptions = {}): Promise<any> {
  const e = await h.batchEvent(id, status, opts);
  // Tests move the clock by whole seconds; rounding drops the ms between the two reads.
  const offset = Math.round((h.deps.clock.now() - Date.now()) / 1000) * 1000;
  const d = e.detail;
  for (const key of ["createdAt", "startedAt", "stoppedAt"]) {
    if (typeof d[key] === "number") d[key] += offset;
  }
  for (const a of d.attempts) {
    a.startedAt += offset;
    a.stoppedAt += offset;
  }
  e.time = new Date(Date.parse(e.time) + offset).toISOString();
  return e;
}

/** Batch's "job queue blocked" event for the request's job: its RUNNABLE detail with a reason. */
async function blocked(id: string, reason = REASON): Promise<any> {
  const e = await event(id, "RUNNABLE", { statusReason: reason });
  e["detail-type"] = "Batch Job Queue Blocked";
  e.resources = [e.detail.jobArn, e.detail.jobQueue];
  return e;
}

/** The request as GET /v1/requests/{id} answers it. */
async function status(id: string): Promise<any> {
  const res = await h.api("GET", `/v1/requests/${id}`);
  expect(res.status).toBe(200);
  return res.body;
}

/** How many writes the handlers made of each DynamoDB command since `sent` was taken. */
function writes(sent: { name: string }[]): string[] {
  return sent.map((c) => c.name).filter((n) => n !== "GetItemCommand" && n !== "QueryCommand");
}

describe("Batch events of a job waiting for an instance", () => {
  it("answers starting, then no_capacity with Batch's reason once the job waited two minutes", async () => {
    // Prepare
    const { id } = await started();
    const e = await blocked(id);

    // Act
    const d = await h.deliverEvents(e);
    const early = await status(id);
    h.advance(NO_CAPACITY_AFTER_MS + 1_000);
    const late = await status(id);

    // Assess
    expect(d.failed).toEqual([]);
    expect(early).toMatchObject({ status: "STARTING", waitReason: "starting", waitDetail: null });
    const since = new Date(e.detail.createdAt).toISOString();
    expect(late).toMatchObject({
      status: "STARTING",
      waitReason: "no_capacity",
      waitDetail: `waiting for an instance since ${since}: ${REASON}`,
    });
    // `longrun status` prints the same answer.
    expect(describeRequest(late)).toContain(
      `waiting          no_capacity: waiting for an instance since ${since}: ${REASON}`,
    );
    expect((await h.get(id)).capacityWait).toEqual({
      attempt: 1,
      since: e.detail.createdAt,
      reason: REASON,
      endedAt: null,
    });
  });

  it("writes nothing for the usual start: a fresh RUNNABLE, then STARTING, then RUNNING", async () => {
    // Prepare
    const { id } = await started();
    const sent = recordCommands(h.clients.dynamo);

    // Act
    await h.deliverEvents(await event(id, "RUNNABLE"));
    await h.deliverEvents(await event(id, "STARTING"));
    const before = writes(sent);
    await h.deliverEvents(await event(id, "RUNNING"));

    // Assess: the RUNNABLE and STARTING events only read the request, as before
    expect(before).toEqual([]);
    expect(writes(sent)).toEqual(["UpdateItemCommand"]);
    expect(await h.get(id)).not.toHaveProperty("capacityWait");
    expect(await status(id)).toMatchObject({ status: "RUNNING", waitReason: null });
  });

  it("applies a duplicate once and keeps the first wait's start", async () => {
    // Prepare
    const { id } = await started();
    await h.deliverEvents(await blocked(id));
    const first = await h.store.get(id);
    const sent = recordCommands(h.clients.dynamo);

    // Act
    const d = await h.deliverEvents(await blocked(id), await blocked(id));

    // Assess
    expect(d.failed).toEqual([]);
    expect(writes(sent)).toEqual([]);
    expect(await h.store.get(id)).toEqual(first);
  });

  it("changes nothing for a late RUNNABLE after RUNNING, or once the job had its instance", async () => {
    // Prepare: one request already RUNNING, one whose job reached Batch's STARTING
    const { id: runningId } = await started();
    await h.deliverEvents(await event(runningId, "RUNNING"));
    const { id: placedId } = await started();
    await h.deliverEvents(await blocked(placedId, MISCONFIGURED));
    await h.deliverEvents(await event(placedId, "STARTING"));
    const placed = await h.get(placedId);

    // Act: the late events arrive (out of order)
    await h.deliverEvents(await blocked(runningId), await blocked(placedId));
    h.advance(10 * 60_000);

    // Assess
    expect(await h.get(runningId)).not.toHaveProperty("capacityWait");
    expect(await status(runningId)).toMatchObject({ status: "RUNNING", waitReason: null });
    expect(placed.capacityWait).toMatchObject({
      reason: MISCONFIGURED,
      endedAt: expect.any(Number),
    });
    expect(await h.get(placedId)).toEqual(placed);
    expect(await status(placedId)).toMatchObject({ waitReason: "starting", waitDetail: null });
  });

  it("ignores a RUNNABLE of an earlier attempt once Batch retries the job", async () => {
    // Prepare: Batch retried the job; its second attempt waits, and says why
    const { id } = await started();
    await h.deliverEvents(await event(id, "RUNNABLE", { attempts: 1 }));
    expect((await h.get(id)).attempt).toBe(2);

    // Act: the first attempt's blocked event comes late
    await h.deliverEvents(await blocked(id));
    h.advance(10 * 60_000);

    // Assess
    expect(await h.get(id)).not.toHaveProperty("capacityWait");
    expect(await status(id)).toMatchObject({ attempt: 2, waitReason: "starting" });
  });
});

describe("the EventBridge rule the stack deploys", () => {
  it("sends Batch's job queue blocked events to the events handler", async () => {
    // Prepare: the rule's pattern as CDK synthesizes it, on a bus of our own
    const { eb, bus } = await jobEventsBus(h, "capbus");
    const { id } = await started();
    const e = await blocked(id);

    // Act: Batch publishes (moto emits nothing itself); the rule delivers to SQS
    const put = await eb.send(
      new PutEventsCommand({
        Entries: [
          {
            EventBusName: bus,
            Source: e.source,
            DetailType: e["detail-type"],
            Resources: e.resources,
            Time: new Date(e.time),
            Detail: JSON.stringify(e.detail),
          },
        ],
      }),
    );
    const d = await h.drainEvents(1);
    h.advance(NO_CAPACITY_AFTER_MS + 1_000);

    // Assess
    expect(put.FailedEntryCount).toBe(0);
    expect(d.failed).toEqual([]);
    expect(d.bodies[0]).toMatchObject({ "detail-type": "Batch Job Queue Blocked" });
    expect(await status(id)).toMatchObject({ waitReason: "no_capacity" });
    expect((await status(id)).waitDetail).toContain(REASON);
  });
});

describe("the repair sweep", () => {
  let s: Harness;

  beforeAll(async () => {
    // A table of its own: the sweep looks at every active request of its table.
    s = await createHarness("hcapsw", QUEUES);
  });

  /** A BatchCompute over a client whose DescribeJobs answers what `jobs` says. */
  function sweepWith(jobs: (input: DescribeJobsCommandInput) => JobDetail[] | Error) {
    const client = new BatchClient(awsClientConfig());
    const mock = mockClient(client);
    mock.on(DescribeJobsCommand).callsFake((input: DescribeJobsCommandInput) => {
      const out = jobs(input);
      if (out instanceof Error) throw out;
      return { jobs: out };
    });
    const compute = new BatchCompute({
      client,
      jobQueueArn: s.jobQueueArn,
      jobDefinitionFor: () => "unused",
      bucket: s.resources.bucketName,
      table: s.resources.tableName,
    });
    const sweep = createSweepHandler(
      { ...s.deps, compute },
      { relaunchStartingAfterMs: RELAUNCH_NEVER, lostJobAfterMs: LOST_JOB_AFTER_MS },
    );
    return { sweep, mock };
  }
  const RELAUNCH_NEVER = 24 * 3_600_000;

  /** DescribeJobs' answer for the request's job, RUNNABLE since `createdAt`. */
  function runnable(id: string, jobId: string, createdAt: number, statusReason?: string) {
    return {
      jobId,
      jobArn: `arn:aws:batch:us-east-1:123456789012:job/${jobId}`,
      jobName: id,
      jobQueue: s.jobQueueArn,
      status: "RUNNABLE",
      ...(statusReason ? { statusReason } : {}),
      attempts: [],
      createdAt,
      jobDefinition: s.jobDefinitions.finetune,
      container: { environment: [{ name: FIRST_ATTEMPT_ENV, value: "1" }] },
    } as unknown as JobDetail;
  }

  async function startedHere(): Promise<{ id: string; jobRef: string }> {
    const id = await s.submit("finetune", { input: { run: Math.random() } });
    await s.drainDispatch();
    const r = await s.get(id);
    if (r.status !== "STARTING" || !r.jobRef) throw new Error("not started");
    return { id, jobRef: r.jobRef };
  }

  it("reads Batch's reason for a job RUNNABLE over two minutes and the GET says no_capacity", async () => {
    // Prepare: two jobs RUNNABLE for three minutes (one with a reason), one for 30 s
    const now = s.deps.clock.now();
    const a = await startedHere();
    const b = await startedHere();
    const c = await startedHere();
    const { sweep, mock } = sweepWith(() => [
      runnable(a.id, a.jobRef, now - 3 * 60_000, REASON),
      runnable(b.id, b.jobRef, now - 3 * 60_000),
      runnable(c.id, c.jobRef, now - 30_000),
    ]);

    // Act
    const report = await sweep();
    const [ga, gb, gc] = [await status(a.id), await status(b.id), await status(c.id)];

    // Assess
    expect(report.reconciled).toBe(3);
    expect(mock.commandCalls(DescribeJobsCommand)).toHaveLength(1);
    const since = new Date(now - 3 * 60_000).toISOString();
    expect(ga).toMatchObject({
      waitReason: "no_capacity",
      waitDetail: `waiting for an instance since ${since}: ${REASON}`,
    });
    expect(gb).toMatchObject({
      waitReason: "no_capacity",
      waitDetail: `waiting for an instance since ${since}`,
    });
    expect(gc).toMatchObject({ waitReason: "starting", waitDetail: null });
    expect(await s.get(c.id)).not.toHaveProperty("capacityWait");

    async function status(id: string): Promise<any> {
      return (await s.api("GET", `/v1/requests/${id}`)).body;
    }
  });

  it("changes nothing when DescribeJobs fails; the next run repairs", async () => {
    // Prepare
    const { id } = await startedHere();
    const before = await s.get(id);
    const { sweep } = sweepWith(() =>
      Object.assign(new Error("Rate exceeded"), { name: "TooManyRequestsException" }),
    );

    // Act + Assess
    await expect(sweep()).rejects.toThrow("Rate exceeded");
    expect(await s.get(id)).toEqual(before);
  });
});
