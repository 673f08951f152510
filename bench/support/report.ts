// What the benchmarks print: percentiles and markdown tables (first column left, the rest right).

/** The p-th percentile (nearest rank) of the finite values; NaN when there are none. */
export function percentile(xs: number[], p: number): number {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export function markdownTable(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const w = head.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) => '| ' + r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join(' | ') + ' |';
  return [line(head), '| ' + w.map((n, i) => (i === 0 ? '-'.repeat(n) : '-'.repeat(n - 1) + ':')).join(' | ') + ' |', ...cells.slice(1).map(line)].join('\n');
}

/** A line prefixed with the time of day (HH:MM:SS.mmm, UTC). */
export const logLine = (s: string): void => console.log(`[${new Date().toISOString().slice(11, 23)}] ${s}`);
