/**
 * Which IPv4 addresses are "global" (reachable on the public Internet) and which are not.
 *
 * A VM may reach global destinations by default; everything else (other VMs, the LAN, the host's
 * other networks, cloud metadata services, multicast, broadcast) is blocked unless a rule allows
 * it. Unlike Rust's `is_global` (which Softnet relies on), multicast 224.0.0.0/4 is *not* global.
 * Sources: IANA IPv4 Special-Purpose Address Registry (RFC 6890 and successors).
 */

export const AddressClass = {
  GLOBAL: 0,
  /** 0.0.0.0/8 "this network" (includes 0.0.0.0). */
  THIS_NETWORK: 1,
  /** 10/8, 172.16/12, 192.168/16 (RFC 1918). */
  PRIVATE: 2,
  /** 100.64/10 shared address space (carrier-grade NAT, RFC 6598). */
  SHARED: 3,
  /** 127/8. */
  LOOPBACK: 4,
  /** 169.254/16 (includes cloud metadata 169.254.169.254). */
  LINK_LOCAL: 5,
  /** 192.0.0/24 IETF protocol assignments. */
  IETF_PROTOCOL: 6,
  /** 192.0.2/24, 198.51.100/24, 203.0.113/24 (TEST-NET-1/2/3). */
  DOCUMENTATION: 7,
  /** 198.18/15 benchmarking. */
  BENCHMARKING: 8,
  /** 224/4. */
  MULTICAST: 9,
  /** 240/4 except the limited broadcast address. */
  RESERVED: 10,
  /** 255.255.255.255. */
  BROADCAST: 11,
} as const;
export type AddressClass = (typeof AddressClass)[keyof typeof AddressClass];

export const ADDRESS_CLASS_NAMES = [
  'global',
  'this-network',
  'private',
  'shared',
  'loopback',
  'link-local',
  'ietf-protocol',
  'documentation',
  'benchmarking',
  'multicast',
  'reserved',
  'broadcast',
] as const;
export type AddressClassName = (typeof ADDRESS_CLASS_NAMES)[number];

/**
 * Classifies an IPv4 address given as a 32-bit number, unsigned or signed (int32) alike: only
 * unsigned shifts are used. Branches on the first octet; no allocation.
 */
export function classifyIpv4(ip: number): AddressClass {
  const a = ip >>> 24;
  if (a >= 224) {
    if (a < 240) return AddressClass.MULTICAST;
    return (ip | 0) === -1 ? AddressClass.BROADCAST : AddressClass.RESERVED;
  }
  switch (a) {
    case 0:
      return AddressClass.THIS_NETWORK;
    case 10:
      return AddressClass.PRIVATE;
    case 100:
      return (ip >>> 22) === 0x191 ? AddressClass.SHARED : AddressClass.GLOBAL; // 100.64/10
    case 127:
      return AddressClass.LOOPBACK;
    case 169:
      return (ip >>> 16) === 0xa9fe ? AddressClass.LINK_LOCAL : AddressClass.GLOBAL; // 169.254/16
    case 172:
      return (ip >>> 20) === 0xac1 ? AddressClass.PRIVATE : AddressClass.GLOBAL; // 172.16/12
    case 192: {
      const b = (ip >>> 16) & 255;
      if (b === 168) return AddressClass.PRIVATE;
      if (b === 0) {
        const c = (ip >>> 8) & 255;
        if (c === 0) return AddressClass.IETF_PROTOCOL; // 192.0.0/24
        if (c === 2) return AddressClass.DOCUMENTATION; // 192.0.2/24
      }
      return AddressClass.GLOBAL;
    }
    case 198: {
      const b = (ip >>> 16) & 255;
      if (b === 18 || b === 19) return AddressClass.BENCHMARKING; // 198.18/15
      if (b === 51 && ((ip >>> 8) & 255) === 100) return AddressClass.DOCUMENTATION; // 198.51.100/24
      return AddressClass.GLOBAL;
    }
    case 203:
      return (ip >>> 8) === 0xcb0071 ? AddressClass.DOCUMENTATION : AddressClass.GLOBAL; // 203.0.113/24
    default:
      return AddressClass.GLOBAL;
  }
}

/** True for globally routable unicast addresses. */
export function isGlobalIpv4(ip: number): boolean {
  return classifyIpv4(ip) === AddressClass.GLOBAL;
}

export function addressClassName(c: AddressClass): AddressClassName {
  return ADDRESS_CLASS_NAMES[c]!;
}
