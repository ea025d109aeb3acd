import { BatchClient, DescribeJobsCommand, SubmitJobCommand } from "@aws-sdk/client-batch";
import {
  CloudWatchLogsClient,
  CreateLogGroupCommand,
  CreateLogStreamCommand,
  GetLogEventsCommand,
  PutLogEventsCommand,
} from "@aws-sdk/client-cloudwatch-logs";
import { mockClient } from "aws-sdk-client-mock";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import {
  batchAttemptStreams,
  CloudWatchLogStore,
} from "../../functions/adapters/aws/cloudwatch-logs.ts";
import { InvalidRequestError } from "../../functions/core/errors.ts";
import { awsClientConfig, createBatchQueue, uniqueName } from "./aws.ts";

let logs: CloudWatchLogsClient;
let batch: BatchClient;
let prefix: string;
let logGroup: string;
let jobQueueArn: string;
let jobDefinitionArn: string;
let seq = 0;

beforeAll(async () => {
  logs = new CloudWatchLogsClient(awsClientConfig());
  batch = new BatchClient(awsClientConfig());
  prefix = uniqueName("cwl");
  // The adapter's log group is configurable; a unique one keeps test files apart.
  logGroup = `/longrun-test/${prefix}`;
  await logs.send(new CreateLogGroupCommand({ logGroupName: logGroup }));
  ({ jobQueueArn, jobDefinitionArn } = await createBatchQueue(prefix));
});

async function writeStream(stream: string, lines: string[], create = true): Promise<void> {
  if (create) {
    await logs.send(new CreateLogStreamCommand({ logGroupName: logGroup, logStreamName: stream }));
  }
  const base = Date.now();
  await logs.send(
    new PutLogEventsCommand({
      logGroupName: logGroup,
      logStreamName: stream,
      logEvents: lines.map((message, i) => ({ message, timestamp: base + i })),
    }),
  );
}

/** Reads every page until a read returns nothing; returns the pages' line lists. */
async function readToEnd(store: CloudWatchLogStore, id: string, limit: number, cursor?: string) {
  const pages: string[][] = [];
  let next = cursor;
  for (let i = 0; i < 50; i++) {
    const page = await store.read(id, next, limit);
    expect(typeof page.nextCursor).toBe("string");
    next = page.nextCursor;
    if (page.lines.length === 0) return { pages, cursor: next };
    pages.push(page.lines);
  }
  throw new Error("logs never ended");
}

describe("CloudWatchLogStore on a Batch job", () => {
  it("reads the job's attempt stream that DescribeJobs names, page by page", async () => {
    // Prepare: a job in the emulator; its attempt names the stream its logs went to.
    const submitted = await batch.send(
      new SubmitJobCommand({
        jobName: `req_${String(++seq).padStart(26, "0")}`,
        jobQueue: jobQueueArn,
        jobDefinition: jobDefinitionArn,
      }),
    );
    const jobId = submitted.jobId as string;
    const job = (await batch.send(new DescribeJobsCommand({ jobs: [jobId] }))).jobs?.[0];
    const stream = job?.attempts?.[0]?.container?.logStreamName;
    expect(stream).toBeTruthy();
    expect(await batchAttemptStreams(batch, jobId)).toEqual([stream]);
    await writeStream(stream as string, ["epoch 1", "epoch 2", "epoch 3", "epoch 4", "epoch 5"]);
    const store = new CloudWatchLogStore({
      logs,
      batch,
      logGroup,
      jobRefOf: async (id) => (id === "req_a" ? jobId : null),
    });

    // Act
    const { pages, cursor } = await readToEnd(store, "req_a", 2);

    // Assess
    expect(pages).toEqual([["epoch 1", "epoch 2"], ["epoch 3", "epoch 4"], ["epoch 5"]]);

    // A follower that kept the cursor gets what is written later, and only that.
    await writeStream(stream as string, ["saved model"], false);
    const more = await store.read("req_a", cursor, 100);
    expect(more.lines).toEqual(["saved model"]);
  });

  it("answers an empty page with a cursor before the request has a job", async () => {
    const store = new CloudWatchLogStore({ logs, batch, logGroup, jobRefOf: async () => null });
    const page = await store.read("req_none", undefined, 10);
    expect(page.lines).toEqual([]);
    expect(typeof page.nextCursor).toBe("string");
    expect((await store.read("req_none", page.nextCursor, 10)).lines).toEqual([]);
  });

  it("finds no streams for a job Batch does not know", async () => {
    expect(await batchAttemptStreams(batch, "00000000-0000-0000-0000-000000000000")).toEqual([]);
  });
});

describe("CloudWatchLogStore across attempts", () => {
  it("reads every attempt's stream oldest first and follows the newest as it grows", async () => {
    const s1 = `${prefix}/attempt-1`;
    const s2 = `${prefix}/attempt-2`;
    const s3 = `${prefix}/attempt-3`;
    await writeStream(s1, ["a1 line 1", "a1 line 2", "a1 line 3"]);
    await writeStream(s2, ["a2 line 1", "a2 line 2"]);
    let streams = [s1, s2];
    const store = new CloudWatchLogStore({
      logs,
      batch,
      logGroup,
      jobRefOf: async () => "job-1",
      streamsOf: async (ref) => (ref === "job-1" ? streams : []),
    });

    const { pages, cursor } = await readToEnd(store, "req_multi", 2);
    expect(pages.flat()).toEqual(["a1 line 1", "a1 line 2", "a1 line 3", "a2 line 1", "a2 line 2"]);
    expect(pages[0]).toEqual(["a1 line 1", "a1 line 2"]);

    // A third attempt starts: its stream is listed before CloudWatch has created it.
    streams = [s1, s2, s3];
    const none = await store.read("req_multi", cursor, 10);
    expect(none.lines).toEqual([]);
    await writeStream(s3, ["a3 line 1"]);
    await writeStream(s2, ["a2 late line"], false);
    // The cursor had moved on to attempt 3: later lines of attempt 2 are not replayed.
    expect((await store.read("req_multi", none.nextCursor, 10)).lines).toEqual(["a3 line 1"]);
  });

  it("reads everything in one page when the limit allows", async () => {
    const s1 = `${prefix}/one-page-1`;
    const s2 = `${prefix}/one-page-2`;
    await writeStream(s1, ["x1", "x2"]);
    await writeStream(s2, ["y1"]);
    const store = new CloudWatchLogStore({
      logs,
      batch,
      logGroup,
      jobRefOf: async () => "job",
      streamsOf: async () => [s1, s2],
    });
    const page = await store.read("req_one", undefined, 100);
    expect(page.lines).toEqual(["x1", "x2", "y1"]);
    expect((await store.read("req_one", page.nextCursor, 100)).lines).toEqual([]);
  });
});

describe("CloudWatchLogStore cursors", () => {
  const store = () => new CloudWatchLogStore({ logs, batch, logGroup, jobRefOf: async () => null });
  const json = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

  for (const [what, cursor] of [
    ["not base64url", "***"],
    ["not JSON", Buffer.from("{nope").toString("base64url")],
    ["a JSON array", json([1, 2])],
    ["a negative attempt", json({ attemptIndex: -1, token: null })],
    ["a token of the wrong type", json({ attemptIndex: 0, token: 5 })],
    ["extra fields", json({ attemptIndex: 0, token: null, x: 1 })],
  ] as const) {
    it(`refuses a cursor that is ${what}`, async () => {
      const error = await store()
        .read("req_x", cursor, 10)
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidRequestError);
      expect((error as InvalidRequestError).field).toBe("cursor");
    });
  }
});

describe("CloudWatchLogStore cursors carrying a token CloudWatch never issued", () => {
  const json = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  let store: CloudWatchLogStore;
  beforeAll(async () => {
    const stream = `${prefix}/crafted`;
    await writeStream(stream, ["one", "two", "three"]);
    store = new CloudWatchLogStore({
      logs,
      batch,
      logGroup,
      jobRefOf: async () => "job",
      streamsOf: async () => [stream],
    });
  });

  it("refuses them as an invalid cursor, not as an AWS failure", async () => {
    for (const token of [
      "nope",
      "f/abc",
      "x/00000000000000000000000000000000000000000000000000000001",
    ]) {
      const error = await store
        .read("req_crafted", json({ attemptIndex: 0, token }), 10)
        .catch((e: unknown) => e);
      expect(error, token).toBeInstanceOf(InvalidRequestError);
      expect((error as InvalidRequestError).field).toBe("cursor");
    }
  });

  it("answers any token with a page or an invalid cursor", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ minLength: 1, maxLength: 80 }),
          fc
            .tuple(fc.constantFrom("f/", "b/"), fc.bigInt({ min: -(10n ** 60n), max: 10n ** 60n }))
            .map(([d, n]) => `${d}${n}`),
        ),
        fc.nat({ max: 3 }),
        async (token, attemptIndex) => {
          const outcome: unknown = await store
            .read("req_crafted", json({ attemptIndex, token }), 10)
            .catch((e: unknown) => e);
          if (outcome instanceof Error) {
            expect(outcome, `${token}: ${outcome.message}`).toBeInstanceOf(InvalidRequestError);
          } else {
            expect(Array.isArray((outcome as { lines: unknown }).lines)).toBe(true);
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe("CloudWatchLogStore errors that are not the caller's", () => {
  const refused = (name: string) => Object.assign(new Error(`${name} from the service`), { name });
  const storeOver = (client: CloudWatchLogsClient) =>
    new CloudWatchLogStore({
      logs: client,
      batch,
      logGroup,
      jobRefOf: async () => "job",
      streamsOf: async () => ["s1"],
    });

  it("keeps an InvalidParameterException a failure when the caller sent no token", async () => {
    const client = new CloudWatchLogsClient(awsClientConfig());
    mockClient(client).on(GetLogEventsCommand).rejects(refused("InvalidParameterException"));
    const error = await storeOver(client)
      .read("req_x", undefined, 10)
      .catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(InvalidRequestError);
    expect((error as Error).name).toBe("InvalidParameterException");
  });

  it("keeps a refusal of a token CloudWatch itself handed out a failure", async () => {
    const client = new CloudWatchLogsClient(awsClientConfig());
    mockClient(client)
      .on(GetLogEventsCommand, { nextToken: "f/caller" })
      .resolves({ events: [{ message: "a", timestamp: 1 }], nextForwardToken: "f/service" })
      .on(GetLogEventsCommand, { nextToken: "f/service" })
      .rejects(refused("InvalidParameterException"));
    const cursor = Buffer.from(JSON.stringify({ attemptIndex: 0, token: "f/caller" })).toString(
      "base64url",
    );
    const error = await storeOver(client)
      .read("req_x", cursor, 10)
      .catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(InvalidRequestError);
    expect((error as Error).name).toBe("InvalidParameterException");
  });

  it("keeps throttling a failure even with the caller's token", async () => {
    const client = new CloudWatchLogsClient({ ...awsClientConfig(), maxAttempts: 1 });
    mockClient(client).on(GetLogEventsCommand).rejects(refused("ThrottlingException"));
    const cursor = Buffer.from(JSON.stringify({ attemptIndex: 0, token: "f/1" })).toString(
      "base64url",
    );
    const error = await storeOver(client)
      .read("req_x", cursor, 10)
      .catch((e: unknown) => e);
    expect((error as Error).name).toBe("ThrottlingException");
  });
});
