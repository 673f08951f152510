// Progress of image pulls, prefetches and pushes on stderr.
//
// On a terminal: a block of bars redrawn in place, one line per item
//   pulling 127.0.0.1:5000/fleet/guest:1  [####      ] 37 %  1.2/3.4 GiB
// Elsewhere (CI logs, pipes): one plain line per item when it first shows up, when its percent
// crosses a multiple of 10, when its state text changes, or every ~5 s — never a carriage return.
import type { Io, OutStream } from '../io.ts';
import type { TransferProgress } from '../client/image-types.ts';
import { visibleLength } from './table.ts';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const;

function unitFor(bytes: number): number {
  let i = 0;
  let n = Math.abs(bytes);
  while (n >= 1024 && i < UNITS.length - 1) {
    n /= 1024;
    i++;
  }
  return i;
}

function scaled(bytes: number, unit: number): string {
  const n = bytes / 1024 ** unit;
  if (unit === 0) return String(Math.round(n));
  return n >= 100 ? String(Math.round(n)) : n.toFixed(1).replace(/\.0$/, '');
}

/** Binary units: 512 B, 1.5 KiB, 37 MiB, 3.4 GiB. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '-';
  const u = unitFor(bytes);
  return `${scaled(bytes, u)} ${UNITS[u]}`;
}

/** "1.2/3.4 GiB" (both in the total's unit); just "1.2 GiB" while the total is unknown. */
export function formatByteProgress(done: number, total: number): string {
  if (!(total > 0)) return formatBytes(done);
  const u = unitFor(Math.max(total, done));
  // Early on, "0/3.4 GiB" would say nothing: the bytes done in their own unit then.
  if (done > 0 && done < 0.1 * 1024 ** u) return `${formatBytes(done)}/${formatBytes(total)}`;
  return `${scaled(done, u)}/${scaled(total, u)} ${UNITS[u]}`;
}

/** The percent to show (0..100, whole), from `percent` or the bytes; null when not known. */
export function percentOf(p: TransferProgress | null | undefined): number | null {
  if (!p) return null;
  let pct: number | null = null;
  if (Number.isFinite(p.percent) && (p.percent > 0 || p.bytesTotal > 0)) pct = p.percent;
  else if (p.bytesTotal > 0) pct = (100 * p.bytesDone) / p.bytesTotal;
  if (pct === null) return null;
  return Math.max(0, Math.min(100, Math.floor(pct)));
}

/** `[####      ]` for 40 % (width 10); all spaces for an unknown percent. */
export function progressBar(percent: number | null, width = 10): string {
  const filled = percent === null ? 0 : Math.round((Math.max(0, Math.min(100, percent)) / 100) * width);
  return `[${'#'.repeat(filled)}${' '.repeat(width - filled)}]`;
}

/** "[####      ] 37 %  1.2/3.4 GiB" ("… ? %  1.2 GiB" while the total is unknown). */
export function formatProgress(p: TransferProgress, width = 10): string {
  const pct = percentOf(p);
  return `${progressBar(pct, width)} ${pct === null ? '?' : String(pct).padStart(3)} %  ${formatByteProgress(p.bytesDone, p.bytesTotal)}`;
}

/** "37 % (1.2/3.4 GiB)": for tables and key-value output. */
export function formatProgressShort(p: TransferProgress | null | undefined): string {
  if (!p) return '-';
  const pct = percentOf(p);
  return `${pct === null ? '?' : pct} % (${formatByteProgress(p.bytesDone, p.bytesTotal)})`;
}

export interface ProgressItem {
  /** Stable identity (a worker name, an operation id). */
  key: string;
  /** Left part: "pulling 127.0.0.1:5000/fleet/guest:1", "mac-1". */
  label: string;
  /** Bytes, when known; null shows `status` alone. */
  progress: TransferProgress | null;
  /** Right part: "running", "succeeded", "failed: …". */
  status?: string;
}

export interface ProgressDisplayOptions {
  /** Bars redrawn in place (stderr is a terminal) or plain lines. */
  tty: boolean;
  /** Terminal width; lines are cut to it so that redrawing never leaves wrapped remains. */
  columns?: number | undefined;
  now?: () => number;
  /** Non-terminal: at most this long between lines of one item that is still moving. Default 5 s. */
  intervalMs?: number;
}

interface Printed {
  at: number;
  bucket: number | null;
  status: string;
}

/**
 * Shows a set of transfers. `update()` with the current items; `note()` prints a line without
 * breaking the bars; `end()` leaves the last state on screen. Writes nothing but to `out`.
 */
export class ProgressDisplay {
  private readonly tty: boolean;
  private readonly columns: number;
  private readonly now: () => number;
  private readonly intervalMs: number;
  /** Terminal: lines of the block currently drawn (the cursor sits below them). */
  private drawn = 0;
  private lastBlock: string[] = [];
  /** Non-terminal: what was printed last per item. */
  private readonly printed = new Map<string, Printed>();

  constructor(
    private readonly out: OutStream,
    opts: ProgressDisplayOptions,
  ) {
    this.tty = opts.tty;
    this.columns = Math.max(40, opts.columns ?? 100);
    this.now = opts.now ?? Date.now;
    this.intervalMs = opts.intervalMs ?? 5_000;
  }

  /** The line for one item, without colours: `label  [###   ] 37 %  1.2/3.4 GiB  status`. */
  static line(item: ProgressItem, labelWidth = 0): string {
    const parts = [labelWidth > 0 ? item.label.padEnd(labelWidth) : item.label];
    if (item.progress) parts.push(formatProgress(item.progress));
    if (item.status) parts.push(item.status);
    return parts.join('  ');
  }

  get isTty(): boolean {
    return this.tty;
  }

  update(items: ProgressItem[]): void {
    if (this.tty) this.redraw(items);
    else this.printChanged(items);
  }

  /** A line of its own (a state change, a warning): above the bars on a terminal. */
  note(text: string): void {
    if (this.tty && this.drawn > 0) {
      this.erase();
      this.out.write(text.endsWith('\n') ? text : `${text}\n`);
      this.draw(this.lastBlock);
      return;
    }
    this.out.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /**
   * Stops updating: on a terminal the block stays as last drawn (`final` items, when given,
   * replace it first); elsewhere each final item is printed if its last line said otherwise.
   */
  end(final?: ProgressItem[]): void {
    if (final) {
      if (this.tty) this.redraw(final);
      else this.printChanged(final, true);
    }
    this.drawn = 0;
    this.lastBlock = [];
    this.printed.clear();
  }

  private block(items: ProgressItem[]): string[] {
    const width = Math.min(48, Math.max(0, ...items.map((i) => i.label.length)));
    return items.map((i) => this.fit(ProgressDisplay.line(i, items.length > 1 ? width : 0)));
  }

  private fit(line: string): string {
    const max = this.columns - 1;
    return visibleLength(line) > max ? line.slice(0, max - 1) + '…' : line;
  }

  private redraw(items: ProgressItem[]): void {
    const lines = this.block(items);
    if (this.drawn > 0 && lines.length === this.lastBlock.length && lines.every((l, i) => l === this.lastBlock[i])) return;
    this.erase();
    this.draw(lines);
  }

  /** Moves up over the drawn block and clears it (CR, CSI n A: n lines up; CSI J: clear below). */
  private erase(): void {
    if (this.drawn > 0) this.out.write(`\r\x1b[${this.drawn}A\x1b[J`);
    this.drawn = 0;
  }

  private draw(lines: string[]): void {
    if (lines.length > 0) this.out.write(lines.map((l) => `\x1b[2K${l}\n`).join(''));
    this.drawn = lines.length;
    this.lastBlock = lines;
  }

  private printChanged(items: ProgressItem[], final = false): void {
    const now = this.now();
    const width = items.length > 1 ? Math.min(48, Math.max(0, ...items.map((i) => i.label.length))) : 0;
    for (const item of items) {
      const pct = percentOf(item.progress);
      const bucket = pct === null ? null : Math.floor(pct / 10);
      const status = item.status ?? '';
      const prev = this.printed.get(item.key);
      const due =
        !prev ||
        status !== prev.status ||
        (bucket !== null && (prev.bucket === null || bucket > prev.bucket)) ||
        (!final && now - prev.at >= this.intervalMs);
      if (!due) continue;
      this.out.write(ProgressDisplay.line(item, width).trimEnd() + '\n');
      this.printed.set(item.key, { at: now, bucket, status });
    }
  }
}

/**
 * Progress for a command's `--wait` on stderr: bars when stderr is a terminal, lines otherwise;
 * with --json only on a terminal (a script's stderr gets nothing but errors).
 */
export function progressDisplayFor(io: Io, json: boolean): ProgressDisplay | null {
  const tty = io.stderr.isTTY === true && io.env.TERM !== 'dumb';
  if (json && !tty) return null;
  return new ProgressDisplay(io.stderr, { tty, columns: io.stderr.columns, ...(io.now ? { now: io.now } : {}) });
}
