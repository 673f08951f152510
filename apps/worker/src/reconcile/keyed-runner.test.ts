import { describe, expect, it } from 'vitest';
import { KeyedRunner } from './keyed-runner.ts';

const tick = () => new Promise((r) => setTimeout(r, 5));

describe('KeyedRunner', () => {
  it('runs one task per key, coalesces triggers and re-runs once when triggered mid-run', async () => {
    const runs: string[] = [];
    const gates = new Map<string, () => void>();
    const runner = new KeyedRunner({
      concurrency: 4,
      run: (key) => {
        runs.push(key);
        return new Promise<void>((resolve) => gates.set(key, resolve));
      },
    });
    runner.trigger('a');
    runner.trigger('a'); // already queued/running
    await tick();
    expect(runs).toEqual(['a']);
    runner.trigger('a');
    runner.trigger('a'); // both collapse into one re-run
    gates.get('a')!();
    await tick();
    expect(runs).toEqual(['a', 'a']);
    gates.get('a')!();
    await runner.idle();
    expect(runs).toEqual(['a', 'a']);
  });

  it('bounds concurrency across keys and reports idle', async () => {
    let active = 0;
    let peak = 0;
    const runner = new KeyedRunner({
      concurrency: 2,
      run: async () => {
        active++;
        peak = Math.max(peak, active);
        await tick();
        active--;
      },
    });
    for (const k of ['a', 'b', 'c', 'd', 'e']) runner.trigger(k);
    await runner.idle();
    expect(peak).toBe(2);
    expect(active).toBe(0);
  });

  it('keeps going after a task throws', async () => {
    const errors: string[] = [];
    const runner = new KeyedRunner({
      concurrency: 1,
      run: async (key) => {
        if (key === 'bad') throw new Error('boom');
      },
      onError: (key) => errors.push(key),
    });
    runner.trigger('bad');
    runner.trigger('good');
    await runner.idle();
    expect(errors).toEqual(['bad']);
  });
});
