/** ICMPv4 (RFC 792): 8-byte header (type, code, checksum, rest-of-header). */

export const ICMP_HEADER = 8;

export const IcmpType = {
  ECHO_REPLY: 0,
  DEST_UNREACHABLE: 3,
  REDIRECT: 5,
  ECHO_REQUEST: 8,
  TIME_EXCEEDED: 11,
  PARAMETER_PROBLEM: 12,
} as const;

export const IcmpParse = { OK: 0, TRUNCATED: 1 } as const;
export type IcmpParse = (typeof IcmpParse)[keyof typeof IcmpParse];

export function checkIcmp(off: number, end: number): IcmpParse {
  return end - off < ICMP_HEADER ? IcmpParse.TRUNCATED : IcmpParse.OK;
}

export function icmpType(f: Uint8Array, off: number): number {
  return f[off]!;
}

/** Error messages a router sends about a packet (unreachable / PMTU, time exceeded, parameter problem). */
export function isIcmpError(type: number): boolean {
  return type === IcmpType.DEST_UNREACHABLE || type === IcmpType.TIME_EXCEEDED || type === IcmpType.PARAMETER_PROBLEM;
}
