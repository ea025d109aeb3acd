/**
 * Rules every RequestStore adapter applies the same way: written once here so the SQLite
 * and DynamoDB stores cannot drift apart.
 */
import { InvalidRequestError } from "./errors.ts";
import type { TransitionCommand } from "./ports.ts";
import { canTransition, type RequestRecord, readyOrderKey, statusClass } from "./request.ts";

/** Characters and length of any id a store holds; the key segment every adapter accepts. */
const REQUEST_ID_ALPHABET = /^[A-Za-z0-9_-]{1,128}$/;

/** List cursors are opaque to callers: the base64url JSON of the last item's `[createdAt, id]`. */
export function encodeListCursor(r: Pick<RequestRecord, "createdAt" | "id">): string {
  return Buffer.from(JSON.stringify([r.createdAt, r.id])).toString("base64url");
}

/** @throws InvalidRequestError (field `cursor`) for anything {@link encodeListCursor} did not make. */
export function decodeListCursor(cursor: string): { createdAt: number; id: string } {
  const invalid = () => new InvalidRequestError("cursor is not one this API returned", "cursor");
  // Buffer.from(…, "base64url") silently skips foreign characters; refuse them first.
  if (!/^[A-Za-z0-9_-]{1,1024}$/.test(cursor)) throw invalid();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    throw invalid();
  }
  if (!Array.isArray(parsed) || parsed.length !== 2) throw invalid();
  const [createdAt, id] = parsed as unknown[];
  if (!Number.isSafeInteger(createdAt) || (createdAt as number) < 0 || typeof id !== "string") {
    throw invalid();
  }
  // Request ids are `req_` and a ULID (adapters/ids.ts). Anything outside that alphabet was
  // not made here, and would reach the stores' key conditions, where a lone surrogate or an
  // oversized key is the service's error (a 5xx) instead of the caller's.
  if (!REQUEST_ID_ALPHABET.test(id)) throw invalid();
  return { createdAt: createdAt as number, id };
}

/**
 * Checks a transition command against the lifecycle table before anything is written, so a
 * programming error fails loudly instead of corrupting counters: `from` must be non-empty and
 * of one status class (so the counter change is known), and each move must be allowed.
 */
export function assertTransitionCommand(cmd: TransitionCommand): void {
  const first = cmd.from[0];
  if (first === undefined) throw new Error(`transition of ${cmd.id}: "from" is empty`);
  if (cmd.from.some((s) => statusClass(s) !== statusClass(first))) {
    throw new Error(
      `transition of ${cmd.id}: "from" [${cmd.from.join(", ")}] mixes status classes, so the counter change is unknown`,
    );
  }
  const illegal = cmd.from.find((s) => !canTransition(s, cmd.to ?? s));
  if (illegal !== undefined) {
    throw new Error(`transition of ${cmd.id}: ${illegal} → ${cmd.to ?? illegal} is not allowed`);
  }
}

/** One queue and priority of a {@link positionWalk}, its requests in start order. */
export interface PositionWalkGroup {
  queue: string;
  priority: number;
  ordered: RequestRecord[];
}

/**
 * How to count the positions of several QUEUED requests (a list page) for the price of the
 * deepest: per queue and priority, take the requests in start order; each one's position
 * is the count of higher priorities plus, continuing from the request before it, the
 * requests of its own priority from that one (included) up to itself (excluded). Every
 * index entry is then read once, not once per request.
 */
export function positionWalk(requests: readonly RequestRecord[]): PositionWalkGroup[] {
  const groups = new Map<string, PositionWalkGroup>();
  for (const r of requests) {
    const key = `${r.priority}\u0000${r.queue}`;
    const group = groups.get(key);
    if (group) group.ordered.push(r);
    else groups.set(key, { queue: r.queue, priority: r.priority, ordered: [r] });
  }
  for (const group of groups.values()) {
    const keys = new Map(group.ordered.map((r) => [r.id, readyOrderKey(r)]));
    group.ordered.sort((a, b) => {
      const ka = keys.get(a.id) as string;
      const kb = keys.get(b.id) as string;
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    });
  }
  return [...groups.values()];
}

/** One tenant with QUEUED requests at the priority of a {@link fairPositionPlan}. */
export interface FairTenant {
  tenant: string;
  /** Its STARTING + RUNNING requests plus its QUEUED ones of higher priorities. */
  level: number;
  /** Its QUEUED requests at the priority. */
  queued: number;
}

/** What a store must look up to finish a fair position: a tenant's `index`-th request. */
export interface FairProbe {
  tenant: string;
  /** 0-based place in the tenant's start order at the priority. */
  index: number;
}

/**
 * The first half of a position under fair share (SPEC §3), for `request` (tenant X,
 * priority p). Requests start by priority; within p, each start goes to the tenant of
 * lowest level (active + started), ties to the oldest head. Each tenant's requests
 * therefore start in the order of their key (level of the tenant when they start, then
 * age), and a request's position is the number of requests with a smaller key: all of
 * higher priorities, the `own` requests of X before it, and, for each other tenant T, those
 * started below X's level L, plus the one started at level L if it is older. That last one
 * is the only request whose age matters: the returned probes name it, one per tenant.
 *
 * The model assumes that nothing new arrives and that active requests do not end: the
 * order is exact, and a tenant at its `maxRunningPerTenant` only starts later than it says.
 */
export function fairPositionPlan(input: {
  tenant: string;
  /** QUEUED requests of the queue at higher priorities. */
  higher: number;
  /** QUEUED requests of X at p that sort before the request. */
  own: number;
  /** Every tenant with QUEUED requests at p, X included. */
  tenants: readonly FairTenant[];
}): { base: number; probes: FairProbe[] } {
  const me = input.tenants.find((t) => t.tenant === input.tenant);
  const level = (me?.level ?? 0) + input.own;
  let base = input.higher + input.own;
  const probes: FairProbe[] = [];
  for (const t of input.tenants) {
    if (t.tenant === input.tenant || t.queued <= 0) continue;
    const below = level - t.level;
    base += Math.min(t.queued, Math.max(0, below));
    if (below >= 0 && below < t.queued) probes.push({ tenant: t.tenant, index: below });
  }
  return { base, probes };
}

/**
 * The second half: `keys` holds the {@link readyOrderKey} found for each probe (missing: the
 * request has gone meanwhile); each one older than `request` starts before it.
 */
export function fairPositionFinish(
  request: Pick<RequestRecord, "priority" | "createdAt" | "id">,
  plan: { base: number; probes: readonly FairProbe[] },
  keys: ReadonlyMap<string, string | null>,
): number {
  const own = readyOrderKey(request);
  let n = plan.base;
  for (const probe of plan.probes) {
    const key = keys.get(probe.tenant);
    if (key != null && key < own) n++;
  }
  return n;
}

/**
 * The claim rule of SPEC §3 over the heads of the waiting tenants: the highest priority,
 * then the fewest active, then the oldest head (smallest {@link readyOrderKey} within one
 * priority). Tenants at their limit must be left out by the caller.
 */
export function pickFairHead<H extends { priority: number; active: number; key: string }>(
  heads: readonly H[],
): H | undefined {
  let best: H | undefined;
  for (const h of heads) {
    if (
      !best ||
      h.priority > best.priority ||
      (h.priority === best.priority &&
        (h.active < best.active || (h.active === best.active && h.key < best.key)))
    ) {
      best = h;
    }
  }
  return best;
}
