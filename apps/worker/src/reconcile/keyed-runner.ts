// Runs one task per key at a time with bounded overall concurrency, coalescing bursts:
// triggering a key that is already queued does nothing, triggering a key that is running
// marks it dirty and it runs once more afterwards (at the back of the queue). The task
// reads the *latest* desired state when it runs, so coalescing never loses an update.

export interface KeyedRunnerOptions {
  concurrency: number;
  run: (key: string) => Promise<void>;
  onError?: (key: string, error: unknown) => void;
}

interface Slot {
  running: boolean;
  queued: boolean;
  dirty: boolean;
}

export class KeyedRunner {
  readonly #concurrency: number;
  readonly #run: (key: string) => Promise<void>;
  readonly #onError: ((key: string, error: unknown) => void) | undefined;
  readonly #slots = new Map<string, Slot>();
  #queue: string[] = [];
  #queueHead = 0;
  #active = 0;
  #closed = false;
  #idleWaiters: Array<() => void> = [];

  constructor(options: KeyedRunnerOptions) {
    if (!(options.concurrency >= 1)) throw new Error('concurrency must be >= 1');
    this.#concurrency = options.concurrency;
    this.#run = options.run;
    this.#onError = options.onError;
  }

  /** True while a task for `key` is executing (not merely queued). */
  isRunning(key: string): boolean {
    return this.#slots.get(key)?.running ?? false;
  }

  get activeCount(): number {
    return this.#active;
  }

  trigger(key: string): void {
    if (this.#closed) return;
    let slot = this.#slots.get(key);
    if (!slot) {
      slot = { running: false, queued: false, dirty: false };
      this.#slots.set(key, slot);
    }
    if (slot.running) {
      slot.dirty = true;
      return;
    }
    if (slot.queued) return;
    slot.queued = true;
    this.#queue.push(key);
    this.#pump();
  }

  /** Resolves once nothing is running or queued. */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Stops starting new tasks (queued ones are dropped) and waits for running ones. */
  async close(): Promise<void> {
    this.#closed = true;
    for (let i = this.#queueHead; i < this.#queue.length; i++) {
      const key = this.#queue[i]!;
      const slot = this.#slots.get(key);
      if (slot && !slot.running) this.#slots.delete(key);
    }
    this.#queue = [];
    this.#queueHead = 0;
    this.#checkIdle();
    await this.idle();
  }

  #pump(): void {
    while (!this.#closed && this.#active < this.#concurrency && this.#queueHead < this.#queue.length) {
      const key = this.#queue[this.#queueHead++]!;
      if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#queueHead);
        this.#queueHead = 0;
      }
      const slot = this.#slots.get(key);
      if (!slot) continue;
      slot.queued = false;
      slot.running = true;
      slot.dirty = false;
      this.#active++;
      void this.#execute(key, slot);
    }
  }

  async #execute(key: string, slot: Slot): Promise<void> {
    try {
      await this.#run(key);
    } catch (error) {
      this.#onError?.(key, error);
    } finally {
      slot.running = false;
      this.#active--;
      if (slot.dirty && !this.#closed) {
        slot.dirty = false;
        slot.queued = true;
        this.#queue.push(key);
      } else if (!slot.queued) {
        this.#slots.delete(key);
      }
      this.#pump();
      this.#checkIdle();
    }
  }

  #isIdle(): boolean {
    return this.#active === 0 && this.#queueHead >= this.#queue.length;
  }

  #checkIdle(): void {
    if (!this.#isIdle() || this.#idleWaiters.length === 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
