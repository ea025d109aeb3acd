/**
 * Domain records → the JSON the API shows. Only the fields SPEC §2 names leave the
 * service: tenant, job handles, idempotency keys and webhook targets stay inside.
 */
import type { ListPage } from "../core/ports.ts";
import type { RequestRecord } from "../core/request.ts";
import type { UploadRecord } from "../core/upload.ts";
import { NO_WAIT, type QueueView, type WaitInfo } from "../core/usecases/queries.ts";
import type { RequestJson, RequestSummaryJson, UploadJson } from "./schemas.ts";

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function isoOrNull(ms: number | null): string | null {
  return ms === null ? null : iso(ms);
}

/** The SPEC Request of `record`, without `input` (as list items show it). */
export function requestSummaryView(
  record: RequestRecord,
  position: number | null = null,
  wait: WaitInfo = NO_WAIT,
): RequestSummaryJson {
  const waiting = record.status === "QUEUED" || record.status === "STARTING";
  return {
    id: record.id,
    queue: record.queue,
    status: record.status,
    priority: record.priority,
    metadata: { ...record.metadata },
    createdAt: iso(record.createdAt),
    startedAt: isoOrNull(record.startedAt),
    finishedAt: isoOrNull(record.finishedAt),
    attempt: record.attempt,
    maxAttempts: record.maxAttempts,
    cancelRequested: record.cancelRequested,
    // SPEC: a position exists only while QUEUED, whatever the caller passed.
    position: record.status === "QUEUED" ? position : null,
    progress: record.progress
      ? {
          current: record.progress.current,
          total: record.progress.total,
          message: record.progress.message,
          updatedAt: iso(record.progress.updatedAt),
        }
      : null,
    error: record.error ? { code: record.error.code, message: record.error.message } : null,
    files: Object.fromEntries(
      Object.entries(record.files ?? {}).map(([name, f]) => [name, { size: f.size }]),
    ),
    retryOf: record.retryOf ?? null,
    waitReason: waiting ? wait.waitReason : null,
    waitDetail: waiting ? wait.waitDetail : null,
    estimatedStartAt: record.status === "QUEUED" ? isoOrNull(wait.estimatedStartAt) : null,
  };
}

/**
 * The SPEC Request of `record`. `position` is the queue position while QUEUED; the
 * caller computes it (getRequest does), since it needs the store.
 */
export function requestView(
  record: RequestRecord,
  position: number | null = null,
  wait: WaitInfo = NO_WAIT,
): RequestJson {
  const { id, queue, status, priority, ...rest } = requestSummaryView(record, position, wait);
  // Key order as in SPEC's example, so that humans reading raw JSON find what they expect.
  return { id, queue, status, priority, input: record.input ?? null, ...rest };
}

/**
 * A list page: items without `input`, newest first as the store returned them.
 * `positions` holds the queue position of each QUEUED item, by id.
 */
export function listView(
  page: ListPage,
  positions: ReadonlyMap<string, number> = new Map(),
  waits: ReadonlyMap<string, WaitInfo> = new Map(),
): {
  items: RequestSummaryJson[];
  nextCursor: string | null;
} {
  return {
    items: page.items.map((r) =>
      requestSummaryView(r, positions.get(r.id) ?? null, waits.get(r.id) ?? NO_WAIT),
    ),
    nextCursor: page.nextCursor,
  };
}

/** A queue's limits and counts; built field by field so store internals never leak. */
export function queueView(q: QueueView): {
  name: string;
  maxQueued: number;
  maxRunning: number;
  queued: number;
  running: number;
  tenant?: { queued: number; running: number; maxQueued: number; maxRunning: number };
} {
  return {
    name: q.name,
    maxQueued: q.maxQueued,
    maxRunning: q.maxRunning,
    queued: q.queued,
    running: q.running,
    ...(q.tenant
      ? {
          tenant: {
            queued: q.tenant.queued,
            running: q.tenant.running,
            maxQueued: q.tenant.maxQueued,
            maxRunning: q.tenant.maxRunning,
          },
        }
      : {}),
  };
}

/** An upload as `GET /v1/uploads/{id}` shows it (never its tenant or checksum). */
export function uploadView(u: UploadRecord): UploadJson {
  return {
    id: u.id,
    filename: u.filename,
    size: u.size,
    status: u.status,
    createdAt: iso(u.createdAt),
    expiresAt: iso(u.expiresAt),
  };
}
