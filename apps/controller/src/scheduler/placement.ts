// The placement planner: a pure function from (pending VMs, workers, profile)
// to placements and a reason for every VM left pending. No I/O, no clock: the
// scheduler loop loads the views, calls planPlacements and commits the result
// transactionally (a placement only sticks while the VM is still pending).
//
// Rules
//  - VMs are considered by priority (higher first), then creation time (FIFO),
//    then id, so the outcome is deterministic.
//  - A worker is eligible for a VM when it is online, not paused (draining),
//    carries every selector label, offers the requested driver (or any driver
//    when none is requested), and has the CPUs, memory, a VM slot, a VM address
//    (when it reports a finite NAT pool) and, for a macOS VM, a macOS slot free.
//  - VM addresses: a worker reporting capacity.natAddresses = N > 0 holds one
//    address per VM instance from creation to removal, whatever its power
//    state, so it can hold at most N VMs. They are counted like VM slots, from
//    unreleased allocations (used.vms): every VM placed on the worker counts
//    from placement until the worker confirms its instance gone — scheduled,
//    starting, running, stopping, stopped, and failed or deleting ones whose
//    instance still exists. N = 0 means not limited.
//  - pack prefers the busiest eligible worker (fewest free VM slots, then least
//    free memory), spread the least busy (most free slots, then most memory);
//    both break ties by worker name (then id). "Free VM slots" here is the
//    smaller of free slots and free VM addresses (what the worker can still take).
//  - Image locality (issue 15): among eligible workers with room and the same
//    free-slot level (the profile's main key), a worker whose cache holds the
//    VM's image (`imageDigest`) ready wins, then one still pulling it, before
//    free memory and the name decide. It never outranks capacity: a worker
//    without room is never chosen because it has the image, and pack/spread
//    still decide between slot levels.
//  - Placements consume capacity within the plan (on private copies; the
//    caller's objects are never mutated), so two VMs never take the same slot.
//  - Backfill, deliberately: when a VM does not fit, VMs after it (lower
//    priority or younger) are still considered and may take the capacity that
//    is left. A large high-priority VM therefore does not block the queue
//    (no head-of-line blocking); the trade-off is that a steady stream of
//    small VMs can keep a large one waiting. Its pending reason says what it
//    is waiting for; reservations/preemption are not part of this planner.
//
// Fast path (10,000 VMs x 1,000 workers in ~20 ms; see bench/scheduler.ts)
//  - VMs are grouped by requirement signature (os, driver, selector). Workers
//    are grouped into classes by what eligibility can see: online, paused,
//    macOS-capable, the requested drivers they offer, and the label=value
//    pairs they carry that some pending VM's selector asks for. A signature's
//    eligible workers are found once, through an inverted index from
//    label=value to classes, never by testing every worker for every VM.
//  - Signatures with the same eligible workers (and the same os) share one
//    CapacityIndex: the workers in profile order, bucketed by free slots and
//    sorted by free memory, so a query is a few binary searches. A placement
//    re-positions the chosen worker in each live index containing it; workers
//    that can no longer take the smallest VM of an index leave it; indexes
//    with no VM left to place stop being maintained; a shape that failed
//    short-circuits every later VM at least as large.
//  - Pending reasons are computed after the plan, once per signature for the
//    structural causes (nothing enrolled/online/matching/unpaused) and once per
//    signature + shape for capacity, from a summary of the signature's workers
//    built once (CapacitySummary: frontiers and sorted free capacity), so a
//    queue with thousands of distinct shapes stays cheap.
import { CapacityIndex, preferenceOrder, slotsFree, type FreeCapacity } from './capacity-index.ts';
import { CapacitySummary } from './capacity-summary.ts';
import * as reasons from './reasons.ts';
import type { NetworkMode } from '@fleet/api';

export type SchedulerProfile = 'pack' | 'spread';

export interface Resources {
  cpus: number;
  memoryMib: number;
}

export interface WorkerView {
  id: string;
  name: string;
  online: boolean;
  /** Drained by an operator: keeps its VMs, takes no new ones. */
  paused: boolean;
  labels: Record<string, string>;
  /** Runtimes the worker offers: 'synthetic', 'qemu', 'vz'. */
  drivers: string[];
  /** Host platform: 'darwin' | 'linux', 'arm64' | 'amd64'. */
  os: string;
  arch: string;
  /**
   * natAddresses: VM addresses the worker's NAT network can hand out, one per VM instance it
   * holds (any power state); 0 or absent = not limited. Counted against `used.vms`.
   */
  capacity: { cpus: number; memoryMib: number; vmSlots: number; macosSlots: number; natAddresses?: number; hostOnlyAddresses?: number };
  /**
   * Issue 18: the network modes the worker offers ("nat", "host-only"); absent or empty = "nat"
   * only (a worker that reports no networks). Mode "none" needs none.
   */
  networkModes?: readonly string[];
  /**
   * From unreleased allocations (a slot stays used until the worker confirms the VM is gone).
   * Each allocation is one instance the worker holds or is about to create: it holds an address
   * of its mode's network (natAddresses / hostOnlyAddresses; without natAddresses every VM counts
   * as a NAT one, as before issue 18).
   */
  used: { cpus: number; memoryMib: number; vms: number; macosVms: number; natAddresses?: number; hostOnlyAddresses?: number };
  /**
   * The worker's `networkVersion` when this view was read (scheduler-loop.ts places nothing on a
   * worker whose version moved since: its address pools or their use changed). Not used in planning.
   */
  networkVersion?: number;
  /** Custom MACs held by instances on the worker (any power state) → the VM holding it. */
  macs?: ReadonlyMap<string, string>;
}

export interface PendingVmView {
  id: string;
  name: string;
  /** Higher first. */
  priority: number;
  /** FIFO within a priority (ties broken by id). */
  createdAtMs: number;
  cpus: number;
  memoryMib: number;
  /** A macOS VM needs a free macOS slot as well as a VM slot. */
  os: 'linux' | 'macos';
  /** The worker must carry every key=value. */
  selector: Record<string, string>;
  /** '' = any driver the worker has. */
  driver: string;
  /** The VM's registry image (manifest digest); '' or absent for local images. */
  imageDigest?: string;
  /** Issue 18: the worker network the VM joins (default "nat"); "none" needs no network. */
  networkMode?: NetworkMode;
  /** Issue 18: a custom MAC (lower case): never placed where an instance already holds it. */
  mac?: string;
}

/** digest → workerId → whether that worker's cache holds the image ready or is pulling it. */
export type ImageHolders = ReadonlyMap<string, ReadonlyMap<string, 'ready' | 'pulling'>>;

/** How much holding an image counts: ready 2, pulling 1, not held 0. */
export function imageRank(holders: ImageHolders | undefined, digest: string | undefined, workerId: string): number {
  if (!digest || !holders) return 0;
  const s = holders.get(digest)?.get(workerId);
  return s === 'ready' ? 2 : s === 'pulling' ? 1 : 0;
}

export interface Placement {
  vmId: string;
  workerId: string;
}

export interface PlanResult {
  /** In the order the VMs were considered. */
  placements: Placement[];
  /** vmId -> human-readable reason, for every VM not placed. */
  pending: Map<string, string>;
}

/** The order in which pending VMs are considered: priority desc, createdAtMs asc, id asc. */
export function comparePending(a: PendingVmView, b: PendingVmView): number {
  if (a.priority !== b.priority) return b.priority - a.priority;
  if (a.createdAtMs !== b.createdAtMs) return a.createdAtMs - b.createdAtMs;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Worker name order (then id): the final tie-break of both profiles. */
export function compareWorkerNames(a: WorkerView, b: WorkerView): number {
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** CPUs and memory must be finite and not negative; anything else can never be placed. */
export function isValidRequest(vm: Resources): boolean {
  return Number.isFinite(vm.cpus) && vm.cpus >= 0 && Number.isFinite(vm.memoryMib) && vm.memoryMib >= 0;
}

/** True when the worker reports a finite pool of VM addresses (of its NAT network). */
export function limitsAddresses(capacity: WorkerView['capacity']): boolean {
  return (capacity.natAddresses ?? 0) >= 1;
}

/** The VM's network mode ("nat" when absent). */
export function modeOf(vm: Pick<PendingVmView, 'networkMode'>): NetworkMode {
  return vm.networkMode ?? 'nat';
}

/** Whether the worker offers the mode: "none" always; a worker without networks offers "nat" only. */
export function offersMode(w: Pick<WorkerView, 'networkModes'>, mode: NetworkMode): boolean {
  if (mode === 'none') return true;
  const modes = w.networkModes;
  return modes && modes.length > 0 ? modes.includes(mode) : mode === 'nat';
}

/**
 * Free capacity of a worker as the views report it (may be negative when over-committed).
 * `addresses` (NAT) and `hostOnlyAddresses` are +Infinity where the pool is not limited.
 */
export function freeOf(w: WorkerView): { cpus: number; memoryMib: number; vmSlots: number; macosSlots: number; addresses: number; hostOnlyAddresses: number } {
  const hostOnly = w.capacity.hostOnlyAddresses ?? 0;
  return {
    cpus: w.capacity.cpus - w.used.cpus,
    memoryMib: w.capacity.memoryMib - w.used.memoryMib,
    vmSlots: Math.floor(w.capacity.vmSlots) - w.used.vms,
    macosSlots: Math.floor(w.capacity.macosSlots) - w.used.macosVms,
    addresses: limitsAddresses(w.capacity) ? Math.floor(w.capacity.natAddresses!) - (w.used.natAddresses ?? w.used.vms) : Number.POSITIVE_INFINITY,
    hostOnlyAddresses: hostOnly >= 1 ? Math.floor(hostOnly) - (w.used.hostOnlyAddresses ?? 0) : Number.POSITIVE_INFINITY,
  };
}

export function planPlacements(vms: readonly PendingVmView[], workers: readonly WorkerView[], profile: SchedulerProfile, images?: ImageHolders): PlanResult {
  return new Planner(workers, profile, images).plan(vms);
}

// ---------------------------------------------------------------- internals

/** Workers that look the same to every pending VM's eligibility test. */
interface WorkerClass {
  id: number;
  online: boolean;
  paused: boolean;
  macosCapable: boolean;
  anyDriver: boolean;
  /** Restricted to the drivers some pending VM requests. */
  drivers: ReadonlySet<string>;
  /** Restricted to the label=value pairs some pending VM's selector asks for. */
  labels: ReadonlyMap<string, string>;
  /** Network modes offered (issue 18). */
  nat: boolean;
  hostOnly: boolean;
  workers: number[];
}

/** What a group of VMs asks of a worker apart from size: os, driver and selector. */
interface Requirement {
  key: string;
  macos: boolean;
  driver: string;
  mode: NetworkMode;
  selector: [string, string][];
  minCpus: number;
  minMemoryMib: number;
  /** Set when no worker can be eligible, whatever the capacity: the pending reason. */
  structural: string | null;
  /** Online, unpaused workers that match (capacity aside). */
  eligible: number[];
  /** Matching workers left out because they are paused / offline (for the reasons). */
  pausedMatching: number;
  offlineMatching: number;
  index: CapacityIndex | null;
}

const SEP = '\u0000';
const PAIR_END = '\u0001';

function requirementKey(vm: PendingVmView): string {
  const sel = vm.selector;
  const mode = modeOf(vm);
  let key = (vm.os === 'macos' ? 'm' : 'l') + (mode === 'nat' ? '' : mode === 'host-only' ? 'h' : 'n') + SEP + vm.driver + PAIR_END;
  let keys: string[] | undefined;
  for (const k in sel) if (Object.hasOwn(sel, k)) (keys ??= []).push(k);
  if (keys === undefined) return key; // the common case: no selector, no allocation
  if (keys.length > 1) keys.sort();
  for (const k of keys) key += k + SEP + sel[k] + PAIR_END;
  return key;
}

class Planner {
  private readonly n: number;
  private readonly free: FreeCapacity;
  private readonly spread: boolean;
  private onlineCount = 0;
  private classes: WorkerClass[] = [];
  private readonly byPair = new Map<string, WorkerClass[]>();
  /** Per pool ("nat", "host-only", "none") and os: one summary per eligible set. */
  private readonly summaries = new Map<string, Map<readonly number[], CapacitySummary>>();
  /**
   * The free capacity as a VM of each mode sees it: `addresses` is its network's free addresses
   * (+Infinity for "none"). The arrays are shared, so a placement updates every view.
   */
  private readonly views: Record<NetworkMode, FreeCapacity>;
  /** Custom MAC → worker position → the VM holding it there (grows as the plan places VMs). */
  private readonly macHolders = new Map<string, Map<number, string>>();

  /** Per digest: the holders as worker positions with their rank (built on first use). */
  private readonly holderCache = new Map<string, { w: number; rank: number }[]>();
  private positionOfId: Map<string, number> | undefined;

  constructor(
    private readonly workers: readonly WorkerView[],
    profile: SchedulerProfile,
    private readonly images?: ImageHolders,
  ) {
    const n = workers.length;
    this.n = n;
    this.spread = profile === 'spread';
    const cpus = new Float64Array(n);
    const memoryMib = new Float64Array(n);
    const vmSlots = new Float64Array(n);
    const macosSlots = new Float64Array(n);
    const addresses = new Float64Array(n);
    const hostOnlyAddresses = new Float64Array(n);
    const rank = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const w = workers[i]!;
      const f = freeOf(w);
      cpus[i] = f.cpus;
      memoryMib[i] = f.memoryMib;
      vmSlots[i] = f.vmSlots;
      macosSlots[i] = f.macosSlots;
      addresses[i] = f.addresses;
      hostOnlyAddresses[i] = f.hostOnlyAddresses;
      if (w.online) this.onlineCount++;
      if (w.macs) {
        for (const [mac, vmName] of w.macs) {
          let m = this.macHolders.get(mac);
          if (!m) this.macHolders.set(mac, (m = new Map()));
          m.set(i, vmName);
        }
      }
    }
    const byName = Array.from({ length: n }, (_, i) => i).sort((a, b) => compareWorkerNames(workers[a]!, workers[b]!));
    for (let r = 0; r < n; r++) rank[byName[r]!] = r;
    this.free = { cpus, memoryMib, vmSlots, macosSlots, addresses, rank };
    this.views = {
      nat: this.free,
      'host-only': { ...this.free, addresses: hostOnlyAddresses },
      none: { ...this.free, addresses: new Float64Array(n).fill(Number.POSITIVE_INFINITY) },
    };
  }

  plan(input: readonly PendingVmView[]): PlanResult {
    const placements: Placement[] = [];
    const pending = new Map<string, string>();
    if (input.length === 0) return { placements, pending };

    // 1. Order the queue and group it by requirement.
    const vms = input.slice().sort(comparePending);
    const reqOf: (Requirement | null)[] = new Array<Requirement | null>(vms.length).fill(null);
    const requirements = new Map<string, Requirement>();
    const seen = new Set<string>();
    for (let i = 0; i < vms.length; i++) {
      const vm = vms[i]!;
      // A VM listed twice is planned once (the first in queue order).
      if (seen.has(vm.id)) continue;
      seen.add(vm.id);
      const key = requirementKey(vm);
      let req = requirements.get(key);
      if (!req) {
        const selector = Object.entries(vm.selector).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
        req = {
          key,
          macos: vm.os === 'macos',
          driver: vm.driver,
          mode: modeOf(vm),
          selector,
          minCpus: Number.POSITIVE_INFINITY,
          minMemoryMib: Number.POSITIVE_INFINITY,
          structural: null,
          eligible: [],
          pausedMatching: 0,
          offlineMatching: 0,
          index: null,
        };
        requirements.set(key, req);
      }
      reqOf[i] = req;
      if (isValidRequest(vm)) {
        if (vm.cpus < req.minCpus) req.minCpus = vm.cpus;
        if (vm.memoryMib < req.minMemoryMib) req.minMemoryMib = vm.memoryMib;
      }
    }

    // 2. Classes of workers, eligible workers per requirement, shared capacity indexes.
    this.buildClasses(requirements.values());
    const indexes = new Map<string, { index: CapacityIndex; candidates: number[] }>();
    const eligibleByClasses = new Map<string, number[]>();
    for (const req of requirements.values()) {
      const classes = this.resolve(req);
      if (!classes) continue;
      const classKey = classes.map((c) => c.id).join(',');
      let eligible = eligibleByClasses.get(classKey);
      if (!eligible) {
        eligible = [];
        for (const c of classes) for (const w of c.workers) eligible.push(w);
        eligibleByClasses.set(classKey, eligible);
      }
      req.eligible = eligible;
      if (req.minCpus === Number.POSITIVE_INFINITY) continue; // no valid request: nothing to place
      // One index per eligible set, os and network mode: each index sees its mode's address pool.
      const indexKey = (req.macos ? 'm' : 'l') + req.mode + SEP + classKey;
      let entry = indexes.get(indexKey);
      if (!entry) {
        entry = { index: new CapacityIndex(this.views[req.mode], req.macos, this.spread), candidates: eligible };
        indexes.set(indexKey, entry);
      }
      const index = entry.index;
      if (req.minCpus < index.minCpus) index.minCpus = req.minCpus;
      if (req.minMemoryMib < index.minMemoryMib) index.minMemoryMib = req.minMemoryMib;
      req.index = index;
    }
    for (let i = 0; i < vms.length; i++) {
      const req = reqOf[i];
      if (req?.index && isValidRequest(vms[i]!)) req.index.remaining++;
    }
    const memberships: CapacityIndex[][] = new Array<CapacityIndex[]>(this.n);
    if (indexes.size > 0) {
      // Hand each index its candidates in preference order: filter the global
      // order for large candidate sets, sort small ones by position in it.
      const order = preferenceOrder(this.free, this.spread);
      const position = new Int32Array(this.n);
      for (let p = 0; p < this.n; p++) position[order[p]!] = p;
      const stamp = new Int32Array(this.n);
      let id = 0;
      for (const { index, candidates } of indexes.values()) {
        let ordered: number[];
        if (candidates.length * 16 < this.n) ordered = candidates.slice().sort((a, b) => position[a]! - position[b]!);
        else {
          id++;
          for (const w of candidates) stamp[w] = id;
          ordered = [];
          for (let p = 0; p < this.n; p++) if (stamp[order[p]!] === id) ordered.push(order[p]!);
        }
        for (const w of index.build(ordered)) (memberships[w] ??= []).push(index);
      }
    }

    // 3. Place, in queue order, with backfill (see the header).
    const { cpus: freeCpus, memoryMib: freeMem, vmSlots: freeSlots, macosSlots: freeMacos } = this.free;
    const wasMember: boolean[] = [];
    const left: number[] = [];
    /** VMs left pending because of their MAC alone: the reason, decided while planning. */
    const macReasons = new Map<number, string>();
    for (let i = 0; i < vms.length; i++) {
      const req = reqOf[i];
      if (!req) continue; // duplicate id
      const vm = vms[i]!;
      const index = req.index;
      if (!index || !isValidRequest(vm)) {
        left.push(i);
        continue;
      }
      // Issue 18: workers where an instance already holds the VM's custom MAC are out for it.
      const exclude = vm.mac ? this.macHolders.get(vm.mac) : undefined;
      let w = index.find(vm.cpus, vm.memoryMib, exclude);
      if (w >= 0 && vm.imageDigest && this.images) w = this.preferHolder(w, vm, req.macos, index, memberships, exclude);
      index.remaining--;
      if (w < 0) {
        // Room without the MAC rule: the MAC is what keeps it waiting.
        if (exclude && exclude.size > 0 && index.find(vm.cpus, vm.memoryMib) >= 0) macReasons.set(i, this.macReason(vm, exclude, req.eligible));
        left.push(i);
        continue;
      }
      placements.push({ vmId: vm.id, workerId: this.workers[w]!.id });
      const ms = memberships[w]!;
      for (let j = 0; j < ms.length; j++) {
        const m = ms[j]!;
        wasMember[j] = !m.retired && m.remove(w);
      }
      freeCpus[w] = freeCpus[w]! - vm.cpus;
      freeMem[w] = freeMem[w]! - vm.memoryMib;
      freeSlots[w] = freeSlots[w]! - 1;
      const pool = this.views[req.mode].addresses;
      pool[w] = pool[w]! - 1; // Infinity stays Infinity ("none" holds no address)
      if (req.macos) freeMacos[w] = freeMacos[w]! - 1;
      if (vm.mac) {
        let m = this.macHolders.get(vm.mac);
        if (!m) this.macHolders.set(vm.mac, (m = new Map()));
        m.set(w, vm.name);
      }
      for (let j = 0; j < ms.length; j++) {
        const m = ms[j]!;
        if (wasMember[j] && m.accepts(w)) m.insert(w);
      }
    }

    // 4. A reason for every VM left, against the capacity the plan leaves.
    const cache = new Map<string, string>();
    for (const i of left) {
      const vm = vms[i]!;
      const req = reqOf[i]!;
      let reason: string;
      if (!isValidRequest(vm)) reason = reasons.invalidRequest(vm.cpus, vm.memoryMib);
      else if (req.structural !== null) reason = req.structural;
      else if (macReasons.has(i)) reason = macReasons.get(i)!;
      else {
        const key = `${req.key}${SEP}${vm.cpus}${SEP}${vm.memoryMib}`;
        let cached = cache.get(key);
        if (cached === undefined) {
          cached = this.capacityReason(req, vm.cpus, vm.memoryMib);
          cache.set(key, cached);
        }
        reason = cached;
      }
      pending.set(vm.id, reason);
    }
    return { placements, pending };
  }

  /**
   * `w` is the profile's choice for `vm`. A worker of the same free-slot level that holds the VM's
   * image (ready before pulling), is a member of the same index and has room wins over it; among
   * several, free memory and the name decide as usual. O(workers holding the image).
   */
  private preferHolder(w: number, vm: PendingVmView, macos: boolean, index: CapacityIndex, memberships: CapacityIndex[][], exclude?: ReadonlyMap<number, string>): number {
    const holders = this.holdersOf(vm.imageDigest!);
    if (holders.length === 0) return w;
    const own = holders.find((h) => h.w === w)?.rank ?? 0;
    if (own === 2) return w; // already the best: nothing outranks a ready copy on the profile's choice
    const f = this.views[modeOf(vm)];
    const level = Math.floor(slotsFree(f, w));
    let best = -1;
    let bestRank = own;
    for (const { w: h, rank } of holders) {
      if (rank < bestRank || h === w) continue;
      if (rank === bestRank && (best < 0 || !this.prefers(h, best))) continue;
      if (!memberships[h]?.includes(index)) continue;
      if (exclude?.has(h)) continue;
      if (slotsFree(f, h) < 1 || Math.floor(slotsFree(f, h)) !== level) continue;
      if (f.cpus[h]! < vm.cpus || f.memoryMib[h]! < vm.memoryMib || (macos && f.macosSlots[h]! < 1)) continue;
      best = h;
      bestRank = rank;
    }
    return best >= 0 ? best : w;
  }

  /** Why a VM with room somewhere waits for its MAC: the instances holding it on the eligible workers. */
  private macReason(vm: PendingVmView, holders: ReadonlyMap<number, string>, eligible: readonly number[]): string {
    const clashes: { vm: string; worker: string }[] = [];
    for (const w of eligible) {
      const vmName = holders.get(w);
      // Its own earlier attempt holds the MAC until that worker confirms the instance gone.
      if (vmName !== undefined) clashes.push({ vm: vmName === vm.name ? `${vmName} (its previous attempt, until the worker removes it)` : vmName, worker: this.workers[w]!.name });
    }
    return reasons.macInUse(vm.mac!, clashes);
  }

  /** Within one slot level: more (spread) or less (pack) free memory, then the name. */
  private prefers(a: number, b: number): boolean {
    const ma = this.free.memoryMib[a]!;
    const mb = this.free.memoryMib[b]!;
    if (ma !== mb) return this.spread ? ma > mb : ma < mb;
    return this.free.rank[a]! < this.free.rank[b]!;
  }

  private holdersOf(digest: string): { w: number; rank: number }[] {
    let list = this.holderCache.get(digest);
    if (list) return list;
    list = [];
    const m = this.images?.get(digest);
    if (m && m.size > 0) {
      this.positionOfId ??= new Map(this.workers.map((wv, i) => [wv.id, i]));
      for (const [id, state] of m) {
        const i = this.positionOfId.get(id);
        if (i !== undefined) list.push({ w: i, rank: state === 'ready' ? 2 : 1 });
      }
    }
    this.holderCache.set(digest, list);
    return list;
  }

  /** Group workers by everything eligibility looks at, projected onto what the pending VMs ask for. */
  private buildClasses(requirements: Iterable<Requirement>): void {
    // Only label=value pairs some selector asks for can make workers differ
    // (a unique per-host label splits classes only for the hosts selected by it).
    const usedPairs = new Map<string, Set<string>>(); // key -> values some selector asks for
    const requestedDrivers = new Set<string>();
    for (const r of requirements) {
      for (const [k, v] of r.selector) {
        const values = usedPairs.get(k);
        if (values) values.add(v);
        else usedPairs.set(k, new Set([v]));
      }
      if (r.driver) requestedDrivers.add(r.driver);
    }
    const byKey = new Map<string, WorkerClass>();
    for (let i = 0; i < this.n; i++) {
      const w = this.workers[i]!;
      let drivers: string[] | undefined;
      if (requestedDrivers.size > 0) {
        for (const d of w.drivers) {
          if (requestedDrivers.has(d) && !drivers?.includes(d)) (drivers ??= []).push(d);
        }
        if (drivers && drivers.length > 1) drivers.sort();
      }
      let labels: string[] | undefined;
      if (usedPairs.size > 0) {
        const wl = w.labels;
        for (const k of Object.keys(wl)) {
          const v = wl[k]!;
          if (usedPairs.get(k)?.has(v)) (labels ??= []).push(k + SEP + v);
        }
        if (labels && labels.length > 1) labels.sort();
      }
      const online = w.online === true;
      const paused = w.paused === true;
      const macosCapable = w.capacity.macosSlots >= 1;
      const anyDriver = w.drivers.length > 0;
      const nat = offersMode(w, 'nat');
      const hostOnly = offersMode(w, 'host-only');
      let key = `${+online}${+paused}${+macosCapable}${+anyDriver}${+nat}${+hostOnly}`;
      if (drivers) key += drivers.join(PAIR_END);
      key += SEP;
      if (labels) key += labels.join(PAIR_END);
      let cls = byKey.get(key);
      if (!cls) {
        const labelMap = new Map<string, string>();
        for (const l of labels ?? []) {
          const at = l.indexOf(SEP);
          labelMap.set(l.slice(0, at), l.slice(at + 1));
        }
        cls = { id: byKey.size, online, paused, macosCapable, anyDriver, drivers: new Set(drivers), labels: labelMap, nat, hostOnly, workers: [] };
        byKey.set(key, cls);
        for (const l of labels ?? []) {
          const list = this.byPair.get(l);
          if (list) list.push(cls);
          else this.byPair.set(l, [cls]);
        }
      }
      cls.workers.push(i);
    }
    this.classes = [...byKey.values()];
  }

  /**
   * Find the classes of a requirement's eligible workers (capacity aside), in
   * ascending id. Sets `structural` and returns null when there are none.
   */
  private resolve(req: Requirement): WorkerClass[] | null {
    if (this.n === 0) {
      req.structural = reasons.noWorkersEnrolled();
      return null;
    }
    if (this.onlineCount === 0) {
      req.structural = reasons.noWorkerOnline(this.n);
      return null;
    }
    const sel = reasons.selectorText(req.selector);
    // Classes carrying every selector label: start from the rarest label=value.
    let matching: WorkerClass[];
    if (req.selector.length === 0) matching = this.classes;
    else {
      let rarest: WorkerClass[] | undefined;
      for (const [k, v] of req.selector) {
        const list = this.byPair.get(k + SEP + v) ?? [];
        if (!rarest || list.length < rarest.length) rarest = list;
      }
      matching = rarest!.filter((c) => req.selector.every(([k, v]) => c.labels.get(k) === v));
    }
    let online = 0;
    let offline = 0;
    for (const c of matching) {
      if (c.online) online += c.workers.length;
      else offline += c.workers.length;
    }
    if (online === 0) {
      req.structural = reasons.noSelectorMatch(sel, this.onlineCount, offline);
      return null;
    }

    const offersDriver = (c: WorkerClass) => (req.driver ? c.drivers.has(req.driver) : c.anyDriver);
    const withDriver = matching.filter((c) => offersDriver(c));
    if (!withDriver.some((c) => c.online)) {
      const offered = new Set<string>();
      for (const c of matching) if (c.online) for (const w of c.workers) for (const d of this.workers[w]!.drivers) offered.add(d);
      const offeredOffline = withDriver.reduce((n, c) => n + c.workers.length, 0);
      req.structural = reasons.noDriver(req.driver, sel, online, [...offered].sort(), offeredOffline);
      return null;
    }

    const hosts = req.macos ? withDriver.filter((c) => c.macosCapable) : withDriver;
    if (!hosts.some((c) => c.online)) {
      req.structural = reasons.noMacosHost(withDriver.reduce((n, c) => n + (c.online ? c.workers.length : 0), 0));
      return null;
    }

    // Issue 18: the VM's network mode must be offered ("none" needs no network).
    const offers = (c: WorkerClass) => (req.mode === 'nat' ? c.nat : req.mode === 'host-only' ? c.hostOnly : true);
    const networked = req.mode === 'none' ? hosts : hosts.filter(offers);
    if (!networked.some((c) => c.online)) {
      const offered = new Set<string>();
      let considered = 0;
      for (const c of hosts) {
        if (!c.online) continue;
        considered += c.workers.length;
        if (c.nat) offered.add('nat');
        if (c.hostOnly) offered.add('host-only');
      }
      const offline = networked.reduce((n, c) => n + c.workers.length, 0);
      req.structural = reasons.noNetworkMode(req.mode, sel, considered, [...offered].sort(), offline);
      return null;
    }

    const usable: WorkerClass[] = [];
    let paused = 0;
    let pausedName = '';
    for (const c of networked) {
      if (!c.online) req.offlineMatching += c.workers.length;
      else if (c.paused) {
        paused += c.workers.length;
        pausedName = this.workers[c.workers[0]!]!.name;
      } else usable.push(c);
    }
    req.pausedMatching = paused;
    if (usable.length === 0) {
      req.structural = reasons.allPaused(paused, pausedName);
      return null;
    }
    usable.sort((a, b) => a.id - b.id);
    return usable;
  }

  /** Why a VM with eligible workers is still pending: it never fits, or the fitting workers are busy. */
  private capacityReason(req: Requirement, cpus: number, memoryMib: number): string {
    const summary = this.summaryFor(req);
    const extra = reasons.unavailableNote(req.pausedMatching, req.offlineMatching);
    if (!summary.everFits(cpus, memoryMib)) return reasons.neverFits(cpus, memoryMib, summary.largest, extra);
    const firstName = this.workers[summary.firstWorker()]!.name;
    if (summary.macosFull) {
      const { used, total, uniform } = summary.macosFull;
      return reasons.waitingForMacosSlot(summary.matching, firstName, used, total, uniform, extra);
    }
    if (summary.addressesFull) {
      const { used, total, uniform } = summary.addressesFull;
      return reasons.waitingForAddress(summary.matching, firstName, used, total, uniform, extra, req.mode === 'host-only' ? 'host-only' : 'NAT');
    }
    const best = summary.best(cpus, memoryMib, (w) => this.workers[w]!.name);
    return reasons.waitingForCapacity(summary.matching, cpus, memoryMib, req.macos, best, summary.shortfall(cpus, memoryMib), extra);
  }

  /** One summary per eligible set (and os), built on first use after the plan. */
  private summaryFor(req: Requirement): CapacitySummary {
    const cacheKey = (req.macos ? 'm' : 'l') + req.mode;
    let cache = this.summaries.get(cacheKey);
    if (!cache) this.summaries.set(cacheKey, (cache = new Map()));
    let summary = cache.get(req.eligible);
    if (!summary) {
      // The summary reads `natAddresses` as the pool of the VM's network (none for mode "none").
      const capacityOf =
        req.mode === 'nat'
          ? (w: number) => this.workers[w]!.capacity
          : req.mode === 'host-only'
            ? (w: number) => ({ ...this.workers[w]!.capacity, natAddresses: this.workers[w]!.capacity.hostOnlyAddresses ?? 0 })
            : (w: number) => ({ ...this.workers[w]!.capacity, natAddresses: 0 });
      summary = new CapacitySummary(req.eligible, this.views[req.mode], capacityOf, req.macos);
      cache.set(req.eligible, summary);
    }
    return summary;
  }
}
