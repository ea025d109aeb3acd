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
