// How a VM row is shown through the API: JSON columns parsed, timestamps as ISO strings.
import type { Vm } from '@fleet/db';
import { disconnectPolicyOf } from './lifecycle.ts';
import { isNetworkMode, type NetworkMode } from '@fleet/api';
import type { VmObject } from '../api/schemas.ts';
import { progressView } from '../images/image-views.ts';

export function parseLabels(json: string): Record<string, string> {
  try {
    const value: unknown = JSON.parse(json);
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      return Object.fromEntries(Object.entries(value).filter((e): e is [string, string] => typeof e[1] === 'string'));
    }
  } catch {
    // Stored by us, so this only happens on manual edits: show no labels rather than fail the request.
  }
  return {};
}

export interface NetworkPolicy {
  allow: string[];
  block: string[];
  blockLocal: boolean;
}

/** The stored policy with every field present (rows from before the column read as "{}"). */
export function parseNetwork(json: string): NetworkPolicy {
  try {
    const v = JSON.parse(json) as Partial<NetworkPolicy> | null;
    const strings = (a: unknown): string[] => (Array.isArray(a) ? a.filter((x): x is string => typeof x === 'string') : []);
    return { allow: strings(v?.allow), block: strings(v?.block), blockLocal: v?.blockLocal === true };
  } catch {
    return { allow: [], block: [], blockLocal: false };
  }
}

/** The stored mode (rows from before issue 18, or anything unknown, read as "nat"). */
export function networkModeOf(stored: string): NetworkMode {
  return isNetworkMode(stored) ? stored : 'nat';
}

/** The NIC's MAC as shown: the custom one, else the one the worker reported; none without a NIC. */
export function macOf(vm: Pick<Vm, 'networkMode' | 'customMac' | 'mac'>): { mac: string | null; macSource: 'custom' | 'worker' | null } {
  if (networkModeOf(vm.networkMode) === 'none') return { mac: null, macSource: null };
  if (vm.customMac) return { mac: vm.customMac, macSource: 'custom' };
  return vm.mac ? { mac: vm.mac, macSource: 'worker' } : { mac: null, macSource: null };
}

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function toVmObject(vm: Vm, workerName: string | null, passwordSet = false): VmObject {
  return {
    id: vm.id,
    name: vm.name,
    state: vm.state as VmObject['state'],
    reason: vm.reason,
    image: vm.image,
    imageDigest: vm.imageDigest || null,
    pull: pullOf(vm),
    os: vm.os as VmObject['os'],
    driver: vm.driver,
    cpus: vm.cpus,
    memoryMib: vm.memoryMib,
    diskGib: vm.diskGib,
    username: vm.username,
    passwordSet,
    labels: parseLabels(vm.labels),
    selector: parseLabels(vm.selector),
    network: { mode: networkModeOf(vm.networkMode), ...parseNetwork(vm.network) },
    priority: vm.priority,
    restartPolicy: vm.restartPolicy as VmObject['restartPolicy'],
    disconnectPolicy: disconnectPolicyOf(vm.disconnectPolicy),
    restartCount: vm.restartCount,
    powerState: vm.desiredPower as VmObject['powerState'],
    generation: vm.generation,
    observedGeneration: vm.observedGeneration,
    attempt: vm.attempt,
    worker: workerName,
    ip: vm.ip,
    ...macOf(vm),
    createdBy: vm.createdBy,
    createdAt: vm.createdAt.toISOString(),
    updatedAt: vm.updatedAt.toISOString(),
    scheduledAt: iso(vm.scheduledAt),
    runningAt: iso(vm.runningAt),
    restartAt: iso(vm.restartAt),
  };
}

/** The image pull in progress for the current attempt (shown only while the VM is being started). */
function pullOf(vm: Vm): VmObject['pull'] {
  if (!vm.pullProgress || (vm.state !== 'scheduled' && vm.state !== 'starting' && vm.state !== 'stopped')) return null;
  try {
    const p = JSON.parse(vm.pullProgress) as { bytesDone?: unknown; bytesTotal?: unknown };
    const bytes = (v: unknown): bigint => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? BigInt(Math.floor(v)) : 0n);
    return progressView(bytes(p.bytesDone), bytes(p.bytesTotal));
  } catch {
    return null;
  }
}
