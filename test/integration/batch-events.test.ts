import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { jobEventFromDetail, parseBatchEvent } from "../../functions/adapters/aws/batch-events.ts";

const dir = join(import.meta.dirname, "../fixtures/batch-events");
const fixture = (name: string): any => JSON.parse(readFileSync(join(dir, name), "utf8"));
const ID = "req_01JD3K8Q7V2X5N9M4B6C0T1Y2Z";
const JOB = "4c7599ae-0a82-49aa-ba5a-4727fcce14a8";
const QUEUE_ARN = "arn:aws:batch:us-east-1:123456789012:job-queue/longrun-gpu";

describe("parseBatchEvent", () => {
  it("has an expectation for every fixture", () => {
    expect(readdirSync(dir).sort()).toEqual(Object.keys(expected).sort());
  });

  // Every fixture that ended an attempt says it began to run 100 s before it stopped.
  const ATTEMPT_STARTED = 1641944300058;
  const expected: Record<string, unknown> = {
    // RUNNABLE: the job waits for an instance since it was created; no blocked reason yet.
    "runnable.json": {
      type: "starting",
      requestId: ID,
      attempt: 1,
      at: Date.parse("2022-01-11T23:36:40Z"),
      jobRef: JOB,
      capacity: { waiting: true, since: 1641944200058, reason: null },
    },
    // Batch's "job queue blocked" event: the same job detail, with the reason it waits.
    "job-queue-blocked.json": {
      type: "starting",
      requestId: ID,
      attempt: 1,
      at: Date.parse("2022-01-11T23:39:10Z"),
      jobRef: JOB,
      capacity: {
        waiting: true,
        since: 1641944200058,
        reason:
          "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Service cannot fulfill the capacity requested for instance type [g5.xlarge]",
      },
    },
    // STARTING: the job has its instance.
    "starting.json": {
      type: "starting",
      requestId: ID,
      attempt: 1,
      at: Date.parse("2022-01-11T23:37:40Z"),
      jobRef: JOB,
      capacity: { waiting: false, at: Date.parse("2022-01-11T23:37:40Z") },
    },
    "running.json": {
      type: "running",
      requestId: ID,
      attempt: 1,
      at: Date.parse("2022-01-11T23:38:20Z"),
      jobRef: JOB,
    },
    "succeeded.json": {
      type: "exited",
      requestId: ID,
      attempt: 1,
      at: 1641944400058,
      startedAt: ATTEMPT_STARTED,
      outcome: "succeeded",
      jobRef: JOB,
    },
    "failed-exit-code.json": {
      type: "exited",
      requestId: ID,
      attempt: 1,
      at: 1641944400058,
      startedAt: ATTEMPT_STARTED,
      outcome: "failed",
      jobRef: JOB,
      message: "Essential container in task exited; exit code 1",
    },
    // A Batch retry waits again from the end of the attempt before.
    "runnable-after-spot-reclaim.json": {
      type: "starting",
      requestId: ID,
      attempt: 2,
      at: Date.parse("2022-01-11T23:41:00Z"),
      jobRef: JOB,
      capacity: { waiting: true, since: 1641944400058, reason: null },
    },
    "running-second-attempt.json": {
      type: "running",
      requestId: ID,
      attempt: 2,
      at: Date.parse("2022-01-11T23:43:00Z"),
      jobRef: JOB,
    },
    "failed-timeout.json": {
      type: "exited",
      requestId: ID,
      attempt: 1,
      at: 1641944400058,
      startedAt: ATTEMPT_STARTED,
      outcome: "timeout",
      jobRef: JOB,
      message: "attempt 1 ran longer than its timeout (Job attempt duration exceeded timeout)",
    },
    // A Spot reclaim or lost host, which the retry strategy EXITs on: the platform's doing.
    "failed-host-terminated.json": {
      type: "exited",
      requestId: ID,
      attempt: 1,
      at: 1641944400058,
      outcome: "lost",
      jobRef: JOB,
      message:
        "attempt 1 was ended by the platform (Host EC2 (instance i-0123456789abcdef0) terminated.)",
    },
    "failed-cancelled.json": {
      type: "exited",
      requestId: ID,
      attempt: 1,
      at: 1641944400058,
      startedAt: ATTEMPT_STARTED,
      outcome: "failed",
      jobRef: JOB,
      message:
        "longrun: cancelled by the caller; Essential container in task exited; exit code 143",
    },
    "succeeded-first-attempt-2.json": {
      type: "exited",
      requestId: ID,
      attempt: 2,
      at: 1641944400058,
      startedAt: ATTEMPT_STARTED,
      outcome: "succeeded",
      jobRef: JOB,
    },
    "foreign-job-name.json": null,
  };

  for (const [name, want] of Object.entries(expected)) {
    it(`maps ${name}`, () => {
      expect(parseBatchEvent(fixture(name))).toEqual(want);
    });
  }

  it("reads the event from its JSON text (an SQS body)", () => {
    const text = readFileSync(join(dir, "running.json"), "utf8");
    expect(parseBatchEvent(text)).toMatchObject({ type: "running", requestId: ID });
  });

  it("keeps unknown fields from breaking the parse", () => {
    const e = fixture("running.json");
    e.detail.someNewField = { nested: [1, 2] };
    e.detail.container.environment = "not a list any more";
    e.newTopLevel = true;
    expect(parseBatchEvent(e)).toMatchObject({ type: "running", attempt: 1 });
  });

  it("returns null for garbage and for other events", () => {
    expect(parseBatchEvent("not json")).toBeNull();
    expect(parseBatchEvent(null)).toBeNull();
    expect(parseBatchEvent(42)).toBeNull();
    expect(parseBatchEvent({})).toBeNull();
    const other = fixture("running.json");
    other.source = "aws.ecs";
    expect(parseBatchEvent(other)).toBeNull();
    const otherType = fixture("runnable.json");
    otherType["detail-type"] = "Batch Service Job Queue Blocked";
    expect(parseBatchEvent(otherType)).toBeNull();
    const badStatus = fixture("running.json");
    badStatus.detail.status = "EXPLODED";
    expect(parseBatchEvent(badStatus)).toBeNull();
    const noDetail = fixture("running.json");
    delete noDetail.detail;
    expect(parseBatchEvent(noDetail)).toBeNull();
    const shortName = fixture("running.json");
    shortName.detail.jobName = "req_123";
    expect(parseBatchEvent(shortName)).toBeNull();
  });

  it("ignores jobs of another job queue when told which is ours", () => {
    expect(parseBatchEvent(fixture("running.json"), { jobQueueArn: QUEUE_ARN })).not.toBeNull();
    expect(
      parseBatchEvent(fixture("running.json"), { jobQueueArn: `${QUEUE_ARN}-other` }),
    ).toBeNull();
  });

  it("falls back to the given clock when the event has no time", () => {
    const e = fixture("starting.json");
    delete e.time;
    expect(parseBatchEvent(e, { now: () => 1234 })).toMatchObject({ at: 1234 });
  });

  it("maps SUBMITTED and PENDING to the first attempt starting", () => {
    for (const status of ["SUBMITTED", "PENDING"]) {
      const e = fixture("runnable.json");
      e.detail.status = status;
      expect(parseBatchEvent(e)).toMatchObject({ type: "starting", attempt: 1, jobRef: JOB });
      expect(parseBatchEvent(e)).not.toHaveProperty("capacity");
    }
  });

  it("takes only a blocked reason (CATEGORY:CODE - text) as the reason a job waits", () => {
    const e = fixture("runnable-after-spot-reclaim.json");
    e.detail.statusReason = "Essential container in task exited";
    expect(parseBatchEvent(e)).toMatchObject({ capacity: { waiting: true, reason: null } });
    e.detail.statusReason =
      "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - The job resource requirement is higher than the compute environments can meet";
    expect(parseBatchEvent(e)).toMatchObject({
      capacity: { waiting: true, reason: e.detail.statusReason },
    });
  });

  it("counts a failure before any attempt ran as the first attempt", () => {
    const e = fixture("runnable.json");
    e.detail.status = "FAILED";
    e.detail.statusReason = "longrun: cancelled by the caller";
    expect(parseBatchEvent(e)).toMatchObject({
      type: "exited",
      attempt: 1,
      outcome: "failed",
      jobRef: JOB,
      message: "longrun: cancelled by the caller",
    });
  });
});

describe("jobEventFromDetail", () => {
  it("reads the first attempt from the job's tag when the environment lacks it", () => {
    const detail = fixture("running-second-attempt.json").detail;
    detail.container.environment = [];
    detail.tags = { "longrun:first-attempt": "3" };
    expect(jobEventFromDetail(detail, 5)).toMatchObject({ type: "running", attempt: 4 });
  });
});
