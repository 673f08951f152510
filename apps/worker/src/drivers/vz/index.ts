// The vz driver as the worker constructs it: macOS only. Prepares (lazily, at worker start) the
// ad-hoc-signed node copy VM host processes run on, and runs VM host processes as the owner of
// the data dir when the worker runs as root (the launchd daemon), so that only vmnet setup runs
// as root.
import { statSync } from 'node:fs';
import path from 'node:path';
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
}

export function createVzDriver(o: CreateVzDriverOptions): VzDriver {
  const platform = o.platform ?? process.platform;
  if (platform !== 'darwin') {
    throw new DriverError(`the vz driver runs only on macOS (Apple Virtualization.framework); this host is ${platform} — use --driver qemu here`);
  }
  const dataDir = path.join(o.dataDir, 'vz');
  let dropPrivileges: { uid: number; gid: number } | undefined;
  if (process.getuid?.() === 0) {
    try {
      const st = statSync(o.dataDir);
      if (st.uid !== 0) dropPrivileges = { uid: st.uid, gid: st.gid };
    } catch {
      /* created later by the worker; VM hosts stay root then */
    }
  }
  return new VzDriver({
    dataDir,
    imagesDir: o.imagesDir ?? path.join(o.dataDir, 'images'),
    prepareSignedNode: async () => (await prepareSignedNode(o.dataDir)).node,
    ...(o.macosSlots !== undefined ? { macosSlots: o.macosSlots } : {}),
    // VZMacMachineIdentifier needs no entitlement: the worker's own process can make one.
    ...(o.freshMachineIdentifier ? { freshMachineIdentifier: true, newMachineIdentifier: newMachineIdentifierFromAddon() } : {}),
    ...(dropPrivileges ? { dropPrivileges } : {}),
    ...(o.log ? { log: o.log } : {}),
    ...(o.fenceLeaseFile ? { fence: { leaseFile: o.fenceLeaseFile } } : {}),
  });
}

function newMachineIdentifierFromAddon(): () => Uint8Array {
  const addon = loadVzAddon();
  return () => addon.newMachineIdentifier();
}
