// Workers' image inventories: input validation (untrusted, bounded), replace-in-one-transaction
// recording, the views, and the holdings the scheduler reads.
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CachedImage__Output, ImageInventory__Output } from '@fleet/proto';
import { FleetError } from '../errors.ts';
import { tempDb, type TempDb } from '../storage/testing.ts';
import { imageInventory, MAX_IMAGES_PER_INVENTORY, MAX_STRING, operationReport, uint64 } from './image-input.ts';
import { loadImageHoldings, WorkerImageService } from './worker-image-service.ts';

const D = (c: string) => 'sha256:' + c.repeat(64);

function cached(digest: string, o: Partial<CachedImage__Output> = {}): CachedImage__Output {
  return {
    digest,
    reference: `127.0.0.1:5000/fleet/guest@${digest}`,
    format: 'fleet-qemu',
    sizeBytes: '1048576',
    lastUsedUnixMs: '1700000000000',
    inUse: 0,
    state: 'ready',
    progress: null,
    error: '',
    ...o,
  };
}
const inv = (images: CachedImage__Output[], usedBytes = '0', limitBytes = '0'): ImageInventory__Output => ({ images, usedBytes, limitBytes });

describe('image input validation', () => {
  it('keeps well-formed images and drops the rest with reasons', () => {
    const { inventory, rejected } = imageInventory(
      inv(
        [
          cached(D('a'), { state: 'pulling', progress: { bytesDone: '500', bytesTotal: '100' } }),
          cached('latest'),
          cached(D('a')),
          cached(D('b'), { state: 'exploded' }),
          cached(D('c'), { reference: 'r'.repeat(5000), error: 'e\u0000rr', sizeBytes: '99999999999999999999', lastUsedUnixMs: '0', inUse: -3 }),
        ],
        '123',
        'x',
      ),
    );
    expect(inventory.images.map((i) => i.digest)).toEqual([D('a'), D('c')]);
    expect(inventory.images[0]).toMatchObject({ state: 'pulling', bytesDone: 100n, bytesTotal: 100n, lastUsedAt: new Date(1_700_000_000_000) });
    expect(inventory.images[1]).toMatchObject({ sizeBytes: 9_223_372_036_854_775_807n, lastUsedAt: null, inUse: 0, error: 'err' });
    expect(inventory.images[1]!.reference).toHaveLength(MAX_STRING);
    expect(inventory.usedBytes).toBe(123n);
    expect(inventory.limitBytes).toBe(0n);
    expect(rejected).toHaveLength(3);
    expect(rejected.join('\n')).toMatch(/malformed digest "latest"/);
    expect(rejected.join('\n')).toMatch(/listed twice/);
    expect(rejected.join('\n')).toMatch(/unknown state "exploded"/);
  });

  it('caps an inventory at 10,000 images and survives garbage', () => {
    const many = Array.from({ length: MAX_IMAGES_PER_INVENTORY + 5 }, (_, i) => cached('sha256:' + i.toString(16).padStart(64, '0')));
    const r = imageInventory(inv(many));
    expect(r.inventory.images).toHaveLength(MAX_IMAGES_PER_INVENTORY);
    expect(r.rejected).toEqual(['5 images over the per-inventory limit']);
    expect(imageInventory(null).inventory.images).toEqual([]);
    expect(imageInventory({ images: [null as unknown as CachedImage__Output], usedBytes: '', limitBytes: '' }).rejected).toHaveLength(1);
    expect(uint64('-1')).toBe(0n);
    expect(uint64('1e9')).toBe(0n);
    expect(uint64(5)).toBe(5n);
  });

  it('validates operation statuses', () => {
    expect(operationReport({ id: 'op-1', state: 'running', message: 'm', progress: { bytesDone: '5', bytesTotal: '10' }, digest: 'nope' })).toEqual({ id: 'op-1', state: 'running', message: 'm', bytesDone: 5n, bytesTotal: 10n, digest: '' });
    expect(operationReport({ id: 'op-1', state: 'succeeded', message: '', progress: null, digest: D('d') })).toMatchObject({ digest: D('d') });
    expect(operationReport({ id: 'op 1', state: 'running', message: '', progress: null, digest: '' })).toHaveProperty('rejected');
    expect(operationReport({ id: 'op-1', state: 'pending', message: '', progress: null, digest: '' })).toHaveProperty('rejected');
    expect(operationReport(null)).toHaveProperty('rejected');
  });
});

describe('WorkerImageService', () => {
  let t: TempDb;
  let images: WorkerImageService;
  let w1: string;
  let w2: string;
  beforeEach(async () => {
    t = await tempDb();
    images = new WorkerImageService(t.db);
    w1 = randomUUID();
    w2 = randomUUID();
    await t.db.worker.create({ data: { id: w1, name: 'w1', machineId: 'm1' } });
    await t.db.worker.create({ data: { id: w2, name: 'w2', machineId: 'm2' } });
  });
  afterEach(async () => {
    await t.close();
  });

  const record = (workerId: string, list: CachedImage__Output[], used = '0', limit = '0') => images.record(workerId, imageInventory(inv(list, used, limit)).inventory);

  it("replaces a worker's rows: missing ones go, changed ones are rewritten, unchanged ones are left alone", async () => {
    expect(await record(w1, [cached(D('a')), cached(D('b'), { state: 'pulling', progress: { bytesDone: '10', bytesTotal: '40' } })], '3000', '10000')).toEqual({ added: 2, changed: 0, removed: 0 });
    await record(w2, [cached(D('a'), { inUse: 1 })]);
    const before = await t.db.workerImage.findUniqueOrThrow({ where: { workerId_digest: { workerId: w1, digest: D('a') } } });
    await new Promise((r) => setTimeout(r, 5));
    expect(await record(w1, [cached(D('a')), cached(D('b'), { state: 'ready', sizeBytes: '2048' }), cached(D('c'))], '5000', '10000')).toEqual({ added: 1, changed: 1, removed: 0 });
    const after = await t.db.workerImage.findUniqueOrThrow({ where: { workerId_digest: { workerId: w1, digest: D('a') } } });
    expect(after.updatedAt).toEqual(before.updatedAt);
    expect(await record(w1, [cached(D('c'))], '1000', '10000')).toEqual({ added: 0, changed: 0, removed: 2 });

    const view = await images.listForWorker('w1');
    expect(view).toMatchObject({ worker: 'w1', usedBytes: 1000, limitBytes: 10000 });
    expect(view.items).toEqual([
      { digest: D('c'), reference: `127.0.0.1:5000/fleet/guest@${D('c')}`, format: 'fleet-qemu', sizeBytes: 1048576, state: 'ready', progress: null, error: '', inUse: 0, lastUsedAt: new Date(1_700_000_000_000).toISOString() },
    ]);
    // The other worker's rows were never touched.
    expect((await images.listForWorker('w2')).items.map((i) => [i.digest, i.inUse])).toEqual([[D('a'), 1]]);
    await expect(images.listForWorker('nope')).rejects.toBeInstanceOf(FleetError);
    // An empty inventory empties the cache.
    await record(w1, []);
    expect((await images.listForWorker('w1')).items).toEqual([]);
  });

  it('groups every worker by digest, and shows pull progress', async () => {
    await record(w1, [cached(D('a')), cached(D('b'), { state: 'pulling', progress: { bytesDone: '30', bytesTotal: '120' } })]);
    await record(w2, [cached(D('a'), { inUse: 2 })]);
    const all = await images.listAll();
    expect(all.map((s) => [s.digest, s.workers.map((w) => w.name)])).toEqual([
      [D('a'), ['w1', 'w2']],
      [D('b'), ['w1']],
    ]);
    expect(all[1]!.workers[0]).toMatchObject({ state: 'pulling', progress: { bytesDone: 30, bytesTotal: 120, percent: 25 } });
    expect(all[0]!.workers[1]).toMatchObject({ name: 'w2', inUse: 2, progress: null });
  });

  it('tells the scheduler which workers hold which images (ready or pulling), in one call', async () => {
    await record(w1, [cached(D('a')), cached(D('b'), { state: 'pulling' }), cached(D('c'), { state: 'failed', error: 'digest mismatch' })]);
    await record(w2, [cached(D('a'))]);
    const h = await loadImageHoldings(t.db, [D('a'), D('b'), D('c'), 'garbage']);
    expect(h.get(D('a'))).toEqual(new Map([[w1, 'ready'], [w2, 'ready']]));
    expect(h.get(D('b'))).toEqual(new Map([[w1, 'pulling']]));
    expect(h.has(D('c'))).toBe(false);
    expect(await images.workersHolding(D('a'))).toEqual(new Set([w1, w2]));
    expect(await images.workersHolding(D('b'))).toEqual(new Set());
    // Deleting a worker deletes its rows.
    await t.db.worker.delete({ where: { id: w1 } });
    expect(await t.db.workerImage.count()).toBe(1);
  });

  it('records 10,000 images in one inventory quickly', async () => {
    const many = Array.from({ length: MAX_IMAGES_PER_INVENTORY }, (_, i) => cached('sha256:' + i.toString(16).padStart(64, '0')));
    const t0 = performance.now();
    expect((await record(w1, many)).added).toBe(MAX_IMAGES_PER_INVENTORY);
    expect((await record(w1, many)).changed).toBe(0);
    expect(performance.now() - t0).toBeLessThan(20_000);
    expect(await t.db.workerImage.count()).toBe(MAX_IMAGES_PER_INVENTORY);
  });
});
