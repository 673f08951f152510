// The storage-health tracker against a real SQLite database whose writes are refused
// (SQLITE_READONLY) and then allowed again: it turns degraded on a storage fault only,
// probes by itself, and comes back without any traffic.
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StorageHealth, STORAGE_PROBE_KEY, settingsRowProbe } from './storage-health.ts';
import { realStorageError, refuseWrites, tempDb, type TempDb } from './testing.ts';

const log = pino({ level: 'silent' });
let t: TempDb;
let health: StorageHealth | undefined;
beforeEach(async () => {
  t = await tempDb();
});
afterEach(async () => {
  health?.stop();
  await t.close();
});

async function until(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('StorageHealth', () => {
  it('ignores errors that are not storage faults', async () => {
    health = new StorageHealth({ probe: settingsRowProbe(t.db), log });
    await t.db.setting.create({ data: { key: 'a', value: '1' } });
    const dup = await t.db.setting.create({ data: { key: 'a', value: '1' } }).catch((e: unknown) => e);
    expect(health.observe(dup)).toBeNull();
    expect(health.observe(new Error('bug'))).toBeNull();
    expect(health.status()).toEqual({ ok: true });
  });

  it('is degraded from the first storage fault, probes with a real write, and recovers by itself', async () => {
    const changes: boolean[] = [];
    const faults: string[] = [];
    let recovered = 0;
    let probes = 0;
    const probe = settingsRowProbe(t.db);
    health = new StorageHealth({
      probe: async () => {
        probes++;
        return probe();
      },
      log,
      probeIntervalMs: 20,
      retryAfterS: 7,
      onChange: (ok) => changes.push(ok),
      onFault: (f) => faults.push(f.code),
    });
    health.onRecovered(() => recovered++);

    const err = await realStorageError(t.db);
    await refuseWrites(t.db, true); // the storage stays unavailable
    const before = Date.now();
    expect(health.observe(err)).toMatchObject({ kind: 'read-only', code: 'SQLITE_READONLY' });
    expect(health.ok).toBe(false);
    const s = health.status();
    expect(s).toMatchObject({ ok: false, code: 'SQLITE_READONLY', error: 'the database is read-only (SQLITE_READONLY: attempt to write a readonly database)' });
    expect(Date.parse(s.since!)).toBeGreaterThanOrEqual(before - 1000);
    expect(health.retryAfterS).toBe(7);

    // A second fault keeps the first `since`.
    health.observe(err);
    expect(health.status().since).toBe(s.since);

    // The probe keeps failing while writes are refused...
    await until(() => probes >= 3);
    expect(health.ok).toBe(false);
    expect(health.status().checkedAt).toBeDefined();
    expect(recovered).toBe(0);

    // ...and the first probe after the storage is back restores ok, with no traffic at all.
    await refuseWrites(t.db, false);
    await until(() => health!.ok);
    expect(recovered).toBe(1);
    expect(health.status()).toEqual({ ok: true });
    expect(changes).toEqual([false, true]);
    expect(faults).toEqual(['SQLITE_READONLY', 'SQLITE_READONLY']);
    // The probe wrote its row (a real write, no schema change).
    expect((await t.db.setting.findUnique({ where: { key: STORAGE_PROBE_KEY } }))?.value).toMatch(/^"\d{4}-/);

    // No more probes once ok.
    const after = probes;
    await new Promise((r) => setTimeout(r, 80));
    expect(probes).toBe(after);
  });

  it('a probe that fails with something else keeps it degraded (and says so)', async () => {
    const warnings: string[] = [];
    const spy = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
    health = new StorageHealth({ probe: async () => { throw new Error('not a storage error'); }, log: spy, probeIntervalMs: 10 });
    health.observe(await realStorageError(t.db));
    expect(await health.probeNow()).toBe(false);
    expect(health.ok).toBe(false);
    expect(warnings.join('')).toMatch(/not a storage fault/);
  });
});
