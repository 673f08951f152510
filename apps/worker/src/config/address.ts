import { isIPv4, isIPv6 } from 'node:net';

// One DNS label (RFC 1123; underscores tolerated, some internal zones use them).
const DNS_LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/** A host a controller address may name: IPv4, IPv6 (only in brackets), or a DNS name. */
function validHost(host: string, bracketed: boolean): boolean {
  if (bracketed) return isIPv6(host);
  if (isIPv4(host)) return true;
  // "300.1.1.1" or "10.1" is neither an address nor a name anyone meant.
  if (/^[\d.]+$/.test(host)) return false;
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  return name.length > 0 && name.length <= 253 && name.split('.').every((label) => DNS_LABEL.test(label));
}

/** Parses `host:port` (IPv6 as `[::1]:port`). Throws a clear error otherwise. */
export function parseHostPort(address: string): { host: string; port: number } {
  const trimmed = address.trim().replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
  const match = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(trimmed);
  const port = match ? Number(match[2]) : Number.NaN;
  const bracketed = match?.[1]!.startsWith('[') ?? false;
  const host = match ? (bracketed ? match[1]!.slice(1, -1) : match[1]!) : '';
  if (!match || !(port >= 1 && port <= 65535) || !validHost(host, bracketed)) {
    throw new Error(`controller address must be HOST:PORT (e.g. controller.example.com:7443), got ${JSON.stringify(address.slice(0, 300))}`);
  }
  return { host, port };
}

/** Normalised `host:port` as stored in worker.json and used as the gRPC target. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** `parseHostPort` + `formatHostPort`: the one spelling of an address used for comparisons. */
export function normalizeHostPort(address: string): string {
  const { host, port } = parseHostPort(address);
  return formatHostPort(host, port);
}

/**
 * Operator input (`--controller`, repeatable, each value possibly comma-separated) as a list of
 * normalised addresses in the order given, duplicates dropped. Throws on the first bad entry: a
 * typo on the command line must not be skipped silently.
 */
export function parseControllerList(values: string | readonly string[]): string[] {
  const items = (typeof values === 'string' ? [values] : values).flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
  if (items.length === 0) throw new Error('controller address must be HOST:PORT (e.g. controller.example.com:7443), got nothing');
  return uniqueAddresses(items.map(normalizeHostPort));
}

/** Order-preserving de-duplication. */
export function uniqueAddresses(addresses: Iterable<string>): string[] {
  return [...new Set(addresses)];
}

/** At most this many controller addresses are kept (a fleet has a handful; the rest is noise). */
export const MAX_CONTROLLER_ADDRESSES = 32;

/**
 * Addresses announced by a controller (EnrollResponse / Welcome) or read from worker.json:
 * every entry is checked; bad ones (not HOST:PORT, port out of range, control characters, a
 * non-string) are returned in `rejected` for a warning, never thrown.
 */
export function sanitizeControllerAddresses(announced: readonly unknown[]): { valid: string[]; rejected: string[] } {
  const valid: string[] = [];
  const rejected: string[] = [];
  for (const entry of announced) {
    // Announced addresses are plain host:port: no scheme, no path, no spaces, bounded length.
    if (typeof entry !== 'string' || entry.length > 262 || !/^[\x21-\x7e]+$/.test(entry) || entry.includes('/')) {
      rejected.push(typeof entry === 'string' ? JSON.stringify(entry.slice(0, 80)) : String(typeof entry));
      continue;
    }
    try {
      valid.push(normalizeHostPort(entry));
    } catch {
      rejected.push(JSON.stringify(entry.slice(0, 80)));
    }
  }
  return { valid: uniqueAddresses(valid).slice(0, MAX_CONTROLLER_ADDRESSES), rejected };
}

/**
 * The list to keep after a controller announced its fleet: the address we dialed first (it
 * answered, and it may be a name the controllers do not know themselves by, e.g. a DNS name with
 * several A records or a NAT address), then the announced ones. An empty announcement (an older
 * controller) keeps `current`.
 */
export function mergeAnnouncedControllers(dialed: string, announced: readonly string[], current: readonly string[]): string[] {
  if (announced.length === 0) return [...current];
  return uniqueAddresses([dialed, ...announced]).slice(0, MAX_CONTROLLER_ADDRESSES);
}
