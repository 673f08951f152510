/** TCP header (RFC 9293): at least 20 bytes, data offset >= 5 and within the segment. */
import { u16 } from '../bytes.ts';

export const TCP_MIN_HEADER = 20;

export const TcpFlag = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20 } as const;

export const TcpParse = { OK: 0, TRUNCATED: 1, BAD_DATA_OFFSET: 2 } as const;
export type TcpParse = (typeof TcpParse)[keyof typeof TcpParse];

export function tcpSrcPort(f: Uint8Array, off: number): number {
  return u16(f, off);
}
export function tcpDstPort(f: Uint8Array, off: number): number {
  return u16(f, off + 2);
}
export function tcpFlags(f: Uint8Array, off: number): number {
  return f[off + 13]!;
}

/** Checks the TCP header at `off`; `end` is the end of the IP payload (or of the first fragment). */
export function checkTcp(f: Uint8Array, off: number, end: number): TcpParse {
  if (end - off < TCP_MIN_HEADER) return TcpParse.TRUNCATED;
  const doff = (f[off + 12]! >>> 4) << 2;
  if (doff < TCP_MIN_HEADER || doff > end - off) return TcpParse.BAD_DATA_OFFSET;
  return TcpParse.OK;
}

/** A segment that opens a connection: SYN without ACK. */
export function isConnectionOpen(flags: number): boolean {
  return (flags & (TcpFlag.SYN | TcpFlag.ACK)) === TcpFlag.SYN;
}
