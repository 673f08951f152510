// The vz driver as the worker constructs it: macOS only. Prepares (lazily, at worker start) the
// ad-hoc-signed node copy VM agents run on (root-owned, hash pinned); VMs run as `--vm-user` in
// that user's GUI session, only the network half (vmnet, filter, pump) as root (issue 17).
import path from 'node:path';
import { closeFd, peerCredentials, recvFds, sendFds, unixAccept, unixConnect, unixListen } from '@fleet/native-vz';
import { loadVzAddon } from '@fleet/native-vz/vz';
import { DriverError } from '../driver.ts';
import { prepareSignedNode } from '../../macos/codesign.ts';
import { VzDriver, type VzDriverOptions } from './vz-driver.ts';

export { VzDriver, VZ_DRIVER_NAME, DEFAULT_VZ_NETWORK } from './vz-driver.ts';
export type { VzDriverOptions, VzHostLauncher, VzInstaller, VzNetworkOptions } from './vz-driver.ts';

export interface CreateVzDriverOptions {
  /** Worker data dir; instances go to <dataDir>/vz, images to <dataDir>/images unless given. */
  dataDir: string;
  imagesDir?: string;
  macosSlots?: number;
  freshMachineIdentifier?: boolean;
  log?: VzDriverOptions['log'];
  /** The platform (tests); default process.platform. */
  platform?: NodeJS.Platform;
  /** The worker's lease file: host processes of "reschedule" VMs fence on it. */
  fenceLeaseFile?: string;
  /** The VM user (`--vm-user`): VMs and IPSW installs run as this user in its GUI session. */
  vmUser?: { uid: number; gid: number };
}

export function createVzDriver(o: CreateVzDriverOptions): VzDriver {
  const platform = o.platform ?? process.platform;
  if (platform !== 'darwin') {
    throw new DriverError(`the vz driver runs only on macOS (Apple Virtualization.framework); this host is ${platform} — use --driver qemu here`);
  }
  const dataDir = path.join(o.dataDir, 'vz');
  const vmUser = o.vmUser;
  if (!vmUser) throw new DriverError('the vz driver needs the VM user (fleet-worker run --vm-user NAME): VMs run as that user in its GUI login session, never as root (docs/macos.md)');
  return new VzDriver({
    dataDir,
    imagesDir: o.imagesDir ?? path.join(o.dataDir, 'images'),
    prepareSignedNode: async () => {
      const n = await prepareSignedNode(o.dataDir);
      return { path: n.node, sha256: n.sha256 };
    },
    vmUser,
    fdPassing: { unixListen, unixAccept, unixConnect, peerCredentials, sendFds, recvFds, closeFd },
    ...(o.macosSlots !== undefined ? { macosSlots: o.macosSlots } : {}),
    // VZMacMachineIdentifier needs no entitlement: the worker's own process can make one.
    ...(o.freshMachineIdentifier ? { freshMachineIdentifier: true, newMachineIdentifier: newMachineIdentifierFromAddon() } : {}),
    ...(o.log ? { log: o.log } : {}),
    ...(o.fenceLeaseFile ? { fence: { leaseFile: o.fenceLeaseFile } } : {}),
  });
}

function newMachineIdentifierFromAddon(): () => Uint8Array {
  const addon = loadVzAddon();
  return () => addon.newMachineIdentifier();
}
