// A real QEMU worker for browser tests: `fleet-worker run --driver qemu` inside a
// network namespace this test creates (its NAT bridge, dnsmasq and nftables live
// there), joined to the root namespace by one veth pair so the worker can dial the
// controller's gRPC listener on the root side. Nothing leaves the namespace.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, type RunningProcess } from './fleet-processes.ts';

const WORKER_MAIN = path.join(REPO_ROOT, 'apps/worker/bin/fleet-worker.js');

function has(bin: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/** Why real VMs cannot run here ('' when they can). */
export function qemuMissing(): string {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'not running as root';
  for (const b of ['ip', 'qemu-system-x86_64', 'dnsmasq', 'nft']) if (!has(b)) return `${b} not installed`;
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun missing';
  return '';
}

const ip = (...args: string[]): void => void execFileSync('ip', args, { stdio: 'pipe' });

export interface QemuLab {
  /** The root-side address the controller's gRPC listener binds (workers dial it). */
  controllerAddress: string;
  netns: string;
  /** Runs `node <args>` inside the namespace. */
  run(args: string[], env?: Record<string, string>): RunningProcess;
  enrollArgs(grpcAddress: string, token: string, name: string, dataDir: string): string[];
  workerArgs(dataDir: string, extra?: string[]): string[];
  destroy(tmpMarker: string): void;
}

export function createQemuLab(): QemuLab {
  const id = process.pid % 250;
  const netns = `fdash${id}`;
  const rootVeth = `fdashr${id}`;
  const controllerAddress = `10.96.${id}.1`;
  ip('netns', 'add', netns);
  ip('-n', netns, 'link', 'set', 'lo', 'up');
  ip('link', 'add', rootVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
  ip('addr', 'add', `${controllerAddress}/24`, 'dev', rootVeth);
  ip('link', 'set', rootVeth, 'up');
  ip('-n', netns, 'addr', 'add', `10.96.${id}.2/24`, 'dev', 'eth0');
  ip('-n', netns, 'link', 'set', 'eth0', 'up');
  ip('-n', netns, 'route', 'add', 'default', 'via', controllerAddress);

  return {
    controllerAddress,
    netns,
    run(args, env = {}) {
      const child = spawn('ip', ['netns', 'exec', netns, process.execPath, ...args], {
        cwd: REPO_ROOT,
        env: { ...process.env, FLEET_LOG_LEVEL: process.env.FLEET_LOG_LEVEL ?? 'warn', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      return {
        child,
        output: () => out,
        exited,
        async waitFor(pattern, timeoutMs = 60_000) {
          const deadline = Date.now() + timeoutMs;
          for (;;) {
            const m = out.match(pattern);
            if (m) return m;
            if (child.exitCode !== null) throw new Error(`process exited (${child.exitCode}) before printing ${pattern}:\n${out}`);
            if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}:\n${out}`);
            await new Promise((r) => setTimeout(r, 50));
          }
        },
        async kill(signal = 'SIGTERM') {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          return exited;
        },
      };
    },
    enrollArgs: (grpcAddress, token, name, dataDir) => [WORKER_MAIN, 'enroll', '--controller', grpcAddress, '--token', token, '--name', name, '--data-dir', dataDir],
    workerArgs: (dataDir, extra = []) => [WORKER_MAIN, 'run', '--data-dir', dataDir, '--driver', 'qemu', '--accel', 'tcg', '--uplink', 'eth0', ...extra],
    destroy(tmpMarker) {
      // VM host processes and QEMU run detached, with the worker's data dir in their command lines.
      for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        try {
          if (Number(pid) !== process.pid && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(tmpMarker)) process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      try {
        ip('netns', 'del', netns);
      } catch {
        /* never created */
      }
      try {
        ip('link', 'del', rootVeth);
      } catch {
        /* went with the namespace */
      }
    },
  };
}
