/**
 * Per-request delivery order where deliveries travel on a queue that does not keep order
 * (the standard SQS delivery queue on AWS). Each try of a delivery first claims the request's
 * order record; the claim decides, from what was claimed before, whether the try may go out:
 *
 * - one try per request at a time: while another delivery of the request holds the lease
 *   (a try in flight), the claim answers `busy` and the try waits a few seconds;
 * - never backwards: every delivery carries an `order` (the request item's `rev` and the
 *   event's rank), and one older than the last claimed delivery is `stale` and dropped. So a
 *   `started` (or a `progress`) whose retry comes after its request's `completed` went out is
 *   never sent: the receiver sees a request's events in the order they happened, with late
 *   ones left out, never after a newer one;
 * - exactly once per delivery where it can: a delivery already delivered (or given up) is a
 *   `duplicate` (a duplicated stream record or queue message) and dropped;
 * - `started` keeps its place: while an earlier `started` is still being retried, a newer
 *   `progress` is `held` back (dropped: progress is at most once per second anyway, the next
 *   one or `completed` carries its state); only `completed` overtakes it.
 *
 * Because delivery ids are made from the dedup keys (one per event, one per second of
 * progress), a newer progress of the same second is the same delivery with a newer payload:
 * it replaces the older one's claim while that one was not delivered, and is a duplicate
 * once it was, so at most one progress per second reaches the receiver.
 */
import type { WebhookEvent } from "../core/request.ts";

/** Rank of each event within one write of the request item (an item write can make several). */
export const EVENT_RANK: Readonly<Record<WebhookEvent, number>> = {
  started: 0,
  progress: 1,
  completed: 2,
};

/** The order of an event made by the write that left the request item at revision `rev`. */
export function deliveryOrder(rev: number, event: WebhookEvent): number {
  return rev * 4 + EVENT_RANK[event];
}

/** What the order record holds: the last claimed delivery of the request. */
export interface OrderState {
  order: number;
  deliveryId: string;
  event: WebhookEvent;
  /** The last claimed delivery was delivered or given up. */
  done: boolean;
  /** A try holds the record until then (epoch ms); 0 when none does. */
  leaseUntil: number;
}

/** The delivery a try is about. */
export interface OrderedDelivery {
  id: string;
  requestId: string;
  event: WebhookEvent;
  order: number;
}

/** See the module comment. */
export type ClaimVerdict = "claim" | "busy" | "stale" | "duplicate" | "held";

/** Decides a claim (the rules of the module comment); pure. */
export function decideClaim(
  state: OrderState | null,
  delivery: OrderedDelivery,
  now: number,
): ClaimVerdict {
  if (state === null) return "claim";
  if (state.leaseUntil > now) return "busy";
  if (state.deliveryId === delivery.id) {
    if (state.done) return "duplicate";
    return delivery.order < state.order ? "stale" : "claim";
  }
  if (delivery.order <= state.order) return "stale";
  if (!state.done && state.event === "started" && delivery.event === "progress") return "held";
  return "claim";
}

/** The outcome of a claim; `token` releases it. */
export type ClaimOutcome =
  | { verdict: "claim"; token: string }
  | { verdict: Exclude<ClaimVerdict, "claim"> };

/** Durable per-request order records; every method is atomic. */
export interface DeliveryOrder {
  /**
   * Claims the request's record for one try of `delivery` for `leaseMs` (longer than a try
   * can take), or says why not.
   */
  claim(delivery: OrderedDelivery, now: number, leaseMs: number): Promise<ClaimOutcome>;
  /**
   * Ends a claim: `done` when the delivery was delivered or given up (later copies of it are
   * duplicates), else it is to be tried again. A claim whose lease ran out and was taken over
   * is left alone.
   */
  release(delivery: OrderedDelivery, token: string, done: boolean): Promise<void>;
}
