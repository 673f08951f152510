/**
 * Test-only: a corpus of representative frames (good and bad, both directions) built with the frame
 * builder, used by the fuzz/property tests and the benchmark.
 */
import {
  DHCP,
  ETHERTYPE,
  PROTO,
  TCP_FLAGS,
  arp,
  dhcpFrame,
  ethernet,
  icmp,
  icmpFrame,
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
} from './frames.ts';
import {
  ANY,
  BCAST,
  BCAST_MAC,
  GW,
  GW_MAC,
  NET,
  PEER_IP,
  PEER_MAC,
  VM_IP,
  VM_MAC,
  hostAddr,
  hostDhcp,
  hostTcp,
  hostUdp,
  vmAddr,
  vmArp,
  vmDhcp,
  vmTcp,
  vmUdp,
} from './scenario.ts';

export interface Fixture {
  readonly name: string;
  readonly dir: 'vm' | 'host';
  readonly frame: Uint8Array;
}

export function fixtures(): Fixture[] {
  const vm = (name: string, frame: Uint8Array): Fixture => ({ name, dir: 'vm', frame });
  const host = (name: string, frame: Uint8Array): Fixture => ({ name, dir: 'host', frame });
  return [
    vm('dhcp discover', vmDhcp({ type: DHCP.DISCOVER, xid: 0x1000 })),
    vm('dhcp request', vmDhcp({ type: DHCP.REQUEST, xid: 0x1000, options: [opt.type(DHCP.REQUEST), opt.requestedIp(VM_IP), opt.serverId(GW), opt.clientId([1, 2, 0, 0, 0, 0, 1])] })),
    vm('dhcp discover named', vmDhcp({ type: DHCP.DISCOVER, xid: 0x1001, options: [opt.type(DHCP.DISCOVER), opt.clientId([1, 2, 0, 0, 0, 0, 1]), opt.raw(12, [0x76, 0x6d]), opt.raw(81, [0, 0, 0, 0x76, 0x6d])] })),
    vm('dhcp discover foreign clid', vmDhcp({ type: DHCP.DISCOVER, xid: 0x1002, options: [opt.type(DHCP.DISCOVER), opt.clientId([1, 2, 0, 0, 0, 0, 2])] })),
    vm('dhcp discover relay', vmDhcp({ type: DHCP.DISCOVER, xid: 0x1003, options: [opt.type(DHCP.DISCOVER), opt.raw(82, [1, 2, 0, 1])] })),
    vm('dhcp renew', vmDhcp({ type: DHCP.REQUEST, xid: 0x2000, src: VM_IP, dst: GW, ciaddr: VM_IP })),
    vm('dhcp release', vmDhcp({ type: DHCP.RELEASE, xid: 0x2001, src: VM_IP, dst: GW, ciaddr: VM_IP })),
    vm('dhcp decline', vmDhcp({ type: DHCP.DECLINE, xid: 0x2002, options: [opt.type(DHCP.DECLINE), opt.requestedIp(VM_IP)] })),
    vm('dhcp inform', vmDhcp({ type: DHCP.INFORM, xid: 0x2003, src: VM_IP, dst: GW, ciaddr: VM_IP })),
    vm('rogue offer', dhcpFrame(vmAddr(VM_IP, BCAST, { dstMac: BCAST_MAC }), 67, 68, { op: 2, xid: 7, chaddr: PEER_MAC, yiaddr: PEER_IP, options: [opt.type(DHCP.OFFER), opt.leaseTime(60)] })),
    vm('tcp data', tcpFrame(vmAddr(VM_IP, NET), { sport: 50000, dport: 443, flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH, payload: new Uint8Array(1460).fill(0x61) })),
    vm('tcp syn', vmTcp(NET, 443, TCP_FLAGS.SYN)),
    vm('tcp to peer', vmTcp(PEER_IP)),
    vm('tcp spoofed src', vmTcp(NET, 443, TCP_FLAGS.ACK, PEER_IP)),
    vm('udp dns', vmUdp(GW, 53)),
    vm('udp mdns', udpFrame(vmAddr(VM_IP, '224.0.0.251', { dstMac: '01:00:5e:00:00:fb' }), { sport: 5353, dport: 5353, payload: new Uint8Array(40) })),
    vm('icmp echo', icmpFrame(vmAddr(VM_IP, NET), 8)),
    vm('arp request', pad(vmArp(1, VM_IP, GW))),
    vm('arp reply', pad(vmArp(2, VM_IP, GW))),
    vm('arp probe', pad(vmArp(1, ANY, VM_IP))),
    vm('arp gratuitous peer', pad(vmArp(1, PEER_IP, PEER_IP))),
    vm('arp plen 16', ethernet({ dst: BCAST_MAC, src: VM_MAC, type: ETHERTYPE.ARP, payload: arp({ op: 1, sha: VM_MAC, spa: VM_IP, tpa: GW, plen: 16 }) })),
    vm('vlan', ethernet({ dst: GW_MAC, src: VM_MAC, type: ETHERTYPE.IPV4, payload: ipv4({ src: VM_IP, dst: NET, protocol: PROTO.TCP, payload: tcp({ sport: 1, dport: 443 }) }), tags: [{ tpid: ETHERTYPE.VLAN, vid: 0 }] })),
    vm('ipv6 ra', ipv6Frame('33:33:00:00:00:01', VM_MAC, PROTO.ICMPV6, icmp({ type: 134, payload: new Uint8Array(8) }))),
    vm('fragment tail', ipv4Frame(vmAddr(VM_IP, NET, { ip: { fragmentOffset: 185 } }), PROTO.UDP, new Uint8Array(100))),
    vm('fragment first tcp tiny', ipv4Frame(vmAddr(VM_IP, NET, { ip: { mf: true } }), PROTO.TCP, tcp({ sport: 1, dport: 443 }).subarray(0, 8))),
    vm('fragment first udp', ipv4Frame(vmAddr(VM_IP, NET, { ip: { mf: true } }), PROTO.UDP, udp({ sport: 1, dport: 53, payload: new Uint8Array(200) }).subarray(0, 64))),
    vm('fragment offset 1', ipv4Frame(vmAddr(VM_IP, NET, { ip: { fragmentOffset: 1, mf: true } }), PROTO.TCP, new Uint8Array(64))),
    vm('ip lsrr', ipv4Frame(vmAddr(VM_IP, NET, { ip: { options: [0x83, 11, 4, 10, 0, 0, 5, 8, 8, 8, 8] } }), PROTO.TCP, tcp({ sport: 1, dport: 443 }))),
    vm('stp bpdu', pad(llcFrame('01:80:c2:00:00:00', VM_MAC, new Uint8Array(35)))),
    vm('lldp', pad(ethernet({ dst: '01:80:c2:00:00:0e', src: VM_MAC, type: ETHERTYPE.LLDP, payload: new Uint8Array(9) }))),
    vm('exposed reply', tcpFrame(vmAddr(VM_IP, '192.168.1.50'), { sport: 22, dport: 51000, flags: TCP_FLAGS.ACK })),
    host('dhcp offer', hostDhcp({ type: DHCP.OFFER, xid: 0x1000 })),
    host('dhcp ack', hostDhcp({ type: DHCP.ACK, xid: 0x1000, dns: [GW, '10.0.0.53'] })),
    host('dhcp ack broadcast', hostDhcp({ type: DHCP.ACK, xid: 0x1000, dstMac: BCAST_MAC, dst: BCAST })),
    host('dhcp ack renew', hostDhcp({ type: DHCP.ACK, xid: 0x2000 })),
    host('dhcp nak', hostDhcp({ type: DHCP.NAK, xid: 0x2000, dstMac: BCAST_MAC, dst: BCAST })),
    host('dhcp ack dup 53', hostDhcp({ type: DHCP.ACK, xid: 0x1000, options: [opt.type(DHCP.ACK), opt.type(DHCP.ACK), opt.leaseTime(600)] })),
    host('dhcp ack rogue', hostDhcp({ type: DHCP.ACK, xid: 0x1000, src: PEER_IP, srcMac: PEER_MAC })),
    host('tcp data', tcpFrame(hostAddr(NET, VM_IP), { sport: 443, dport: 50000, flags: TCP_FLAGS.ACK, payload: new Uint8Array(1460).fill(0x62) })),
    host('tcp syn to exposed', tcpFrame(hostAddr('192.168.1.50', VM_IP), { sport: 51000, dport: 22, flags: TCP_FLAGS.SYN })),
    host('tcp from gateway', hostTcp(GW, 8080, 40000)),
    host('udp dns reply', hostUdp(GW, 53, 40000)),
    host('icmp unreachable', icmpFrame(hostAddr(GW, VM_IP), 3, 4)),
    host('arp from gateway', pad(ethernet({ dst: BCAST_MAC, src: GW_MAC, type: ETHERTYPE.ARP, payload: arp({ op: 1, sha: GW_MAC, spa: GW, tpa: VM_IP }) }))),
    host('ipv6', ipv6Frame(VM_MAC, GW_MAC, PROTO.ICMPV6, icmp({ type: 134, payload: new Uint8Array(8) }))),
    host('for peer', tcpFrame(hostAddr(NET, PEER_IP, { dstMac: PEER_MAC }), { sport: 443, dport: 5000 })),
  ];
}
