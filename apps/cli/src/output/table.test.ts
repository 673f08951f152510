import { describe, expect, it } from 'vitest';
import { makeColors } from './color.ts';
import { formatKeyValues, formatLabels, formatTable, visibleLength } from './table.ts';

describe('formatTable', () => {
  it('aligns columns by the widest cell, without borders or trailing spaces', () => {
    const out = formatTable(
      ['NAME', 'STATE', 'IP'],
      [
        ['web-1', 'running', '10.0.0.5'],
        ['database-primary', 'pending', '-'],
      ],
    );
    expect(out).toBe(
      'NAME               STATE     IP\n' + //
        'web-1              running   10.0.0.5\n' +
        'database-primary   pending   -\n',
    );
  });

  it('ignores ANSI colour codes when measuring', () => {
    const c = makeColors(true);
    const out = formatTable(['STATE', 'X'], [[c.state('running'), 'a'], ['failed', 'b']]);
    const lines = out.trimEnd().split('\n').map((l) => l.replace(/\x1b\[[0-9;]*m/g, ''));
    expect(lines).toEqual(['STATE     X', 'running   a', 'failed    b']);
    expect(visibleLength(c.red('abc'))).toBe(3);
  });

  it('keeps a cell on one line', () => {
    expect(formatTable(['A', 'B'], [['x\ny', 'z']])).toBe('A     B\nx y   z\n');
  });
});

describe('formatKeyValues and labels', () => {
  it('aligns values', () => {
    expect(formatKeyValues([['Name', 'web-1'], ['Restart policy', 'never']])).toBe('Name:            web-1\nRestart policy:  never\n');
  });
  it('formats labels', () => {
    expect(formatLabels({})).toBe('-');
    expect(formatLabels({ team: 'web', tier: 'fe' })).toBe('team=web,tier=fe');
  });
});

describe('colours', () => {
  it('are plain text when disabled', () => {
    const c = makeColors(false);
    expect(c.state('failed')).toBe('failed');
    expect(c.level('error', 'x')).toBe('x');
  });
  it('colour states by health when enabled', () => {
    const c = makeColors(true);
    expect(c.state('running')).toBe('\x1b[32mrunning\x1b[39m');
    expect(c.state('failed')).toBe('\x1b[31mfailed\x1b[39m');
    expect(c.state('pending')).toBe('\x1b[33mpending\x1b[39m');
  });
});
