import { GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { beforeAll, describe, expect, it } from "vitest";
import { EVALUATE_ON_EXIT } from "../../../functions/adapters/aws/batch-compute.ts";
import { createHarness, type Harness } from "./harness.ts";

let h: Harness;

beforeAll(async () => {
  h = await createHarness("hflow");
});

function envOf(job: { container?: { environment?: { name?: string; value?: string }[] } }) {
  return Object.fromEntries((job.container?.environment ?? []).map((e) => [e.name, e.value]));
}

describe("a request's life through the handlers", () => {
  it("submits, starts one Batch job under the queue's contract, and finishes from its events", async () => {
    // Prepare
    const submitted = await h.api("POST", "/v1/queues/finetune/requests", {
      body: { input: { epochs: 2 }, timeoutSeconds: 900, metadata: { team: "search" } },
    });
    expect(submitted.status).toBe(202);
    const id = submitted.body.id as string;
    expect(submitted.headers.location).toBe(`/v1/requests/${id}`);
    expect(submitted.body).toMatchObject({ status: "QUEUED", attempt: 0, position: 0 });

    // Act: the wake-up the submit sent reaches the dispatcher
    const dispatched = await h.drainDispatch();

    // Assess: one job in moto, exactly as the queue and request ask
    expect(dispatched.received).toBeGreaterThanOrEqual(1);
    expect(dispatched.failed).toEqual([]);
    const jobs = await h.jobsOf(id);
    expect(jobs).toHaveLength(1);
    const job = await h.describeJob(jobs[0]?.jobId as string);
    expect(job.jobName).toBe(id);
    expect(job.jobQueue).toBe(h.jobQueueArn);
    expect(job.jobDefinition).toBe(h.jobDefinitions.finetune);
    expect(envOf(job)).toMatchObject({
      LONGRUN_REQUEST_ID: id,
      LONGRUN_QUEUE: "finetune",
      LONGRUN_BUCKET: h.resources.bucketName,
      LONGRUN_TABLE: h.resources.tableName,
      LONGRUN_FIRST_ATTEMPT: "1",
      EPOCHS_DEFAULT: "3",
    });
    expect(job.timeout).toEqual({ attemptDurationSeconds: 900 });
    expect(job.tags).toMatchObject({
      "longrun:request": id,
      "longrun:tenant": "acme",
      "longrun:queue": "finetune",
      "longrun:first-attempt": "1",
    });
    // moto keeps no retry strategy: read what the SubmitJob carried.
    const submit = h.batchCalls.find(
      (c) => c.name === "SubmitJobCommand" && c.input.jobName === id,
    );
    expect(submit?.input.retryStrategy).toEqual({
      attempts: 3,
      evaluateOnExit: EVALUATE_ON_EXIT,
    });
    const input = await h.clients.s3.send(
      new GetObjectCommand({ Bucket: h.resources.bucketName, Key: `inputs/${id}.json` }),
    );
    expect(JSON.parse(await input.Body!.transformToString())).toEqual({ epochs: 2 });
    const starting = await h.api("GET", `/v1/requests/${id}`);
    expect(starting.body).toMatchObject({ status: "STARTING", attempt: 1, startedAt: null });

    // Act: Batch reports the job running
    const running = await h.deliverEvents(await h.batchEvent(id, "RUNNING"));

    // Assess
    expect(running.failed).toEqual([]);
    const afterRunning = await h.api("GET", `/v1/requests/${id}`);
    expect(afterRunning.body.status).toBe("RUNNING");
    expect(Date.parse(afterRunning.body.startedAt)).toBeGreaterThan(Date.now() - 60_000);
    const notReady = await h.api("GET", `/v1/requests/${id}/result`);
    expect(notReady.status).toBe(409);
    expect(notReady.body.code).toBe("not_ready");

    // Act: the runner uploads its outputs, then the job succeeds
    const artifact = "weights \u00e9 0123456789";
    await h.clients.s3.send(
      new PutObjectCommand({
        Bucket: h.resources.bucketName,
        Key: `outputs/${id}/result.json`,
        Body: JSON.stringify({ loss: 0.125 }),
      }),
    );
    await h.clients.s3.send(
      new PutObjectCommand({
        Bucket: h.resources.bucketName,
        Key: `outputs/${id}/model.bin`,
        Body: artifact,
      }),
    );
    const succeeded = await h.deliverEvents(await h.batchEvent(id, "SUCCEEDED"));

    // Assess
    expect(succeeded.failed).toEqual([]);
    const done = await h.api("GET", `/v1/requests/${id}`);
    expect(done.body).toMatchObject({ status: "SUCCEEDED", attempt: 1, error: null });
    expect(done.body.finishedAt).not.toBeNull();
    const result = await h.api("GET", `/v1/requests/${id}/result`);
    expect(result.status).toBe(200);
    expect(result.body.output).toEqual({ loss: 0.125 });
    expect(result.body.artifacts).toHaveLength(1);
    expect(result.body.artifacts[0]).toMatchObject({
      name: "model.bin",
      size: Buffer.byteLength(artifact),
    });
    const download = await fetch(result.body.artifacts[0].url);
    expect(download.status).toBe(200);
    expect(await download.text()).toBe(artifact);
    const { stored, counted } = await h.countersAndRecount();
    expect(stored).toEqual(counted);
    expect(stored.finetune?.running).toBe(0);
  });
});

describe("the HTTP handler's answers", () => {
  it("replays an idempotent submit with 200 and refuses another body with 409", async () => {
    // Prepare
    const key = `key-${Date.now()}`;
    const body = { input: { a: 1, b: [1, 2] }, priority: 3 };
    const first = await h.api("POST", "/v1/queues/small/requests", {
      body,
      headers: { "Idempotency-Key": key },
    });
    expect(first.status).toBe(202);

    // Act
    const replay = await h.api("POST", "/v1/queues/small/requests", {
      body: { priority: 3, input: { b: [1, 2], a: 1 } },
      headers: { "idempotency-key": key },
    });
    const conflict = await h.api("POST", "/v1/queues/small/requests", {
      body: { input: { a: 2 } },
      headers: { "Idempotency-Key": key },
    });

    // Assess
    expect(replay.status).toBe(200);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.body.id).toBe(first.body.id);
    expect(conflict.status).toBe(409);
    expect(conflict.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(conflict.body).toMatchObject({ status: 409, code: "idempotency_conflict" });
    expect((await h.counts("small")).queued).toBe(1);
    expect((await h.api("POST", `/v1/requests/${first.body.id}/cancel`)).status).toBe(202);
  });

  it("answers 429 queue_full with Retry-After once the queue holds maxQueued requests", async () => {
    // Prepare: small admits 2 QUEUED requests
    const a = await h.submit("small", { input: 1 });
    const b = await h.submit("small", { input: 2 });

    // Act
    const full = await h.api("POST", "/v1/queues/small/requests", { body: { input: 3 } });

    // Assess
    expect(full.status).toBe(429);
    expect(full.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(Number(full.headers["retry-after"])).toBeGreaterThan(0);
    expect(full.body).toMatchObject({
      type: expect.stringContaining("queue_full"),
      title: expect.any(String),
      status: 429,
      code: "queue_full",
    });
    expect(await h.counts("small")).toEqual({ queued: 2, running: 0 });
    for (const id of [a, b]) {
      expect((await h.api("POST", `/v1/requests/${id}/cancel`)).status).toBe(202);
    }
    expect(await h.counts("small")).toEqual({ queued: 0, running: 0 });
  });

  it("shows another tenant's request as not found, exactly like an unknown id", async () => {
    // Prepare
    const id = await h.submit("small", { input: "mine" }, { tenant: "tenant-a" });

    // Act
    const foreign = await h.api("GET", `/v1/requests/${id}`, { tenant: "tenant-b" });
    const foreignCancel = await h.api("POST", `/v1/requests/${id}/cancel`, { tenant: "tenant-b" });
    const unknown = await h.api("GET", "/v1/requests/req_01JD3K8Q7V2X5N9M4B6C0T1Y2Z", {
      tenant: "tenant-b",
    });
    const foreignList = await h.api("GET", "/v1/queues/small/requests", { tenant: "tenant-b" });
    const own = await h.api("GET", `/v1/requests/${id}`, { tenant: "tenant-a" });

    // Assess
    expect(foreign.status).toBe(404);
    expect(foreign.body).toMatchObject({ status: 404, code: "not_found" });
    expect(foreignCancel.status).toBe(404);
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe(foreign.body.code);
    expect(foreignList.body.items).toEqual([]);
    expect(own.status).toBe(200);
    expect(own.body.status).toBe("QUEUED");
    expect((await h.api("POST", `/v1/requests/${id}/cancel`, { tenant: "tenant-a" })).status).toBe(
      202,
    );
  });

  it("answers 401 problem+json when the authorizer passed no claims", async () => {
    // Act
    const res = await h.api("GET", "/v1/queues", { tenant: null });
    const submit = await h.api("POST", "/v1/queues/small/requests", {
      tenant: null,
      body: { input: 1 },
      // A client-sent header never stands in for the authorizer's claims.
      headers: { authorization: "Bearer dev", "x-tenant": "acme" },
    });
    const health = await h.api("GET", "/v1/health", { tenant: null });

    // Assess
    expect(res.status).toBe(401);
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(res.body).toMatchObject({ status: 401, code: "unauthorized" });
    expect(submit.status).toBe(401);
    expect(health).toMatchObject({ status: 200, body: { status: "ok" } });
    expect((await h.counts("small")).queued).toBe(0);
  });

  it("lists the tenant's requests newest first with queue counters from DynamoDB", async () => {
    // Prepare
    const tenant = `lister-${Date.now()}`;
    const ids = [
      await h.submit("small", { input: 1 }, { tenant }),
      await h.submit("small", { input: 2 }, { tenant }),
    ];

    // Act
    const list = await h.api("GET", "/v1/queues/small/requests", {
      tenant,
      query: { status: "QUEUED", limit: "1" },
    });
    const next = await h.api("GET", "/v1/queues/small/requests", {
      tenant,
      query: { status: "QUEUED", limit: "1", cursor: list.body.nextCursor },
    });
    const queue = await h.api("GET", "/v1/queues/small", { tenant });

    // Assess
    expect(list.body.items.map((r: { id: string }) => r.id)).toEqual([ids[1]]);
    expect(list.body.items[0].input).toBeUndefined();
    expect(next.body.items.map((r: { id: string }) => r.id)).toEqual([ids[0]]);
    expect(queue.body).toMatchObject({ name: "small", maxQueued: 2, queued: 2, running: 0 });
    for (const id of ids) await h.api("POST", `/v1/requests/${id}/cancel`, { tenant });
  });
});
