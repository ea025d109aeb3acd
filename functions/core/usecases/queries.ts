import { tenantLimits } from "../../config/schema.ts";
import { InvalidRequestError, NoResultError, NotReadyError } from "../errors.ts";
import type { Artifact, ListPage, LogPage, QueueCounts, UsageFigures } from "../ports.ts";
import { isTerminal, noCapacityDetail, type RequestRecord, RequestStatus } from "../request.ts";
import { type CoreDeps, getOwned, queueOrThrow } from "./deps.ts";

/** Why a QUEUED or STARTING request is not running yet (SPEC §2 `waitReason`). */
export type WaitReason = "slots_busy" | "tenant_limit" | "dispatching" | "starting" | "no_capacity";

export interface WaitInfo {
  waitReason: WaitReason | null;
  waitDetail: string | null;
  /** Epoch ms; QUEUED only, and only once the queue has finished requests to go by. */
  estimatedStartAt: number | null;
}

/** What a request that neither waits nor starts shows. */
export const NO_WAIT: WaitInfo = { waitReason: null, waitDetail: null, estimatedStartAt: null };

export interface RequestView {
  request: RequestRecord;
  /** While QUEUED: how many requests of its queue start before it; otherwise null. */
  position: number | null;
  wait: WaitInfo;
}

export type WaitDeps = Pick<CoreDeps, "store" | "queues" | "clock"> &
  Partial<Pick<CoreDeps, "compute">>;

/**
 * A request with its position and why it waits: the position read from the store while
 * QUEUED (unless `known`, a position the caller already has from the same write), null
 * otherwise; `usage`, figures the same write already read, saves reading them again.
 */
export async function viewOf(
  request: RequestRecord,
  deps: WaitDeps,
  known?: number,
  usage?: UsageFigures,
): Promise<RequestView> {
  const position =
    request.status !== RequestStatus.QUEUED
      ? null
      : (known ?? (await deps.store.position(request)));
  const positions = new Map(position === null ? [] : [[request.id, position]]);
  const wait = (await waitInfos([request], positions, deps, usage)).get(request.id) ?? NO_WAIT;
  return { request, position, wait };
}

export async function getRequest(tenant: string, id: string, deps: WaitDeps): Promise<RequestView> {
  return viewOf(await getOwned(deps.store, tenant, id), deps);
}

/**
 * `waitReason`, `waitDetail` and `estimatedStartAt` of several requests (one request, or a
 * list page of one tenant): the queue's and the tenant's counts and the queue's run
 * summary are read once per queue.
 *
 * QUEUED: `tenant_limit` when the tenant runs its `maxRunningPerTenant` (below the queue's
 * `maxRunning`); else `dispatching` when fewer requests start before it than slots are
 * free; else `slots_busy`. The estimate: requests ahead fill the free slots, then go
 * `maxRunning` at a time, each wave taking the recent mean run time (the first one half of
 * it, the running ones being halfway on average). STARTING: `no_capacity` when the compute
 * says its job waits for capacity, or when the request's stored wait for an instance says
 * so at the clock's now (request.ts noCapacityDetail), else `starting`.
 */
export async function waitInfos(
  requests: readonly RequestRecord[],
  positions: ReadonlyMap<string, number>,
  deps: WaitDeps,
  /** Figures already read (a submit's own read), for the first request's queue and tenant. */
  known?: UsageFigures,
): Promise<Map<string, WaitInfo>> {
  const out = new Map<string, WaitInfo>();
  const figures = new Map<string, Promise<UsageFigures>>();
  const now = deps.clock.now();
  const first = requests[0];
  if (known && first) figures.set(`${first.queue}\u0000${first.tenant}`, Promise.resolve(known));
  const read = async (queue: string, tenant: string): Promise<UsageFigures> => {
    if (deps.store.usage) return deps.store.usage(queue, tenant, now);
    const [q, t, run] = await Promise.all([
      deps.store.queueCounts(queue),
      deps.store.tenantCounts(queue, tenant),
      deps.store.runStats?.(queue, now) ?? Promise.resolve(null),
    ]);
    return { queue: q, tenant: t, run };
  };
  for (const r of requests) {
    if (r.status === RequestStatus.STARTING || r.status === RequestStatus.RUNNING) {
      if (r.status === RequestStatus.RUNNING) {
        out.set(r.id, NO_WAIT);
        continue;
      }
      // The compute's own view (embedded: the GPU pool), else what the backend reported and
      // the request keeps (AWS: its Batch job RUNNABLE for over NO_CAPACITY_AFTER_MS).
      const detail = deps.compute?.capacityWait?.(r)?.detail ?? noCapacityDetail(r, now);
      out.set(r.id, {
        waitReason: detail !== null ? "no_capacity" : "starting",
        waitDetail: detail,
        estimatedStartAt: null,
      });
      continue;
    }
    const queue = Object.hasOwn(deps.queues, r.queue) ? deps.queues[r.queue] : undefined;
    if (r.status !== RequestStatus.QUEUED || !queue) {
      out.set(r.id, NO_WAIT);
      continue;
    }
    const key = `${r.queue}\u0000${r.tenant}`;
    let pending = figures.get(key);
    if (!pending) {
      pending = read(r.queue, r.tenant);
      figures.set(key, pending);
    }
    const { queue: q, tenant: t, run } = await pending;
    const own = tenantLimits(queue, r.tenant).maxRunning;
    const position = positions.get(r.id) ?? 0;
    const free = Math.max(0, queue.maxRunning - (q?.running ?? 0));
    const waitReason: WaitReason =
      own < queue.maxRunning && (t?.running ?? 0) >= own
        ? "tenant_limit"
        : position < free
          ? "dispatching"
          : "slots_busy";
    let estimatedStartAt: number | null = null;
    if (run && run.samples > 0) {
      const waves = position < free ? 0 : Math.floor((position - free) / queue.maxRunning) + 0.5;
      estimatedStartAt = Math.round(now + waves * run.meanMs);
    }
    out.set(r.id, { waitReason, waitDetail: null, estimatedStartAt });
  }
  return out;
}

export interface ListCommand {
  tenant: string;
  queue: string;
  statuses?: readonly RequestStatus[] | undefined;
  limit: number;
  cursor?: string | undefined;
}

/** A list page with the positions of its QUEUED items (by id). */
export interface ListView extends ListPage {
  positions: ReadonlyMap<string, number>;
}

export async function listRequests(
  cmd: ListCommand,
  deps: Pick<CoreDeps, "store" | "queues">,
): Promise<ListView> {
  queueOrThrow(deps.queues, cmd.queue);
  const page = await deps.store.list({
    tenant: cmd.tenant,
    queue: cmd.queue,
    limit: cmd.limit,
    ...(cmd.statuses?.length ? { statuses: cmd.statuses } : {}),
    ...(cmd.cursor !== undefined ? { cursor: cmd.cursor } : {}),
  });
  // The page's QUEUED items are counted together: the cost is that of the deepest.
  const positions = await deps.store.positions(
    page.items.filter((r) => r.status === RequestStatus.QUEUED),
  );
  return { ...page, positions };
}

export interface ResultView {
  id: string;
  output: unknown;
  artifacts: Artifact[];
}

export async function getResult(
  tenant: string,
  id: string,
  deps: Pick<CoreDeps, "store" | "results">,
): Promise<ResultView> {
  const r = await getOwned(deps.store, tenant, id);
  if (r.status === RequestStatus.SUCCEEDED) {
    const { output, artifacts } = await deps.results.getResult(r.id);
    return { id: r.id, output, artifacts };
  }
  if (isTerminal(r.status)) throw new NoResultError(r.status, r.error);
  throw new NotReadyError(r.status);
}

export async function readLogs(
  tenant: string,
  id: string,
  cursor: string | undefined,
  limit: number,
  deps: Pick<CoreDeps, "store" | "logs">,
): Promise<LogPage> {
  const r = await getOwned(deps.store, tenant, id);
  return deps.logs.read(r.id, cursor, limit);
}

export interface QueueView extends QueueCounts {
  name: string;
  maxQueued: number;
  maxRunning: number;
  /** The caller's own usage of the queue and its limits there, when a caller is known. */
  tenant?: QueueCounts & { maxQueued: number; maxRunning: number };
}

export async function queueStats(
  name: string,
  deps: Pick<CoreDeps, "store" | "queues">,
  tenant?: string,
): Promise<QueueView> {
  const q = queueOrThrow(deps.queues, name);
  const [counts, own] = await Promise.all([
    deps.store.queueCounts(q.name),
    tenant === undefined ? undefined : deps.store.tenantCounts(q.name, tenant),
  ]);
  const view: QueueView = {
    name: q.name,
    maxQueued: q.maxQueued,
    maxRunning: q.maxRunning,
    ...counts,
  };
  if (tenant !== undefined && own) {
    const limits = tenantLimits(q, tenant);
    view.tenant = { ...own, maxQueued: limits.maxQueued, maxRunning: limits.maxRunning };
  }
  return view;
}

export async function listQueues(
  deps: Pick<CoreDeps, "store" | "queues">,
  tenant?: string,
): Promise<QueueView[]> {
  return Promise.all(Object.keys(deps.queues).map((name) => queueStats(name, deps, tenant)));
}

export function assertLimit(limit: number, max: number): void {
  if (!Number.isInteger(limit) || limit < 1 || limit > max) {
    throw new InvalidRequestError(`limit must be an integer from 1 to ${max}`, "limit");
  }
}
