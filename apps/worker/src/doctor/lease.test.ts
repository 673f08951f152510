import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkLease } from './lease.ts';

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-doctor-lease-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('doctor: controller lease', () => {
  const write = (o: unknown) => writeFile(path.join(dir, 'lease.json'), typeof o === 'string' ? o : JSON.stringify(o));
  it('says whether the lease holds, and what an expired one means for the VMs', async () => {
    expect(checkLease(dir).status).toBe('skip');
    const now = 1_000_000_000;
    await write({ validUntilUnixMs: now + 15_000, fenceAfterMs: 20_000, renewedAtUnixMs: now - 5_000 });
    expect(checkLease(dir, now)).toEqual({ status: 'ok', detail: 'valid for 15 s more (renewed 5 s ago; fence after 20 s)' });
    expect(checkLease(dir, now + 45_000)).toMatchObject({ status: 'warn', detail: expect.stringMatching(/^expired 30 s ago: VMs with disconnect policy reschedule are stopped/) });
    await write({ validUntilUnixMs: null, fenceAfterMs: 0, renewedAtUnixMs: now });
    expect(checkLease(dir, now).status).toBe('ok');
    await write('{not json');
    expect(checkLease(dir, now).status).toBe('fail');
  });
});
