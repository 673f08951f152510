/** UDP header (RFC 768): 8 bytes, length field consistent with the IP payload. */
import { u16 } from '../bytes.ts';

export const UDP_HEADER = 8;

export const UdpParse = { OK: 0, TRUNCATED: 1, BAD_LENGTH: 2 } as const;
export type UdpParse = (typeof UdpParse)[keyof typeof UdpParse];

export function udpSrcPort(f: Uint8Array, off: number): number {
  return u16(f, off);
}
export function udpDstPort(f: Uint8Array, off: number): number {
  return u16(f, off + 2);
}
export function udpLength(f: Uint8Array, off: number): number {
  return u16(f, off + 4);
}

/**
 * Checks the UDP header at `off` in an unfragmented datagram whose IP payload ends at `end`:
 * 8 <= length <= payload (a shorter length field is allowed; the excess is trailing bytes).
 */
export function checkUdp(f: Uint8Array, off: number, end: number): UdpParse {
  if (end - off < UDP_HEADER) return UdpParse.TRUNCATED;
  const len = u16(f, off + 4);
  if (len < UDP_HEADER || len > end - off) return UdpParse.BAD_LENGTH;
  return UdpParse.OK;
}
