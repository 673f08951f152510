/**
 * BOOTP/DHCP messages (RFC 2131, RFC 2132). The 236-byte fixed header plus the magic cookie, then
 * TLV options, every one bounded by the end of the UDP payload. The options the filter needs are
 * recorded by position in a reusable {@link DhcpMessage}; duplicate recorded options, bad lengths,
 * an option overrunning the payload, and option overload (52) make the whole message invalid.
 */
import { u16, u32 } from '../bytes.ts';

export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;

/** Fixed BOOTP header (236 bytes) + magic cookie (4). */
export const DHCP_MIN_LENGTH = 240;
export const DHCP_MAGIC_COOKIE = 0x63825363;
/** Field offsets relative to the start of the BOOTP message. */
export const BOOTP_XID = 4;
export const BOOTP_FLAGS = 10;
export const BOOTP_CIADDR = 12;
export const BOOTP_YIADDR = 16;
export const BOOTP_SIADDR = 20;
export const BOOTP_GIADDR = 24;
export const BOOTP_CHADDR = 28;
export const BOOTP_COOKIE = 236;

export const BootpOp = { REQUEST: 1, REPLY: 2 } as const;

export const DhcpType = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;

export const DhcpOption = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  DNS: 6,
  HOSTNAME: 12,
  REQUESTED_IP: 50,
  LEASE_TIME: 51,
  OVERLOAD: 52,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  CLIENT_ID: 61,
  CLIENT_FQDN: 81,
  RELAY_AGENT_INFO: 82,
  END: 255,
} as const;

export const DhcpParse = {
  OK: 0,
  /** Shorter than the fixed header plus cookie. */
  TRUNCATED: 1,
  /** op is neither BOOTREQUEST nor BOOTREPLY. */
  BAD_OP: 2,
  /** htype is not Ethernet (1) or hlen is not 6. */
  BAD_HARDWARE: 3,
  BAD_COOKIE: 4,
  /** An option's length runs past the end of the message. */
  OPTION_OVERRUN: 5,
  /** A recorded option (53, 51, 54, 6, 1, 3, 50, 61, 12, 81) appears twice. */
  DUPLICATE_OPTION: 6,
  /** A recorded option has a length its definition does not allow. */
  BAD_OPTION_LENGTH: 7,
  /** Option 52 (overload: options continue in sname/file) is not supported. */
  OVERLOAD: 8,
} as const;
export type DhcpParse = (typeof DhcpParse)[keyof typeof DhcpParse];

/** Mutable result of {@link parseDhcp}; allocate once and reuse. Offsets are absolute in the frame; -1 = absent. */
export class DhcpMessage {
  /** Absolute offset of the BOOTP message. */
  offset = 0;
  op = 0;
  xid = 0;
  flags = 0;
  ciaddr = 0;
  yiaddr = 0;
  siaddr = 0;
  giaddr = 0;
  /** Absolute offset of chaddr (6 bytes for Ethernet). */
  chaddrOffset = 0;
  /** Option 53; 0 when absent. */
  messageType = 0;
  hasLeaseTime = false;
  /** Option 51, seconds. */
  leaseTime = 0;
  hasServerId = false;
  serverId = 0;
  hasRequestedIp = false;
  requestedIp = 0;
  hasSubnetMask = false;
  subnetMask = 0;
  /** Option 6: absolute offset of the first address and count. */
  dnsOffset = -1;
  dnsCount = 0;
  /** Option 3: absolute offset of the first router and count. */
  routerOffset = -1;
  routerCount = 0;
  /** Option 61: absolute offset and length of the value. */
  clientIdOffset = -1;
  clientIdLength = 0;
  /** Option 12 (host name): absolute offset of the option's code byte; -1 = absent. */
  hostnameOptionOffset = -1;
  /** Option 81 (client FQDN): absolute offset of the option's code byte; -1 = absent. */
  fqdnOptionOffset = -1;
  /** Option 82 (relay agent information) is present: only a relay adds it, never a client. */
  hasRelayInfo = false;

  reset(): void {
    this.offset = 0;
    this.op = 0;
    this.xid = 0;
    this.flags = 0;
    this.ciaddr = 0;
    this.yiaddr = 0;
    this.siaddr = 0;
    this.giaddr = 0;
    this.chaddrOffset = 0;
    this.messageType = 0;
    this.hasLeaseTime = false;
    this.leaseTime = 0;
    this.hasServerId = false;
    this.serverId = 0;
    this.hasRequestedIp = false;
    this.requestedIp = 0;
    this.hasSubnetMask = false;
    this.subnetMask = 0;
    this.dnsOffset = -1;
    this.dnsCount = 0;
    this.routerOffset = -1;
    this.routerCount = 0;
    this.clientIdOffset = -1;
    this.clientIdLength = 0;
    this.hostnameOptionOffset = -1;
    this.fqdnOptionOffset = -1;
    this.hasRelayInfo = false;
  }
}

/** Parses the BOOTP/DHCP message at `off`; `end` is the end of the UDP payload. */
export function parseDhcp(f: Uint8Array, off: number, end: number, out: DhcpMessage): DhcpParse {
  out.reset();
  if (end - off < DHCP_MIN_LENGTH) return DhcpParse.TRUNCATED;
  const op = f[off]!;
  if (op !== BootpOp.REQUEST && op !== BootpOp.REPLY) return DhcpParse.BAD_OP;
  if (f[off + 1] !== 1 || f[off + 2] !== 6) return DhcpParse.BAD_HARDWARE;
  if (u32(f, off + BOOTP_COOKIE) !== DHCP_MAGIC_COOKIE) return DhcpParse.BAD_COOKIE;
  out.offset = off;
  out.op = op;
  out.xid = u32(f, off + BOOTP_XID);
  out.flags = u16(f, off + BOOTP_FLAGS);
  out.ciaddr = u32(f, off + BOOTP_CIADDR);
  out.yiaddr = u32(f, off + BOOTP_YIADDR);
  out.siaddr = u32(f, off + BOOTP_SIADDR);
  out.giaddr = u32(f, off + BOOTP_GIADDR);
  out.chaddrOffset = off + BOOTP_CHADDR;

  let p = off + DHCP_MIN_LENGTH;
  while (p < end) {
    const code = f[p]!;
    if (code === DhcpOption.PAD) {
      p++;
      continue;
    }
    if (code === DhcpOption.END) break;
    if (p + 2 > end) return DhcpParse.OPTION_OVERRUN;
    const len = f[p + 1]!;
    const v = p + 2;
    if (v + len > end) return DhcpParse.OPTION_OVERRUN;
    switch (code) {
      case DhcpOption.MESSAGE_TYPE:
        if (out.messageType !== 0) return DhcpParse.DUPLICATE_OPTION;
        if (len !== 1 || f[v] === 0) return DhcpParse.BAD_OPTION_LENGTH;
        out.messageType = f[v]!;
        break;
      case DhcpOption.LEASE_TIME:
        if (out.hasLeaseTime) return DhcpParse.DUPLICATE_OPTION;
        if (len !== 4) return DhcpParse.BAD_OPTION_LENGTH;
        out.hasLeaseTime = true;
        out.leaseTime = u32(f, v);
        break;
      case DhcpOption.SERVER_ID:
        if (out.hasServerId) return DhcpParse.DUPLICATE_OPTION;
        if (len !== 4) return DhcpParse.BAD_OPTION_LENGTH;
        out.hasServerId = true;
        out.serverId = u32(f, v);
        break;
      case DhcpOption.REQUESTED_IP:
        if (out.hasRequestedIp) return DhcpParse.DUPLICATE_OPTION;
        if (len !== 4) return DhcpParse.BAD_OPTION_LENGTH;
        out.hasRequestedIp = true;
        out.requestedIp = u32(f, v);
        break;
      case DhcpOption.SUBNET_MASK:
        if (out.hasSubnetMask) return DhcpParse.DUPLICATE_OPTION;
        if (len !== 4) return DhcpParse.BAD_OPTION_LENGTH;
        out.hasSubnetMask = true;
        out.subnetMask = u32(f, v);
        break;
      case DhcpOption.DNS:
        if (out.dnsOffset >= 0) return DhcpParse.DUPLICATE_OPTION;
        if (len === 0 || (len & 3) !== 0) return DhcpParse.BAD_OPTION_LENGTH;
        out.dnsOffset = v;
        out.dnsCount = len >>> 2;
        break;
      case DhcpOption.ROUTER:
        if (out.routerOffset >= 0) return DhcpParse.DUPLICATE_OPTION;
        if (len === 0 || (len & 3) !== 0) return DhcpParse.BAD_OPTION_LENGTH;
        out.routerOffset = v;
        out.routerCount = len >>> 2;
        break;
      case DhcpOption.CLIENT_ID:
        if (out.clientIdOffset >= 0) return DhcpParse.DUPLICATE_OPTION;
        if (len < 2) return DhcpParse.BAD_OPTION_LENGTH;
        out.clientIdOffset = v;
        out.clientIdLength = len;
        break;
      case DhcpOption.HOSTNAME:
        if (out.hostnameOptionOffset >= 0) return DhcpParse.DUPLICATE_OPTION;
        out.hostnameOptionOffset = p;
        break;
      case DhcpOption.CLIENT_FQDN:
        if (out.fqdnOptionOffset >= 0) return DhcpParse.DUPLICATE_OPTION;
        out.fqdnOptionOffset = p;
        break;
      case DhcpOption.RELAY_AGENT_INFO:
        out.hasRelayInfo = true;
        break;
      case DhcpOption.OVERLOAD:
        return DhcpParse.OVERLOAD;
      default:
        break;
    }
    p = v + len;
  }
  return DhcpParse.OK;
}
