import {
  BatchClient,
  DescribeJobsCommand,
  ListJobsCommand,
  SubmitJobCommand,
  TerminateJobCommand,
} from "@aws-sdk/client-batch";
import { mockClient } from "aws-sdk-client-mock";
import { beforeAll, describe, expect, it } from "vitest";
import {
  BATCH_MIN_TIMEOUT_SECONDS,
  BatchCompute,
  batchAttempts,
  EVALUATE_ON_EXIT,
  STOP_REASONS,
} from "../../functions/adapters/aws/batch-compute.ts";
import { parseConfig } from "../../functions/config/load.ts";
import type { QueueConfig } from "../../functions/config/schema.ts";
import type { RequestRecord } from "../../functions/core/request.ts";
import { T0 } from "../helpers/fakes.ts";
import { startingRecord } from "../helpers/records.ts";
import { awsClientConfig, createBatchQueue, uniqueName } from "./aws.ts";

let prefix: string;
let jobQueueArn: string;
let jobDefinitionArn: string;
let queue: QueueConfig;
let seq = 0;

/** A BatchClient on the emulator that records every command it sends. */
function recordingClient(): { client: BatchClient; sent: { name: string; input: any }[] } {
  const client = new BatchClient(awsClientConfig());
  const sent: { name: string; input: any }[] = [];
  client.middlewareStack.add(
    (next, context) => async (args) => {
      sent.push({ name: context.commandName as string, input: structuredClone(args.input) });
      return next(args);
    },
    { step: "initialize", name: "recordCommands" },
  );
  return { client, sent };
}

/**
 * moto marks every job SUCCEEDED the moment it is submitted, so a job that is still on its
 * way cannot exist there. This middleware shows chosen jobs as RUNNING in ListJobs
 * answers, which is all BatchCompute reads to decide that a job has not finished.
 */
function showRunning(client: BatchClient, jobIds: Set<string>): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const result: any = await next(args);
      if (context.commandName === "ListJobsCommand") {
        for (const s of result.output.jobSummaryList ?? []) {
          if (jobIds.has(s.jobId)) s.status = "RUNNING";
        }
      }
      return result;
    },
    { step: "initialize", name: "showRunning" },
  );
}

function newRequestId(): string {
  // `req_` + 26 characters, unique per run and test.
  const tail = `${Date.now().toString(36)}${(++seq).toString(36)}${Math.random().toString(36).slice(2)}`;
  return `req_${tail
    .toUpperCase()
    .replace(/[^0-9A-Z]/g, "0")
    .padEnd(26, "0")
    .slice(0, 26)}`;
}

function request(over: Partial<RequestRecord> = {}): RequestRecord {
  return startingRecord({
    id: newRequestId(),
    tenant: "acme corp/ü",
    queue: "finetune",
    createdAt: T0,
    timeoutSeconds: 3600,
    queueTtlSeconds: 86_400,
    expiresAt: T0 + 86_400_000,
    ...over,
  });
}

function compute(client: BatchClient): BatchCompute {
  return new BatchCompute({
    client,
    jobQueueArn,
    jobDefinitionFor: (q) => (q.name === "finetune" ? jobDefinitionArn : "nope"),
    bucket: `${prefix}-data`,
    table: `${prefix}-requests`,
    extraEnv: { AWS_REGION: "us-east-1", LONGRUN_REQUEST_ID: "must be overridden" },
  });
}

async function describeJob(client: BatchClient, jobId: string) {
  const out = await client.send(new DescribeJobsCommand({ jobs: [jobId] }));
  const job = out.jobs?.[0];
  if (!job) throw new Error(`job ${jobId} not found`);
  return job;
}

beforeAll(async () => {
  prefix = uniqueName("bc");
  ({ jobQueueArn, jobDefinitionArn } = await createBatchQueue(prefix));
  const config = parseConfig(
    { queues: { finetune: { command: ["python3", "train.py"], env: { EPOCHS: "3" } } } },
    "/tmp",
  );
  queue = config.queues.finetune as QueueConfig;
});

describe("BatchCompute.start", () => {
  it("submits a job named after the request with the contract's environment and limits", async () => {
    const { client, sent } = recordingClient();
    const r = request({ attempt: 2, maxAttempts: 4, timeoutSeconds: 900 });

    const { jobRef } = await compute(client).start(r, queue);

    const job = await describeJob(client, jobRef);
    expect(job.jobName).toBe(r.id);
    expect(job.jobQueue).toBe(jobQueueArn);
    expect(job.jobDefinition).toBe(jobDefinitionArn);
    const env = Object.fromEntries(
      (job.container?.environment ?? []).map((e) => [e.name, e.value]),
    );
    expect(env).toMatchObject({
      LONGRUN_REQUEST_ID: r.id,
      LONGRUN_QUEUE: "finetune",
      LONGRUN_BUCKET: `${prefix}-data`,
      LONGRUN_TABLE: `${prefix}-requests`,
      LONGRUN_FIRST_ATTEMPT: "2",
      EPOCHS: "3",
      AWS_REGION: "us-east-1",
    });
    expect(job.timeout).toEqual({ attemptDurationSeconds: 900 });
    expect(job.tags).toMatchObject({
      "longrun:request": r.id,
      "longrun:tenant": "acme corp/ü",
      "longrun:queue": "finetune",
      "longrun:first-attempt": "2",
      // The handlers' TerminateJob is conditioned on this tag (infra GpuCompute).
      "longrun:job-queue": jobQueueArn,
    });
    // moto stores neither retryStrategy nor propagateTags of a SubmitJob: read what was sent.
    const submit = sent.find((c) => c.name === "SubmitJobCommand");
    expect(submit?.input.retryStrategy).toEqual({ attempts: 3, evaluateOnExit: EVALUATE_ON_EXIT });
    expect(submit?.input.propagateTags).toBe(true);
    // Looked for an earlier job of the request first, by name over every status.
    const list = sent.find((c) => c.name === "ListJobsCommand");
    expect(list?.input).toMatchObject({
      jobQueue: jobQueueArn,
      filters: [{ name: "JOB_NAME", values: [r.id] }],
    });
    expect(list?.input.jobStatus).toBeUndefined();
    expect(sent.map((c) => c.name).indexOf("ListJobsCommand")).toBeLessThan(
      sent.map((c) => c.name).indexOf("SubmitJobCommand"),
    );
  });

  it("submits a first launch at once, without looking for an earlier job", async () => {
    const { client, sent } = recordingClient();

    const { jobRef } = await compute(client).start(request(), queue, { firstLaunch: true });

    expect(sent.map((c) => c.name)).toEqual(["SubmitJobCommand"]);
    expect((await describeJob(client, jobRef)).jobName).toBeDefined();
  });

  it("raises a timeout below Batch's floor to 60 s", async () => {
    const { client } = recordingClient();
    const { jobRef } = await compute(client).start(request({ timeoutSeconds: 5 }), queue);
    expect((await describeJob(client, jobRef)).timeout).toEqual({
      attemptDurationSeconds: BATCH_MIN_TIMEOUT_SECONDS,
    });
  });

  it("submits again when the request's earlier job has finished (moto: at once)", async () => {
    const { client, sent } = recordingClient();
    const c = compute(client);
    const r = request();
    const first = await c.start(r, queue);
    expect((await describeJob(client, first.jobRef)).status).toBe("SUCCEEDED");

    const second = await c.start({ ...r, attempt: 2, jobRef: first.jobRef }, queue);

    expect(second.jobRef).not.toBe(first.jobRef);
    expect(sent.filter((s) => s.name === "SubmitJobCommand")).toHaveLength(2);
    const listed = await client.send(
      new ListJobsCommand({
        jobQueue: jobQueueArn,
        filters: [{ name: "JOB_NAME", values: [r.id] }],
      }),
    );
    expect(listed.jobSummaryList?.map((j) => j.jobId).sort()).toEqual(
      [first.jobRef, second.jobRef].sort(),
    );
  });

  it("returns the live job of the same attempt instead of submitting a second one", async () => {
    const { client, sent } = recordingClient();
    const r = request();
    const first = await compute(client).start(r, queue);
    showRunning(client, new Set([first.jobRef]));

    const again = await compute(client).start(r, queue);

    expect(again.jobRef).toBe(first.jobRef);
    expect(sent.filter((s) => s.name === "SubmitJobCommand")).toHaveLength(1);
    expect(sent.filter((s) => s.name === "TerminateJobCommand")).toHaveLength(0);
  });

  it("stops a live job of an earlier attempt and submits one for the new attempt", async () => {
    const { client, sent } = recordingClient();
    const r = request();
    const first = await compute(client).start(r, queue);
    showRunning(client, new Set([first.jobRef]));

    const next = await compute(client).start({ ...r, attempt: 2 }, queue);

    expect(next.jobRef).not.toBe(first.jobRef);
    expect(sent.filter((s) => s.name === "TerminateJobCommand").map((s) => s.input)).toEqual([
      { jobId: first.jobRef, reason: STOP_REASONS.superseded },
    ]);
    expect(sent.filter((s) => s.name === "SubmitJobCommand")).toHaveLength(2);
  });
});

describe("BatchCompute.stop and reap", () => {
  it("terminates the request's job with the reason of the stop", async () => {
    const { client, sent } = recordingClient();
    const c = compute(client);
    const r = request();
    const { jobRef } = await c.start(r, queue);

    await c.stop({ ...r, jobRef }, "cancel");
    await c.stop({ ...r, jobRef }, "timeout");

    expect(sent.filter((s) => s.name === "TerminateJobCommand").map((s) => s.input)).toEqual([
      { jobId: jobRef, reason: "longrun: cancelled by the caller" },
      { jobId: jobRef, reason: "longrun: timeout" },
    ]);
  });

  it("finds the job by name when no jobRef was recorded", async () => {
    const { client, sent } = recordingClient();
    const r = request();
    const { jobRef } = await compute(client).start(r, queue);
    showRunning(client, new Set([jobRef]));

    await compute(client).stop(r, "shutdown");

    expect(sent.filter((s) => s.name === "TerminateJobCommand").map((s) => s.input)).toEqual([
      { jobId: jobRef, reason: "longrun: shutdown" },
    ]);
  });

  it("does nothing without a jobRef when no job of the request is live", async () => {
    const { client, sent } = recordingClient();
    await compute(client).stop(request(), "cancel");
    expect(sent.map((s) => s.name)).toEqual(["ListJobsCommand"]);
  });

  it("reap terminates every live job of the request and the recorded one", async () => {
    const { client, sent } = recordingClient();
    const r = request();
    const a = await compute(client).start(r, queue);
    const b = await compute(client).start({ ...r, attempt: 2 }, queue);
    showRunning(client, new Set([a.jobRef]));

    await compute(client).reap({ ...r, attempt: 2, jobRef: b.jobRef });

    expect(
      sent
        .filter((s) => s.name === "TerminateJobCommand")
        .map((s) => s.input.jobId)
        .sort(),
    ).toEqual([a.jobRef, b.jobRef].sort());
  });

  it("tolerates Batch refusing to terminate a job it does not know or that ended", async () => {
    const mock = mockClient(BatchClient);
    mock
      .on(TerminateJobCommand)
      .rejects(Object.assign(new Error("Job not found"), { name: "ClientException" }));
    const client = new BatchClient({ region: "us-east-1" });
    await expect(
      compute(client).stop(request({ jobRef: "gone" }), "cancel"),
    ).resolves.toBeUndefined();
    mock.restore();
  });

  it("passes on errors that do not mean the job is gone", async () => {
    const mock = mockClient(BatchClient);
    mock
      .on(TerminateJobCommand)
      .rejects(Object.assign(new Error("Rate exceeded"), { name: "TooManyRequestsException" }));
    const client = new BatchClient({ region: "us-east-1" });
    await expect(compute(client).stop(request({ jobRef: "j" }), "cancel")).rejects.toThrow(
      "Rate exceeded",
    );
    mock.restore();
  });
});

describe("BatchCompute.describe", () => {
  it("reports each job's state and the event it implies, unknown ids included", async () => {
    const { client, sent } = recordingClient();
    const c = compute(client);
    const refs: string[] = [];
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = request();
      ids.push(r.id);
      refs.push((await c.start(r, queue)).jobRef);
    }
    // A job that is not a longrun request: the same queue, another naming scheme.
    const foreign = await client.send(
      new SubmitJobCommand({
        jobName: "nightly-report",
        jobQueue: jobQueueArn,
        jobDefinition: jobDefinitionArn,
      }),
    );
    sent.length = 0;

    const states = await c.describe([
      ...refs,
      "00000000-0000-0000-0000-000000000000",
      foreign.jobId as string,
    ]);

    expect(states.slice(0, 3)).toEqual(
      refs.map((jobRef, i) => ({
        jobRef,
        status: "SUCCEEDED",
        requestId: ids[i],
        statusReason: null,
        event: expect.objectContaining({
          type: "exited",
          requestId: ids[i],
          attempt: 1,
          outcome: "succeeded",
        }),
      })),
    );
    expect(states[3]).toEqual({
      jobRef: "00000000-0000-0000-0000-000000000000",
      status: null,
      requestId: null,
      statusReason: null,
      event: null,
    });
    expect(states[4]).toMatchObject({
      status: "SUCCEEDED",
      requestId: "nightly-report",
      event: null,
    });
    expect(sent.map((s) => s.name)).toEqual(["DescribeJobsCommand"]);
  });

  it("asks DescribeJobs for at most 100 ids at a time", async () => {
    const mock = mockClient(BatchClient);
    mock.on(DescribeJobsCommand).resolves({ jobs: [] });
    const client = new BatchClient({ region: "us-east-1" });
    const refs = Array.from({ length: 250 }, (_, i) => `job-${i}`);

    const states = await compute(client).describe(refs);

    expect(states).toHaveLength(250);
    expect(mock.commandCalls(DescribeJobsCommand).map((c) => c.args[0].input.jobs?.length)).toEqual(
      [100, 100, 50],
    );
    mock.restore();
  });
});

describe("batchAttempts", () => {
  it("gives a job the attempts the request has left, within Batch's 1 to 10", () => {
    expect(batchAttempts(3, 1)).toBe(3);
    expect(batchAttempts(3, 3)).toBe(1);
    expect(batchAttempts(3, 5)).toBe(1);
    expect(batchAttempts(10, 1)).toBe(10);
    // Attempts the platform ended leave the job's own allowance untouched.
    expect(batchAttempts(3, 3, 2)).toBe(3);
    expect(batchAttempts(3, 5, 2)).toBe(1);
    expect(batchAttempts(12, 1)).toBe(10);
  });
});
