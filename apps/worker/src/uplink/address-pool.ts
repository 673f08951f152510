// VM address reservations of one NAT network: every VM instance the worker holds owns exactly one
// address of the subnet from create() to remove(), bound to its MAC. dnsmasq serves only these
// reservations (static mode, by MAC, client identifiers ignored), so a VM can neither take a
// neighbour's address nor drain the pool: there is no pool to drain, only one address per VM.
//
// The choice is deterministic: a VM prefers the address its id hashes to and probes upwards from
// there, so the same VM comes back to the same address on this worker whenever it is free
// (restarts, new attempts). Pure: no I/O here; nat-network.ts persists and applies the table.
import { createHash } from 'node:crypto';
import { formatIpv4, parseIpv4 } from './ipv4.ts';

export interface Reservation {
  /** The instance this address belongs to (the driver's instance key). */
  key: string;
  /** The VM this instance runs (its id): the preferred address is derived from it. */
  vmId: string;
  /** The instance's MAC: the only client dnsmasq gives this address to. */
  mac: string;
  ip: string;
  /** The VM's DNS name on the NAT network (a DNS label), or null for none. */
  dnsName: string | null;
  /** May this VM reach the host's services at the gateway address (beyond DHCP/DNS)? */
  hostAccess: boolean;
}

export interface ReserveRequest {
  key: string;
  vmId: string;
  mac: string;
  /** The VM's name; used as its DNS name when it is a valid DNS label not taken by another VM. */
  name: string;
  hostAccess: boolean;
  /** An address this instance held before (its record): kept if still free. */
  preferredIp?: string | undefined;
}

/** A lease dnsmasq still holds (from its lease file): expired or foreign ones block an address until released. */
export interface LiveLease {
  ip: string;
  mac: string;
}

export class AddressPoolFull extends Error {
  constructor(readonly subnet: string, readonly size: number) {
    super(`no free VM address in NAT subnet ${subnet}: all ${size} addresses are reserved by VMs on this worker`);
    this.name = 'AddressPoolFull';
  }
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export class AddressPool {
  private readonly byKey = new Map<string, Reservation>();
  private readonly byIp = new Map<number, Reservation>();

  /** `first`..`last` (inclusive, numbers) are the addresses VMs may get. */
  constructor(
    private readonly first: number,
    private readonly last: number,
    private readonly subnetText: string,
  ) {
    if (!(last >= first)) throw new Error(`address pool ${formatIpv4(first)}..${formatIpv4(last)} is empty`);
  }

  get size(): number {
    return this.last - this.first + 1;
  }

  get used(): number {
    return this.byKey.size;
  }

  get free(): number {
    return this.size - this.used;
  }

  list(): Reservation[] {
    return [...this.byKey.values()].sort((a, b) => parseIpv4(a.ip) - parseIpv4(b.ip));
  }

  get(key: string): Reservation | undefined {
    return this.byKey.get(key);
  }

  /**
   * Loads reservations persisted earlier. Entries that no longer fit (outside the pool, a second
   * claim on one address or key, a bad MAC) are skipped and returned, so the caller can log them.
   */
  load(entries: readonly unknown[]): Reservation[] {
    const skipped: Reservation[] = [];
    for (const e of entries) {
      const r = e as Partial<Reservation> | null;
      if (!r || typeof r.key !== 'string' || typeof r.vmId !== 'string' || typeof r.mac !== 'string' || typeof r.ip !== 'string') continue;
      const res: Reservation = {
        key: r.key,
        vmId: r.vmId,
        mac: r.mac.toLowerCase(),
        ip: r.ip,
        dnsName: typeof r.dnsName === 'string' ? r.dnsName : null,
        hostAccess: r.hostAccess === true,
      };
      let n: number;
      try {
        n = parseIpv4(res.ip);
      } catch {
        skipped.push(res);
        continue;
      }
      if (n < this.first || n > this.last || this.byIp.has(n) || this.byKey.has(res.key) || !MAC_RE.test(res.mac)) {
        skipped.push(res);
        continue;
      }
      this.put(res, n);
    }
    return skipped;
  }

  /**
   * Reserves an address for an instance (idempotent: an existing reservation is updated in place —
   * MAC, name and host access — and keeps its address). `leases` are dnsmasq's live leases that
   * the caller cannot release: an address leased to another MAC is then taken only when no clean
   * one is left (pass none when stale leases can be released, so a VM keeps its usual address).
   */
  reserve(req: ReserveRequest, leases: readonly LiveLease[] = []): Reservation {
    const mac = req.mac.toLowerCase();
    if (!MAC_RE.test(mac)) throw new Error(`reservation ${req.key}: ${JSON.stringify(req.mac)} is not a MAC address`);
    const existing = this.byKey.get(req.key);
    if (existing) {
      existing.mac = mac;
      existing.hostAccess = req.hostAccess;
      existing.dnsName = this.dnsNameFor(req.name, req.key);
      return { ...existing };
    }
    const ip = this.choose(req, mac, leases);
    const res: Reservation = { key: req.key, vmId: req.vmId, mac, ip: formatIpv4(ip), dnsName: this.dnsNameFor(req.name, req.key), hostAccess: req.hostAccess };
    this.put(res, ip);
    return { ...res };
  }

  /** Frees an instance's address. Returns the reservation it held, if any. */
  release(key: string): Reservation | undefined {
    const r = this.byKey.get(key);
    if (!r) return undefined;
    this.byKey.delete(key);
    this.byIp.delete(parseIpv4(r.ip));
    return r;
  }

  /** dnsmasq `dhcp-hostsfile` lines: `<mac>,<ip>` — the address goes to that MAC only. */
  dhcpHostsFile(): string {
    return this.list().map((r) => `${r.mac},${r.ip}\n`).join('');
  }

  /** dnsmasq `addn-hosts` lines: `<ip> <name>` — the VM's DNS name, from Fleet, never from the guest. */
  dnsHostsFile(): string {
    return this.list()
      .filter((r) => r.dnsName !== null)
      .map((r) => `${r.ip} ${r.dnsName}\n`)
      .join('');
  }

  /** Addresses of VMs whose policy grants host access. */
  hostAccessIps(): string[] {
    return this.list()
      .filter((r) => r.hostAccess)
      .map((r) => r.ip);
  }

  private put(r: Reservation, ip: number): void {
    this.byKey.set(r.key, r);
    this.byIp.set(ip, r);
  }

  /** A DNS label no other reservation uses, or null (two VMs never share a name). */
  private dnsNameFor(name: string, key: string): string | null {
    const label = name.toLowerCase();
    if (!DNS_LABEL.test(label)) return null;
    for (const r of this.byKey.values()) if (r.key !== key && r.dnsName === label) return null;
    return label;
  }

  private choose(req: ReserveRequest, mac: string, leases: readonly LiveLease[]): number {
    if (this.free === 0) throw new AddressPoolFull(this.subnetText, this.size);
    const foreign = new Set<number>();
    for (const l of leases) {
      if (l.mac.toLowerCase() === mac) continue;
      try {
        foreign.add(parseIpv4(l.ip));
      } catch {
        /* not an address */
      }
    }
    const usable = (n: number): boolean => n >= this.first && n <= this.last && !this.byIp.has(n);
    if (req.preferredIp !== undefined) {
      try {
        const n = parseIpv4(req.preferredIp);
        if (usable(n)) return n;
      } catch {
        /* ignore a bad record */
      }
    }
    const start = this.first + (createHash('sha256').update(`fleet-vm-address:${req.vmId}`).digest().readUInt32BE(0) % this.size);
    let fallback = -1;
    for (let i = 0; i < this.size; i++) {
      const n = this.first + ((start - this.first + i) % this.size);
      if (!usable(n)) continue;
      if (!foreign.has(n)) return n;
      if (fallback < 0) fallback = n;
    }
    // Every free address still has another MAC's lease in dnsmasq: the caller releases it.
    return fallback;
  }
}
