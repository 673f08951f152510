// The VM agent's job + the instance's Tart bundle → the addon's VzMachineConfig.
import type { VzMachineConfig } from '@fleet/native-vz/vz';
import { bundlePaths, macIdentity, type TartConfig } from '../../vz/tart-bundle.ts';
import type { VmJob } from '../../host-process/agent-protocol.ts';

/** `vmFd` undefined: no network device at all (network mode "none"). */
export function machineConfigFor(job: VmJob, bundle: TartConfig, vmFd: number | undefined): VzMachineConfig {
  const p = bundlePaths(job.bundleDir);
  const wantOs = job.guest === 'macos' ? 'darwin' : 'linux';
  if (bundle.os !== wantOs) throw new Error(`bundle ${job.bundleDir} holds a ${bundle.os} guest, not ${job.guest}`);
  const base: VzMachineConfig = {
    guest: job.guest,
    cpus: job.cpus,
    memoryBytes: job.memoryBytes,
    // Tart's finding (PR #675): cached I/O is much faster for Linux guests.
    disks: [{ path: p.disk, readOnly: false, ...(job.guest === 'linux' ? { caching: 'cached' as const } : {}) }],
    ...(vmFd !== undefined ? { network: { fd: vmFd, mac: job.mac } } : {}),
    serialLogPath: job.serialLogPath,
    vsock: true,
    entropy: true,
    display: job.display ?? { width: bundle.display.width, height: bundle.display.height },
  };
  if (job.guest === 'macos') {
    const ident = macIdentity(bundle);
    return { ...base, macos: { hardwareModel: ident.hardwareModel, machineIdentifier: ident.machineIdentifier, auxiliaryStoragePath: p.nvram } };
  }
  const linux = job.linuxKernel
    ? { kind: 'kernel' as const, kernelPath: job.linuxKernel.kernelPath, cmdline: job.linuxKernel.cmdline, ...(job.linuxKernel.initrdPath ? { initrdPath: job.linuxKernel.initrdPath } : {}) }
    : { kind: 'efi' as const, variableStorePath: p.nvram, create: false };
  return { ...base, linux };
}
