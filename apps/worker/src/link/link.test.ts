// The Connect stream against a fake controller (real grpc-js server, insecure transport
// injected through startWorker's `credentials`).
import * as grpc from '@grpc/grpc-js';
import { PowerState, PROTOCOL_VERSION, VmPhase, type VmAssignment, type VmStatus__Output } from '@fleet/proto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../logger.ts';
import { WORKER_VERSION } from '../version.ts';
import { startWorker, type StartWorkerOptions, type WorkerHandle } from '../worker.ts';
import { startFakeController, type FakeController, type FakeStream } from './fake-controller.test-helper.ts';
import { ControllerLink, type LeaseEvent } from './link.ts';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function controller(onConnect?: (s: FakeStream) => void): Promise<FakeController> {
  const fake = await startFakeController(onConnect ? { onConnect } : {});
  cleanups.push(() => fake.close());
  return fake;
}

async function worker(fake: { address: string }, extra: Partial<StartWorkerOptions> = {}): Promise<WorkerHandle> {
  const handle = await startWorker({
    credentials: grpc.credentials.createInsecure(),
    controller: fake.address,
    name: 'w1',
    machineId: 'machine-1',
    hostname: 'host-1',
    labels: { pool: 'ci', arch: 'arm64' },
    capacity: { cpus: 4, memoryMib: 8192, vmSlots: 6, macosSlots: 2 },
    synthetic: { speed: 0 },
    logger: silentLogger(),
    statusFlushMs: 20,
    backoff: { initialMs: 20, maxMs: 100 },
    ...extra,
  });
  cleanups.push(() => handle.stop());
  return handle;
}

const vm = (vmId: string, attempt = 1, image = 'ubuntu', disconnectPolicy = ''): VmAssignment => ({
  disconnectPolicy,
  vmId,
  name: `vm-${vmId}`,
  attempt,
  generation: '1',
  desiredPower: PowerState.POWER_STATE_RUNNING,
  spec: { image, os: 'linux', cpus: 1, memoryMib: 1024, diskGib: 10, labels: {}, username: 'admin', driver: '' },
});

/** Latest reported status per vmId#attempt across all vmStatus reports of a stream. */
function reported(stream: FakeStream): Map<string, VmStatus__Output> {
  const latest = new Map<string, VmStatus__Output>();
  for (const report of stream.all('vmStatus')) for (const s of report.vms) latest.set(`${s.vmId}#${s.attempt}`, s);
  return latest;
}

async function until(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('controller link', () => {
  it('opens with a Hello describing identity, platform, capacity, labels, drivers and instances', async () => {
    const fake = await controller();
    await worker(fake);
    const hello = await (await fake.stream(0)).hello();
    expect(hello).toMatchObject({
      protocolVersion: PROTOCOL_VERSION,
      workerVersion: WORKER_VERSION,
      hostname: 'host-1',
      machineId: 'machine-1',
      platform: { os: process.platform, arch: process.arch === 'x64' ? 'amd64' : process.arch },
      capacity: { cpus: 4, memoryMib: '8192', vmSlots: 6, macosSlots: 2 },
      labels: { pool: 'ci', arch: 'arm64' },
      drivers: ['synthetic'],
      vms: [],
    });
  });

  it('sends heartbeats at the interval from Welcome and answers pings with the same nonce', async () => {
    const fake = await controller((s) => s.welcome(40));
    const w = await worker(fake);
    const stream = await fake.stream(0);
    await until(() => stream.all('heartbeat').length >= 3);
    const beats = stream.all('heartbeat');
    expect(Number(beats[0]!.sentAtUnixMs)).toBeGreaterThan(Date.now() - 10_000);
    expect(beats[0]!.runningVms).toBe(0);
    expect(w.connected()).toBe(true);
    stream.send({ ping: { nonce: '18446744073709551615', sentAtUnixMs: String(Date.now()) } });
    const pong = await stream.next((m) => m.payload === 'pong');
    expect(pong.pong!.nonce).toBe('18446744073709551615');
  });

  it('runs the desired state and reports coalesced statuses; ignores older revisions and payload-less messages', async () => {
    const fake = await controller((s) => s.welcome());
    const w = await worker(fake);
    const stream = await fake.stream(0);
    await stream.hello();
    stream.send({ desiredState: { revision: '5', vms: [vm('a'), vm('b')] } });
    await until(() => reported(stream).get('a#1')?.phase === VmPhase.VM_PHASE_RUNNING && reported(stream).get('b#1')?.phase === VmPhase.VM_PHASE_RUNNING);
    const a = reported(stream).get('a#1')!;
    expect(a.ip).toMatch(/^198\.1[89]\./);
    expect(a.observedGeneration).toBe('1');
    // both VMs went STARTING → RUNNING at once: coalesced into few reports, not one per change
    expect(stream.all('vmStatus').length).toBeLessThanOrEqual(3);

    stream.send({}); // a newer controller's message this worker does not understand
    stream.send({ desiredState: { revision: '4', vms: [] } }); // stale: must not delete anything
    stream.send({ ping: { nonce: '7', sentAtUnixMs: '0' } });
    await stream.next((m) => m.payload === 'pong');
    await w.idle();
    expect(w.instances().map((s) => s.vmId).sort()).toEqual(['a', 'b']);

    stream.send({ desiredState: { revision: '6', vms: [vm('b')] } });
    await until(() => reported(stream).get('a#1')?.phase === VmPhase.VM_PHASE_GONE);
    expect(w.instances().map((s) => s.vmId)).toEqual(['b']);
  });

  it('reconnects after the controller drops the stream and resyncs everything in a new Hello', async () => {
    const fake = await controller((s) => s.welcome());
    const w = await worker(fake);
    const first = await fake.stream(0);
    await first.hello();
    first.send({ desiredState: { revision: '1', vms: [vm('a'), vm('b', 3)] } });
    await until(() => w.instances().filter((s) => s.phase === VmPhase.VM_PHASE_RUNNING).length === 2);

    first.fail(grpc.status.UNAVAILABLE, 'controller restarting');
    const second = await fake.stream(1);
    const hello = await second.hello();
    expect(hello.vms.map((s) => `${s.vmId}#${s.attempt}:${s.phase}`).sort()).toEqual(['a#1:VM_PHASE_RUNNING', 'b#3:VM_PHASE_RUNNING']);
    // the new stream's revisions start over; the worker accepts them
    second.send({ desiredState: { revision: '1', vms: [vm('a')] } });
    await until(() => reported(second).get('b#3')?.phase === VmPhase.VM_PHASE_GONE);

    second.end(); // a clean end (status OK) is also just a reason to reconnect
    const third = await fake.stream(2);
    expect((await third.hello()).vms.map((s) => s.vmId)).toEqual(['a']);
    expect(w.streamsOpened()).toBe(3);
  });

  it('keeps retrying with backoff while the controller answers UNAVAILABLE, then connects', async () => {
    const fake = await controller((s) => {
      if (fake.streams.length <= 3) s.fail(grpc.status.UNAVAILABLE, 'not ready');
      else s.welcome();
    });
    const w = await worker(fake);
    await until(() => w.connected());
    expect(fake.streams).toHaveLength(4);
  });

  it('keeps retrying while nothing listens, and stop() ends it cleanly', async () => {
    const gone = await startFakeController();
    const address = gone.address;
    await gone.close();
    const w = await worker({ address });
    await until(() => w.streamsOpened() >= 3);
    await w.stop();
    await expect(w.done).resolves.toEqual({ kind: 'stopped' });
  });

  it('reconnects when no Welcome arrives in time', async () => {
    const fake = await controller((s) => {
      if (fake.streams.length > 1) s.welcome();
    });
    const w = await worker(fake, { welcomeTimeoutMs: 100 });
    await until(() => w.connected());
    expect(fake.streams).toHaveLength(2);
  });

  for (const [code, reason] of [
    [grpc.status.UNAUTHENTICATED, 'credential-refused'],
    [grpc.status.PERMISSION_DENIED, 'credential-refused'],
    [grpc.status.FAILED_PRECONDITION, 'protocol-unsupported'],
  ] as const) {
    it(`exits for good on ${grpc.status[code]} without hammering the controller`, async () => {
      const fake = await controller((s) => s.fail(code, code === grpc.status.FAILED_PRECONDITION ? 'protocol 1 not in [2, 3]' : 'worker revoked'));
      const w = await worker(fake);
      const exit = await w.done;
      expect(exit).toMatchObject({ kind: 'fatal', reason, code });
      if (reason === 'credential-refused') expect(exit.kind === 'fatal' && exit.message).toMatch(/revoked or the worker was deleted: re-enroll with `fleet-worker enroll --force/);
      else expect(exit.kind === 'fatal' && exit.message).toMatch(/protocol 1 not in \[2, 3\]/);
      await new Promise((r) => setTimeout(r, 300));
      expect(fake.streams).toHaveLength(1);
    });
  }

  it('answers a SessionOpen with a Session stream on the same connection, and says why the VM cannot be reached (synthetic VMs: never)', async () => {
    const fake = await controller((s) => s.welcome());
    await worker(fake);
    const stream = await fake.stream(0);
    await stream.hello();
    stream.send({ sessionOpen: { sessionId: 's-1', vmId: 'a', kind: 'SESSION_KIND_EXEC', command: ['uname'], waitMs: 1000 } });
    await until(() => fake.sessions[0]?.frames.some((f) => f.payload === 'sessionError') === true, 10_000);
    expect(fake.sessions[0]!.id).toBe('s-1');
    const frames = fake.sessions[0]!.frames;
    // This worker runs the synthetic driver: its made-up VMs are never dialled (issue 16).
    expect(frames.at(-1)).toMatchObject({ payload: 'sessionError', sessionError: { code: 'not-supported' } });
  });

  it('reports a failed VM with its message and an event', async () => {
    const fake = await controller((s) => s.welcome());
    await worker(fake);
    const stream = await fake.stream(0);
    await stream.hello();
    stream.send({ desiredState: { revision: '1', vms: [vm('f', 1, 'synthetic:fail-start')] } });
    await until(() => reported(stream).get('f#1')?.phase === VmPhase.VM_PHASE_FAILED);
    expect(reported(stream).get('f#1')!.message).toMatch(/fail-start/);
    expect((await stream.next((m) => m.payload === 'event')).event).toMatchObject({ vmId: 'f', kind: 'vm.failed' });
  });
});

describe('leases (client-side fencing)', () => {
  /** A bare link on the fake controller with a clock the test moves. */
  async function bareLink(fake: FakeController): Promise<{ link: ControllerLink; leases: LeaseEvent[]; clock: { mono: number; wall: number } }> {
    const clock = { mono: 1000, wall: 1_800_000_000_000 };
    const leases: LeaseEvent[] = [];
    const link = new ControllerLink({
      address: fake.address,
      credentials: grpc.credentials.createInsecure(),
      logger: silentLogger(),
      backoff: { initialMs: 20, maxMs: 100 },
      clock: { monotonic: () => clock.mono, wall: () => clock.wall },
      handlers: { hello: () => ({ protocolVersion: PROTOCOL_VERSION, vms: [] }), onDesiredState: () => {}, runningVms: () => 0, onLease: (e) => leases.push(e) },
    });
    cleanups.push(() => link.stop());
    link.start();
    return { link, leases, clock };
  }

  it('numbers heartbeats, sends the first at Welcome, and renews only on the echo of a known seq', async () => {
    const fake = await controller();
    const { leases, clock } = await bareLink(fake);
    const stream = await fake.stream(0);
    await stream.hello();
    clock.mono = 1500; // the Hello went out at mono 1000
    stream.welcome(60_000, 8000);
    const first = (await stream.next((m) => m.payload === 'heartbeat')).heartbeat!;
    expect(first.seq).toBe('1');
    expect(first.sentAtUnixMs).toBe(String(clock.wall));
    await until(() => leases.length === 1);
    expect(leases[0]).toEqual({ kind: 'welcome', fenceAfterMs: 8000, helloSentAtMonoMs: 1000, helloSentAtUnixMs: 1_800_000_000_000 });

    // Desired state, pings and an echo of a seq never sent renew nothing.
    clock.mono = 2000;
    clock.wall += 1000;
    stream.send({ desiredState: { revision: '1', vms: [] } });
    stream.send({ ping: { nonce: '1', sentAtUnixMs: '0' } });
    stream.send({ lease: { heartbeatSeq: '99', fenceAfterMs: 8000 } });
    stream.send({ ping: { nonce: '2', sentAtUnixMs: '0' } });
    await stream.next((m) => m.payload === 'pong' && m.pong!.nonce === '2');
    expect(leases).toHaveLength(1);

    // The echo of seq 1: valid until that heartbeat's send time (mono 1500) + fence_after_ms,
    // however late the renewal arrives.
    stream.send({ lease: { heartbeatSeq: '1', fenceAfterMs: 8000 } });
    await until(() => leases.length === 2);
    expect(leases[1]).toEqual({ kind: 'renewal', seq: '1', fenceAfterMs: 8000, validUntilMonoMs: 1500 + 8000, validUntilUnixMs: 1_800_000_000_000 + 8000 });
    // fence_after_ms 0 in a renewal: Welcome's value applies.
    stream.send({ lease: { heartbeatSeq: '1', fenceAfterMs: 0 } });
    await until(() => leases.length === 3);
    expect(leases[2]).toMatchObject({ kind: 'renewal', fenceAfterMs: 8000, validUntilMonoMs: 9500 });
  });

  it('a renewal that announces a changed controller list hands it to the worker (and only then)', async () => {
    const fake = await controller();
    const announced: Array<{ list: readonly string[]; from: string }> = [];
    const link = new ControllerLink({
      address: fake.address,
      credentials: grpc.credentials.createInsecure(),
      logger: silentLogger(),
      backoff: { initialMs: 20, maxMs: 100 },
      handlers: { hello: () => ({ protocolVersion: PROTOCOL_VERSION, vms: [] }), onDesiredState: () => {}, runningVms: () => 0, onControllerAddresses: (list, from) => announced.push({ list, from }) },
    });
    cleanups.push(() => link.stop());
    link.start();
    const stream = await fake.stream(0);
    await stream.hello();
    stream.welcome(60_000, 8000);
    const beat = (await stream.next((m) => m.payload === 'heartbeat')).heartbeat!;
    stream.send({ lease: { heartbeatSeq: beat.seq, fenceAfterMs: 8000 } });
    stream.send({ lease: { heartbeatSeq: beat.seq, fenceAfterMs: 8000, controllerAddresses: ['10.0.0.1:7443', '10.0.0.2:7443'] } });
    await until(() => announced.length === 1);
    expect(announced[0]).toEqual({ list: ['10.0.0.1:7443', '10.0.0.2:7443'], from: fake.address });
  });

  it('matches renewals to heartbeats of the same stream only; seq keeps increasing across streams', async () => {
    const fake = await controller((s) => s.welcome(30));
    const { leases } = await bareLink(fake);
    const first = await fake.stream(0);
    await until(() => first.all('heartbeat').length >= 3);
    const seqs = first.all('heartbeat').map((h) => Number(h.seq));
    expect(seqs.slice(0, 3)).toEqual([1, 2, 3]);
    first.fail(grpc.status.UNAVAILABLE, 'controller restarting');
    const second = await fake.stream(1);
    const beat = (await second.next((m) => m.payload === 'heartbeat')).heartbeat!;
    expect(Number(beat.seq)).toBeGreaterThan(Math.max(...seqs));
    second.send({ lease: { heartbeatSeq: '1', fenceAfterMs: 5000 } }); // seq 1 went out on the first stream
    second.send({ lease: { heartbeatSeq: beat.seq, fenceAfterMs: 5000 } });
    await until(() => leases.some((l) => l.kind === 'renewal'));
    await new Promise((r) => setTimeout(r, 50));
    expect(leases.filter((l) => l.kind === 'renewal').map((l) => l.kind === 'renewal' && l.seq)).toEqual([beat.seq]);
  });

  it('a worker fences reschedule VMs when renewals stop, keeps wait VMs, and restarts them when renewals resume', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'fleet-fence-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    let answering = true;
    const fake = await controller((s) => {
      s.welcome(50, 400);
      s.call.on('data', (m: { payload?: string; heartbeat?: { seq: string } }) => {
        if (answering && m.payload === 'heartbeat') s.send({ lease: { heartbeatSeq: m.heartbeat!.seq, fenceAfterMs: 400 } });
      });
    });
    const w = await worker(fake, { dataDir, synthetic: { speed: 0, persist: false } });
    const stream = await fake.stream(0);
    await stream.hello();
    stream.send({ desiredState: { revision: '1', vms: [vm('r'), vm('w', 1, 'ubuntu', 'wait')] } });
    await until(() => reported(stream).get('r#1')?.phase === VmPhase.VM_PHASE_RUNNING && reported(stream).get('w#1')?.phase === VmPhase.VM_PHASE_RUNNING);
    const lease = JSON.parse(await readFile(path.join(dataDir, 'lease.json'), 'utf8')) as { validUntilUnixMs: number; fenceAfterMs: number };
    expect(lease.fenceAfterMs).toBe(400);
    expect(lease.validUntilUnixMs).toBeGreaterThan(Date.now());

    // The controller still sends (desired state, pings) but no longer hears us: no renewals. The
    // worker leaves such a stream after three heartbeats and reconnects (here to the same one,
    // which still renews nothing): the lease runs out all the same.
    answering = false;
    const cutAt = Date.now();
    stream.send({ desiredState: { revision: '2', vms: [vm('r'), vm('w', 1, 'ubuntu', 'wait')] } });
    const everywhere = () => {
      const all = new Map<string, VmStatus__Output>();
      for (const st of fake.streams) {
        for (const h of st.all('hello')) for (const v of h.vms ?? []) all.set(`${v.vmId}#${v.attempt}`, v);
        for (const [k, v] of reported(st)) all.set(k, v);
      }
      return all;
    };
    await until(() => everywhere().get('r#1')?.phase === VmPhase.VM_PHASE_STOPPED, 3000);
    expect(Date.now() - cutAt).toBeLessThan(1000);
    expect(fake.streams.length).toBeGreaterThan(1); // it left the stream that renewed nothing
    expect(w.instances().find((s) => s.vmId === 'r')?.message).toMatch(/^fenced: no lease from the controller for \d+s \(disconnect policy reschedule\)$/);
    expect(w.lease().expired).toBe(true);
    expect(w.instances().find((s) => s.vmId === 'w')?.phase).toBe(VmPhase.VM_PHASE_RUNNING);

    answering = true;
    await until(() => w.instances().find((s) => s.vmId === 'r')?.phase === VmPhase.VM_PHASE_RUNNING, 3000);
    expect(w.lease().expired).toBe(false);
  });

  it('an older controller (fence_after_ms 0) never fences', async () => {
    const fake = await controller((s) => s.welcome(30));
    const w = await worker(fake);
    const stream = await fake.stream(0);
    await stream.hello();
    stream.send({ desiredState: { revision: '1', vms: [vm('r')] } });
    await until(() => reported(stream).get('r#1')?.phase === VmPhase.VM_PHASE_RUNNING);
    await new Promise((r) => setTimeout(r, 200));
    expect(w.lease()).toMatchObject({ expired: false, fencing: false });
    expect(w.instances()[0]!.phase).toBe(VmPhase.VM_PHASE_RUNNING);
  });
});

