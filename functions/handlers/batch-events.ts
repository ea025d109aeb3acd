/**
 * Batch job state changes (EventBridge rule → SQS → here) applied to requests. Events come
 * late, twice and out of order; each becomes one conditional write that ignores stale ones.
 */
import { BatchProcessor, EventType, processPartialResponse } from "@aws-lambda-powertools/batch";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import { parseBatchEvent } from "../adapters/aws/batch-events.ts";
import { AWS_ENV } from "../config/env.ts";
import type { CoreDeps } from "../core/usecases/deps.ts";
import { recordJobEvent } from "../core/usecases/lifecycle.ts";
import { lambdaDeps, logger } from "./context.ts";

/** Builds the handler over given ports (tests pass ports on an emulator). */
export function createBatchEventsHandler(
  deps: CoreDeps,
  options: { jobQueueArn?: string | undefined } = {},
): (event: SQSEvent, context: Context) => Promise<SQSBatchResponse> {
  const record = async (r: SQSRecord): Promise<void> => {
    const event = parseBatchEvent(
      r.body,
      options.jobQueueArn ? { jobQueueArn: options.jobQueueArn } : {},
    );
    if (!event) {
      logger.debug("ignoring an event that is not about a longrun job", { messageId: r.messageId });
      return;
    }
    await recordJobEvent(event, deps);
    logger.info("job event", {
      requestId: event.requestId,
      type: event.type,
      attempt: event.attempt,
    });
  };
  return async (event, context) => {
    const processor = new BatchProcessor(EventType.SQS);
    return processPartialResponse(event, record, processor, { context });
  };
}

let cached: ReturnType<typeof createBatchEventsHandler> | undefined;

export const handler = (event: SQSEvent, context: Context): Promise<SQSBatchResponse> => {
  cached ??= createBatchEventsHandler(lambdaDeps(), {
    jobQueueArn: process.env[AWS_ENV.batchJobQueue],
  });
  return cached(event, context);
};
