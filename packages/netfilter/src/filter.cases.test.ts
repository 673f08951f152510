/**
 * Every attack and bad-input case of research §5 (../shared/research/netfilter.md), numbered as in
 * its table. Setup: VM 02:00:00:00:00:01 bound to 192.168.64.10, gateway .64.1, peer VM .64.11.
 * Each case asserts the verdict and its reason.
 */
import { describe, expect, it } from 'vitest';
import type { LeaseEvent } from './lease.ts';
import { Snoop } from './lease.ts';
import { Verdict } from './verdict.ts';
import {
  DHCP,
  ETHERTYPE,
  PROTO,
  TCP_FLAGS,
  arp,
  dhcpFrame,
  ethernet,
  icmp,
  ipv4,
  ipv4Frame,
  ipv6Frame,
  llcFrame,
  opt,
  pad,
  tcp,
  tcpFrame,
  udp,
  udpFrame,
} from './testing/frames.ts';
import {
  ANY,
  BCAST,
  BCAST_MAC,
  GW,
  GW_MAC,
  LEASE_S,
  NET,
  PEER_IP,
  PEER_MAC,
  T0,
  VM_IP,
  VM_MAC,
  boundFilter,
  expectVerdict,
  hostAddr,
  hostDhcp,
  hostTcp,
  newFilter,
  vmAddr,
  vmArp,
  vmDhcp,
  vmTcp,
  vmUdp,
} from './testing/scenario.ts';

const XID = 0xabcd0001;

describe('research §5: DHCP client side (VM -> host)', () => {
  it('#1 DISCOVER 0.0.0.0:68 -> 255.255.255.255:67 with chaddr = VM passes', () => {
    const f = newFilter();
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: XID }), T0), Verdict.PASS);
    expect(f.leaseState()).toBe('pending');
  });

  it('#2 DISCOVER with chaddr != VM (starvation) is dropped as dhcp_chaddr', () => {
    const f = newFilter();
    for (let i = 2; i < 100; i++) {
      const chaddr = `02:00:00:00:01:${i.toString(16).padStart(2, '0')}`;
      expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: i, chaddr }), T0 + i), Verdict.DHCP_CHADDR);
    }
    // Forged messages do not eat the VM's own rate budget.
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: XID }), T0 + 200), Verdict.PASS);
  });

  it('#3 1000 valid DISCOVERs in 1 s: the first 50 pass, the rest are rate-limited (10/s refill)', () => {
    const f = newFilter();
    const verdicts: number[] = [];
    for (let i = 0; i < 1000; i++) verdicts.push(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: i }), T0 + i));
    expect(verdicts.slice(0, 50).every((v) => v === Verdict.PASS)).toBe(true);
    expect(verdicts[50]).toBe(Verdict.RATE_LIMIT);
    const passed = verdicts.filter((v) => v === Verdict.PASS).length;
    expect(passed).toBeGreaterThanOrEqual(55); // burst 50 + ~10 refilled over the second
    expect(passed).toBeLessThanOrEqual(60);
    expect(verdicts.every((v) => v === Verdict.PASS || v === Verdict.RATE_LIMIT)).toBe(true);
    expect(f.counters.fromVm[Verdict.RATE_LIMIT]).toBe(1000 - passed);
  });

  it('#4 the VM sending an OFFER .10:67 -> 255.255.255.255:68 (rogue server) is dropped as rogue_dhcp', () => {
    const f = boundFilter();
    const offer = dhcpFrame(vmAddr(VM_IP, BCAST, { dstMac: BCAST_MAC }), 67, 68, {
      op: 2,
      xid: 0x777,
      chaddr: PEER_MAC,
      yiaddr: PEER_IP,
      options: [opt.type(DHCP.OFFER), opt.serverId(VM_IP), opt.leaseTime(600), opt.router(VM_IP)],
    });
    expectVerdict(f.fromVm(offer, T0 + 1), Verdict.ROGUE_DHCP);
    // Same before any lease, and with an allow-everything rule (rules never re-open DHCP server ports).
    expectVerdict(newFilter({ allow: ['0.0.0.0/0'] }).fromVm(offer, T0), Verdict.ROGUE_DHCP);
  });

  it('#5 0.0.0.0:68 -> 255.255.255.255:68 is dropped as rogue_dhcp (Softnet passes it)', () => {
    const f = newFilter();
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: XID, dport: 68 }), T0), Verdict.ROGUE_DHCP);
  });
});

describe('research §5: DHCP server side (host -> VM) and snooping', () => {
  it('#6 an ACK from .64.11 (not a trusted server) is dropped as dhcp_untrusted, no lease', () => {
    const f = newFilter();
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid: XID }), T0), Verdict.PASS);
    // A peer VM posing as a server...
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: XID, src: PEER_IP, srcMac: PEER_MAC }), T0 + 1), Verdict.DHCP_UNTRUSTED);
    // ...even with the gateway's MAC, and with the gateway's IP but another MAC.
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: XID, src: PEER_IP }), T0 + 2), Verdict.DHCP_UNTRUSTED);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: XID, srcMac: PEER_MAC }), T0 + 3), Verdict.DHCP_UNTRUSTED);
    expect(f.lease()).toBeNull();
    expect(f.leaseState()).toBe('pending');
  });

  it('#7 an ACK from the gateway with chaddr != VM teaches nothing and does not reach the VM', () => {
    const f = newFilter();
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid: XID }), T0), Verdict.PASS);
    const ack = hostDhcp({ type: DHCP.ACK, xid: XID, chaddr: PEER_MAC, yiaddr: PEER_IP, dstMac: BCAST_MAC, dst: BCAST });
    // Another client's broadcast reply would tell this VM its neighbour's MAC and address.
    expectVerdict(f.fromHost(ack, T0 + 1), Verdict.DHCP_OTHER_CLIENT);
    expect(f.lease()).toBeNull();
    expect(f.counters.snoop[Snoop.OTHER_CLIENT]).toBe(1);
  });

  it('#8 a broadcast-MAC ACK with chaddr = VM passes and the lease is learned', () => {
    const f = newFilter();
    const events: LeaseEvent[] = [];
    f.onLeaseChange((e) => events.push(e));
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid: XID }), T0), Verdict.PASS);
    const ack = hostDhcp({ type: DHCP.ACK, xid: XID, dstMac: BCAST_MAC, dst: BCAST, dns: ['192.168.64.1', '10.0.0.53'] });
    expectVerdict(f.fromHost(ack, T0 + 5), Verdict.PASS);
    const lease = f.lease();
    expect(lease).toMatchObject({ ip: VM_IP, leaseSeconds: LEASE_S, expiresAt: T0 + 5 + LEASE_S * 1000, dns: ['192.168.64.1', '10.0.0.53'], serverId: GW, router: GW });
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ cause: 'ack', previous: null, at: T0 + 5 });
    expect(events[0]!.lease?.ip).toBe(VM_IP);
    expectVerdict(f.fromVm(vmTcp(NET), T0 + 6), Verdict.PASS);
  });

  it('#9 after a NAK, TCP from .10 is dropped as no_lease', () => {
    const f = boundFilter();
    const causes: string[] = [];
    f.onLeaseChange((e) => causes.push(e.cause));
    expectVerdict(f.fromVm(vmTcp(NET), T0 + 1), Verdict.PASS);
    const renew = vmDhcp({ type: DHCP.REQUEST, xid: 0x2000, src: VM_IP, dst: GW, ciaddr: VM_IP });
    expectVerdict(f.fromVm(renew, T0 + 2), Verdict.PASS);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.NAK, xid: 0x2000, dstMac: BCAST_MAC, dst: BCAST }), T0 + 3), Verdict.PASS);
    expect(f.lease()).toBeNull();
    expect(causes).toEqual(['nak']);
    expectVerdict(f.fromVm(vmTcp(NET), T0 + 4), Verdict.NO_LEASE);
  });

  it('#10 1 ms after expiry TCP from .10 is dropped as no_lease; an ARP probe still passes', () => {
    const f = boundFilter();
    const events: LeaseEvent[] = [];
    f.onLeaseChange((e) => events.push(e));
    const expiresAt = f.lease()!.expiresAt;
    expect(expiresAt).toBe(T0 + LEASE_S * 1000);
    // Honoured until leaseSkewMs (100 ms) before the end...
    expectVerdict(f.fromVm(vmTcp(NET), expiresAt - 101), Verdict.PASS);
    // ...and not after.
    expectVerdict(f.fromVm(vmTcp(NET), expiresAt + 1), Verdict.NO_LEASE);
    expect(f.leaseState()).toBe('expired');
    expect(f.lastLease()?.ip).toBe(VM_IP);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ cause: 'expired', lease: null, at: expiresAt + 1 });
    expect(events[0]!.previous?.ip).toBe(VM_IP);
    expectVerdict(f.fromVm(vmArp(1, ANY, VM_IP), expiresAt + 2), Verdict.PASS);
  });
});

describe('research §5: MAC and IP spoofing', () => {
  it('#11 IPv4 source .64.11 is dropped as ip_spoof', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(vmTcp(NET, 443, TCP_FLAGS.ACK, PEER_IP), T0 + 1), Verdict.IP_SPOOF);
    // Without a lease the same frame is no_lease.
    expectVerdict(newFilter().fromVm(vmTcp(NET, 443, TCP_FLAGS.ACK, PEER_IP), T0), Verdict.NO_LEASE);
  });

  it('#12 Ethernet source 02:00:00:00:00:02 is dropped as mac_spoof', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(tcpFrame(vmAddr(VM_IP, NET, { srcMac: PEER_MAC }), { sport: 1, dport: 443 }), T0 + 1), Verdict.MAC_SPOOF);
  });

  it('#13 Ethernet source ff:ff:ff:ff:ff:ff is dropped as src_mac_group', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(tcpFrame(vmAddr(VM_IP, NET, { srcMac: BCAST_MAC }), { sport: 1, dport: 443 }), T0 + 1), Verdict.SRC_MAC_GROUP);
    expectVerdict(f.fromVm(tcpFrame(vmAddr(VM_IP, NET, { srcMac: '03:00:00:00:00:01' }), { sport: 1, dport: 443 }), T0 + 1), Verdict.SRC_MAC_GROUP);
  });

  it('#14 an ARP reply claiming the gateway (SPA .64.1) is dropped as arp_ip_spoof', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(vmArp(2, GW, VM_IP), T0 + 1), Verdict.ARP_IP_SPOOF);
  });

  it('#15 a gratuitous ARP for .64.11 is dropped as arp_ip_spoof', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(vmArp(1, PEER_IP, PEER_IP), T0 + 1), Verdict.ARP_IP_SPOOF);
    expectVerdict(f.fromVm(vmArp(2, PEER_IP, PEER_IP), T0 + 1), Verdict.ARP_IP_SPOOF);
  });

  it('#16 ARP with SHA != Ethernet source is dropped as arp_mac_spoof', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(vmArp(1, VM_IP, GW, PEER_MAC), T0 + 1), Verdict.ARP_MAC_SPOOF);
  });

  it('#17 ARP with hlen 6, plen 16 and SHA = VM is dropped as malformed, without throwing', () => {
    const f = boundFilter();
    const frame = ethernet({ dst: BCAST_MAC, src: VM_MAC, type: ETHERTYPE.ARP, payload: arp({ op: 1, sha: VM_MAC, spa: VM_IP, tpa: GW, plen: 16 }) });
    expect(() => f.fromVm(frame, T0 + 1)).not.toThrow();
    expectVerdict(f.fromVm(frame, T0 + 1), Verdict.MALFORMED);
    expect(f.counters.fromVm[Verdict.INTERNAL_ERROR]).toBe(0);
  });

  it('#18 a gratuitous ARP for .10 passes; a probe with SPA 0.0.0.0 passes', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(vmArp(1, VM_IP, VM_IP), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmArp(2, VM_IP, VM_IP), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmArp(1, ANY, VM_IP), T0 + 1), Verdict.PASS);
    // A probe before any lease passes too; a "reply" from 0.0.0.0 does not.
    expectVerdict(newFilter().fromVm(vmArp(1, ANY, VM_IP), T0), Verdict.PASS);
    expectVerdict(newFilter().fromVm(vmArp(2, ANY, VM_IP), T0), Verdict.ARP_IP_SPOOF);
  });
});

describe('research §5: malformed and unwanted frames', () => {
  it('#19 a 13-byte frame, IHL 4, total length > buffer, UDP length 4: all malformed', () => {
    const f = boundFilter();
    const good = vmUdp(NET, 5000);
    expectVerdict(f.fromVm(good.subarray(0, 13), T0 + 1), Verdict.MALFORMED);
    expectVerdict(f.fromVm(ipv4Frame(vmAddr(VM_IP, NET, { ip: { ihl: 4 } }), PROTO.UDP, udp({ sport: 1, dport: 2 })), T0 + 1), Verdict.MALFORMED);
    expectVerdict(f.fromVm(ipv4Frame(vmAddr(VM_IP, NET, { ip: { totalLength: 200 } }), PROTO.UDP, udp({ sport: 1, dport: 2 })), T0 + 1), Verdict.MALFORMED);
    expectVerdict(f.fromVm(udpFrame(vmAddr(VM_IP, NET), { sport: 1, dport: 2, length: 4 }), T0 + 1), Verdict.MALFORMED);
    expectVerdict(f.fromHost(hostTcp(NET).subarray(0, 13), T0 + 1), Verdict.MALFORMED);
  });

  it('#20 802.1Q VID 0 around a valid IPv4 packet, and 802.1ad: dropped as vlan', () => {
    const f = boundFilter();
    const inner = ipv4({ src: VM_IP, dst: NET, protocol: PROTO.TCP, payload: tcp({ sport: 1, dport: 443 }) });
    const q = ethernet({ dst: GW_MAC, src: VM_MAC, type: ETHERTYPE.IPV4, payload: inner, tags: [{ tpid: ETHERTYPE.VLAN, vid: 0 }] });
    const ad = ethernet({ dst: GW_MAC, src: VM_MAC, type: ETHERTYPE.IPV4, payload: inner, tags: [{ tpid: ETHERTYPE.QINQ, vid: 10 }, { tpid: ETHERTYPE.VLAN, vid: 20 }] });
    expectVerdict(f.fromVm(q, T0 + 1), Verdict.VLAN);
    expectVerdict(f.fromVm(ad, T0 + 1), Verdict.VLAN);
    expectVerdict(f.fromHost(ethernet({ dst: VM_MAC, src: GW_MAC, type: ETHERTYPE.IPV4, payload: inner, tags: [{ tpid: ETHERTYPE.VLAN, vid: 0 }] }), T0 + 1), Verdict.VLAN);
  });

  it('#21 an IPv6 router advertisement from the VM and IPv6 towards the VM: dropped as ipv6', () => {
    const f = boundFilter();
    const ra = icmp({ type: 134, code: 0, rest: 0x40000708, payload: new Uint8Array(8) });
    expectVerdict(f.fromVm(ipv6Frame('33:33:00:00:00:01', VM_MAC, PROTO.ICMPV6, ra), T0 + 1), Verdict.IPV6);
    expectVerdict(f.fromHost(ipv6Frame(VM_MAC, GW_MAC, PROTO.ICMPV6, ra), T0 + 1), Verdict.IPV6);
  });

  it('#22 fragments: non-first to a global address passes, to 10.0.0.5 local_dst; tiny first TCP fragment and offset 1 bad_fragment', () => {
    const f = boundFilter();
    const tail = (dst: string): Uint8Array => ipv4Frame(vmAddr(VM_IP, dst, { ip: { fragmentOffset: 185 } }), PROTO.UDP, new Uint8Array(100));
    expectVerdict(f.fromVm(tail('1.1.1.1'), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(tail('10.0.0.5'), T0 + 1), Verdict.LOCAL_DST);
    // First fragment carrying only 8 bytes of a TCP header (flags would be in the next fragment).
    const tinyTcp = ipv4Frame(vmAddr(VM_IP, NET, { ip: { mf: true } }), PROTO.TCP, tcp({ sport: 1, dport: 443 }).subarray(0, 8));
    expectVerdict(f.fromVm(tinyTcp, T0 + 1), Verdict.BAD_FRAGMENT);
    const overlap = ipv4Frame(vmAddr(VM_IP, NET, { ip: { fragmentOffset: 1, mf: true } }), PROTO.TCP, new Uint8Array(64));
    expectVerdict(f.fromVm(overlap, T0 + 1), Verdict.BAD_FRAGMENT);
    // A non-first fragment whose bytes look like UDP to port 53 of the DNS server is not a DNS exception.
    const fakeDns = ipv4Frame(vmAddr(VM_IP, '10.0.0.53', { ip: { fragmentOffset: 3 } }), PROTO.UDP, udp({ sport: 5000, dport: 53 }));
    expectVerdict(boundFilter({}, ['10.0.0.53']).fromVm(fakeDns, T0 + 1), Verdict.LOCAL_DST);
  });

  it('#23 10.0.0.5, .64.11, 169.254.169.254, 224.0.0.251, .64.255, 100.64.0.1: all local_dst', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(vmTcp('10.0.0.5'), T0 + 1), Verdict.LOCAL_DST);
    expectVerdict(f.fromVm(vmTcp(PEER_IP), T0 + 1), Verdict.LOCAL_DST);
    expectVerdict(f.fromVm(vmTcp('169.254.169.254', 80), T0 + 1), Verdict.LOCAL_DST);
    const mdns = udpFrame(vmAddr(VM_IP, '224.0.0.251', { dstMac: '01:00:5e:00:00:fb' }), { sport: 5353, dport: 5353 });
    expectVerdict(f.fromVm(mdns, T0 + 1), Verdict.LOCAL_DST);
    const bcast = udpFrame(vmAddr(VM_IP, '192.168.64.255', { dstMac: BCAST_MAC }), { sport: 137, dport: 137 });
    expectVerdict(f.fromVm(bcast, T0 + 1), Verdict.LOCAL_DST);
    expectVerdict(f.fromVm(vmTcp('100.64.0.1'), T0 + 1), Verdict.LOCAL_DST);
    // And the limited broadcast, SSDP, and a LAN address.
    expectVerdict(f.fromVm(udpFrame(vmAddr(VM_IP, BCAST, { dstMac: BCAST_MAC }), { sport: 1, dport: 9 }), T0 + 1), Verdict.LOCAL_DST);
    expectVerdict(f.fromVm(udpFrame(vmAddr(VM_IP, '239.255.255.250', { dstMac: '01:00:5e:7f:ff:fa' }), { sport: 1900, dport: 1900 }), T0 + 1), Verdict.LOCAL_DST);
    expectVerdict(f.fromVm(vmTcp('192.168.1.20'), T0 + 1), Verdict.LOCAL_DST);
  });

  it('#24 8.8.8.8 passes; the gateway .64.1 only for DNS unless host access is granted', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(vmTcp(GW, 22, TCP_FLAGS.SYN), T0 + 1), Verdict.HOST_BLOCKED);
    expectVerdict(boundFilter({ hostAccess: true }).fromVm(vmTcp(GW, 22), T0 + 1), Verdict.PASS);
    expectVerdict(boundFilter({ allow: ['@host'] }).fromVm(vmTcp(GW, 22), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmTcp(NET), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmUdp(NET, 53), T0 + 1), Verdict.PASS);
  });

  it('#25 allow/block precedence: longest prefix wins, block wins a tie, block 0/0 + allow @host', () => {
    const a = boundFilter({ allow: ['33.33.33.33/32'], block: ['33.33.33.0/24'] });
    expectVerdict(a.fromVm(vmTcp('33.33.33.33'), T0 + 1), Verdict.PASS);
    expectVerdict(a.fromVm(vmTcp('33.33.33.32'), T0 + 1), Verdict.BLOCKED);
    const tie = boundFilter({ allow: ['33.33.33.0/24'], block: ['33.33.33.0/24'] });
    expectVerdict(tie.fromVm(vmTcp('33.33.33.33'), T0 + 1), Verdict.BLOCKED);
    const host = boundFilter({ block: ['0.0.0.0/0'], allow: ['@host'] });
    expectVerdict(host.fromVm(vmTcp(GW, 22), T0 + 1), Verdict.PASS);
    expectVerdict(host.fromVm(vmTcp(NET), T0 + 1), Verdict.BLOCKED);
  });

  it('#26 UDP/53 to the option-6 DNS server 10.0.0.53 passes; to 10.0.0.99 it is local_dst', () => {
    const f = boundFilter({}, ['10.0.0.53']);
    expectVerdict(f.fromVm(vmUdp('10.0.0.53', 53), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmTcp('10.0.0.53', 53), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmUdp('10.0.0.99', 53), T0 + 1), Verdict.LOCAL_DST);
    // Only port 53.
    expectVerdict(f.fromVm(vmUdp('10.0.0.53', 5353), T0 + 1), Verdict.LOCAL_DST);
  });

  it('#27 host -> VM: a frame for another VM\'s MAC is dst_mac; LLDP is ethertype', () => {
    const f = boundFilter();
    expectVerdict(f.fromHost(tcpFrame(hostAddr(NET, PEER_IP, { dstMac: PEER_MAC }), { sport: 443, dport: 5000 }), T0 + 1), Verdict.DST_MAC);
    const lldp = pad(ethernet({ dst: '01:80:c2:00:00:0e', src: GW_MAC, type: ETHERTYPE.LLDP, payload: new Uint8Array([0x02, 0x07, 0x04, 1, 2, 3, 4, 5, 6]) }));
    expectVerdict(f.fromHost(lldp, T0 + 1), Verdict.ETHERTYPE);
    expectVerdict(f.fromVm(pad(ethernet({ dst: '01:80:c2:00:00:0e', src: VM_MAC, type: ETHERTYPE.LLDP, payload: new Uint8Array(9) })), T0 + 1), Verdict.ETHERTYPE);
  });

  it('#28 a 1515-byte frame is oversize; an STP BPDU is llc; IPv4 with an LSRR option is ip_options', () => {
    const f = boundFilter();
    const big = tcpFrame(vmAddr(VM_IP, NET), { sport: 1, dport: 443, payload: new Uint8Array(1515 - 54) });
    expect(big.length).toBe(1515);
    expectVerdict(f.fromVm(big, T0 + 1), Verdict.OVERSIZE);
    expectVerdict(f.fromVm(big.subarray(0, 1514), T0 + 1), Verdict.MALFORMED); // its IP total length now exceeds the frame
    const bpdu = pad(llcFrame('01:80:c2:00:00:00', VM_MAC, new Uint8Array(35)));
    expectVerdict(f.fromVm(bpdu, T0 + 1), Verdict.LLC);
    expectVerdict(f.fromHost(pad(llcFrame('01:80:c2:00:00:00', GW_MAC, new Uint8Array(35))), T0 + 1), Verdict.LLC);
    const lsrr = [0x83, 11, 4, ...[10, 0, 0, 5], ...[8, 8, 8, 8]];
    const routed = ipv4Frame(vmAddr(VM_IP, NET, { ip: { options: lsrr } }), PROTO.TCP, tcp({ sport: 1, dport: 443 }));
    expectVerdict(f.fromVm(routed, T0 + 1), Verdict.IP_OPTIONS);
  });

  it('#29 an ACK with a duplicate option 53, or an option overrunning the buffer, passes but teaches nothing', () => {
    const f = newFilter();
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid: XID }), T0), Verdict.PASS);
    const dup = hostDhcp({
      type: DHCP.ACK,
      xid: XID,
      options: [opt.type(DHCP.ACK), opt.type(DHCP.ACK), opt.serverId(GW), opt.leaseTime(600)],
    });
    expectVerdict(f.fromHost(dup, T0 + 1), Verdict.PASS);
    const overrun = hostDhcp({
      type: DHCP.ACK,
      xid: XID,
      options: [opt.type(DHCP.ACK), opt.serverId(GW), opt.leaseTime(600)],
      end: false,
      trailer: [6, 200, 8, 8, 8, 8],
    });
    expectVerdict(f.fromHost(overrun, T0 + 2), Verdict.PASS);
    const dupLease = hostDhcp({ type: DHCP.ACK, xid: XID, options: [opt.type(DHCP.ACK), opt.leaseTime(600), opt.leaseTime(60)] });
    expectVerdict(f.fromHost(dupLease, T0 + 3), Verdict.PASS);
    expect(f.lease()).toBeNull();
    expect(f.counters.snoop[Snoop.MALFORMED]).toBe(3);
    // The well-formed ACK for the same transaction is then learned.
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: XID }), T0 + 4), Verdict.PASS);
    expect(f.lease()?.ip).toBe(VM_IP);
  });
});
