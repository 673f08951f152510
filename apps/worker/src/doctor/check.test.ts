import { describe, expect, it } from 'vitest';
import { fail, formatReport, ok, runChecks, warn } from './check.ts';

describe('doctor runner', () => {
  it('is ok with warnings, not ok with a failure, and keeps the order and shape of the checks', async () => {
    const good = await runChecks([
      { name: 'a', run: async () => ok('fine') },
      { name: 'b', run: async () => warn('meh', 'do x') },
    ]);
    expect(good).toEqual({ ok: true, checks: [{ name: 'a', status: 'ok', detail: 'fine' }, { name: 'b', status: 'warn', detail: 'meh', fix: 'do x' }] });
    const bad = await runChecks([{ name: 'a', run: async () => ok('fine') }, { name: 'c', run: async () => fail('broken', 'do y') }]);
    expect(bad.ok).toBe(false);
    expect(JSON.parse(JSON.stringify(bad))).toEqual({ ok: false, checks: [{ name: 'a', status: 'ok', detail: 'fine' }, { name: 'c', status: 'fail', detail: 'broken', fix: 'do y' }] });
  });

  it('turns a hanging check into a failure after its timeout, and a throwing one into a failure that says why', async () => {
    const started = Date.now();
    const report = await runChecks([
      { name: 'hangs', timeoutMs: 100, run: () => new Promise(() => {}) },
      { name: 'throws', run: async () => { throw new Error('no permission'); } },
      { name: 'after', run: async () => ok('still runs') },
    ]);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(report.checks.map((c) => [c.name, c.status])).toEqual([['hangs', 'fail'], ['throws', 'fail'], ['after', 'ok']]);
    expect(report.checks[0]!.detail).toContain('did not finish within 100 ms');
    expect(report.checks[1]!.detail).toContain('no permission');
  });

  it('prints one line per check with its mark, and the fix under anything not ok', () => {
    const lines = formatReport({
      ok: false,
      checks: [
        { name: 'node', status: 'ok', detail: 'Node.js 22.1.0' },
        { name: 'kvm', status: 'warn', detail: 'not usable', fix: 'enable it' },
        { name: 'controller', status: 'fail', detail: 'refused', fix: 'start it' },
      ],
    });
    expect(lines[0]).toMatch(/^✓ node\s+Node\.js 22\.1\.0$/);
    expect(lines[1]).toMatch(/^! kvm\s+not usable$/);
    expect(lines[2]).toMatch(/^\s+fix: enable it$/);
    expect(lines[3]).toMatch(/^✗ controller\s+refused$/);
    expect(lines[4]).toMatch(/^\s+fix: start it$/);
    expect(lines.at(-1)).toBe('1 check(s) failed, 1 warning(s).');
  });
});
