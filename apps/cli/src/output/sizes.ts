// Sizes on the command line (`--memory 4G`, `--disk 20G`) and in tables. All
// units are binary: M = MiB, G = GiB, T = TiB (the suffixes Mi/MiB/MB etc. mean the same).
import { UsageError } from '../errors.ts';

const UNIT_MIB: Record<string, number> = { m: 1, g: 1024, t: 1024 * 1024 };

/** Size in MiB (possibly fractional); a bare number uses `defaultUnit`. Null when the text is not a size. */
export function parseSizeMib(input: string, defaultUnit: 'M' | 'G'): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*(?:([mgt])(?:i?b?)?)?$/i.exec(input.trim());
  if (!m) return null;
  const unit = (m[2] ?? defaultUnit).toLowerCase();
  return Number(m[1]) * UNIT_MIB[unit]!;
}

/** `--memory`: 4G, 4096M or 4096 (MiB) → whole MiB. */
export function parseMemoryMib(input: string, flag = '--memory'): number {
  const mib = parseSizeMib(input, 'M');
  if (mib === null) throw new UsageError(`invalid ${flag} "${input}": expected a size like 4G, 4096M or 4096 (MiB)`);
  if (!Number.isInteger(mib)) throw new UsageError(`invalid ${flag} "${input}": must be a whole number of MiB`);
  if (mib < 128) throw new UsageError(`invalid ${flag} "${input}": at least 128M`);
  if (mib > 4 * 1024 * 1024) throw new UsageError(`invalid ${flag} "${input}": at most 4T`);
  return mib;
}

/** `--disk`: 20G or 20 (GiB) → whole GiB. */
export function parseDiskGib(input: string, flag = '--disk'): number {
  const mib = parseSizeMib(input, 'G');
  if (mib === null) throw new UsageError(`invalid ${flag} "${input}": expected a size like 20G or 1T`);
  const gib = mib / 1024;
  if (!Number.isInteger(gib)) throw new UsageError(`invalid ${flag} "${input}": must be a whole number of GiB`);
  if (gib < 1) throw new UsageError(`invalid ${flag} "${input}": at least 1G`);
  if (gib > 65536) throw new UsageError(`invalid ${flag} "${input}": at most 64T`);
  return gib;
}

function trim(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1).replace(/\.0$/, '');
}

/** 512 → 512M, 4096 → 4G, 1536 → 1.5G, 1048576 → 1T. */
export function formatMib(mib: number): string {
  if (mib >= 1024 * 1024 && mib % (1024 * 1024) === 0) return `${mib / (1024 * 1024)}T`;
  if (mib >= 1024) return `${trim(Math.round((mib / 1024) * 10) / 10)}G`;
  return `${mib}M`;
}

export function formatGib(gib: number): string {
  return gib >= 1024 && gib % 1024 === 0 ? `${gib / 1024}T` : `${gib}G`;
}
