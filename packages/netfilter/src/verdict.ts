/**
 * Verdicts: what the filter decides for one frame.
 *
 * A verdict is a small integer so that returning it never allocates. `0` is PASS; every other
 * value is a drop reason. The numbers are stable (counters, metrics and logs may store them);
 * new reasons are only ever appended.
 */
export const Verdict = {
  /** Forward the frame. */
  PASS: 0,
  /** A header is truncated or inconsistent (lengths, version, ARP sizes, UDP/TCP lengths, ...). */
  MALFORMED: 1,
  /** Frame longer than `maxFrame`. */
  OVERSIZE: 2,
  /** IEEE 802.3 length field instead of an EtherType (LLC/SNAP: STP BPDUs, ...). */
  LLC: 3,
  /** 802.1Q / 802.1ad / 0x9100 VLAN tag. */
  VLAN: 4,
  /** IPv6 (EtherType 0x86dd). */
  IPV6: 5,
  /** Any other EtherType (LLDP, EAPOL, RARP, ...). */
  ETHERTYPE: 6,
  /** Source MAC is a group (multicast/broadcast) address. */
  SRC_MAC_GROUP: 7,
  /** VM -> host: source MAC is not the VM's. Host -> VM: source MAC claims to be the VM's. */
  MAC_SPOOF: 8,
  /** Host -> VM: destination MAC is neither the VM's nor broadcast. VM -> host: unicast IPv4 not sent to the gateway's MAC. */
  DST_MAC: 9,
  /** ARP sender hardware address differs from the VM's MAC. */
  ARP_MAC_SPOOF: 10,
  /** ARP sender protocol address is not the leased IP (or a 0.0.0.0 probe). */
  ARP_IP_SPOOF: 11,
  /** The VM sent from an IP address but holds no lease. */
  NO_LEASE: 12,
  /** The VM holds a lease and sent from another IP address. */
  IP_SPOOF: 13,
  /** IPv4 header carries options (source routing, ...). */
  IP_OPTIONS: 14,
  /** Fragment with offset 1 (overlap attack) or first fragment too short for its L4 header. */
  BAD_FRAGMENT: 15,
  /** The VM acted as a DHCP server (UDP source port 67 or destination port 68). */
  ROGUE_DHCP: 16,
  /** A VM DHCP client message that is not acceptable (ports, destination, op, type, options, fragment). */
  DHCP_BAD_CLIENT: 17,
  /** A VM DHCP client message with a client hardware address other than the VM's (starvation). */
  DHCP_CHADDR: 18,
  /** VM DHCP client messages over the rate limit. */
  RATE_LIMIT: 19,
  /** Host -> VM DHCP server traffic from a server that is not trusted. */
  DHCP_UNTRUSTED: 20,
  /** A `block` rule matched (longest prefix; block wins a tie). */
  BLOCKED: 21,
  /** The gateway/host, with host access off or in block-local mode. */
  HOST_BLOCKED: 22,
  /** Destination is not globally routable (private, CGNAT, link-local, multicast, broadcast, other VMs, ...). */
  LOCAL_DST: 23,
  /** Host -> VM in restricted ingress mode: source is local and not allowed. */
  LOCAL_SRC: 24,
  /** IPv4 header checksum is wrong (only when `verifyIpChecksum` is on). */
  BAD_CHECKSUM: 25,
  /** Last line of defence: an unexpected exception inside the filter (a bug; never seen in fuzzing). */
  INTERNAL_ERROR: 26,
  /** A VM DHCP client message whose client identifier (option 61) is not `01:<VM MAC>`: another client's identity. */
  DHCP_CLIENT_ID: 27,
  /** A VM DHCP client message with relay fields (giaddr set, or option 82): a VM is never a relay agent. */
  DHCP_RELAY: 28,
  /** A VM DHCP client message naming an address that is not the VM's (requested IP, ciaddr, RELEASE/DECLINE of another address). */
  DHCP_ADDRESS: 29,
  /** VM ARP over the rate limit. */
  ARP_RATE_LIMIT: 30,
  /** Host -> VM: a DHCP server reply for another client (chaddr is not the VM's): not the VM's business. */
  DHCP_OTHER_CLIENT: 31,
  /** Host-only mode (issue 18): a destination (VM -> host) or source (host -> VM) outside the VM subnet. */
  BEYOND_HOST_ONLY: 32,
  /**
   * Host -> VM on a host-only network, whose ports are not isolated: a broadcast from another VM
   * (not the gateway) that is not an ARP request for this VM's own address — who asks for whom,
   * or a peer's broadcast datagrams, are none of this VM's business.
   */
  PEER_BROADCAST: 33,
} as const;

export type Verdict = (typeof Verdict)[keyof typeof Verdict];

/** Snake-case names, indexed by verdict code. */
export const REASON_NAMES = [
  'pass',
  'malformed',
  'oversize',
  'llc',
  'vlan',
  'ipv6',
  'ethertype',
  'src_mac_group',
  'mac_spoof',
  'dst_mac',
  'arp_mac_spoof',
  'arp_ip_spoof',
  'no_lease',
  'ip_spoof',
  'ip_options',
  'bad_fragment',
  'rogue_dhcp',
  'dhcp_bad_client',
  'dhcp_chaddr',
  'rate_limit',
  'dhcp_untrusted',
  'blocked',
  'host_blocked',
  'local_dst',
  'local_src',
  'bad_checksum',
  'internal_error',
  'dhcp_client_id',
  'dhcp_relay',
  'dhcp_address',
  'arp_rate_limit',
  'dhcp_other_client',
  'beyond_host_only',
  'peer_broadcast',
] as const;

export type ReasonName = (typeof REASON_NAMES)[number];

/** Number of distinct verdict codes (size of a per-reason counter array). */
export const VERDICT_COUNT = REASON_NAMES.length;

/** The snake-case name of a verdict code (`'pass'`, `'mac_spoof'`, ...); `'unknown'` for foreign numbers. */
export function reasonName(verdict: number): ReasonName | 'unknown' {
  return REASON_NAMES[verdict] ?? 'unknown';
}

/** The verdict code for a name, or undefined. */
export function verdictOf(name: string): Verdict | undefined {
  const i = (REASON_NAMES as readonly string[]).indexOf(name);
  return i < 0 ? undefined : (i as Verdict);
}

export function isPass(verdict: number): boolean {
  return verdict === Verdict.PASS;
}
