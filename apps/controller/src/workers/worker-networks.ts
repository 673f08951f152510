// The VM networks a worker offers (issue 18), as stored from its Hello: parsed back from the
// Worker.networks JSON column. A worker that reported none (an older worker, or one whose driver
// has no networks to describe, such as the synthetic one) offers NAT only, with
// capacity.natAddresses as its pool, so nothing that ran before issue 18 changes.
import type { NetworkMode, WorkerNetworkMode } from '@fleet/api';

export interface WorkerNetwork {
  mode: WorkerNetworkMode;
  subnet: string;
  gateway: string;
  /** VM addresses it can hand out; 0 = not limited / not reported. */
  addresses: number;
  interface: string;
}

export function parseWorkerNetworks(json: string): WorkerNetwork[] {
  try {
    const v: unknown = JSON.parse(json);
    if (!Array.isArray(v)) return [];
    const out: WorkerNetwork[] = [];
    for (const n of v) {
      if (!n || typeof n !== 'object') continue;
      const r = n as Record<string, unknown>;
      if (r['mode'] !== 'nat' && r['mode'] !== 'host-only') continue;
      const str = (k: string) => (typeof r[k] === 'string' ? (r[k] as string) : '');
      const addresses = typeof r['addresses'] === 'number' && Number.isInteger(r['addresses']) && r['addresses'] >= 0 ? r['addresses'] : 0;
      out.push({ mode: r['mode'], subnet: str('subnet'), gateway: str('gateway'), addresses, interface: str('interface') });
    }
    return out;
  } catch {
    return []; // stored by us: only a manual edit gets here; the worker then counts as NAT-only
  }
}

/** The modes a worker offers: those of its networks, or NAT alone when it reported none. */
export function offeredModes(networks: readonly WorkerNetwork[]): WorkerNetworkMode[] {
  if (networks.length === 0) return ['nat'];
  return [...new Set(networks.map((n) => n.mode))].sort();
}

/** Whether a VM of this mode can run on the worker ("none" needs no network). */
export function offersMode(networks: readonly WorkerNetwork[], mode: NetworkMode): boolean {
  return mode === 'none' || offeredModes(networks).includes(mode);
}

/** The address pool of a mode on a worker: 0 = not limited (NAT falls back to capacity.natAddresses). */
export function poolOf(networks: readonly WorkerNetwork[], mode: NetworkMode, natAddresses: number): number {
  if (mode === 'none') return 0;
  if (mode === 'nat' && natAddresses > 0) return natAddresses;
  return networks.find((n) => n.mode === mode)?.addresses ?? 0;
}
