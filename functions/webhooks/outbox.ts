/**
 * The webhook outbox: ports for durable deliveries and tenant secrets, and the use case that
 * turns a request's state change into the deliveries SPEC §2 asks for.
 *
 * Events: `started` once (the first RUNNING; its dedup key `<id>:started` makes a repeated
 * notification harmless), `completed` once (`<id>:completed`), and `progress` at most once per
 * second per request (`<id>:progress:<floor(now / 1000)>`). Progress coalescing, chosen here:
 * - a second progress in the same second replaces the payload of that second's delivery
 *   while it is still waiting for its first try, so the latest state of the second is sent;
 *   once that delivery is being tried or was sent, the later progress of the same second is
 *   dropped (the next second's progress, or `completed`, carries it);
 * - a newer progress (or `completed`) supersedes every older progress delivery of the same
 *   request that is still pending and not being tried: those are marked `superseded` and
 *   never sent, so a receiver that was down gets only the latest progress, not a backlog.
 *
 * Order: the outbox hands out at most one pending delivery per request at a time, oldest
 * first, so a request's events arrive in the order they happened (started → progress →
 * completed) even across retries; a later event waits until the earlier one was delivered,
 * superseded or declared dead. (This is the embedded outbox; on AWS deliveries travel on a
 * queue that keeps no order, and functions/webhooks/order.ts keeps them from going out
 * backwards instead.)
 */

import {
  isTerminal,
  type RequestRecord,
  RequestStatus,
  type WebhookEvent,
} from "../core/request.ts";
import type { ChangeEvent } from "../core/usecases/deps.ts";
import type { RequestJson } from "../http/schemas.ts";
import { requestView } from "../http/views.ts";
import { newMessageId } from "./signing.ts";

/** A delivery as enqueued. */
export interface NewWebhookDelivery {
  /** `msg_<ulid>`: the `webhook-id` of every try of this delivery. */
  id: string;
  requestId: string;
  tenant: string;
  event: WebhookEvent;
  url: string;
  /** The exact JSON body; signatures cover these bytes. */
  payload: string;
  /** At most one delivery per key (see the module comment for the keys). */
  dedupKey: string;
  /** When it was made (epoch ms); it is due at once. */
  createdAt: number;
}

/** A delivery handed to a worker by {@link WebhookOutbox.claimDue}. */
export interface WebhookDelivery extends NewWebhookDelivery {
  /** Tries made before this one. */
  attempts: number;
  /** Error of the last failed try, if any. */
  lastError: string | null;
}

/** Lifecycle of a stored delivery. */
export type WebhookDeliveryStatus = "pending" | "delivered" | "dead" | "superseded";

/** What a successful try came to, for {@link WebhookOutbox.complete}. */
export interface DeliveredInfo {
  /** The receiver's 2xx status. */
  status: number;
  /** When (epoch ms). */
  at: number;
}

/**
 * Durable store of webhook deliveries. Each method is atomic; a delivery lives as a record
 * until it is delivered, superseded or dead, so pending ones survive a crash, and a claim is
 * a lease: if the worker that claimed a delivery dies, the delivery is due again when the
 * lease ends (at-least-once).
 */
export interface WebhookOutbox {
  /**
   * Stores a new pending delivery, due at once.
   * @returns false when a delivery with the same `dedupKey` exists (nothing new stored;
   *   a waiting progress delivery of the same second takes the newer payload).
   */
  enqueue(delivery: NewWebhookDelivery): Promise<boolean>;
  /**
   * Leases up to `limit` due pending deliveries to the caller for `leaseMs`: the oldest
   * pending delivery of each request, and only if it is due and not leased.
   */
  claimDue(now: number, limit: number, leaseMs: number): Promise<WebhookDelivery[]>;
  /** Records a successful try: the delivery is done. */
  complete(id: string, result: DeliveredInfo): Promise<void>;
  /** Records a failed try; the delivery is due again at `nextAt` (epoch ms). */
  reschedule(id: string, nextAt: number, lastError: string): Promise<void>;
  /** Records a failed try after which the delivery is given up (kept for inspection). */
  markDead(id: string, lastError: string): Promise<void>;
}

/**
 * SPEC §2: for this long after a rotation, deliveries carry a signature with the secret the
 * rotation replaced as well as with the new one.
 */
export const ROTATION_OVERLAP_MS = 24 * 3_600_000;

/** A tenant's stored secrets: the current one, and the one its last rotation replaced. */
export interface StoredWebhookSecret {
  secret: string;
  /** The secret before the last rotation; null when never rotated. */
  previous: string | null;
  /** When the last rotation happened (epoch ms); null when never rotated. */
  rotatedAt: number | null;
}

/**
 * The secrets a delivery at `now` is signed with: the current one, then the replaced one
 * while the rotation is less than {@link ROTATION_OVERLAP_MS} old. A second rotation within
 * the overlap ends the overlap of the first (only the last replaced secret keeps signing).
 */
export function signingSecrets(stored: StoredWebhookSecret, now: number): string[] {
  const overlapping =
    stored.previous !== null &&
    stored.rotatedAt !== null &&
    now - stored.rotatedAt < ROTATION_OVERLAP_MS;
  return overlapping && stored.previous !== null
    ? [stored.secret, stored.previous]
    : [stored.secret];
}

/** Tenants' signing secrets. */
export interface WebhookSecrets {
  /** The tenant's current `whsec_…` secret, created (and stored) on first use. */
  secretFor(tenant: string): Promise<string>;
  /** The secrets a delivery made at `now` is signed with ({@link signingSecrets}). */
  signingSecretsFor(tenant: string, now: number): Promise<string[]>;
  /**
   * Makes a new current secret; the one it replaces keeps signing for
   * {@link ROTATION_OVERLAP_MS}. One atomic write: concurrent rotations each replace the
   * secret they read, in some order, and every caller gets the secret it made.
   */
  rotate(tenant: string, now: number): Promise<string>;
}

/** The webhook body of SPEC §2. */
export interface WebhookPayload {
  type: `request.${WebhookEvent}`;
  timestamp: string;
  data: RequestJson;
}

/**
 * Which webhook events a state change sends: the change itself when the request has a
 * webhook that chose it (no `events`, or an empty list, means `["completed"]`), and
 * `started` only while the request is RUNNING (the first RUNNING is the only time the core
 * reports `started`).
 */
export function webhookEventsFor(request: RequestRecord, change: ChangeEvent): WebhookEvent[] {
  const hook = request.webhook;
  if (!hook) return [];
  const chosen = hook.events && hook.events.length > 0 ? hook.events : ["completed"];
  if (!chosen.includes(change)) return [];
  if (change === "started" && request.status !== "RUNNING") return [];
  return [change];
}

/**
 * The one rule of which state change makes which change event, read from a request before
 * and after one write (the stream's old and new images on AWS; `before` null for a request
 * seen without its previous state, as the embedded start-up reconcile sees it):
 * - `started` when `startedAt` became set (the first RUNNING; a retry's RUNNING is not);
 * - `progress` when the progress changed while RUNNING;
 * - `completed` when the status became terminal.
 * Which of them the request's webhook sends is {@link webhookEventsFor}'s.
 */
export function changesBetween(before: RequestRecord | null, after: RequestRecord): ChangeEvent[] {
  const changes: ChangeEvent[] = [];
  if (after.startedAt !== null && (before === null || before.startedAt === null)) {
    changes.push("started");
  }
  if (
    before !== null &&
    after.status === RequestStatus.RUNNING &&
    after.progress !== null &&
    JSON.stringify(before.progress) !== JSON.stringify(after.progress)
  ) {
    changes.push("progress");
  }
  if (isTerminal(after.status) && (before === null || !isTerminal(before.status))) {
    changes.push("completed");
  }
  return changes;
}

/** The dedup key of `event` of `requestId` at `now`. */
export function dedupKeyFor(requestId: string, event: WebhookEvent, now: number): string {
  return event === "progress"
    ? `${requestId}:progress:${Math.floor(now / 1000)}`
    : `${requestId}:${event}`;
}

/** The JSON body of `event` about `request` at `now`. */
export function webhookPayload(request: RequestRecord, event: WebhookEvent, now: number): string {
  const payload: WebhookPayload = {
    type: `request.${event}`,
    timestamp: new Date(now).toISOString(),
    data: requestView(request),
  };
  return JSON.stringify(payload);
}

/** The deliveries a state change calls for (none, or one). */
export function webhookDeliveriesFor(
  request: RequestRecord,
  change: ChangeEvent,
  now: number,
  newId: () => string = newMessageId,
): NewWebhookDelivery[] {
  const url = request.webhook?.url;
  if (!url) return [];
  return webhookEventsFor(request, change).map((event) => ({
    id: newId(),
    requestId: request.id,
    tenant: request.tenant,
    event,
    url,
    payload: webhookPayload(request, event, now),
    dedupKey: dedupKeyFor(request.id, event, now),
    createdAt: now,
  }));
}

/** Options of {@link createWebhookNotifier}. */
export interface WebhookNotifierOptions {
  /** Only `enqueue` is used. */
  outbox: Pick<WebhookOutbox, "enqueue">;
  clock: { now(): number };
  /** Told after something was enqueued (wake the worker). */
  onEnqueued?: () => void;
  /** Where enqueue failures are reported; default console.error. */
  log?: (line: string) => void;
  newId?: () => string;
}

/** A {@link CoreDeps}-compatible `onChange` hook plus a way to wait for its writes. */
export interface WebhookNotifier {
  onChange(request: RequestRecord, change: ChangeEvent): void;
  /** Resolves when every enqueue started so far has finished. */
  idle(): Promise<void>;
}

/**
 * Builds the `onChange` hook that enqueues webhook deliveries. It never throws, and it runs
 * enqueues one after another in notification order, so a request's deliveries are stored
 * (and therefore sent) in the order its changes happened.
 */
export function createWebhookNotifier(options: WebhookNotifierOptions): WebhookNotifier {
  const log = options.log ?? ((line: string) => console.error(line));
  let chain: Promise<void> = Promise.resolve();
  return {
    onChange(request, change) {
      let deliveries: NewWebhookDelivery[];
      try {
        deliveries = webhookDeliveriesFor(request, change, options.clock.now(), options.newId);
      } catch (error) {
        log(`webhook ${change} of ${request.id}: ${String(error)}`);
        return;
      }
      if (deliveries.length === 0) return;
      chain = chain.then(async () => {
        let added = false;
        for (const d of deliveries) {
          try {
            added = (await options.outbox.enqueue(d)) || added;
          } catch (error) {
            log(`webhook ${d.event} of ${d.requestId} not enqueued: ${String(error)}`);
          }
        }
        if (added) options.onEnqueued?.();
      });
    },
    idle: () => chain,
  };
}
