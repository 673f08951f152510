import { describe, expect, it } from 'vitest';
import { ProgressDisplay, formatByteProgress, formatBytes, formatProgress, formatProgressShort, percentOf, progressBar, progressDisplayFor } from './progress.ts';

const GiB = 1024 ** 3;
const p = (bytesDone: number, bytesTotal: number, percent = bytesTotal > 0 ? (100 * bytesDone) / bytesTotal : 0) => ({ bytesDone, bytesTotal, percent });

function sink(isTTY = false) {
  const s = { text: '', isTTY, columns: 100, write: (c: string) => (s.text += c) };
  return s;
}

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [512, '512 B'],
    [1536, '1.5 KiB'],
    [37 * 1024 * 1024, '37 MiB'],
    [Math.round(3.4 * GiB), '3.4 GiB'],
    [150 * GiB, '150 GiB'],
    [2 * 1024 * GiB, '2 TiB'],
    [-1, '-'],
  ])('%d → %s', (n, text) => {
    expect(formatBytes(n)).toBe(text);
  });

  it('shows done and total in the total\'s unit', () => {
    expect(formatByteProgress(Math.round(1.2 * GiB), Math.round(3.4 * GiB))).toBe('1.2/3.4 GiB');
    expect(formatByteProgress(300 * 1024 * 1024, 2 * GiB)).toBe('0.3/2 GiB');
    expect(formatByteProgress(5 * 1024 * 1024, 0)).toBe('5 MiB');
    expect(formatByteProgress(5 * 1024 * 1024, 2 * GiB)).toBe('5 MiB/2 GiB');
    expect(formatByteProgress(0, 2 * GiB)).toBe('0/2 GiB');
  });
});

describe('bars', () => {
  it('fills by percent, whole percents rounded down', () => {
    expect(progressBar(0)).toBe('[          ]');
    expect(progressBar(37)).toBe('[####      ]');
    expect(progressBar(50)).toBe('[#####     ]');
    expect(progressBar(100)).toBe('[##########]');
    expect(progressBar(null)).toBe('[          ]');
    expect(progressBar(150, 4)).toBe('[####]');
  });

  it('takes the percent from the API, or from the bytes, or none when nothing is known', () => {
    expect(percentOf(p(1, 3, 37.9))).toBe(37);
    expect(percentOf({ bytesDone: 50, bytesTotal: 200, percent: Number.NaN })).toBe(25);
    expect(percentOf(p(5, 0))).toBeNull();
    expect(percentOf(null)).toBeNull();
  });

  it('renders the line the brief asks for', () => {
    expect(formatProgress(p(Math.round(1.2 * GiB), Math.round(3.4 * GiB), 37))).toBe('[####      ]  37 %  1.2/3.4 GiB');
    expect(formatProgress(p(5 * 1024 * 1024, 0))).toBe('[          ] ? %  5 MiB');
    expect(formatProgressShort(p(Math.round(1.2 * GiB), Math.round(3.4 * GiB), 37))).toBe('37 % (1.2/3.4 GiB)');
    expect(formatProgressShort(null)).toBe('-');
  });
});

describe('ProgressDisplay off a terminal', () => {
  it('prints a line on the first update, on each 10 %, and every 5 s, never a carriage return', () => {
    let now = 0;
    const out = sink(false);
    const d = new ProgressDisplay(out, { tty: false, now: () => now });
    const item = (pct: number) => ({ key: 'pull', label: 'pulling r/x:1', progress: p(pct * GiB / 100, GiB, pct) });
    d.update([item(1)]);
    d.update([item(5)]); // same decade, too soon: nothing
    d.update([item(9)]);
    d.update([item(12)]); // a new decade
    now = 2_000;
    d.update([item(13)]);
    now = 7_100; // 5 s after the last line, even within the decade
    d.update([item(14)]);
    d.update([item(55)]);
    d.end([item(100)]);
    const lines = out.text.trimEnd().split('\n');
    expect(lines).toEqual([
      'pulling r/x:1  [          ]   1 %  10.2 MiB/1 GiB',
      'pulling r/x:1  [#         ]  12 %  0.1/1 GiB',
      'pulling r/x:1  [#         ]  14 %  0.1/1 GiB',
      'pulling r/x:1  [######    ]  55 %  0.6/1 GiB',
      'pulling r/x:1  [##########] 100 %  1/1 GiB',
    ]);
    expect(out.text).not.toMatch(/\r|\x1b/);
  });

  it('prints a line when an item\'s status changes, labels aligned', () => {
    const out = sink(false);
    const d = new ProgressDisplay(out, { tty: false, now: () => 0 });
    d.update([
      { key: 'a', label: 'mac-1', progress: null, status: 'pending' },
      { key: 'b', label: 'mac-200', progress: p(0, 0), status: 'running' },
    ]);
    d.update([
      { key: 'a', label: 'mac-1', progress: null, status: 'failed: disk full' },
      { key: 'b', label: 'mac-200', progress: p(0, 0), status: 'running' },
    ]);
    expect(out.text).toBe(['mac-1    pending', 'mac-200  [          ] ? %  0 B  running', 'mac-1    failed: disk full', ''].join('\n'));
  });
});

describe('ProgressDisplay on a terminal', () => {
  it('draws a block and redraws it in place; notes go above it', () => {
    const out = sink(true);
    const d = new ProgressDisplay(out, { tty: true, columns: 80 });
    const item = (pct: number) => ({ key: 'pull', label: 'pulling r/x:1', progress: p(pct, 100, pct) });
    d.update([item(10)]);
    expect(out.text).toBe('\x1b[2Kpulling r/x:1  [#         ]  10 %  10/100 B\n');
    out.text = '';
    d.update([item(10)]); // unchanged: nothing written
    expect(out.text).toBe('');
    d.update([item(20)]);
    expect(out.text).toBe('\r\x1b[1A\x1b[J\x1b[2Kpulling r/x:1  [##        ]  20 %  20/100 B\n');
    out.text = '';
    d.note('  starting: creating the instance');
    expect(out.text).toBe('\r\x1b[1A\x1b[J  starting: creating the instance\n\x1b[2Kpulling r/x:1  [##        ]  20 %  20/100 B\n');
    out.text = '';
    d.end();
    d.note('after');
    expect(out.text).toBe('after\n'); // the block stays; nothing erased once ended
  });

  it('cuts lines to the terminal width', () => {
    const out = sink(true);
    const d = new ProgressDisplay(out, { tty: true, columns: 40 });
    d.update([{ key: 'x', label: 'pulling ' + 'a'.repeat(60), progress: p(1, 2) }]);
    const line = out.text.replace('\x1b[2K', '').trimEnd();
    expect(line.length).toBe(39);
    expect(line.endsWith('…')).toBe(true);
  });

  it('with --json, only a terminal gets progress', () => {
    const io = (tty: boolean) => ({ stdout: sink(false), stderr: sink(tty), env: {} });
    expect(progressDisplayFor(io(false), true)).toBeNull();
    expect(progressDisplayFor(io(true), true)?.isTty).toBe(true);
    expect(progressDisplayFor(io(false), false)?.isTty).toBe(false);
    expect(progressDisplayFor({ ...io(true), env: { TERM: 'dumb' } }, false)?.isTty).toBe(false);
  });
});
