// macOS bootpd's lease file, /var/db/dhcpd_leases: the fallback way to learn a VM's IP when the
// VM host process's filter has not reported the lease (e.g. after the host process restarted).
// Format (one block per lease; octets of hw_address are hex without leading zeros; `lease` is
// the expiry as hex Unix seconds):
//
//   {
//   	name=admins-Virtual-Machine
//   	ip_address=192.168.64.3
//   	hw_address=1,2e:7f:2:11:2f:8a
//   	identifier=1,2e:7f:2:11:2f:8a
//   	lease=0x6566c1c6
//   }
//
// Matching is by hardware address compared octet by octet as numbers ("0c" == "c"); expired
// leases are ignored; among the rest the newest (latest expiry) wins.
import { readFile } from 'node:fs/promises';

export const DHCPD_LEASES_FILE = '/var/db/dhcpd_leases';

export interface DhcpdLease {
  name?: string;
  ip: string;
  /** Normalised: six two-digit lower-case hex octets. */
  mac: string;
  /** Expiry, ms since the epoch. */
  expiresAt: number;
  /** The client identifier as written (e.g. "1,<mac>" or "ff,<duid>"). */
  identifier?: string;
}

const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** "2e:7f:2:11:2f:8a" → [0x2e,0x7f,0x02,...], or undefined if it is not six hex octets. */
export function macOctets(mac: string): number[] | undefined {
  const parts = mac.trim().split(/[:-]/);
  if (parts.length !== 6) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^[0-9a-fA-F]{1,2}$/.test(p)) return undefined;
    out.push(parseInt(p, 16));
  }
  return out;
}

export function normalizeMac(mac: string): string | undefined {
  return macOctets(mac)?.map((o) => o.toString(16).padStart(2, '0')).join(':');
}

/** Parses the file's text; malformed blocks are skipped (never throws on file content). */
export function parseDhcpdLeases(text: string): DhcpdLease[] {
  const leases: DhcpdLease[] = [];
  const blocks = text.split('{').slice(1);
  for (const raw of blocks) {
    const body = raw.split('}')[0] ?? '';
    const kv = new Map<string, string>();
    for (const line of body.split('\n')) {
      const i = line.indexOf('=');
      if (i <= 0) continue;
      kv.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
    }
    const ip = kv.get('ip_address');
    const hw = kv.get('hw_address');
    const lease = kv.get('lease');
    if (!ip || !hw || !lease) continue;
    const m = IPV4_RE.exec(ip);
    if (!m || m.slice(1).some((o) => Number(o) > 255)) continue;
    // "1,<mac>": hardware type 1 (Ethernet), then the address.
    const comma = hw.indexOf(',');
    if (comma < 0 || hw.slice(0, comma).trim() !== '1') continue;
    const mac = normalizeMac(hw.slice(comma + 1));
    if (!mac) continue;
    if (!/^0x[0-9a-fA-F]+$/.test(lease)) continue;
    const expiresAt = parseInt(lease.slice(2), 16) * 1000;
    if (!Number.isFinite(expiresAt)) continue;
    const name = kv.get('name');
    const identifier = kv.get('identifier');
    leases.push({ ip, mac, expiresAt, ...(name !== undefined ? { name } : {}), ...(identifier !== undefined ? { identifier } : {}) });
  }
  return leases;
}

/** The newest unexpired lease for `mac`, or undefined. */
export function findLease(leases: readonly DhcpdLease[], mac: string, now = Date.now()): DhcpdLease | undefined {
  const want = normalizeMac(mac);
  if (!want) throw new Error(`not a MAC address: ${JSON.stringify(mac)}`);
  let best: DhcpdLease | undefined;
  for (const l of leases) {
    if (l.mac !== want || l.expiresAt <= now) continue;
    if (!best || l.expiresAt > best.expiresAt) best = l;
  }
  return best;
}

/** Reads the lease file and looks `mac` up; a missing or unreadable file means "no lease yet". */
export async function leaseForMac(mac: string, opts: { file?: string; now?: number } = {}): Promise<DhcpdLease | undefined> {
  let text: string;
  try {
    text = await readFile(opts.file ?? DHCPD_LEASES_FILE, 'utf8');
  } catch {
    return undefined;
  }
  return findLease(parseDhcpdLeases(text), mac, opts.now ?? Date.now());
}
