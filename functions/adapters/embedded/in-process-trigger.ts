import type { DispatchTrigger } from "../../core/ports.ts";

/**
 * Wakes a queue's dispatcher inside this process. Wake-ups are coalesced per queue: while a
 * run is in progress, further wake-ups set a flag that makes it run once more when it ends,
 * so none is lost. A run is `width(queue)` dispatch passes side by side (default 1, as the
 * SQS FIFO message group gives on AWS): a launch waits for its job's spawn, and with one pass
 * a deep queue fills its free slots one spawn after another. Passes never claim more than
 * the queue allows (every claim is a conditional write), and they reach the spawn in the
 * order they claimed (a first attempt's launch awaits no I/O before it). `wake` never waits
 * for the dispatch itself: a finished job wakes its queue from inside the lifecycle without
 * recursion.
 */
export class InProcessTrigger implements DispatchTrigger {
  readonly #running = new Map<string, Promise<void>>();
  readonly #again = new Set<string>();
  #stopped = false;

  constructor(
    private readonly dispatch: (queue: string) => Promise<unknown>,
    private readonly onError: (queue: string, error: unknown) => void,
    private readonly width: (queue: string) => number = () => 1,
  ) {}

  async wake(queue: string): Promise<void> {
    if (this.#stopped) return;
    if (this.#running.has(queue)) {
      this.#again.add(queue);
      return;
    }
    const run = (async () => {
      // Let the caller's own write settle before reading the queue.
      await Promise.resolve();
      do {
        this.#again.delete(queue);
        const passes = Math.max(1, this.width(queue));
        await Promise.all(
          Array.from({ length: passes }, async () => {
            try {
              await this.dispatch(queue);
            } catch (error) {
              this.onError(queue, error);
            }
          }),
        );
      } while (this.#again.has(queue) && !this.#stopped);
      this.#running.delete(queue);
    })();
    this.#running.set(queue, run);
  }

  /** Resolves once no dispatch is running or pending. */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.all(this.#running.values());
  }

  /** Ignores wake-ups from now on and waits for running dispatches to end. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.idle();
  }
}
