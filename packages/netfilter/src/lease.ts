/**
 * The VM's DHCP lease, learned by snooping (never by trusting what the VM claims).
 *
 *   none/expired --VM DISCOVER/REQUEST--> pending --trusted ACK--> bound
 *   bound --trusted ACK (renewal)--> bound      bound --ACK for another address--> bound (new IP)
 *   any --trusted NAK--> none    bound --VM RELEASE/DECLINE--> none    bound --time--> expired
 *
 * An ACK (or NAK) counts only when all of these hold:
 * - it came from a trusted DHCP server (the filter checks the IP source, and the Ethernet source
 *   against the gateway MAC when known, before calling {@link LeaseTracker.snoopReply});
 * - it was sent to the VM's MAC or broadcast (checked by the filter);
 * - BOOTREPLY, chaddr == the VM's MAC, client identifier (if echoed) == 01:<VM MAC>;
 * - its xid is one the VM itself used within `dhcpTransactionMs`;
 * - for an ACK: option 51 present and non-zero; yiaddr inside the subnet and not the network,
 *   broadcast, gateway or a DHCP server address (and the VM's reserved address, when it has one).
 * The expiry check is one comparison per frame; building a Lease object (and notifying) happens
 * only when the lease changes.
 */
import { formatIpv4 } from './address.ts';
import { macAt, u32 } from './bytes.ts';
import type { ResolvedConfig, ResolvedLeaseSeed } from './config.ts';
import { type DhcpMessage, BootpOp, DhcpType } from './parse/dhcp.ts';

export type LeaseState = 'none' | 'pending' | 'bound' | 'expired';
export type LeaseCause = 'ack' | 'seed' | 'nak' | 'release' | 'decline' | 'expired';

export interface Lease {
  /** The leased address, dotted quad. */
  readonly ip: string;
  /** The leased address as an unsigned 32-bit number. */
  readonly ipNumber: number;
  /** When the ACK was seen (ms); NaN for a seed without obtainedAt. */
  readonly obtainedAt: number;
  /** When the lease ends (ms). The filter stops honouring it `leaseSkewMs` earlier. */
  readonly expiresAt: number;
  /** Lease time granted, after the `maxLeaseSeconds` cap; NaN for a seed without obtainedAt. */
  readonly leaseSeconds: number;
  /** DNS servers from option 6 (at most 8 are kept). */
  readonly dns: readonly string[];
  /** Option 54, if present. */
  readonly serverId: string | null;
  /** First router from option 3, if present. */
  readonly router: string | null;
  /** Option 1, if present. */
  readonly subnetMask: string | null;
  /** How the lease was obtained. */
  readonly source: 'ack' | 'seed';
}

export interface LeaseEvent {
  /** The lease now in force; null when it ended. */
  readonly lease: Lease | null;
  /** The lease before this change; on expiry this is the lease that expired (so forwards can be torn down). */
  readonly previous: Lease | null;
  readonly cause: LeaseCause;
  /** The `now` of the frame (or call) that caused the change. */
  readonly at: number;
}

export type LeaseListener = (event: LeaseEvent) => void;

/** Outcome of snooping one trusted DHCP server reply; counted per code. */
export const Snoop = {
  /** ACK learned: a new lease, or a different address. */
  LEARNED: 0,
  /** ACK for the address already leased: expiry extended. */
  RENEWED: 1,
  /** NAK for this VM: lease ended (or pending transaction cancelled). */
  NAK: 2,
  /** chaddr is another client's (a broadcast reply meant for someone else). */
  OTHER_CLIENT: 3,
  /** xid does not match a transaction the VM started recently. */
  UNKNOWN_XID: 4,
  /** BOOTP/DHCP could not be parsed (truncated, bad cookie, duplicate 53/51, option overrun, overload, ...). */
  MALFORMED: 5,
  /** ACK without option 51 (e.g. an INFORM reply) or with lease time 0. */
  NO_LEASE_TIME: 6,
  /** yiaddr outside the subnet, or the network/broadcast/gateway/server address. */
  BAD_ADDRESS: 7,
  /** OFFER or another type: passed on, nothing to learn. */
  NOT_ACK: 8,
  /** A fragmented server reply: passed on, not snooped. */
  FRAGMENT: 9,
} as const;
export type Snoop = (typeof Snoop)[keyof typeof Snoop];

export const SNOOP_NAMES = [
  'learned',
  'renewed',
  'nak',
  'other_client',
  'unknown_xid',
  'malformed',
  'no_lease_time',
  'bad_address',
  'not_ack',
  'fragment',
] as const;
export type SnoopName = (typeof SNOOP_NAMES)[number];

const MAX_DNS = 8;

/** Is the message's client identifier (option 61, present) exactly `01:<mac>`: hardware type Ethernet + the VM's MAC? */
export function isOwnClientId(f: Uint8Array, msg: DhcpMessage, mac: Uint8Array): boolean {
  return msg.clientIdLength === 7 && f[msg.clientIdOffset] === 1 && macAt(f, msg.clientIdOffset + 1, mac);
}
const XID_SLOTS = 8;

export class LeaseTracker {
  /** Is a lease in force? Read per frame. */
  bound = false;
  /** The leased address as int32 (see bytes.ts `i32`); meaningful only when `bound`. Read per frame. */
  boundIp = 0;
  /** Time from which the lease is no longer honoured (expiresAt - skew); Infinity when there is none. */
  endAt = Number.POSITIVE_INFINITY;
  state: LeaseState = 'none';
  current: Lease | null = null;
  /** The most recent lease, kept after it ends. */
  last: Lease | null = null;
  readonly snoopCounters = new Float64Array(SNOOP_NAMES.length);
  listenerErrors = 0;

  readonly #cfg: ResolvedConfig;
  /** The filter's current time (ms) in clock[0], written once per frame (see rate-limit.ts). */
  readonly #clock: Float64Array;
  /** DNS servers of the lease, int32. */
  readonly #dns = new Int32Array(MAX_DNS);
  #dnsCount = 0;
  /** Ring of [xid, time] pairs of the VM's recent client messages. */
  readonly #xids = new Float64Array(XID_SLOTS * 2).fill(Number.NaN);
  #xidNext = 0;
  readonly #listeners = new Set<LeaseListener>();

  constructor(cfg: ResolvedConfig, clock: Float64Array) {
    this.#cfg = cfg;
    this.#clock = clock;
    if (cfg.lease !== null) this.#install(this.#leaseFromSeed(cfg.lease), cfg.lease.dns, 'seed', Number.NaN, false);
  }

  onChange(cb: LeaseListener): () => void {
    this.#listeners.add(cb);
    return () => {
      this.#listeners.delete(cb);
    };
  }

  /** Applies expiry at the current time. One comparison unless the lease just ran out. */
  tick(): void {
    const now = this.#clock[0]!;
    if (now >= this.endAt) this.#end('expired', now);
  }

  /** Is `ip` (int32) a DNS server of the current lease? */
  isDns(ip: number): boolean {
    const d = this.#dns;
    for (let i = 0; i < this.#dnsCount; i++) if (d[i] === ip) return true;
    return false;
  }

  /** Records a DHCP client message the filter let through from the VM. */
  clientMessage(msg: DhcpMessage): void {
    const now = this.#clock[0]!;
    const type = msg.messageType;
    if (type === DhcpType.DISCOVER || type === DhcpType.REQUEST || type === DhcpType.INFORM) {
      const i = this.#xidNext;
      this.#xids[i * 2] = msg.xid;
      this.#xids[i * 2 + 1] = now;
      this.#xidNext = (i + 1) % XID_SLOTS;
      if (type !== DhcpType.INFORM && (this.state === 'none' || this.state === 'expired')) this.state = 'pending';
    } else if (type === DhcpType.RELEASE) {
      if (this.bound && (msg.ciaddr | 0) === this.boundIp) this.#end('release', now);
    } else if (type === DhcpType.DECLINE) {
      if (this.bound && (!msg.hasRequestedIp || (msg.requestedIp | 0) === this.boundIp)) this.#end('decline', now);
    }
  }

  /**
   * Snoops a DHCP server reply from a trusted server, addressed to the VM's MAC or broadcast.
   * `msg` has been parsed successfully from `f`.
   */
  snoopReply(f: Uint8Array, msg: DhcpMessage): Snoop {
    const r = this.#snoop(f, msg);
    this.snoopCounters[r] = this.snoopCounters[r]! + 1;
    return r;
  }

  /** Counts a reply that could not be snooped (malformed or fragmented). */
  countSnoop(r: Snoop): void {
    this.snoopCounters[r] = this.snoopCounters[r]! + 1;
  }

  #snoop(f: Uint8Array, msg: DhcpMessage): Snoop {
    if (msg.op !== BootpOp.REPLY) return Snoop.MALFORMED;
    const type = msg.messageType;
    if (type !== DhcpType.ACK && type !== DhcpType.NAK) return Snoop.NOT_ACK;
    if (!macAt(f, msg.chaddrOffset, this.#cfg.vmMacBytes)) return Snoop.OTHER_CLIENT;
    // A server echoes the client identifier (RFC 6842): a reply carrying another identity is not this VM's.
    if (msg.clientIdOffset >= 0 && !isOwnClientId(f, msg, this.#cfg.vmMacBytes)) return Snoop.OTHER_CLIENT;
    if (!this.#xidKnown(msg)) return Snoop.UNKNOWN_XID;
    const now = this.#clock[0]!;
    if (type === DhcpType.NAK) {
      if (this.current !== null) this.#end('nak', now);
      else if (this.state === 'pending') this.state = 'none';
      return Snoop.NAK;
    }
    if (!msg.hasLeaseTime || msg.leaseTime === 0) return Snoop.NO_LEASE_TIME;
    const ip = msg.yiaddr;
    if (!this.#leasable(ip)) return Snoop.BAD_ADDRESS;
    const renewed = this.current !== null && this.current.ipNumber === ip;
    const dns: number[] = [];
    for (let i = 0; i < msg.dnsCount && i < MAX_DNS; i++) dns.push(u32(f, msg.dnsOffset + i * 4));
    this.#install(this.#leaseFromAck(f, msg, dns, now), dns, 'ack', now, true);
    return renewed ? Snoop.RENEWED : Snoop.LEARNED;
  }

  /** Installs a seeded lease (validated by the caller) at the current time and notifies. */
  seed(seed: ResolvedLeaseSeed): void {
    this.#install(this.#leaseFromSeed(seed), seed.dns, 'seed', this.#clock[0]!, true);
    this.tick();
  }

  #leasable(ip: number): boolean {
    const c = this.#cfg;
    if (((ip & ((0xffffffff << (32 - c.subnetCidr.prefix)) >>> 0)) >>> 0) !== c.subnetCidr.base) return false;
    if (ip === c.subnetCidr.base || ip === c.subnetBroadcast || ip === c.gatewayIpNumber) return false;
    const servers = c.dhcpServerNumbers;
    for (let i = 0; i < servers.length; i++) if (servers[i] === ip) return false;
    // A reserved address is the only one this VM may hold, whatever a server says.
    return c.addressNumber === null || ip === c.addressNumber;
  }

  #xidKnown(msg: DhcpMessage): boolean {
    const now = this.#clock[0]!;
    const xid = msg.xid;
    const x = this.#xids;
    const win = this.#cfg.dhcpTransactionMs;
    for (let i = 0; i < XID_SLOTS; i++) {
      if (x[i * 2] !== xid) continue;
      const age = now - x[i * 2 + 1]!;
      if (age <= win && age >= -win) return true;
    }
    return false;
  }

  #leaseFromAck(f: Uint8Array, msg: DhcpMessage, dns: readonly number[], now: number): Lease {
    const seconds = Math.min(msg.leaseTime, this.#cfg.maxLeaseSeconds);
    return Object.freeze({
      ip: formatIpv4(msg.yiaddr),
      ipNumber: msg.yiaddr,
      obtainedAt: now,
      expiresAt: now + seconds * 1000,
      leaseSeconds: seconds,
      dns: Object.freeze(dns.map(formatIpv4)),
      serverId: msg.hasServerId ? formatIpv4(msg.serverId) : null,
      router: msg.routerCount > 0 ? formatIpv4(u32(f, msg.routerOffset)) : null,
      subnetMask: msg.hasSubnetMask ? formatIpv4(msg.subnetMask) : null,
      source: 'ack' as const,
    });
  }

  #leaseFromSeed(seed: ResolvedLeaseSeed): Lease {
    return Object.freeze({
      ip: formatIpv4(seed.ip),
      ipNumber: seed.ip,
      obtainedAt: seed.obtainedAt,
      expiresAt: seed.expiresAt,
      leaseSeconds: (seed.expiresAt - seed.obtainedAt) / 1000,
      dns: Object.freeze(seed.dns.slice(0, MAX_DNS).map(formatIpv4)),
      serverId: seed.serverId === null ? null : formatIpv4(seed.serverId),
      router: null,
      subnetMask: null,
      source: 'seed' as const,
    });
  }

  #install(lease: Lease, dns: readonly number[], cause: 'ack' | 'seed', now: number, notify: boolean): void {
    const previous = this.current;
    this.current = lease;
    this.last = lease;
    this.state = 'bound';
    this.bound = true;
    this.boundIp = lease.ipNumber | 0;
    this.endAt = lease.expiresAt - this.#cfg.leaseSkewMs;
    this.#dnsCount = Math.min(dns.length, MAX_DNS);
    for (let i = 0; i < this.#dnsCount; i++) this.#dns[i] = dns[i]! | 0;
    if (notify) this.#emit({ lease, previous, cause, at: now });
  }

  #end(cause: LeaseCause, now: number): void {
    const previous = this.current;
    this.current = null;
    this.state = cause === 'expired' ? 'expired' : 'none';
    this.bound = false;
    this.boundIp = 0;
    this.endAt = Number.POSITIVE_INFINITY;
    this.#dnsCount = 0;
    if (previous !== null) this.#emit({ lease: null, previous, cause, at: now });
  }

  #emit(event: LeaseEvent): void {
    for (const cb of this.#listeners) {
      // Listener code is the caller's; its failure must not turn into a filter exception.
      try {
        cb(Object.freeze(event));
      } catch {
        this.listenerErrors++;
      }
    }
  }
}
