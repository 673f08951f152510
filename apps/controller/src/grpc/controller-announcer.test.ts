import { describe, expect, it } from 'vitest';
import { ControllerListAnnouncer, sameAddresses } from './controller-announcer.ts';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('ControllerListAnnouncer', () => {
  it('a renewal carries the list only when it changed since the stream last carried it, looked up at most every refreshMs', async () => {
    let clock = 0;
    let list = ['a:7443', 'b:7443'];
    let lookups = 0;
    const a = new ControllerListAnnouncer(async () => (lookups++, list), 5000, () => clock);
    a.sent(['a:7443', 'b:7443']); // Welcome
    expect(a.forRenewal()).toEqual([]);
    expect(lookups).toBe(0); // looked up at Welcome: not again before refreshMs

    list = ['a:7443', 'b:7443', 'c:7443']; // a controller joins
    clock = 5000;
    expect(a.forRenewal()).toEqual([]); // the lookup runs in the background: never delays a renewal
    await tick();
    expect(lookups).toBe(1);
    expect(a.forRenewal()).toEqual(['a:7443', 'b:7443', 'c:7443']);
    expect(a.forRenewal()).toEqual([]); // carried once

    list = []; // the lookup has nothing right now: not "no controllers"
    clock = 10_000;
    a.forRenewal();
    await tick();
    expect(a.forRenewal()).toEqual([]);

    list = ['c:7443', 'b:7443', 'a:7443']; // the same set, reordered: no news
    clock = 15_000;
    a.forRenewal();
    await tick();
    expect(a.forRenewal()).toEqual([]);
  });

  it('a failing lookup changes nothing', async () => {
    const a = new ControllerListAnnouncer(() => Promise.reject(new Error('db down')), 0, () => 1);
    a.sent(['a:7443']);
    a.forRenewal();
    await tick();
    expect(a.forRenewal()).toEqual([]);
  });

  it('compares as sets', () => {
    expect(sameAddresses(['a', 'b'], ['b', 'a'])).toBe(true);
    expect(sameAddresses(['a'], ['a', 'b'])).toBe(false);
  });
});
