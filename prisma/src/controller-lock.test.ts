// One controller per SQLite database: a second one is refused with a message naming the first; the lock
// goes with the process that held it, however it ended.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireControllerLock, ControllerLockError } from './controller-lock.ts';

const LOCK_MODULE = fileURLToPath(new URL('./controller-lock.ts', import.meta.url));

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-lock-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('SQLite', () => {
  it('refuses a second holder in the same process, and takes the lock once the first released it', async () => {
    const url = `file:${path.join(dir, 'a.db')}`;
    const first = await acquireControllerLock(url);
    await expect(acquireControllerLock(url)).rejects.toThrow(ControllerLockError);
    await expect(acquireControllerLock(url)).rejects.toThrow(new RegExp(`another Fleet controller is running on the database .*a\\.db \\(pid ${process.pid} on`));
    await first.release();
    const second = await acquireControllerLock(url);
    await second.release();
  });

  it('a holder killed with SIGKILL leaves no stale lock behind', async () => {
    const url = `file:${path.join(dir, 'b.db')}`;
    const child = spawn(process.execPath, ['--import', 'tsx', '-e', `import(${JSON.stringify(LOCK_MODULE)}).then(async (m) => { await m.acquireControllerLock(${JSON.stringify(url)}); console.log('held'); setInterval(() => {}, 1000); })`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => d.toString().includes('held') && resolve());
      child.once('exit', (c) => reject(new Error(`lock holder exited ${c}`)));
    });
    await expect(acquireControllerLock(url)).rejects.toThrow(new RegExp(`pid ${child.pid} on`));
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    const mine = await acquireControllerLock(url);
    await mine.release();
  }, 30_000);
});

it('PostgreSQL takes no lock: several controllers share one database (leader-lease.ts)', async () => {
  const a = await acquireControllerLock('postgresql://fleet@127.0.0.1:1/none');
  const b = await acquireControllerLock('postgresql://fleet@127.0.0.1:1/none');
  expect(a.description).toMatch(/several controllers/);
  await a.release();
  await b.release();
});
