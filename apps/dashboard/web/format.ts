export function ago(iso: string | null, now = Date.now()): string {
  if (!iso) return 'never';
  return duration((now - new Date(iso).getTime()) / 1000) + ' ago';
}

export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function mib(n: number): string {
  return n >= 1024 ? `${(n / 1024).toFixed(n % 1024 === 0 ? 0 : 1)} GiB` : `${n} MiB`;
}

export function labels(l: Record<string, string>): string {
  return Object.entries(l).map(([k, v]) => `${k}=${v}`).join(', ');
}

export function time(iso: string): string {
  return new Date(iso).toLocaleString();
}

/** "login-alice-1a2b3c4d" (an account's session token) → "alice"; other token names as they are. */
export function displayName(tokenName: string): string {
  return /^login-(.+)-[0-9a-f]{8}$/.exec(tokenName)?.[1] ?? tokenName;
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

function byteUnit(n: number): number {
  let u = 0;
  while (Math.abs(n) >= 1024 ** (u + 1) && u < BYTE_UNITS.length - 1) u++;
  return u;
}

function scaled(n: number, unit: number): string {
  const v = n / 1024 ** unit;
  if (unit === 0) return String(Math.round(v));
  return v >= 100 ? String(Math.round(v)) : v.toFixed(1).replace(/\.0$/, '');
}

/** Binary units: 512 B, 1.5 KiB, 37 MiB, 3.4 GiB. */
export function bytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '—';
  const u = byteUnit(n);
  return `${scaled(n, u)} ${BYTE_UNITS[u]}`;
}

/** "1.2 / 3.4 GiB" (the total's unit); "10 MiB / 3.4 GiB" early on; "1.2 GiB" while the total is unknown. */
export function byteProgress(done: number, total: number): string {
  if (!(total > 0)) return bytes(done);
  const u = byteUnit(Math.max(done, total));
  if (done > 0 && done < 0.1 * 1024 ** u) return `${bytes(done)} / ${bytes(total)}`;
  return `${scaled(done, u)} / ${scaled(total, u)} ${BYTE_UNITS[u]}`;
}

/** The whole percent of a transfer (from `percent`, else the bytes); null when nothing is known. */
export function percentOf(p: { bytesDone: number; bytesTotal: number; percent: number } | null | undefined): number | null {
  if (!p) return null;
  const raw = Number.isFinite(p.percent) && (p.percent > 0 || p.bytesTotal > 0) ? p.percent : p.bytesTotal > 0 ? (100 * p.bytesDone) / p.bytesTotal : null;
  return raw === null ? null : Math.max(0, Math.min(100, Math.floor(raw)));
}

/** The first 12 hex digits of a sha256 digest; anything else as it is. */
export function shortDigest(digest: string): string {
  return /^sha256:[0-9a-f]{12,}$/.test(digest) ? digest.slice(7, 19) : digest;
}
