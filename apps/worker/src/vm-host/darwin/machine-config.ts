// VzHostConfig + the instance's Tart bundle → the addon's VzMachineConfig.
import path from 'node:path';
import type { VzMachineConfig } from '@fleet/native-vz/vz';
import { bundlePaths, macIdentity, type TartConfig } from '../../vz/tart-bundle.ts';
import { SERIAL_LOG } from '../../host-process/qemu-host-config.ts';
import type { VzHostConfig } from '../../host-process/vz-host-config.ts';

export function machineConfigFor(cfg: VzHostConfig, bundle: TartConfig, vmFd: number): VzMachineConfig {
  const p = bundlePaths(cfg.bundleDir);
  const wantOs = cfg.guest === 'macos' ? 'darwin' : 'linux';
  if (bundle.os !== wantOs) throw new Error(`bundle ${cfg.bundleDir} holds a ${bundle.os} guest, not ${cfg.guest}`);
  const base: VzMachineConfig = {
    guest: cfg.guest,
    cpus: cfg.cpus,
    memoryBytes: cfg.memoryBytes,
    // Tart's finding (PR #675): cached I/O is much faster for Linux guests.
    disks: [{ path: p.disk, readOnly: false, ...(cfg.guest === 'linux' ? { caching: 'cached' as const } : {}) }],
    network: { fd: vmFd, mac: cfg.mac },
    serialLogPath: path.join(cfg.runDir, SERIAL_LOG),
    vsock: true,
    entropy: true,
    display: cfg.display ?? { width: bundle.display.width, height: bundle.display.height },
  };
  if (cfg.guest === 'macos') {
    const id = macIdentity(bundle);
    return { ...base, macos: { hardwareModel: id.hardwareModel, machineIdentifier: id.machineIdentifier, auxiliaryStoragePath: p.nvram } };
  }
  const linux = cfg.linuxKernel
    ? { kind: 'kernel' as const, kernelPath: cfg.linuxKernel.kernelPath, cmdline: cfg.linuxKernel.cmdline, ...(cfg.linuxKernel.initrdPath ? { initrdPath: cfg.linuxKernel.initrdPath } : {}) }
    : { kind: 'efi' as const, variableStorePath: p.nvram, create: false };
  return { ...base, linux };
}
