import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { ulid } from "ulidx";
import { ArtifactUrlSigner } from "../adapters/embedded/artifact-urls.ts";
import { FsLogStore, FsResultStore } from "../adapters/embedded/fs-storage.ts";
import { InProcessTrigger } from "../adapters/embedded/in-process-trigger.ts";
import { LocalProcessCompute } from "../adapters/embedded/local-process-compute.ts";
import { SqliteRequestStore } from "../adapters/embedded/sqlite-store.ts";
import { createWebhookGuard } from "../adapters/net/webhook-guard.ts";
import type { LongrunConfig } from "../config/schema.ts";
import {
  type CoreDeps,
  dispatchQueue,
  expireQueued,
  recordJobEvent,
  recoverInFlight,
} from "../core/index.ts";
import type { JobEvent } from "../core/ports.ts";

export interface EmbeddedOptions {
  config: LongrunConfig;
  dataDir: string;
  allowPrivateWebhooks: boolean;
  sweepIntervalMs: number;
  /** The URL clients reach this server on; artifact URLs are built on it. */
  baseUrl: () => string;
  log: (line: string) => void;
}

/** Every `repairEvery` sweeps, every queue is woken in case a wake-up was lost to a crash. */
const REPAIR_EVERY_SWEEPS = 30;

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
    const results = new FsResultStore(dataDir, (id, name) => this.signer.urlFor(id, name));
    const logs = new FsLogStore(dataDir);
    this.trigger = new InProcessTrigger(
      (queue) => dispatchQueue(queue, this.deps),
      (queue, error) => options.log(`dispatch of queue ${queue} failed: ${String(error)}`),
    );
    this.compute = new LocalProcessCompute({
      dataDir,
      onEvent: (event) => this.#onJobEvent(event),
    });
    this.deps = {
      store: this.store,
      trigger: this.trigger,
      compute: this.compute,
      results,
      logs,
      clock: { now: () => Date.now() },
      ids: { requestId: () => `req_${ulid()}` },
      queues: config.queues,
      webhookGuard: createWebhookGuard({ allowPrivate: options.allowPrivateWebhooks }),
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
    await expireQueued(this.deps);
    this.#sweep = setInterval(() => void this.#runSweep(), this.options.sweepIntervalMs);
    this.#sweep.unref();
    return recovered;
  }

  async #runSweep(): Promise<void> {
    if (this.#sweeping) return;
    this.#sweeping = true;
    try {
      await expireQueued(this.deps);
      if (++this.#sweeps % REPAIR_EVERY_SWEEPS === 0) {
        for (const q of Object.keys(this.deps.queues)) await this.trigger.wake(q);
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
    this.store.close();
  }
}
