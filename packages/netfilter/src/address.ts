/** Text <-> number conversions for IPv4 and MAC addresses (configuration and reporting only; not on the hot path). */

const OCTET = /^(?:0|[1-9]\d{0,2})$/;

/** Parses a strict dotted quad ("192.168.64.1"; no leading zeros, no shorthand) into an unsigned 32-bit number, or null. */
export function parseIpv4(text: string): number | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!OCTET.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    n = n * 256 + v;
  }
  return n;
}

export function formatIpv4(ip: number): string {
  return `${(ip >>> 24) & 255}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}

const MAC = /^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$/i;

/** Parses "02:00:00:00:00:01" (or with dashes) into 6 bytes, or null. */
export function parseMac(text: string): Uint8Array | null {
  if (!MAC.test(text)) return null;
  const out = new Uint8Array(6);
  for (let i = 0; i < 6; i++) out[i] = parseInt(text.slice(i * 3, i * 3 + 2), 16);
  return out;
}

export function formatMac(mac: Uint8Array, offset = 0): string {
  const parts: string[] = [];
  for (let i = 0; i < 6; i++) parts.push((mac[offset + i] ?? 0).toString(16).padStart(2, '0'));
  return parts.join(':');
}

/** The I/G bit: set for multicast and broadcast MACs. */
export function isGroupMac(mac: Uint8Array): boolean {
  return ((mac[0] ?? 0) & 1) === 1;
}
