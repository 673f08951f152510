// The human-readable reasons a VM is still pending. Each names what is missing
// (no worker at all, none online, none matching the selector or driver, all
// draining, not enough free capacity, no free VM address, a request that can
// never fit) with the numbers an operator needs to act on it.

/** "1 CPU", "2 CPUs", "0.5 CPUs". */
export function plural(n: number, noun: string, pluralNoun = `${noun}s`): string {
  return `${fmt(n)} ${n === 1 ? noun : pluralNoun}`;
}

/** Whole numbers as they are, fractions with at most two decimals, negatives shown as 0 (over-committed). */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const v = Math.max(0, n);
  return Number.isInteger(v) ? String(v) : String(Math.round(v * 100) / 100);
}

export function selectorText(pairs: readonly (readonly [string, string])[]): string {
  return pairs.map(([k, v]) => `${k}=${v}`).join(',');
}

export const noWorkersEnrolled = (): string => 'no workers are enrolled';

export const noWorkerOnline = (enrolled: number): string =>
  enrolled === 1 ? 'no worker is online (1 enrolled, offline)' : `no worker is online (${enrolled} enrolled, all offline)`;

export function noSelectorMatch(selector: string, online: number, matchingOffline: number): string {
  if (matchingOffline > 0) {
    return `no online worker matches selector ${selector} (${plural(matchingOffline, 'matching worker')} offline; ${online} online)`;
  }
  return `no worker matches selector ${selector} (${online} online)`;
}

export function noDriver(driver: string, selector: string, considered: number, offered: readonly string[], offeredOffline: number): string {
  const scope = selector ? `no worker matching selector ${selector}` : 'no worker';
  if (!driver) return `${scope} offers any VM driver (${plural(considered, 'online worker')} considered)`;
  const details: string[] = [];
  details.push(offered.length > 0 ? `${selector ? 'they' : 'online workers'} offer ${offered.join(', ')}` : `${plural(considered, 'online worker')} considered`);
  if (offeredOffline > 0) details.push(`${plural(offeredOffline, 'offline worker')} ${offeredOffline === 1 ? 'does' : 'do'}`);
  return `${scope} offers driver ${driver} (${details.join('; ')})`;
}

/** Issue 18: no online worker (matching the selector and driver) offers the VM's network mode. */
export function noNetworkMode(mode: string, selector: string, considered: number, offered: readonly string[], offeredOffline: number): string {
  const scope = selector ? `no worker matching selector ${selector}` : 'no worker';
  const details = [offered.length > 0 ? `${plural(considered, 'eligible online worker')} ${considered === 1 ? 'offers' : 'offer'} ${offered.join(', ')}` : `${plural(considered, 'eligible online worker')} considered`];
  if (offeredOffline > 0) details.push(`${plural(offeredOffline, 'offline worker')} ${offeredOffline === 1 ? 'does' : 'do'}`);
  return `${scope} offers network mode ${mode} (${details.join('; ')})`;
}

/**
 * Issue 18: the VM's custom MAC is held by an instance on every eligible worker that has room
 * for it (two VMs with one MAC never share a worker).
 */
export function macInUse(mac: string, clashes: readonly { vm: string; worker: string }[]): string {
  const shown = clashes.slice(0, 3);
  const more = clashes.length > shown.length ? ` and ${clashes.length - shown.length} more` : '';
  const vms = new Set(clashes.map((c) => c.vm));
  if (vms.size === 1) {
    return `MAC ${mac} is already used by vm ${clashes[0]!.vm} on every eligible worker with room (${shown.map((c) => c.worker).join(', ')}${more}); waiting until it is deleted or moved, or change this VM's MAC`;
  }
  return `MAC ${mac} is already used on every eligible worker with room (${shown.map((c) => `by vm ${c.vm} on ${c.worker}`).join(', ')}${more}); waiting until one of them is deleted, or change this VM's MAC`;
}

export const noMacosHost = (matching: number): string =>
  `no matching worker can run macOS VMs (${matching === 1 ? 'the 1 matching worker has' : `the ${matching} matching workers have`} no macOS slots)`;

export function allPaused(matching: number, onlyName: string): string {
  return matching === 1
    ? `the only matching worker (${onlyName}) is paused (draining)`
    : `all ${matching} matching workers are paused (draining)`;
}

export interface Largest {
  cpus: number;
  memoryMib: number;
  vmSlots: number;
}

/** The request exceeds every matching worker's total capacity: it will never fit as the fleet is. */
export function neverFits(cpus: number, memoryMib: number, largest: Largest, extra: string): string {
  let detail: string;
  if (cpus > largest.cpus) detail = `${plural(cpus, 'CPU')} requested; largest worker has ${fmt(largest.cpus)}`;
  else if (memoryMib > largest.memoryMib) detail = `${fmt(memoryMib)} MiB memory requested; largest worker has ${fmt(largest.memoryMib)} MiB`;
  else if (largest.vmSlots < 1) detail = 'no matching worker has any VM slot';
  else detail = `${plural(cpus, 'CPU')} and ${fmt(memoryMib)} MiB requested; no single matching worker has both`;
  return `requests more than any matching worker has in total (${detail})${extra}`;
}

export function waitingForMacosSlot(matching: number, onlyName: string, used: number, total: number, uniform: boolean, extra: string): string {
  if (matching === 1) return `waiting for a macOS slot: the only matching worker (${onlyName}) has ${fmt(used)}/${fmt(total)} macOS VMs running${extra}`;
  const counts = uniform ? `${fmt(used / matching)}/${fmt(total / matching)} macOS VMs running` : `all macOS slots in use (${fmt(used)}/${fmt(total)} macOS VMs running)`;
  return `waiting for a macOS slot: all ${matching} matching workers have ${counts}${extra}`;
}

/**
 * Every matching worker has all the VM addresses of its NAT network held by VM instances
 * (`used` of `total`, summed over the workers; `uniform` when each has the same numbers).
 */
export function waitingForAddress(matching: number, onlyName: string, used: number, total: number, uniform: boolean, extra: string, network: 'NAT' | 'host-only' = 'NAT'): string {
  if (matching === 1) {
    return `waiting for a VM address: the only matching worker (${onlyName}) has no free VM address (${fmt(used)} of ${fmt(total)} in its ${network} subnet in use)${extra}`;
  }
  const counts = uniform
    ? `${fmt(used / matching)} of ${fmt(total / matching)} in each ${network} subnet in use`
    : `${fmt(used)} of ${fmt(total)} in their ${network} subnets in use`;
  return `waiting for a VM address: none of the ${matching} matching workers has a free VM address (${counts})${extra}`;
}

export interface BestWorker {
  name: string;
  cpus: number;
  memoryMib: number;
  vmSlots: number;
  macosSlots: number;
  /** Free and total VM addresses; null when the worker does not limit them. */
  addresses: { free: number; total: number } | null;
}

/** How many matching workers lack each resource (a worker can lack several). */
export interface Shortfall {
  cpus: number;
  memoryMib: number;
  vmSlots: number;
  macosSlots: number;
  /** Workers whose VM addresses are all in use. */
  addresses: number;
}

export function waitingForCapacity(
  matching: number,
  cpus: number,
  memoryMib: number,
  macos: boolean,
  best: BestWorker,
  short: Shortfall,
  extra: string,
): string {
  // VM addresses are named only when some matching worker has none free: otherwise they are not the problem.
  const addresses = short.addresses > 0;
  const need = `${plural(cpus, 'CPU')}, ${fmt(memoryMib)} MiB memory${macos ? ', a macOS slot' : ''}${addresses ? ', a VM slot and a VM address' : ' and a VM slot'} free`;
  const bestAddresses = addresses && best.addresses ? `, ${plural(best.addresses.free, 'VM address', 'VM addresses')} (of ${fmt(best.addresses.total)})` : '';
  const has = `${plural(best.cpus, 'CPU')}, ${fmt(best.memoryMib)} MiB, ${plural(best.vmSlots, 'VM slot')}${macos ? `, ${plural(best.macosSlots, 'macOS slot')}` : ''}${bestAddresses} free`;
  if (matching === 1) return `waiting for capacity: the only matching worker (${best.name}) does not have ${need} (it has ${has})${extra}`;
  const lacking = [
    short.cpus > 0 ? `CPUs on ${short.cpus}` : '',
    short.memoryMib > 0 ? `memory on ${short.memoryMib}` : '',
    short.vmSlots > 0 ? `VM slots on ${short.vmSlots}` : '',
    macos && short.macosSlots > 0 ? `macOS slots on ${short.macosSlots}` : '',
    addresses ? `VM addresses on ${short.addresses}` : '',
  ].filter(Boolean);
  const summary = lacking.length > 0 ? `short of ${lacking.join(', ')}; ` : '';
  return `waiting for capacity: ${matching} matching workers, none has ${need} (${summary}best: ${best.name} has ${has})${extra}`;
}

/** Suffix naming matching workers that are left out because they are draining or offline. */
export function unavailableNote(paused: number, offline: number): string {
  const parts: string[] = [];
  if (paused > 0) parts.push(`${paused} paused (draining)`);
  if (offline > 0) parts.push(`${offline} offline`);
  return parts.length > 0 ? `; ${parts.join(', ')} matching ${paused + offline === 1 ? 'worker' : 'workers'} not counted` : '';
}

export function invalidRequest(cpus: number, memoryMib: number): string {
  return `invalid resource request (${String(cpus)} CPUs, ${String(memoryMib)} MiB): cannot be scheduled`;
}
