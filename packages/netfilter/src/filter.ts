/**
 * The per-VM packet filter. `createFilter(config)` validates the configuration and returns a
 * filter whose `fromVm` / `fromHost` decide one Ethernet frame each and return a numeric
 * {@link Verdict}: PASS (0) or a drop reason. Decisions are synchronous, allocation-free on every
 * path except a DHCP ACK that changes the lease, and never throw (bounds are checked before every
 * read; a top-level guard turns an unexpected exception into a counted INTERNAL_ERROR drop, which
 * fuzzing shows never happens).
 *
 * Rules are listed in order in this package's README.md.
 */
import { AddressClass, classifyIpv4 } from './address-classes.ts';
import { i32, isBroadcastMacAt, macAt, u16 } from './bytes.ts';
import { PrefixTable, RuleAction } from './cidr.ts';
import { type FilterConfig, type LeaseSeed, type ResolvedConfig, resolveConfig, resolveLeaseSeed } from './config.ts';
import {
  type Lease,
  type LeaseListener,
  type LeaseState,
  LeaseTracker,
  SNOOP_NAMES,
  isOwnClientId,
  Snoop,
  type SnoopName,
} from './lease.ts';
import { PortSet } from './port-set.ts';
import { TokenBucket } from './rate-limit.ts';
import { ARP_OP, ARP_SHA, ARP_SPA, ARP_TPA, ArpOp, ArpParse, checkArp } from './parse/arp.ts';
import { DHCP_CLIENT_PORT, DHCP_SERVER_PORT, BootpOp, DhcpMessage, DhcpParse, DhcpType, parseDhcp } from './parse/dhcp.ts';
import { blankDhcpOption } from './rewrite.ts';
import { ETH_DST, ETH_HEADER_LENGTH, ETH_SRC, EtherClass, EtherType, classifyEtherType } from './parse/ethernet.ts';
import { IcmpParse, IcmpType, checkIcmp, isIcmpError } from './parse/icmp.ts';
import { IpProto, Ipv4Header, Ipv4Parse, parseIpv4Header } from './parse/ipv4.ts';
import { TcpParse, checkTcp, isConnectionOpen } from './parse/tcp.ts';
import { UDP_HEADER, UdpParse, checkUdp } from './parse/udp.ts';
import { REASON_NAMES, type ReasonName, VERDICT_COUNT, Verdict } from './verdict.ts';

/** 255.255.255.255 as int32: on the hot path addresses are int32 (see bytes.ts `i32`). */
const BROADCAST_IP = -1;
const DNS_PORT = 53;

/** Live counters (typed arrays, updated in place). Index `fromVm`/`fromHost` by Verdict, `snoop` by Snoop. */
export interface FilterCounters {
  readonly fromVm: Float64Array;
  readonly fromHost: Float64Array;
  readonly snoop: Float64Array;
}

/** A named snapshot of the counters, for metrics and logs. */
export interface FilterStats {
  readonly fromVm: Readonly<Record<ReasonName, number>>;
  readonly fromHost: Readonly<Record<ReasonName, number>>;
  readonly snoop: Readonly<Record<SnoopName, number>>;
  /** Lease listeners that threw (the exception is swallowed so the filter never throws). */
  readonly listenerErrors: number;
  /**
   * DHCP client messages passed with their host name (12) or client FQDN (81) option blanked:
   * DNS names come from the operator, never from the guest.
   */
  readonly dhcpNamesStripped: number;
  readonly leaseState: LeaseState;
  readonly lease: Lease | null;
}

export interface PacketFilter {
  /** Decides a frame the VM sent (VM -> host/uplink). */
  fromVm(frame: Uint8Array, now: number): Verdict;
  /** Decides a frame for the VM (host/uplink -> VM); snoops DHCP replies. */
  fromHost(frame: Uint8Array, now: number): Verdict;
  /** The lease in force (after applying expiry at `now`, if given), or null. */
  lease(now?: number): Lease | null;
  leaseState(now?: number): LeaseState;
  /** The most recent lease, also after it ended (for tearing down forwards). */
  lastLease(): Lease | null;
  /** Called on every lease change (learned, renewed, ended). Returns an unsubscribe function. */
  onLeaseChange(cb: LeaseListener): () => void;
  /** Installs a lease the VM already holds. Throws NetfilterConfigError if it cannot be this VM's lease. */
  seedLease(seed: LeaseSeed, now: number): void;
  /** Applies lease expiry without a frame (e.g. from a timer), so the change is reported promptly. */
  tick(now: number): void;
  readonly counters: FilterCounters;
  stats(): FilterStats;
  /** The validated configuration, including the port exposure rules for the uplink. */
  readonly config: ResolvedConfig;
}

/** Validates `config` (throws NetfilterConfigError) and creates a filter for one VM. */
export function createFilter(config: FilterConfig): PacketFilter {
  return new Filter(resolveConfig(config));
}

function otherEtherType(type: number): Verdict {
  switch (classifyEtherType(type)) {
    case EtherClass.LLC:
      return Verdict.LLC;
    case EtherClass.VLAN:
      return Verdict.VLAN;
    case EtherClass.IPV6:
      return Verdict.IPV6;
    default:
      return Verdict.ETHERTYPE;
  }
}

class Filter implements PacketFilter {
  readonly config: ResolvedConfig;
  readonly counters: FilterCounters;

  readonly #lease: LeaseTracker;
  /**
   * The current time, written once per frame and read where it is needed. Deep functions read it
   * from here instead of taking `now` as an argument: an epoch-scale time is not a small integer,
   * and V8 would box a fresh heap number for every call that passes it.
   */
  readonly #clock = new Float64Array(1);
  readonly #ip = new Ipv4Header();
  readonly #dhcp = new DhcpMessage();
  readonly #vmCounts = new Float64Array(VERDICT_COUNT);
  readonly #hostCounts = new Float64Array(VERDICT_COUNT);
  readonly #vmMac: Uint8Array;
  readonly #gwMac: Uint8Array;
  readonly #hasGwMac: boolean;
  readonly #gatewayIp: number;
  readonly #subnetBase: number;
  readonly #subnetMask: number;
  readonly #servers: Int32Array;
  readonly #rules: PrefixTable;
  readonly #tcpExposed = new PortSet();
  readonly #udpExposed = new PortSet();
  readonly #hostAccess: boolean;
  /** Configured extra "global" prefixes (lab networks standing in for the Internet). */
  readonly #global: PrefixTable;
  readonly #blockLocal: boolean;
  readonly #hostOnly: boolean;
  readonly #restricted: boolean;
  readonly #verifyChecksum: boolean;
  readonly #maxFrame: number;
  readonly #rate: TokenBucket;
  readonly #arpRate: TokenBucket;
  /** The host's other addresses (int32): never reachable unless an allow rule names them. */
  readonly #hostAddrs: Int32Array;
  /** Bit (last octet) set for each host address: a cheap first test on the hot path. */
  readonly #hostLowBits = new Uint32Array(8);
  /** The reserved address (int32) when #hasAddress. */
  readonly #address: number;
  readonly #hasAddress: boolean;
  #namesStripped = 0;

  constructor(cfg: ResolvedConfig) {
    this.config = cfg;
    this.#lease = new LeaseTracker(cfg, this.#clock);
    this.counters = Object.freeze({ fromVm: this.#vmCounts, fromHost: this.#hostCounts, snoop: this.#lease.snoopCounters });
    this.#vmMac = cfg.vmMacBytes;
    this.#hasGwMac = cfg.gatewayMacBytes !== null;
    this.#gwMac = cfg.gatewayMacBytes ?? new Uint8Array(6);
    // Addresses as int32 (see BROADCAST_IP).
    this.#gatewayIp = cfg.gatewayIpNumber | 0;
    this.#subnetBase = cfg.subnetCidr.base | 0;
    this.#subnetMask = cfg.subnetCidr.prefix === 0 ? 0 : 0xffffffff << (32 - cfg.subnetCidr.prefix);
    this.#servers = Int32Array.from(cfg.dhcpServerNumbers, (n) => n | 0);
    this.#rules = new PrefixTable(cfg.rules);
    this.#global = new PrefixTable(cfg.globalRules);
    for (const e of cfg.expose) (e.protocol === 'tcp' ? this.#tcpExposed : this.#udpExposed).add(e.vmPort);
    this.#hostAccess = cfg.hostAccess && !cfg.blockLocal;
    this.#blockLocal = cfg.blockLocal;
    this.#hostOnly = cfg.hostOnly;
    this.#restricted = cfg.ingress === 'restricted';
    this.#verifyChecksum = cfg.verifyIpChecksum;
    this.#maxFrame = cfg.maxFrame;
    this.#rate = new TokenBucket(cfg.dhcpRate.perSecond, cfg.dhcpRate.burst, this.#clock);
    this.#arpRate = new TokenBucket(cfg.arpRate.perSecond, cfg.arpRate.burst, this.#clock);
    this.#hostAddrs = Int32Array.from(cfg.hostAddressNumbers, (n) => n | 0);
    for (const n of cfg.hostAddressNumbers) {
      const w = (n & 0xff) >>> 5;
      this.#hostLowBits[w] = this.#hostLowBits[w]! | (1 << (n & 31));
    }
    this.#hasAddress = cfg.addressNumber !== null;
    this.#address = (cfg.addressNumber ?? 0) | 0;
  }

  fromVm(frame: Uint8Array, now: number): Verdict {
    let v: Verdict;
    try {
      this.#clock[0] = now;
      // Expiry first, so that every decision (even of a runt frame) sees time move on.
      if (now >= this.#lease.endAt) this.#lease.tick();
      v = this.#fromVm(frame);
    } catch {
      // Last line of defence only: every read is bounds-checked; fuzzing asserts this never runs.
      v = Verdict.INTERNAL_ERROR;
    }
    const c = this.#vmCounts;
    c[v] = c[v]! + 1;
    return v;
  }

  fromHost(frame: Uint8Array, now: number): Verdict {
    let v: Verdict;
    try {
      this.#clock[0] = now;
      if (now >= this.#lease.endAt) this.#lease.tick();
      v = this.#fromHost(frame);
    } catch {
      v = Verdict.INTERNAL_ERROR;
    }
    const c = this.#hostCounts;
    c[v] = c[v]! + 1;
    return v;
  }

  lease(now?: number): Lease | null {
    if (now !== undefined) this.tick(now);
    return this.#lease.current;
  }

  leaseState(now?: number): LeaseState {
    if (now !== undefined) this.tick(now);
    return this.#lease.state;
  }

  lastLease(): Lease | null {
    return this.#lease.last;
  }

  onLeaseChange(cb: LeaseListener): () => void {
    return this.#lease.onChange(cb);
  }

  seedLease(seed: LeaseSeed, now: number): void {
    const resolved = resolveLeaseSeed(this.config, seed, 'seed');
    this.#clock[0] = now;
    this.#lease.seed(resolved);
  }

  tick(now: number): void {
    this.#clock[0] = now;
    this.#lease.tick();
  }

  stats(): FilterStats {
    const named = <N extends string>(names: readonly N[], values: Float64Array): Record<N, number> =>
      Object.fromEntries(names.map((n, i) => [n, values[i] ?? 0])) as Record<N, number>;
    return {
      fromVm: named(REASON_NAMES, this.#vmCounts),
      fromHost: named(REASON_NAMES, this.#hostCounts),
      snoop: named(SNOOP_NAMES, this.#lease.snoopCounters),
      listenerErrors: this.#lease.listenerErrors,
      dhcpNamesStripped: this.#namesStripped,
      leaseState: this.#lease.state,
      lease: this.#lease.current,
    };
  }

  // ---------------------------------------------------------------- VM -> host

  #fromVm(f: Uint8Array): Verdict {
    const len = f.length;
    if (len < ETH_HEADER_LENGTH) return Verdict.MALFORMED;
    if (len > this.#maxFrame) return Verdict.OVERSIZE;
    if ((f[ETH_SRC]! & 1) !== 0) return Verdict.SRC_MAC_GROUP;
    if (!macAt(f, ETH_SRC, this.#vmMac)) return Verdict.MAC_SPOOF;
    const type = (f[12]! << 8) | f[13]!;
    if (type === EtherType.IPV4) return this.#vmIpv4(f, len);
    if (type === EtherType.ARP) return this.#vmArp(f, len);
    return otherEtherType(type);
  }

  #vmArp(f: Uint8Array, len: number): Verdict {
    const a = ETH_HEADER_LENGTH;
    if (checkArp(f, a, len) !== ArpParse.OK) return Verdict.MALFORMED;
    if (!macAt(f, a + ARP_SHA, this.#vmMac)) return Verdict.ARP_MAC_SPOOF;
    const op = u16(f, a + ARP_OP);
    const spa = i32(f, a + ARP_SPA);
    if (spa === 0) {
      // RFC 5227 probe: allowed in every lease state (Softnet dropped it after expiry).
      if (op !== ArpOp.REQUEST) return Verdict.ARP_IP_SPOOF;
      return this.#arpRate.take() ? Verdict.PASS : Verdict.ARP_RATE_LIMIT;
    }
    const lease = this.#lease;
    if (!lease.bound) return Verdict.NO_LEASE;
    if (spa !== lease.boundIp) return Verdict.ARP_IP_SPOOF;
    if (this.#blockLocal && op === ArpOp.REQUEST) {
      const tpa = i32(f, a + ARP_TPA);
      if (tpa !== this.#gatewayIp && tpa !== spa) return Verdict.LOCAL_DST;
    }
    // Every ARP the VM gets through costs the host a neighbour-table lookup (or an entry): bounded.
    return this.#arpRate.take() ? Verdict.PASS : Verdict.ARP_RATE_LIMIT;
  }

  #vmIpv4(f: Uint8Array, len: number): Verdict {
    const ip = this.#ip;
    const st = parseIpv4Header(f, ETH_HEADER_LENGTH, len, ip, this.#verifyChecksum);
    if (st !== Ipv4Parse.OK) return st === Ipv4Parse.BAD_CHECKSUM ? Verdict.BAD_CHECKSUM : Verdict.MALFORMED;
    if (ip.headerLength !== 20) return Verdict.IP_OPTIONS;
    // Unicast IPv4 goes to the gateway only: no L2 shortcut to another VM's MAC. On a host-only
    // network the shortcut is how VMs reach each other: allowed for a destination inside the
    // subnet other than the gateway, which the destination rules below then judge.
    if (this.#hasGwMac && (f[ETH_DST]! & 1) === 0 && !macAt(f, ETH_DST, this.#gwMac)) {
      const dst = ip.dst | 0;
      if (!this.#hostOnly || !this.#inSubnet(dst) || dst === this.#gatewayIp) return Verdict.DST_MAC;
    }
    const fragOff = ip.fragmentOffset;
    if (fragOff === 1) return Verdict.BAD_FRAGMENT;
    const frag = fragOff !== 0 || ip.moreFragments;
    const proto = ip.protocol;
    let sport = -1;
    let dport = -1;
    let tcpFlags = 0;
    let icmp = -1;
    if (fragOff === 0) {
      // First fragment or whole datagram: the L4 header must be complete (RFC 1858).
      const l4 = ip.payloadOffset;
      const end = ip.payloadEnd;
      if (proto === IpProto.TCP) {
        if (checkTcp(f, l4, end) !== TcpParse.OK) return frag ? Verdict.BAD_FRAGMENT : Verdict.MALFORMED;
        sport = u16(f, l4);
        dport = u16(f, l4 + 2);
        tcpFlags = f[l4 + 13]!;
      } else if (proto === IpProto.UDP) {
        if (frag) {
          if (end - l4 < UDP_HEADER) return Verdict.BAD_FRAGMENT;
          if (u16(f, l4 + 4) < UDP_HEADER) return Verdict.MALFORMED;
        } else if (checkUdp(f, l4, end) !== UdpParse.OK) {
          return Verdict.MALFORMED;
        }
        sport = u16(f, l4);
        dport = u16(f, l4 + 2);
        // A VM never acts as a DHCP server (Softnet let 0.0.0.0:68 -> 255.255.255.255:68 through).
        if (sport === DHCP_SERVER_PORT || dport === DHCP_CLIENT_PORT) return Verdict.ROGUE_DHCP;
        if (dport === DHCP_SERVER_PORT) return this.#vmDhcpClient(f, frag);
      } else if (proto === IpProto.ICMP) {
        if (checkIcmp(l4, end) !== IcmpParse.OK) return frag ? Verdict.BAD_FRAGMENT : Verdict.MALFORMED;
        icmp = f[l4]!;
      }
    }
    const lease = this.#lease;
    if (!lease.bound) return Verdict.NO_LEASE;
    if ((ip.src | 0) !== lease.boundIp) return Verdict.IP_SPOOF;
    // Fragments are judged on the destination only: no port-based exception applies to them.
    if (frag) {
      sport = -1;
      dport = -1;
      icmp = -1;
    }
    return this.#vmDestination(ip.dst | 0, proto, sport, dport, tcpFlags, icmp);
  }

  #vmDhcpClient(f: Uint8Array, frag: boolean): Verdict {
    if (frag) return Verdict.DHCP_BAD_CLIENT;
    const ip = this.#ip;
    const lease = this.#lease;
    const src = ip.src | 0;
    if (src !== 0 && !(lease.bound && src === lease.boundIp)) return lease.bound ? Verdict.IP_SPOOF : Verdict.NO_LEASE;
    const l4 = ip.payloadOffset;
    if (u16(f, l4) !== DHCP_CLIENT_PORT) return Verdict.DHCP_BAD_CLIENT;
    const dst = ip.dst | 0;
    if (dst !== BROADCAST_IP && !this.#isServer(dst)) return Verdict.DHCP_BAD_CLIENT;
    const m = this.#dhcp;
    if (parseDhcp(f, l4 + UDP_HEADER, l4 + u16(f, l4 + 4), m) !== DhcpParse.OK) return Verdict.DHCP_BAD_CLIENT;
    if (m.op !== BootpOp.REQUEST) return Verdict.ROGUE_DHCP;
    if (!macAt(f, m.chaddrOffset, this.#vmMac)) return Verdict.DHCP_CHADDR;
    // One identity per VM: its MAC. A relay field or a foreign client identifier would let the
    // server act for, or send to, another client.
    if (m.giaddr !== 0 || m.hasRelayInfo) return Verdict.DHCP_RELAY;
    if (m.clientIdOffset >= 0 && !isOwnClientId(f, m, this.#vmMac)) return Verdict.DHCP_CLIENT_ID;
    const t = m.messageType;
    const fromZero = t === DhcpType.DISCOVER || t === DhcpType.REQUEST || t === DhcpType.DECLINE;
    const ok = src === 0 ? fromZero : fromZero || t === DhcpType.RELEASE || t === DhcpType.INFORM;
    if (!ok) return Verdict.DHCP_BAD_CLIENT;
    if (!this.#ownAddresses(m, t)) return Verdict.DHCP_ADDRESS;
    if (!this.#rate.take()) return Verdict.RATE_LIMIT;
    if (m.hostnameOptionOffset >= 0 || m.fqdnOptionOffset >= 0) {
      // DNS names come from Fleet, not from the guest: blank the options in place (as PAD bytes,
      // so no length changes) and fix the UDP checksum.
      const udp = ip.payloadOffset;
      if (m.hostnameOptionOffset >= 0) blankDhcpOption(f, m.hostnameOptionOffset, udp);
      if (m.fqdnOptionOffset >= 0) blankDhcpOption(f, m.fqdnOptionOffset, udp);
      this.#namesStripped++;
    }
    lease.clientMessage(m);
    return Verdict.PASS;
  }

  /**
   * Does every address the client message names belong to this VM? ciaddr must be 0 or its lease
   * (RELEASE: exactly the lease); the requested address (option 50) must be leasable (its
   * reservation, when it has one); DECLINE must name the address it was offered, i.e. its own.
   */
  #ownAddresses(m: DhcpMessage, t: number): boolean {
    const lease = this.#lease;
    const ci = m.ciaddr | 0;
    if (t === DhcpType.RELEASE) return lease.bound && ci === lease.boundIp;
    if (ci !== 0 && !this.#own(ci)) return false;
    if (m.hasRequestedIp && !this.#own(m.requestedIp | 0)) return false;
    if (t === DhcpType.DECLINE && !m.hasRequestedIp) return false;
    return true;
  }

  /** Is `a` (int32) an address this VM may name: its lease, its reservation, or (without one) a usable subnet address? */
  #own(a: number): boolean {
    const lease = this.#lease;
    if (lease.bound && a === lease.boundIp) return true;
    return this.#hasAddress ? a === this.#address : this.#usable(a);
  }

  /** A unicast address of the VM subnet that a VM could lease (int32). */
  #usable(a: number): boolean {
    if (!this.#inSubnet(a) || a === this.#subnetBase || a === this.#gatewayIp || a === (this.#subnetBase | ~this.#subnetMask)) return false;
    return !this.#isServer(a);
  }

  #vmDestination(dst: number, proto: number, sport: number, dport: number, tcpFlags: number, icmp: number): Verdict {
    if (this.#hostOnly && !this.#inSubnet(dst)) return Verdict.BEYOND_HOST_ONLY;
    const rule = this.#rules.lookup(dst);
    if (rule === RuleAction.ALLOW) return Verdict.PASS;
    if (rule === RuleAction.BLOCK) return Verdict.BLOCKED;
    if (sport >= 0 && this.#isExposedReply(dst, proto, sport, tcpFlags)) return Verdict.PASS;
    const dns = dport === DNS_PORT && (proto === IpProto.UDP || proto === IpProto.TCP) && this.#lease.isDns(dst);
    if (dst === this.#gatewayIp) {
      if (this.#hostAccess || dns || this.#isReplyToHost(proto, sport, tcpFlags, icmp)) return Verdict.PASS;
      return Verdict.HOST_BLOCKED;
    }
    if (dns) return Verdict.PASS;
    // A 256-bit filter on the last octet first: the full compare runs only for likely host addresses.
    if (((this.#hostLowBits[(dst & 0xff) >>> 5]! >>> (dst & 31)) & 1) !== 0 && this.#isHostAddress(dst)) return Verdict.HOST_BLOCKED;
    if (this.#inSubnet(dst)) return Verdict.LOCAL_DST;
    return classifyIpv4(dst) === AddressClass.GLOBAL || this.#global.lookup(dst) === RuleAction.ALLOW ? Verdict.PASS : Verdict.LOCAL_DST;
  }

  /**
   * The VM answering the host (the worker's SSH session, a ping): a TCP segment that does not
   * open a connection, an echo reply or an ICMP error. Statelessly this cannot prove a connection
   * exists; it cannot open one either, and the host's firewall (Linux: conntrack, `ct state
   * established,related`) drops what belongs to no connection of its own.
   */
  #isReplyToHost(proto: number, sport: number, tcpFlags: number, icmp: number): boolean {
    if (proto === IpProto.TCP) return sport >= 0 && !isConnectionOpen(tcpFlags);
    if (proto === IpProto.ICMP) return icmp === IcmpType.ECHO_REPLY || isIcmpError(icmp);
    return false;
  }

  /**
   * Replies from an exposed VM port: TCP segments that do not open a connection, or UDP, to a
   * unicast destination that is the gateway or outside the VM subnet (a LAN client reached through
   * the host's port forwarding has a private address; tart#278).
   */
  #isExposedReply(dst: number, proto: number, sport: number, tcpFlags: number): boolean {
    if (proto === IpProto.TCP) {
      if (!this.#tcpExposed.has(sport) || isConnectionOpen(tcpFlags)) return false;
    } else if (proto === IpProto.UDP) {
      if (!this.#udpExposed.has(sport)) return false;
    } else {
      return false;
    }
    if (dst === this.#gatewayIp) return true;
    if (this.#inSubnet(dst)) return false;
    const a = dst >>> 24;
    return a !== 0 && a !== 127 && a < 224;
  }

  // ---------------------------------------------------------------- host -> VM

  #fromHost(f: Uint8Array): Verdict {
    const len = f.length;
    if (len < ETH_HEADER_LENGTH) return Verdict.MALFORMED;
    if (len > this.#maxFrame) return Verdict.OVERSIZE;
    const type = (f[12]! << 8) | f[13]!;
    if (type !== EtherType.IPV4 && type !== EtherType.ARP) return otherEtherType(type);
    if (!macAt(f, ETH_DST, this.#vmMac) && !isBroadcastMacAt(f, ETH_DST)) return Verdict.DST_MAC;
    if ((f[ETH_SRC]! & 1) !== 0) return Verdict.SRC_MAC_GROUP;
    if (macAt(f, ETH_SRC, this.#vmMac)) return Verdict.MAC_SPOOF;
    if (type === EtherType.ARP) {
      if (checkArp(f, ETH_HEADER_LENGTH, len) !== ArpParse.OK) return Verdict.MALFORMED;
      return this.#peerBroadcast(f, true) ? Verdict.PEER_BROADCAST : Verdict.PASS;
    }
    if (this.#peerBroadcast(f, false)) return Verdict.PEER_BROADCAST;
    return this.#hostIpv4(f, len);
  }

  /**
   * A host-only network's ports are not isolated (issue 18), so another VM's broadcasts reach this
   * VM's port: only the gateway's broadcasts, and a peer's ARP request for this VM's own leased
   * address (so an allowed peer can resolve it), are let through. Needs the gateway's MAC to tell
   * the gateway from a peer. `arp`: a checked ARP frame (its target address is at byte 38).
   */
  #peerBroadcast(f: Uint8Array, arp: boolean): boolean {
    if (!this.#hostOnly || !this.#hasGwMac || !isBroadcastMacAt(f, ETH_DST) || macAt(f, ETH_SRC, this.#gwMac)) return false;
    if (!arp) return true;
    const lease = this.#lease;
    return !(lease.bound && i32(f, ETH_HEADER_LENGTH + ARP_TPA) === lease.boundIp);
  }

  #hostIpv4(f: Uint8Array, len: number): Verdict {
    const ip = this.#ip;
    const st = parseIpv4Header(f, ETH_HEADER_LENGTH, len, ip, this.#verifyChecksum);
    if (st !== Ipv4Parse.OK) return st === Ipv4Parse.BAD_CHECKSUM ? Verdict.BAD_CHECKSUM : Verdict.MALFORMED;
    if (ip.headerLength !== 20) return Verdict.IP_OPTIONS;
    const fragOff = ip.fragmentOffset;
    if (fragOff === 1) return Verdict.BAD_FRAGMENT;
    const frag = fragOff !== 0 || ip.moreFragments;
    const proto = ip.protocol;
    let sport = -1;
    let dport = -1;
    let icmp = -1;
    if (fragOff === 0) {
      const l4 = ip.payloadOffset;
      const end = ip.payloadEnd;
      if (proto === IpProto.TCP) {
        if (checkTcp(f, l4, end) !== TcpParse.OK) return frag ? Verdict.BAD_FRAGMENT : Verdict.MALFORMED;
        sport = u16(f, l4);
        dport = u16(f, l4 + 2);
      } else if (proto === IpProto.UDP) {
        if (frag) {
          if (end - l4 < UDP_HEADER) return Verdict.BAD_FRAGMENT;
          if (u16(f, l4 + 4) < UDP_HEADER) return Verdict.MALFORMED;
        } else if (checkUdp(f, l4, end) !== UdpParse.OK) {
          return Verdict.MALFORMED;
        }
        sport = u16(f, l4);
        dport = u16(f, l4 + 2);
        if (sport === DHCP_SERVER_PORT || dport === DHCP_CLIENT_PORT) return this.#hostDhcp(f, frag, sport, dport);
      } else if (proto === IpProto.ICMP) {
        if (checkIcmp(l4, end) !== IcmpParse.OK) return frag ? Verdict.BAD_FRAGMENT : Verdict.MALFORMED;
        icmp = f[l4]!;
      }
    }
    if (this.#hostOnly && !this.#inSubnet(ip.src | 0)) return Verdict.BEYOND_HOST_ONLY;
    if (!this.#restricted) return Verdict.PASS;
    if (frag) {
      sport = -1;
      dport = -1;
      icmp = -1;
    }
    return this.#hostSource(ip.src | 0, proto, sport, dport, icmp);
  }

  /** DHCP server traffic towards the VM: only from trusted servers; ACK/NAK are snooped. */
  #hostDhcp(f: Uint8Array, frag: boolean, sport: number, dport: number): Verdict {
    const ip = this.#ip;
    if (!this.#isServer(ip.src | 0)) return Verdict.DHCP_UNTRUSTED;
    if (this.#hasGwMac && !macAt(f, ETH_SRC, this.#gwMac)) return Verdict.DHCP_UNTRUSTED;
    if (sport === DHCP_SERVER_PORT && dport === DHCP_CLIENT_PORT) {
      const lease = this.#lease;
      if (frag) {
        lease.countSnoop(Snoop.FRAGMENT);
      } else {
        const l4 = ip.payloadOffset;
        const m = this.#dhcp;
        if (parseDhcp(f, l4 + UDP_HEADER, l4 + u16(f, l4 + 4), m) !== DhcpParse.OK) lease.countSnoop(Snoop.MALFORMED);
        else if (!macAt(f, m.chaddrOffset, this.#vmMac)) {
          // A broadcast reply to another client: its address and identity are none of this VM's business.
          lease.countSnoop(Snoop.OTHER_CLIENT);
          return Verdict.DHCP_OTHER_CLIENT;
        } else lease.snoopReply(f, m);
      }
    }
    // A malformed reply from a trusted server still passes: the VM's client judges it; we only refuse to learn from it.
    return Verdict.PASS;
  }

  /** Restricted ingress: may this (local) source talk to the VM? */
  #hostSource(src: number, proto: number, sport: number, dport: number, icmp: number): Verdict {
    const rule = this.#rules.lookup(src);
    if (rule === RuleAction.ALLOW) return Verdict.PASS;
    if (rule === RuleAction.BLOCK) return Verdict.BLOCKED;
    if (dport >= 0) {
      if (proto === IpProto.TCP ? this.#tcpExposed.has(dport) : proto === IpProto.UDP && this.#udpExposed.has(dport)) {
        return Verdict.PASS;
      }
    }
    if (sport === DNS_PORT && (proto === IpProto.UDP || proto === IpProto.TCP) && this.#lease.isDns(src)) return Verdict.PASS;
    if (src === this.#gatewayIp) {
      if (this.#hostAccess) return Verdict.PASS;
      if (proto === IpProto.ICMP && isIcmpError(icmp)) return Verdict.PASS;
      return Verdict.HOST_BLOCKED;
    }
    if (this.#inSubnet(src)) return Verdict.LOCAL_SRC;
    return classifyIpv4(src) === AddressClass.GLOBAL || this.#global.lookup(src) === RuleAction.ALLOW ? Verdict.PASS : Verdict.LOCAL_SRC;
  }

  // ---------------------------------------------------------------- helpers

  /** `ip` is int32. */
  #inSubnet(ip: number): boolean {
    return (ip & this.#subnetMask) === this.#subnetBase;
  }

  #isHostAddress(ip: number): boolean {
    const h = this.#hostAddrs;
    for (let i = 0; i < h.length; i++) if (h[i] === ip) return true;
    return false;
  }

  #isServer(ip: number): boolean {
    const s = this.#servers;
    for (let i = 0; i < s.length; i++) if (s[i] === ip) return true;
    return false;
  }
}
