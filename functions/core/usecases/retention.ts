import type { CoreDeps } from "./deps.ts";

const DAY_MS = 86_400_000;

export interface RetentionDeps extends Pick<CoreDeps, "store" | "queues" | "clock"> {
  /** Deletes what a request left outside the store: outputs, checkpoints, logs. Idempotent. */
  purgeData: (requestId: string) => Promise<void>;
}

/**
 * Deletes finished requests older than their queue's `retentionDays`, with their
 * idempotency keys, outputs, checkpoints and logs (SPEC §1), where the store has no TTL of
 * its own. Files go first and the row last, so a crash in between leaves a row whose files
 * are gone, which the next run deletes — never files nobody can find.
 * @returns how many requests were deleted.
 */
export async function purgeExpiredRequests(deps: RetentionDeps, limit = 500): Promise<number> {
  const { store } = deps;
  if (!store.findFinishedBefore || !store.deleteFinished) return 0;
  const now = deps.clock.now();
  let deleted = 0;
  for (const queue of Object.values(deps.queues)) {
    const ids = await store.findFinishedBefore(
      queue.name,
      now - queue.retentionDays * DAY_MS,
      limit,
    );
    for (const id of ids) {
      await deps.purgeData(id);
      if (await store.deleteFinished(id)) deleted++;
    }
  }
  return deleted;
}
