/**
 * A request record as a compute adapter receives it for a launch: STARTING at attempt 1,
 * every other field at a plain default. Tests of compute adapters (launcher, work dirs,
 * GPUs, Batch) build their records here and set only what they look at.
 */
import type { RequestRecord } from "../../functions/core/request.ts";

/** A STARTING request of attempt 1 with `patch` applied. */
export function startingRecord(
  patch: Partial<RequestRecord> & Pick<RequestRecord, "id">,
): RequestRecord {
  return {
    tenant: "t",
    queue: "q",
    status: "STARTING",
    priority: 0,
    input: {},
    metadata: {},
    webhook: null,
    idempotencyKey: null,
    createdAt: 0,
    startedAt: null,
    finishedAt: null,
    updatedAt: 0,
    attempt: 1,
    maxAttempts: 3,
    platformRetries: 0,
    cancelRequested: false,
    timeoutSeconds: 60,
    queueTtlSeconds: 60,
    expiresAt: 60_000,
    progress: null,
    error: null,
    jobRef: null,
    ...patch,
  };
}
