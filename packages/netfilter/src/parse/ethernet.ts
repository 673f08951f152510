/** Ethernet II framing: offsets, EtherTypes and their classification. */

export const ETH_HEADER_LENGTH = 14;
export const ETH_DST = 0;
export const ETH_SRC = 6;
export const ETH_TYPE = 12;

export const EtherType = {
  IPV4: 0x0800,
  ARP: 0x0806,
  RARP: 0x8035,
  VLAN_8021Q: 0x8100,
  IPV6: 0x86dd,
  EAPOL: 0x888e,
  QINQ_8021AD: 0x88a8,
  LLDP: 0x88cc,
  VLAN_9100: 0x9100,
} as const;

/** Values below this are IEEE 802.3 length fields (LLC/SNAP), not EtherTypes. */
export const ETHERTYPE_MIN = 0x0600;

export const EtherClass = {
  IPV4: 0,
  ARP: 1,
  /** 802.3 length field: LLC/SNAP (STP BPDUs, ...). 0x05dd..0x05ff are undefined and land here too. */
  LLC: 2,
  VLAN: 3,
  IPV6: 4,
  OTHER: 5,
} as const;
export type EtherClass = (typeof EtherClass)[keyof typeof EtherClass];

/** Classifies the EtherType/length field. */
export function classifyEtherType(type: number): EtherClass {
  if (type === EtherType.IPV4) return EtherClass.IPV4;
  if (type === EtherType.ARP) return EtherClass.ARP;
  if (type < ETHERTYPE_MIN) return EtherClass.LLC;
  if (type === EtherType.VLAN_8021Q || type === EtherType.QINQ_8021AD || type === EtherType.VLAN_9100) {
    return EtherClass.VLAN;
  }
  if (type === EtherType.IPV6) return EtherClass.IPV6;
  return EtherClass.OTHER;
}

/** The EtherType/length field of a frame with at least 14 bytes. */
export function etherTypeOf(f: Uint8Array): number {
  return (f[ETH_TYPE]! << 8) | f[ETH_TYPE + 1]!;
}
