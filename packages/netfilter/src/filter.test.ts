/** Filter behaviour beyond the §5 table: the lease lifecycle, host access, block-local, exposure, ingress, counters. */
import { describe, expect, it } from 'vitest';
import { NetfilterConfigError } from './errors.ts';
import { createFilter } from './filter.ts';
import { type LeaseEvent, Snoop } from './lease.ts';
import { REASON_NAMES, Verdict } from './verdict.ts';
import {
  DHCP,
  ETHERTYPE,
  PROTO,
  TCP_FLAGS,
  arpFrame,
  dhcpFrame,
  ethernet,
  icmpFrame,
  ipv4Frame,
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
  ZERO_MAC,
  baseConfig,
  boundFilter,
  expectVerdict,
  hostAddr,
  hostDhcp,
  hostTcp,
  hostUdp,
  newFilter,
  vmAddr,
  vmArp,
  vmDhcp,
  vmTcp,
  vmUdp,
} from './testing/scenario.ts';

const LAN_CLIENT = '192.168.1.50';

function requested(f: ReturnType<typeof newFilter>, xid: number, now = T0): void {
  expectVerdict(f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid }), now), Verdict.PASS);
}

describe('snooping: what is not learned', () => {
  it('an ACK for a transaction the VM never started (unknown xid)', () => {
    const f = newFilter();
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 1 }), T0), Verdict.PASS);
    requested(f, 2);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 1 }), T0), Verdict.PASS);
    expect(f.lease()).toBeNull();
    expect(f.counters.snoop[Snoop.UNKNOWN_XID]).toBe(2);
  });

  it('an ACK more than dhcpTransactionMs after the VM\'s message', () => {
    const f = newFilter();
    requested(f, 7);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 7 }), T0 + 60_001), Verdict.PASS);
    expect(f.lease()).toBeNull();
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 7 }), T0 + 60_000), Verdict.PASS);
    expect(f.lease()?.ip).toBe(VM_IP);
  });

  it('an ACK without option 51 (INFORM reply) or with lease time 0', () => {
    const f = newFilter();
    requested(f, 3);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 3, leaseTime: null }), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 3, leaseTime: 0 }), T0 + 1), Verdict.PASS);
    expect(f.lease()).toBeNull();
    expect(f.counters.snoop[Snoop.NO_LEASE_TIME]).toBe(2);
  });

  it.each(['10.0.0.5', '192.168.64.0', '192.168.64.255', GW, '0.0.0.0'])('an ACK with yiaddr %s', (yiaddr) => {
    const f = newFilter();
    requested(f, 4);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 4, yiaddr }), T0 + 1), Verdict.PASS);
    expect(f.lease()).toBeNull();
    expect(f.counters.snoop[Snoop.BAD_ADDRESS]).toBe(1);
  });

  it('an OFFER, a fragmented reply, a BOOTREQUEST from the server port', () => {
    const f = newFilter();
    requested(f, 5);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.OFFER, xid: 5 }), T0 + 1), Verdict.PASS);
    const frag = ipv4Frame(hostAddr(GW, VM_IP, { ip: { mf: true } }), PROTO.UDP, udp({ sport: 67, dport: 68, payload: new Uint8Array(300) }).subarray(0, 200));
    expectVerdict(f.fromHost(frag, T0 + 1), Verdict.PASS);
    const req = dhcpFrame(hostAddr(GW, VM_IP), 67, 68, { op: 1, xid: 5, chaddr: VM_MAC, options: [opt.type(DHCP.ACK), opt.leaseTime(60)] });
    expectVerdict(f.fromHost(req, T0 + 1), Verdict.PASS);
    expect(f.lease()).toBeNull();
    expect(f.counters.snoop[Snoop.NOT_ACK]).toBe(1);
    expect(f.counters.snoop[Snoop.FRAGMENT]).toBe(1);
    expect(f.counters.snoop[Snoop.MALFORMED]).toBe(1);
  });

  it('a NAK with an unknown xid or for another client leaves the lease alone', () => {
    const f = boundFilter();
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.NAK, xid: 0x9999 }), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.NAK, xid: 0x1000, chaddr: PEER_MAC, dstMac: BCAST_MAC }), T0 + 1), Verdict.DHCP_OTHER_CLIENT);
    expect(f.lease()?.ip).toBe(VM_IP);
  });
});

describe('lease lifecycle', () => {
  it('renewal from the leased IP, unicast to the server, extends the lease and notifies', () => {
    const f = boundFilter();
    const events: LeaseEvent[] = [];
    f.onLeaseChange((e) => events.push(e));
    const t = T0 + 300_000;
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid: 0x2000, src: VM_IP, dst: GW, ciaddr: VM_IP }), t), Verdict.PASS);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 0x2000 }), t + 1), Verdict.PASS);
    expect(f.lease()?.expiresAt).toBe(t + 1 + LEASE_S * 1000);
    expect(events).toHaveLength(1);
    expect(events[0]!.previous?.expiresAt).toBe(T0 + LEASE_S * 1000);
    expect(f.counters.snoop[Snoop.RENEWED]).toBe(1);
    expectVerdict(f.fromVm(vmTcp(NET), T0 + LEASE_S * 1000 + 5), Verdict.PASS);
  });

  it('an ACK for a different address moves the lease; the old address becomes a spoof', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid: 0x3000 }), T0 + 10), Verdict.PASS);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 0x3000, yiaddr: '192.168.64.20' }), T0 + 11), Verdict.PASS);
    expect(f.lease()?.ip).toBe('192.168.64.20');
    expectVerdict(f.fromVm(vmTcp(NET), T0 + 12), Verdict.IP_SPOOF);
    expectVerdict(f.fromVm(vmTcp(NET, 443, TCP_FLAGS.ACK, '192.168.64.20'), T0 + 12), Verdict.PASS);
  });

  it('RELEASE and DECLINE from the VM end the lease', () => {
    const f = boundFilter();
    const causes: string[] = [];
    f.onLeaseChange((e) => causes.push(e.cause));
    // A RELEASE for another address (a neighbour's lease) never reaches the server, and changes nothing.
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.RELEASE, xid: 9, src: VM_IP, dst: GW, ciaddr: PEER_IP }), T0 + 1), Verdict.DHCP_ADDRESS);
    expect(f.lease()).not.toBeNull();
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.RELEASE, xid: 9, src: VM_IP, dst: GW, ciaddr: VM_IP }), T0 + 2), Verdict.PASS);
    expect(f.lease()).toBeNull();
    expect(f.leaseState()).toBe('none');
    expectVerdict(f.fromVm(vmTcp(NET), T0 + 3), Verdict.NO_LEASE);

    const g = boundFilter();
    g.onLeaseChange((e) => causes.push(e.cause));
    const decline = vmDhcp({ type: DHCP.DECLINE, xid: 10, options: [opt.type(DHCP.DECLINE), opt.requestedIp(VM_IP), opt.serverId(GW)] });
    expectVerdict(g.fromVm(decline, T0 + 1), Verdict.PASS);
    expect(g.lease()).toBeNull();
    expect(causes).toEqual(['release', 'decline']);
  });

  it('lease time 0xffffffff is capped at maxLeaseSeconds', () => {
    const f = newFilter({ maxLeaseSeconds: 3600 });
    requested(f, 11);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 11, leaseTime: 0xffffffff }), T0), Verdict.PASS);
    expect(f.lease()).toMatchObject({ leaseSeconds: 3600, expiresAt: T0 + 3_600_000 });
  });

  it('a second trusted server, and no gateway MAC configured', () => {
    const f = createFilter({ vmMac: VM_MAC, gatewayIp: GW, subnet: '192.168.64.0/24', dhcpServers: [GW, '192.168.64.2'] });
    requested(f, 12);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 12, src: '192.168.64.2', srcMac: PEER_MAC }), T0 + 1), Verdict.PASS);
    expect(f.lease()?.ip).toBe(VM_IP);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 12, src: '192.168.64.3' }), T0 + 1), Verdict.DHCP_UNTRUSTED);
  });

  it('seeding from config: bound at once, expiry applies', () => {
    const f = newFilter({ lease: { ip: VM_IP, expiresAt: T0 + 10_000, dns: ['10.0.0.53'] } });
    expect(f.leaseState()).toBe('bound');
    expect(f.lease()).toMatchObject({ ip: VM_IP, source: 'seed', dns: ['10.0.0.53'] });
    expectVerdict(f.fromVm(vmTcp(NET), T0), Verdict.PASS);
    expectVerdict(f.fromVm(vmUdp('10.0.0.53', 53), T0), Verdict.PASS);
    expectVerdict(f.fromVm(vmTcp(NET), T0 + 10_000), Verdict.NO_LEASE);
    expect(f.leaseState()).toBe('expired');
  });

  it('seedLease() notifies, validates, and a renewal ACK replaces it', () => {
    const f = newFilter();
    const events: LeaseEvent[] = [];
    f.onLeaseChange((e) => events.push(e));
    f.seedLease({ ip: VM_IP, expiresAt: T0 + 60_000, obtainedAt: T0 - 540_000 }, T0);
    expect(events.map((e) => e.cause)).toEqual(['seed']);
    expect(f.lease()?.leaseSeconds).toBe(600);
    expect(() => f.seedLease({ ip: GW, expiresAt: T0 + 1 }, T0)).toThrow(NetfilterConfigError);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid: 13, src: VM_IP, dst: GW, ciaddr: VM_IP }), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 13 }), T0 + 2), Verdict.PASS);
    expect(f.lease()?.source).toBe('ack');
    // A seed that has already run out is expired at once.
    const g = newFilter();
    g.seedLease({ ip: VM_IP, expiresAt: T0 }, T0 + 1);
    expect(g.leaseState()).toBe('expired');
  });

  it('tick() applies expiry without traffic; lease(now) too', () => {
    const f = boundFilter();
    const causes: string[] = [];
    f.onLeaseChange((e) => causes.push(e.cause));
    f.tick(T0 + 1000);
    expect(causes).toEqual([]);
    f.tick(T0 + LEASE_S * 1000);
    expect(causes).toEqual(['expired']);
    const g = boundFilter();
    expect(g.lease(T0 + LEASE_S * 1000)).toBeNull();
    expect(g.leaseState()).toBe('expired');
  });

  it('a throwing listener is counted and does not disturb the filter; unsubscribe works', () => {
    const f = newFilter();
    const seen: string[] = [];
    f.onLeaseChange(() => {
      throw new Error('listener bug');
    });
    const off = f.onLeaseChange((e) => seen.push(e.cause));
    requested(f, 14);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: 14 }), T0), Verdict.PASS);
    expect(f.lease()?.ip).toBe(VM_IP);
    expect(f.stats().listenerErrors).toBe(1);
    off();
    f.tick(T0 + LEASE_S * 1000);
    expect(seen).toEqual(['ack']);
    expect(f.stats().listenerErrors).toBe(2);
  });
});

describe('VM DHCP client messages', () => {
  it('must come from 0.0.0.0 or the leased IP, from port 68, to broadcast or a trusted server', () => {
    const f = newFilter();
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: 1, src: PEER_IP }), T0), Verdict.NO_LEASE);
    expectVerdict(boundFilter().fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: 1, src: PEER_IP }), T0 + 1), Verdict.IP_SPOOF);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: 1, sport: 1234 }), T0), Verdict.DHCP_BAD_CLIENT);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: 1, dst: '192.168.64.2' }), T0), Verdict.DHCP_BAD_CLIENT);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: 1, dst: NET }), T0), Verdict.DHCP_BAD_CLIENT);
  });

  it('must be a well-formed BOOTREQUEST of a client type', () => {
    const f = boundFilter();
    const reply = dhcpFrame(vmAddr(ANY, BCAST, { dstMac: BCAST_MAC }), 68, 67, { op: 2, xid: 1, chaddr: VM_MAC, options: [opt.type(DHCP.ACK)] });
    expectVerdict(f.fromVm(reply, T0 + 1), Verdict.ROGUE_DHCP);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.OFFER, xid: 1 }), T0 + 1), Verdict.DHCP_BAD_CLIENT);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.RELEASE, xid: 1 }), T0 + 1), Verdict.DHCP_BAD_CLIENT); // RELEASE needs the leased source
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.INFORM, xid: 1, src: VM_IP, dst: GW, ciaddr: VM_IP }), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmDhcp({ type: 0, xid: 1, options: [] }), T0 + 1), Verdict.DHCP_BAD_CLIENT);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: 1, options: [opt.type(1), opt.type(1)] }), T0 + 1), Verdict.DHCP_BAD_CLIENT);
    const short = udpFrame(vmAddr(ANY, BCAST, { dstMac: BCAST_MAC }), { sport: 68, dport: 67, payload: new Uint8Array(100) });
    expectVerdict(f.fromVm(short, T0 + 1), Verdict.DHCP_BAD_CLIENT);
    const frag = ipv4Frame(vmAddr(ANY, BCAST, { dstMac: BCAST_MAC, ip: { mf: true } }), PROTO.UDP, udp({ sport: 68, dport: 67, payload: new Uint8Array(300) }).subarray(0, 100));
    expectVerdict(f.fromVm(frag, T0 + 1), Verdict.DHCP_BAD_CLIENT);
  });

  it('the rate budget refills at 10/s', () => {
    const f = newFilter({ dhcpRate: { perSecond: 10, burst: 2 } });
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: 1 }), T0), Verdict.PASS);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: 2 }), T0), Verdict.PASS);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: 3 }), T0 + 50), Verdict.RATE_LIMIT);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: 4 }), T0 + 100), Verdict.PASS);
  });
});

describe('host access and block-local', () => {
  it('hostAccess: false blocks the gateway except DNS and DHCP', () => {
    const f = boundFilter({ hostAccess: false });
    expectVerdict(f.fromVm(vmTcp(GW, 22, TCP_FLAGS.SYN), T0 + 1), Verdict.HOST_BLOCKED);
    expectVerdict(f.fromVm(vmUdp(GW, 53), T0 + 1), Verdict.PASS); // the gateway is the lease's DNS server
    expectVerdict(f.fromVm(vmUdp(GW, 54), T0 + 1), Verdict.HOST_BLOCKED);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid: 20, src: VM_IP, dst: GW, ciaddr: VM_IP }), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmTcp(NET), T0 + 1), Verdict.PASS);
  });

  it('an allow rule re-opens the host', () => {
    const f = boundFilter({ hostAccess: false, allow: ['@host'] });
    expectVerdict(f.fromVm(vmTcp(GW, 22), T0 + 1), Verdict.PASS);
  });

  it('blockLocal: egress to the host only DHCP/DNS, ARP only for the gateway or itself', () => {
    const f = boundFilter({ blockLocal: true });
    expectVerdict(f.fromVm(vmTcp(GW, 22, TCP_FLAGS.SYN), T0 + 1), Verdict.HOST_BLOCKED);
    expectVerdict(f.fromVm(vmUdp(GW, 53), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmArp(1, VM_IP, GW), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmArp(1, VM_IP, VM_IP), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmArp(1, VM_IP, PEER_IP), T0 + 1), Verdict.LOCAL_DST);
    expectVerdict(f.fromVm(vmArp(1, ANY, VM_IP), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmTcp(NET), T0 + 1), Verdict.PASS);
  });

  it('blockLocal: ingress from the host only DHCP, DNS, ICMP errors, exposed ports', () => {
    const f = boundFilter({ blockLocal: true, expose: ['2222:22'] });
    expectVerdict(f.fromHost(hostTcp(GW, 5000, 22, TCP_FLAGS.SYN), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromHost(hostTcp(GW, 5000, 23, TCP_FLAGS.SYN), T0 + 1), Verdict.HOST_BLOCKED);
    expectVerdict(f.fromHost(hostUdp(GW, 53, 40000), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromHost(icmpFrame(hostAddr(GW, VM_IP), 3, 4), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromHost(icmpFrame(hostAddr(GW, VM_IP), 8), T0 + 1), Verdict.HOST_BLOCKED);
    expectVerdict(f.fromHost(hostTcp(PEER_IP), T0 + 1), Verdict.LOCAL_SRC);
    expectVerdict(f.fromHost(hostTcp(NET), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.OFFER, xid: 1 }), T0 + 1), Verdict.PASS);
  });
});

describe('port exposure', () => {
  it('replies from an exposed TCP port reach a LAN client and the host, never peers or multicast', () => {
    const f = boundFilter({ expose: ['2222:22'] });
    const reply = (dst: string, flags: number, sport = 22, dstMac = GW_MAC): Uint8Array =>
      tcpFrame(vmAddr(VM_IP, dst, { dstMac }), { sport, dport: 51000, flags });
    expectVerdict(f.fromVm(reply(LAN_CLIENT, TCP_FLAGS.SYN | TCP_FLAGS.ACK), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(reply(LAN_CLIENT, TCP_FLAGS.ACK | TCP_FLAGS.PSH), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(reply(LAN_CLIENT, TCP_FLAGS.SYN), T0 + 1), Verdict.LOCAL_DST); // no new connections from it
    expectVerdict(f.fromVm(reply(LAN_CLIENT, TCP_FLAGS.ACK, 23), T0 + 1), Verdict.LOCAL_DST);
    expectVerdict(f.fromVm(reply(PEER_IP, TCP_FLAGS.ACK), T0 + 1), Verdict.LOCAL_DST);
    expectVerdict(f.fromVm(reply('224.0.0.1', TCP_FLAGS.ACK, 22, '01:00:5e:00:00:01'), T0 + 1), Verdict.LOCAL_DST);
    expectVerdict(boundFilter({ expose: ['2222:22'], blockLocal: true }).fromVm(reply(GW, TCP_FLAGS.ACK), T0 + 1), Verdict.PASS);
    expectVerdict(boundFilter({ expose: ['2222:22'], block: ['192.168.1.0/24'] }).fromVm(reply(LAN_CLIENT, TCP_FLAGS.ACK), T0 + 1), Verdict.BLOCKED);
  });

  it('UDP exposure', () => {
    const f = boundFilter({ expose: ['5353:53/udp'] });
    expectVerdict(f.fromVm(udpFrame(vmAddr(VM_IP, LAN_CLIENT), { sport: 53, dport: 40000 }), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(udpFrame(vmAddr(VM_IP, LAN_CLIENT), { sport: 54, dport: 40000 }), T0 + 1), Verdict.LOCAL_DST);
  });

  it('restricted ingress lets exposed ports in from anywhere, and nothing else local', () => {
    const f = boundFilter({ ingress: 'restricted', expose: ['2222:22'], hostAccess: true });
    expectVerdict(f.fromHost(tcpFrame(hostAddr(LAN_CLIENT, VM_IP), { sport: 51000, dport: 22, flags: TCP_FLAGS.SYN }), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromHost(tcpFrame(hostAddr(LAN_CLIENT, VM_IP), { sport: 51000, dport: 80, flags: TCP_FLAGS.SYN }), T0 + 1), Verdict.LOCAL_SRC);
    expectVerdict(f.fromHost(hostTcp(GW, 8080, 40000), T0 + 1), Verdict.PASS); // host access is on
    expectVerdict(f.fromHost(hostTcp(NET), T0 + 1), Verdict.PASS);
    expectVerdict(boundFilter({ ingress: 'restricted', block: ['8.8.0.0/16'] }).fromHost(hostTcp(NET), T0 + 1), Verdict.BLOCKED);
    expectVerdict(boundFilter({ ingress: 'restricted', allow: ['192.168.1.0/24'] }).fromHost(hostTcp(LAN_CLIENT), T0 + 1), Verdict.PASS);
  });

  it('open ingress (default) passes any well-formed IPv4 for the VM', () => {
    const f = boundFilter();
    expectVerdict(f.fromHost(hostTcp(PEER_IP), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromHost(hostTcp(NET), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromHost(pad(arpFrame(BCAST_MAC, GW_MAC, { op: 1, sha: GW_MAC, spa: GW, tpa: VM_IP })), T0 + 1), Verdict.PASS);
  });
});

describe('layer 2 and header checks', () => {
  it('VM unicast IPv4 must go to the gateway MAC (when known)', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(tcpFrame(vmAddr(VM_IP, NET, { dstMac: PEER_MAC }), { sport: 1, dport: 443 }), T0 + 1), Verdict.DST_MAC);
    const g = createFilter({ vmMac: VM_MAC, gatewayIp: GW, subnet: '192.168.64.0/24', lease: { ip: VM_IP, expiresAt: T0 + 1e6 } });
    expectVerdict(g.fromVm(tcpFrame(vmAddr(VM_IP, NET, { dstMac: PEER_MAC }), { sport: 1, dport: 443 }), T0 + 1), Verdict.PASS);
  });

  it('host -> VM source MAC checks, ARP validity, IP options', () => {
    const f = boundFilter();
    expectVerdict(f.fromHost(tcpFrame(hostAddr(NET, VM_IP, { srcMac: BCAST_MAC }), { sport: 1, dport: 2 }), T0 + 1), Verdict.SRC_MAC_GROUP);
    expectVerdict(f.fromHost(tcpFrame(hostAddr(NET, VM_IP, { srcMac: VM_MAC }), { sport: 1, dport: 2 }), T0 + 1), Verdict.MAC_SPOOF);
    expectVerdict(f.fromHost(arpFrame(VM_MAC, GW_MAC, { op: 2, sha: GW_MAC, spa: GW, tpa: VM_IP, plen: 16 }), T0 + 1), Verdict.MALFORMED);
    const opts = ipv4Frame(hostAddr(NET, VM_IP, { ip: { options: [0x94, 4, 0, 0] } }), PROTO.TCP, tcp({ sport: 1, dport: 2 }));
    expectVerdict(f.fromHost(opts, T0 + 1), Verdict.IP_OPTIONS);
    expectVerdict(f.fromHost(hostTcp(NET).subarray(0, 40), T0 + 1), Verdict.MALFORMED);
  });

  it('other EtherTypes from the VM', () => {
    const f = boundFilter();
    for (const type of [ETHERTYPE.EAPOL, ETHERTYPE.RARP, 0x0600, 0xffff]) {
      expectVerdict(f.fromVm(pad(ethernet({ dst: BCAST_MAC, src: VM_MAC, type, payload: new Uint8Array(28) })), T0 + 1), Verdict.ETHERTYPE);
    }
    expectVerdict(f.fromVm(new Uint8Array(0), T0 + 1), Verdict.MALFORMED);
  });

  it('ICMP and other protocols are judged by destination', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(icmpFrame(vmAddr(VM_IP, NET), 8), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(icmpFrame(vmAddr(VM_IP, PEER_IP), 8), T0 + 1), Verdict.LOCAL_DST);
    expectVerdict(f.fromVm(ipv4Frame(vmAddr(VM_IP, NET), PROTO.ICMP, new Uint8Array(4)), T0 + 1), Verdict.MALFORMED);
    expectVerdict(f.fromVm(ipv4Frame(vmAddr(VM_IP, NET), 47 /* GRE */, new Uint8Array(4)), T0 + 1), Verdict.PASS);
  });

  it('verifyIpChecksum', () => {
    const f = boundFilter({ verifyIpChecksum: true });
    const bad = tcpFrame(vmAddr(VM_IP, NET, { ip: { badChecksum: true } }), { sport: 1, dport: 443 });
    expectVerdict(f.fromVm(bad, T0 + 1), Verdict.BAD_CHECKSUM);
    expectVerdict(f.fromVm(vmTcp(NET), T0 + 1), Verdict.PASS);
    expectVerdict(boundFilter().fromVm(bad, T0 + 1), Verdict.PASS);
  });

  it('maxFrame allows jumbo frames when configured', () => {
    const f = boundFilter({ maxFrame: 9014 });
    expectVerdict(f.fromVm(tcpFrame(vmAddr(VM_IP, NET), { sport: 1, dport: 443, payload: new Uint8Array(8000) }), T0 + 1), Verdict.PASS);
  });
});

describe('counters and the last-resort guard', () => {
  it('counts every decision per direction and reason; stats() names them', () => {
    const f = boundFilter();
    f.fromVm(vmTcp(NET), T0 + 1);
    f.fromVm(vmTcp(PEER_IP), T0 + 1);
    f.fromVm(vmTcp(PEER_IP), T0 + 1);
    f.fromHost(hostTcp(NET), T0 + 1);
    const s = f.stats();
    expect(s.fromVm.pass).toBe(3); // DISCOVER, REQUEST and one TCP
    expect(s.fromVm.local_dst).toBe(2);
    expect(s.fromHost.pass).toBe(3); // OFFER, ACK, TCP
    expect(s.snoop.learned).toBe(1);
    expect(s.snoop.not_ack).toBe(1);
    expect(Object.keys(s.fromVm)).toEqual([...REASON_NAMES]);
    expect(s.leaseState).toBe('bound');
    const sum = f.counters.fromVm.reduce((a, b) => a + b, 0);
    expect(sum).toBe(5);
  });

  it('a non-byte input (a caller bug) is caught and counted as internal_error', () => {
    const f = newFilter(baseConfig());
    expect(f.fromVm(null as unknown as Uint8Array, T0)).toBe(Verdict.INTERNAL_ERROR);
    expect(f.fromHost(undefined as unknown as Uint8Array, T0)).toBe(Verdict.INTERNAL_ERROR);
    expect(f.counters.fromVm[Verdict.INTERNAL_ERROR]).toBe(1);
    expect(f.counters.fromHost[Verdict.INTERNAL_ERROR]).toBe(1);
    void ZERO_MAC;
  });
});

describe('globalPrefixes: a lab network standing in for the Internet', () => {
  const LAB = '10.99.0.7';

  it('makes a private prefix reachable like a public one, and nothing else', () => {
    const plain = boundFilter();
    expectVerdict(plain.fromVm(vmTcp(LAB, 80), T0 + 1), Verdict.LOCAL_DST);
    const f = boundFilter({ globalPrefixes: ['10.99.0.0/24'] });
    expectVerdict(f.fromVm(vmTcp(LAB, 80), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmTcp('10.99.1.7', 80), T0 + 1), Verdict.LOCAL_DST);
    // Other VMs on the NAT subnet stay local even when the lab prefix covers them.
    const wide = boundFilter({ globalPrefixes: ['192.168.0.0/16'] });
    expectVerdict(wide.fromVm(vmTcp(PEER_IP, 22), T0 + 1), Verdict.LOCAL_DST);
  });

  it('block rules still win over it, and restricted ingress treats it as global', () => {
    const f = boundFilter({ globalPrefixes: ['10.99.0.0/24'], block: ['10.99.0.7'] });
    expectVerdict(f.fromVm(vmTcp(LAB, 80), T0 + 1), Verdict.BLOCKED);
    expectVerdict(f.fromVm(vmTcp('10.99.0.8', 80), T0 + 1), Verdict.PASS);
    const r = boundFilter({ globalPrefixes: ['10.99.0.0/24'], ingress: 'restricted' });
    expectVerdict(r.fromHost(hostTcp('10.99.0.8', 5000, 22, TCP_FLAGS.SYN), T0 + 1), Verdict.PASS);
    expectVerdict(r.fromHost(hostTcp('10.98.0.8', 5000, 22, TCP_FLAGS.SYN), T0 + 1), Verdict.LOCAL_SRC);
  });

  it('rejects a malformed prefix with the field named', () => {
    expect(() => newFilter({ globalPrefixes: ['10.99.0.0/33'] })).toThrow(NetfilterConfigError);
    expect(() => newFilter({ globalPrefixes: ['10.99.0.0/33'] })).toThrow(/globalPrefixes\[0\]/);
  });
});

describe('hostOnly: the host-only network (issue 18)', () => {
  it('the VM reaches the gateway (by the host-access rules) and nothing outside its subnet, whatever the rules say', () => {
    const f = boundFilter({ hostOnly: true, hostAccess: true, allow: ['10.99.0.0/24', '8.8.0.0/16'], globalPrefixes: ['10.99.0.0/24'] });
    expectVerdict(f.fromVm(vmTcp(GW, 22, TCP_FLAGS.SYN), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmUdp(GW, 53), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(vmTcp(NET), T0 + 1), Verdict.BEYOND_HOST_ONLY);
    expectVerdict(f.fromVm(vmTcp('10.99.0.7', 80), T0 + 1), Verdict.BEYOND_HOST_ONLY);
    expectVerdict(f.fromVm(vmUdp('8.8.8.8', 53), T0 + 1), Verdict.BEYOND_HOST_ONLY);
    // Other VMs stay unreachable, as in every mode.
    expectVerdict(f.fromVm(vmTcp(PEER_IP, 22), T0 + 1), Verdict.LOCAL_DST);
    // DHCP still works.
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid: 20, src: VM_IP, dst: GW, ciaddr: VM_IP }), T0 + 1), Verdict.PASS);
    expect(REASON_NAMES[Verdict.BEYOND_HOST_ONLY]).toBe('beyond_host_only');
  });

  it('frames straight to another VM\'s MAC pass only on a host-only network, to an allowed address of the subnet', () => {
    const toPeer = (dstIp: string): Uint8Array => tcpFrame({ srcMac: VM_MAC, dstMac: PEER_MAC, src: VM_IP, dst: dstIp }, { sport: 40000, dport: 22, flags: TCP_FLAGS.SYN });
    expectVerdict(boundFilter({ hostOnly: true, allow: ['192.168.64.0/24'] }).fromVm(toPeer(PEER_IP), T0 + 1), Verdict.PASS);
    expectVerdict(boundFilter({ hostOnly: true }).fromVm(toPeer(PEER_IP), T0 + 1), Verdict.LOCAL_DST);
    expectVerdict(boundFilter({ hostOnly: true, allow: ['192.168.64.0/24'] }).fromVm(toPeer(GW), T0 + 1), Verdict.DST_MAC);
    expectVerdict(boundFilter({ hostOnly: true, allow: ['192.168.64.0/24'] }).fromVm(toPeer(NET), T0 + 1), Verdict.DST_MAC);
    expectVerdict(boundFilter({ allow: ['192.168.64.0/24'] }).fromVm(toPeer(PEER_IP), T0 + 1), Verdict.DST_MAC);
  });

  it('nothing from outside the subnet reaches the VM; the gateway and DHCP do', () => {
    const f = boundFilter({ hostOnly: true });
    expectVerdict(f.fromHost(hostTcp(NET), T0 + 1), Verdict.BEYOND_HOST_ONLY);
    expectVerdict(f.fromHost(hostTcp(GW, 5000, 22, TCP_FLAGS.SYN), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.OFFER, xid: 1 }), T0 + 1), Verdict.PASS);
  });

  it("a peer's broadcasts do not reach the VM (ports are not isolated): only its ARP request for the VM's own address", () => {
    const f = boundFilter({ hostOnly: true, allow: ['192.168.64.0/24'] });
    const who = (tpa: string, src = PEER_MAC, spa = PEER_IP) => arpFrame(BCAST_MAC, src, { op: 1, sha: src, spa, tpa, tha: ZERO_MAC });
    // Another VM asking for this VM: needed to talk to it (where both policies allow).
    expectVerdict(f.fromHost(who(VM_IP), T0 + 1), Verdict.PASS);
    // Another VM asking for a third VM or the gateway, or announcing itself: not this VM's business.
    expectVerdict(f.fromHost(who('192.168.64.12'), T0 + 1), Verdict.PEER_BROADCAST);
    expectVerdict(f.fromHost(who(GW), T0 + 1), Verdict.PEER_BROADCAST);
    expectVerdict(f.fromHost(who(PEER_IP), T0 + 1), Verdict.PEER_BROADCAST);
    // A peer's broadcast datagram (inside the subnet, where the rules would allow it).
    const bcastUdp = udpFrame({ srcMac: PEER_MAC, dstMac: BCAST_MAC, src: PEER_IP, dst: BCAST }, { sport: 5353, dport: 9999, payload: new Uint8Array(8) });
    expectVerdict(f.fromHost(bcastUdp, T0 + 1), Verdict.PEER_BROADCAST);
    // The gateway's broadcasts still pass: its ARP requests and DHCP.
    expectVerdict(f.fromHost(who('192.168.64.12', GW_MAC, GW), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.OFFER, xid: 1 }), T0 + 1), Verdict.PASS);
    // Unicast from an allowed peer is unchanged.
    expectVerdict(f.fromHost(tcpFrame({ srcMac: PEER_MAC, dstMac: VM_MAC, src: PEER_IP, dst: VM_IP }, { sport: 22, dport: 40000, flags: TCP_FLAGS.ACK }), T0 + 1), Verdict.PASS);
    expect(REASON_NAMES[Verdict.PEER_BROADCAST]).toBe('peer_broadcast');
    // NAT mode (isolated ports) keeps its old behaviour: the peer's frames never arrive there anyway.
    expectVerdict(boundFilter().fromHost(who('192.168.64.12'), T0 + 1), Verdict.PASS);
  });

  it('off by default, and a non-boolean is refused', () => {
    expectVerdict(boundFilter().fromVm(vmTcp(NET), T0 + 1), Verdict.PASS);
    expect(() => boundFilter({ hostOnly: 'yes' as unknown as boolean })).toThrow(NetfilterConfigError);
  });
});
