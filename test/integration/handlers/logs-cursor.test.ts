import {
  CreateLogGroupCommand,
  CreateLogStreamCommand,
  PutLogEventsCommand,
} from "@aws-sdk/client-cloudwatch-logs";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_BATCH_LOG_GROUP } from "../../../functions/adapters/aws/cloudwatch-logs.ts";
import { createHarness, type Harness } from "./harness.ts";

let h: Harness;
let id: string;

const cursorOf = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

beforeAll(async () => {
  h = await createHarness("hlogs");
  id = await h.submit("finetune", { input: { epochs: 1 } });
  await h.drainDispatch();
  // The job's log stream, as Batch names it, holds three lines in Batch's log group.
  const jobId = (await h.jobsOf(id))[0]?.jobId as string;
  const stream = (await h.describeJob(jobId)).attempts?.[0]?.container?.logStreamName as string;
  expect(stream).toBeTruthy();
  const logs = h.clients.logs;
  await logs
    .send(new CreateLogGroupCommand({ logGroupName: DEFAULT_BATCH_LOG_GROUP }))
    .catch((error: { name?: string }) => {
      // Other files share the emulator's one Batch log group.
      if (error.name !== "ResourceAlreadyExistsException") throw error;
    });
  await logs.send(
    new CreateLogStreamCommand({ logGroupName: DEFAULT_BATCH_LOG_GROUP, logStreamName: stream }),
  );
  const at = Date.now();
  await logs.send(
    new PutLogEventsCommand({
      logGroupName: DEFAULT_BATCH_LOG_GROUP,
      logStreamName: stream,
      logEvents: ["epoch 1", "epoch 2", "done"].map((message, i) => ({
        message,
        timestamp: at + i,
      })),
    }),
  );
});

/** GET /v1/requests/{id}/logs through the API Lambda handler, logs read from CloudWatch. */
describe("logs cursors through the API handler (CloudWatch, moto)", () => {
  it("pages a job's CloudWatch log with the cursors it hands out", async () => {
    const first = await h.api("GET", `/v1/requests/${id}/logs`, { query: { limit: "2" } });
    expect(first.status).toBe(200);
    expect(first.body.lines).toEqual(["epoch 1", "epoch 2"]);
    const rest = await h.api("GET", `/v1/requests/${id}/logs`, {
      query: { cursor: first.body.nextCursor },
    });
    expect(rest.status).toBe(200);
    expect(rest.body.lines).toEqual(["done"]);
  });

  it("answers 400 invalid_request to a cursor whose token CloudWatch refuses", async () => {
    const res = await h.api("GET", `/v1/requests/${id}/logs`, {
      query: { cursor: cursorOf({ attemptIndex: 0, token: "f/not-a-token" }) },
    });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ code: "invalid_request" });
  });

  it("answers every crafted token below 500", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ minLength: 1, maxLength: 60 }),
          fc
            .tuple(
              fc.constantFrom("f/", "b/", ""),
              fc.bigInt({ min: -(10n ** 57n), max: 10n ** 57n }),
            )
            .map(([d, n]) => `${d}${n}`),
        ),
        fc.nat({ max: 2 }),
        async (token, attemptIndex) => {
          const res = await h.api("GET", `/v1/requests/${id}/logs`, {
            query: { cursor: cursorOf({ attemptIndex, token }) },
          });
          expect(res.status, token).toBeLessThan(500);
          if (res.status >= 400) expect(res.body.code).toBe("invalid_request");
        },
      ),
      { numRuns: 100 },
    );
  });
});
