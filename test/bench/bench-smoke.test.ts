/**
 * Regression guard on the AWS calls of one request lifecycle (bench/lifecycle.ts, as
 * `npm run bench` measures it): where the design's floor is the whole story, the count must
 * be exactly the floor; elsewhere it must not grow past what it is today. Counts, never time.
 */
import { beforeAll, describe, expect, inject, it } from "vitest";
import { FLOORS, type LifecycleUsage, measureLifecycles, totalOf } from "../../bench/lifecycle.ts";

let run: LifecycleUsage;

beforeAll(async () => {
  const runs = await measureLifecycles(inject("awsEndpoint"), 1);
  run = runs[0] as LifecycleUsage;
});

describe("AWS calls of one request lifecycle", () => {
  it("submits with exactly one transaction, one wake-up and one read of the counters", () => {
    // Assess
    expect(run.submit.calls).toEqual(FLOORS.submit);
  });

  it("applies a progress report and a status change event with one write each", () => {
    // Assess
    expect(run.progress.calls).toEqual(FLOORS.progress);
    expect(run["running event"].calls["DynamoDB UpdateItem"]).toBe(1);
    expect(run["succeeded event"].calls["DynamoDB TransactWriteItems"]).toBe(1);
    expect(run["succeeded event"].calls["SQS SendMessage"]).toBe(1);
  });

  it("answers status and result with the floor's calls", () => {
    // Assess
    expect(run.status.calls).toEqual(FLOORS.status);
    expect(run.result.calls).toEqual(FLOORS.result);
    expect(run["runner input"].calls).toEqual(FLOORS["runner input"]);
  });

  it("launches exactly one Batch job, with one claim, one input upload and one job-id write", () => {
    // Assess
    const d = run.dispatch.calls;
    expect(d["Batch SubmitJob"]).toBe(1);
    expect(d["DynamoDB TransactWriteItems"]).toBe(1);
    expect(d["S3 PutObject"]).toBe(1);
    expect(d["DynamoDB UpdateItem"]).toBe(1);
    // A request claimed from QUEUED has never had a job: no ListJobs before SubmitJob.
    expect(d["Batch ListJobs"] ?? 0).toBe(0);
  });

  it("reads the request once per job event: the store moves what it has just read", () => {
    // Assess
    expect(run["running event"].calls["DynamoDB GetItem"]).toBe(1);
    expect(run["succeeded event"].calls["DynamoDB GetItem"]).toBe(1);
  });

  it("makes no more calls in total than it does today (35), and no SDK retries", () => {
    // Assess
    const total = totalOf(run);
    const calls = Object.values(total.calls).reduce((a, b) => a + b, 0);
    expect(calls).toBeLessThanOrEqual(27);
    expect(total.calls).toEqual(total.sends);
    expect(total.computed.write).toBeGreaterThan(0);
  });
});
