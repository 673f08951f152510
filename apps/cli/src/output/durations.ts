// Durations on the command line (`--wait 5m`, `--expires 24h`) and ages in tables (`5m`, `2h`).
import { UsageError } from '../errors.ts';

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;
type Unit = keyof typeof UNIT_MS;

/**
 * Parses `90s`, `5m`, `1h30m`, `2d`, `1w` (also `500ms`). A bare number uses
 * `defaultUnit`. Throws a UsageError naming `flag` when the text is not a duration.
 */
export function parseDuration(input: string, flag: string, defaultUnit: Unit = 's'): number {
  const text = input.trim().toLowerCase();
  const example = 'a duration like 90s, 5m, 1h30m or 2d';
  if (/^\d+$/.test(text)) return Number(text) * UNIT_MS[defaultUnit];
  const part = /(\d+)(ms|s|m|h|d|w)/y;
  let total = 0;
  let pos = 0;
  while (pos < text.length) {
    part.lastIndex = pos;
    const m = part.exec(text);
    if (!m) throw new UsageError(`invalid ${flag} "${input}": expected ${example}`);
    total += Number(m[1]) * UNIT_MS[m[2] as Unit];
    pos = part.lastIndex;
  }
  if (pos === 0) throw new UsageError(`invalid ${flag} "${input}": expected ${example}`);
  return total;
}

/** A duration that must be a positive whole number of hours (token expiry). */
export function parseHours(input: string, flag: string): number {
  const ms = parseDuration(input, flag, 'h');
  if (ms <= 0 || ms % UNIT_MS.h !== 0) {
    throw new UsageError(`invalid ${flag} "${input}": expected whole hours, like 24h, 7d or 720h`);
  }
  return ms / UNIT_MS.h;
}

/** A compact, single-unit age: `45s`, `5m`, `2h`, `3d` (rounded down, or to the nearest unit with `round`). */
export function formatAge(ms: number, round = false): string {
  const f = round ? Math.round : Math.floor;
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return `${f(s)}s`;
  const m = s / 60;
  if (m < 60) return `${f(m)}m`;
  const h = m / 60;
  if (h < 48) return `${f(h)}h`;
  return `${f(h / 24)}d`;
}

/** A timeout or wait for messages: `300ms` below a second, else like formatAge. */
export function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.max(0, Math.round(ms))}ms` : formatAge(ms, true);
}

/** Age of an ISO timestamp relative to `now`; `-` for null. */
export function ageOf(iso: string | null | undefined, now: number): string {
  if (!iso) return '-';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '-';
  return formatAge(now - t);
}

/** "in 5h" / "5h ago" for an ISO timestamp; `never` for null. */
export function relativeTime(iso: string | null | undefined, now: number, nullText = 'never'): string {
  if (!iso) return nullText;
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  return t >= now ? `in ${formatAge(t - now, true)}` : `${formatAge(now - t)} ago`;
}

/** ISO time in UTC without milliseconds: 2025-01-02T15:04:05Z. */
export function formatTimestamp(iso: string): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  return new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
