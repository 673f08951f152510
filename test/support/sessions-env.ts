// The world of the session e2e tests and benchmark: a network namespace holding the
// worker, its NAT network and its QEMU VMs (the VMs' subnet exists only there), joined
// to the host by a veth pair that carries nothing but the worker's gRPC connection to the
// controller. The controller and the CLI run on the host, like an operator's: the only
// way to a VM is through the controller and the worker's connection.
//
//   host: controller (API 127.0.0.1, gRPC 10.214.N.1)  fleet CLI / test client
//     │ veth fsrN ⇄ fsnN
//   netns fleet-ses-N: worker ─ NAT bridge fsbN 192.168.(100+N%50).0/24 ─ VMs
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT, startControllerProcess, tempDir, waitUntil, type ControllerProcess } from './fleet-processes.ts';
import { orphanVmNamespaces } from '../../apps/worker/src/uplink/nat-network.ts';

const WORKER_BIN = path.join(REPO_ROOT, 'apps/worker/bin/fleet-worker.js');
const SESSIONS_WORKER = path.join(REPO_ROOT, 'test/support/sessions-worker.mjs');
export const FLEET_CLI = path.join(REPO_ROOT, 'apps/cli/bin/fleet.js');

export function has(bin: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/** Why the session e2e cannot run here ('' = it can). */
export function sessionsPrerequisites(): string {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'not running as root';
  for (const b of ['ip', 'qemu-system-x86_64', 'dnsmasq', 'nft', 'ssh', 'ssh-keygen']) if (!has(b)) return `${b} not installed`;
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun missing';
  return '';
}

export interface Spawned {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
}

export function spawnLogged(cmd: string, args: string[], env: Record<string, string> = {}): Spawned {
  const child = spawn(cmd, args, { cwd: REPO_ROOT, env: { ...process.env, FLEET_LOG_LEVEL: process.env.FLEET_LOG_LEVEL ?? 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  return {
    child,
    output: () => out,
    exited,
    async waitFor(re, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = out.match(re);
        if (m) return m;
        if (child.exitCode !== null) throw new Error(`process exited (${child.exitCode}) before printing ${re}:\n${out}`);
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}:\n${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

export interface SessionsEnv {
  id: number;
  ns: string;
  /** The root namespace's end of the veth: reachable from the controller and from the worker's namespace. */
  hostIp: string;
  tmp: string;
  controller: ControllerProcess;
  worker: Spawned;
  workerName: string;
  /** SIGKILLs the worker process (its VMs keep running in their detached VM host processes). */
  killWorker(): void;
  /** Starts the worker again (after a kill). */
  restartWorker(): Promise<void>;
  /** Stops the controller (SIGTERM) and starts it again on the same data dir and ports. */
  restartController(): Promise<void>;
  /** Creates a qemu VM and waits until it runs with an IP. */
  createVm(name: string): Promise<{ name: string; ip: string }>;
  /** Runs a command inside the namespace (e.g. direct ssh for the benchmark). */
  inNs(args: string[]): string[];
  destroy(): Promise<void>;
}

export async function startSessionsEnv(opts: { id?: number } = {}): Promise<SessionsEnv> {
  const id = opts.id ?? process.pid % 250;
  const ns = `fleet-ses-${id}`;
  const vethHost = `fsr${id}`;
  const vethNs = `fsn${id}`;
  const hostIp = `10.214.${id}.1`;
  const nsIp = `10.214.${id}.2`;
  const third = 100 + (id % 50);
  const subnet = `192.168.${third}.0/24`;
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'fses-'));
  // The worker's data dir is in here: its VM users (issue 14) must traverse it (nothing is listable).
  await chmod(tmp, 0o711);
  const run = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: 'pipe' });
  try {
    run(['ip', 'netns', 'del', ns]);
  } catch {
    /* not there */
  }
  try {
    run(['ip', 'link', 'del', vethHost]);
  } catch {
    /* not there */
  }
  run(['ip', 'netns', 'add', ns]);
  run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  run(['ip', 'link', 'add', vethHost, 'type', 'veth', 'peer', 'name', vethNs, 'netns', ns]);
  run(['ip', 'addr', 'add', `${hostIp}/30`, 'dev', vethHost]);
  run(['ip', 'link', 'set', vethHost, 'up']);
  run(['ip', '-n', ns, 'addr', 'add', `${nsIp}/30`, 'dev', vethNs]);
  run(['ip', '-n', ns, 'link', 'set', vethNs, 'up']);

  // A worker crash must not fail its VMs while it comes back (they keep running in their
  // host processes and are re-adopted): a realistic offline timeout, not the suite's 3 s.
  let controller = await startControllerProcess({ dataDir: await tempDir('ses-ctl'), offlineTimeout: '60s', extraArgs: ['--grpc-listen', `${hostIp}:0`] });
  const workerName = `ses-w${id}`;
  const workerData = path.join(tmp, 'w');
  const token = (await controller.api.createBootstrapToken()).token;
  const enroll = spawnLogged('ip', ['netns', 'exec', ns, process.execPath, WORKER_BIN, 'enroll', '--controller', controller.grpcAddress, '--token', token, '--name', workerName, '--data-dir', workerData]);
  if ((await enroll.exited) !== 0) throw new Error(`enroll failed:\n${enroll.output()}`);
  const workerEnv = {
    FLEET_SESSIONS_WORKER: JSON.stringify({
      dataDir: workerData,
      qemuDir: path.join(tmp, 'q'),
      natName: `fsb${id}`,
      subnet,
      dhcpRange: [`192.168.${third}.100`, `192.168.${third}.150`],
      natDir: path.join(tmp, 'nat'),
    }),
  };
  const startWorkerProc = () => spawnLogged('ip', ['netns', 'exec', ns, process.execPath, SESSIONS_WORKER], workerEnv);
  let worker = startWorkerProc();
  await worker.waitFor(/sessions-worker ready/, 60_000);
  await waitUntil(async () => (await controller.api.worker(workerName))?.status === 'online', 30_000, 'worker online');

  const env: SessionsEnv = {
    id,
    ns,
    hostIp,
    tmp,
    get controller() {
      return controller;
    },
    get worker() {
      return worker;
    },
    workerName,
    async restartWorker() {
      worker = startWorkerProc();
      await worker.waitFor(/sessions-worker ready/, 60_000);
      await waitUntil(async () => (await controller.api.worker(workerName))?.status === 'online', 30_000, 'worker online again');
    },
    killWorker() {
      // `ip netns exec` execs the worker (same pid). Only the worker dies: its VM host
      // processes are detached and keep the VMs running, as on a real host.
      worker.child.kill('SIGKILL');
    },
    async restartController() {
      const apiPort = Number(new URL(controller.apiUrl).port);
      const grpcPort = Number(controller.grpcAddress.split(':').pop());
      await controller.kill('SIGTERM');
      controller = await startControllerProcess({ dataDir: controller.dataDir, apiPort, offlineTimeout: '60s', extraArgs: ['--grpc-listen', `${hostIp}:${grpcPort}`] });
      await waitUntil(async () => (await controller.api.worker(workerName))?.status === 'online', 60_000, 'worker back online after the controller restart');
    },
    async createVm(name) {
      await controller.api.createVm({ name, image: 'fleet-guest', driver: 'qemu', cpus: 1, memoryMib: 256 });
      let vm: { state: string; ip: string | null; reason: string } | null = null;
      await waitUntil(async () => {
        vm = await controller.api.vm(name);
        if (vm?.state === 'failed') throw new Error(`vm ${name} failed: ${vm.reason}`);
        return vm?.state === 'running' && !!vm.ip;
      }, 120_000, `vm ${name} running with an IP`, 250);
      return { name, ip: vm!.ip! };
    },
    inNs(args) {
      return ['ip', 'netns', 'exec', ns, ...args];
    },
    async destroy() {
      worker.child.kill('SIGKILL');
      await controller.kill('SIGTERM');
      // VM host processes and QEMUs carry our temp dir in their command line.
      for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        try {
          if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(tmp) && Number(pid) !== process.pid) process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await new Promise((r) => setTimeout(r, 300));
      try {
        run(['ip', 'netns', 'pids', ns]);
        for (const pid of execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(Boolean)) {
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      } catch {
        /* namespace gone */
      }
      try {
        run(['ip', 'link', 'del', vethHost]);
      } catch {
        /* gone with the namespace */
      }
      try {
        run(['ip', 'netns', 'del', ns]);
      } catch {
        /* gone */
      }
      // The worker ran under `ip netns exec`, in a mount namespace of its own: the per-VM namespaces
      // it made (the offload path's fleetvm-*) were mounted only there and are bare names in
      // /run/netns now. Remove those no process mounts (the worker's own start-up rule).
      for (const name of await orphanVmNamespaces()) {
        try {
          run(['ip', 'netns', 'del', name]);
        } catch {
          rmSync(`/run/netns/${name}`, { force: true });
        }
      }
      await rm(tmp, { recursive: true, force: true });
      await rm(controller.dataDir, { recursive: true, force: true });
    },
  };
  return env;
}

/** Runs the fleet CLI against the env's controller; stdout as a Buffer. */
export function runFleet(
  env: SessionsEnv,
  args: string[],
  opts: { input?: Buffer | string; token?: string; timeoutMs?: number; stdin?: 'pipe' | 'ignore' } = {},
): Promise<{ code: number | null; stdout: Buffer; stderr: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [FLEET_CLI, '--url', env.controller.apiUrl, '--token', opts.token ?? env.controller.adminToken, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, FLEET_CONFIG: path.join(env.tmp, 'cli-config.json') },
    stdio: [opts.stdin ?? 'pipe', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  let err = '';
  child.stdout!.on('data', (d: Buffer) => out.push(d));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  if (child.stdin) {
    child.stdin.on('error', () => undefined);
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  }
  const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
  return new Promise((resolve) => {
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err, child });
    });
  });
}

export { tempDir };
