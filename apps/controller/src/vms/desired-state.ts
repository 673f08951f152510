// The set of VM instances a worker should hold, built from the database.
import type { FleetDb } from '@fleet/db';
import type { VmAssignment } from '@fleet/proto';
import { PLACED_STATES } from './vm-service.ts';
import { parseLabels, parseNetwork } from './vm-view.ts';
import { ensureVmAccess } from '../sessions/vm-access.ts';
import type { VmSecrets } from '../secrets/vm-secrets.ts';

export async function desiredAssignments(db: FleetDb, secrets: VmSecrets, workerId: string): Promise<VmAssignment[]> {
  const vms = await db.vm.findMany({ where: { workerId, state: { in: PLACED_STATES } }, orderBy: { createdAt: 'asc' } });
  // Every VM boots with the fleet's per-VM session key authorized (issue 5).
  const access = await ensureVmAccess(db, secrets, vms);
  return vms.map((vm) => ({
    vmId: vm.id,
    name: vm.name,
    attempt: vm.attempt,
    generation: vm.generation,
    desiredPower: vm.desiredPower === 'stopped' ? 'POWER_STATE_STOPPED' : 'POWER_STATE_RUNNING',
    disconnectPolicy: vm.disconnectPolicy === 'wait' ? 'wait' : 'reschedule',
    spec: {
      image: vm.image,
      os: vm.os,
      cpus: vm.cpus,
      memoryMib: vm.memoryMib,
      diskGib: vm.diskGib,
      labels: parseLabels(vm.labels),
      username: vm.username,
      driver: vm.driver,
      network: parseNetwork(vm.network),
      authorizedKeys: access.has(vm.id) ? [access.get(vm.id)!.publicKey] : [],
    },
  }));
}
