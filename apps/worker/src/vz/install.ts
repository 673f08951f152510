// Creating a macOS VM bundle from an IPSW (Tart's `create --from-ipsw` sequence):
//   VZMacOSRestoreImage.load → mostFeaturefulSupportedConfiguration (none: the host cannot run it)
//   → disk.img (sparse, truncated to size) → nvram.bin (VZMacAuxiliaryStorage for the hardware
//   model) → new machine identifier → config.json (Tart format) → a VM on it → VZMacOSInstaller
//   with progress. Runs where the addon is loaded with the virtualization entitlement (the signed
//   node: see vm-host/darwin/install-main.ts). Progress is reported in whole percents.
import { mkdir, open, rm } from 'node:fs/promises';
import path from 'node:path';
import { VzVirtualMachine, normalizeMachineConfig, type VzAddon, type VzRestoreImageInfo } from '@fleet/native-vz/vz';
import { mapVzError } from './errors.ts';
import { bundlePaths, randomLocalMac, writeTartConfig, type TartConfig } from './tart-bundle.ts';

export interface InstallRequest {
  ipsw: string;
  bundleDir: string;
  /** Requested resources; raised to the image's minimums (Tart also forces at least 4 CPUs). */
  cpus: number;
  memoryMib: number;
  diskGib: number;
}

export type InstallEvent =
  | { phase: 'load'; message: string }
  | { phase: 'install'; percent: number; message: string }
  | { phase: 'done'; message: string; config: TartConfig };

export function loadRestoreImage(addon: Pick<VzAddon, 'loadRestoreImage'>, ipsw: string): Promise<VzRestoreImageInfo> {
  return new Promise((resolve, reject) => {
    addon.loadRestoreImage(ipsw, (err, info) => {
      if (err || !info) reject(new Error(`cannot load ${ipsw}: ${err?.message ?? 'no information'}`));
      else resolve(info);
    });
  });
}

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

export async function installFromIpsw(addon: VzAddon, req: InstallRequest, onEvent: (e: InstallEvent) => void, signal?: AbortSignal): Promise<TartConfig> {
  if (!path.isAbsolute(req.ipsw) || !path.isAbsolute(req.bundleDir)) throw new Error('installFromIpsw: ipsw and bundleDir must be absolute paths');
  if (!Number.isInteger(req.diskGib) || req.diskGib < 20) throw new Error(`installFromIpsw: a macOS disk needs at least 20 GiB, not ${req.diskGib}`);
  onEvent({ phase: 'load', message: `loading restore image ${path.basename(req.ipsw)}` });
  const image = await loadRestoreImage(addon, req.ipsw);
  if (!image.supported) throw new Error(`macOS ${image.osVersion} (${image.buildVersion}) cannot run on this host (no supported configuration in the restore image)`);
  const p = bundlePaths(req.bundleDir);
  await mkdir(req.bundleDir, { recursive: true, mode: 0o700 });
  try {
    const disk = await open(p.disk, 'w');
    await disk.truncate(req.diskGib * GIB);
    await disk.close();
    addon.createAuxiliaryStorage(p.nvram, image.supported.hardwareModel);
    const cpuMin = Math.max(4, image.supported.minCpus);
    const memMin = image.supported.minMemoryBytes;
    const config: TartConfig = {
      version: 1,
      os: 'darwin',
      arch: 'arm64',
      cpuCountMin: cpuMin,
      cpuCount: Math.max(cpuMin, req.cpus),
      memorySizeMin: memMin,
      memorySize: Math.max(memMin, req.memoryMib * MIB),
      macAddress: randomLocalMac(),
      display: { width: 1024, height: 768 },
      diskFormat: 'raw',
      hardwareModel: Buffer.from(image.supported.hardwareModel).toString('base64'),
      ecid: Buffer.from(addon.newMachineIdentifier()).toString('base64'),
    };
    await writeTartConfig(req.bundleDir, config);
    const { config: vmConfig } = normalizeMachineConfig(
      {
        guest: 'macos',
        cpus: config.cpuCount,
        memoryBytes: config.memorySize,
        disks: [{ path: p.disk, readOnly: false }],
        display: { width: 1024, height: 768 },
        macos: { hardwareModel: image.supported.hardwareModel, machineIdentifier: Buffer.from(config.ecid!, 'base64'), auxiliaryStoragePath: p.nvram },
      },
      addon.limits(),
    );
    const vm = new VzVirtualMachine(addon, vmConfig);
    const onAbort = (): void => vm.cancelInstall();
    signal?.addEventListener('abort', onAbort, { once: true });
    let last = -1;
    try {
      await vm.install(req.ipsw, (fraction) => {
        const percent = Math.floor(fraction * 100);
        if (percent === last) return;
        last = percent;
        onEvent({ phase: 'install', percent, message: `installing macOS ${image.osVersion} (${image.buildVersion}): ${percent}%` });
      });
    } catch (e) {
      throw new Error(mapVzError(e, 'install macOS').message);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      vm.close();
    }
    onEvent({ phase: 'done', message: `installed macOS ${image.osVersion} (${image.buildVersion})`, config });
    return config;
  } catch (e) {
    await rm(req.bundleDir, { recursive: true, force: true });
    throw e;
  }
}
