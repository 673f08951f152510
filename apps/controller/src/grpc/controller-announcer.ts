// What a worker stream tells its worker about the fleet's controllers beyond Welcome: a lease
// renewal carries the controller list when it changed since the stream last carried it, so a
// controller that joins after a worker connected becomes known to that worker within seconds
// (not only at its next reconnect). The list is looked up in the background at most every
// `refreshMs`: a renewal is never delayed for it.
export class ControllerListAnnouncer {
  private announced: readonly string[] = [];
  private latest: readonly string[] = [];
  private refreshedAt = Number.NEGATIVE_INFINITY;
  private refreshing = false;

  constructor(
    private readonly lookup: () => Promise<string[]>,
    private readonly refreshMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** The list went out in another message (Welcome). */
  sent(list: readonly string[]): void {
    this.announced = list;
    if (list.length > 0) this.latest = list;
    this.refreshedAt = this.now();
  }

  /** For the next renewal: the newest list if it differs from what this stream carried, else []. */
  forRenewal(): string[] {
    this.refresh();
    if (this.latest.length === 0 || sameAddresses(this.latest, this.announced)) return [];
    this.announced = this.latest;
    return [...this.latest];
  }

  private refresh(): void {
    if (this.refreshing || this.now() - this.refreshedAt < this.refreshMs) return;
    this.refreshing = true;
    this.refreshedAt = this.now();
    void this.lookup()
      .then((list) => {
        // An empty answer is "unknown right now" (the lookup never fails loudly), not "no controllers".
        if (list.length > 0) this.latest = list;
      })
      .catch(() => undefined)
      .finally(() => (this.refreshing = false));
  }
}

/** Same addresses, in any order. */
export function sameAddresses(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(b);
  return a.every((x) => set.has(x));
}
