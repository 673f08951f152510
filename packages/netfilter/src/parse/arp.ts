/**
 * ARP for IPv4 over Ethernet (RFC 826). Only the exact form is accepted: htype 1, ptype 0x0800,
 * hlen 6, plen 4, op request/reply, 28 bytes. Anything else is malformed. (Softnet trusted hlen/plen
 * and panicked on plen != 4.)
 */
import { u16 } from '../bytes.ts';

export const ARP_LENGTH = 28;
/** Field offsets relative to the start of the ARP payload. */
export const ARP_OP = 6;
export const ARP_SHA = 8;
export const ARP_SPA = 14;
export const ARP_THA = 18;
export const ARP_TPA = 24;

export const ArpOp = { REQUEST: 1, REPLY: 2 } as const;

export const ArpParse = {
  OK: 0,
  TRUNCATED: 1,
  BAD_HTYPE: 2,
  BAD_PTYPE: 3,
  BAD_HLEN: 4,
  BAD_PLEN: 5,
  BAD_OP: 6,
} as const;
export type ArpParse = (typeof ArpParse)[keyof typeof ArpParse];

/** Validates the ARP packet at `off`; `end` is the end of the frame. */
export function checkArp(f: Uint8Array, off: number, end: number): ArpParse {
  if (end - off < ARP_LENGTH) return ArpParse.TRUNCATED;
  if (u16(f, off) !== 1) return ArpParse.BAD_HTYPE;
  if (u16(f, off + 2) !== 0x0800) return ArpParse.BAD_PTYPE;
  if (f[off + 4] !== 6) return ArpParse.BAD_HLEN;
  if (f[off + 5] !== 4) return ArpParse.BAD_PLEN;
  const op = u16(f, off + ARP_OP);
  if (op !== ArpOp.REQUEST && op !== ArpOp.REPLY) return ArpParse.BAD_OP;
  return ArpParse.OK;
}
