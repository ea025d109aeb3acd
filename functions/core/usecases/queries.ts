import { InvalidRequestError, NoResultError, NotReadyError } from "../errors.ts";
import type { Artifact, ListPage, LogPage, QueueCounts } from "../ports.ts";
import { isTerminal, type RequestRecord, RequestStatus } from "../request.ts";
import { type CoreDeps, getOwned, queueOrThrow } from "./deps.ts";

export interface RequestView {
  request: RequestRecord;
  /** While QUEUED: how many requests of its queue start before it; otherwise null. */
  position: number | null;
}

/**
 * A request with its position: read from the store while QUEUED (unless `known`, a
 * position the caller already has from the same write), null otherwise.
 */
export async function viewOf(
  request: RequestRecord,
  deps: Pick<CoreDeps, "store">,
  known?: number,
): Promise<RequestView> {
  if (request.status !== RequestStatus.QUEUED) return { request, position: null };
  return { request, position: known ?? (await deps.store.position(request)) };
}

export async function getRequest(
  tenant: string,
  id: string,
  deps: Pick<CoreDeps, "store">,
): Promise<RequestView> {
  return viewOf(await getOwned(deps.store, tenant, id), deps);
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
}

export async function queueStats(
  name: string,
  deps: Pick<CoreDeps, "store" | "queues">,
): Promise<QueueView> {
  const q = queueOrThrow(deps.queues, name);
  const counts = await deps.store.queueCounts(q.name);
  return { name: q.name, maxQueued: q.maxQueued, maxRunning: q.maxRunning, ...counts };
}

export async function listQueues(deps: Pick<CoreDeps, "store" | "queues">): Promise<QueueView[]> {
  return Promise.all(Object.keys(deps.queues).map((name) => queueStats(name, deps)));
}

export function assertLimit(limit: number, max: number): void {
  if (!Number.isInteger(limit) || limit < 1 || limit > max) {
    throw new InvalidRequestError(`limit must be an integer from 1 to ${max}`, "limit");
  }
}
