/**
 * The request items a store instance last read or wrote, so that a status change right
 * after a read (the events handler reads a request, then moves it) does not read it again.
 *
 * What is remembered is only ever used in two safe ways: for attributes that never change
 * (tenant, queue, createdAt, idempotency key) and as the expected `rev` of a conditional
 * write. A stale entry therefore costs one failed condition and a fresh read, never a wrong
 * write. Bounded by entries and by the bytes of the inputs it holds (inputs can be large).
 */
export class ItemMemo<T extends object> {
  readonly #items = new Map<string, T>();
  #inputChars = 0;

  constructor(
    readonly maxEntries = 512,
    readonly maxInputChars = 8 * 1024 * 1024,
  ) {}

  get(id: string): T | undefined {
    return this.#items.get(id);
  }

  set(id: string, item: T): void {
    this.delete(id);
    const size = inputChars(item);
    if (size > this.maxInputChars) return;
    this.#items.set(id, item);
    this.#inputChars += size;
    // Oldest first: Map iterates in insertion order, and set() re-inserts.
    for (const [oldest, value] of this.#items) {
      if (this.#items.size <= this.maxEntries && this.#inputChars <= this.maxInputChars) break;
      this.#items.delete(oldest);
      this.#inputChars -= inputChars(value);
    }
  }

  delete(id: string): void {
    const old = this.#items.get(id);
    if (old === undefined) return;
    this.#items.delete(id);
    this.#inputChars -= inputChars(old);
  }

  get size(): number {
    return this.#items.size;
  }
}

function inputChars(item: object): number {
  const input = (item as { input?: unknown }).input;
  return typeof input === "string" ? input.length : 0;
}
