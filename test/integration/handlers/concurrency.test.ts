import { ListJobsCommand } from "@aws-sdk/client-batch";
import { beforeAll, describe, expect, it } from "vitest";
import { RequestStatus } from "../../../functions/core/request.ts";
import { createHarness, type Harness, lambdaContext, toRecord } from "./harness.ts";

const MAX_RUNNING = 3;
const REQUESTS = 30;
const DISPATCHERS = 6;

let h: Harness;

beforeAll(async () => {
  h = await createHarness("hconc", {
    gpu: {
      command: ["python3", "train.py"],
      maxQueued: 100,
      maxRunning: MAX_RUNNING,
      maxAttempts: 1,
    },
  });
});

describe("many dispatcher invocations at once", () => {
  it(`never hold more than maxRunning slots and never start a request twice (${DISPATCHERS} dispatchers, ${REQUESTS} requests)`, async () => {
    // Prepare: 30 queued requests and a real FIFO wake-up to copy records from
    const ids: string[] = [];
    for (let i = 0; i < REQUESTS; i++) ids.push(await h.submit("gpu", { input: { i } }));
    const [template] = await h.receiveDispatch();
    if (!template) throw new Error("no wake-up on the dispatch queue");
    let sampling = true;
    let maxActive = 0;
    let maxCounter = 0;
    const sampler = (async () => {
      while (sampling) {
        const active = (await h.store.findActive(1000)).filter((r) => r.queue === "gpu");
        maxActive = Math.max(maxActive, active.length);
        maxCounter = Math.max(maxCounter, (await h.counts("gpu")).running);
        // DynamoDB calls are serialised on the emulator: leave room for the dispatchers.
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const rounds: { active: number; unfinishedJobs: number }[] = [];

    // Act: rounds of 6 concurrent dispatcher invocations, racing the events that free slots
    for (let round = 0; round < 20; round++) {
      const records = await Promise.all(ids.map((id) => h.store.get(id)));
      const active = records.filter(
        (r) => r?.status === RequestStatus.STARTING || r?.status === RequestStatus.RUNNING,
      );
      if (records.every((r) => r?.status === RequestStatus.SUCCEEDED)) break;
      const finishing = await Promise.all(active.map((r) => h.batchEvent(r!.id, "SUCCEEDED")));
      await Promise.all([
        finishing.length > 0 ? h.deliverEvents(...finishing) : Promise.resolve(),
        ...Array.from({ length: DISPATCHERS }, (_, n) =>
          h.handlers.dispatcher(
            {
              Records: [
                toRecord(
                  { ...template, MessageId: `${template.MessageId}-${round}-${n}` },
                  h.queueArns.dispatch,
                ),
              ],
            },
            lambdaContext("dispatcher"),
          ),
        ),
      ]);
      // Jobs moto holds whose request has not finished: the runs actually in flight.
      const listed = await h.clients.batch.send(
        new ListJobsCommand({
          jobQueue: h.jobQueueArn,
          filters: [{ name: "JOB_NAME", values: ["req_*"] }],
        }),
      );
      const now = await Promise.all(ids.map((id) => h.get(id)));
      const unfinished = new Set(
        now.filter((r) => r.status !== RequestStatus.SUCCEEDED).map((r) => r.id),
      );
      rounds.push({
        active: now.filter(
          (r) => r.status === RequestStatus.STARTING || r.status === RequestStatus.RUNNING,
        ).length,
        unfinishedJobs: (listed.jobSummaryList ?? []).filter((j) => unfinished.has(j.jobName ?? ""))
          .length,
      });
    }
    sampling = false;
    await sampler;

    // Assess
    expect(maxActive).toBeLessThanOrEqual(MAX_RUNNING);
    expect(maxCounter).toBeLessThanOrEqual(MAX_RUNNING);
    for (const r of rounds) {
      expect(r.active).toBeLessThanOrEqual(MAX_RUNNING);
      expect(r.unfinishedJobs).toBeLessThanOrEqual(MAX_RUNNING);
    }
    // The slots were used, not merely respected.
    expect(rounds.some((r) => r.active === MAX_RUNNING)).toBe(true);
    const finished = await Promise.all(ids.map((id) => h.get(id)));
    expect(finished.map((r) => r.status)).toEqual(ids.map(() => RequestStatus.SUCCEEDED));
    expect(finished.map((r) => r.attempt)).toEqual(ids.map(() => 1));
    const listed = await h.clients.batch.send(
      new ListJobsCommand({
        jobQueue: h.jobQueueArn,
        filters: [{ name: "JOB_NAME", values: ["req_*"] }],
      }),
    );
    const names = (listed.jobSummaryList ?? []).map((j) => j.jobName).sort();
    expect(names).toEqual([...ids].sort());
    const { stored, counted } = await h.countersAndRecount();
    expect(stored).toEqual(counted);
    expect(stored.gpu).toEqual({ queued: 0, running: 0 });
  });
});
