/**
 * A request record as a compute adapter receives it for a launch: STARTING at attempt 1,
 * every other field at a plain default. Tests of compute adapters (launcher, work dirs,
 * GPUs, Batch) build their records here and set only what they look at.
 */
import type { QueueConfig } from "../../functions/config/schema.ts";
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

/** A queue for one-machine launches of `command`: one CPU, no GPU, short limits. */
export function launchQueue(
  patch: Partial<QueueConfig> & Pick<QueueConfig, "command">,
): QueueConfig {
  return {
    name: "q",
    maxQueued: 10,
    maxRunning: 1,
    defaultPriority: 0,
    timeoutSeconds: 60,
    maxAttempts: 3,
    queueTtlSeconds: 60,
    cancelGraceSeconds: 0.3,
    retentionDays: 1,
    resources: { gpus: 0, vcpus: 1, memoryMiB: 512 },
    env: {},
    ...patch,
  };
}

/**
 * A QUEUED request that has not started (attempt 0 of 1), waiting an hour from `createdAt`,
 * with `patch` applied: what a store test submits.
 */
export function queuedRecord(
  patch: Partial<RequestRecord> & Pick<RequestRecord, "id" | "createdAt">,
): RequestRecord {
  return {
    tenant: "t1",
    queue: "q",
    status: "QUEUED",
    priority: 0,
    input: {},
    metadata: {},
    webhook: null,
    idempotencyKey: null,
    startedAt: null,
    finishedAt: null,
    updatedAt: patch.createdAt,
    attempt: 0,
    maxAttempts: 1,
    platformRetries: 0,
    cancelRequested: false,
    timeoutSeconds: 60,
    queueTtlSeconds: 3600,
    expiresAt: patch.createdAt + 3_600_000,
    progress: null,
    error: null,
    jobRef: null,
    ...patch,
  };
}
