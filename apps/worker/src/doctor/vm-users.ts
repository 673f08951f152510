// Doctor checks for issue 14 (unprivileged VM processes): the VM uid range and setpriv, whether
// this QEMU has its seccomp sandbox, and how the running VMs' QEMU processes really run — read
// from /proc/<pid>/status (Uid, Seccomp, NoNewPrivs, CapEff), never from what the worker meant.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { QEMU_SANDBOX_ARGS } from '@fleet/guest-image';
import { DEFAULT_VM_UID_BASE, DEFAULT_VM_UID_COUNT, firstUntraversable, VM_RUN_SUBDIR } from '../drivers/qemu-users.ts';
import { findBinary } from '../uplink/exec.ts';
import { fail, ok, skip, warn, type Finding } from './check.ts';

/** The VM uid range (the worker's defaults; `--vm-uid-base` changes them), setpriv, and whether VM users can reach the data dir. */
export async function checkVmUsers(dataDir: string, find: (name: string) => string = findBinary): Promise<Finding> {
  let setpriv: string;
  try {
    setpriv = find('setpriv');
  } catch {
    return fail('`setpriv` is not installed: VM host processes and QEMU cannot be started as unprivileged VM users', 'apt-get install util-linux   (or: scripts/install-system-deps.sh)');
  }
  const range = `uids ${DEFAULT_VM_UID_BASE}..${DEFAULT_VM_UID_BASE + DEFAULT_VM_UID_COUNT - 1} (default; --vm-uid-base/--vm-uid-count), one per VM, no capabilities, no_new_privs`;
  // The data dir itself is made 0711 by the worker at start; the directories above it are the operator's.
  const blocked = await firstUntraversable(path.dirname(path.resolve(dataDir)));
  if (blocked) {
    return warn(`${range}; but ${blocked} is not traversable by others, so VM users cannot reach their run dirs under ${dataDir}`, `chmod o+x ${blocked} (contents stay unlistable), or use --data-dir /var/lib/fleet-worker`);
  }
  return ok(`${range}; ${setpriv}`);
}

/** Starts QEMU with the sandbox Fleet uses: a QEMU without seccomp refuses the option at once. */
export function checkQemuSandbox(qemu = 'qemu-system-x86_64', waitMs = 1500): Promise<Finding> {
  return new Promise((resolve) => {
    let err = '';
    const child = spawn(qemu, [...QEMU_SANDBOX_ARGS, '-machine', 'none', '-nodefaults', '-display', 'none', '-monitor', 'none', '-S'], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve(ok(`QEMU accepts ${QEMU_SANDBOX_ARGS.join(' ')} (seccomp)`));
    }, waitMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      resolve(skip(`cannot run ${qemu}: ${e.message}`));
    });
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(fail(`QEMU refuses its seccomp sandbox: ${err.trim().split('\n')[0] ?? 'exited'}`, 'install a QEMU built with libseccomp (Debian: qemu-system-x86)'));
    });
  });
}

export interface ProcGuard {
  uid: number;
  seccomp: number;
  noNewPrivs: boolean;
  capEff: bigint;
  capBnd: bigint;
}

/** The parts of /proc/<pid>/status that say how confined a process is. */
export function parseProcStatus(text: string): ProcGuard | undefined {
  const field = (k: string): string | undefined => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(text)?.[1]?.trim();
  const uid = field('Uid')?.split(/\s+/)[1]; // effective uid
  const seccomp = field('Seccomp');
  const nnp = field('NoNewPrivs');
  const capEff = field('CapEff');
  const capBnd = field('CapBnd');
  if (uid === undefined || seccomp === undefined || nnp === undefined || capEff === undefined || capBnd === undefined) return undefined;
  return { uid: Number(uid), seccomp: Number(seccomp), noNewPrivs: nnp === '1', capEff: BigInt(`0x${capEff}`), capBnd: BigInt(`0x${capBnd}`) };
}

/** Every running VM's QEMU, as /proc shows it: uid, Seccomp, NoNewPrivs, CapEff. */
export async function checkRunningVms(qemuDataDir: string, proc = '/proc'): Promise<Finding> {
  const instances = path.join(qemuDataDir, 'instances');
  const names = await readdir(instances).catch(() => [] as string[]);
  const lines: string[] = [];
  const bad: string[] = [];
  for (const n of names) {
    let qemuPid: number | undefined;
    for (const dir of [path.join(instances, n, VM_RUN_SUBDIR), path.join(instances, n)]) {
      try {
        const last = JSON.parse(readFileSync(path.join(dir, 'status.jsonl'), 'utf8').trim().split('\n').at(-1)!) as { state?: string; qemuPid?: number };
        if (last.state === 'running' && typeof last.qemuPid === 'number') qemuPid = last.qemuPid;
        break;
      } catch {
        /* no status here */
      }
    }
    if (qemuPid === undefined) continue;
    let g: ProcGuard | undefined;
    try {
      if (!readFileSync(path.join(proc, String(qemuPid), 'cmdline'), 'utf8').includes(path.join(instances, n))) continue;
      g = parseProcStatus(readFileSync(path.join(proc, String(qemuPid), 'status'), 'utf8'));
    } catch {
      continue; // exited meanwhile
    }
    if (!g) continue;
    const line = `${n}: QEMU pid ${qemuPid} uid ${g.uid} Seccomp ${g.seccomp} NoNewPrivs ${g.noNewPrivs ? 1 : 0} CapEff ${g.capEff.toString(16)} CapBnd ${g.capBnd.toString(16)}`;
    lines.push(line);
    if (g.uid === 0 || g.seccomp !== 2 || !g.noNewPrivs || g.capEff !== 0n) bad.push(n);
  }
  if (lines.length === 0) return skip('no running VMs');
  if (bad.length > 0) {
    return warn(`${bad.length} of ${lines.length} VMs run without the full confinement (root, no seccomp, or capabilities): ${lines.join('; ')}`, 'restart those VMs under a worker with VM users on (drop --vm-uid-base 0): fleet stop/start');
  }
  return ok(lines.join('; '));
}
