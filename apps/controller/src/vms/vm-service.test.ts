// VmService and WorkerService against a real (temporary) SQLite database: the
// rules that keep capacity honest and deletes final.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { migrateDatabase, openDatabase, type FleetDb } from '@fleet/db';
import { findPostgresBin } from '@fleet/db/pg-scratch';
import { scratchPostgresForSuite } from '@fleet/db/testing/scratch-postgres';
import { EventLog } from '../events/event-log.ts';
import { FleetBus } from '../fleet-bus.ts';
import { Metrics } from '../observability/metrics.ts';
import { toVmObject } from './vm-view.ts';
import { VmService, type ReportedInstance } from './vm-service.ts';
import { WorkerService, type HelloInfo } from '../workers/worker-service.ts';
import { SchedulerLoop } from '../scheduler/scheduler-loop.ts';
import { VmSecrets } from '../secrets/vm-secrets.ts';
import { desiredAssignments } from './desired-state.ts';

const secrets = VmSecrets.ephemeral();

let dir: string;
let db: FleetDb;
let bus: FleetBus;
let events: EventLog;
let vms: VmService;
let workers: WorkerService;
let scheduler: SchedulerLoop;
let metrics: Metrics;
const log = pino({ level: 'silent' });
const disconnected: string[] = [];

const HELLO: HelloInfo = {
  protocolVersion: 1, version: 't', hostname: 'h', machineId: 'm', os: 'darwin', arch: 'arm64',
  cpus: 8, memoryMib: 16384, vmSlots: 4, macosSlots: 2, natAddresses: 0, labels: {}, drivers: ['synthetic'], networks: [],
};

async function services(offlineTimeoutMs = 1000, startupGraceMs = 0) {
  bus = new FleetBus();
  events = new EventLog(db);
  metrics = new Metrics({ defaultMetrics: false });
  vms = new VmService(db, events, bus, metrics, secrets);
  workers = new WorkerService(db, events, bus, vms, metrics, log, {
    timings: { heartbeatIntervalMs: 100, suspectAfterMs: Math.min(250, offlineTimeoutMs - 1), fenceAfterMs: Math.max(1, offlineTimeoutMs - 500), lostAfterMs: offlineTimeoutMs },
    startupGraceMs,
    controllerId: 'ctl-test',
    disconnect: (id) => disconnected.push(id),
  });
  scheduler = new SchedulerLoop(db, events, bus, metrics, log, async () => 'pack', 60_000, { startNow: false }); // passes are driven by the tests
  workers.liveness.start({ timer: false }); // so are liveness ticks
}

async function isOnline(workerId: string): Promise<boolean> {
  return (await db.worker.findUniqueOrThrow({ where: { id: workerId } })).status === 'online';
}

async function onlineWorker(name: string) {
  const w = await db.worker.create({ data: { id: crypto.randomUUID(), name, machineId: 'm' } });
  await workers.onHello(w, HELLO);
  return w;
}

const report = (vmId: string, attempt: number, phase: ReportedInstance['phase'], extra: Partial<ReportedInstance> = {}): ReportedInstance => ({
  vmId, attempt, phase, observedGeneration: 1, ip: '', mac: '', message: '', ...extra,
});

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-vmsvc-'));
  const url = `file:${path.join(dir, 'fleet.db')}`;
  await migrateDatabase(url);
  db = openDatabase({ url });
  disconnected.length = 0;
  await services();
});
afterEach(async () => {
  await db.$disconnect();
  await rm(dir, { recursive: true, force: true });
});

describe('worker reports: group commit (issue 20)', () => {
  it('commits several workers’ reports in one transaction; a report that conflicts is decided again alone', async () => {
    const a = await onlineWorker('mac-a');
    const b = await onlineWorker('mac-b');
    const c = await onlineWorker('mac-c');
    const created = [];
    for (const name of ['va', 'vb', 'vc']) created.push(await vms.create({ name, image: 'img', cpus: 8, memoryMib: 16384 }, 'test')); // a whole worker each
    await scheduler.passOnce();
    const placed = await db.vm.findMany({ orderBy: { name: 'asc' } });
    expect(new Set(placed.map((v) => v.workerId))).toEqual(new Set([a.id, b.id, c.id]));
    const byWorker = new Map(placed.map((v) => [v.workerId!, v]));
    const groups0 = vms.reportCommits.groups;
    const watched: string[] = [];
    bus.onVmChange((ch) => watched.push(`${ch.vm.name}:${ch.vm.state}`));

    // The VM of worker c changed between its report's read and its update: that report fails in
    // the group, is decided again from a fresh read, and the others commit.
    const vc = byWorker.get(c.id)!;
    // Changed now, but its report's first read returns the row as it was (a read just before the change).
    await db.vm.updateMany({ where: { id: vc.id }, data: { state: 'starting', reason: 'changed meanwhile' } });
    const original = vms.readReportedVms;
    let raced = false;
    vms.readReportedVms = async (ids) => {
      const rows = await original(ids);
      if (raced || !rows.some((r) => r.id === vc.id)) return rows;
      raced = true;
      return rows.map((r) => (r.id === vc.id ? vc : r));
    };
    try {
      await Promise.all(
        [a, b, c].map((w) => vms.applyWorkerReports(w.id, w.name, [report(byWorker.get(w.id)!.id, byWorker.get(w.id)!.attempt, 'VM_PHASE_RUNNING', { ip: '192.168.64.2' })])),
      );
    } finally {
      vms.readReportedVms = original;
    }
    const after = await db.vm.findMany({ orderBy: { name: 'asc' } });
    expect(after.map((v) => v.state)).toEqual(['running', 'running', 'running']);
    // Three reports in one group (plus the retried one in its own): one transaction for the many.
    expect(vms.reportCommits.writes).toBeGreaterThanOrEqual(4);
    expect(vms.reportCommits.groups - groups0).toBeLessThanOrEqual(3);
    expect(vms.reportCommits.retried).toBeGreaterThanOrEqual(1);
    // Every VM has exactly one event to running, and watchers heard each change once.
    const toRunning = await db.event.findMany({ where: { kind: 'vm.state', message: { contains: '→ running' } } });
    expect(toRunning.map((e) => e.vmName).sort()).toEqual(['va', 'vb', 'vc']);
    expect(watched.filter((w) => w.endsWith(':running')).sort()).toEqual(['va:running', 'vb:running', 'vc:running']);
  });

  it('counts a failure reported in a group once, although the group ran its work twice', async () => {
    const a = await onlineWorker('mac-a');
    const b = await onlineWorker('mac-b');
    for (const name of ['fa', 'fb']) await vms.create({ name, image: 'img', cpus: 8, memoryMib: 16384 }, 'test'); // a whole worker each
    await scheduler.passOnce();
    const byWorker = new Map((await db.vm.findMany()).map((v) => [v.workerId!, v]));
    const vb = byWorker.get(b.id)!;
    // b's VM changed after its report was read: b's write fails, so the group runs again isolated.
    await db.vm.updateMany({ where: { id: vb.id }, data: { state: 'starting' } });
    const original = vms.readReportedVms;
    let raced = false;
    vms.readReportedVms = async (ids) => {
      const rows = await original(ids);
      if (raced || !rows.some((r) => r.id === vb.id)) return rows;
      raced = true;
      return rows.map((r) => (r.id === vb.id ? vb : r)); // the row as it was before the change
    };
    const failures0 = (await metrics.vmFailures.get()).values[0]?.value ?? 0;
    const retried0 = vms.reportCommits.retried;
    try {
      await Promise.all([
        vms.applyWorkerReports(a.id, a.name, [report(byWorker.get(a.id)!.id, 1, 'VM_PHASE_FAILED', { message: 'disk full' })]),
        vms.applyWorkerReports(b.id, b.name, [report(vb.id, 1, 'VM_PHASE_RUNNING')]),
      ]);
    } finally {
      vms.readReportedVms = original;
    }
    expect(vms.reportCommits.retried).toBeGreaterThan(retried0);
    expect((await db.vm.findUniqueOrThrow({ where: { id: byWorker.get(a.id)!.id } })).state).toBe('failed');
    expect(((await metrics.vmFailures.get()).values[0]?.value ?? 0) - failures0).toBe(1);
  });
});

describe('registry images (issue 15)', () => {
  it('records the digest the image resolved to at create, re-resolves a new image, and shows the pull in progress', async () => {
    const digest1 = `sha256:${'1'.repeat(64)}`;
    const digest2 = `sha256:${'2'.repeat(64)}`;
    const resolved: string[] = [];
    vms.resolveImage = async (image) => {
      resolved.push(image);
      return { imageDigest: image.startsWith('127.0.0.1:5000/') ? (image.endsWith(':2') ? digest2 : digest1) : '' };
    };
    const w = await onlineWorker('mac-1');
    const vm = await vms.create({ name: 'r', image: '127.0.0.1:5000/fleet/guest:1', cpus: 1, memoryMib: 1024 }, 'test');
    expect(vm.imageDigest).toBe(digest1);
    await scheduler.passOnce();
    await vms.applyWorkerReports(w.id, w.name, [report(vm.id, 1, 'VM_PHASE_STARTING', { message: 'pulling image x: 37 %', pull: { bytesDone: 37, bytesTotal: 100 } })]);
    let row = await db.vm.findUniqueOrThrow({ where: { id: vm.id } });
    expect(toVmObject(row, 'mac-1')).toMatchObject({ state: 'starting', reason: 'pulling image x: 37 %', imageDigest: digest1, pull: { bytesDone: 37, bytesTotal: 100, percent: 37 } });
    await vms.applyWorkerReports(w.id, w.name, [report(vm.id, 1, 'VM_PHASE_RUNNING', { ip: '192.168.64.9' })]);
    row = await db.vm.findUniqueOrThrow({ where: { id: vm.id } });
    expect(toVmObject(row, 'mac-1')).toMatchObject({ state: 'running', pull: null });
    expect(row.reason).not.toMatch(/pulling/);
    // Local images are not resolved against a registry (the resolver says "" for them).
    expect((await vms.create({ name: 'local', image: 'fleet-guest', cpus: 1, memoryMib: 1024 }, 'test')).imageDigest).toBe('');
    // A new image is resolved again; the same one is not.
    await vms.update('r', { labels: { a: 'b' } }, 'test');
    expect(resolved.filter((i) => i.endsWith(':1'))).toHaveLength(1);
    await vms.update('r', { image: '127.0.0.1:5000/fleet/guest:2' }, 'test');
    expect((await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).imageDigest).toBe(digest2);
  });

  it("takes the image's driver and guest OS (a Tart macOS image takes a macOS slot) and refuses a VM the image cannot suit", async () => {
    vms.resolveImage = async (image) => ({ imageDigest: `sha256:${'3'.repeat(64)}`, ...(image.includes('macos') ? { driver: 'vz', os: 'macos' } : { driver: 'qemu', os: 'linux' }) });
    expect(await vms.create({ name: 'mac', image: 'ghcr.io/org/macos:15', cpus: 1, memoryMib: 1024 }, 'test')).toMatchObject({ driver: 'vz', os: 'macos' });
    expect(await vms.create({ name: 'lin', image: '127.0.0.1:5000/fleet/guest:1', cpus: 1, memoryMib: 1024 }, 'test')).toMatchObject({ driver: 'qemu', os: 'linux' });
    await expect(vms.create({ name: 'bad-os', image: 'ghcr.io/org/macos:15', os: 'linux', cpus: 1, memoryMib: 1024 }, 'test')).rejects.toThrow(/is a macos image, not linux/);
    await expect(vms.create({ name: 'bad-drv', image: '127.0.0.1:5000/fleet/guest:1', driver: 'synthetic', cpus: 1, memoryMib: 1024 }, 'test')).rejects.toThrow(/runs on the qemu driver, not synthetic/);
    await expect(vms.update('lin', { image: 'ghcr.io/org/macos:16' }, 'test')).rejects.toThrow(/runs on the vz driver, not qemu/);
    expect(await db.vm.count({ where: { name: { in: ['bad-os', 'bad-drv'] } } })).toBe(0);
  });

  it('a stopped VM whose disk is being pushed cannot be started until the push ends', async () => {
    let push: string | null = 'op-1';
    vms.pushInProgress = async () => push;
    await onlineWorker('mac-1');
    await vms.create({ name: 'p', image: 'img', cpus: 1, memoryMib: 1024, powerState: 'stopped' }, 'test');
    await expect(vms.update('p', { powerState: 'running' }, 'test')).rejects.toThrow(/being pushed as an image \(image operation op-1\)/);
    push = null;
    expect(await vms.update('p', { powerState: 'running' }, 'test')).toMatchObject({ desiredPower: 'running' });
  });
});

describe('network modes and custom MACs (issue 18)', () => {
  const NETWORKS: HelloInfo['networks'] = [
    { mode: 'nat', subnet: '192.168.64.0/24', gateway: '192.168.64.1', addresses: 253, interface: 'fleet0' },
    { mode: 'host-only', subnet: '192.168.128.0/24', gateway: '192.168.128.1', addresses: 2, interface: 'fleet-ho0' },
  ];
  async function worker(name: string, networks: HelloInfo['networks'] = NETWORKS) {
    const w = await db.worker.create({ data: { id: crypto.randomUUID(), name, machineId: 'm' } });
    await workers.onHello(w, { ...HELLO, networks });
    return w;
  }
  const row = (id: string) => db.vm.findUniqueOrThrow({ where: { id } });
  /** Placed and reported stopped (created stopped). */
  async function stoppedOn(w: { id: string; name: string }, name: string, extra: Record<string, unknown> = {}) {
    const vm = await vms.create({ name, image: 'img', cpus: 1, memoryMib: 1024, powerState: 'stopped', ...extra }, 'test');
    await scheduler.passOnce();
    const placed = await row(vm.id);
    expect(placed.workerId).toBe(w.id);
    await vms.applyWorkerReports(w.id, w.name, [report(vm.id, placed.attempt, 'VM_PHASE_STOPPED')]);
    expect((await row(vm.id)).state).toBe('stopped');
    return vm;
  }

  type RawTx = { $executeRawUnsafe(q: string, ...v: unknown[]): Promise<number> };
  /**
   * A scheduler whose first placement transaction starts with `race` (at the leader's fence, after
   * the pass planned): what another request commits between a plan and its placement.
   */
  function racingScheduler(race: (tx: RawTx) => Promise<unknown>): { scheduler: SchedulerLoop; raced: () => boolean } {
    let raced = false;
    const racing = new SchedulerLoop(db, events, bus, metrics, log, async () => 'pack', 60_000, {
      startNow: false,
      fence: async (tx) => {
        if (raced) return;
        raced = true;
        await race(tx as unknown as RawTx);
      },
    });
    return { scheduler: racing, raced: () => raced };
  }

  it('stores the mode and the MAC (lower case), shows them, and sends them to the worker in VmSpec', async () => {
    const w = await worker('w1');
    const vm = await vms.create({ name: 'ho', image: 'img', cpus: 1, memoryMib: 1024, network: { mode: 'host-only', allow: ['@host'] }, mac: '02:AA:BB:CC:DD:EE' }, 'test');
    expect(vm).toMatchObject({ networkMode: 'host-only', customMac: '02:aa:bb:cc:dd:ee' });
    expect(toVmObject(vm, null)).toMatchObject({ network: { mode: 'host-only', allow: ['@host'], block: [], blockLocal: false }, mac: '02:aa:bb:cc:dd:ee', macSource: 'custom' });
    const plain = await vms.create({ name: 'plain', image: 'img', cpus: 1, memoryMib: 1024 }, 'test');
    expect(toVmObject(plain, null)).toMatchObject({ network: { mode: 'nat' }, mac: null, macSource: null });
    await scheduler.passOnce();
    const specs = new Map((await desiredAssignments(db, secrets, w.id)).map((a) => [a.name, a.spec!]));
    expect(specs.get('ho')).toMatchObject({ mac: '02:aa:bb:cc:dd:ee', network: { mode: 'host-only', allow: ['@host'] } });
    expect(specs.get('plain')).toMatchObject({ mac: '', network: { mode: 'nat' } });
    // The worker's own MAC is shown when the spec sets none.
    await vms.applyWorkerReports(w.id, w.name, [report(plain.id, 1, 'VM_PHASE_RUNNING', { mac: '52:54:00:00:00:01' })]);
    expect(toVmObject(await row(plain.id), 'w1')).toMatchObject({ mac: '52:54:00:00:00:01', macSource: 'worker' });
    // The worker view: its networks with the addresses held.
    const view = await workers.view(await db.worker.findUniqueOrThrow({ where: { id: w.id } }));
    expect(view.networks).toEqual([
      { ...NETWORKS[0], used: 1 },
      { ...NETWORKS[1], used: 1 },
    ]);
    expect(view.used).toMatchObject({ vms: 2, natAddresses: 1 });
  });

  it('refuses rules or a MAC with mode none, and writes nothing', async () => {
    await expect(vms.create({ name: 'n1', image: 'img', network: { mode: 'none', allow: ['10.0.0.0/8'] } }, 'test')).rejects.toMatchObject({ statusCode: 400, message: expect.stringMatching(/network mode "none" has no NIC to apply allow to/) });
    await expect(vms.create({ name: 'n2', image: 'img', network: { mode: 'none', blockLocal: true } }, 'test')).rejects.toThrow(/no NIC to apply blockLocal/);
    await expect(vms.create({ name: 'n3', image: 'img', network: { mode: 'none' }, mac: '02:00:00:00:00:01' }, 'test')).rejects.toThrow(/no NIC to give a MAC to/);
    expect(await db.vm.count()).toBe(0);
    const none = await vms.create({ name: 'n4', image: 'img', network: { mode: 'none', allow: [], blockLocal: false } }, 'test');
    expect(toVmObject(none, null).network.mode).toBe('none');
  });

  it('changes mode and MAC only while the VM is stopped or not placed, and checks its worker', async () => {
    const w = await worker('w1');
    // Pending (no worker offers host-only... yet any change is fine while not placed).
    const pend = await vms.create({ name: 'pend', image: 'img', cpus: 1000, memoryMib: 1024 }, 'test');
    const p2 = await vms.update('pend', { network: { mode: 'host-only' }, mac: '02:00:00:00:00:aa' }, 'test');
    expect(p2).toMatchObject({ networkMode: 'host-only', customMac: '02:00:00:00:00:aa', generation: pend.generation + 1 });

    const run = await vms.create({ name: 'run', image: 'img', cpus: 1, memoryMib: 1024 }, 'test');
    await scheduler.passOnce();
    await vms.applyWorkerReports(w.id, w.name, [report(run.id, 1, 'VM_PHASE_RUNNING')]);
    await expect(vms.update('run', { network: { mode: 'host-only' } }, 'test')).rejects.toMatchObject({ statusCode: 409, message: expect.stringMatching(/while it is running on a worker: stop it first \(fleet vm update run --stop, and wait for state stopped\)/) });
    await expect(vms.update('run', { mac: '02:00:00:00:00:01' }, 'test')).rejects.toMatchObject({ statusCode: 409 });
    // Other fields still change while it runs; the same network again is no change.
    await vms.update('run', { labels: { a: 'b' }, network: { mode: 'nat' } }, 'test');

    const st = await stoppedOn(w, 'st', { mac: '02:00:00:00:00:01' });
    const before = await row(st.id);
    const after = await vms.update('st', { network: { mode: 'host-only' }, mac: '02:00:00:00:00:02' }, 'test');
    expect(after).toMatchObject({ networkMode: 'host-only', customMac: '02:00:00:00:00:02', generation: before.generation + 1 });
    // The instance's allocation follows, so the scheduler counts the right network and MAC.
    expect(await db.allocation.findFirstOrThrow({ where: { vmId: st.id, attempt: before.attempt } })).toMatchObject({ networkMode: 'host-only', mac: '02:00:00:00:00:02' });
    // Clearing the MAC lets the worker derive one again.
    expect((await vms.update('st', { mac: null }, 'test')).customMac).toBe('');
    // Mode none with stored rules: refused, saying how to drop them.
    await vms.update('st', { network: { allow: ['10.0.0.0/8'] } }, 'test');
    await expect(vms.update('st', { network: { mode: 'none' } }, 'test')).rejects.toThrow(/no NIC to apply allow to.*send network \{"mode": "none", "allow": \[\]/);
    expect((await vms.update('st', { network: { mode: 'none', allow: [] } }, 'test')).networkMode).toBe('none');
  });

  it('a stopped VM cannot take a mode its worker lacks, a full host-only network, or a MAC another instance there holds', async () => {
    const natOnly = await worker('w-nat', []);
    const st = await stoppedOn(natOnly, 'st');
    await expect(vms.update('st', { network: { mode: 'host-only' } }, 'test')).rejects.toMatchObject({ statusCode: 409, message: expect.stringMatching(/worker w-nat, where vm "st" is placed, does not offer network mode host-only \(it offers nat\)/) });
    expect((await vms.update('st', { network: { mode: 'none' } }, 'test')).networkMode).toBe('none'); // needs no network
    const other = await stoppedOn(natOnly, 'other', { mac: '02:00:00:00:00:05' });
    await expect(vms.update('st', { network: { mode: 'nat' }, mac: '02:00:00:00:00:05' }, 'test')).rejects.toMatchObject({ statusCode: 409, message: expect.stringMatching(/MAC 02:00:00:00:00:05 is already used by vm "other" on worker w-nat/) });
    expect(other.customMac).toBe('02:00:00:00:00:05');
  });

  it('the host-only pool of the worker bounds changes too', async () => {
    const w = await worker('w1'); // host-only: 2 addresses
    await vms.create({ name: 'h1', image: 'img', cpus: 1, memoryMib: 512, network: { mode: 'host-only' } }, 'test');
    await vms.create({ name: 'h2', image: 'img', cpus: 1, memoryMib: 512, network: { mode: 'host-only' } }, 'test');
    await scheduler.passOnce();
    await stoppedOn(w, 'st');
    await expect(vms.update('st', { network: { mode: 'host-only' } }, 'test')).rejects.toThrow(/has no free host-only address \(2 of 2 in use\)/);
  });

  it('the scheduler keeps a VM pending while every eligible worker holds its MAC, and says so', async () => {
    await worker('w1');
    const mac = '02:00:00:00:00:77';
    await vms.create({ name: 'first', image: 'img', cpus: 1, memoryMib: 512, mac }, 'test');
    const second = await vms.create({ name: 'second', image: 'img', cpus: 1, memoryMib: 512, mac: mac.toUpperCase() }, 'test');
    await scheduler.passOnce();
    const r = await row(second.id);
    expect(r.state).toBe('pending');
    expect(r.reason).toMatch(/^MAC 02:00:00:00:00:77 is already used by vm first on every eligible worker with room \(w1\)/);
    // A second worker takes it.
    const w2 = await worker('w2');
    await scheduler.passOnce();
    expect((await row(second.id)).workerId).toBe(w2.id);
    // Host-only VMs wait for a worker that offers host-only.
    const ho = await vms.create({ name: 'ho', image: 'img', cpus: 1, memoryMib: 512, network: { mode: 'host-only' } }, 'test');
    await db.worker.updateMany({ data: { networks: '[]' } });
    await scheduler.passOnce();
    expect((await row(ho.id)).reason).toBe('no worker offers network mode host-only (2 eligible online workers offer nat)');
  });

  it('two stopped VMs asking for one MAC on their worker at the same moment: one gets it, the other a 409', async () => {
    const w = await worker('w1');
    await stoppedOn(w, 's1');
    await stoppedOn(w, 's2');
    const mac = '02:00:00:00:00:31';
    const results = await Promise.allSettled([vms.update('s1', { mac }, 'test'), vms.update('s2', { mac }, 'test')]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason).toMatchObject({ statusCode: 409, message: expect.stringMatching(/^MAC 02:00:00:00:00:31 is already used by vm "s[12]" on worker w1/) });
    expect(await db.allocation.count({ where: { workerId: w.id, mac } })).toBe(1);
  });

  it('a MAC still held by an earlier instance of the same VM on its worker is refused too', async () => {
    const w = await worker('w1');
    const st = await stoppedOn(w, 'st');
    const placed = await row(st.id);
    const mac = '02:00:00:00:00:32';
    // The worker has not yet confirmed the previous attempt's instance gone.
    await db.allocation.create({ data: { id: crypto.randomUUID(), vmId: st.id, attempt: placed.attempt - 1, workerId: w.id, cpus: 1, memoryMib: 1024, mac } });
    await expect(vms.update('st', { mac }, 'test')).rejects.toMatchObject({ statusCode: 409, message: expect.stringMatching(/^MAC 02:00:00:00:00:32 is still held by an earlier instance of vm "st" \(attempt 0\) on worker w1/) });
  });

  it('the scheduler checks a custom MAC again in its placement transaction: a MAC taken after it planned keeps the VM off that worker', async () => {
    const w = await worker('w1');
    const holder = await stoppedOn(w, 'holder');
    const mac = '02:00:00:00:00:33';
    const wants = await vms.create({ name: 'wants', image: 'img', cpus: 1, memoryMib: 512, mac }, 'test');
    // Between the plan (which read no holder of the MAC) and the placement's transaction, the
    // stopped VM's MAC change commits: played here at the transaction's start (the leader's fence).
    const { scheduler: racing, raced } = racingScheduler((tx) => tx.$executeRawUnsafe('UPDATE "Allocation" SET "mac" = ? WHERE "vmId" = ?', mac, holder.id));
    expect(await racing.passOnce()).toBe(0);
    expect(raced()).toBe(true);
    expect((await row(wants.id)).state).toBe('pending');
    expect(await db.allocation.count({ where: { workerId: w.id, mac } })).toBe(1);
    // The next pass reads the holders again and says why the VM waits.
    await racing.passOnce();
    expect((await row(wants.id)).reason).toMatch(/^MAC 02:00:00:00:00:33 is already used by vm holder on every eligible worker with room \(w1\)/);
  });

  it('a network change moves the worker\'s networkVersion (so does a Hello)', async () => {
    const w = await worker('w1');
    const version = async () => (await db.worker.findUniqueOrThrow({ where: { id: w.id } })).networkVersion;
    const afterHello = await version();
    await stoppedOn(w, 'st');
    expect(await version()).toBe(afterHello); // placements and reports leave it alone
    await vms.update('st', { network: { mode: 'host-only' } }, 'test');
    expect(await version()).toBe(afterHello + 1);
    await vms.update('st', { labels: { a: 'b' } }, 'test');
    expect(await version()).toBe(afterHello + 1); // no network change
    await workers.onHello(w, { ...HELLO, networks: NETWORKS });
    expect(await version()).toBe(afterHello + 2);
  });

  it('the scheduler places nothing on a worker whose address pools changed after it planned: the last address is not given twice', async () => {
    const w = await worker('w1'); // host-only: 2 addresses
    await vms.create({ name: 'h1', image: 'img', cpus: 1, memoryMib: 512, network: { mode: 'host-only' } }, 'test');
    await scheduler.passOnce();
    const st = await stoppedOn(w, 'st'); // NAT
    const wants = await vms.create({ name: 'h2', image: 'img', cpus: 1, memoryMib: 512, network: { mode: 'host-only' } }, 'test');
    // Between the plan (one host-only address free) and the placement's transaction, the stopped
    // VM's change to host-only commits and takes that address: played at the transaction's start
    // (the leader's fence) with what VmService.update writes.
    const { scheduler: racing, raced } = racingScheduler(async (tx) => {
      await tx.$executeRawUnsafe('UPDATE "Worker" SET "networkVersion" = "networkVersion" + 1 WHERE "id" = ?', w.id);
      await tx.$executeRawUnsafe('UPDATE "Allocation" SET "networkMode" = ? WHERE "vmId" = ?', 'host-only', st.id);
      await tx.$executeRawUnsafe('UPDATE "Vm" SET "networkMode" = ? WHERE "id" = ?', 'host-only', st.id);
    });
    expect(await racing.passOnce()).toBe(0);
    expect(raced()).toBe(true);
    expect((await row(wants.id)).state).toBe('pending');
    expect(await db.allocation.count({ where: { workerId: w.id, networkMode: 'host-only' } })).toBe(2);
    // The next pass reads the worker again and says why the VM waits.
    expect(await racing.passOnce()).toBe(0);
    expect((await row(wants.id)).reason).toBe('waiting for a VM address: the only matching worker (w1) has no free VM address (2 of 2 in its host-only subnet in use)');
  });

  describe.skipIf(findPostgresBin() === undefined)('on PostgreSQL (concurrent transactions on several connections)', () => {
    const pg = scratchPostgresForSuite();
    let databases = 0;
    beforeEach(async () => {
      await db.$disconnect(); // the SQLite database of the outer beforeEach
      const url = await pg.createDatabase(`vm_network_${++databases}`);
      await migrateDatabase(url);
      db = openDatabase({ url, poolSize: 4 });
      await services();
    });

    it('three stopped VMs asking for one MAC on their worker at the same moment: exactly one gets it', async () => {
      const w = await worker('w1');
      for (const name of ['p1', 'p2', 'p3']) await stoppedOn(w, name);
      const mac = '02:00:00:00:00:34';
      const results = await Promise.allSettled(['p1', 'p2', 'p3'].map((name) => vms.update(name, { mac }, 'test')));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ statusCode: 409, message: expect.stringMatching(/is already used by vm "p[123]" on worker w1/) });
      expect(await db.allocation.count({ where: { workerId: w.id, mac } })).toBe(1);
    }, 60_000);

    it('a stopped VM\'s change to host-only that commits while a scheduler pass is planning: the pass leaves the last address alone', async () => {
      const w = await worker('w1'); // host-only: 2 addresses
      await vms.create({ name: 'h1', image: 'img', cpus: 1, memoryMib: 512, network: { mode: 'host-only' } }, 'test');
      await scheduler.passOnce();
      await stoppedOn(w, 'st');
      const wants = await vms.create({ name: 'h2', image: 'img', cpus: 1, memoryMib: 512, network: { mode: 'host-only' } }, 'test');
      // The real update, on another connection, committed after the plan and before the
      // placement's transaction takes the worker's network lock.
      const { scheduler: racing, raced } = racingScheduler(() => vms.update('st', { network: { mode: 'host-only' } }, 'test'));
      expect(await racing.passOnce()).toBe(0);
      expect(raced()).toBe(true);
      expect((await vms.get('st')).networkMode).toBe('host-only');
      expect((await row(wants.id)).state).toBe('pending');
      expect(await db.allocation.count({ where: { workerId: w.id, networkMode: 'host-only' } })).toBe(2);
    }, 60_000);
  });
});

describe('placement and worker reports', () => {
  it('places a VM with an allocation, follows reports, and frees the slot only on GONE', async () => {
    const w = await onlineWorker('mac-1');
    const vm = await vms.create({ name: 'a', image: 'img', cpus: 2, memoryMib: 2048 }, 'test');
    expect(await scheduler.passOnce()).toBe(1);
    let row = await db.vm.findUniqueOrThrow({ where: { id: vm.id } });
    expect(row).toMatchObject({ state: 'scheduled', workerId: w.id, attempt: 1 });
    expect(await db.allocation.count({ where: { workerId: w.id } })).toBe(1);

    await vms.applyWorkerReports(w.id, w.name, [report(vm.id, 1, 'VM_PHASE_RUNNING', { ip: '192.168.64.5' })]);
    row = await db.vm.findUniqueOrThrow({ where: { id: vm.id } });
    expect(row).toMatchObject({ state: 'running', ip: '192.168.64.5', observedGeneration: 1 });

    // A report about an older attempt changes nothing.
    await vms.applyWorkerReports(w.id, w.name, [report(vm.id, 0, 'VM_PHASE_FAILED', { message: 'stale' })]);
    expect((await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).state).toBe('running');

    // Delete: the VM waits for the worker, keeps its slot, then disappears on GONE.
    expect(await vms.delete('a', 'test')).toMatchObject({ state: 'deleting' });
    expect(await db.allocation.count()).toBe(1);
    await vms.applyWorkerReports(w.id, w.name, [report(vm.id, 1, 'VM_PHASE_GONE')]);
    expect(await db.vm.findUnique({ where: { id: vm.id } })).toBeNull();
    expect(await db.allocation.count()).toBe(0);
    const kinds = (await db.event.findMany({ where: { vmId: vm.id }, orderBy: { id: 'asc' } })).map((e) => e.kind);
    expect(kinds).toEqual(['vm.created', 'vm.state', 'vm.state', 'vm.state', 'vm.deleted']);
  });

  it('a worker cannot change a VM that is not assigned to it', async () => {
    const a = await onlineWorker('mac-a');
    const b = await onlineWorker('mac-b');
    const vm = await vms.create({ name: 'mine', image: 'img', cpus: 1, memoryMib: 512 }, 'test');
    await scheduler.passOnce();
    const owner = (await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).workerId;
    const other = owner === a.id ? b : a;
    await vms.applyWorkerReports(other.id, other.name, [report(vm.id, 1, 'VM_PHASE_FAILED'), report(vm.id, 1, 'VM_PHASE_GONE')]);
    expect((await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).state).toBe('scheduled');
    expect(await db.allocation.count()).toBe(1);
  });

  it('deleting a VM its worker was never sent (by any controller) finishes at once; once sent, it waits for the worker', async () => {
    await onlineWorker('mac-1');
    await vms.create({ name: 'quick', image: 'img', cpus: 1, memoryMib: 512 }, 'test');
    await vms.create({ name: 'sent', image: 'img', cpus: 1, memoryMib: 512 }, 'test');
    await scheduler.passOnce();
    const sent = await db.vm.findUniqueOrThrow({ where: { name: 'sent' } });
    // What the controller holding the stream records before it pushes.
    await db.allocation.updateMany({ where: { vmId: sent.id }, data: { deliveredAt: new Date() } });
    expect(await vms.delete('quick', 'test')).toBeNull();
    expect(await vms.delete('sent', 'test')).toMatchObject({ state: 'deleting' });
    expect((await db.allocation.findMany()).map((a) => a.vmId)).toEqual([sent.id]);
  });

  it('an update that only sets the password still moves the version and keeps the state', async () => {
    const vm = await vms.create({ name: 'pw', image: 'img', cpus: 1, memoryMib: 512 }, 'test');
    const updated = await vms.update('pw', { password: 'correct horse battery' }, 'test');
    expect(updated.state).toBe('pending');
    expect(updated.updatedAt.getTime()).toBeGreaterThanOrEqual(vm.updatedAt.getTime());
    const row = await db.vmAccess.findUniqueOrThrow({ where: { vmId: vm.id } });
    expect(row.password).toBeNull();
    expect(row.passwordSealed).not.toContain('horse');
    expect(await secrets.passwordOf(row)).toBe('correct horse battery');
  });

  it('a delete racing a placement never leaves a slot held for a VM that is gone', async () => {
    await onlineWorker('mac-1');
    for (let i = 0; i < 20; i++) await vms.create({ name: `race-${i}`, image: 'img', cpus: 1, memoryMib: 256 }, 'test');
    // Deletes and a scheduler pass interleaved (one process, so at every await).
    await Promise.all([scheduler.passOnce(), ...Array.from({ length: 20 }, (_, i) => vms.delete(`race-${i}`, 'test'))]);
    const left = await db.vm.findMany();
    const allocations = await db.allocation.findMany();
    for (const a of allocations) expect(left.some((v) => v.id === a.vmId)).toBe(true);
    // What is left is either deleting (sent: waits for the worker) or was never placed.
    for (const v of left) expect(v.state).toBe('deleting');
  });

  it('on-failure VMs fail, back off, and return to pending with a new attempt while the old slot stays held', async () => {
    const w = await onlineWorker('mac-1');
    const vm = await vms.create({ name: 'r', image: 'img', cpus: 1, memoryMib: 512, restartPolicy: 'on-failure' }, 'test');
    await scheduler.passOnce();
    await vms.applyWorkerReports(w.id, w.name, [report(vm.id, 1, 'VM_PHASE_FAILED', { message: 'kernel panic' })]);
    const failed = await db.vm.findUniqueOrThrow({ where: { id: vm.id } });
    expect(failed).toMatchObject({ state: 'failed', reason: 'kernel panic' });
    expect(failed.restartAt!.getTime() - Date.now()).toBeGreaterThan(4000);
    expect(await vms.requeueRestarts()).toBe(0); // backoff not over yet
    await db.vm.update({ where: { id: vm.id }, data: { restartAt: new Date(Date.now() - 1) } });
    expect(await vms.requeueRestarts()).toBe(1);
    expect(await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).toMatchObject({ state: 'pending', workerId: null, restartCount: 1 });
    expect(await db.allocation.count()).toBe(1); // attempt 1 is still held until the worker says GONE
    await scheduler.passOnce();
    expect(await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).toMatchObject({ state: 'scheduled', attempt: 2 });
    await vms.applyWorkerReports(w.id, w.name, [report(vm.id, 1, 'VM_PHASE_GONE')]);
    expect(await db.allocation.findMany()).toEqual([expect.objectContaining({ attempt: 2 })]);
  });

  it('an operator restarts a failed VM (restart policy never) by asking it to run; it gets a new attempt', async () => {
    const w = await onlineWorker('mac-1');
    const vm = await vms.create({ name: 'n', image: 'img', cpus: 1, memoryMib: 512 }, 'test');
    await scheduler.passOnce();
    await vms.applyWorkerReports(w.id, w.name, [report(vm.id, 1, 'VM_PHASE_FAILED', { message: 'the VM host process died' })]);
    expect(await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).toMatchObject({ state: 'failed', restartAt: null });
    await vms.update('n', { powerState: 'running' }, 'token:ops');
    expect(await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).toMatchObject({ state: 'pending', workerId: null, restartCount: 1, reason: 'restart requested by token:ops: waiting for the scheduler' });
    expect((await db.event.findMany({ where: { kind: 'vm.restart' } })).map((e) => e.message)).toEqual(['failed → pending (restart requested by token:ops)']);
    await scheduler.passOnce();
    expect(await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).toMatchObject({ state: 'scheduled', attempt: 2 });
    // A running VM asked to run again is left alone.
    await vms.update('n', { powerState: 'running' }, 'token:ops');
    expect(await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).toMatchObject({ state: 'scheduled', attempt: 2, restartCount: 1 });
  });

  it('a reconnecting worker frees what it no longer holds and its lost VMs fail', async () => {
    const w = await onlineWorker('mac-1');
    const kept = await vms.create({ name: 'kept', image: 'img', cpus: 1, memoryMib: 512 }, 'test');
    const lost = await vms.create({ name: 'lost', image: 'img', cpus: 1, memoryMib: 512 }, 'test');
    await scheduler.passOnce();
    await vms.applyWorkerReports(w.id, w.name, [report(kept.id, 1, 'VM_PHASE_RUNNING'), report(lost.id, 1, 'VM_PHASE_RUNNING')]);
    await vms.reconcileInventory(w.id, w.name, [report(kept.id, 1, 'VM_PHASE_RUNNING')]);
    expect((await db.vm.findUniqueOrThrow({ where: { id: kept.id } })).state).toBe('running');
    expect(await db.vm.findUniqueOrThrow({ where: { id: lost.id } })).toMatchObject({ state: 'failed', reason: expect.stringMatching(/instance lost/) });
    expect((await db.allocation.findMany()).map((a) => a.vmId)).toEqual([kept.id]);
  });
});

describe('worker liveness', () => {
  it('a silent worker: its VMs turn unknown, then (reschedule) fail at lostAfter keeping their slots until the worker confirms', async () => {
    const w = await onlineWorker('mac-1');
    const vm = await vms.create({ name: 'x', image: 'img', cpus: 1, memoryMib: 512 }, 'test');
    await scheduler.passOnce();
    await vms.applyWorkerReports(w.id, w.name, [report(vm.id, 1, 'VM_PHASE_RUNNING')]);
    await workers.liveness.tick(Date.now() + 100);
    expect((await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).state).toBe('running');
    await workers.liveness.tick(Date.now() + 500); // past suspectAfter (250 ms here)
    expect(await isOnline(w.id)).toBe(true);
    expect(await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).toMatchObject({ state: 'unknown', attempt: 1, reason: expect.stringMatching(/unreachable/) });
    expect(await scheduler.passOnce()).toBe(0); // nothing is re-placed while unknown
    await workers.liveness.tick(Date.now() + 1500); // past lostAfter
    expect(await isOnline(w.id)).toBe(false);
    expect((await db.worker.findUniqueOrThrow({ where: { id: w.id } })).status).toBe('offline');
    expect(await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).toMatchObject({ state: 'failed', reason: expect.stringMatching(/lost .*lease ran out/) });
    expect(await db.allocation.count()).toBe(1);
  });

  it('disconnect policy wait: the VM stays unknown through lostAfter, is never re-placed, and continues when the worker returns', async () => {
    const w = await onlineWorker('mac-1');
    await onlineWorker('mac-2');
    const vm = await vms.create({ name: 'w', image: 'img', cpus: 1, memoryMib: 512, restartPolicy: 'on-failure', disconnectPolicy: 'wait' }, 'test');
    await scheduler.passOnce();
    const placed = await db.vm.findUniqueOrThrow({ where: { id: vm.id } });
    const home = placed.workerId === w.id ? w : await db.worker.findUniqueOrThrow({ where: { id: placed.workerId! } });
    await vms.applyWorkerReports(home.id, home.name, [report(vm.id, 1, 'VM_PHASE_RUNNING')]);
    const runningSince = (await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).runningAt;
    expect(runningSince).not.toBeNull();
    // Only its worker falls silent: keep the other one fresh.
    const other = home.id === w.id ? (await db.worker.findFirstOrThrow({ where: { name: 'mac-2' } })).id : w.id;
    for (const t of [500, 1500, 5000]) {
      await workers.onHeartbeat(other);
      await workers.liveness.tick(Date.now() + t);
    }
    expect(await isOnline(home.id)).toBe(false);
    expect(await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).toMatchObject({ state: 'unknown', attempt: 1, workerId: home.id, reason: expect.stringMatching(/disconnect policy wait/) });
    await vms.requeueRestarts();
    expect(await scheduler.passOnce()).toBe(0);
    expect(await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).toMatchObject({ attempt: 1, workerId: home.id });
    // The worker comes back with the VM still running: same attempt, running again, never stopped.
    await workers.onHello(home as never, HELLO);
    await vms.reconcileInventory(home.id, home.name, [report(vm.id, 1, 'VM_PHASE_RUNNING')]);
    expect(await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).toMatchObject({ state: 'running', attempt: 1, workerId: home.id, runningAt: runningSince });
  });

  it('deleting a worker whose VMs may still run there is refused unless forced', async () => {
    const w = await onlineWorker('mac-1');
    const vm = await vms.create({ name: 'z', image: 'img', cpus: 1, memoryMib: 512, disconnectPolicy: 'wait' }, 'test');
    await scheduler.passOnce();
    await vms.applyWorkerReports(w.id, w.name, [report(vm.id, 1, 'VM_PHASE_RUNNING')]);
    await expect(workers.delete('mac-1', 'test')).rejects.toMatchObject({ statusCode: 409, message: expect.stringMatching(/is connected: its VMs may still be running there/) });
    await workers.onDisconnect(w);
    await workers.liveness.tick(Date.now() + 1500); // lost; the wait VM stays unknown
    await expect(workers.delete('mac-1', 'test')).rejects.toMatchObject({ statusCode: 409, message: expect.stringMatching(/1 VM in state unknown \(disconnect policy wait\)/) });
    await workers.delete('mac-1', 'test', { force: true });
    expect(await db.worker.count()).toBe(0);
    expect((await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).state).toBe('failed');
  });

  it('a wait VM still scheduled when its worker is lost is not re-placed either (the worker may have started it)', async () => {
    const w = await onlineWorker('mac-1');
    const vm = await vms.create({ name: 's', image: 'img', cpus: 1, memoryMib: 512, restartPolicy: 'on-failure', disconnectPolicy: 'wait' }, 'test');
    await scheduler.passOnce();
    expect((await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).state).toBe('scheduled');
    await workers.liveness.tick(Date.now() + 1500);
    expect(await isOnline(w.id)).toBe(false);
    expect(await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).toMatchObject({ state: 'unknown', attempt: 1, workerId: w.id });
    await vms.requeueRestarts();
    expect(await scheduler.passOnce()).toBe(0);
  });

  it('a liveness write that fails (disk full) is retried by the next tick: the worker is not forgotten half-lost', async () => {
    const w = await onlineWorker('mac-1');
    const vm = await vms.create({ name: 'y', image: 'img', cpus: 1, memoryMib: 512 }, 'test');
    await scheduler.passOnce();
    await vms.applyWorkerReports(w.id, w.name, [report(vm.id, 1, 'VM_PHASE_RUNNING')]);
    const real = vms.handleLostWorker.bind(vms);
    let failures = 2;
    vms.handleLostWorker = async (...args) => {
      if (failures-- > 0) throw new Error('SQLITE_FULL: database or disk is full');
      return real(...args);
    };
    await workers.liveness.tick(Date.now() + 1500);
    await workers.liveness.tick(Date.now() + 1600);
    expect(await isOnline(w.id)).toBe(true); // not recorded as lost: the write did not commit
    await workers.liveness.tick(Date.now() + 1700);
    expect(await isOnline(w.id)).toBe(false);
    expect((await db.vm.findUniqueOrThrow({ where: { id: vm.id } })).state).toBe('failed');
  });

  it('after a controller restart, workers that were online get the reconnect grace before their VMs fail', async () => {
    const w = await onlineWorker('mac-1');
    await services(1000, 5000); // a "restarted" controller on the same database
    await workers.liveness.tick(Date.now() + 3000);
    expect(await isOnline(w.id)).toBe(true);
    await workers.liveness.tick(Date.now() + 6500);
    expect(await isOnline(w.id)).toBe(false);
  });
});
