// Spawns qemu-system-x86_64 with the VM's end of the socketpair as fd 3 (-netdev dgram, or
// -netdev stream for a stream socketpair: cfg.nicFraming), or its TAP (-netdev tap, vnet_hdr=on).
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import path from 'node:path';
import { closeFd } from '@fleet/native-vz';
import { qemuArgs, type Accel } from '@fleet/guest-image';
import { QMP_SOCKET, SERIAL_LOG, VNC_SOCKET, type VmHostConfig } from '../host-process/qemu-host-config.ts';

export interface QemuProcess {
  child: ChildProcess;
  args: string[];
  spawnedAt: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts QEMU; `vmEnd` is handed over as fd 3 and closed in this process (undefined: no NIC at all). */
export function spawnQemu(cfg: VmHostConfig, vmEnd: number | undefined, accel: Accel): QemuProcess {
  const args = qemuArgs({
    ...(cfg.kernel !== undefined ? { kernel: cfg.kernel, initrd: cfg.initrd!, cmdline: cfg.cmdline! } : {}),
    ...(cfg.disk !== undefined ? { disk: { file: cfg.disk, format: 'qcow2' as const } } : {}),
    cpus: cfg.cpus,
    memoryMib: cfg.memoryMib,
    ...(vmEnd !== undefined ? { netFd: 3, mac: cfg.mac, ...(cfg.nicFraming === 'stream' ? { netFraming: 'stream' as const } : cfg.nicFraming === 'vnet' ? { netFraming: 'vnet-tap' as const } : {}) } : {}),
    serialLog: path.join(cfg.runDir, SERIAL_LOG),
    qmpSocket: path.join(cfg.runDir, QMP_SOCKET),
    vncSocket: path.join(cfg.runDir, VNC_SOCKET),
    accel,
    name: cfg.name.replace(/[^A-Za-z0-9_.-]/g, '_'),
    ...(cfg.sandbox ? { sandbox: true } : {}),
  });
  const errLog = openSync(path.join(cfg.runDir, 'qemu.log'), 'a');
  const child = spawn(cfg.qemuBinary ?? 'qemu-system-x86_64', args, { stdio: vmEnd !== undefined ? ['ignore', errLog, errLog, vmEnd] : ['ignore', errLog, errLog] });
  closeSync(errLog);
  if (vmEnd !== undefined) closeFd(vmEnd);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  return { child, args, spawnedAt: Date.now(), exited };
}
