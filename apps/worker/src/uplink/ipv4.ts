// IPv4 address and CIDR arithmetic for the NAT uplink. Addresses are unsigned 32-bit numbers.

export interface Cidr {
  /** Network address (host bits zero). */
  network: number;
  prefix: number;
}

const OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** Parses dotted-quad IPv4 ("192.168.64.1"); throws a clear error otherwise. */
export function parseIpv4(text: string, what = 'IPv4 address'): number {
  if (typeof text !== 'string') throw new Error(`${what} must be a string, got ${typeof text}`);
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => OCTET.test(p))) {
    throw new Error(`${what} ${JSON.stringify(text)} is not a dotted-quad IPv4 address (e.g. 192.168.64.1)`);
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/**
 * Parses "a.b.c.d/p". With `strict` (the default) the host bits must be zero, so that
 * "192.168.64.1/24" is rejected with a hint instead of silently meaning 192.168.64.0/24.
 */
export function parseCidr(text: string, what = 'subnet', strict = true): Cidr {
  if (typeof text !== 'string') throw new Error(`${what} must be a string like "192.168.64.0/24", got ${typeof text}`);
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text.trim());
  if (!m) throw new Error(`${what} ${JSON.stringify(text)} is not in CIDR form (e.g. 192.168.64.0/24)`);
  const addr = parseIpv4(m[1]!, `${what} address`);
  const prefix = Number(m[2]);
  if (prefix > 32) throw new Error(`${what} ${JSON.stringify(text)}: prefix length must be 0..32`);
  const network = (addr & maskOf(prefix)) >>> 0;
  if (strict && network !== addr) {
    throw new Error(`${what} ${JSON.stringify(text)} has host bits set; did you mean ${formatIpv4(network)}/${prefix}?`);
  }
  return { network, prefix };
}

export function formatCidr(c: Cidr): string {
  return `${formatIpv4(c.network)}/${c.prefix}`;
}

export function broadcastOf(c: Cidr): number {
  return (c.network | (~maskOf(c.prefix) >>> 0)) >>> 0;
}

export function contains(c: Cidr, ip: number): boolean {
  return ((ip & maskOf(c.prefix)) >>> 0) === c.network;
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  const p = Math.min(a.prefix, b.prefix);
  const m = maskOf(p);
  return ((a.network & m) >>> 0) === ((b.network & m) >>> 0);
}

/** Usable host addresses (excludes network and broadcast; prefixes 31/32 are not usable here). */
export function hostRange(c: Cidr): [number, number] {
  return [c.network + 1, broadcastOf(c) - 1];
}
