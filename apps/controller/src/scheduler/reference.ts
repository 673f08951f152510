// A deliberately naive O(VMs x workers) planner with the same placement rules
// as planPlacements: every VM tests every worker. It is the oracle in the
// property tests (the fast planner must place exactly the same VMs on exactly
// the same workers) and the baseline in bench/scheduler.ts. Not for production:
// its pending reasons are generic.
import {
  comparePending,
  compareWorkerNames,
  freeOf,
  imageRank,
  isValidRequest,
  modeOf,
  offersMode,
  type ImageHolders,
  type PendingVmView,
  type PlanResult,
  type SchedulerProfile,
  type WorkerView,
} from './placement.ts';

export function planPlacementsNaive(vms: readonly PendingVmView[], workers: readonly WorkerView[], profile: SchedulerProfile, images?: ImageHolders): PlanResult {
  const free = workers.map(freeOf);
  // Issue 18: the custom MACs each worker's instances hold (grows with the plan).
  const macs = workers.map((w) => new Set(w.macs?.keys() ?? []));
  const spread = profile === 'spread';
  const placements: PlanResult['placements'] = [];
  const pending = new Map<string, string>();
  const seen = new Set<string>();
  // Free addresses of the VM's network (mode "none" holds none).
  const poolFree = (f: (typeof free)[number], vm: PendingVmView): number => {
    const mode = modeOf(vm);
    return mode === 'nat' ? f.addresses : mode === 'host-only' ? f.hostOnlyAddresses : Number.POSITIVE_INFINITY;
  };
  // What a worker can still take as far as slots go: free VM slots, at most its free VM addresses.
  const slots = (f: (typeof free)[number], vm: PendingVmView): number => Math.min(f.vmSlots, poolFree(f, vm));
  // true when worker a is preferred over worker b for `vm` (its network's addresses, its image)
  const better = (a: number, b: number, vm: PendingVmView): boolean => {
    const digest = vm.imageDigest;
    const fa = free[a]!;
    const fb = free[b]!;
    const sa = Math.floor(slots(fa, vm));
    const sb = Math.floor(slots(fb, vm));
    if (sa !== sb) return spread ? sa > sb : sa < sb;
    const ia = imageRank(images, digest, workers[a]!.id);
    const ib = imageRank(images, digest, workers[b]!.id);
    if (ia !== ib) return ia > ib;
    if (fa.memoryMib !== fb.memoryMib) return spread ? fa.memoryMib > fb.memoryMib : fa.memoryMib < fb.memoryMib;
    return compareWorkerNames(workers[a]!, workers[b]!) < 0;
  };
  for (const vm of [...vms].sort(comparePending)) {
    if (seen.has(vm.id)) continue;
    seen.add(vm.id);
    if (!isValidRequest(vm)) {
      pending.set(vm.id, 'invalid resource request');
      continue;
    }
    const macos = vm.os === 'macos';
    let best = -1;
    for (let i = 0; i < workers.length; i++) {
      const w = workers[i]!;
      const f = free[i]!;
      if (!w.online || w.paused) continue;
      if (vm.driver ? !w.drivers.includes(vm.driver) : w.drivers.length === 0) continue;
      if (macos && w.capacity.macosSlots < 1) continue;
      if (!offersMode(w, modeOf(vm))) continue;
      if (vm.mac && macs[i]!.has(vm.mac)) continue;
      let labelsOk = true;
      for (const k in vm.selector) {
        if (!Object.hasOwn(w.labels, k) || w.labels[k] !== vm.selector[k]) {
          labelsOk = false;
          break;
        }
      }
      if (!labelsOk) continue;
      if (f.cpus < vm.cpus || f.memoryMib < vm.memoryMib || f.vmSlots < 1 || poolFree(f, vm) < 1 || (macos && f.macosSlots < 1)) continue;
      if (best < 0 || better(i, best, vm)) best = i;
    }
    if (best < 0) {
      pending.set(vm.id, 'no eligible worker has room');
      continue;
    }
    const f = free[best]!;
    f.cpus -= vm.cpus;
    f.memoryMib -= vm.memoryMib;
    f.vmSlots -= 1;
    if (modeOf(vm) === 'nat') f.addresses -= 1;
    else if (modeOf(vm) === 'host-only') f.hostOnlyAddresses -= 1;
    if (macos) f.macosSlots -= 1;
    if (vm.mac) macs[best]!.add(vm.mac);
    placements.push({ vmId: vm.id, workerId: workers[best]!.id });
  }
  return { placements, pending };
}
