import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { ArtifactUrlSigner } from "../adapters/embedded/artifact-urls.ts";
import { FsFileStore } from "../adapters/embedded/fs-files.ts";
import { FsLayout, FsLogStore, FsResultStore } from "../adapters/embedded/fs-storage.ts";
import { GpuPool } from "../adapters/embedded/gpu-pool.ts";
import { InProcessTrigger } from "../adapters/embedded/in-process-trigger.ts";
import { JobLauncher } from "../adapters/embedded/launcher.ts";
import { LocalProcessCompute } from "../adapters/embedded/local-process-compute.ts";
import { SparePool } from "../adapters/embedded/spare-pool.ts";
import { SqliteRequestStore } from "../adapters/embedded/sqlite-store.ts";
import { SqliteUploadStore } from "../adapters/embedded/sqlite-uploads.ts";
import { SqliteWebhookOutbox } from "../adapters/embedded/sqlite-webhooks.ts";
import { UploadReceiver } from "../adapters/embedded/upload-receiver.ts";
import { newRequestId, newUploadId } from "../adapters/ids.ts";
import { createWebhookGuard } from "../adapters/net/webhook-guard.ts";
import type { LongrunConfig } from "../config/schema.ts";
import {
  type CoreDeps,
  dispatchQueue,
  expireQueued,
  type LifecycleListener,
  listenAll,
  recordJobEvent,
  recoverInFlight,
} from "../core/index.ts";
import type { JobEvent } from "../core/ports.ts";
import { purgeExpiredRequests } from "../core/usecases/retention.ts";
import { purgeExpiredUploads } from "../core/usecases/uploads.ts";
import { createDeliverer } from "../webhooks/deliver.ts";
import { changesBetween, createWebhookNotifier, type WebhookNotifier } from "../webhooks/outbox.ts";
import { WebhookWorker } from "../webhooks/worker.ts";
import type { JobUser } from "./env.ts";

export interface EmbeddedOptions {
  config: LongrunConfig;
  dataDir: string;
  allowPrivateWebhooks: boolean;
  sweepIntervalMs: number;
  /** Who jobs run as (LONGRUN_JOB_USER); null or absent: the server's user. */
  jobUser?: JobUser | null;
  /** The URL clients reach this server on; artifact URLs are built on it. */
  baseUrl: () => string;
  /**
   * The GPU pool's devices (gpu-pool.ts discoverGpus); undefined: GPU needs not enforced.
   * @throws Error at construction when a queue asks for more GPUs than the pool holds.
   */
  gpus?: readonly string[];
  log: (line: string) => void;
  /** Largest upload accepted (`LONGRUN_MAX_UPLOAD_BYTES`); default 5 GiB. */
  maxUploadBytes?: number;
  /** Told of every state change besides the webhooks (metrics, the queue history). */
  listeners?: readonly LifecycleListener[];
  /** Told of every webhook delivery try (metrics). */
  onWebhookTried?: (ok: boolean) => void;
}

/** Dispatch passes run side by side per queue (InProcessTrigger), at most its maxRunning. */
const DISPATCH_WIDTH = 4;
/** Every `repairEvery` sweeps, every queue is woken in case a wake-up was lost to a crash. */
const REPAIR_EVERY_SWEEPS = 30;
/** Every this many sweeps, finished requests past their retention are deleted. */
const RETENTION_EVERY_SWEEPS = 60;
/** How far back a start looks for webhooks a crash may have dropped (less than the history kept). */
const WEBHOOK_RECONCILE_MS = 86_400_000;
/** A PUT's temp file older than this was left by a crash (a PUT URL lives one hour). */
const UPLOAD_TEMP_AGE_MS = 6 * 3_600_000;
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
  /** The process that forks the jobs and gives them their log files (launcher.ts). */
  readonly launcher: JobLauncher;
  readonly signer: ArtifactUrlSigner;
  /** Results and artifacts of succeeded requests (the download route opens files here). */
  readonly results: FsResultStore;
  /** Webhook deliveries (a durable outbox) and the tenants' signing secrets. */
  readonly hooks: SqliteWebhookOutbox;
  /** Upload records, in the request database. */
  readonly uploads: SqliteUploadStore;
  /** Uploads' bytes, requests' files and checkpoint copies. */
  readonly files: FsFileStore;
  /** The signed upload PUT route the HTTP listener mounts. */
  readonly uploadReceiver: UploadReceiver;
  readonly #webhooks: WebhookWorker;
  readonly #notifier: WebhookNotifier;
  readonly #layout: FsLayout;
  readonly #spares: SparePool | undefined;
  #sweep: NodeJS.Timeout | undefined;
  #sweeps = 0;
  #sweeping = false;

  constructor(private readonly options: EmbeddedOptions) {
    const { dataDir, config } = options;
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const jobUser = options.jobUser ?? null;
    this.store = new SqliteRequestStore(join(dataDir, "longrun.db"), {
      backgroundCheckpoints: true,
    });
    this.signer = new ArtifactUrlSigner(
      ArtifactUrlSigner.keyFromFile(join(dataDir, "artifact-url.key")),
      options.baseUrl,
    );
    this.#layout = new FsLayout(dataDir);
    // Outputs are files the job's user made; anything else found there is not served.
    const results = new FsResultStore(dataDir, (id, name) => this.signer.urlFor(id, name), {
      ...(jobUser ? { jobUid: jobUser.uid } : {}),
    });
    this.results = results;
    this.hooks = new SqliteWebhookOutbox(join(dataDir, "webhooks.db"));
    const clock = { now: () => Date.now() };
    this.#webhooks = new WebhookWorker({
      outbox: this.hooks,
      secrets: this.hooks,
      deliver: createDeliverer({ allowPrivate: options.allowPrivateWebhooks }),
      clock,
      log: options.log,
      ...(options.onWebhookTried
        ? { onAttempt: (_d, result) => options.onWebhookTried?.(result.ok) }
        : {}),
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
      // Spawns in flight at once per queue: more than 4 buys little (one launcher forks them).
      // A queue whose launches wait for GPUs keeps one pass: one request waits for devices.
      (queue) => {
        const q = config.queues[queue];
        if (!q || (options.gpus && q.resources.gpus > 0)) return 1;
        return Math.min(DISPATCH_WIDTH, q.maxRunning);
      },
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
    this.launcher = new JobLauncher({ log: options.log });
    // Made ahead and recycled, so that a start creates (almost) no files (spare-pool.ts).
    this.#spares = jobUser
      ? undefined
      : new SparePool(join(dataDir, "work"), {
          onError: (error, context) => options.log(`${context}: ${String(error)}`),
        });
    this.compute = new LocalProcessCompute({
      dataDir,
      launcher: this.launcher,
      ...(this.#spares ? { spares: this.#spares } : {}),
      onEvent: (event) => this.#onJobEvent(event),
      ...(jobUser ? { jobUser } : {}),
      ...(gpus ? { gpus } : {}),
    });
    this.uploads = new SqliteUploadStore(join(dataDir, "longrun.db"));
    this.files = new FsFileStore(this.#layout, this.signer, options.baseUrl);
    this.uploadReceiver = new UploadReceiver({
      layout: this.#layout,
      uploads: this.uploads,
      signer: this.signer,
      clock,
    });
    this.deps = {
      store: this.store,
      trigger: this.trigger,
      compute: this.compute,
      results,
      logs,
      clock,
      ids: { requestId: newRequestId, uploadId: newUploadId },
      queues: config.queues,
      webhookGuard: createWebhookGuard({ allowPrivate: options.allowPrivateWebhooks }),
      uploads: this.uploads,
      files: this.files,
      ...(options.maxUploadBytes !== undefined ? { maxUploadBytes: options.maxUploadBytes } : {}),
      ...listenAll([
        { onChange: (request, change) => this.#notifier.onChange(request, change) },
        ...(options.listeners ?? []),
      ]),
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
      for (const change of changesBetween(null, r)) this.#notifier.onChange(r, change);
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
        const uploads = await purgeExpiredUploads({
          ...this.deps,
          deleteBytes: (u) => this.files.deleteUpload(u.id),
        });
        if (uploads > 0) this.options.log(`retention: deleted ${uploads} expired upload(s)`);
        await this.files.deleteLeftoverTemps(Date.now() - UPLOAD_TEMP_AGE_MS);
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
    await this.launcher.close();
    await this.#spares?.close();
    await this.#notifier.idle();
    await this.#webhooks.stop();
    this.hooks.close();
    this.uploads.close();
    this.store.close();
    await this.store.closed();
  }
}
