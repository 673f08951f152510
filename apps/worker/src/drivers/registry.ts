import { spawnSync } from 'node:child_process';
import { chmod, stat } from 'node:fs/promises';
import path from 'node:path';
import { chooseAccel } from '@fleet/guest-image';
import type { Logger } from 'pino';
import { DriverError, type Driver } from './driver.ts';
import { QemuDriver, QEMU_DRIVER_NAME } from './qemu.ts';
import { DEFAULT_VM_UID_BASE, DEFAULT_VM_UID_COUNT, firstUntraversable, validateVmUserRange, type VmUserRange } from './qemu-users.ts';
import { SyntheticDriver, SYNTHETIC_DRIVER_NAME } from './synthetic.ts';
import { createVzDriver, VZ_DRIVER_NAME } from './vz/index.ts';
import { NatNetwork } from '../uplink/nat-network.ts';

/** Driver names `fleet-worker run --driver` accepts. */
/** What `fleet-worker run` uses without --driver (and what `doctor` checks by default). */
export const DEFAULT_DRIVER = 'synthetic';
export const AVAILABLE_DRIVERS = [SYNTHETIC_DRIVER_NAME, QEMU_DRIVER_NAME, VZ_DRIVER_NAME] as const;
export type DriverName = (typeof AVAILABLE_DRIVERS)[number];

export const DEFAULT_NAT_NAME = 'fleet0';
export const DEFAULT_NAT_SUBNET = '192.168.64.0/24';
export const DEFAULT_HOST_ONLY_NAME = 'fleet1';

export interface QemuRuntimeOptions {
  /** vz driver: the VM user (name or uid) every macOS VM and IPSW install runs as, in its GUI session (issue 17). */
  vzVmUser?: string;
  /** Bridge / nftables table name of the worker's NAT network (default fleet0). */
  natName?: string;
  /** NAT subnet (default 192.168.64.0/24; a clash with an existing route is refused). */
  natSubnet?: string;
  /**
   * Issue 18: the host-only network's subnet (e.g. 192.168.128.0/24, Anka's default); absent = no
   * host-only network on this worker (VMs in that mode are placed elsewhere).
   */
  hostOnlySubnet?: string;
  /** How VMs' frames reach the bridge (QemuDriverOptions.vmLink; default tap). */
  vmLink?: 'tap' | 'veth';
  /** How frames travel between QEMU and the VM host process (QemuDriverOptions.vmFraming; default vnet, stream with the veth uplink). */
  vmFraming?: 'dgram' | 'stream' | 'vnet';
  /** Bridge / nftables table name of the host-only network (default fleet1). */
  hostOnlyName?: string;
  /** Masquerade out of this interface (default: the default route's device). */
  uplinkInterface?: string;
  /** DHCP lease time in seconds (default 600). */
  leaseSeconds?: number;
  /** OpenSSH public keys every guest of the built-in image accepts. */
  authorizedKeys?: string[];
  /** Where operator disk images are looked up by name (default <data-dir>/images). */
  imagesDir?: string;
  accel?: 'tcg' | 'kvm' | 'auto';
  /** Prefixes VMs may reach as if they were public (lab networks in tests). */
  globalPrefixes?: string[];
  /**
   * Per-VM unprivileged users (issue 14): default on, uids DEFAULT_VM_UID_BASE.. (qemu-users.ts);
   * null = VM host processes and QEMU run as root (`--vm-uid-base 0`).
   */
  vmUsers?: VmUserRange | null;
}

export interface CreateDriverOptions {
  logger: Logger;
  /** Synthetic: delay multiplier (1 realistic, 0 instant). */
  syntheticSpeed?: number;
  /** Synthetic: persist instances here (re-attach after a restart). */
  syntheticStateFile?: string;
  /** Synthetic: seed of the fake address pool (the worker name). */
  poolSeed?: string;
  /** Synthetic: macOS guests allowed at once. */
  maxMacosGuests?: number;
  /** Synthetic: size of the fake VM address pool (default: all of 198.18.0.0/15's hosts). */
  syntheticNatAddresses?: number;
  /** Real runtimes keep their state under <dataDir>/<driver>/ (required for them). */
  dataDir?: string;
  /** The worker's lease file (fencing/lease.ts): VM host processes of "reschedule" VMs fence on it. */
  fenceLeaseFile?: string;
  qemu?: QemuRuntimeOptions;
}

/** Builds a runtime; real runtimes also bring up what they need on the host (the NAT network). */
export async function openDriver(name: string, options: CreateDriverOptions): Promise<Driver> {
  switch (name) {
    case SYNTHETIC_DRIVER_NAME:
      return new SyntheticDriver({
        logger: options.logger,
        ...(options.syntheticSpeed !== undefined ? { speed: options.syntheticSpeed } : {}),
        ...(options.syntheticStateFile !== undefined ? { stateFile: options.syntheticStateFile } : {}),
        ...(options.poolSeed !== undefined ? { poolSeed: options.poolSeed } : {}),
        ...(options.maxMacosGuests !== undefined ? { maxMacosGuests: options.maxMacosGuests } : {}),
        ...(options.syntheticNatAddresses !== undefined ? { natAddresses: options.syntheticNatAddresses } : {}),
      });
    case QEMU_DRIVER_NAME:
      return openQemuDriver(options);
    case VZ_DRIVER_NAME:
      return openVzDriver(options);
    default:
      throw new DriverError(`driver ${JSON.stringify(name)} is not available in this build (available: ${AVAILABLE_DRIVERS.join(', ')})`);
  }
}

async function openQemuDriver(options: CreateDriverOptions): Promise<Driver> {
  if (process.platform !== 'linux') throw new DriverError(`the qemu driver runs on Linux only (this is ${process.platform})`);
  if (!options.dataDir) throw new DriverError('the qemu driver needs a data dir');
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new DriverError('the qemu driver needs root: it creates a bridge, TAP devices and nftables rules for the NAT network (run fleet-worker as root)');
  }
  const q = options.qemu ?? {};
  const log = options.logger.child({ component: 'qemu' });
  const base = path.join(options.dataDir, 'qemu');
  const vmUsers = q.vmUsers === null ? undefined : (q.vmUsers ?? { base: DEFAULT_VM_UID_BASE, count: DEFAULT_VM_UID_COUNT });
  if (vmUsers) {
    try {
      validateVmUserRange(vmUsers);
    } catch (e) {
      throw new DriverError(`--vm-uid-base/--vm-uid-count: ${(e as Error).message}`);
    }
    if (!setprivAvailable()) throw new DriverError('VM users need setpriv (util-linux: apt-get install util-linux); or run VMs as root with --vm-uid-base 0 (not recommended)');
    // VM users reach their run dirs under the data dir by name: it must be traversable (0711),
    // never listable or readable (its key, credentials and token stay 0600 inside).
    await allowTraverse(options.dataDir, log);
    const blocked = await firstUntraversable(options.dataDir);
    if (blocked) {
      throw new DriverError(
        `VM users (uids ${vmUsers.base}..) cannot reach their run dirs under ${options.dataDir}: ${blocked} is not traversable by others. ` +
          `Fix: chmod o+x ${blocked} (its contents stay unlistable), or use a data dir such as /var/lib/fleet-worker, or --vm-uid-base 0 to run VMs as root (not recommended)`,
      );
    }
  } else {
    log.warn({}, 'VM host processes and QEMU run as root (--vm-uid-base 0): a guest that escapes QEMU owns this worker');
  }
  const accel = q.accel === 'auto' || q.accel === undefined ? await chooseAccel() : q.accel;
  log.info({ accel }, accel === 'kvm' ? 'KVM works here' : 'using TCG (software emulation)');
  const nat = await NatNetwork.open({
    name: q.natName ?? DEFAULT_NAT_NAME,
    subnet: q.natSubnet ?? DEFAULT_NAT_SUBNET,
    dataDir: path.join(base, 'nat'),
    outlivesWorker: true,
    log,
    ...(q.uplinkInterface !== undefined ? { uplinkInterface: q.uplinkInterface } : {}),
    ...(q.leaseSeconds !== undefined ? { leaseSeconds: q.leaseSeconds } : {}),
  });
  let hostOnly: NatNetwork | undefined;
  try {
    if (q.hostOnlySubnet !== undefined) {
      const name = q.hostOnlyName ?? DEFAULT_HOST_ONLY_NAME;
      if (name === (q.natName ?? DEFAULT_NAT_NAME)) throw new DriverError(`--host-only-name ${name} is the NAT network's name; choose another`);
      hostOnly = await NatNetwork.open({
        name,
        subnet: q.hostOnlySubnet,
        mode: 'host-only',
        dataDir: path.join(base, 'host-only'),
        outlivesWorker: true,
        log,
        ...(q.leaseSeconds !== undefined ? { leaseSeconds: q.leaseSeconds } : {}),
      });
    }
  } catch (e) {
    nat.close();
    throw e instanceof DriverError ? e : new DriverError(`host-only network: ${(e as Error).message}`);
  }
  try {
    return new QemuDriver({
      dataDir: base,
      nat,
      ...(hostOnly ? { hostOnly } : {}),
      ...(q.vmLink !== undefined ? { vmLink: q.vmLink } : {}),
      ...(q.vmFraming !== undefined ? { vmFraming: q.vmFraming } : {}),
      imagesDir: q.imagesDir ?? path.join(options.dataDir, 'images'),
      authorizedKeys: q.authorizedKeys ?? [],
      globalPrefixes: q.globalPrefixes ?? [],
      accel,
      log,
      ...(options.fenceLeaseFile ? { fence: { leaseFile: options.fenceLeaseFile } } : {}),
      ...(vmUsers ? { vmUsers } : {}),
      onClose: () => {
        nat.close();
        hostOnly?.close();
      },
    });
  } catch (e) {
    nat.close();
    hostOnly?.close();
    throw e;
  }
}

/** True when util-linux's setpriv runs here. */
export function setprivAvailable(): boolean {
  return spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Makes a 0700 data dir 0711 (traverse only) for VM users; a group/world-readable one is left to the startup audit. */
async function allowTraverse(dir: string, log: { info(o: object, m?: string): void }): Promise<void> {
  const st = await stat(dir);
  if ((st.mode & 0o777) === 0o700) {
    await chmod(dir, 0o711);
    log.info({ dir }, 'data dir is now 0711: VM users may traverse it to their run dirs (nothing in it is listable)');
  }
}

/** Apple Virtualization.framework (macOS only: elsewhere createVzDriver throws a clear DriverError). */
function openVzDriver(options: CreateDriverOptions): Driver {
  if (!options.dataDir) throw new DriverError('the vz driver needs a data dir');
  return createVzDriver({
    dataDir: options.dataDir,
    log: options.logger.child({ component: 'vz' }),
    // --images-dir is shared by the real runtimes (default <data-dir>/images).
    ...(options.qemu?.imagesDir !== undefined ? { imagesDir: options.qemu.imagesDir } : {}),
    ...(options.maxMacosGuests !== undefined ? { macosSlots: options.maxMacosGuests } : {}),
    ...(options.fenceLeaseFile ? { fenceLeaseFile: options.fenceLeaseFile } : {}),
    ...(options.qemu?.vzVmUser !== undefined ? { vmUser: resolveUser(options.qemu.vzVmUser) } : {}),
  });
}

/** A user name or uid → uid and primary gid (`id`), or a clear error. */
function resolveUser(user: string): { uid: number; gid: number } {
  const id = (flag: string): number => {
    const r = spawnSync('/usr/bin/id', [flag, user], { encoding: 'utf8' });
    const v = r.stdout?.trim() ?? '';
    if (r.status !== 0 || !/^\d+$/.test(v)) throw new DriverError(`--vm-user ${JSON.stringify(user)}: no such user (${(r.stderr ?? '').trim() || `id exit ${r.status}`})`);
    return Number(v);
  };
  const uid = id('-u');
  if (uid === 0) throw new DriverError('--vm-user must not be root: VMs run as an unprivileged user');
  return { uid, gid: id('-g') };
}
