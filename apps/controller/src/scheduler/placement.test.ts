import { describe, expect, it } from 'vitest';
import { modeOf, offersMode, planPlacements, type PendingVmView, type PlanResult, type SchedulerProfile, type WorkerView } from './placement.ts';
import { planPlacementsNaive } from './reference.ts';

// ---------------------------------------------------------------- fixtures

type WorkerInit = Partial<Omit<WorkerView, 'capacity' | 'used'>> & {
  capacity?: Partial<WorkerView['capacity']>;
  used?: Partial<WorkerView['used']>;
};

function worker(name: string, init: WorkerInit = {}): WorkerView {
  const { capacity, used, ...rest } = init;
  return {
    id: `id-${name}`,
    name,
    online: true,
    paused: false,
    labels: {},
    drivers: ['synthetic'],
    os: 'linux',
    arch: 'arm64',
    ...rest,
    capacity: { cpus: 8, memoryMib: 16384, vmSlots: 4, macosSlots: 0, ...capacity },
    used: { cpus: 0, memoryMib: 0, vms: 0, macosVms: 0, ...used },
  };
}

function macHost(name: string, init: WorkerInit = {}): WorkerView {
  return worker(name, { os: 'darwin', drivers: ['vz', 'synthetic'], ...init, capacity: { vmSlots: 8, cpus: 16, memoryMib: 65536, macosSlots: 2, ...init.capacity } });
}

let clock = 1_000;
function vm(name: string, init: Partial<PendingVmView> = {}): PendingVmView {
  return {
    id: `vm-${name}`,
    name,
    priority: 0,
    createdAtMs: clock++,
    cpus: 2,
    memoryMib: 4096,
    os: 'linux',
    selector: {},
    driver: '',
    ...init,
  };
}

const where = (r: PlanResult, v: PendingVmView): string | undefined => r.placements.find((p) => p.vmId === v.id)?.workerId;
const countOn = (r: PlanResult, w: WorkerView): number => r.placements.filter((p) => p.workerId === w.id).length;
const reasonOf = (r: PlanResult, v: PendingVmView): string => {
  const reason = r.pending.get(v.id);
  if (reason === undefined) throw new Error(`${v.name} is not pending (placed on ${where(r, v)})`);
  return reason;
};
const many = (n: number, prefix: string, init: Partial<PendingVmView> = {}) => Array.from({ length: n }, (_, i) => vm(`${prefix}${i}`, init));

/** mulberry32: small, fast, seeded. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------- resources

describe('resources', () => {
  it('places a VM on a worker with room', () => {
    const w = worker('w1');
    const v = vm('a');
    const r = planPlacements([v], [w], 'pack');
    expect(r.placements).toEqual([{ vmId: v.id, workerId: w.id }]);
    expect(r.pending.size).toBe(0);
  });

  it('never exceeds free CPUs', () => {
    const w = worker('w1', { capacity: { cpus: 4, memoryMib: 1 << 20, vmSlots: 100 } });
    const vms = many(3, 'c', { cpus: 2 });
    const r = planPlacements(vms, [w], 'pack');
    expect(r.placements.map((p) => p.vmId)).toEqual([vms[0]!.id, vms[1]!.id]);
    expect(reasonOf(r, vms[2]!)).toContain('2 CPUs');
  });

  it('never exceeds free memory', () => {
    const w = worker('w1', { capacity: { cpus: 64, memoryMib: 10000, vmSlots: 100 } });
    const vms = many(3, 'm', { memoryMib: 4096 });
    const r = planPlacements(vms, [w], 'pack');
    expect(r.placements).toHaveLength(2);
    expect(reasonOf(r, vms[2]!)).toContain('4096 MiB');
  });

  it('never exceeds VM slots', () => {
    const w = worker('w1', { capacity: { cpus: 64, memoryMib: 1 << 20, vmSlots: 2 } });
    const vms = many(3, 's', { cpus: 1, memoryMib: 1 });
    const r = planPlacements(vms, [w], 'pack');
    expect(r.placements).toHaveLength(2);
    expect(reasonOf(r, vms[2]!)).toMatch(/0 VM slots free/);
  });

  it('counts what is already used (unreleased allocations)', () => {
    const w = worker('w1', { capacity: { cpus: 8, memoryMib: 16384, vmSlots: 4 }, used: { cpus: 6, memoryMib: 4096, vms: 1 } });
    const r = planPlacements(many(2, 'u', { cpus: 2, memoryMib: 1024 }), [w], 'pack');
    expect(r.placements).toHaveLength(1);
  });

  it('places nothing on an over-committed worker', () => {
    const w = worker('w1', { capacity: { cpus: 4, vmSlots: 2 }, used: { cpus: 6, vms: 3 } });
    const v = vm('o', { cpus: 0, memoryMib: 0 });
    const r = planPlacements([v], [w], 'pack');
    expect(r.placements).toHaveLength(0);
    expect(reasonOf(r, v)).toContain('waiting for capacity');
  });

  it('does not mutate the caller’s objects', () => {
    const workers = [worker('w1'), worker('w2', { labels: { a: 'b' } })];
    const vms = many(6, 'x');
    const before = structuredClone({ workers, vms });
    planPlacements(vms, workers, 'pack');
    planPlacements(vms, workers, 'spread');
    expect({ workers, vms }).toEqual(before);
  });

  it('rejects invalid requests with a reason instead of placing them', () => {
    const bad = vm('bad', { cpus: Number.NaN });
    const neg = vm('neg', { memoryMib: -1 });
    const ok = vm('ok');
    const r = planPlacements([bad, neg, ok], [worker('w1')], 'pack');
    expect(where(r, ok)).toBe('id-w1');
    expect(reasonOf(r, bad)).toContain('invalid resource request');
    expect(reasonOf(r, neg)).toContain('invalid resource request');
  });

  it('plans a VM listed twice once', () => {
    const v = vm('dup');
    const r = planPlacements([v, { ...v }], [worker('w1')], 'pack');
    expect(r.placements).toEqual([{ vmId: v.id, workerId: 'id-w1' }]);
    expect(r.pending.size).toBe(0);
  });
});

// ---------------------------------------------------------------- labels, drivers

describe('labels and selectors', () => {
  const eu = worker('eu-1', { labels: { region: 'eu', gpu: 'true', pool: 'ci' } });
  const us = worker('us-1', { labels: { region: 'us', gpu: 'true' } });
  const plain = worker('plain');

  it('requires every selector key=value', () => {
    const v = vm('sel', { selector: { region: 'eu', gpu: 'true' } });
    expect(where(planPlacements([v], [us, plain, eu], 'spread'), v)).toBe(eu.id);
    const w = vm('sel2', { selector: { region: 'us', gpu: 'true' } });
    expect(where(planPlacements([w], [us, plain, eu], 'spread'), w)).toBe(us.id);
  });

  it('a value mismatch is no match', () => {
    const v = vm('x', { selector: { region: 'EU' } });
    const r = planPlacements([v], [eu, us], 'pack');
    expect(r.placements).toHaveLength(0);
    expect(reasonOf(r, v)).toContain('region=EU');
  });

  it('a VM without a selector may use any worker', () => {
    const vms = many(3, 'any');
    const r = planPlacements(vms, [eu, us, plain], 'spread');
    expect(new Set(r.placements.map((p) => p.workerId))).toEqual(new Set([eu.id, us.id, plain.id]));
  });

  it('does not match inherited object properties', () => {
    const v = vm('proto', { selector: { constructor: 'x' } });
    expect(planPlacements([v], [plain], 'pack').placements).toHaveLength(0);
  });
});

describe('drivers', () => {
  const q = worker('q', { drivers: ['synthetic', 'qemu'] });
  const s = worker('s', { drivers: ['synthetic'] });
  const none = worker('none', { drivers: [] });

  it('a requested driver must be offered', () => {
    const v = vm('d', { driver: 'qemu' });
    expect(where(planPlacements([v], [s, q], 'pack'), v)).toBe(q.id);
  });

  it("'' takes any driver, but a worker must offer at least one", () => {
    const vms = many(8, 'e');
    const r = planPlacements(vms, [none, s], 'spread');
    expect(countOn(r, none)).toBe(0);
    expect(countOn(r, s)).toBe(4);
  });

  it('a worker offering no driver gets a specific reason', () => {
    const v = vm('nd');
    expect(reasonOf(planPlacements([v], [none], 'pack'), v)).toContain('offers any VM driver');
  });
});

// ---------------------------------------------------------------- macOS

describe('macOS slots', () => {
  it('a macOS host takes 2 macOS VMs, then only Linux VMs', () => {
    const mac = macHost('mac-1');
    const macs = many(3, 'mac', { os: 'macos' });
    const linux = many(3, 'lin');
    const r = planPlacements([...macs, ...linux], [mac], 'pack');
    expect(macs.filter((v) => where(r, v) === mac.id)).toHaveLength(2);
    expect(linux.every((v) => where(r, v) === mac.id)).toBe(true);
    expect(reasonOf(r, macs[2]!)).toBe('waiting for a macOS slot: the only matching worker (mac-1) has 2/2 macOS VMs running');
  });

  it('counts macOS VMs already running', () => {
    const mac = macHost('mac-1', { used: { vms: 1, macosVms: 1, cpus: 4, memoryMib: 8192 } });
    const r = planPlacements(many(2, 'm', { os: 'macos' }), [mac], 'pack');
    expect(r.placements).toHaveLength(1);
  });

  it('a macOS VM needs a VM slot as well', () => {
    const mac = macHost('mac-1', { capacity: { vmSlots: 2 } });
    const linux = many(2, 'l', { priority: 5 });
    const m = vm('m', { os: 'macos' });
    const r = planPlacements([m, ...linux], [mac], 'pack');
    expect(r.placements).toHaveLength(2);
    expect(reasonOf(r, m)).toContain('waiting for capacity');
    expect(reasonOf(r, m)).toContain('0 VM slots, 2 macOS slots free');
  });

  it('Linux hosts never get macOS VMs', () => {
    const m = vm('m', { os: 'macos' });
    const r = planPlacements([m], [worker('linux-1'), worker('linux-2')], 'pack');
    expect(r.placements).toHaveLength(0);
    expect(reasonOf(r, m)).toContain('no matching worker can run macOS VMs');
    expect(reasonOf(r, m)).toContain('2 matching workers have no macOS slots');
  });
});

// ---------------------------------------------------------------- ordering

describe('VM addresses (NAT pool)', () => {
  it('a worker with N addresses holds at most N VMs, even with VM slots to spare', () => {
    const w = worker('w1', { capacity: { vmSlots: 8, natAddresses: 3 } });
    const vms = many(5, 'a', { cpus: 1, memoryMib: 1024 });
    const r = planPlacements(vms, [w], 'pack');
    expect(countOn(r, w)).toBe(3);
    expect(r.pending.size).toBe(2);
  });

  it('counts every VM the worker holds, whatever its power state (used.vms: unreleased allocations)', () => {
    // 253 allocations on the worker: running, stopped, failed-but-not-yet-removed alike.
    const w = worker('w1', { capacity: { cpus: 1024, memoryMib: 1 << 22, vmSlots: 300, natAddresses: 253 }, used: { vms: 253 } });
    const v = vm('v', { cpus: 1, memoryMib: 512 });
    const r = planPlacements([v], [w], 'pack');
    expect(r.placements).toEqual([]);
    expect(reasonOf(r, v)).toBe('waiting for a VM address: the only matching worker (w1) has no free VM address (253 of 253 in its NAT subnet in use)');
    expect(where(planPlacements([v], [worker('w1', { ...w, used: { vms: 252 } })], 'pack'), v)).toBe(w.id);
  });

  it('0 (or absent) means not limited', () => {
    const w = worker('w1', { capacity: { cpus: 64, memoryMib: 1 << 20, vmSlots: 300, natAddresses: 0 }, used: { vms: 299 } });
    const v = vm('v', { cpus: 1, memoryMib: 512 });
    expect(where(planPlacements([v], [w], 'pack'), v)).toBe(w.id);
  });

  it('places on another worker when one is out of addresses', () => {
    const full = worker('a-full', { capacity: { natAddresses: 2 }, used: { vms: 2, cpus: 2, memoryMib: 2048 } });
    const other = worker('b-other', { capacity: { natAddresses: 253 } });
    const v = vm('v', { cpus: 1, memoryMib: 1024 });
    for (const profile of ['pack', 'spread'] as const) expect(where(planPlacements([v], [full, other], profile), v)).toBe(other.id);
  });

  it('an over-committed pool (the worker came back with a smaller one) takes nothing', () => {
    const w = worker('w1', { capacity: { vmSlots: 8, natAddresses: 2 }, used: { vms: 3 } });
    const v = vm('v', { cpus: 1, memoryMib: 1024 });
    const r = planPlacements([v], [w], 'pack');
    expect(reasonOf(r, v)).toBe('waiting for a VM address: the only matching worker (w1) has no free VM address (3 of 2 in its NAT subnet in use)');
  });

  it('pack counts free addresses as free slots: the worker with fewer left is the busier one', () => {
    const fewAddresses = worker('z-few', { capacity: { vmSlots: 4, natAddresses: 2 } }); // can take 2 more
    const idle = worker('a-idle', { capacity: { vmSlots: 3 } }); // can take 3 more
    const v = vm('v', { cpus: 1, memoryMib: 1024 });
    expect(where(planPlacements([v], [idle, fewAddresses], 'pack'), v)).toBe(fewAddresses.id);
    expect(where(planPlacements([v], [idle, fewAddresses], 'spread'), v)).toBe(idle.id);
  });
});

describe('priority and FIFO', () => {
  const one = () => worker('only', { capacity: { vmSlots: 1 } });

  it('higher priority wins a contested slot even when younger', () => {
    const old = vm('old', { priority: 0, createdAtMs: 1 });
    const urgent = vm('urgent', { priority: 10, createdAtMs: 99 });
    const r = planPlacements([old, urgent], [one()], 'pack');
    expect(where(r, urgent)).toBe('id-only');
    expect(r.pending.has(old.id)).toBe(true);
  });

  it('FIFO within a priority, then id', () => {
    const a = vm('a', { createdAtMs: 5 });
    const b = vm('b', { createdAtMs: 3 });
    expect(where(planPlacements([a, b], [one()], 'pack'), b)).toBe('id-only');
    const c = vm('c', { id: 'vm-2', createdAtMs: 7 });
    const d = vm('d', { id: 'vm-1', createdAtMs: 7 });
    expect(where(planPlacements([c, d], [one()], 'pack'), d)).toBe('id-only');
  });

  it('placements come out in queue order, whatever the input order', () => {
    const vms = [vm('p0', { priority: 0, createdAtMs: 1 }), vm('p2', { priority: 2, createdAtMs: 3 }), vm('p1', { priority: 1, createdAtMs: 2 }), vm('p2b', { priority: 2, createdAtMs: 4 })];
    const r = planPlacements(vms, [worker('w', { capacity: { vmSlots: 10, cpus: 100, memoryMib: 1 << 20 } })], 'pack');
    expect(r.placements.map((p) => p.vmId)).toEqual(['vm-p2', 'vm-p2b', 'vm-p1', 'vm-p0']);
  });
});

describe('backfill', () => {
  it('a VM that does not fit does not block smaller ones behind it', () => {
    const w = worker('w1', { capacity: { cpus: 4, memoryMib: 8192, vmSlots: 4 }, used: { cpus: 2 } });
    const big = vm('big', { priority: 9, cpus: 4 });
    const small = vm('small', { priority: 0, cpus: 2 });
    const r = planPlacements([big, small], [w], 'pack');
    expect(where(r, small)).toBe(w.id);
    expect(reasonOf(r, big)).toContain('waiting for capacity');
  });

  it('a VM that failed does not make a smaller one of the same group fail', () => {
    const w = worker('w1', { capacity: { cpus: 4, memoryMib: 8192, vmSlots: 4 } });
    const vms = [vm('a', { cpus: 3 }), vm('b', { cpus: 4 }), vm('c', { cpus: 1 }), vm('d', { cpus: 2 })];
    const r = planPlacements(vms, [w], 'pack');
    expect(r.placements.map((p) => p.vmId)).toEqual(['vm-a', 'vm-c']);
  });
});

// ---------------------------------------------------------------- profiles

describe('pack and spread', () => {
  const fleet = () => [worker('c'), worker('a'), worker('b')];

  it('pack fills one worker before the next (ties by name)', () => {
    const r = planPlacements(many(6, 'p'), fleet(), 'pack');
    expect(countOn(r, worker('a'))).toBe(4);
    expect(countOn(r, worker('b'))).toBe(2);
    expect(countOn(r, worker('c'))).toBe(0);
  });

  it('spread distributes evenly', () => {
    const r = planPlacements(many(6, 's'), fleet(), 'spread');
    expect([countOn(r, worker('a')), countOn(r, worker('b')), countOn(r, worker('c'))]).toEqual([2, 2, 2]);
  });

  it('pack prefers the busiest worker: fewest free slots, then least free memory', () => {
    const busySlots = worker('z-busy', { used: { vms: 2 } });
    const lessMem = worker('y-mem', { used: { vms: 2, memoryMib: 1024 } });
    const idle = worker('a-idle');
    const v = vm('v');
    expect(where(planPlacements([v], [idle, busySlots], 'pack'), v)).toBe(busySlots.id);
    expect(where(planPlacements([v], [idle, busySlots, lessMem], 'pack'), v)).toBe(lessMem.id);
  });

  it('spread prefers the least busy worker: most free slots, then most free memory', () => {
    const busy = worker('a-busy', { used: { vms: 2 } });
    const idle = worker('z-idle');
    const idleBig = worker('y-idle-big', { capacity: { memoryMib: 32768 } });
    const v = vm('v');
    expect(where(planPlacements([v], [busy, idle], 'spread'), v)).toBe(idle.id);
    expect(where(planPlacements([v], [busy, idle, idleBig], 'spread'), v)).toBe(idleBig.id);
  });

  it('pack skips a busier worker that cannot fit the VM', () => {
    const tight = worker('a-tight', { used: { vms: 3, cpus: 7 } });
    const roomy = worker('b-roomy', { used: { vms: 1 } });
    const v = vm('v', { cpus: 2 });
    expect(where(planPlacements([v], [tight, roomy], 'pack'), v)).toBe(roomy.id);
  });
});

describe('availability', () => {
  it('paused and offline workers take nothing', () => {
    const paused = worker('a-paused', { paused: true });
    const offline = worker('b-offline', { online: false });
    const ok = worker('c-ok', { capacity: { vmSlots: 1 } });
    const vms = many(3, 'v');
    const r = planPlacements(vms, [paused, offline, ok], 'spread');
    expect(r.placements).toEqual([{ vmId: vms[0]!.id, workerId: ok.id }]);
    expect(reasonOf(r, vms[1]!)).toContain('1 paused (draining), 1 offline');
  });
});

// ---------------------------------------------------------------- reasons

describe('pending reasons', () => {
  it('no workers enrolled', () => {
    const v = vm('v');
    expect(reasonOf(planPlacements([v], [], 'pack'), v)).toBe('no workers are enrolled');
  });

  it('no worker online', () => {
    const v = vm('v');
    const r = planPlacements([v], [1, 2, 3].map((i) => worker(`w${i}`, { online: false })), 'pack');
    expect(reasonOf(r, v)).toBe('no worker is online (3 enrolled, all offline)');
  });

  it('no worker matches the selector', () => {
    const v = vm('v', { selector: { region: 'eu', gpu: 'true' } });
    const workers = [1, 2, 3, 4, 5].map((i) => worker(`w${i}`, { labels: { region: 'eu' } }));
    expect(reasonOf(planPlacements([v], workers, 'pack'), v)).toBe('no worker matches selector gpu=true,region=eu (5 online)');
  });

  it('the only matching workers are offline', () => {
    const v = vm('v', { selector: { gpu: 'true' } });
    const r = planPlacements([v], [worker('g', { labels: { gpu: 'true' }, online: false }), worker('p')], 'pack');
    expect(reasonOf(r, v)).toBe('no online worker matches selector gpu=true (1 matching worker offline; 1 online)');
  });

  it('no worker offers the driver', () => {
    const v = vm('v', { driver: 'qemu' });
    const r = planPlacements([v], [worker('a', { drivers: ['synthetic', 'vz'] }), worker('b', { drivers: ['qemu'], online: false })], 'pack');
    const reason = reasonOf(r, v);
    expect(reason).toContain('no worker offers driver qemu');
    expect(reason).toContain('online workers offer synthetic, vz');
    expect(reason).toContain('1 offline worker does');
    const s = vm('s', { driver: 'qemu', selector: { pool: 'ci' } });
    expect(reasonOf(planPlacements([s], [worker('c', { labels: { pool: 'ci' } })], 'pack'), s)).toContain(
      'no worker matching selector pool=ci offers driver qemu',
    );
  });

  it('all matching workers paused', () => {
    const v = vm('v', { selector: { pool: 'ci' } });
    const workers = [worker('a', { labels: { pool: 'ci' }, paused: true }), worker('b', { labels: { pool: 'ci' }, paused: true }), worker('c')];
    expect(reasonOf(planPlacements([v], workers, 'pack'), v)).toBe('all 2 matching workers are paused (draining)');
    expect(reasonOf(planPlacements([v], workers.slice(1), 'pack'), v)).toBe('the only matching worker (b) is paused (draining)');
  });

  it('waiting for capacity names the request and the closest worker', () => {
    const workers = [
      worker('mac-1', { used: { cpus: 6, memoryMib: 12288, vms: 3 } }), // 2 CPUs, 4096 MiB, 1 slot free
      worker('mac-2', { used: { cpus: 7, memoryMib: 14336, vms: 3 } }), // 1 CPU, 2048 MiB, 1 slot free
      worker('mac-3', { used: { cpus: 8, memoryMib: 16384, vms: 4 } }), // nothing free
    ];
    const v = vm('v', { cpus: 4, memoryMib: 8192 });
    expect(reasonOf(planPlacements([v], workers, 'pack'), v)).toBe(
      'waiting for capacity: 3 matching workers, none has 4 CPUs, 8192 MiB memory and a VM slot free (short of CPUs on 3, memory on 3, VM slots on 1; best: mac-1 has 2 CPUs, 4096 MiB, 1 VM slot free)',
    );
  });

  it('waiting for capacity reflects what the plan itself consumed', () => {
    const w = worker('w1', { capacity: { vmSlots: 2 } });
    const vms = many(3, 'c', { cpus: 1, memoryMib: 1024 });
    const r = planPlacements(vms, [w], 'pack');
    expect(reasonOf(r, vms[2]!)).toContain('(it has 6 CPUs, 14336 MiB, 0 VM slots free)');
  });

  it('waiting for a VM address: every matching worker has its NAT pool in use', () => {
    const v = vm('v', { cpus: 1, memoryMib: 1024 });
    const same = [1, 2, 3].map((i) => worker(`w${i}`, { capacity: { vmSlots: 300, natAddresses: 253, cpus: 512, memoryMib: 1 << 20 }, used: { vms: 253 } }));
    expect(reasonOf(planPlacements([v], same, 'pack'), v)).toBe(
      'waiting for a VM address: none of the 3 matching workers has a free VM address (253 of 253 in each NAT subnet in use)',
    );
    const mixed = [worker('a', { capacity: { natAddresses: 2 }, used: { vms: 2 } }), worker('b', { capacity: { natAddresses: 1 }, used: { vms: 1 } }), worker('c', { paused: true })];
    expect(reasonOf(planPlacements([v], mixed, 'pack'), v)).toBe(
      'waiting for a VM address: none of the 2 matching workers has a free VM address (3 of 3 in their NAT subnets in use); 1 paused (draining) matching worker not counted',
    );
  });

  it('waiting for capacity counts workers short of VM addresses when others lack something else', () => {
    const workers = [
      worker('a', { capacity: { natAddresses: 2 }, used: { vms: 2, cpus: 2, memoryMib: 2048 } }), // out of addresses
      worker('b', { capacity: { natAddresses: 253 }, used: { vms: 1, cpus: 7, memoryMib: 15872 } }), // 1 CPU, 512 MiB free
      worker('c', { used: { vms: 1, cpus: 7, memoryMib: 15872 } }), // not limited, 1 CPU, 512 MiB free
    ];
    const v = vm('v', { cpus: 2, memoryMib: 1024 });
    expect(reasonOf(planPlacements([v], workers, 'pack'), v)).toBe(
      'waiting for capacity: 3 matching workers, none has 2 CPUs, 1024 MiB memory, a VM slot and a VM address free (short of CPUs on 2, memory on 2, VM addresses on 1; best: a has 6 CPUs, 14336 MiB, 2 VM slots, 0 VM addresses (of 2) free)',
    );
    // Addresses are not mentioned when no worker is short of them.
    const plenty = [worker('a', { capacity: { natAddresses: 253 }, used: { vms: 4 } }), worker('b', { capacity: { natAddresses: 253 }, used: { vms: 4 } })];
    const reason = reasonOf(planPlacements([v], plenty, 'pack'), v);
    expect(reason).toMatch(/^waiting for capacity/);
    expect(reason).not.toContain('address');
  });

  it('waiting for a macOS slot', () => {
    const macs = [macHost('mac-1', { used: { vms: 2, macosVms: 2 } }), macHost('mac-2', { used: { vms: 2, macosVms: 2 } })];
    const v = vm('v', { os: 'macos' });
    expect(reasonOf(planPlacements([v], macs, 'pack'), v)).toBe('waiting for a macOS slot: all 2 matching workers have 2/2 macOS VMs running');
  });

  it('requests more than any matching worker has in total (never fits)', () => {
    const workers = [worker('a', { capacity: { cpus: 4 } }), worker('b', { capacity: { cpus: 2 } })];
    const cpu = vm('cpu', { cpus: 8 });
    const mem = vm('mem', { cpus: 1, memoryMib: 65536 });
    const r = planPlacements([cpu, mem], workers, 'pack');
    expect(reasonOf(r, cpu)).toBe('requests more than any matching worker has in total (8 CPUs requested; largest worker has 4)');
    expect(reasonOf(r, mem)).toBe('requests more than any matching worker has in total (65536 MiB memory requested; largest worker has 16384 MiB)');
    const both = vm('both', { cpus: 8, memoryMib: 32768 });
    const r2 = planPlacements([both], [worker('cpu-rich', { capacity: { cpus: 16 } }), worker('mem-rich', { capacity: { cpus: 4, memoryMib: 65536 } })], 'pack');
    expect(reasonOf(r2, both)).toContain('no single matching worker has both');
  });

  it('a never-fit is distinct from waiting for a full fleet', () => {
    const full = worker('a', { capacity: { cpus: 4 }, used: { cpus: 4 } });
    const fits = vm('fits', { cpus: 2 });
    const never = vm('never', { cpus: 8 });
    const r = planPlacements([fits, never], [full], 'pack');
    expect(reasonOf(r, fits)).toMatch(/^waiting for capacity/);
    expect(reasonOf(r, never)).toMatch(/^requests more than any matching worker has in total/);
  });

  it('every VM left pending has a reason, and placed VMs have none', () => {
    const workers = [worker('a', { capacity: { vmSlots: 1 } }), worker('b', { paused: true })];
    const vms = many(5, 'r');
    const r = planPlacements(vms, workers, 'pack');
    expect(r.placements.length + r.pending.size).toBe(5);
    for (const p of r.placements) expect(r.pending.has(p.vmId)).toBe(false);
    for (const reason of r.pending.values()) expect(reason.length).toBeGreaterThan(10);
  });
});

// ---------------------------------------------------------------- network modes and custom MACs (issue 18)

describe('network modes and custom MACs', () => {
  const hostOnly = (name: string, init: WorkerInit = {}) => worker(name, { networkModes: ['nat', 'host-only'], ...init });

  it('places a host-only VM only on a worker that offers host-only; a worker without networks offers nat only', () => {
    const old = worker('a-old'); // reports no networks
    const natOnly = worker('b-nat', { networkModes: ['nat'] });
    const both = hostOnly('c-both');
    const v = vm('h', { networkMode: 'host-only' });
    const n = vm('n', { networkMode: 'nat' });
    const r = planPlacements([v, n], [old, natOnly, both], 'pack');
    expect(where(r, v)).toBe(both.id);
    expect(where(r, n)).toBeDefined();
  });

  it('says why a VM waits when no worker offers its mode', () => {
    const v = vm('h', { networkMode: 'host-only' });
    const r = planPlacements([v], [worker('w1'), worker('w2', { networkModes: ['nat'] })], 'pack');
    expect(reasonOf(r, v)).toBe('no worker offers network mode host-only (2 eligible online workers offer nat)');
    const sel = vm('s', { networkMode: 'host-only', selector: { pool: 'ci' } });
    const r2 = planPlacements([sel], [worker('w1', { labels: { pool: 'ci' } }), hostOnly('w2', { online: false, labels: { pool: 'ci' } })], 'pack');
    expect(reasonOf(r2, sel)).toBe('no worker matching selector pool=ci offers network mode host-only (1 eligible online worker offers nat; 1 offline worker does)');
  });

  it('a worker offering only host-only takes no NAT VM; mode none goes anywhere', () => {
    const only = worker('w1', { networkModes: ['host-only'] });
    const n = vm('n');
    const none = vm('x', { networkMode: 'none' });
    const r = planPlacements([n, none], [only], 'pack');
    expect(reasonOf(r, n)).toBe('no worker offers network mode nat (1 eligible online worker offers host-only)');
    expect(where(r, none)).toBe(only.id);
  });

  it('host-only VMs count against the host-only network\'s addresses, NAT VMs against natAddresses, none against neither', () => {
    const w = hostOnly('w1', { capacity: { vmSlots: 10, cpus: 64, memoryMib: 1 << 20, natAddresses: 1, hostOnlyAddresses: 2 }, used: { vms: 1, natAddresses: 0, hostOnlyAddresses: 1 } });
    const hs = many(3, 'h', { networkMode: 'host-only', cpus: 1, memoryMib: 512 });
    const ns = many(2, 'n', { cpus: 1, memoryMib: 512 });
    const xs = many(3, 'x', { networkMode: 'none', cpus: 1, memoryMib: 512 });
    const r = planPlacements([...hs, ...ns, ...xs], [w], 'pack');
    expect(hs.filter((v) => where(r, v))).toHaveLength(1); // 1 of 2 held already
    expect(ns.filter((v) => where(r, v))).toHaveLength(1);
    expect(xs.filter((v) => where(r, v))).toHaveLength(3);
    expect(reasonOf(r, hs[2]!)).toBe('waiting for a VM address: the only matching worker (w1) has no free VM address (2 of 2 in its host-only subnet in use)');
    expect(reasonOf(r, ns[1]!)).toBe('waiting for a VM address: the only matching worker (w1) has no free VM address (1 of 1 in its NAT subnet in use)');
  });

  it('never places a VM where an instance holds its custom MAC: elsewhere, or pending with the holder named', () => {
    const mac = '02:aa:bb:cc:dd:ee';
    const a = worker('a', { macs: new Map([[mac, 'web-1']]) });
    const b = worker('b');
    const v = vm('web-2', { mac });
    const r = planPlacements([v], [a, b], 'pack');
    expect(where(r, v)).toBe(b.id);
    const alone = planPlacements([v], [a], 'pack');
    expect(reasonOf(alone, v)).toBe(`MAC ${mac} is already used by vm web-1 on every eligible worker with room (a); waiting until it is deleted or moved, or change this VM's MAC`);
  });

  it('two pending VMs with one MAC go to different workers, and the second waits when there is only one', () => {
    const mac = '02:00:00:00:00:42';
    const [v1, v2] = [vm('m1', { mac, cpus: 1, memoryMib: 512 }), vm('m2', { mac, cpus: 1, memoryMib: 512 })];
    const two = planPlacements([v1!, v2!], [worker('a'), worker('b')], 'pack');
    expect(where(two, v1!)).toBeDefined();
    expect(where(two, v2!)).toBeDefined();
    expect(where(two, v1!)).not.toBe(where(two, v2!));
    const one = planPlacements([v1!, v2!], [worker('a')], 'pack');
    expect(where(one, v1!)).toBe('id-a');
    expect(reasonOf(one, v2!)).toMatch(/^MAC 02:00:00:00:00:42 is already used by vm m1 on every eligible worker with room \(a\)/);
    // A different MAC, or none, shares the worker freely.
    const other = planPlacements([v1!, vm('m3', { mac: '02:00:00:00:00:43' }), vm('m4')], [worker('a')], 'pack');
    expect(other.placements).toHaveLength(3);
  });

  it('a MAC clash on several workers names each holder; capacity problems are still named as such', () => {
    const mac = '02:00:00:00:00:07';
    const ws = [worker('a', { macs: new Map([[mac, 'x']]) }), worker('b', { macs: new Map([[mac, 'y']]) })];
    const v = vm('z', { mac });
    expect(reasonOf(planPlacements([v], ws, 'spread'), v)).toBe(`MAC ${mac} is already used on every eligible worker with room (by vm x on a, by vm y on b); waiting until one of them is deleted, or change this VM's MAC`);
    const big = vm('big', { mac, cpus: 64 });
    expect(reasonOf(planPlacements([big], ws, 'pack'), big)).toMatch(/^requests more than any matching worker has in total/);
  });

  it('names its own earlier attempt when that still holds the MAC', () => {
    const mac = '02:00:00:00:00:09';
    const v = vm('self', { mac });
    const r = planPlacements([v], [worker('a', { macs: new Map([[mac, 'self']]) })], 'pack');
    expect(reasonOf(r, v)).toMatch(/by vm self \(its previous attempt, until the worker removes it\)/);
  });
});

// ---------------------------------------------------------------- properties

interface RandomCase {
  workers: WorkerView[];
  vms: PendingVmView[];
}

const MACS = ['02:00:00:00:00:01', '02:00:00:00:00:02', '02:00:00:00:00:03'];

function randomCase(seed: number): RandomCase {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const workerCount = Math.floor(rnd() * 25);
  const workers: WorkerView[] = [];
  for (let i = 0; i < workerCount; i++) {
    const mac = rnd() < 0.3;
    const labels: Record<string, string> = {};
    if (rnd() < 0.7) labels.region = pick(['eu', 'us']);
    if (rnd() < 0.3) labels.gpu = 'true';
    if (rnd() < 0.2) labels.host = `h${i}`;
    const cap = {
      cpus: pick([2, 4, 8, 16]),
      memoryMib: pick([4096, 8192, 16384, 32768]),
      vmSlots: pick([0, 1, 2, 3, 4, 8]),
      macosSlots: mac ? 2 : 0,
      // Often below the VM slots, so that the address pool is what binds.
      natAddresses: pick([0, 0, 0, 1, 2, 3, 253]),
      hostOnlyAddresses: pick([0, 0, 1, 2, 5]),
    };
    const vmsUsed = Math.floor(rnd() * (Math.max(cap.vmSlots, cap.natAddresses > 0 ? Math.min(cap.natAddresses, 9) : 0) + 1));
    const hostOnlyUsed = Math.floor(rnd() * (vmsUsed + 1));
    // Issue 18: networks offered, and custom MACs held by instances already there.
    const networkModes = pick([undefined, [], ['nat'], ['nat', 'host-only'], ['host-only']]);
    const macs = rnd() < 0.3 ? new Map([[pick(MACS), `holder-${i}`]]) : undefined;
    workers.push({
      id: `w${i}`,
      // Duplicate names on purpose: ties then break by id.
      name: pick(['alpha', 'beta', 'gamma', `n${i}`, `n${i}`]),
      online: rnd() > 0.1,
      paused: rnd() < 0.1,
      labels,
      drivers: pick([['synthetic'], ['synthetic', 'qemu'], ['vz'], [], ['qemu']]),
      os: mac ? 'darwin' : 'linux',
      arch: 'arm64',
      capacity: cap,
      ...(networkModes ? { networkModes } : {}),
      ...(macs ? { macs } : {}),
      used: {
        cpus: Math.floor(rnd() * cap.cpus),
        memoryMib: Math.floor(rnd() * cap.memoryMib),
        vms: vmsUsed,
        macosVms: mac ? Math.floor(rnd() * 3) : 0,
        // Sometimes absent: every VM then counts as a NAT one (workers from before issue 18).
        ...(rnd() < 0.7 ? { natAddresses: vmsUsed - hostOnlyUsed, hostOnlyAddresses: hostOnlyUsed } : {}),
      },
    });
  }
  const vmCount = Math.floor(rnd() * 120);
  const vms: PendingVmView[] = [];
  for (let i = 0; i < vmCount; i++) {
    const selector: Record<string, string> = {};
    if (rnd() < 0.3) selector.region = pick(['eu', 'us', 'ap']);
    if (rnd() < 0.1) selector.gpu = 'true';
    if (rnd() < 0.05) selector.host = `h${Math.floor(rnd() * workerCount)}`;
    vms.push({
      id: `v${String(Math.floor(rnd() * 1000)).padStart(3, '0')}-${i}`,
      name: `v${i}`,
      priority: pick([0, 0, 1, 2]),
      createdAtMs: Math.floor(rnd() * 50),
      cpus: pick([0.5, 1, 1, 2, 2, 4, 8]),
      memoryMib: pick([512, 1024, 2048, 4096, 8192]),
      os: rnd() < 0.2 ? 'macos' : 'linux',
      selector,
      driver: pick(['', '', '', 'qemu', 'vz', 'synthetic']),
      ...(rnd() < 0.4 ? { networkMode: pick(['nat', 'host-only', 'host-only', 'none'] as const) } : {}),
      ...(rnd() < 0.25 ? { mac: pick(MACS) } : {}),
    });
  }
  return { workers, vms };
}

function eligibleIgnoringCapacity(w: WorkerView, v: PendingVmView): boolean {
  if (!w.online || w.paused) return false;
  if (v.driver ? !w.drivers.includes(v.driver) : w.drivers.length === 0) return false;
  if (v.os === 'macos' && w.capacity.macosSlots < 1) return false;
  if (!offersMode(w, modeOf(v))) return false;
  return Object.entries(v.selector).every(([k, val]) => Object.hasOwn(w.labels, k) && w.labels[k] === val);
}

function checkInvariants({ workers, vms }: RandomCase, r: PlanResult): void {
  // Collected, then asserted once: calling expect() per pair makes 800 random plans slow.
  const problems: string[] = [];
  const vmById = new Map(vms.map((v) => [v.id, v]));
  const workerById = new Map(workers.map((w) => [w.id, w]));
  // Every VM is either placed once or pending with a reason.
  const placed = new Set<string>();
  for (const p of r.placements) {
    if (placed.has(p.vmId)) problems.push(`${p.vmId} placed twice`);
    if (r.pending.has(p.vmId)) problems.push(`${p.vmId} placed and pending`);
    placed.add(p.vmId);
  }
  if (placed.size + r.pending.size !== vmById.size) problems.push(`${placed.size} placed + ${r.pending.size} pending != ${vmById.size} VMs`);
  for (const [id, reason] of r.pending) if (!/\w{3,}/.test(reason)) problems.push(`${id} has no reason`);
  // No worker takes more than it has free; every placement is eligible.
  const load = new Map(workers.map((w) => [w.id, { cpus: 0, memoryMib: 0, vms: 0, macosVms: 0, nat: 0, hostOnly: 0, macs: new Set(w.macs?.keys() ?? []) }]));
  for (const p of r.placements) {
    const v = vmById.get(p.vmId)!;
    const w = workerById.get(p.workerId)!;
    if (!eligibleIgnoringCapacity(w, v)) problems.push(`${v.name} placed on ineligible ${w.id}`);
    const l = load.get(w.id)!;
    l.cpus += v.cpus;
    l.memoryMib += v.memoryMib;
    l.vms += 1;
    if (v.os === 'macos') l.macosVms += 1;
    if (modeOf(v) === 'nat') l.nat += 1;
    if (modeOf(v) === 'host-only') l.hostOnly += 1;
    if (v.mac) {
      if (l.macs.has(v.mac)) problems.push(`${v.name} placed on ${w.id} where MAC ${v.mac} is already held`);
      l.macs.add(v.mac);
    }
  }
  const natUsed = (w: WorkerView) => w.used.natAddresses ?? w.used.vms;
  const hostOnlyUsed = (w: WorkerView) => w.used.hostOnlyAddresses ?? 0;
  for (const w of workers) {
    const l = load.get(w.id)!;
    if (l.vms === 0) continue;
    if (w.used.cpus + l.cpus > w.capacity.cpus) problems.push(`${w.id} over CPUs`);
    if (w.used.memoryMib + l.memoryMib > w.capacity.memoryMib) problems.push(`${w.id} over memory`);
    if (w.used.vms + l.vms > w.capacity.vmSlots) problems.push(`${w.id} over VM slots`);
    if ((w.capacity.natAddresses ?? 0) > 0 && l.nat > 0 && natUsed(w) + l.nat > w.capacity.natAddresses!) problems.push(`${w.id} over VM addresses`);
    if ((w.capacity.hostOnlyAddresses ?? 0) > 0 && l.hostOnly > 0 && hostOnlyUsed(w) + l.hostOnly > w.capacity.hostOnlyAddresses!) problems.push(`${w.id} over host-only addresses`);
    if (l.macosVms > 0 && w.used.macosVms + l.macosVms > w.capacity.macosSlots) problems.push(`${w.id} over macOS slots`);
  }
  // Nothing left pending could have been placed on what is left.
  for (const id of r.pending.keys()) {
    const v = vmById.get(id)!;
    for (const w of workers) {
      if (!eligibleIgnoringCapacity(w, v)) continue;
      const l = load.get(w.id)!;
      const fits =
        w.capacity.cpus - w.used.cpus - l.cpus >= v.cpus &&
        w.capacity.memoryMib - w.used.memoryMib - l.memoryMib >= v.memoryMib &&
        w.capacity.vmSlots - w.used.vms - l.vms >= 1 &&
        (modeOf(v) !== 'nat' || !w.capacity.natAddresses || w.capacity.natAddresses - natUsed(w) - l.nat >= 1) &&
        (modeOf(v) !== 'host-only' || !w.capacity.hostOnlyAddresses || w.capacity.hostOnlyAddresses - hostOnlyUsed(w) - l.hostOnly >= 1) &&
        !(v.mac && l.macs.has(v.mac)) &&
        (v.os !== 'macos' || w.capacity.macosSlots - w.used.macosVms - l.macosVms >= 1);
      if (fits) problems.push(`${v.name} left pending although ${w.name} (${w.id}) has room`);
    }
  }
  expect(problems).toEqual([]);
}

describe('properties (seeded random fleets)', () => {
  const profiles: SchedulerProfile[] = ['pack', 'spread'];

  it('never over-commits a worker, places only eligible VMs, leaves nothing placeable pending', () => {
    for (let seed = 1; seed <= 400; seed++) {
      const c = randomCase(seed);
      for (const profile of profiles) checkInvariants(c, planPlacements(c.vms, c.workers, profile));
    }
  });

  it('makes exactly the placements of the naive reference planner', () => {
    for (let seed = 1; seed <= 400; seed++) {
      const c = randomCase(seed);
      for (const profile of profiles) {
        const fast = planPlacements(c.vms, c.workers, profile);
        const naive = planPlacementsNaive(c.vms, c.workers, profile);
        expect(fast.placements, `seed ${seed} ${profile}`).toEqual(naive.placements);
        expect([...fast.pending.keys()].sort()).toEqual([...naive.pending.keys()].sort());
      }
    }
  });

  it('many identical VMs competing for few slots never share a slot', () => {
    const workers = [worker('a', { capacity: { vmSlots: 2 } }), worker('b', { capacity: { vmSlots: 1 } }), macHost('m', { capacity: { vmSlots: 3 } })];
    const vms = many(500, 'same', { cpus: 1, memoryMib: 1024, createdAtMs: 1 });
    for (const profile of profiles) {
      const r = planPlacements(vms, workers, profile);
      expect(r.placements).toHaveLength(6);
      expect(new Set(r.placements.map((p) => p.vmId)).size).toBe(6);
      expect(r.pending.size).toBe(494);
      checkInvariants({ workers, vms }, r);
    }
  });

  it('is deterministic: same input, same output; input order does not matter', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const c = randomCase(seed);
      const rnd = prng(seed * 7919);
      const shuffled = c.vms.map((v) => [rnd(), v] as const).sort((a, b) => a[0] - b[0]).map(([, v]) => v);
      for (const profile of profiles) {
        const a = planPlacements(c.vms, c.workers, profile);
        const b = planPlacements(c.vms, c.workers, profile);
        const s = planPlacements(shuffled, c.workers, profile);
        expect(b).toEqual(a);
        expect(s.placements).toEqual(a.placements);
        expect(new Map([...s.pending].sort())).toEqual(new Map([...a.pending].sort()));
      }
    }
  });
});

describe('scale', () => {
  const profiles: SchedulerProfile[] = ['pack', 'spread'];
  it('plans 10,000 VMs on 1,000 workers well under a second', () => {
    const rnd = prng(99);
    const workers = Array.from({ length: 1000 }, (_, i) =>
      worker(`w${String(i).padStart(4, '0')}`, {
        labels: { region: ['eu', 'us', 'ap'][i % 3]!, pool: ['ci', 'build'][i % 2]! },
        drivers: i % 4 === 0 ? ['synthetic', 'qemu'] : ['synthetic'],
        capacity: { cpus: 32, memoryMib: 65536, vmSlots: 12, macosSlots: i % 5 === 0 ? 2 : 0 },
      }),
    );
    const vms = Array.from({ length: 10_000 }, (_, i) =>
      vm(`s${i}`, {
        priority: Math.floor(rnd() * 3),
        selector: rnd() < 0.3 ? { region: ['eu', 'us', 'ap'][i % 3]! } : {},
        driver: rnd() < 0.1 ? 'qemu' : '',
        os: rnd() < 0.05 ? 'macos' : 'linux',
        cpus: 1 + Math.floor(rnd() * 4),
      }),
    );
    for (const profile of profiles) {
      planPlacements(vms, workers, profile); // warm-up
      const t0 = performance.now();
      const r = planPlacements(vms, workers, profile);
      const ms = performance.now() - t0;
      expect(r.placements.length + r.pending.size).toBe(10_000);
      expect(ms).toBeLessThan(1000);
    }
  });
});
