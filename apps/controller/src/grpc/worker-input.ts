// Everything a worker sends is untrusted input: bound it, type it, and turn it
// into the controller's own shapes. Invalid reports are dropped with a reason,
// never allowed to throw inside a stream handler.
import type { Capacity__Output, Hello__Output, VmStatus__Output, WorkerEvent__Output, WorkerNetwork__Output } from '@fleet/proto';
import { cidrContains, parseCidr } from '@fleet/netfilter';
import type { WorkerNetwork } from '../workers/worker-networks.ts';
import type { HelloInfo, WorkerCapacity } from '../workers/worker-service.ts';
import type { ReportedInstance } from '../vms/vm-service.ts';
import type { WorkerPhase } from '../vms/lifecycle.ts';
import { labelKeyProblem, labelValueProblem, MAX_LABELS } from '@fleet/api';

export const MAX_REPORTS_PER_MESSAGE = 10_000;
const PHASES: ReadonlySet<string> = new Set([
  'VM_PHASE_STARTING',
  'VM_PHASE_RUNNING',
  'VM_PHASE_STOPPING',
  'VM_PHASE_STOPPED',
  'VM_PHASE_FAILED',
  'VM_PHASE_GONE',
]);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const IPV4 = /^(\d{1,3}\.){3}\d{1,3}$/;
const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i;

const clip = (s: string | undefined, max: number) => (s ?? '').slice(0, max);
const uint = (v: string | number | undefined, max = Number.MAX_SAFE_INTEGER) => {
  const n = typeof v === 'string' ? Number(v) : (v ?? 0);
  return Number.isFinite(n) && n >= 0 ? Math.min(Math.floor(n), max) : 0;
};

/**
 * A Hello, bounded. Labels that break the label syntax (docs/api.md) are dropped, not clipped
 * (a clipped key could collide with, or turn into, another one): `onRejectedLabel` hears why.
 */
export function helloInfo(
  h: Hello__Output,
  onRejectedLabel: (key: string, reason: string) => void = () => undefined,
  onRejectedNetwork: (reason: string) => void = () => undefined,
): HelloInfo {
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(h.labels ?? {})) {
    const problem = labelKeyProblem(k) ?? labelValueProblem(v);
    if (problem) onRejectedLabel(k.slice(0, 80), problem);
    else if (Object.keys(labels).length >= MAX_LABELS) onRejectedLabel(k, `more than ${MAX_LABELS} labels`);
    else labels[k] = v;
  }
  const networks = workerNetworks(h.networks ?? [], onRejectedNetwork);
  const capacity = capacityInfo(h.capacity);
  // A worker that states its NAT pool only on the network (not in Capacity) is limited by it too.
  const nat = networks.find((n) => n.mode === 'nat');
  if (capacity.natAddresses === 0 && nat && nat.addresses > 0) capacity.natAddresses = nat.addresses;
  return {
    protocolVersion: h.protocolVersion,
    version: clip(h.workerVersion, 64),
    hostname: clip(h.hostname, 253),
    machineId: clip(h.machineId, 128),
    os: clip(h.platform?.os, 32),
    arch: clip(h.platform?.arch, 32),
    ...capacity,
    labels,
    drivers: (h.drivers ?? []).slice(0, 16).map((d) => clip(d, 32)),
    networks,
  };
}

export const MAX_WORKER_NETWORKS = 8;
const WORKER_NETWORK_MODES: ReadonlySet<string> = new Set(['nat', 'host-only']);
/** Interface names: a bridge ("fleet0") or vmnet's ("vmnet shared"); printable, no control characters. */
const INTERFACE = /^[\x20-\x7e]{1,64}$/;

/**
 * The networks of a Hello (issue 18), bounded: at most 8, one per mode (the first wins), a known
 * mode, an IPv4 subnet with a prefix of /8 to /30 and no host bits, a gateway inside it, addresses
 * no more than the subnet holds. Anything else is dropped with a reason (`onRejected`), never
 * clipped into something the worker did not say.
 */
export function workerNetworks(list: readonly WorkerNetwork__Output[], onRejected: (reason: string) => void = () => undefined): WorkerNetwork[] {
  const out: WorkerNetwork[] = [];
  if (list.length > MAX_WORKER_NETWORKS) onRejected(`${list.length - MAX_WORKER_NETWORKS} networks over the limit of ${MAX_WORKER_NETWORKS}`);
  for (const [i, n] of list.slice(0, MAX_WORKER_NETWORKS).entries()) {
    const at = `network ${i}`;
    const mode = typeof n.mode === 'string' ? n.mode : '';
    if (!WORKER_NETWORK_MODES.has(mode)) {
      onRejected(`${at}: unknown mode ${JSON.stringify(clip(mode, 32))} (nat or host-only)`);
      continue;
    }
    if (out.some((o) => o.mode === mode)) {
      onRejected(`${at}: a second ${mode} network (only the first counts)`);
      continue;
    }
    const subnetText = clip(n.subnet, 43);
    const subnet = subnetText.includes('/') ? parseCidr(subnetText) : ({ ok: false, error: 'no prefix length' } as const);
    if (!subnet.ok) {
      onRejected(`${at} (${mode}): subnet ${JSON.stringify(subnetText)}: ${subnet.error}`);
      continue;
    }
    if (subnet.cidr.prefix < 8 || subnet.cidr.prefix > 30) {
      onRejected(`${at} (${mode}): subnet ${subnetText} must be a /8 to /30`);
      continue;
    }
    const gatewayText = clip(n.gateway, 15);
    const gateway = IPV4.test(gatewayText) ? parseCidr(gatewayText) : ({ ok: false, error: 'not an IPv4 address' } as const);
    if (!gateway.ok || !cidrContains(subnet.cidr, gateway.cidr.base)) {
      onRejected(`${at} (${mode}): gateway ${JSON.stringify(gatewayText)} is not an IPv4 address in ${subnetText}`);
      continue;
    }
    const room = 2 ** (32 - subnet.cidr.prefix) - 2; // without the network and broadcast addresses
    const addresses = uint(n.addresses);
    if (addresses > room) {
      onRejected(`${at} (${mode}): ${addresses} addresses do not fit in ${subnetText} (at most ${room})`);
      continue;
    }
    const iface = typeof n.interface === 'string' ? n.interface : '';
    if (iface !== '' && !INTERFACE.test(iface)) {
      onRejected(`${at} (${mode}): interface ${JSON.stringify(clip(iface, 64))} is not 1-64 printable characters`);
      continue;
    }
    out.push({ mode: mode as WorkerNetwork['mode'], subnet: subnetText, gateway: gatewayText, addresses, interface: iface });
  }
  return out;
}

/** The capacity of a Hello or a CapacityUpdate, bounded. */
export function capacityInfo(c: Capacity__Output | null | undefined): WorkerCapacity {
  return {
    cpus: uint(c?.cpus, 4096),
    memoryMib: uint(c?.memoryMib, 64 * 1024 * 1024),
    vmSlots: uint(c?.vmSlots, 100_000),
    macosSlots: uint(c?.macosSlots, 100),
    // 0 (or absent, from workers that predate the field) = not limited. At most a /8's worth.
    natAddresses: uint(c?.natAddresses, 1 << 24),
  };
}

export function reportedInstances(statuses: VmStatus__Output[]): { instances: ReportedInstance[]; rejected: string[] } {
  const instances: ReportedInstance[] = [];
  const rejected: string[] = [];
  for (const s of statuses.slice(0, MAX_REPORTS_PER_MESSAGE)) {
    if (!UUID.test(s.vmId)) {
      rejected.push(`status with malformed vm id ${JSON.stringify(clip(s.vmId, 64))}`);
      continue;
    }
    if (typeof s.phase !== 'string' || !PHASES.has(s.phase)) {
      rejected.push(`status for ${s.vmId} with unknown phase ${String(s.phase)}`);
      continue;
    }
    instances.push({
      vmId: s.vmId,
      attempt: uint(s.attempt, 1_000_000),
      phase: s.phase as WorkerPhase,
      observedGeneration: uint(s.observedGeneration),
      ip: IPV4.test(s.ip) ? s.ip : '',
      mac: MAC.test(s.mac) ? s.mac.toLowerCase() : '',
      message: clip(s.message, 1024),
      pull: pullProgress(s.pull),
    });
  }
  if (statuses.length > MAX_REPORTS_PER_MESSAGE) rejected.push(`${statuses.length - MAX_REPORTS_PER_MESSAGE} statuses over the per-message limit`);
  return { instances, rejected };
}

/** An image pull's progress as reported (bytes done never above the total); null when none. */
function pullProgress(p: { bytesDone?: string | number; bytesTotal?: string | number } | null | undefined): { bytesDone: number; bytesTotal: number } | null {
  if (!p) return null;
  const bytesTotal = uint(p.bytesTotal);
  return { bytesDone: Math.min(uint(p.bytesDone), bytesTotal), bytesTotal };
}

export function workerEvent(e: WorkerEvent__Output): { kind: string; level: 'info' | 'warn' | 'error'; message: string; vmId: string | null } {
  const level = e.level === 'warn' || e.level === 'error' ? e.level : 'info';
  return {
    kind: `worker.${clip(e.kind, 48).replace(/[^a-z0-9._-]/gi, '') || 'event'}`,
    level,
    message: clip(e.message, 2048),
    vmId: UUID.test(e.vmId) ? e.vmId : null,
  };
}
