// Workers as the scheduler and the API see them: capacity from the last Hello,
// use from unreleased allocations (so a slot is busy until the worker confirms).
// One allocation is one VM instance the worker holds (or is about to create), in
// any power state: it is also one of the worker's VM addresses in use.
import type { FleetDb, Worker } from '@fleet/db';
import type { WorkerView } from '../scheduler/placement.ts';
import type { WorkerObject } from '../api/schemas.ts';
import { parseLabels } from '../vms/vm-view.ts';
import { offeredModes, parseWorkerNetworks, poolOf } from './worker-networks.ts';

export interface WorkerUse {
  cpus: number;
  memoryMib: number;
  vms: number;
  macosVms: number;
  /** Issue 18: instances by network mode (each holds an address of that network; "none" holds none). */
  natAddresses: number;
  hostOnlyAddresses: number;
}

export async function loadWorkerUse(db: FleetDb, workerId?: string): Promise<Map<string, WorkerUse>> {
  const where = workerId ? { workerId } : {};
  const [all, macos, modes] = await Promise.all([
    db.allocation.groupBy({ by: ['workerId'], where, _sum: { cpus: true, memoryMib: true }, _count: { _all: true } }),
    db.allocation.groupBy({ by: ['workerId'], where: { ...where, macos: true }, _count: { _all: true } }),
    db.allocation.groupBy({ by: ['workerId', 'networkMode'], where: { ...where, networkMode: { in: ['nat', 'host-only'] } }, _count: { _all: true } }),
  ]);
  const use = new Map<string, WorkerUse>();
  for (const row of all) {
    use.set(row.workerId, { cpus: row._sum.cpus ?? 0, memoryMib: row._sum.memoryMib ?? 0, vms: row._count._all, macosVms: 0, natAddresses: 0, hostOnlyAddresses: 0 });
  }
  for (const row of macos) {
    const u = use.get(row.workerId);
    if (u) u.macosVms = row._count._all;
  }
  for (const row of modes) {
    const u = use.get(row.workerId);
    if (!u) continue;
    if (row.networkMode === 'nat') u.natAddresses = row._count._all;
    else u.hostOnlyAddresses = row._count._all;
  }
  return use;
}

const NO_USE: WorkerUse = { cpus: 0, memoryMib: 0, vms: 0, macosVms: 0, natAddresses: 0, hostOnlyAddresses: 0 };

export function parseDrivers(json: string): string[] {
  try {
    const v: unknown = JSON.parse(json);
    return Array.isArray(v) ? v.filter((d): d is string => typeof d === 'string') : [];
  } catch {
    return [];
  }
}

export async function loadWorkerViews(db: FleetDb): Promise<WorkerView[]> {
  // The workers first, then their use: a network change commits its version and its allocations
  // together, so use read after a version includes every change that version counts.
  const workers = await db.worker.findMany();
  const use = await loadWorkerUse(db);
  return workers.map((w) => {
    const networks = parseWorkerNetworks(w.networks);
    return {
      id: w.id,
      name: w.name,
      online: w.status === 'online',
      paused: w.paused,
      labels: parseLabels(w.labels),
      drivers: parseDrivers(w.drivers),
      os: w.os,
      arch: w.arch,
      capacity: { cpus: w.cpus, memoryMib: w.memoryMib, vmSlots: w.vmSlots, macosSlots: w.macosSlots, natAddresses: w.natAddresses, hostOnlyAddresses: poolOf(networks, 'host-only', 0) },
      networkModes: offeredModes(networks),
      used: use.get(w.id) ?? NO_USE,
      networkVersion: w.networkVersion,
    };
  });
}

/** Expiry of each worker's newest unrevoked client certificate. */
export async function loadCertificateExpiry(db: FleetDb, workerId?: string): Promise<Map<string, Date>> {
  const rows = await db.workerCredential.groupBy({ by: ['workerId'], where: { revokedAt: null, ...(workerId ? { workerId } : {}) }, _max: { notAfter: true } });
  const out = new Map<string, Date>();
  for (const r of rows) if (r._max.notAfter) out.set(r.workerId, r._max.notAfter);
  return out;
}

export function toWorkerObject(w: Worker, use: WorkerUse | undefined, certificateExpiresAt?: Date): WorkerObject {
  const u = use ?? NO_USE;
  return {
    id: w.id,
    name: w.name,
    status: w.status === 'online' ? 'online' : 'offline',
    connected: w.connected,
    paused: w.paused,
    hostname: w.hostname,
    os: w.os,
    arch: w.arch,
    version: w.version,
    labels: parseLabels(w.labels),
    drivers: parseDrivers(w.drivers),
    capacity: { cpus: w.cpus, memoryMib: w.memoryMib, vmSlots: w.vmSlots, macosSlots: w.macosSlots, natAddresses: w.natAddresses },
    used: { cpus: u.cpus, memoryMib: u.memoryMib, vms: u.vms, macosVms: u.macosVms, natAddresses: u.natAddresses },
    networks: parseWorkerNetworks(w.networks).map((n) => ({ ...n, used: n.mode === 'nat' ? u.natAddresses : u.hostOnlyAddresses })),
    lastSeenAt: w.lastSeenAt ? w.lastSeenAt.toISOString() : null,
    createdAt: w.createdAt.toISOString(),
    certificateExpiresAt: certificateExpiresAt ? certificateExpiresAt.toISOString() : null,
  };
}
