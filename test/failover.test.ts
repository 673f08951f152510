// Exactly once, from the workers' own view (issue 12): two QEMU workers and a controller in network
// namespaces; a worker partitioned longer than lostAfter and healed, and a worker killed with -9.
// A sampler reads the process table every 250 ms (QEMU's command line names its instance:
// <worker data dir>/qemu/instances/<vm id>.<attempt>/) and records every violation of
// "never two live attempts of one VM" — whatever the API says.
//
//   hub bridge ── fo-c (controller 10.97.0.10) ── fo-w1 (worker w1 10.97.0.11) ── fo-w2 (worker w2 10.97.0.12)
//        └── root namespace 10.97.0.2 (this test process: the API client)
//
// Timings: heartbeat 500 ms, lostAfter 6 s → fenceAfter 4 s (apps/controller/src/workers/failure-timing.ts).
// Needs root, ip netns, qemu-system-x86_64, dnsmasq, nft; otherwise skipped loudly.
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureGuestImage } from '../guest-image/src/index.ts';
import { ApiClient, REPO_ROOT, removeDir, tempDir, waitUntil, type RunningProcess } from './support/fleet-processes.ts';
import { buildLan, ipCmd as ip, killProcessesMentioning, realVmsMissing, removeNetworks, startInNetns, warnSkipped } from './support/lab.ts';

const run = promisify(execFile);
const ID = process.pid % 1000;
const HUB = `foh${ID}`;
const NS = { c: `foc${ID}`, w1: `fow1-${ID}`, w2: `fow2-${ID}` } as const;
const ADDR = { root: '10.97.0.2', c: '10.97.0.10', w1: '10.97.0.11', w2: '10.97.0.12' } as const;
const ROOT_VETH = `for${ID}`;
const API = `http://${ADDR.c}:18081`;
const ADMIN = 'fleet_e2efailover01_' + 'F'.repeat(43);
const CONTROLLER_MAIN = path.join(REPO_ROOT, 'apps/controller/bin/fleet-controller.js');
const WORKER_MAIN = path.join(REPO_ROOT, 'apps/worker/bin/fleet-worker.js');
const FENCE_MS = 4_000;
const LOST_MS = 6_000;

const why = realVmsMissing();
if (why) warnSkipped('test/failover.test.ts', why, 'Fencing, partitions and worker kill -9 with real VMs are');

let tmp = '';
const procs: RunningProcess[] = [];
const api = new ApiClient(API, ADMIN);
const workers: Record<'w1' | 'w2', RunningProcess | undefined> = { w1: undefined, w2: undefined };

function startWorker(name: 'w1' | 'w2'): RunningProcess {
  const p = startInNetns(NS[name], [
    WORKER_MAIN, 'run', '--data-dir', path.join(tmp, name), '--driver', 'qemu', '--accel', 'tcg', '--uplink', 'eth0',
    '--labels', `host=${name}`, '--cpus', '3', '--memory-mib', '2048', '--vm-slots', '3',
  ]);
  procs.push(p);
  workers[name] = p;
  return p;
}

/** Live QEMU instances right now: vm id → the attempts with a process (and where). */
function liveInstances(): Map<string, { attempt: number; worker: string; pid: number }[]> {
  const live = new Map<string, { attempt: number; worker: string; pid: number }[]>();
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (!cmd.includes('qemu-system') || !cmd.includes(tmp)) continue;
    const m = new RegExp(`${tmp.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/(w[12])/qemu/instances/([^/\\0]+)\\.(\\d+)/`).exec(cmd);
    if (!m) continue;
    const vmId = decodeURIComponent(m[2]!);
    const list = live.get(vmId) ?? [];
    if (!list.some((x) => x.attempt === Number(m[3]))) list.push({ attempt: Number(m[3]), worker: m[1]!, pid: Number(pid) });
    live.set(vmId, list);
  }
  return live;
}

/** Samples every 250 ms; a sample with two attempts of one VM alive is a violation. */
class Sampler {
  readonly violations: string[] = [];
  samples = 0;
  private timer: NodeJS.Timeout | undefined;
  start(): void {
    this.timer = setInterval(() => {
      this.samples++;
      for (const [vmId, attempts] of liveInstances()) {
        if (attempts.length > 1) this.violations.push(`${new Date().toISOString()} ${vmId}: ${attempts.map((a) => `attempt ${a.attempt} on ${a.worker} (pid ${a.pid})`).join(' and ')}`);
      }
    }, 250);
  }
  stop(): void {
    clearInterval(this.timer);
  }
}
const sampler = new Sampler();

interface VmView {
  id: string;
  name: string;
  state: string;
  attempt: number;
  worker: string | null;
  reason: string;
}
const vm = async (name: string): Promise<VmView> => (await api.vm(name)) as VmView;
const qemuOf = (v: VmView): { attempt: number; worker: string; pid: number } | undefined => liveInstances().get(v.id)?.find((x) => x.attempt === v.attempt);

describe.skipIf(why !== '')('failover: never two live attempts, through partitions and a worker kill -9 (real VMs)', () => {
  beforeAll(async () => {
    tmp = await tempDir('fo');
    await ensureGuestImage();
    buildLan({ hub: HUB, hosts: Object.fromEntries(Object.entries(NS).map(([k, ns]) => [k, { ns, addr: ADDR[k as keyof typeof NS] }])), rootVeth: ROOT_VETH, rootAddr: ADDR.root });
    const controller = startInNetns(
      NS.c,
      [CONTROLLER_MAIN, 'run', '--data-dir', path.join(tmp, 'controller'), '--listen', `${ADDR.c}:18081`, '--grpc-listen', `${ADDR.c}:17444`,
        '--api-tls', 'off', '--heartbeat-interval', '500ms', '--worker-offline-timeout', `${LOST_MS}ms`],
      { FLEET_BOOTSTRAP_ADMIN_TOKEN: ADMIN },
    );
    procs.push(controller);
    await controller.waitFor(/worker gRPC:\s+(\S+)/, 60_000);
    for (const name of ['w1', 'w2'] as const) {
      const { token } = await api.createBootstrapToken();
      await run('ip', ['netns', 'exec', NS[name], process.execPath, WORKER_MAIN, 'enroll', '--controller', `${ADDR.c}:17444`, '--token', token, '--name', name, '--data-dir', path.join(tmp, name)], { cwd: REPO_ROOT });
    }
    sampler.start();
  }, 300_000);

  afterAll(async () => {
    sampler.stop();
    for (const p of procs) await Promise.race([p.kill('SIGKILL'), new Promise((r) => setTimeout(r, 3000))]);
    if (tmp) killProcessesMentioning(tmp);
    removeNetworks({ namespaces: [...Object.values(NS), HUB], links: [ROOT_VETH] });
    if (tmp) await removeDir(tmp);
  }, 60_000);

  it('partition longer than lostAfter: the reschedule VM is fenced before it is re-placed; the wait VM runs through it untouched', async () => {
    // Only w1 first, so both VMs land there; then w2 joins as the place to fail over to.
    startWorker('w1');
    await waitUntil(async () => (await api.worker('w1'))?.status === 'online', 90_000, 'w1 online');
    await api.createVm({ name: 'fo-r', image: 'fleet-guest', cpus: 1, memoryMib: 256, diskGib: 1, restartPolicy: 'on-failure' });
    await api.createVm({ name: 'fo-w', image: 'fleet-guest', cpus: 1, memoryMib: 256, diskGib: 1, restartPolicy: 'on-failure', disconnectPolicy: 'wait' });
    await waitUntil(async () => (await vm('fo-r')).state === 'running' && (await vm('fo-w')).state === 'running', 180_000, 'both VMs running on w1', 250);
    startWorker('w2');
    await waitUntil(async () => (await api.worker('w2'))?.status === 'online', 90_000, 'w2 online');
    const r1 = await vm('fo-r');
    const w = await vm('fo-w');
    const wQemu = qemuOf(w)!;
    expect(qemuOf(r1)).toMatchObject({ worker: 'w1', attempt: 1 });

    const cut = Date.now();
    ip('-n', HUB, 'link', 'set', 'pw1', 'down');
    await waitUntil(async () => (await vm('fo-w')).state === 'unknown', 10_000, 'the wait VM unknown', 100);
    // Fenced on the worker's side: the reschedule VM's QEMU is gone by fenceAfter (+ poll and kill).
    await waitUntil(() => qemuOf(r1) === undefined, FENCE_MS + 4_000, 'fo-r fenced on w1', 100);
    const fencedAfter = Date.now() - cut;
    // Re-placed on w2 only once w1 is lost; meanwhile the wait VM is untouched.
    await waitUntil(async () => {
      const r = await vm('fo-r');
      return r.state === 'running' && r.worker === 'w2';
    }, 120_000, 'fo-r running on w2', 250);
    const replacedAfter = Date.now() - cut;
    console.log(`[failover] partition: fo-r fenced on w1 after ${fencedAfter} ms, running on w2 after ${replacedAfter} ms (fenceAfter ${FENCE_MS}, lostAfter ${LOST_MS})`);
    expect((await vm('fo-r')).attempt).toBeGreaterThan(1);
    const wDuring = await vm('fo-w');
    expect(wDuring).toMatchObject({ state: 'unknown', attempt: 1, worker: 'w1' });
    expect(wDuring.reason).toMatch(/disconnect policy wait/);
    expect(qemuOf(wDuring)?.pid).toBe(wQemu.pid);

    ip('-n', HUB, 'link', 'set', 'pw1', 'up');
    const healed = Date.now();
    await waitUntil(async () => (await vm('fo-w')).state === 'running', 60_000, 'the wait VM running again after the heal', 250);
    console.log(`[failover] partition healed: fo-w running again after ${Date.now() - healed} ms`);
    const wAfter = await vm('fo-w');
    expect(wAfter).toMatchObject({ attempt: 1, worker: 'w1' });
    expect(qemuOf(wAfter)?.pid).toBe(wQemu.pid); // the same guest, never stopped
    // The fenced attempt 1 of fo-r is gone from w1 for good; the VM runs once, on w2.
    await waitUntil(async () => (await api.worker('w1')).used.vms === 1, 30_000, 'w1 holding only the wait VM');
    expect([...(liveInstances().get(r1.id) ?? [])].map((x) => x.worker)).toEqual(['w2']);
    expect(sampler.violations).toEqual([]);
  }, 400_000);

  it('worker kill -9: its VM host processes fence the reschedule VM by themselves; it is re-placed; nothing runs twice', async () => {
    const r = await vm('fo-r');
    expect(r.worker).toBe('w2');
    const killedAt = Date.now();
    await workers.w2!.kill('SIGKILL');
    // No worker process is left on w2 to stop anything: the VM host process watches the lease file.
    await waitUntil(() => qemuOf(r) === undefined, FENCE_MS + 4_000, 'fo-r fenced on w2 without its worker', 100);
    const fencedAfter = Date.now() - killedAt;
    await waitUntil(async () => {
      const v = await vm('fo-r');
      return v.state === 'running' && v.worker === 'w1';
    }, 120_000, 'fo-r running on w1', 250);
    console.log(`[failover] kill -9: fo-r fenced after ${fencedAfter} ms, running on w1 after ${Date.now() - killedAt} ms`);
    // The worker comes back: it adopts nothing stale and runs nothing twice.
    startWorker('w2');
    await waitUntil(async () => (await api.worker('w2'))?.status === 'online', 90_000, 'w2 back');
    await waitUntil(async () => (await api.worker('w2')).used.vms === 0, 30_000, 'w2 holding nothing');
    expect((await vm('fo-w')).state).toBe('running');
    expect(sampler.samples).toBeGreaterThan(100);
    expect(sampler.violations).toEqual([]);
  }, 300_000);
});
