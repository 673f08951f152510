// Image locality (issue 15): among workers of equal standing the one whose cache holds the VM's
// image wins (ready before pulling); capacity and the profile's slot level still rule first. The
// fast planner and the naive reference must agree on random fleets with random caches.
import { describe, expect, it } from 'vitest';
import { planPlacements, type ImageHolders, type PendingVmView, type SchedulerProfile, type WorkerView } from './placement.ts';
import { planPlacementsNaive } from './reference.ts';

const IMG = 'sha256:' + 'a'.repeat(64);
const OTHER = 'sha256:' + 'b'.repeat(64);

function worker(name: string, o: { vmSlots?: number; usedVms?: number; cpus?: number; memoryMib?: number; usedMemoryMib?: number; labels?: Record<string, string> } = {}): WorkerView {
  return {
    id: `id-${name}`,
    name,
    online: true,
    paused: false,
    labels: o.labels ?? {},
    drivers: ['qemu'],
    os: 'linux',
    arch: 'amd64',
    capacity: { cpus: o.cpus ?? 8, memoryMib: o.memoryMib ?? 16384, vmSlots: o.vmSlots ?? 4, macosSlots: 0 },
    used: { cpus: 0, memoryMib: o.usedMemoryMib ?? 0, vms: o.usedVms ?? 0, macosVms: 0 },
  };
}

let n = 0;
function vm(o: Partial<PendingVmView> = {}): PendingVmView {
  n++;
  return { id: `vm-${n}`, name: `vm-${n}`, priority: 0, createdAtMs: n, cpus: 1, memoryMib: 1024, os: 'linux', selector: {}, driver: '', imageDigest: IMG, ...o };
}

const holders = (entries: Record<string, Record<string, 'ready' | 'pulling'>>): ImageHolders =>
  new Map(Object.entries(entries).map(([d, m]) => [d, new Map(Object.entries(m).map(([w, s]) => [`id-${w}`, s]))]));

const placedOn = (vms: PendingVmView[], workers: WorkerView[], profile: SchedulerProfile, images?: ImageHolders) => {
  const r = planPlacements(vms, workers, profile, images);
  const naive = planPlacementsNaive(vms, workers, profile, images);
  expect(r.placements).toEqual(naive.placements);
  return r.placements.map((p) => p.workerId.replace(/^id-/, ''));
};

describe('image locality', () => {
  for (const profile of ['pack', 'spread'] as const) {
    it(`${profile}: of two equal workers, the one holding the image wins (otherwise the name decides)`, () => {
      const ws = [worker('a'), worker('b')];
      expect(placedOn([vm()], ws, profile)).toEqual(['a']);
      expect(placedOn([vm()], ws, profile, holders({ [IMG]: { b: 'ready' } }))).toEqual(['b']);
      // Another image held elsewhere changes nothing.
      expect(placedOn([vm()], ws, profile, holders({ [OTHER]: { b: 'ready' } }))).toEqual(['a']);
      // A VM with a local image is not affected.
      expect(placedOn([vm({ imageDigest: '' })], ws, profile, holders({ [IMG]: { b: 'ready' } }))).toEqual(['a']);
    });

    it(`${profile}: ready beats pulling, pulling beats nothing`, () => {
      const ws = [worker('a'), worker('b'), worker('c')];
      expect(placedOn([vm()], ws, profile, holders({ [IMG]: { b: 'pulling', c: 'ready' } }))).toEqual(['c']);
      expect(placedOn([vm()], ws, profile, holders({ [IMG]: { b: 'pulling' } }))).toEqual(['b']);
    });

    it(`${profile}: capacity rules first: never a full worker because it has the image`, () => {
      const ws = [worker('a'), worker('b', { vmSlots: 2, usedVms: 2 })];
      expect(placedOn([vm()], ws, profile, holders({ [IMG]: { b: 'ready' } }))).toEqual(['a']);
      // Too little memory left on the holder: the other one.
      const mem = [worker('a', { memoryMib: 16384 }), worker('b', { memoryMib: 16384, usedMemoryMib: 16000 })];
      expect(placedOn([vm({ memoryMib: 2048 })], mem, profile, holders({ [IMG]: { b: 'ready' } }))).toEqual(['a']);
    });

    it(`${profile}: the holder fills up, then the rest go elsewhere`, () => {
      const ws = [worker('a', { vmSlots: 2 }), worker('b', { vmSlots: 2 })];
      const vms = [vm(), vm(), vm(), vm()];
      const got = placedOn(vms, ws, profile, holders({ [IMG]: { b: 'ready' } }));
      expect(got).toHaveLength(4);
      expect(got[0]).toBe('b');
      expect(got.filter((w) => w === 'b')).toHaveLength(2);
    });
  }

  it('pack still prefers the busier slot level; the image decides within it', () => {
    // a has 1 free slot, b and c have 2: pack takes a whatever b holds; among equal levels the holder wins.
    const ws = [worker('a', { usedVms: 3 }), worker('b', { usedVms: 2 }), worker('c', { usedVms: 2 })];
    expect(placedOn([vm()], ws, 'pack', holders({ [IMG]: { b: 'ready' } }))).toEqual(['a']);
    expect(placedOn([vm()], [worker('b', { usedVms: 2 }), worker('c', { usedVms: 2 })], 'pack', holders({ [IMG]: { c: 'ready' } }))).toEqual(['c']);
  });

  it('the image outranks free memory within a slot level', () => {
    // pack prefers less free memory (a), spread more (b): the holder wins either way.
    const ws = [worker('a', { usedMemoryMib: 8000 }), worker('b'), worker('c', { usedMemoryMib: 4000 })];
    expect(placedOn([vm()], ws, 'pack', holders({ [IMG]: { c: 'ready' } }))).toEqual(['c']);
    expect(placedOn([vm()], ws, 'spread', holders({ [IMG]: { c: 'ready' } }))).toEqual(['c']);
    // Two holders: memory decides between them as usual.
    expect(placedOn([vm()], ws, 'pack', holders({ [IMG]: { b: 'ready', c: 'ready' } }))).toEqual(['c']);
    expect(placedOn([vm()], ws, 'spread', holders({ [IMG]: { b: 'ready', c: 'ready' } }))).toEqual(['b']);
  });

  it('a holder outside the selector is never chosen', () => {
    const ws = [worker('a', { labels: { pool: 'ci' } }), worker('b', { labels: { pool: 'build' } })];
    expect(placedOn([vm({ selector: { pool: 'ci' } })], ws, 'pack', holders({ [IMG]: { b: 'ready' } }))).toEqual(['a']);
  });

  it('agrees with the naive reference on random fleets and caches', () => {
    let seed = 7;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const digests = [IMG, OTHER, 'sha256:' + 'c'.repeat(64)];
    for (let round = 0; round < 300; round++) {
      const ws = Array.from({ length: 1 + Math.floor(rnd() * 12) }, (_, i) =>
        worker(`w${i}`, { vmSlots: pick([1, 2, 3, 4]), usedVms: pick([0, 0, 1, 2]), memoryMib: pick([4096, 8192]), usedMemoryMib: pick([0, 0, 1024, 3072]), labels: { pool: pick(['ci', 'build']) } }),
      );
      for (const w of ws) if (w.used.vms > w.capacity.vmSlots) w.used.vms = w.capacity.vmSlots;
      const cache: Record<string, Record<string, 'ready' | 'pulling'>> = {};
      for (const d of digests) {
        cache[d] = {};
        for (const w of ws) if (rnd() < 0.3) cache[d]![w.name] = rnd() < 0.7 ? 'ready' : 'pulling';
      }
      const vms = Array.from({ length: Math.floor(rnd() * 30) }, () =>
        vm({ imageDigest: pick([...digests, '']), memoryMib: pick([512, 1024, 2048]), cpus: pick([1, 2]), selector: rnd() < 0.3 ? { pool: pick(['ci', 'build']) } : {}, priority: pick([0, 1]) }),
      );
      for (const profile of ['pack', 'spread'] as const) {
        const images = holders(cache);
        const fast = planPlacements(vms, ws, profile, images);
        const naive = planPlacementsNaive(vms, ws, profile, images);
        expect(fast.placements, `round ${round} ${profile}`).toEqual(naive.placements);
        expect([...fast.pending.keys()].sort()).toEqual([...naive.pending.keys()].sort());
      }
    }
  });
});

describe('image locality in the scheduler loop', () => {
  it('places a VM on the worker whose cache holds its image (read from the database once per pass)', async () => {
    const pino = (await import('pino')).default;
    const { tempDb } = await import('../storage/testing.ts');
    const { EventLog } = await import('../events/event-log.ts');
    const { FleetBus } = await import('../fleet-bus.ts');
    const { Metrics } = await import('../observability/metrics.ts');
    const { SchedulerLoop } = await import('./scheduler-loop.ts');
    const t = await tempDb();
    try {
      const db = t.db;
      for (const name of ['a', 'b']) {
        await db.worker.create({ data: { id: `id-${name}`, name, machineId: name, status: 'online', cpus: 8, memoryMib: 16384, vmSlots: 4, drivers: '["qemu"]' } });
      }
      await db.workerImage.create({ data: { workerId: 'id-b', digest: IMG, state: 'ready' } });
      const create = (name: string, digest: string) =>
        db.vm.create({ data: { id: `vm-${name}`, name, state: 'pending', image: digest ? '127.0.0.1:5000/fleet/guest:1' : 'fleet-guest', imageDigest: digest, cpus: 1, memoryMib: 512 } });
      const scheduler = new SchedulerLoop(db, new EventLog(db), new FleetBus(), new Metrics({ defaultMetrics: false }), pino({ level: 'silent' }), async () => 'pack', 60_000, { startNow: false });
      // Two equal workers: the name would pick a; b holds the image.
      await create('with-image', IMG);
      expect(await scheduler.passOnce()).toBe(1);
      expect((await db.vm.findUniqueOrThrow({ where: { name: 'with-image' } })).workerId).toBe('id-b');
      // A local image is unaffected (allocations cleared: the two workers are equal again).
      await db.allocation.deleteMany();
      await create('local', '');
      expect(await scheduler.passOnce()).toBe(1);
      expect((await db.vm.findUniqueOrThrow({ where: { name: 'local' } })).workerId).toBe('id-a');
    } finally {
      await t.close();
    }
  });
});
