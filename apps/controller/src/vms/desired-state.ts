// The set of VM instances a worker should hold, built from the database.
import { directSql, type FleetDb, type Vm } from '@fleet/db';
import { vmsOfWorker } from '../storage/vm-rows.ts';
import type { ImagePull, VmAssignment } from '@fleet/proto';
import { PLACED_STATES } from './vm-service.ts';
import { networkModeOf, parseLabels, parseNetwork } from './vm-view.ts';
import { vmPublicKeys } from '../sessions/vm-access.ts';
import type { VmSecrets } from '../secrets/vm-secrets.ts';

/**
 * The columns an assignment is built from. Only these are read: a push reads every VM of its
 * worker (the desired state is the whole set), so at 100 VMs a worker it maps 100 rows per push
 * (issue 20).
 */
const ASSIGNED_VM = [
  'id',
  'name',
  'attempt',
  'generation',
  'desiredPower',
  'disconnectPolicy',
  'image',
  'imageDigest',
  'os',
  'cpus',
  'memoryMib',
  'diskGib',
  'labels',
  'username',
  'driver',
  'network',
  'networkMode',
  'customMac',
] as const satisfies ReadonlyArray<keyof Vm>;

export type AssignedVm = Pick<Vm, (typeof ASSIGNED_VM)[number]>;

/** Registry images of VMs (issue 15): VM id → what the worker pulls (images/image-pulls.ts); local images absent. */
export type ImagePullsOf = (vms: readonly AssignedVm[]) => Promise<Map<string, ImagePull>>;

export async function desiredAssignments(db: FleetDb, secrets: VmSecrets, workerId: string, imagePulls?: ImagePullsOf): Promise<VmAssignment[]> {
  // Plain SQL (storage/vm-rows.ts): at 100 VMs a worker, mapping them through Prisma at every push was one of issue 20's costs.
  const vms = await vmsOfWorker(directSql(db), workerId, PLACED_STATES, ASSIGNED_VM);
  // Every VM boots with the fleet's per-VM session key authorized (issue 5).
  const [access, pulls] = await Promise.all([vmPublicKeys(db, secrets, vms), imagePulls ? imagePulls(vms) : Promise.resolve(new Map<string, ImagePull>())]);
  return vms.map((vm) => ({
    vmId: vm.id,
    name: vm.name,
    attempt: vm.attempt,
    generation: vm.generation,
    desiredPower: vm.desiredPower === 'stopped' ? 'POWER_STATE_STOPPED' : 'POWER_STATE_RUNNING',
    disconnectPolicy: vm.disconnectPolicy === 'wait' ? 'wait' : 'reschedule',
    ...(pulls.has(vm.id) ? { imagePull: pulls.get(vm.id)! } : {}),
    spec: {
      image: vm.image,
      os: vm.os,
      cpus: vm.cpus,
      memoryMib: vm.memoryMib,
      diskGib: vm.diskGib,
      labels: parseLabels(vm.labels),
      username: vm.username,
      driver: vm.driver,
      // Issue 18: the mode ("nat", "host-only", "none") and the custom MAC ("" = the worker derives one).
      network: { ...parseNetwork(vm.network), mode: networkModeOf(vm.networkMode) },
      mac: vm.customMac,
      authorizedKeys: access.has(vm.id) ? [access.get(vm.id)!] : [],
    },
  }));
}
