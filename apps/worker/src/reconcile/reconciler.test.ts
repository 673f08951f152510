import { PowerState, VmPhase, type DesiredState__Output, type VmAssignment__Output, type VmStatus, type WorkerEvent } from '@fleet/proto';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../logger.ts';
import { FakeDriver } from './fake-driver.test-helper.ts';
import type { PulledImage } from '../drivers/driver.ts';
import { Reconciler } from './reconciler.ts';

type Power = (typeof PowerState)[keyof typeof PowerState];

function vm(vmId: string, opts: { attempt?: number; generation?: number; power?: Power; image?: string; driver?: string; os?: string; disconnect?: string } = {}): VmAssignment__Output {
  return {
    disconnectPolicy: opts.disconnect ?? '',
    imagePull: null,
    vmId,
    name: `name-${vmId}`,
    attempt: opts.attempt ?? 1,
    generation: String(opts.generation ?? 1),
    desiredPower: opts.power ?? PowerState.POWER_STATE_RUNNING,
    spec: { image: opts.image ?? 'ubuntu', os: opts.os ?? 'linux', cpus: 1, memoryMib: '1024', diskGib: 10, labels: {}, username: 'admin', driver: opts.driver ?? '', authorizedKeys: [], mac: '', network: null },
  };
}

let revision = 0;
const desired = (...vms: VmAssignment__Output[]): DesiredState__Output => ({ revision: String(++revision), vms, imageOperations: [] });

interface Harness {
  driver: FakeDriver;
  reconciler: Reconciler;
  statuses: VmStatus[];
  events: WorkerEvent[];
  phases(vmId: string): string[];
  current(vmId: string): VmStatus | undefined;
}

const open: Reconciler[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()));
});

/** A lease the test flips (fencing/lease.ts LeaseKeeper in the worker). */
class TestLease {
  expired = false;
  silentMs = 0;
  noLeaseForMs(): number {
    return this.silentMs;
  }
}

/** An image cache whose pulls the test finishes by hand. */
class TestImages {
  readonly pulls: { reference: string; progress: (p: { bytesDone: number; bytesTotal: number }) => void; resolve: () => void; reject: (e: Error) => void }[] = [];
  released = 0;
  acquire(request: { reference: string }, onProgress?: (p: { bytesDone: number; bytesTotal: number }) => void): Promise<{ image: PulledImage; release: () => void }> {
    return new Promise((resolve, reject) => {
      this.pulls.push({
        reference: request.reference,
        progress: (p) => onProgress?.(p),
        resolve: () => resolve({ image: { digest: request.reference.split('@')[1]!, reference: request.reference, format: 'fleet-qemu', dir: '/cache/x', kernel: '/cache/x/kernel' }, release: () => this.released++ }),
        reject,
      });
    });
  }
}

const PINNED = `127.0.0.1:5000/fleet/guest@sha256:${'a'.repeat(64)}`;

async function harness(opts: { concurrency?: number; driver?: FakeDriver; lease?: TestLease; images?: TestImages } = {}): Promise<Harness> {
  const driver = opts.driver ?? new FakeDriver();
  const statuses: VmStatus[] = [];
  const events: WorkerEvent[] = [];
  const reconciler = new Reconciler({
    driver,
    logger: silentLogger(),
    onStatus: (s) => statuses.push(s),
    onEvent: (e) => events.push(e),
    ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
    ...(opts.lease ? { lease: opts.lease } : {}),
    ...(opts.images ? { images: opts.images } : {}),
  });
  open.push(reconciler);
  await reconciler.adopt();
  return {
    driver,
    reconciler,
    statuses,
    events,
    // phase transitions (consecutive reports of one phase, e.g. an IP arriving, collapse)
    phases: (vmId) =>
      statuses
        .filter((s) => s.vmId === vmId)
        .map((s) => `${s.attempt}:${String(s.phase).replace('VM_PHASE_', '')}`)
        .filter((p, i, all) => p !== all[i - 1]),
    current: (vmId) => reconciler.snapshot().find((s) => s.vmId === vmId),
  };
}

describe('Reconciler: registry images (issue 15)', () => {
  const pulling = (vmId: string, attempt = 1): VmAssignment__Output => ({ ...vm(vmId, { attempt }), imagePull: { reference: PINNED, access: { insecure: true, caPem: '', username: '', password: '' } } });

  it('pulls before creating, reports progress as STARTING "pulling … %", hands the pulled image to the driver and lets go of its pin', async () => {
    const images = new TestImages();
    const driver = Object.assign(new FakeDriver(), { imageFormats: ['fleet-qemu'] as const });
    const h = await harness({ driver, images });
    h.reconciler.setDesired(desired(pulling('p')));
    await waitFor(() => images.pulls.length === 1);
    images.pulls[0]!.progress({ bytesDone: 37, bytesTotal: 100 });
    await waitFor(() => h.statuses.some((s) => s.pull?.bytesDone === '37'));
    const during = h.statuses.filter((s) => s.vmId === 'p').at(-1)!;
    expect(during).toMatchObject({ phase: VmPhase.VM_PHASE_STARTING, message: `pulling image ${PINNED}: 37 %`, pull: { bytesDone: '37', bytesTotal: '100' } });
    expect(driver.opsFor('p')).toEqual([]);
    images.pulls[0]!.resolve();
    await h.reconciler.idle();
    expect(driver.opsFor('p')).toEqual(['create p#1', 'start p#1']);
    expect(driver.instances.get('p#1')!.spec.pulled).toMatchObject({ digest: `sha256:${'a'.repeat(64)}`, kernel: '/cache/x/kernel' });
    expect(images.released).toBe(1);
    expect(h.current('p')).toMatchObject({ phase: VmPhase.VM_PHASE_RUNNING, message: '' });
    expect(h.current('p')!.pull).toBeUndefined();
  });

  it('a failed pull fails the attempt with the cause, creates nothing, and tells the controller in an event', async () => {
    const images = new TestImages();
    const driver = Object.assign(new FakeDriver(), { imageFormats: ['fleet-qemu'] as const });
    const h = await harness({ driver, images });
    h.reconciler.setDesired(desired(pulling('f')));
    await waitFor(() => images.pulls.length === 1);
    images.pulls[0]!.reject(new Error('blob sha256:abc hashes to sha256:def (digest mismatch)'));
    await h.reconciler.idle();
    expect(driver.opsFor('f')).toEqual([]);
    expect(h.current('f')).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, message: 'image pull failed: blob sha256:abc hashes to sha256:def (digest mismatch)' });
    expect(h.events.map((e) => e.message)).toContain('attempt 1: image pull failed: blob sha256:abc hashes to sha256:def (digest mismatch)');
  });

  it('a VM withdrawn while its image is pulled is reported GONE at once (the pull is not waited for)', async () => {
    const images = new TestImages();
    const driver = Object.assign(new FakeDriver(), { imageFormats: ['fleet-qemu'] as const });
    const h = await harness({ driver, images });
    h.reconciler.setDesired(desired(pulling('w')));
    await waitFor(() => images.pulls.length === 1);
    h.reconciler.setDesired(desired());
    await h.reconciler.idle();
    expect(h.statuses.filter((s) => s.vmId === 'w').at(-1)).toMatchObject({ phase: VmPhase.VM_PHASE_GONE });
    expect(driver.opsFor('w')).toEqual([]);
    images.pulls[0]!.resolve();
    await waitFor(() => images.released === 1); // its pin is let go once the pull ends
  });

  it('a driver without registry images fails such a VM clearly', async () => {
    const h = await harness({ images: new TestImages() });
    h.reconciler.setDesired(desired(pulling('n')));
    await h.reconciler.idle();
    expect(h.current('n')).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, message: expect.stringContaining('cannot run registry images') });
  });
});

async function waitFor(check: () => boolean, timeoutMs = 2000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('Reconciler', () => {
  it('creates and starts a wanted VM, reporting STARTING then RUNNING with ip, mac and generation', async () => {
    const h = await harness();
    h.reconciler.setDesired(desired(vm('a', { generation: 3 })));
    await h.reconciler.idle();
    expect(h.driver.opsFor('a')).toEqual(['create a#1', 'start a#1']);
    expect(h.phases('a')).toEqual(['1:STARTING', '1:RUNNING']);
    expect(h.current('a')).toMatchObject({ phase: VmPhase.VM_PHASE_RUNNING, observedGeneration: '3', ip: expect.stringMatching(/^10\.0\.0\./), mac: '02:00:00:00:00:01' });
    expect(h.reconciler.runningCount()).toBe(1);
  });

  it('creates a VM stopped when its desired power is STOPPED', async () => {
    const h = await harness();
    h.reconciler.setDesired(desired(vm('s', { power: PowerState.POWER_STATE_STOPPED })));
    await h.reconciler.idle();
    expect(h.driver.opsFor('s')).toEqual(['create s#1']);
    expect(h.phases('s')).toEqual(['1:STOPPED']);
  });

  it('is idempotent: the same desired state again (or the safety net) changes nothing', async () => {
    const h = await harness();
    h.reconciler.setDesired(desired(vm('a'), vm('b')));
    await h.reconciler.idle();
    const ops = h.driver.ops.length;
    const statuses = h.statuses.length;
    h.reconciler.setDesired(desired(vm('a'), vm('b')));
    h.reconciler.reconcileAll();
    await h.reconciler.idle();
    expect(h.driver.ops.length).toBe(ops);
    expect(h.statuses.length).toBe(statuses);
  });

  it('replaces an instance when the attempt changes: old one stopped, removed and GONE first', async () => {
    const h = await harness();
    h.reconciler.setDesired(desired(vm('a', { attempt: 1 })));
    await h.reconciler.idle();
    h.reconciler.setDesired(desired(vm('a', { attempt: 2 })));
    await h.reconciler.idle();
    expect(h.driver.opsFor('a')).toEqual(['create a#1', 'start a#1', 'stop a#1', 'remove a#1', 'create a#2', 'start a#2']);
    expect(h.phases('a')).toEqual(['1:STARTING', '1:RUNNING', '1:STOPPING', '1:GONE', '2:STARTING', '2:RUNNING']);
    expect(h.reconciler.snapshot()).toEqual([expect.objectContaining({ vmId: 'a', attempt: 2 })]);
  });

  it('applies a newer generation by restarting with the new spec and reports observedGeneration', async () => {
    const h = await harness();
    h.reconciler.setDesired(desired(vm('a', { generation: 1 })));
    await h.reconciler.idle();
    h.reconciler.setDesired(desired(vm('a', { generation: 2, image: 'ubuntu-next' })));
    await h.reconciler.idle();
    expect(h.driver.opsFor('a')).toEqual(['create a#1', 'start a#1', 'stop a#1', 'update a#1', 'start a#1']);
    expect(h.driver.instances.get('a#1')!.spec.image).toBe('ubuntu-next');
    expect(h.current('a')).toMatchObject({ phase: VmPhase.VM_PHASE_RUNNING, observedGeneration: '2' });
    // an older generation never rolls back
    h.reconciler.setDesired(desired(vm('a', { generation: 1 })));
    await h.reconciler.idle();
    expect(h.driver.opsFor('a')).toHaveLength(5);
  });

  it('applies a newer generation to a stopped VM without starting it', async () => {
    const h = await harness();
    h.reconciler.setDesired(desired(vm('a', { power: PowerState.POWER_STATE_STOPPED })));
    await h.reconciler.idle();
    h.reconciler.setDesired(desired(vm('a', { generation: 5, power: PowerState.POWER_STATE_STOPPED })));
    await h.reconciler.idle();
    expect(h.driver.opsFor('a')).toEqual(['create a#1', 'update a#1']);
    expect(h.current('a')).toMatchObject({ phase: VmPhase.VM_PHASE_STOPPED, observedGeneration: '5' });
  });

  it('follows power changes: RUNNING → STOPPED stops, STOPPED → RUNNING starts', async () => {
    const h = await harness();
    h.reconciler.setDesired(desired(vm('a')));
    await h.reconciler.idle();
    h.reconciler.setDesired(desired(vm('a', { power: PowerState.POWER_STATE_STOPPED })));
    await h.reconciler.idle();
    expect(h.current('a')).toMatchObject({ phase: VmPhase.VM_PHASE_STOPPED, ip: '' });
    h.reconciler.setDesired(desired(vm('a')));
    await h.reconciler.idle();
    expect(h.driver.opsFor('a')).toEqual(['create a#1', 'start a#1', 'stop a#1', 'start a#1']);
    expect(h.phases('a')).toEqual(['1:STARTING', '1:RUNNING', '1:STOPPING', '1:STOPPED', '1:STARTING', '1:RUNNING']);
  });

  it('stops, removes, reports GONE and forgets VMs dropped from the desired set', async () => {
    const h = await harness();
    h.reconciler.setDesired(desired(vm('a'), vm('b')));
    await h.reconciler.idle();
    h.reconciler.setDesired(desired(vm('b')));
    await h.reconciler.idle();
    expect(h.driver.opsFor('a').slice(-2)).toEqual(['stop a#1', 'remove a#1']);
    expect(h.statuses.filter((s) => s.vmId === 'a').at(-1)).toMatchObject({ phase: VmPhase.VM_PHASE_GONE, attempt: 1 });
    expect(h.reconciler.snapshot().map((s) => s.vmId)).toEqual(['b']);
    expect(h.driver.instances.has('a#1')).toBe(false);
  });

  it('reports GONE for an assignment withdrawn before it was created (coalesced desired states)', async () => {
    const h = await harness({ concurrency: 1 });
    const release = h.driver.hold('create', 'busy'); // keeps the only slot busy
    h.reconciler.setDesired(desired(vm('busy')));
    h.reconciler.setDesired(desired(vm('busy'), vm('flash', { attempt: 3 }), vm('keep', { attempt: 1 })));
    h.reconciler.setDesired(desired(vm('busy'), vm('keep', { attempt: 2 }))); // flash withdrawn, keep#1 replaced, before either ran
    release();
    await h.reconciler.idle();
    expect(h.driver.opsFor('flash')).toEqual([]);
    expect(h.statuses.filter((s) => s.vmId === 'flash')).toEqual([expect.objectContaining({ attempt: 3, phase: VmPhase.VM_PHASE_GONE })]);
    expect(h.phases('keep')).toEqual(['1:GONE', '2:STARTING', '2:RUNNING']);
    expect(h.driver.opsFor('keep')).toEqual(['create keep#2', 'start keep#2']);
    // nothing is reported twice
    const count = h.statuses.length;
    h.reconciler.reconcileAll();
    await h.reconciler.idle();
    expect(h.statuses.length).toBe(count);
  });

  it('keeps a failed instance (FAILED + message, no retries) until the controller drops it', async () => {
    const h = await harness();
    h.driver.failNext('start', 'f', 'disk image is corrupt');
    h.reconciler.setDesired(desired(vm('f')));
    await h.reconciler.idle();
    expect(h.current('f')).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, message: 'start failed: disk image is corrupt' });
    expect(h.events).toEqual([expect.objectContaining({ vmId: 'f', kind: 'vm.failed', level: 'error' })]);
    // still wanted: the safety net and repeated desired states leave it alone
    h.reconciler.reconcileAll();
    h.reconciler.setDesired(desired(vm('f')));
    await h.reconciler.idle();
    expect(h.driver.opsFor('f')).toEqual(['create f#1', 'start f#1']);
    expect(h.current('f')?.phase).toBe(VmPhase.VM_PHASE_FAILED);
    // dropped → removed, GONE
    h.reconciler.setDesired(desired());
    await h.reconciler.idle();
    expect(h.driver.opsFor('f').slice(-1)).toEqual(['remove f#1']);
    expect(h.phases('f').at(-1)).toBe('1:GONE');
    expect(h.reconciler.snapshot()).toEqual([]);
  });

  it('replaces a failed instance when the controller moves to a new attempt (restart policy)', async () => {
    const h = await harness();
    h.driver.failNext('create', 'f', 'no space left');
    h.reconciler.setDesired(desired(vm('f', { attempt: 1 })));
    await h.reconciler.idle();
    expect(h.current('f')).toMatchObject({ attempt: 1, phase: VmPhase.VM_PHASE_FAILED, message: 'create failed: no space left' });
    h.reconciler.setDesired(desired(vm('f', { attempt: 2 })));
    await h.reconciler.idle();
    expect(h.phases('f')).toEqual(['1:STARTING', '1:FAILED', '1:GONE', '2:STARTING', '2:RUNNING']);
  });

  it('marks an instance FAILED when it crashes or powers off by itself', async () => {
    const h = await harness();
    h.reconciler.setDesired(desired(vm('c'), vm('d')));
    await h.reconciler.idle();
    h.driver.happen({ vmId: 'c', attempt: 1 }, 'failed', 'guest kernel panic');
    h.driver.happen({ vmId: 'd', attempt: 1 }, 'stopped');
    expect(h.current('c')).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, message: 'guest kernel panic', ip: '' });
    expect(h.current('d')).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, message: "VM stopped outside Fleet's control" });
    h.reconciler.reconcileAll();
    await h.reconciler.idle();
    expect(h.driver.opsFor('c')).toEqual(['create c#1', 'start c#1']); // not restarted: restart policy is the controller's
    expect(h.events.map((e) => e.vmId)).toEqual(['c', 'd']);
  });

  it('notices a crash of one instance while an operation runs on another attempt of the same VM', async () => {
    const driver = new FakeDriver();
    driver.seed({ vmId: 'a', attempt: 1, state: 'stopped' });
    driver.seed({ vmId: 'a', attempt: 2, state: 'running' });
    const h = await harness({ driver });
    const release = driver.hold('remove', 'a');
    h.reconciler.setDesired(desired(vm('a', { attempt: 2 })));
    await new Promise((r) => setTimeout(r, 10));
    expect(driver.ops).toEqual(['remove a#1']); // in flight
    driver.happen({ vmId: 'a', attempt: 2 }, 'failed', 'guest kernel panic');
    release();
    await h.reconciler.idle();
    expect(h.reconciler.snapshot()).toEqual([expect.objectContaining({ attempt: 2, phase: VmPhase.VM_PHASE_FAILED, message: 'guest kernel panic' })]);
  });

  it('reports GONE only after removal succeeded; a failed removal is retried', async () => {
    const h = await harness();
    h.reconciler.setDesired(desired(vm('r')));
    await h.reconciler.idle();
    h.driver.failNext('remove', 'r', 'device busy');
    h.reconciler.setDesired(desired());
    await h.reconciler.idle();
    expect(h.current('r')).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, message: 'remove failed (will retry): device busy' });
    expect(h.phases('r')).not.toContain('1:GONE');
    h.reconciler.reconcileAll();
    await h.reconciler.idle();
    expect(h.phases('r').at(-1)).toBe('1:GONE');
    expect(h.reconciler.snapshot()).toEqual([]);
  });

  it('never runs two operations on one VM at once: a delete waits for the start in flight', async () => {
    const h = await harness();
    const release = h.driver.hold('start', 'a');
    h.reconciler.setDesired(desired(vm('a')));
    await new Promise((r) => setTimeout(r, 10));
    expect(h.driver.opsFor('a')).toEqual(['create a#1', 'start a#1']);
    h.reconciler.setDesired(desired()); // delete while booting
    h.reconciler.setDesired(desired(vm('a', { attempt: 2 }))); // and a new attempt on top
    h.reconciler.reconcileAll();
    await new Promise((r) => setTimeout(r, 10));
    expect(h.driver.opsFor('a')).toEqual(['create a#1', 'start a#1']); // nothing overlapping
    release();
    await h.reconciler.idle();
    expect(h.driver.maxConcurrentPerVm).toBe(1);
    expect(h.driver.opsFor('a')).toEqual(['create a#1', 'start a#1', 'stop a#1', 'remove a#1', 'create a#2', 'start a#2']);
  });

  it('runs different VMs in parallel, bounded by the concurrency limit', async () => {
    const h = await harness({ concurrency: 3 });
    const releases = ['a', 'b', 'c', 'd', 'e'].map((id) => h.driver.hold('create', id));
    h.reconciler.setDesired(desired(vm('a'), vm('b'), vm('c'), vm('d'), vm('e')));
    await new Promise((r) => setTimeout(r, 10));
    expect(h.driver.ops.filter((o) => o.startsWith('create'))).toHaveLength(3);
    for (const release of releases) release();
    await h.reconciler.idle();
    expect(h.driver.maxConcurrentTotal).toBe(3);
    expect(h.reconciler.runningCount()).toBe(5);
  });

  it('re-attaches to existing instances and touches nothing before the first desired state', async () => {
    const driver = new FakeDriver();
    driver.seed({ vmId: 'old', attempt: 4, state: 'running', generation: '9' });
    driver.seed({ vmId: 'orphan', attempt: 1, state: 'stopped' });
    const h = await harness({ driver });
    expect(h.reconciler.snapshot()).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ vmId: 'old', attempt: 4, phase: VmPhase.VM_PHASE_RUNNING, observedGeneration: '9' }),
        expect.objectContaining({ vmId: 'orphan', attempt: 1, phase: VmPhase.VM_PHASE_STOPPED }),
      ]),
    );
    h.reconciler.reconcileAll();
    await h.reconciler.idle();
    expect(driver.ops).toEqual([]);
    // the controller still wants "old" (same attempt, generation): kept as is; the orphan goes
    h.reconciler.setDesired(desired(vm('old', { attempt: 4, generation: 9 })));
    await h.reconciler.idle();
    expect(driver.ops).toEqual(['remove orphan#1']);
    expect(h.phases('orphan')).toEqual(['1:GONE']);
  });

  it('removes leftovers of several attempts of one VM found at startup', async () => {
    const driver = new FakeDriver();
    driver.seed({ vmId: 'x', attempt: 1, state: 'stopped' });
    driver.seed({ vmId: 'x', attempt: 2, state: 'running' });
    const h = await harness({ driver });
    expect(h.reconciler.snapshot()).toHaveLength(2);
    h.reconciler.setDesired(desired(vm('x', { attempt: 2 })));
    await h.reconciler.idle();
    expect(driver.ops).toEqual(['remove x#1']);
    expect(h.reconciler.snapshot()).toEqual([expect.objectContaining({ vmId: 'x', attempt: 2, phase: VmPhase.VM_PHASE_RUNNING })]);
  });

  it('fails assignments this worker cannot run (other driver, unknown guest OS) without touching the driver', async () => {
    const h = await harness();
    h.reconciler.setDesired(desired(vm('q', { driver: 'qemu' }), vm('w', { os: 'windows' })));
    await h.reconciler.idle();
    expect(h.driver.ops).toEqual([]);
    expect(h.current('q')).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, message: expect.stringMatching(/driver "qemu" is not available on this worker/) });
    expect(h.current('w')).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, message: expect.stringMatching(/cannot run windows guests/) });
  });
});

describe('Reconciler fencing (client-side, issue 12)', () => {
  const FENCED = 'fenced: no lease from the controller for 31s (disconnect policy reschedule)';

  it('kills (forced, not stop) running reschedule instances when the lease expires and reports them STOPPED; wait instances are untouched', async () => {
    const lease = new TestLease();
    const h = await harness({ lease });
    h.reconciler.setDesired(desired(vm('r'), vm('x', { disconnect: 'reschedule' }), vm('w', { disconnect: 'wait' })));
    await h.reconciler.idle();
    expect(h.reconciler.runningCount()).toBe(3);

    lease.expired = true;
    lease.silentMs = 31_200;
    h.reconciler.leaseChanged();
    await h.reconciler.idle();
    for (const id of ['r', 'x']) {
      expect(h.driver.opsFor(id)).toEqual([`create ${id}#1`, `start ${id}#1`, `kill ${id}#1`]);
      expect(h.current(id)).toMatchObject({ phase: VmPhase.VM_PHASE_STOPPED, ip: '', message: FENCED });
      expect(h.phases(id)).toEqual(['1:STARTING', '1:RUNNING', '1:STOPPING', '1:STOPPED']);
    }
    expect(h.driver.instances.get('r#1')).toMatchObject({ state: 'stopped', message: FENCED }); // the driver got the reason
    expect(h.driver.opsFor('w')).toEqual(['create w#1', 'start w#1']);
    expect(h.current('w')?.phase).toBe(VmPhase.VM_PHASE_RUNNING);
    expect(h.events.filter((e) => e.kind === 'vm.fenced').map((e) => [e.vmId, e.level, e.message])).toEqual([
      ['r', 'warn', `attempt 1: ${FENCED}`],
      ['x', 'warn', `attempt 1: ${FENCED}`],
    ]);

    // Still expired: the safety net and new desired states start nothing of the reschedule kind.
    h.reconciler.reconcileAll();
    h.reconciler.setDesired(desired(vm('r'), vm('x', { disconnect: 'reschedule' }), vm('w', { disconnect: 'wait' })));
    await h.reconciler.idle();
    expect(h.driver.opsFor('r')).toHaveLength(3);
    expect(h.current('r')).toMatchObject({ phase: VmPhase.VM_PHASE_STOPPED, message: FENCED });
  });

  it('starts no reschedule instance while the lease is expired (created, held STOPPED), but does start wait instances', async () => {
    const lease = new TestLease();
    lease.expired = true;
    lease.silentMs = 31_000;
    const h = await harness({ lease });
    h.reconciler.setDesired(desired(vm('r'), vm('w', { disconnect: 'wait' })));
    await h.reconciler.idle();
    expect(h.driver.opsFor('r')).toEqual(['create r#1']);
    expect(h.phases('r')).toEqual(['1:STOPPED']); // never reported STARTING
    expect(h.current('r')).toMatchObject({ phase: VmPhase.VM_PHASE_STOPPED, message: FENCED });
    expect(h.driver.opsFor('w')).toEqual(['create w#1', 'start w#1']);
    expect(h.current('w')?.phase).toBe(VmPhase.VM_PHASE_RUNNING);
  });

  it('after a renewal the desired state decides: still wanted → started again; withdrawn → removed and GONE', async () => {
    const lease = new TestLease();
    const h = await harness({ lease });
    h.reconciler.setDesired(desired(vm('keep'), vm('moved')));
    await h.reconciler.idle();
    lease.expired = true;
    h.reconciler.leaseChanged();
    await h.reconciler.idle();
    expect(h.reconciler.runningCount()).toBe(0);

    // The controller re-placed "moved" elsewhere meanwhile: this worker's desired set drops it.
    h.reconciler.setDesired(desired(vm('keep')));
    await h.reconciler.idle();
    expect(h.phases('moved').at(-1)).toBe('1:GONE');
    expect(h.driver.opsFor('moved')).toEqual(['create moved#1', 'start moved#1', 'kill moved#1', 'remove moved#1']);
    expect(h.driver.opsFor('keep')).toEqual(['create keep#1', 'start keep#1', 'kill keep#1']);

    lease.expired = false;
    h.reconciler.leaseChanged();
    await h.reconciler.idle();
    expect(h.driver.opsFor('keep')).toEqual(['create keep#1', 'start keep#1', 'kill keep#1', 'start keep#1']);
    expect(h.current('keep')).toMatchObject({ phase: VmPhase.VM_PHASE_RUNNING, message: '' });
  });

  it('fences a start that was in flight when the lease ran out, once it finished', async () => {
    const lease = new TestLease();
    const h = await harness({ lease });
    const release = h.driver.hold('start', 'a');
    h.reconciler.setDesired(desired(vm('a')));
    await new Promise((r) => setTimeout(r, 10));
    lease.expired = true;
    h.reconciler.leaseChanged();
    release();
    await h.reconciler.idle();
    expect(h.driver.opsFor('a')).toEqual(['create a#1', 'start a#1', 'kill a#1']);
    expect(h.driver.maxConcurrentPerVm).toBe(1);
    expect(h.current('a')?.phase).toBe(VmPhase.VM_PHASE_STOPPED);
  });

  it('a restarted worker whose lease ran out fences adopted reschedule instances before any desired state', async () => {
    const driver = new FakeDriver();
    driver.seed({ vmId: 'r', attempt: 2, state: 'running' }); // no policy recorded: reschedule
    driver.seed({ vmId: 'w', attempt: 1, state: 'running', disconnectPolicy: 'wait' });
    const lease = new TestLease();
    lease.expired = true;
    const h = await harness({ driver, lease });
    await h.reconciler.idle();
    expect(driver.ops).toEqual(['kill r#2']);
    expect(h.current('r')).toMatchObject({ phase: VmPhase.VM_PHASE_STOPPED, message: expect.stringMatching(/^fenced: /) });
    expect(h.current('w')?.phase).toBe(VmPhase.VM_PHASE_RUNNING);
  });

  it('the assignment\'s current policy wins over the recorded one', async () => {
    const driver = new FakeDriver();
    driver.seed({ vmId: 'p', attempt: 1, state: 'running', disconnectPolicy: 'reschedule' });
    const lease = new TestLease();
    const h = await harness({ driver, lease });
    h.reconciler.setDesired(desired(vm('p', { disconnect: 'wait' })));
    await h.reconciler.idle();
    lease.expired = true;
    h.reconciler.leaseChanged();
    await h.reconciler.idle();
    expect(driver.ops).toEqual([]);
    expect(h.current('p')?.phase).toBe(VmPhase.VM_PHASE_RUNNING);
  });

  it('a VM its host process fenced is STOPPED with the host\'s message, not FAILED', async () => {
    const lease = new TestLease();
    const h = await harness({ lease });
    h.reconciler.setDesired(desired(vm('a'), vm('b')));
    await h.reconciler.idle();
    const hostMessage = 'fenced: no lease from the controller for 12s (lease ran out 2s ago; disconnect policy reschedule)';
    h.driver.happen({ vmId: 'a', attempt: 1 }, 'stopped', hostMessage); // the host saw the file before the worker's timer
    expect(h.current('a')).toMatchObject({ phase: VmPhase.VM_PHASE_STOPPED, message: hostMessage });
    // Without a fenced message, but with the worker's lease expired: also a fence, not a failure.
    lease.expired = true;
    h.driver.happen({ vmId: 'b', attempt: 1 }, 'stopped');
    expect(h.current('b')).toMatchObject({ phase: VmPhase.VM_PHASE_STOPPED, message: expect.stringMatching(/^fenced: /) });
    expect(h.events.filter((e) => e.kind === 'vm.failed')).toEqual([]);
    expect(h.events.filter((e) => e.kind === 'vm.fenced').map((e) => e.vmId)).toEqual(['a', 'b']);
  });

  it('a failed forced stop is reported FAILED with the cause', async () => {
    const lease = new TestLease();
    const h = await harness({ lease });
    h.reconciler.setDesired(desired(vm('a')));
    await h.reconciler.idle();
    h.driver.failNext('kill', 'a', 'control socket gone');
    lease.expired = true;
    h.reconciler.leaseChanged();
    await h.reconciler.idle();
    expect(h.current('a')).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, message: 'fencing failed: control socket gone' });
  });
});
