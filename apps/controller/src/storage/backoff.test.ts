import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { backoffDelayMs, PeriodicTask } from './backoff.ts';
import { BackgroundWrites } from './background-writes.ts';
import { realStorageError, tempDb } from './testing.ts';

const log = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(5);
  }
}
const storageError = () => Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });

describe('backoffDelayMs', () => {
  it('doubles from base, caps at max, jitters within [d/2, d]', () => {
    const o = { baseMs: 100, maxMs: 1000 };
    expect([1, 2, 3, 4, 5, 50].map((n) => backoffDelayMs(n, { ...o, random: () => 0.999999 }))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect([1, 2, 3, 4, 5].map((n) => backoffDelayMs(n, { ...o, random: () => 0 }))).toEqual([50, 100, 200, 400, 500]);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelayMs(3, o);
      expect(d).toBeGreaterThanOrEqual(200);
      expect(d).toBeLessThanOrEqual(400);
    }
  });
});

describe('PeriodicTask', () => {
  it('keeps running through failures, backs off while they last, and is back to its interval after a success', async () => {
    const times: number[] = [];
    let fail = true;
    const seen: unknown[] = [];
    let running = 0;
    let overlapped = false;
    const task = new PeriodicTask(
      async () => {
        times.push(Date.now());
        if (running++) overlapped = true;
        await sleep(2);
        running--;
        if (fail) throw storageError();
      },
      { name: 'test', intervalMs: 10, log, backoff: { maxMs: 80, random: () => 0.999999 }, sink: { observe: (e) => seen.push(e) }, runAtStart: true },
    ).start();
    try {
      await until(() => times.length >= 5);
      expect(task.failures).toBeGreaterThanOrEqual(4);
      const gaps = times.slice(1).map((t, i) => t - times[i]!);
      expect(gaps[3]!).toBeGreaterThanOrEqual(60); // 10, 20, 40, 80 (capped) + run time
      expect(seen.length).toBeGreaterThanOrEqual(times.length - 1); // every failed run was reported (one may still be under way)
      fail = false;
      task.runNow(); // e.g. the storage came back
      await until(() => task.failures === 0);
      const n = times.length;
      await sleep(60);
      expect(times.length).toBeGreaterThanOrEqual(n + 3); // every ~10 ms again
      expect(overlapped).toBe(false);
    } finally {
      task.stop();
    }
    const n = times.length;
    await sleep(40);
    expect(times.length).toBeLessThanOrEqual(n + 1);
  });
});

describe('BackgroundWrites', () => {
  it('runs writes at once; keeps failed ones in order and retries them until they succeed', async () => {
    const done: string[] = [];
    let down = true;
    const writes = new BackgroundWrites({ log, backoff: { baseMs: 5, maxMs: 20 } });
    const write = (name: string) => async () => {
      if (down) throw storageError();
      done.push(name);
    };
    writes.run('a', write('a'));
    writes.run('b', write('b'));
    writes.run('c', write('c'));
    await sleep(50);
    expect(done).toEqual([]);
    expect(writes.size).toBe(3);
    down = false;
    await writes.idle();
    expect(done).toEqual(['a', 'b', 'c']);
    writes.run('d', write('d'));
    await writes.idle();
    expect(done).toEqual(['a', 'b', 'c', 'd']);
  });

  it('retries a real storage error; gives up on other errors after a few attempts; drops the oldest beyond its bound', async () => {
    const t = await tempDb();
    try {
      const real = await realStorageError(t.db);
      let realAttempts = 0;
      let bugAttempts = 0;
      const writes = new BackgroundWrites({ log, backoff: { baseMs: 1, maxMs: 2 }, maxQueued: 3 });
      writes.run('bug', async () => {
        bugAttempts++;
        throw new TypeError('not a storage error');
      });
      await writes.idle();
      expect(bugAttempts).toBe(3);
      writes.run('real', async () => {
        if (++realAttempts < 6) throw real;
      });
      await writes.idle();
      expect(realAttempts).toBe(6);

      const order: string[] = [];
      let down = true;
      for (const name of ['1', '2', '3', '4', '5']) writes.run(name, async () => { if (down) throw real; order.push(name); });
      expect(writes.size).toBe(3);
      down = false;
      writes.retryNow();
      await writes.idle();
      expect(order).toEqual(['3', '4', '5']);
      writes.stop();
    } finally {
      await t.close();
    }
  });
});
