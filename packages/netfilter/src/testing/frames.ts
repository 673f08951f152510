/**
 * Test-only typed frame builder. Builds Ethernet II / 802.1Q / ARP / IPv4 / UDP / TCP / ICMP /
 * BOOTP-DHCP frames byte by byte, with override knobs for every field the filter validates so
 * malformed inputs can be expressed directly. IPv4 header, ICMP, UDP and TCP checksums are
 * computed (for unfragmented packets), so fixtures are also valid on a real wire.
 * Not exported from the package.
 */
import { parseIpv4, parseMac } from '../address.ts';

export function mac(text: string): Uint8Array {
  const m = parseMac(text);
  if (m === null) throw new Error(`bad MAC in test: ${text}`);
  return m;
}

export function ip(text: string): number {
  const n = parseIpv4(text);
  if (n === null) throw new Error(`bad IPv4 in test: ${text}`);
  return n;
}

function ipBytes(text: string): number[] {
  const n = ip(text);
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}

export function concat(...parts: (Uint8Array | readonly number[])[]): Uint8Array {
  const len = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(len);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function be16(v: number): number[] {
  return [(v >>> 8) & 255, v & 255];
}
function be32(v: number): number[] {
  return [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
}

function onesComplement(data: Uint8Array, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i]! << 8) | data[i + 1]!;
  if (data.length % 2 === 1) sum += data[data.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

// ------------------------------------------------------------------ Ethernet

export const ETHERTYPE = {
  IPV4: 0x0800,
  ARP: 0x0806,
  IPV6: 0x86dd,
  VLAN: 0x8100,
  QINQ: 0x88a8,
  LLDP: 0x88cc,
  EAPOL: 0x888e,
  RARP: 0x8035,
} as const;

export interface EthernetSpec {
  dst: string;
  src: string;
  /** EtherType, or an 802.3 length (< 0x0600). */
  type: number;
  payload: Uint8Array;
  /** Insert VLAN tags (outermost first) before `type`. */
  tags?: readonly { tpid: number; vid: number; pcp?: number }[];
}

export function ethernet(spec: EthernetSpec): Uint8Array {
  const tags = (spec.tags ?? []).flatMap((t) => [...be16(t.tpid), ...be16((((t.pcp ?? 0) & 7) << 13) | (t.vid & 0xfff))]);
  return concat(mac(spec.dst), mac(spec.src), tags, be16(spec.type), spec.payload);
}

// ------------------------------------------------------------------ ARP

export interface ArpSpec {
  op?: number;
  sha: string;
  spa: string;
  tha?: string;
  tpa: string;
  htype?: number;
  ptype?: number;
  /** Declared hardware address length (the address fields are padded/cut to it). */
  hlen?: number;
  /** Declared protocol address length (the address fields are padded/cut to it). */
  plen?: number;
}

export function arp(spec: ArpSpec): Uint8Array {
  const hlen = spec.hlen ?? 6;
  const plen = spec.plen ?? 4;
  const fit = (bytes: Uint8Array | number[], n: number): number[] => {
    const out = new Array<number>(n).fill(0);
    for (let i = 0; i < n && i < bytes.length; i++) out[i] = bytes[i]!;
    return out;
  };
  return concat(
    be16(spec.htype ?? 1),
    be16(spec.ptype ?? 0x0800),
    [hlen, plen],
    be16(spec.op ?? 1),
    fit(mac(spec.sha), hlen),
    fit(ipBytes(spec.spa), plen),
    fit(mac(spec.tha ?? '00:00:00:00:00:00'), hlen),
    fit(ipBytes(spec.tpa), plen),
  );
}

// ------------------------------------------------------------------ IPv4

export const PROTO = { ICMP: 1, TCP: 6, UDP: 17, ICMPV6: 58 } as const;

export interface Ipv4Spec {
  src: string;
  dst: string;
  protocol: number;
  payload: Uint8Array;
  ttl?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  /** Fragment offset in 8-byte units. */
  fragmentOffset?: number;
  /** Raw option bytes (padded to a multiple of 4). */
  options?: readonly number[];
  /** Override the IHL nibble. */
  ihl?: number;
  /** Override the total length field. */
  totalLength?: number;
  version?: number;
  reservedFlag?: boolean;
  /** Corrupt the header checksum. */
  badChecksum?: boolean;
}

export function ipv4(spec: Ipv4Spec): Uint8Array {
  const opts = [...(spec.options ?? [])];
  while (opts.length % 4 !== 0) opts.push(0);
  const hlen = 20 + opts.length;
  const ihl = spec.ihl ?? hlen / 4;
  const frag = spec.fragmentOffset ?? 0;
  const flags = (spec.reservedFlag ? 0x8000 : 0) | (spec.df ? 0x4000 : 0) | (spec.mf ? 0x2000 : 0) | (frag & 0x1fff);
  let payload = spec.payload;
  const whole = !spec.mf && frag === 0;
  if (whole && (spec.protocol === PROTO.UDP || spec.protocol === PROTO.TCP)) {
    payload = withL4Checksum(spec.protocol, ip(spec.src), ip(spec.dst), payload);
  }
  const header = new Uint8Array([
    ((spec.version ?? 4) << 4) | (ihl & 15),
    0,
    ...be16(spec.totalLength ?? hlen + payload.length),
    ...be16(spec.id ?? 0x1234),
    ...be16(flags),
    spec.ttl ?? 64,
    spec.protocol,
    0,
    0,
    ...ipBytes(spec.src),
    ...ipBytes(spec.dst),
    ...opts,
  ]);
  const sum = onesComplement(header);
  header[10] = sum >>> 8;
  header[11] = (sum & 255) ^ (spec.badChecksum ? 0x5a : 0);
  return concat(header, payload);
}

function withL4Checksum(protocol: number, src: number, dst: number, seg: Uint8Array): Uint8Array {
  const out = seg.slice();
  const at = protocol === PROTO.UDP ? 6 : 16;
  if (out.length < at + 2) return out;
  out[at] = 0;
  out[at + 1] = 0;
  const pseudo = concat(be32(src), be32(dst), [0, protocol], be16(out.length));
  let sum = 0;
  const add = (d: Uint8Array): void => {
    for (let i = 0; i + 1 < d.length; i += 2) sum += (d[i]! << 8) | d[i + 1]!;
    if (d.length % 2 === 1) sum += d[d.length - 1]! << 8;
  };
  add(pseudo);
  add(out);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  let c = ~sum & 0xffff;
  if (c === 0 && protocol === PROTO.UDP) c = 0xffff;
  out[at] = c >>> 8;
  out[at + 1] = c & 255;
  return out;
}

// ------------------------------------------------------------------ L4

export interface UdpSpec {
  sport: number;
  dport: number;
  payload?: Uint8Array;
  /** Override the length field. */
  length?: number;
}

export function udp(spec: UdpSpec): Uint8Array {
  const payload = spec.payload ?? new Uint8Array(0);
  return concat(be16(spec.sport), be16(spec.dport), be16(spec.length ?? 8 + payload.length), [0, 0], payload);
}

export const TCP_FLAGS = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

export interface TcpSpec {
  sport: number;
  dport: number;
  flags?: number;
  seq?: number;
  ack?: number;
  payload?: Uint8Array;
  /** Override the data offset nibble (32-bit words). */
  dataOffset?: number;
}

export function tcp(spec: TcpSpec): Uint8Array {
  const payload = spec.payload ?? new Uint8Array(0);
  return concat(
    be16(spec.sport),
    be16(spec.dport),
    be32(spec.seq ?? 1000),
    be32(spec.ack ?? 2000),
    [((spec.dataOffset ?? 5) & 15) << 4, spec.flags ?? TCP_FLAGS.ACK],
    be16(65535),
    [0, 0, 0, 0],
    payload,
  );
}

export function icmp(spec: { type: number; code?: number; rest?: number; payload?: Uint8Array }): Uint8Array {
  const m = concat([spec.type, spec.code ?? 0, 0, 0], be32(spec.rest ?? 0), spec.payload ?? new Uint8Array(0));
  const c = onesComplement(m);
  m[2] = c >>> 8;
  m[3] = c & 255;
  return m;
}

// ------------------------------------------------------------------ DHCP

export const DHCP = { DISCOVER: 1, OFFER: 2, REQUEST: 3, DECLINE: 4, ACK: 5, NAK: 6, RELEASE: 7, INFORM: 8 } as const;

/** One option: [code, value bytes]. Use the helpers in `opt`. */
export type DhcpOpt = readonly [number, readonly number[]];

export const opt = {
  type: (t: number): DhcpOpt => [53, [t]],
  leaseTime: (s: number): DhcpOpt => [51, be32(s)],
  serverId: (a: string): DhcpOpt => [54, ipBytes(a)],
  requestedIp: (a: string): DhcpOpt => [50, ipBytes(a)],
  subnetMask: (a: string): DhcpOpt => [1, ipBytes(a)],
  router: (...a: string[]): DhcpOpt => [3, a.flatMap(ipBytes)],
  dns: (...a: string[]): DhcpOpt => [6, a.flatMap(ipBytes)],
  clientId: (bytes: readonly number[]): DhcpOpt => [61, bytes],
  overload: (v: number): DhcpOpt => [52, [v]],
  raw: (code: number, bytes: readonly number[]): DhcpOpt => [code, bytes],
};

export interface DhcpSpec {
  op: 1 | 2;
  xid: number;
  chaddr: string;
  ciaddr?: string;
  yiaddr?: string;
  siaddr?: string;
  giaddr?: string;
  /** Set the broadcast flag. */
  broadcast?: boolean;
  options: readonly DhcpOpt[];
  /** Append END (255). Default true. */
  end?: boolean;
  /** Raw bytes appended after the options (e.g. a truncated option). */
  trailer?: readonly number[];
  cookie?: number;
  htype?: number;
  hlen?: number;
}

export function dhcp(spec: DhcpSpec): Uint8Array {
  const chaddr = new Array<number>(16).fill(0);
  mac(spec.chaddr).forEach((b, i) => (chaddr[i] = b));
  const fixed = concat(
    [spec.op, spec.htype ?? 1, spec.hlen ?? 6, 0],
    be32(spec.xid),
    be16(0),
    be16(spec.broadcast ? 0x8000 : 0),
    ipBytes(spec.ciaddr ?? '0.0.0.0'),
    ipBytes(spec.yiaddr ?? '0.0.0.0'),
    ipBytes(spec.siaddr ?? '0.0.0.0'),
    ipBytes(spec.giaddr ?? '0.0.0.0'),
    chaddr,
    new Array<number>(64 + 128).fill(0),
    be32(spec.cookie ?? 0x63825363),
  );
  const opts = spec.options.flatMap(([code, v]) => [code, v.length, ...v]);
  return concat(fixed, opts, spec.end === false ? [] : [255], spec.trailer ?? []);
}

// ------------------------------------------------------------------ whole frames

export interface L3Addressing {
  srcMac: string;
  dstMac: string;
  src: string;
  dst: string;
  ip?: Partial<Omit<Ipv4Spec, 'src' | 'dst' | 'protocol' | 'payload'>>;
}

export function ipv4Frame(a: L3Addressing, protocol: number, payload: Uint8Array): Uint8Array {
  return ethernet({
    dst: a.dstMac,
    src: a.srcMac,
    type: ETHERTYPE.IPV4,
    payload: ipv4({ ...a.ip, src: a.src, dst: a.dst, protocol, payload }),
  });
}

export function udpFrame(a: L3Addressing, u: UdpSpec): Uint8Array {
  return ipv4Frame(a, PROTO.UDP, udp(u));
}

export function tcpFrame(a: L3Addressing, t: TcpSpec): Uint8Array {
  return ipv4Frame(a, PROTO.TCP, tcp(t));
}

export function icmpFrame(a: L3Addressing, type: number, code = 0): Uint8Array {
  return ipv4Frame(a, PROTO.ICMP, icmp({ type, code, rest: 0x00010001, payload: new Uint8Array(32) }));
}

export function arpFrame(dstMac: string, srcMac: string, a: ArpSpec): Uint8Array {
  return ethernet({ dst: dstMac, src: srcMac, type: ETHERTYPE.ARP, payload: arp(a) });
}

export function dhcpFrame(a: L3Addressing, sport: number, dport: number, d: DhcpSpec): Uint8Array {
  return udpFrame(a, { sport, dport, payload: dhcp(d) });
}

/** A minimal IPv6 frame (40-byte header + payload), e.g. an ICMPv6 router advertisement. */
export function ipv6Frame(dstMac: string, srcMac: string, nextHeader: number, payload: Uint8Array): Uint8Array {
  const src = [0xfe, 0x80, ...new Array<number>(13).fill(0), 1];
  const dst = [0xff, 0x02, ...new Array<number>(13).fill(0), 1];
  const header = concat([0x60, 0, 0, 0], be16(payload.length), [nextHeader, 255], src, dst);
  return ethernet({ dst: dstMac, src: srcMac, type: ETHERTYPE.IPV6, payload: concat(header, payload) });
}

/** An 802.3 frame with an LLC header (e.g. an STP configuration BPDU to 01:80:c2:00:00:00). */
export function llcFrame(dstMac: string, srcMac: string, llcPayload: Uint8Array): Uint8Array {
  const llc = concat([0x42, 0x42, 0x03], llcPayload);
  return ethernet({ dst: dstMac, src: srcMac, type: llc.length, payload: llc });
}

/** Pads a frame to at least `min` bytes with zeros (Ethernet minimum is 60 without FCS). */
export function pad(frame: Uint8Array, min = 60): Uint8Array {
  return frame.length >= min ? frame : concat(frame, new Array<number>(min - frame.length).fill(0));
}
