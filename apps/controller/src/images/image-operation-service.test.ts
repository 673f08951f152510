// Image operations on a real database: which workers a prefetch picks, delete and push refusals,
// what the worker's DesiredState carries (pendingFor), and the lifecycle of worker reports
// (pending → running → succeeded | failed, terminal states stick, other workers' reports ignored).
import { randomBytes, randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EventLog } from '../events/event-log.ts';
import { FleetError } from '../errors.ts';
import { FleetBus } from '../fleet-bus.ts';
import { staticKeyProvider } from '../secrets/key-provider.ts';
import { RegistrySecrets } from '../secrets/registry-secrets.ts';
import { SecretBox } from '../secrets/secret-box.ts';
import { tempDb, type TempDb } from '../storage/testing.ts';
import { ImageOperationService, type ImageFormat } from './image-operation-service.ts';
import type { ResolvedManifest } from './image-resolver.ts';
import { RegistryService } from './registry-service.ts';
import { WorkerImageService } from './worker-image-service.ts';

const DIGEST = 'sha256:' + 'a'.repeat(64);
const OTHER = 'sha256:' + 'b'.repeat(64);
const REGISTRY = '127.0.0.1:5000';

let t: TempDb;
let bus: FleetBus;
let events: EventLog;
let registries: RegistryService;
let ops: ImageOperationService;
let dirty: string[];
let format: ImageFormat;
let resolved: string[];

async function worker(name: string, o: { drivers?: string[]; labels?: Record<string, string>; status?: string; paused?: boolean; os?: string } = {}): Promise<string> {
  const id = randomUUID();
  await t.db.worker.create({
    data: { id, name, machineId: `m-${name}`, status: o.status ?? 'online', paused: o.paused ?? false, drivers: JSON.stringify(o.drivers ?? ['qemu']), labels: JSON.stringify(o.labels ?? {}), os: o.os ?? 'linux' },
  });
  return id;
}

async function vm(name: string, o: { workerId?: string | null; state?: string; desiredPower?: string; attempt?: number; imageDigest?: string; scheduledAt?: Date } = {}): Promise<string> {
  const id = randomUUID();
  await t.db.vm.create({
    data: {
      id,
      name,
      state: o.state ?? 'stopped',
      image: `${REGISTRY}/fleet/guest:1`,
      imageDigest: o.imageDigest ?? '',
      cpus: 1,
      memoryMib: 512,
      desiredPower: o.desiredPower ?? 'stopped',
      attempt: o.attempt ?? 1,
      workerId: o.workerId === undefined ? null : o.workerId,
      scheduledAt: o.scheduledAt ?? new Date(Date.now() - 60_000),
    },
  });
  return id;
}

async function rejection(p: Promise<unknown>): Promise<FleetError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FleetError);
  return err as FleetError;
}

beforeEach(async () => {
  t = await tempDb();
  bus = new FleetBus();
  events = new EventLog(t.db);
  dirty = [];
  bus.onDesiredStateChange((id) => dirty.push(id));
  registries = new RegistryService(t.db, new RegistrySecrets(new SecretBox(staticKeyProvider([randomBytes(32)], 'test'))), events);
  format = 'fleet-qemu';
  resolved = [];
  const resolver = {
    resolveManifest: async (reference: string): Promise<ResolvedManifest> => {
      resolved.push(reference);
      const [name] = reference.split(/[:@](?=[^/]*$)/);
      return { ref: { registry: REGISTRY, repository: 'fleet/guest', tag: '1' }, digest: DIGEST, pinned: `${name}@${DIGEST}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', json: {} };
    },
  };
  ops = new ImageOperationService(t.db, events, bus, registries, resolver, new WorkerImageService(t.db), { formatOf: () => format });
});
afterEach(async () => {
  await t.close();
});

describe('prefetch', () => {
  it('creates one operation per online, not drained worker with the format driver and the selector labels', async () => {
    const w1 = await worker('w1', { labels: { pool: 'ci' } });
    const w2 = await worker('w2', { labels: { pool: 'ci' }, drivers: ['synthetic', 'qemu'] });
    await worker('w3', { labels: { pool: 'build' } });
    await worker('w4', { labels: { pool: 'ci' }, status: 'offline' });
    await worker('w5', { labels: { pool: 'ci' }, paused: true });
    await worker('mac', { labels: { pool: 'ci' }, drivers: ['vz'], os: 'darwin' });
    const r = await ops.prefetch(`${REGISTRY}/fleet/guest:1`, { pool: 'ci' }, 'token:ci');
    expect(r).toMatchObject({ reference: `${REGISTRY}/fleet/guest:1`, digest: DIGEST, format: 'fleet-qemu' });
    expect(r.operations.map((o) => o.worker).sort()).toEqual(['w1', 'w2']);
    for (const o of r.operations) expect(o).toMatchObject({ kind: 'prefetch', state: 'pending', reference: `${REGISTRY}/fleet/guest@${DIGEST}`, digest: DIGEST, createdBy: 'token:ci', vm: null, progress: null });
    expect(dirty.sort()).toEqual([w1, w2].sort());
    // Again while they are under way: the same operations, nothing new.
    dirty = [];
    const again = await ops.prefetch(`${REGISTRY}/fleet/guest:1`, { pool: 'ci' }, 'token:ci');
    expect(again.operations.map((o) => o.id).sort()).toEqual(r.operations.map((o) => o.id).sort());
    expect(dirty).toEqual([]);
    expect(await t.db.imageOperation.count()).toBe(2);
  });

  it('sends Tart images to vz workers only', async () => {
    format = 'tart';
    await worker('linux1');
    await worker('mac1', { drivers: ['vz'], os: 'darwin' });
    const r = await ops.prefetch(`${REGISTRY}/macos/sequoia:latest`, {}, 'a');
    expect(r.format).toBe('tart');
    expect(r.operations.map((o) => o.worker)).toEqual(['mac1']);
  });

  it('says why no worker is eligible (422), per worker', async () => {
    await worker('w1', { labels: { pool: 'build' } });
    await worker('w2', { drivers: ['synthetic'], labels: { pool: 'ci' } });
    await worker('w3', { labels: { pool: 'ci' }, status: 'offline' });
    await worker('w4', { labels: { pool: 'ci' }, paused: true });
    const err = await rejection(ops.prefetch(`${REGISTRY}/fleet/guest:1`, { pool: 'ci' }, 'a'));
    expect(err.statusCode).toBe(422);
    expect(err.code).toBe('no_eligible_worker');
    expect(err.message).toContain('qemu driver');
    expect(err.message).toContain('w1: lacks pool=ci');
    expect(err.message).toContain('w2: no qemu driver (has synthetic)');
    expect(err.message).toContain('w3: offline');
    expect(err.message).toContain('w4: drained');
    expect(await t.db.imageOperation.count()).toBe(0);
  });

  it('refuses local image names (400) without asking any registry', async () => {
    await worker('w1');
    expect((await rejection(ops.prefetch('fleet-guest', {}, 'a'))).statusCode).toBe(400);
    expect(resolved).toEqual([]);
  });

  it('maps an unsupported manifest to 422 image_unsupported', async () => {
    await worker('w1');
    ops = new ImageOperationService(t.db, events, bus, registries, { resolveManifest: async () => ({ ref: { registry: REGISTRY, repository: 'x' }, digest: DIGEST, pinned: `${REGISTRY}/x@${DIGEST}`, mediaType: 'm', json: {} }) }, new WorkerImageService(t.db), {
      formatOf: () => {
        throw new Error('this is a container image, not a VM image');
      },
    });
    const err = await rejection(ops.prefetch(`${REGISTRY}/x:1`, {}, 'a'));
    expect(err.statusCode).toBe(422);
    expect(err.code).toBe('image_unsupported');
    expect(err.message).toContain('container image');
  });
});

describe('pendingFor and worker reports', () => {
  it('carries pending and running operations with the registry access they need', async () => {
    await registries.put(REGISTRY, { username: 'ci', password: 'registry-pw', insecure: true, verify: false }, 'admin');
    const w1 = await worker('w1');
    const w2 = await worker('w2');
    const r = await ops.prefetch(`${REGISTRY}/fleet/guest:1`, {}, 'a');
    const mine = r.operations.find((o) => o.worker === 'w1')!;
    const theirs = r.operations.find((o) => o.worker === 'w2')!;
    const list = await ops.pendingFor(w1);
    expect(list).toEqual([{ id: mine.id, prefetch: { pull: { reference: `${REGISTRY}/fleet/guest@${DIGEST}`, access: { insecure: true, caPem: '', username: 'ci', password: 'registry-pw' } } } }]);
    expect(await ops.pendingFor(randomUUID())).toEqual([]);

    // Another worker's report is ignored; its own moves it on.
    expect(await ops.report(w2, { id: mine.id, state: 'running', message: '', bytesDone: 1n, bytesTotal: 2n, digest: '' })).toBe(false);
    expect((await ops.get(mine.id)).state).toBe('pending');
    expect(await ops.report(w1, { id: mine.id, state: 'running', message: 'pulling', bytesDone: 25n, bytesTotal: 100n, digest: '' }, 'w1')).toBe(true);
    expect(await ops.get(mine.id)).toMatchObject({ state: 'running', message: 'pulling', progress: { bytesDone: 25, bytesTotal: 100, percent: 25 } });
    expect((await ops.pendingFor(w1)).map((o) => o.id)).toEqual([mine.id]);

    dirty = [];
    expect(await ops.report(w1, { id: mine.id, state: 'succeeded', message: 'pulled in 3 s', bytesDone: 100n, bytesTotal: 100n, digest: DIGEST }, 'w1')).toBe(true);
    expect(await ops.get(mine.id)).toMatchObject({ state: 'succeeded', message: 'pulled in 3 s', progress: { percent: 100 } });
    expect(dirty).toEqual([w1]);
    expect(await ops.pendingFor(w1)).toEqual([]);
    // Terminal states stick.
    expect(await ops.report(w1, { id: mine.id, state: 'failed', message: 'late', bytesDone: 0n, bytesTotal: 0n, digest: '' }, 'w1')).toBe(false);
    expect(await ops.report(w1, { id: mine.id, state: 'running', message: 'late', bytesDone: 0n, bytesTotal: 0n, digest: '' }, 'w1')).toBe(false);
    expect((await ops.get(mine.id)).state).toBe('succeeded');

    // A failure straight from pending, with the worker's reason, and an event.
    expect(await ops.report(w2, { id: theirs.id, state: 'failed', message: 'no space left on the device', bytesDone: 0n, bytesTotal: 0n, digest: '' }, 'w2')).toBe(true);
    expect(await ops.get(theirs.id)).toMatchObject({ state: 'failed', message: 'no space left on the device' });
    const ev = (await events.query({ limit: 10, order: 'asc', kind: 'image.prefetch' })).events;
    expect(ev.map((e) => [e.level, e.message])).toEqual([
      ['info', `prefetch of ${REGISTRY}/fleet/guest@${DIGEST} on worker w1 succeeded: pulled in 3 s`],
      ['error', `prefetch of ${REGISTRY}/fleet/guest@${DIGEST} on worker w2 failed: no space left on the device`],
    ]);
    expect(JSON.stringify(ev)).not.toContain('registry-pw');
    expect((await ops.list({ worker: 'w2' })).map((o) => o.id)).toEqual([theirs.id]);
    expect((await ops.list({ state: 'succeeded' })).map((o) => o.id)).toEqual([mine.id]);
    await expect(ops.report(w1, { id: 'no-such-op', state: 'running', message: '', bytesDone: 0n, bytesTotal: 0n, digest: '' })).resolves.toBe(false);
  });

  it('deletes operations with their worker, and purges finished ones after the retention', async () => {
    const w1 = await worker('w1');
    const r = await ops.prefetch(`${REGISTRY}/fleet/guest:1`, {}, 'a');
    await ops.report(w1, { id: r.operations[0]!.id, state: 'succeeded', message: '', bytesDone: 0n, bytesTotal: 0n, digest: '' });
    expect(await ops.purgeFinished(new Date(Date.now() - 1000))).toBe(0);
    expect(await ops.purgeFinished(new Date(Date.now() + 1000))).toBe(1);
    await ops.prefetch(`${REGISTRY}/fleet/guest:1`, {}, 'a');
    expect(await t.db.imageOperation.count()).toBe(1);
    await t.db.worker.delete({ where: { id: w1 } });
    expect(await t.db.imageOperation.count()).toBe(0);
  });
});

describe('delete', () => {
  async function holding(workerId: string, digest: string, inUse = 0) {
    await t.db.workerImage.create({ data: { workerId, digest, reference: `${REGISTRY}/fleet/guest@${digest}`, format: 'fleet-qemu', sizeBytes: 1000n, state: 'ready', inUse } });
  }

  it('asks the worker to delete an image it holds; refuses one in use or unknown', async () => {
    const w1 = await worker('w1');
    await holding(w1, DIGEST);
    await holding(w1, OTHER, 2);
    const op = await ops.deleteImage('w1', DIGEST, 'token:ops');
    expect(op).toMatchObject({ kind: 'delete', worker: 'w1', digest: DIGEST, state: 'pending' });
    expect(dirty).toEqual([w1]);
    expect(await ops.pendingFor(w1)).toEqual([{ id: op.id, delete: { digest: DIGEST } }]);
    // Asked again while under way: the same operation.
    expect((await ops.deleteImage('w1', DIGEST, 'token:ops')).id).toBe(op.id);

    const inUse = await rejection(ops.deleteImage('w1', OTHER, 'token:ops'));
    expect(inUse.statusCode).toBe(409);
    expect(inUse.message).toMatch(/in use on worker w1 by 2 VM instances/);
    expect((await rejection(ops.deleteImage('w1', 'sha256:' + 'c'.repeat(64), 'a'))).statusCode).toBe(404);
    expect((await rejection(ops.deleteImage('w1', 'latest', 'a'))).statusCode).toBe(400);
    expect((await rejection(ops.deleteImage('nope', DIGEST, 'a'))).statusCode).toBe(404);
  });

  it('refuses while a VM placed on the worker runs that image (even before the worker counts it)', async () => {
    const w1 = await worker('w1');
    await holding(w1, DIGEST);
    await vm('web-1', { workerId: w1, state: 'scheduled', imageDigest: DIGEST });
    const err = await rejection(ops.deleteImage('w1', DIGEST, 'a'));
    expect(err.statusCode).toBe(409);
    expect(err.message).toContain('web-1');
  });
});

describe('push', () => {
  it('pushes a stopped VM from its worker, with its attempt and the registry access', async () => {
    await registries.put(REGISTRY, { username: 'ci', password: 'push-pw', verify: false }, 'admin');
    const w1 = await worker('w1');
    const id = await vm('base', { workerId: w1, attempt: 3 });
    const op = await ops.push('base', `${REGISTRY}/fleet/base:2`, 'token:dev');
    expect(op).toMatchObject({ kind: 'push', worker: 'w1', vm: 'base', reference: `${REGISTRY}/fleet/base:2`, digest: '', state: 'pending' });
    expect(dirty).toEqual([w1]);
    expect(await ops.pendingFor(w1)).toEqual([{ id: op.id, push: { vmId: id, attempt: 3, reference: `${REGISTRY}/fleet/base:2`, access: { insecure: false, caPem: '', username: 'ci', password: 'push-pw' } } }]);
    expect((await ops.pushInProgress(id))?.id).toBe(op.id);
    // One push of a VM at a time.
    expect((await rejection(ops.push('base', `${REGISTRY}/fleet/base:3`, 'a'))).statusCode).toBe(409);
    // The worker reports the digest it pushed.
    await ops.report(w1, { id: op.id, state: 'succeeded', message: `pushed as ${OTHER}`, bytesDone: 10n, bytesTotal: 10n, digest: OTHER }, 'w1');
    expect(await ops.get(op.id)).toMatchObject({ state: 'succeeded', digest: OTHER });
    const ev = (await events.query({ limit: 5, order: 'desc', kind: 'image.push' })).events[0]!;
    expect(ev.vmId).toBe(id);
    expect(ev.message).toContain(`push of VM base to ${REGISTRY}/fleet/base:2 (${OTHER}) from worker w1 succeeded`);
    // A tag defaults to latest.
    expect((await ops.push('base', `${REGISTRY}/fleet/base`, 'a')).reference).toBe(`${REGISTRY}/fleet/base:latest`);
  });

  it('refuses what cannot be pushed, saying what to do', async () => {
    const w1 = await worker('w1');
    await vm('running', { workerId: w1, state: 'running', desiredPower: 'running' });
    await vm('stopping', { workerId: w1, state: 'stopping', desiredPower: 'stopped' });
    await vm('pending', { workerId: null, state: 'pending', desiredPower: 'running' });
    await vm('ok', { workerId: w1 });
    const running = await rejection(ops.push('running', `${REGISTRY}/x:1`, 'a'));
    expect(running.statusCode).toBe(409);
    expect(running.message).toContain('fleet vm stop running');
    expect((await rejection(ops.push('stopping', `${REGISTRY}/x:1`, 'a'))).message).toMatch(/still stopping/);
    expect((await rejection(ops.push('pending', `${REGISTRY}/x:1`, 'a'))).message).toMatch(/no disk on any worker/);
    expect((await rejection(ops.push('nope', `${REGISTRY}/x:1`, 'a'))).statusCode).toBe(404);
    expect((await rejection(ops.push('ok', 'fleet-guest', 'a'))).statusCode).toBe(400);
    expect((await rejection(ops.push('ok', `${REGISTRY}/x@${DIGEST}`, 'a'))).message).toMatch(/names a tag/);
    expect((await rejection(ops.push('ok', `${REGISTRY}/UPPER:1`, 'a'))).statusCode).toBe(400);
    expect(await t.db.imageOperation.count()).toBe(0);
  });

  it('fails a push whose VM was deleted or placed again before the worker started it', async () => {
    const w1 = await worker('w1');
    const w2 = await worker('w2');
    const gone = await vm('gone', { workerId: w1 });
    const moved = await vm('moved', { workerId: w1 });
    const replaced = await vm('replaced', { workerId: w1 });
    const a = await ops.push('gone', `${REGISTRY}/x:1`, 'a');
    const b = await ops.push('moved', `${REGISTRY}/x:2`, 'a');
    const c = await ops.push('replaced', `${REGISTRY}/x:3`, 'a');
    await t.db.vm.delete({ where: { id: gone } });
    await t.db.vm.update({ where: { id: moved }, data: { workerId: w2 } });
    await t.db.vm.update({ where: { id: replaced }, data: { attempt: 2, scheduledAt: new Date(Date.now() + 1000) } });
    expect(await ops.pendingFor(w1)).toEqual([]);
    expect(await ops.get(a.id)).toMatchObject({ state: 'failed', message: 'not started: the VM was deleted before the push started' });
    expect((await ops.get(b.id)).message).toMatch(/left the worker/);
    expect((await ops.get(c.id)).message).toMatch(/placed again \(attempt 2\)/);
  });
});
