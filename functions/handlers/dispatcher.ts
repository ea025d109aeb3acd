/**
 * The dispatcher: consumes wake-ups from the FIFO dispatch queue (one message group per
 * longrun queue, so one dispatcher per queue at a time) and starts waiting requests while
 * slots are free. A failed record is reported back so that SQS retries it (and, FIFO, the
 * records after it in the same group), then moves it to the DLQ after maxReceiveCount.
 */
import { processPartialResponse, SqsFifoPartialProcessorAsync } from "@aws-lambda-powertools/batch";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import { dispatchWhenSettled, parseDispatchMessage } from "../adapters/aws/sqs-trigger.ts";
import type { CoreDeps } from "../core/usecases/deps.ts";
import { dispatchQueue } from "../core/usecases/lifecycle.ts";
import { lambdaDeps, logger } from "./context.ts";

/** Builds the handler over given ports (tests pass ports on an emulator). */
export function createDispatcherHandler(
  deps: CoreDeps,
  options: { sleep?: (ms: number) => Promise<void> } = {},
): (event: SQSEvent, context: Context) => Promise<SQSBatchResponse> {
  const record = async (r: SQSRecord): Promise<void> => {
    const message = parseDispatchMessage(r.body);
    if (!message || !Object.hasOwn(deps.queues, message.queue)) {
      // Not a wake-up we can act on (hand-sent, or a queue removed from the config):
      // retrying could never help, so it is dropped with a trace.
      logger.warn("dropping an unusable dispatch message", { messageId: r.messageId });
      return;
    }
    // One pass, once every wake-up deduplicated against this one has been written.
    await dispatchWhenSettled(
      message,
      async (queue) => {
        const started = await dispatchQueue(queue, deps);
        logger.info("dispatched", { queue, started });
      },
      options.sleep ? { sleep: options.sleep } : {},
    );
  };
  return async (event, context) => {
    const processor = new SqsFifoPartialProcessorAsync();
    return processPartialResponse(event, record, processor, { context });
  };
}

let cached: ReturnType<typeof createDispatcherHandler> | undefined;

export const handler = (event: SQSEvent, context: Context): Promise<SQSBatchResponse> => {
  cached ??= createDispatcherHandler(lambdaDeps());
  return cached(event, context);
};
