/**
 * Rules every RequestStore adapter applies the same way: written once here so the SQLite
 * and DynamoDB stores cannot drift apart.
 */
import { InvalidRequestError } from "./errors.ts";
import type { TransitionCommand } from "./ports.ts";
import { canTransition, type RequestRecord, statusClass } from "./request.ts";

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
