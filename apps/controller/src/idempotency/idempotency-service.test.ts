// Idempotency-Key records shared by several controllers (issue 13): a request in flight on another
// live controller is in flight for everyone; one whose controller died (or released it) is taken
// over by exactly one controller.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDb, type TempDb } from '../storage/testing.ts';
import { IdempotencyService, requestHash } from './idempotency-service.ts';

let t: TempDb;
beforeEach(async () => {
  t = await tempDb();
});
afterEach(async () => {
  await t.close();
});

const scope = { principal: 'ci', route: 'POST /v1/vms', key: 'k-1' };
const hash = requestHash('POST', '/v1/vms', { name: 'a' });

describe('Idempotency-Key across controllers', () => {
  it('in flight on a live controller: another one answers in_flight, never executes it twice', async () => {
    const alive = new Set(['ctl-a', 'ctl-b']);
    const a = new IdempotencyService(t.db, { ownerId: 'ctl-a', isOwnerAlive: (o) => alive.has(o) });
    const b = new IdempotencyService(t.db, { ownerId: 'ctl-b', isOwnerAlive: (o) => alive.has(o) });
    const first = await a.begin(scope, hash);
    expect(first.kind).toBe('execute');
    expect((await b.begin(scope, hash)).kind).toBe('in_flight');
    // ctl-a dies mid-request (nothing committed): ctl-b takes it over and executes it, once.
    alive.delete('ctl-a');
    expect((await b.begin(scope, hash)).kind).toBe('execute');
    const c = new IdempotencyService(t.db, { ownerId: 'ctl-c', isOwnerAlive: (o) => alive.has(o) || o === 'ctl-c' });
    expect((await c.begin(scope, hash)).kind).toBe('in_flight'); // ctl-b owns it now and is alive
    const rec = await t.db.idempotencyKey.findFirstOrThrow();
    expect(rec.owner).toBe('ctl-b');
  });

  it('a record its owner released (no response stored) can be taken over at once', async () => {
    const a = new IdempotencyService(t.db, { ownerId: 'ctl-a', isOwnerAlive: () => true });
    const b = new IdempotencyService(t.db, { ownerId: 'ctl-b', isOwnerAlive: () => true });
    const first = await a.begin(scope, hash);
    if (first.kind !== 'execute') throw new Error('expected execute');
    a.release(scope, first.recordId);
    await new Promise((r) => setTimeout(r, 50)); // the release is written in the background
    expect((await b.begin(scope, hash)).kind).toBe('execute');
  });
});
