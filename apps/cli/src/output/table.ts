// Borderless, aligned tables (kubectl style) and "Key: value" blocks.

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

export function visibleLength(s: string): number {
  return s.replace(ANSI, '').length;
}

function clean(cell: string): string {
  return cell.replace(/[\r\n\t]+/g, ' ');
}

/** Columns separated by three spaces; the last column is not padded. Ends with a newline. */
export function formatTable(headers: string[], rows: string[][]): string {
  const all = [headers, ...rows].map((r) => r.map(clean));
  const widths = headers.map((_, i) => Math.max(...all.map((r) => visibleLength(r[i] ?? ''))));
  return (
    all
      .map((r) =>
        r
          .map((cell, i) => (i === r.length - 1 ? cell : cell + ' '.repeat(widths[i]! - visibleLength(cell))))
          .join('   ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

/** "Key:   value" lines with the values aligned. Ends with a newline. */
export function formatKeyValues(pairs: [string, string][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length)) + 1;
  return pairs.map(([k, v]) => `${(k + ':').padEnd(width)}  ${clean(v)}`).join('\n') + '\n';
}

/** `a=1,b=2`, or `-` when empty. */
export function formatLabels(labels: Record<string, string>): string {
  const entries = Object.entries(labels);
  return entries.length === 0 ? '-' : entries.map(([k, v]) => `${k}=${v}`).join(',');
}

export function dash(v: string | number | null | undefined): string {
  return v === null || v === undefined || v === '' ? '-' : String(v);
}
