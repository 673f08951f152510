// Reaching real VMs of a lab fleet (test/support/lab.ts) from the tests: a shell over SSH from
// inside a worker's namespace, waiting for a VM to run with an address, and its VM host process's
// status (filter counters) through the control socket.
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { controlRequest } from '../../apps/worker/src/host-process/control-client.ts';
import { waitUntil, type ApiClient } from './fleet-processes.ts';

const run = promisify(execFile);

export interface VmView {
  id: string;
  name: string;
  state: string;
  ip: string | null;
  mac: string | null;
  attempt: number;
  worker: string | null;
  reason?: string | null;
}

export interface HostStatusView {
  pid: number;
  qemuPid: number;
  tap: string;
  ip?: string;
  counters: { filter?: { fromVm: Record<string, number>; fromHost: Record<string, number> } };
}

/**
 * @param netnsOf the namespace each worker runs in
 * @param dataDirOf each worker's data dir
 * @param key the SSH private key the guests accept
 */
export function vmLab(o: { api: ApiClient; netnsOf: (worker: string) => string; dataDirOf: (worker: string) => string; key: string }) {
  const sshArgs = (vmIp: string, cmd: string): string[] => [
    '-i', o.key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
    '-o', 'ConnectTimeout=10', '-o', 'BatchMode=yes', `root@${vmIp}`, cmd,
  ];

  /** Runs a shell command in a VM over SSH from inside its worker's namespace. */
  async function vmSh(worker: string, vmIp: string, cmd: string, timeoutMs = 30_000): Promise<{ code: number; out: string }> {
    try {
      const { stdout, stderr } = await run('ip', ['netns', 'exec', o.netnsOf(worker), 'ssh', ...sshArgs(vmIp, cmd)], { timeout: timeoutMs });
      return { code: 0, out: stdout + stderr };
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof err.code === 'number' ? err.code : 255, out: (err.stdout ?? '') + (err.stderr ?? '') };
    }
  }

  /** Like vmSh, with `input` on the command's stdin (Dropbear refuses very long command lines). */
  function vmShInput(worker: string, vmIp: string, cmd: string, input: string, timeoutMs = 60_000): Promise<{ code: number; out: string }> {
    return new Promise((resolve) => {
      const child = spawn('ip', ['netns', 'exec', o.netnsOf(worker), 'ssh', ...sshArgs(vmIp, cmd)], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? 255, out });
      });
      child.stdin.end(input);
    });
  }

  async function sshReady(worker: string, vmIp: string): Promise<void> {
    await waitUntil(async () => (await vmSh(worker, vmIp, 'echo ready', 15_000)).out.includes('ready'), 120_000, `ssh to ${vmIp}`, 1000);
  }

  /** Waits until the VM runs (and, unless `noIp`, has an address). */
  async function runningVm(name: string, opts: { noIp?: boolean } = {}): Promise<VmView> {
    let vm: VmView | null = null;
    await waitUntil(async () => {
      vm = (await o.api.vm(name)) as VmView | null;
      return vm?.state === 'running' && (opts.noIp === true || !!vm.ip);
    }, 240_000, `vm ${name} running${opts.noIp ? '' : ' with an IP'}`, 250);
    return vm!;
  }

  /** The VM host process's status (filter counters included), through its control socket. */
  async function hostStatus(worker: string, vm: VmView): Promise<HostStatusView> {
    const dir = path.join(o.dataDirOf(worker), 'qemu', 'instances', `${encodeURIComponent(vm.id).replace(/\./g, '%2E')}.${vm.attempt}`);
    // With VM users (the worker's default, issue 14) the host process's files are in <dir>/run/.
    const sock = existsSync(path.join(dir, 'run')) ? path.join(dir, 'run', 'control.sock') : path.join(dir, 'control.sock');
    const r = await controlRequest(sock, 'status');
    return r.status as unknown as HostStatusView;
  }

  return { vmSh, vmShInput, sshReady, runningVm, hostStatus };
}

/** A DHCPOFFER (BOOTREPLY, option 53 = 2) for `chaddr` with a router of the attacker's choosing. */
export function dhcpOffer(chaddr: string, yiaddr: string, router: string): Buffer {
  const b = Buffer.alloc(240);
  b[0] = 2; // BOOTREPLY
  b[1] = 1;
  b[2] = 6;
  b.writeUInt32BE(0x1badd00d, 4);
  const ipBytes = (a: string) => a.split('.').map(Number);
  b.set(ipBytes(yiaddr), 16);
  b.set(chaddr.split(':').map((h) => parseInt(h, 16)), 28);
  b.writeUInt32BE(0x63825363, 236);
  const opts = [53, 1, 2, 54, 4, ...ipBytes(router), 3, 4, ...ipBytes(router), 1, 4, 255, 255, 255, 0, 51, 4, 0, 0, 0x0e, 0x10, 255];
  return Buffer.concat([b, Buffer.from(opts)]);
}
