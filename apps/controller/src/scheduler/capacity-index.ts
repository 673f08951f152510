// An ordered index over the workers one group of pending VMs may use, kept in
// the profile's preference order while a plan consumes capacity.
//
// Layout: workers are bucketed by free VM slots (a small integer domain; a
// worker with a finite pool of VM addresses has no more free slots than free
// addresses, see `slotsFree`). The
// profile's preference is "slot level first, then free memory, then name":
//   pack:   fewest free slots first, then least free memory, then name;
//   spread: most free slots first, then most free memory, then name.
// Each bucket is an array sorted from least to most preferred, so the worker a
// query picks sits near the end of its bucket and moving it (remove + insert
// into the next level down) shifts few elements. A query walks the levels in
// preference order and, inside a bucket, starts at the most preferred worker
// with enough free memory (binary search for pack; for spread it is the end),
// so only CPU / macOS-slot misfits are ever stepped over.
//
// Membership is pruned as capacity is consumed: a worker that can no longer take
// the smallest VM of the group (no slot or VM address, too little CPU or memory,
// no macOS slot for a macOS group) leaves the index for the rest of the plan. Capacity only
// shrinks within a plan, so a pruned worker could never have been chosen again.
// For the same reason a request shape that found nothing fails every later
// request at least as large at once.

/** Free capacity of every worker in a plan, as parallel typed arrays (index = worker position). */
export interface FreeCapacity {
  readonly cpus: Float64Array;
  readonly memoryMib: Float64Array;
  readonly vmSlots: Float64Array;
  readonly macosSlots: Float64Array;
  /** Free VM addresses (one per VM instance the worker holds); +Infinity where not limited. */
  readonly addresses: Float64Array;
  /** Position of each worker in name order (ties by id): the final tie-break of both profiles. */
  readonly rank: Int32Array;
}

/** VMs a worker can still take as far as slots go: the smaller of free VM slots and free VM addresses. */
export function slotsFree(free: FreeCapacity, w: number): number {
  const slots = free.vmSlots[w]!;
  const addresses = free.addresses[w]!;
  return addresses < slots ? addresses : slots;
}

const MAX_REMEMBERED_FAILURES = 16;

/**
 * All workers from most to least preferred within one slot level (free memory,
 * then name rank). Filtering this list yields any index's buckets already in
 * order, so indexes are built without sorting each one.
 */
export function preferenceOrder(free: FreeCapacity, spread: boolean): Int32Array {
  const n = free.rank.length;
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const mem = free.memoryMib;
  const rank = free.rank;
  order.sort((a, b) => {
    const ma = mem[a]!;
    const mb = mem[b]!;
    if (ma !== mb) return spread ? mb - ma : ma - mb;
    return rank[a]! - rank[b]!;
  });
  return order;
}

export class CapacityIndex {
  /** VMs still to be considered against this index; at 0 it is retired and no longer maintained. */
  remaining = 0;
  /** The smallest request of the VMs using this index (a lower bound for pruning). */
  minCpus = Number.POSITIVE_INFINITY;
  minMemoryMib = Number.POSITIVE_INFINITY;

  /** Active free-slot levels, ascending. */
  private readonly levels: number[] = [];
  /** Level -> workers, least preferred first. */
  private readonly buckets = new Map<number, number[]>();
  /** Shapes (cpus, memory pairs) that already failed. */
  private readonly failures: number[] = [];

  constructor(
    private readonly free: FreeCapacity,
    readonly macos: boolean,
    private readonly spread: boolean,
  ) {}

  get retired(): boolean {
    return this.remaining <= 0;
  }

  /** Could this worker take the smallest VM of the group right now? */
  accepts(w: number): boolean {
    const f = this.free;
    return (
      slotsFree(f, w) >= 1 &&
      f.cpus[w]! >= this.minCpus &&
      f.memoryMib[w]! >= this.minMemoryMib &&
      (!this.macos || f.macosSlots[w]! >= 1)
    );
  }

  /**
   * Fill the index (once, after the min shapes are known) from candidates in
   * preference order (most preferred first, see `preferenceOrder`). Returns the members.
   */
  build(ordered: readonly number[]): number[] {
    const members: number[] = [];
    for (let i = ordered.length - 1; i >= 0; i--) {
      const w = ordered[i]!;
      if (!this.accepts(w)) continue;
      members.push(w);
      const level = Math.floor(slotsFree(this.free, w));
      let bucket = this.buckets.get(level);
      if (!bucket) {
        bucket = [];
        this.buckets.set(level, bucket);
        this.levels.push(level);
      }
      bucket.push(w);
    }
    this.levels.sort((a, b) => a - b);
    return members;
  }

  /** True when `a` is preferred over `b` within one slot level (keys are unique: rank breaks ties). */
  private preferred(a: number, b: number): boolean {
    const mem = this.free.memoryMib;
    const ma = mem[a]!;
    const mb = mem[b]!;
    if (ma !== mb) return this.spread ? ma > mb : ma < mb;
    return this.free.rank[a]! < this.free.rank[b]!;
  }

  /** Number of workers in `bucket` less preferred than `w` (its position). */
  private position(bucket: number[], w: number): number {
    let lo = 0;
    let hi = bucket.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.preferred(w, bucket[mid]!)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Insert a worker at its current key (the caller checked `accepts`). */
  insert(w: number): void {
    const level = Math.floor(slotsFree(this.free, w));
    const bucket = this.buckets.get(level);
    if (bucket) {
      const i = this.position(bucket, w);
      if (i === bucket.length) bucket.push(w);
      else bucket.splice(i, 0, w);
      return;
    }
    this.buckets.set(level, [w]);
    const levels = this.levels;
    let i = levels.length;
    while (i > 0 && levels[i - 1]! > level) i--;
    levels.splice(i, 0, level);
  }

  /** Remove a worker, located by its current key. Returns false when it was not a member. */
  remove(w: number): boolean {
    const level = Math.floor(slotsFree(this.free, w));
    const bucket = this.buckets.get(level);
    if (!bucket) return false;
    const i = this.position(bucket, w);
    if (bucket[i] !== w) return false;
    if (bucket.length === 1) {
      this.buckets.delete(level);
      const li = this.levels.indexOf(level);
      if (li >= 0) this.levels.splice(li, 1);
    } else if (i === bucket.length - 1) bucket.pop();
    else bucket.splice(i, 1);
    return true;
  }

  /**
   * The most preferred member with `cpus` CPUs and `memoryMib` MiB (and a macOS slot for a macOS
   * group) free, or -1. `exclude`: workers this one VM may not use (they hold its custom MAC).
   */
  find(cpus: number, memoryMib: number, exclude?: ReadonlyMap<number, unknown>): number {
    const fl = this.failures;
    for (let i = 0; i < fl.length; i += 2) {
      if (cpus >= fl[i]! && memoryMib >= fl[i + 1]!) return -1;
    }
    const { cpus: freeCpus, memoryMib: freeMem, macosSlots } = this.free;
    const levels = this.levels;
    const n = levels.length;
    for (let li = 0; li < n; li++) {
      const bucket = this.buckets.get(levels[this.spread ? n - 1 - li : li]!)!;
      let start: number;
      if (this.spread) {
        // Memory ascending along the bucket: the fitting workers are a suffix.
        start = bucket.length - 1;
      } else {
        // Memory descending along the bucket: the fitting workers are a prefix.
        let lo = 0;
        let hi = bucket.length;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (freeMem[bucket[mid]!]! >= memoryMib) lo = mid + 1;
          else hi = mid;
        }
        start = lo - 1;
      }
      for (let i = start; i >= 0; i--) {
        const w = bucket[i]!;
        if (freeMem[w]! < memoryMib) break;
        if (freeCpus[w]! >= cpus && (!this.macos || macosSlots[w]! >= 1) && !exclude?.has(w)) return w;
      }
    }
    // A failure caused by one VM's exclusions says nothing about the shape.
    if (fl.length < MAX_REMEMBERED_FAILURES * 2 && !(exclude && exclude.size > 0)) fl.push(cpus, memoryMib);
    return -1;
  }

  /** Number of members (for tests and diagnostics). */
  get size(): number {
    let n = 0;
    for (const b of this.buckets.values()) n += b.length;
    return n;
  }
}
