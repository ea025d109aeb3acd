import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { ArtifactUrlSigner } from "../adapters/embedded/artifact-urls.ts";
import { FsLayout, FsLogStore, FsResultStore } from "../adapters/embedded/fs-storage.ts";
import { GpuPool } from "../adapters/embedded/gpu-pool.ts";
import { InProcessTrigger } from "../adapters/embedded/in-process-trigger.ts";
import { LocalProcessCompute } from "../adapters/embedded/local-process-compute.ts";
import { SqliteRequestStore } from "../adapters/embedded/sqlite-store.ts";
import { SqliteWebhookOutbox } from "../adapters/embedded/sqlite-webhooks.ts";
import { newRequestId } from "../adapters/ids.ts";
import { createWebhookGuard } from "../adapters/net/webhook-guard.ts";
import type { LongrunConfig } from "../config/schema.ts";
import {
  type CoreDeps,
  dispatchQueue,
  expireQueued,
  isTerminal,
  RequestStatus,
  recordJobEvent,
  recoverInFlight,
} from "../core/index.ts";
import type { JobEvent } from "../core/ports.ts";
import { purgeExpiredRequests } from "../core/usecases/retention.ts";
import { createDeliverer } from "../webhooks/deliver.ts";
import { createWebhookNotifier, type WebhookNotifier } from "../webhooks/outbox.ts";
import { WebhookWorker } from "../webhooks/worker.ts";

export interface EmbeddedOptions {
  config: LongrunConfig;
  dataDir: string;
  allowPrivateWebhooks: boolean;
  sweepIntervalMs: number;
  /** The URL clients reach this server on; artifact URLs are built on it. */
  baseUrl: () => string;
  /**
   * The GPU pool's devices (gpu-pool.ts discoverGpus); undefined: GPU needs not enforced.
   * @throws Error at construction when a queue asks for more GPUs than the pool holds.
   */
  gpus?: readonly string[];
  log: (line: string) => void;
}

/** Every `repairEvery` sweeps, every queue is woken in case a wake-up was lost to a crash. */
const REPAIR_EVERY_SWEEPS = 30;
/** Every this many sweeps, finished requests past their retention are deleted. */
const RETENTION_EVERY_SWEEPS = 60;
/** How far back a start looks for webhooks a crash may have dropped (less than the history kept). */
const WEBHOOK_RECONCILE_MS = 86_400_000;
/** Delivered and dead webhook deliveries are kept this long for inspection. */
const WEBHOOK_HISTORY_MS = 7 * 86_400_000;

/**
 * The embedded engine: the core use cases over SQLite, the filesystem and local processes,
 * with an in-process dispatch trigger and a sweep timer for queue TTLs and repairs.
 */
export class EmbeddedRuntime {
  readonly deps: CoreDeps;
  readonly store: SqliteRequestStore;
  readonly compute: LocalProcessCompute;
  readonly trigger: InProcessTrigger;
  readonly signer: ArtifactUrlSigner;
  readonly outputsDir: string;
  /** Webhook deliveries (a durable outbox) and the tenants' signing secrets. */
  readonly hooks: SqliteWebhookOutbox;
  readonly #webhooks: WebhookWorker;
  readonly #notifier: WebhookNotifier;
  readonly #layout: FsLayout;
  #sweep: NodeJS.Timeout | undefined;
  #sweeps = 0;
  #sweeping = false;

  constructor(private readonly options: EmbeddedOptions) {
    const { dataDir, config } = options;
    mkdirSync(dataDir, { recursive: true });
    this.store = new SqliteRequestStore(join(dataDir, "longrun.db"));
    this.signer = new ArtifactUrlSigner(
      ArtifactUrlSigner.keyFromFile(join(dataDir, "artifact-url.key")),
      options.baseUrl,
    );
    this.outputsDir = join(dataDir, "outputs");
    this.#layout = new FsLayout(dataDir);
    const results = new FsResultStore(dataDir, (id, name) => this.signer.urlFor(id, name));
    this.hooks = new SqliteWebhookOutbox(join(dataDir, "webhooks.db"));
    const clock = { now: () => Date.now() };
    this.#webhooks = new WebhookWorker({
      outbox: this.hooks,
      secrets: this.hooks,
      deliver: createDeliverer({ allowPrivate: options.allowPrivateWebhooks }),
      clock,
      log: options.log,
    });
    this.#notifier = createWebhookNotifier({
      outbox: this.hooks,
      clock,
      onEnqueued: () => this.#webhooks.wake(),
      log: options.log,
    });
    const logs = new FsLogStore(dataDir);
    this.trigger = new InProcessTrigger(
      (queue) => dispatchQueue(queue, this.deps),
      (queue, error) => options.log(`dispatch of queue ${queue} failed: ${String(error)}`),
    );
    let gpus: GpuPool | undefined;
    if (options.gpus) {
      for (const q of Object.values(config.queues)) {
        if (q.resources.gpus > options.gpus.length) {
          throw new Error(
            `queue ${q.name}: resources.gpus is ${q.resources.gpus} but the GPU pool holds ${options.gpus.length} (LONGRUN_GPUS or nvidia-smi -L)`,
          );
        }
      }
      gpus = new GpuPool(options.gpus, join(dataDir, "gpus.json"));
    }
    this.compute = new LocalProcessCompute({
      dataDir,
      onEvent: (event) => this.#onJobEvent(event),
      ...(gpus ? { gpus } : {}),
    });
    this.deps = {
      store: this.store,
      trigger: this.trigger,
      compute: this.compute,
      results,
      logs,
      clock,
      ids: { requestId: newRequestId },
      queues: config.queues,
      webhookGuard: createWebhookGuard({ allowPrivate: options.allowPrivateWebhooks }),
      onChange: (request, change) => this.#notifier.onChange(request, change),
    };
  }

  async #onJobEvent(event: JobEvent): Promise<void> {
    try {
      await recordJobEvent(event, this.deps);
    } catch (error) {
      this.options.log(
        `recording ${event.type} of ${event.requestId} attempt ${event.attempt} failed: ${String(error)}`,
      );
    }
  }

  /**
   * Recovers what a previous server left in flight (its job processes are stopped first),
   * then starts the sweep timer and wakes every queue.
   * @returns how many in-flight requests were recovered.
   */
  async start(): Promise<number> {
    const recovered = await recoverInFlight(this.deps);
    await this.compute.settleGpus();
    await expireQueued(this.deps);
    await this.#reconcileWebhooks();
    this.#sweep = setInterval(() => void this.#runSweep(), this.options.sweepIntervalMs);
    this.#sweep.unref();
    // Pending deliveries (a killed server's too, once their lease ends) go out from here.
    this.#webhooks.start();
    return recovered;
  }

  /**
   * The outbox lives in its own database, so a crash between a request's state change and
   * its webhook's enqueue could drop the webhook. At start, every request with a webhook that
   * changed in the last day is offered to the notifier again; the outbox's dedup keys make
   * that a no-op for deliveries it already holds.
   */
  async #reconcileWebhooks(): Promise<void> {
    const since = Date.now() - WEBHOOK_RECONCILE_MS;
    for (const r of await this.store.withWebhookSince(since, 100_000)) {
      if (r.status === RequestStatus.RUNNING) this.#notifier.onChange(r, "started");
      else if (isTerminal(r.status)) this.#notifier.onChange(r, "completed");
    }
    await this.#notifier.idle();
  }

  async #runSweep(): Promise<void> {
    if (this.#sweeping) return;
    this.#sweeping = true;
    try {
      await expireQueued(this.deps);
      const n = ++this.#sweeps;
      if (n % REPAIR_EVERY_SWEEPS === 0) {
        for (const q of Object.keys(this.deps.queues)) await this.trigger.wake(q);
      }
      if (n % RETENTION_EVERY_SWEEPS === 1) {
        const purged = await purgeExpiredRequests({
          ...this.deps,
          purgeData: (id) => this.#layout.deleteRequest(id),
        });
        if (purged > 0) this.options.log(`retention: deleted ${purged} finished request(s)`);
        this.hooks.purgeFinished(Date.now() - WEBHOOK_HISTORY_MS);
      }
    } catch (error) {
      this.options.log(`sweep failed: ${String(error)}`);
    } finally {
      this.#sweeping = false;
    }
  }

  /**
   * Graceful stop: no new dispatches, running jobs get SIGTERM (and SIGKILL after their
   * grace) so they checkpoint; their requests stay active and the next start retries them.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.#sweep) clearInterval(this.#sweep);
    await this.trigger.stop();
    await this.compute.shutdown(graceMs);
    await this.#notifier.idle();
    await this.#webhooks.stop();
    this.hooks.close();
    this.store.close();
  }
}
