// What the pending reasons need to know about one set of eligible workers once
// the plan is done. The first few request shapes are answered by a linear scan
// (O(workers) each); when a queue holds many distinct shapes the set is indexed
// once so that each further shape costs O(log workers + frontier):
//  - total capacity: the Pareto frontier of (CPUs, memory) over workers with a
//    VM slot answers "could this ever fit here?";
//  - free capacity: sorted free CPUs / memory count "how many workers lack X" by
//    binary search, and the Pareto frontier of free vectors (CPUs, memory,
//    slots, VM addresses and, for macOS, macOS slots) holds the worker closest to fitting for
//    any request, because closeness only grows with every free resource and
//    ties are broken towards the larger vector (so both paths agree exactly).
import type { FreeCapacity } from './capacity-index.ts';
import type { BestWorker, Largest, Shortfall } from './reasons.ts';

export interface TotalCapacity {
  cpus: number;
  memoryMib: number;
  vmSlots: number;
  macosSlots: number;
  /** 0 or absent = not limited. */
  natAddresses?: number;
}

/** Shapes answered by scanning before the set is indexed. */
const SCAN_SHAPES = 8;

export class CapacitySummary {
  readonly matching: number;
  readonly largest: Largest;
  /** macOS slot use over all the workers, when none has a macOS slot free. */
  readonly macosFull: { used: number; total: number; uniform: boolean } | null;
  /** VM address use over all the workers, when none has a VM address free (all limit them). */
  readonly addressesFull: { used: number; total: number; uniform: boolean } | null;
  private readonly noSlot: number;
  private readonly noMacos: number;
  private readonly noAddress: number;
  /** Request shapes asked about so far (every reason starts with everFits). */
  private shapes = 0;
  private indexed: {
    /** (CPUs, memory) pairs, CPUs descending. */
    totalFrontier: number[];
    sortedFreeCpus: Float64Array;
    sortedFreeMem: Float64Array;
    frontier: number[];
  } | null = null;

  constructor(
    private readonly eligible: readonly number[],
    private readonly free: FreeCapacity,
    private readonly capacityOf: (w: number) => TotalCapacity,
    private readonly macos: boolean,
  ) {
    const n = eligible.length;
    this.matching = n;
    const { vmSlots: freeSlots, macosSlots: freeMacos, addresses: freeAddresses } = free;
    const largest = { cpus: Number.NEGATIVE_INFINITY, memoryMib: Number.NEGATIVE_INFINITY, vmSlots: Number.NEGATIVE_INFINITY };
    let noSlot = 0;
    let noMacos = 0;
    let macosUsed = 0;
    let macosTotal = 0;
    let uniform = true;
    let noAddress = 0;
    let addressesUsed = 0;
    let addressesTotal = 0;
    let addressesUniform = true;
    const first = eligible[0];
    const cap0 = first === undefined ? 0 : capacityOf(first).macosSlots;
    const used0 = first === undefined ? 0 : cap0 - freeMacos[first]!;
    const pool0 = first === undefined ? 0 : (capacityOf(first).natAddresses ?? 0);
    const inUse0 = first === undefined ? 0 : pool0 - freeAddresses[first]!;
    for (const w of eligible) {
      const cap = capacityOf(w);
      if (cap.cpus > largest.cpus) largest.cpus = cap.cpus;
      if (cap.memoryMib > largest.memoryMib) largest.memoryMib = cap.memoryMib;
      if (cap.vmSlots > largest.vmSlots) largest.vmSlots = cap.vmSlots;
      if (freeSlots[w]! < 1) noSlot++;
      if (freeMacos[w]! < 1) noMacos++;
      const used = cap.macosSlots - freeMacos[w]!;
      macosUsed += used;
      macosTotal += cap.macosSlots;
      if (cap.macosSlots !== cap0 || used !== used0) uniform = false;
      const pool = cap.natAddresses ?? 0;
      if (pool >= 1) {
        const inUse = pool - freeAddresses[w]!;
        addressesUsed += inUse;
        addressesTotal += pool;
        if (pool !== pool0 || inUse !== inUse0) addressesUniform = false;
      }
      if (freeAddresses[w]! < 1) noAddress++;
    }
    this.largest = largest;
    this.noSlot = noSlot;
    this.noMacos = noMacos;
    this.noAddress = noAddress;
    this.macosFull = macos && n > 0 && noMacos === n ? { used: macosUsed, total: macosTotal, uniform } : null;
    // A worker without an address limit has Infinity free, so "none free" implies every worker limits them.
    this.addressesFull = n > 0 && noAddress === n ? { used: addressesUsed, total: addressesTotal, uniform: addressesUniform } : null;
  }

  /** Could some worker of the set take the request if it were empty? */
  everFits(cpus: number, memoryMib: number): boolean {
    this.shapes++;
    const ix = this.index();
    if (ix) {
      const f = ix.totalFrontier;
      for (let i = 0; i < f.length; i += 2) if (f[i]! >= cpus && f[i + 1]! >= memoryMib) return true;
      return false;
    }
    for (const w of this.eligible) {
      const cap = this.capacityOf(w);
      if (cap.cpus >= cpus && cap.memoryMib >= memoryMib && cap.vmSlots >= 1) return true;
    }
    return false;
  }

  /** How many workers lack each resource for this request. */
  shortfall(cpus: number, memoryMib: number): Shortfall {
    const ix = this.index();
    let shortCpus = 0;
    let shortMem = 0;
    if (ix) {
      shortCpus = countBelow(ix.sortedFreeCpus, cpus);
      shortMem = countBelow(ix.sortedFreeMem, memoryMib);
    } else {
      for (const w of this.eligible) {
        if (this.free.cpus[w]! < cpus) shortCpus++;
        if (this.free.memoryMib[w]! < memoryMib) shortMem++;
      }
    }
    return { cpus: shortCpus, memoryMib: shortMem, vmSlots: this.noSlot, macosSlots: this.noMacos, addresses: this.noAddress };
  }

  /**
   * The worker closest to fitting: most requirements met, then the largest
   * share of the request, then the larger free vector, then name.
   */
  best(cpus: number, memoryMib: number, nameOf: (w: number) => string): BestWorker {
    const { cpus: freeCpus, memoryMib: freeMem, vmSlots: freeSlots, macosSlots: freeMacos, addresses: freeAddresses } = this.free;
    const macos = this.macos;
    const share = (have: number, want: number) => (want <= 0 ? 1 : Math.max(0, Math.min(1, have / want)));
    let best = -1;
    let bestMet = -1;
    let bestShare = -1;
    const candidates = this.index()?.frontier ?? this.eligible;
    for (const w of candidates) {
      const met =
        +(freeCpus[w]! >= cpus) + +(freeMem[w]! >= memoryMib) + +(freeSlots[w]! >= 1) + +(freeAddresses[w]! >= 1) + (macos ? +(freeMacos[w]! >= 1) : 0);
      const s =
        share(freeCpus[w]!, cpus) + share(freeMem[w]!, memoryMib) + share(freeSlots[w]!, 1) + share(freeAddresses[w]!, 1) + (macos ? share(freeMacos[w]!, 1) : 0);
      if (best < 0 || met > bestMet || (met === bestMet && (s > bestShare || (s === bestShare && this.compareVectors(w, best) < 0)))) {
        best = w;
        bestMet = met;
        bestShare = s;
      }
    }
    const pool = this.capacityOf(best).natAddresses ?? 0;
    return {
      name: nameOf(best),
      cpus: freeCpus[best]!,
      memoryMib: freeMem[best]!,
      vmSlots: freeSlots[best]!,
      macosSlots: freeMacos[best]!,
      addresses: pool >= 1 ? { free: freeAddresses[best]!, total: pool } : null,
    };
  }

  /** Larger free vector first (CPUs, memory, slots, VM addresses, macOS slots for macOS), then name rank. */
  private compareVectors(a: number, b: number): number {
    const { cpus, memoryMib, vmSlots, macosSlots, addresses, rank } = this.free;
    return (
      cpus[b]! - cpus[a]! ||
      memoryMib[b]! - memoryMib[a]! ||
      vmSlots[b]! - vmSlots[a]! ||
      descending(addresses[a]!, addresses[b]!) ||
      (this.macos ? macosSlots[b]! - macosSlots[a]! : 0) ||
      rank[a]! - rank[b]!
    );
  }

  /** The first worker of the set (named by the single-worker wordings). */
  firstWorker(): number {
    return this.eligible[0]!;
  }

  private index(): CapacitySummary['indexed'] {
    if (this.indexed || this.shapes <= SCAN_SHAPES) return this.indexed;
    const { cpus: freeCpus, memoryMib: freeMem, vmSlots: freeSlots, macosSlots: freeMacos, addresses: freeAddresses } = this.free;
    const withSlot = this.eligible.map((w) => this.capacityOf(w)).filter((c) => c.vmSlots >= 1);
    withSlot.sort((a, b) => b.cpus - a.cpus || b.memoryMib - a.memoryMib);
    const totalFrontier: number[] = [];
    let maxMem = Number.NEGATIVE_INFINITY;
    for (const c of withSlot) {
      if (c.memoryMib > maxMem) {
        totalFrontier.push(c.cpus, c.memoryMib);
        maxMem = c.memoryMib;
      }
    }
    const mac = (w: number) => (this.macos ? freeMacos[w]! : 0);
    const frontier: number[] = [];
    // Larger vectors first: a worker is kept unless an earlier one has at least as much of everything.
    for (const w of this.eligible.slice().sort((a, b) => this.compareVectors(a, b))) {
      let dominated = false;
      for (const f of frontier) {
        if (
          freeCpus[f]! >= freeCpus[w]! &&
          freeMem[f]! >= freeMem[w]! &&
          freeSlots[f]! >= freeSlots[w]! &&
          freeAddresses[f]! >= freeAddresses[w]! &&
          mac(f) >= mac(w)
        ) {
          dominated = true;
          break;
        }
      }
      if (!dominated) frontier.push(w);
    }
    this.indexed = {
      totalFrontier,
      sortedFreeCpus: Float64Array.from(this.eligible, (w) => freeCpus[w]!).sort(),
      sortedFreeMem: Float64Array.from(this.eligible, (w) => freeMem[w]!).sort(),
      frontier,
    };
    return this.indexed;
  }
}

/** Larger first; safe for +Infinity on both sides (Infinity - Infinity is NaN). */
function descending(a: number, b: number): number {
  return a === b ? 0 : a > b ? -1 : 1;
}

/** Number of values below `x` in an ascending array. */
function countBelow(sorted: Float64Array, x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
