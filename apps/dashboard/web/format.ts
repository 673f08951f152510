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
