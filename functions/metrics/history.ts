/**
 * A small rolling history of each queue for the dashboard's chart (`GET
 * /v1/queues/{queue}/stats`), kept in the serving process: queue counts sampled at most
 * every few seconds, and the wait of each request when it first ran. The embedded server
 * samples on a timer and sees every start; an API Lambda keeps only what its own execution
 * environment saw (docs/aws.md).
 */
import type { QueueCounts } from "../core/ports.ts";
import type { RequestRecord } from "../core/request.ts";
import type { ChangeEvent } from "../core/usecases/deps.ts";

export interface QueueSample extends QueueCounts {
  /** epoch ms */
  at: number;
}

export interface WaitSample {
  /** When the request first ran (epoch ms). */
  at: number;
  seconds: number;
  /** Whose request it was: the stats route shows a tenant only its own. */
  tenant: string;
}

export interface QueueHistoryOptions {
  /** How long samples are kept (ms); default an hour. */
  windowMs?: number;
  /** A sample closer than this to the previous one replaces it (ms); default 5 s. */
  minIntervalMs?: number;
  /** Waits kept per queue, newest; default 5000. */
  maxWaits?: number;
}

/** Rolling per-queue samples and waits; memory is bounded by the window and `maxWaits`. */
export class QueueHistory {
  readonly windowMs: number;
  readonly #minIntervalMs: number;
  readonly #maxWaits: number;
  readonly #samples = new Map<string, QueueSample[]>();
  readonly #waits = new Map<string, WaitSample[]>();

  constructor(options: QueueHistoryOptions = {}) {
    this.windowMs = options.windowMs ?? 3_600_000;
    this.#minIntervalMs = options.minIntervalMs ?? 5_000;
    this.#maxWaits = options.maxWaits ?? 5_000;
  }

  /** Records the queue's counts at `at`. */
  record(queue: string, counts: QueueCounts, at: number): void {
    const list = this.#samples.get(queue) ?? [];
    this.#samples.set(queue, list);
    const last = list.at(-1);
    const sample = { at, queued: counts.queued, running: counts.running };
    if (last && at - last.at < this.#minIntervalMs) {
      list[list.length - 1] = sample;
    } else {
      list.push(sample);
    }
    prune(list, at - this.windowMs);
  }

  /** For `CoreDeps.onChange`: a request's first RUNNING records how long it waited. */
  onChange(request: RequestRecord, change: ChangeEvent): void {
    if (change !== "started" || request.startedAt === null) return;
    const list = this.#waits.get(request.queue) ?? [];
    this.#waits.set(request.queue, list);
    list.push({
      at: request.startedAt,
      seconds: Math.max(0, request.startedAt - request.createdAt) / 1000,
      tenant: request.tenant,
    });
    if (list.length > this.#maxWaits) list.splice(0, list.length - this.#maxWaits);
    prune(list, request.startedAt - this.windowMs);
  }

  /** The queue's samples and `tenant`'s waits at or after `from`, oldest first. */
  view(
    queue: string,
    tenant: string,
    from: number,
  ): { samples: QueueSample[]; waits: Omit<WaitSample, "tenant">[] } {
    const samples = (this.#samples.get(queue) ?? []).filter((s) => s.at >= from);
    const waits = (this.#waits.get(queue) ?? [])
      .filter((w) => w.tenant === tenant && w.at >= from)
      .sort((a, b) => a.at - b.at)
      .map(({ at, seconds }) => ({ at, seconds }));
    return { samples, waits };
  }
}

/** Drops the leading entries older than `cutoff` (entries are appended in time order). */
function prune(list: { at: number }[], cutoff: number): void {
  let n = 0;
  while (n < list.length && (list[n]?.at ?? 0) < cutoff) n++;
  if (n > 0) list.splice(0, n);
}
