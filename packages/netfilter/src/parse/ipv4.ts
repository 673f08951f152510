/**
 * IPv4 header (RFC 791). Validates version, IHL, total length against the buffer, the reserved
 * flag and, optionally, the header checksum. Fields are written into a caller-owned, reusable
 * {@link Ipv4Header} so parsing never allocates.
 */
import { u16, u32 } from '../bytes.ts';

export const IPV4_MIN_HEADER = 20;

export const IpProto = { ICMP: 1, TCP: 6, UDP: 17 } as const;

export const Ipv4Parse = {
  OK: 0,
  TRUNCATED: 1,
  BAD_VERSION: 2,
  /** IHL < 5, or the header does not fit in the total length. */
  BAD_IHL: 3,
  /** Total length larger than the buffer or smaller than the header. */
  BAD_TOTAL_LENGTH: 4,
  /** The reserved (evil) bit is set. */
  RESERVED_FLAG: 5,
  BAD_CHECKSUM: 6,
} as const;
export type Ipv4Parse = (typeof Ipv4Parse)[keyof typeof Ipv4Parse];

/** Mutable result of {@link parseIpv4Header}; allocate once and reuse. */
export class Ipv4Header {
  headerLength = 0;
  totalLength = 0;
  protocol = 0;
  ttl = 0;
  id = 0;
  /** Fragment offset in 8-byte units. */
  fragmentOffset = 0;
  moreFragments = false;
  dontFragment = false;
  /** Source address, unsigned 32-bit. */
  src = 0;
  /** Destination address, unsigned 32-bit. */
  dst = 0;
  /** Absolute offset of the payload in the frame. */
  payloadOffset = 0;
  /** Absolute end of the IP packet in the frame (Ethernet padding excluded). */
  payloadEnd = 0;

  /** True for any fragment (first, middle or last). */
  get isFragment(): boolean {
    return this.moreFragments || this.fragmentOffset !== 0;
  }
}

/** Parses the IPv4 header at `off`; `end` is the end of the frame. */
export function parseIpv4Header(
  f: Uint8Array,
  off: number,
  end: number,
  out: Ipv4Header,
  verifyChecksum = false,
): Ipv4Parse {
  const avail = end - off;
  if (avail < IPV4_MIN_HEADER) return Ipv4Parse.TRUNCATED;
  const vihl = f[off]!;
  if (vihl >>> 4 !== 4) return Ipv4Parse.BAD_VERSION;
  const hlen = (vihl & 15) << 2;
  if (hlen < IPV4_MIN_HEADER) return Ipv4Parse.BAD_IHL;
  const total = u16(f, off + 2);
  if (total > avail) return Ipv4Parse.BAD_TOTAL_LENGTH;
  if (total < hlen) return hlen > avail ? Ipv4Parse.BAD_IHL : Ipv4Parse.BAD_TOTAL_LENGTH;
  const flagsFrag = u16(f, off + 6);
  if ((flagsFrag & 0x8000) !== 0) return Ipv4Parse.RESERVED_FLAG;
  if (verifyChecksum && !checksumOk(f, off, hlen)) return Ipv4Parse.BAD_CHECKSUM;
  out.headerLength = hlen;
  out.totalLength = total;
  out.ttl = f[off + 8]!;
  out.protocol = f[off + 9]!;
  out.id = u16(f, off + 4);
  out.dontFragment = (flagsFrag & 0x4000) !== 0;
  out.moreFragments = (flagsFrag & 0x2000) !== 0;
  out.fragmentOffset = flagsFrag & 0x1fff;
  out.src = u32(f, off + 12);
  out.dst = u32(f, off + 16);
  out.payloadOffset = off + hlen;
  out.payloadEnd = off + total;
  return Ipv4Parse.OK;
}

/** One's-complement sum of the header words folds to 0xffff when the checksum is right. */
export function checksumOk(f: Uint8Array, off: number, hlen: number): boolean {
  let sum = 0;
  for (let i = 0; i < hlen; i += 2) sum += (f[off + i]! << 8) | f[off + i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}
