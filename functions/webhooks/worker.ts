/**
 * One webhook try ({@link tryDelivery}: sign, send, and what comes next per the schedule),
 * shared by both delivery paths, and the embedded worker that takes due deliveries from the
 * outbox and records each try's outcome there. On AWS the webhooks handler records the
 * outcome on the SQS delivery queue instead (functions/handlers/webhooks.ts).
 */
import type { Deliver, DeliveryResult } from "./deliver.ts";
import type { WebhookDelivery, WebhookOutbox, WebhookSecrets } from "./outbox.ts";
import { backoffSchedule, type RetrySchedule } from "./schedule.ts";
import { signatureHeaders } from "./signing.ts";

/** What one try needs to know of a delivery. */
export type TryableDelivery = Pick<
  WebhookDelivery,
  "id" | "tenant" | "url" | "payload" | "attempts"
>;

/** The ports of one try. */
export interface TryPorts {
  secrets: Pick<WebhookSecrets, "signingSecretsFor">;
  deliver: Deliver;
  clock: { now(): number };
  /** Default {@link backoffSchedule}. */
  schedule?: RetrySchedule;
  /** Jitter source of the schedule; default Math.random. */
  random?: () => number;
}

/** What one try came to, and what is to happen next. */
export type TryOutcome =
  | { kind: "delivered"; result: DeliveryResult; status: number; at: number }
  | { kind: "retry"; result: DeliveryResult; error: string; nextAt: number; at: number }
  | { kind: "dead"; result: DeliveryResult; error: string; at: number };

/**
 * One try of a delivery: signs the payload with every secret the tenant signs with now (the
 * delivery's own `webhook-id`, a fresh `webhook-timestamp`), sends it, and decides from the
 * answer: delivered; tried again at the schedule's next time (a retryable failure with tries
 * left); or dead (tries used up, or a target that retrying cannot fix). Recording the outcome
 * is the caller's.
 * @throws when the secrets cannot be read (nothing was sent).
 */
export async function tryDelivery(delivery: TryableDelivery, ports: TryPorts): Promise<TryOutcome> {
  const now = ports.clock.now();
  const secrets = await ports.secrets.signingSecretsFor(delivery.tenant, now);
  const result = await ports.deliver({
    url: delivery.url,
    body: delivery.payload,
    headers: {
      ...signatureHeaders(secrets, delivery.id, Math.floor(now / 1000), delivery.payload),
    },
  });
  const at = ports.clock.now();
  if (result.ok) return { kind: "delivered", result, status: result.status ?? 200, at };
  const error = result.error ?? `HTTP ${result.status ?? "?"}`;
  const schedule = ports.schedule ?? backoffSchedule;
  const nextAt = result.retryable
    ? schedule.nextAttemptAt(delivery.attempts + 1, at, ports.random ?? Math.random)
    : null;
  return nextAt === null
    ? { kind: "dead", result, error, at }
    : { kind: "retry", result, error, nextAt, at };
}

/** Options of {@link WebhookWorker}. */
export interface WebhookWorkerOptions {
  outbox: WebhookOutbox;
  secrets: WebhookSecrets;
  deliver: Deliver;
  clock: { now(): number };
  /** Retry policy; default {@link backoffSchedule}. */
  schedule?: RetrySchedule;
  /** Deliveries in flight at once; default 8. */
  concurrency?: number;
  /** How often due deliveries are looked for (ms); default 1000. */
  pollMs?: number;
  /**
   * How long a claimed delivery stays the worker's (ms); longer than one try takes (the
   * 10 s timeout plus DNS). If the worker dies, the delivery is due again after it.
   * Default 60 000.
   */
  leaseMs?: number;
  /** Jitter source for the schedule; default Math.random. */
  random?: () => number;
  /** Where failures of the worker itself are reported; default console.error. */
  log?: (line: string) => void;
  /** Told of every try and its outcome (metrics, logs, tests). Must not throw. */
  onAttempt?: (delivery: WebhookDelivery, result: DeliveryResult) => void;
}

/**
 * Delivers webhooks from a {@link WebhookOutbox}. `start()` polls every `pollMs` (and at
 * once on `wake()`), keeping up to `concurrency` tries in flight; `stop()` waits for the
 * tries in flight. Nothing escapes its loop: a failure is logged and the delivery's lease
 * makes it due again.
 */
export class WebhookWorker {
  readonly #o: Required<Omit<WebhookWorkerOptions, "onAttempt">> &
    Pick<WebhookWorkerOptions, "onAttempt">;
  readonly #inFlight = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #claiming = false;
  #pumpAgain = false;

  /** @throws RangeError when `concurrency` is not a positive integer. */
  constructor(options: WebhookWorkerOptions) {
    this.#o = {
      schedule: backoffSchedule,
      concurrency: 8,
      pollMs: 1000,
      leaseMs: 60_000,
      random: Math.random,
      log: (line) => console.error(line),
      ...options,
    };
    if (!Number.isInteger(this.#o.concurrency) || this.#o.concurrency < 1) {
      throw new RangeError("concurrency must be a positive integer");
    }
  }

  /** Starts polling (idempotent). */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#timer = setInterval(() => this.#pump(), this.#o.pollMs);
    this.#timer.unref();
    this.#pump();
  }

  /** Looks for due deliveries now (e.g. right after an enqueue). */
  wake(): void {
    if (this.#running) this.#pump();
  }

  /** Stops polling and waits for the tries in flight. */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    while (this.#inFlight.size > 0 || this.#claiming) {
      await Promise.allSettled([...this.#inFlight]);
      if (this.#claiming) await new Promise((r) => setTimeout(r, 5));
    }
  }

  /**
   * Tries everything due at `clock.now()` until nothing is due (a request's next delivery
   * becomes due once the previous one is done); for tests and shutdown hooks.
   * @returns how many tries were made.
   */
  async drain(): Promise<number> {
    let tries = 0;
    for (;;) {
      await Promise.allSettled([...this.#inFlight]);
      const batch = await this.#claim(this.#o.concurrency);
      if (batch.length === 0 && this.#inFlight.size === 0) return tries;
      tries += batch.length;
      await Promise.all(batch.map((d) => this.#attempt(d)));
    }
  }

  async #claim(limit: number): Promise<WebhookDelivery[]> {
    try {
      return await this.#o.outbox.claimDue(this.#o.clock.now(), limit, this.#o.leaseMs);
    } catch (error) {
      this.#o.log(`webhook worker: claiming due deliveries failed: ${String(error)}`);
      return [];
    }
  }

  #pump(): void {
    if (!this.#running) return;
    if (this.#claiming) {
      this.#pumpAgain = true;
      return;
    }
    const free = this.#o.concurrency - this.#inFlight.size;
    if (free <= 0) return;
    this.#claiming = true;
    this.#pumpAgain = false;
    void this.#claim(free).then((batch) => {
      for (const delivery of batch) {
        const p: Promise<void> = this.#attempt(delivery).finally(() => {
          this.#inFlight.delete(p);
          this.#pump();
        });
        this.#inFlight.add(p);
      }
      this.#claiming = false;
      if (this.#pumpAgain) this.#pump();
    });
  }

  /** One try of one delivery; never rejects. */
  async #attempt(delivery: WebhookDelivery): Promise<void> {
    const o = this.#o;
    try {
      const outcome = await tryDelivery(delivery, o);
      try {
        o.onAttempt?.(delivery, outcome.result);
      } catch {
        // an observer's failure is not the delivery's
      }
      if (outcome.kind === "delivered") {
        await o.outbox.complete(delivery.id, { status: outcome.status, at: outcome.at });
      } else if (outcome.kind === "retry") {
        await o.outbox.reschedule(delivery.id, outcome.nextAt, outcome.error);
      } else {
        await o.outbox.markDead(delivery.id, outcome.error);
        o.log(
          `webhook ${delivery.id} (${delivery.event} of ${delivery.requestId}) is dead after ${delivery.attempts + 1} tries: ${outcome.error}`,
        );
      }
    } catch (error) {
      // Left leased: the delivery is due again when its lease ends.
      o.log(`webhook worker: delivery ${delivery.id} failed: ${String(error)}`);
    }
  }
}
