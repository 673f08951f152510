// macOS guest slots. Apple's licence (and Virtualization.framework, as
// VZErrorVirtualMachineLimitExceeded) allows 2 macOS guests per host. The framework's count can
// also include VMs we don't know about (another tool, a count stuck until reboot), so besides
// counting our own, a limit error from the framework closes the host to macOS guests until one of
// ours frees a slot: never "accepted" for a VM that cannot start.
export class MacosSlots {
  private readonly held = new Set<string>();
  private blockedReason: string | undefined;
  private readonly listeners = new Set<(available: number) => void>();

  private retryTimer: NodeJS.Timeout | undefined;

  /**
   * `retryAfterMs`: slots held outside Fleet can free up without any sign, so a limit block is
   * also lifted this long after it was set (the next start probes the framework again).
   */
  constructor(readonly capacity = 2, private readonly retryAfterMs = 300_000) {
    if (!Number.isInteger(capacity) || capacity < 0) throw new RangeError(`macOS slot capacity must be a non-negative integer, not ${capacity}`);
  }

  /** Slots free right now (0 while blocked by a framework limit error). */
  available(): number {
    if (this.blockedReason !== undefined) return 0;
    return Math.max(0, this.capacity - this.held.size);
  }

  /** Why no slot is free, or undefined when one is. */
  unavailableReason(): string | undefined {
    if (this.blockedReason !== undefined) return this.blockedReason;
    if (this.held.size >= this.capacity) return `all ${this.capacity} macOS slots of this host are in use (${[...this.held].join(', ')})`;
    return undefined;
  }

  /** Takes a slot for `key` (idempotent). Returns false — taking nothing — when none is free. */
  acquire(key: string): boolean {
    if (this.held.has(key)) return true;
    if (this.available() === 0) return false;
    this.held.add(key);
    this.emit();
    return true;
  }

  /** Marks `key` as holding a slot without checking (re-attaching to a VM that is already running). */
  adopt(key: string): void {
    if (this.held.has(key)) return;
    this.held.add(key);
    this.emit();
  }

  /** Frees `key`'s slot; freeing a slot also lifts a framework-limit block. */
  release(key: string): void {
    if (!this.held.delete(key)) return;
    this.blockedReason = undefined;
    this.emit();
  }

  /**
   * The framework refused a start with VZErrorVirtualMachineLimitExceeded: the start's own slot
   * is freed and the host is closed to macOS guests until one of ours stops.
   */
  limitExceeded(key: string, reason: string): void {
    this.held.delete(key);
    this.blockedReason = reason;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (this.blockedReason === undefined) return;
      this.blockedReason = undefined;
      this.emit();
    }, this.retryAfterMs);
    this.retryTimer.unref();
    this.emit();
  }

  holders(): string[] {
    return [...this.held];
  }

  /** Called with the number of free slots whenever it may have changed (to re-advertise capacity). */
  onChange(listener: (available: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(): void {
    const n = this.available();
    for (const l of this.listeners) {
      try {
        l(n);
      } catch {
        /* a listener's problem */
      }
    }
  }
}
