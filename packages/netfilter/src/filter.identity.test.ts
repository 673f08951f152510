// One network identity per VM (issue 11): its MAC is its only DHCP identity, it names no address
// but its own, it never names itself in DNS, it cannot flood the host with ARP, and the host's
// other addresses are out of its reach. Each case is an attack a neighbour or a guest tried.
import { describe, expect, it } from 'vitest';
import { grantsHostAccess, resolveConfig } from './config.ts';
import { createFilter } from './filter.ts';
import { DhcpMessage, DhcpParse, parseDhcp } from './parse/dhcp.ts';
import { Snoop } from './lease.ts';
import { DHCP, TCP_FLAGS, arpFrame, icmpFrame, opt, pad, tcpFrame, udpFrame } from './testing/frames.ts';
import {
  ANY,
  BCAST,
  BCAST_MAC,
  GW,
  GW_MAC,
  NET,
  PEER_IP,
  PEER_MAC,
  T0,
  VM_IP,
  VM_MAC,
  baseConfig,
  boundFilter,
  expectVerdict,
  hostDhcp,
  newFilter,
  vmAddr,
  vmDhcp,
} from './testing/scenario.ts';
import { Verdict } from './verdict.ts';

const OWN_CLID = [1, 2, 0, 0, 0, 0, 1];
const PEER_CLID = [1, 2, 0, 0, 0, 0, 2];
const XID = 0x4242;

/** The UDP checksum verifies (the one's-complement sum over pseudo-header and datagram is 0xffff). */
function udpChecksumOk(f: Uint8Array): boolean {
  const udp = 14 + 20;
  const len = (f[udp + 4]! << 8) | f[udp + 5]!;
  let sum = 17 + len;
  for (let i = 14 + 12; i < 14 + 20; i += 2) sum += (f[i]! << 8) | f[i + 1]!;
  for (let i = udp; i < udp + len; i += 2) sum += (f[i]! << 8) | (i + 1 < udp + len ? f[i + 1]! : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

function parsed(f: Uint8Array): DhcpMessage {
  const m = new DhcpMessage();
  const udp = 14 + 20;
  expect(parseDhcp(f, udp + 8, udp + ((f[udp + 4]! << 8) | f[udp + 5]!), m)).toBe(DhcpParse.OK);
  return m;
}

describe('DHCP client identity: the MAC, and nothing else', () => {
  it('a client identifier other than 01:<own MAC> is dropped (another VM\'s, a fresh one per request, a DUID)', () => {
    const f = newFilter();
    for (const clid of [PEER_CLID, [1, 2, 0, 0, 0, 0, 1, 0], [0xff, 0, 0, 0, 1, 0, 1, 0, 0], [0, 2, 0, 0, 0, 0, 1]]) {
      const m = vmDhcp({ type: DHCP.DISCOVER, xid: XID, options: [opt.type(DHCP.DISCOVER), opt.clientId(clid)] });
      expectVerdict(f.fromVm(m, T0), Verdict.DHCP_CLIENT_ID);
    }
    expect(f.leaseState()).toBe('none');
  });

  it('its own client identifier, or none, passes', () => {
    const f = newFilter();
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: XID, options: [opt.type(DHCP.DISCOVER), opt.clientId(OWN_CLID)] }), T0), Verdict.PASS);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: XID + 1 }), T0), Verdict.PASS);
  });

  it('a pool-exhaustion run (fresh client identifiers within the rate limit) gets nothing through', () => {
    const f = newFilter();
    let passed = 0;
    for (let i = 0; i < 200; i++) {
      const clid = [1, 2, 0xee, 0, (i >> 8) & 0xff, i & 0xff, 7];
      const v = f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid: 0x5000 + i, options: [opt.type(DHCP.DISCOVER), opt.clientId(clid)] }), T0 + i * 1000);
      if (v === Verdict.PASS) passed++;
      expect([Verdict.DHCP_CLIENT_ID, Verdict.RATE_LIMIT]).toContain(v);
    }
    expect(passed).toBe(0);
  });

  it('relay fields (giaddr, option 82) are dropped: a VM is never a relay agent', () => {
    const f = newFilter();
    const giaddr = vmDhcp({ type: DHCP.DISCOVER, xid: XID });
    giaddr.set([192, 168, 64, 11], 14 + 20 + 8 + 24); // giaddr = the victim
    expectVerdict(f.fromVm(giaddr, T0), Verdict.DHCP_RELAY);
    const opt82 = vmDhcp({ type: DHCP.DISCOVER, xid: XID, options: [opt.type(DHCP.DISCOVER), opt.raw(82, [1, 4, 0, 0, 0, 1])] });
    expectVerdict(f.fromVm(opt82, T0), Verdict.DHCP_RELAY);
  });

  it('the host name (12) and client FQDN (81) options are blanked in place; the message still passes with a valid checksum', () => {
    const f = newFilter();
    const m = vmDhcp({
      type: DHCP.REQUEST,
      xid: XID,
      options: [opt.type(DHCP.REQUEST), opt.raw(12, [...Buffer.from('net-a')]), opt.raw(81, [0, 0, 0, ...Buffer.from('net-a.fleet')]), opt.requestedIp(VM_IP)],
    });
    expect(udpChecksumOk(m)).toBe(true);
    const before = m.length;
    expectVerdict(f.fromVm(m, T0), Verdict.PASS);
    expect(m.length).toBe(before);
    const after = parsed(m);
    expect(after.hostnameOptionOffset).toBe(-1);
    expect(after.fqdnOptionOffset).toBe(-1);
    expect(after.hasRequestedIp).toBe(true);
    expect(after.messageType).toBe(DHCP.REQUEST);
    expect(Buffer.from(m).includes(Buffer.from('net-a'))).toBe(false);
    expect(udpChecksumOk(m)).toBe(true);
    expect(f.stats().dhcpNamesStripped).toBe(1);
  });

  it('a datagram without a UDP checksum stays without one after blanking', () => {
    const f = newFilter();
    const m = vmDhcp({ type: DHCP.DISCOVER, xid: XID, options: [opt.type(DHCP.DISCOVER), opt.raw(12, [...Buffer.from('x')])] });
    m[14 + 20 + 6] = 0;
    m[14 + 20 + 7] = 0;
    expectVerdict(f.fromVm(m, T0), Verdict.PASS);
    expect([m[14 + 20 + 6], m[14 + 20 + 7]]).toEqual([0, 0]);
    expect(parsed(m).hostnameOptionOffset).toBe(-1);
  });

  it('a dropped message is never modified', () => {
    const f = newFilter();
    const m = vmDhcp({ type: DHCP.DISCOVER, xid: XID, options: [opt.type(DHCP.DISCOVER), opt.raw(12, [...Buffer.from('x')]), opt.clientId(PEER_CLID)] });
    const copy = Uint8Array.from(m);
    expectVerdict(f.fromVm(m, T0), Verdict.DHCP_CLIENT_ID);
    expect(m).toEqual(copy);
  });
});

describe('addresses: a VM names no address but its own', () => {
  it('RELEASE of a neighbour\'s address is dropped and the own lease stays', () => {
    const f = boundFilter();
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.RELEASE, xid: 1, src: VM_IP, dst: GW, ciaddr: PEER_IP }), T0 + 1), Verdict.DHCP_ADDRESS);
    expect(f.lease()?.ip).toBe(VM_IP);
  });

  it('with a reserved address: requesting, renewing with or declining another address is dropped', () => {
    const f = newFilter({ address: VM_IP });
    const ask = (ipAddr: string) => vmDhcp({ type: DHCP.REQUEST, xid: XID, options: [opt.type(DHCP.REQUEST), opt.requestedIp(ipAddr)] });
    expectVerdict(f.fromVm(ask(PEER_IP), T0), Verdict.DHCP_ADDRESS);
    expectVerdict(f.fromVm(ask(VM_IP), T0), Verdict.PASS);
    const decline = (ipAddr: string) => vmDhcp({ type: DHCP.DECLINE, xid: XID, options: [opt.type(DHCP.DECLINE), opt.requestedIp(ipAddr)] });
    expectVerdict(f.fromVm(decline(PEER_IP), T0), Verdict.DHCP_ADDRESS);
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DECLINE, xid: XID }), T0), Verdict.DHCP_ADDRESS); // names nothing
    const ciaddr = vmDhcp({ type: DHCP.REQUEST, xid: XID, ciaddr: PEER_IP });
    expectVerdict(f.fromVm(ciaddr, T0), Verdict.DHCP_ADDRESS);
  });

  it('with a reserved address: an ACK for any other address teaches nothing', () => {
    const f = newFilter({ address: VM_IP });
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid: XID }), T0), Verdict.PASS);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: XID, yiaddr: PEER_IP }), T0 + 1), Verdict.PASS);
    expect(f.lease()).toBeNull();
    expect(f.counters.snoop[Snoop.BAD_ADDRESS]).toBe(1);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: XID, yiaddr: VM_IP }), T0 + 2), Verdict.PASS);
    expect(f.lease()?.ip).toBe(VM_IP);
  });

  it('an ACK that echoes another client identifier is not learned', () => {
    const f = newFilter();
    expectVerdict(f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid: XID }), T0), Verdict.PASS);
    const ack = hostDhcp({ type: DHCP.ACK, xid: XID, options: [opt.type(DHCP.ACK), opt.leaseTime(600), opt.serverId(GW), opt.clientId(PEER_CLID)] });
    f.fromHost(ack, T0 + 1);
    expect(f.lease()).toBeNull();
    expect(f.counters.snoop[Snoop.OTHER_CLIENT]).toBe(1);
  });

  it('a reserved address must be a usable subnet address, and a seed must be it', () => {
    expect(() => createFilter(baseConfig({ address: GW }))).toThrow(/address.*gateway/);
    expect(() => createFilter(baseConfig({ address: '10.0.0.5' }))).toThrow(/not inside subnet/);
    expect(() => createFilter(baseConfig({ address: VM_IP, lease: { ip: PEER_IP, expiresAt: T0 + 1e6 } }))).toThrow(/reserved address 192\.168\.64\.10/);
    expect(createFilter(baseConfig({ address: VM_IP, lease: { ip: VM_IP, expiresAt: T0 + 1e6 } })).lease(T0)?.ip).toBe(VM_IP);
  });

  it('another client\'s broadcast reply (OFFER, ACK, NAK) never reaches the VM', () => {
    const f = boundFilter();
    for (const type of [DHCP.OFFER, DHCP.ACK, DHCP.NAK]) {
      const r = hostDhcp({ type, xid: 0x1000, chaddr: PEER_MAC, yiaddr: PEER_IP, dstMac: BCAST_MAC, dst: BCAST });
      expectVerdict(f.fromHost(r, T0 + 1), Verdict.DHCP_OTHER_CLIENT);
    }
    expect(f.lease()?.ip).toBe(VM_IP);
  });
});

describe('ARP rate limit', () => {
  it('passes a burst, then drops as arp_rate_limit until tokens refill', () => {
    const f = boundFilter({ arpRate: { perSecond: 10, burst: 5 } });
    const req = pad(arpFrame(BCAST_MAC, VM_MAC, { op: 1, sha: VM_MAC, spa: VM_IP, tpa: GW }));
    for (let i = 0; i < 5; i++) expectVerdict(f.fromVm(req, T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(req, T0 + 1), Verdict.ARP_RATE_LIMIT);
    expectVerdict(f.fromVm(pad(arpFrame(BCAST_MAC, VM_MAC, { op: 1, sha: VM_MAC, spa: ANY, tpa: VM_IP })), T0 + 1), Verdict.ARP_RATE_LIMIT);
    expectVerdict(f.fromVm(req, T0 + 101), Verdict.PASS); // 100 ms = one token at 10/s
    expect(f.stats().fromVm.arp_rate_limit).toBe(2);
  });

  it('spoofed ARP is still judged as spoofing, not counted against the limit', () => {
    const f = boundFilter({ arpRate: { perSecond: 1, burst: 1 } });
    expectVerdict(f.fromVm(pad(arpFrame(BCAST_MAC, VM_MAC, { op: 2, sha: VM_MAC, spa: PEER_IP, tpa: GW })), T0 + 1), Verdict.ARP_IP_SPOOF);
    expectVerdict(f.fromVm(pad(arpFrame(BCAST_MAC, VM_MAC, { op: 1, sha: VM_MAC, spa: VM_IP, tpa: GW })), T0 + 1), Verdict.PASS);
  });
});

describe('the host boundary', () => {
  const HOST_PUBLIC = '203.0.113.7';
  const HOST_UPLINK = '100.64.0.2';

  it('by default the VM opens nothing on the host: DNS only, and answers to the host\'s own connections', () => {
    const f = boundFilter({}, [GW]);
    const syn = (dport: number) => tcpFrame(vmAddr(VM_IP, GW), { sport: 40000, dport, flags: TCP_FLAGS.SYN });
    expectVerdict(f.fromVm(syn(22), T0 + 1), Verdict.HOST_BLOCKED);
    expectVerdict(f.fromVm(syn(8080), T0 + 1), Verdict.HOST_BLOCKED);
    expectVerdict(f.fromVm(icmpFrame(vmAddr(VM_IP, GW), 8), T0 + 1), Verdict.HOST_BLOCKED); // echo request
    expectVerdict(f.fromVm(udpFrame(vmAddr(VM_IP, GW), { sport: 40000, dport: 5000, payload: new Uint8Array(8) }), T0 + 1), Verdict.HOST_BLOCKED);
    // The worker's SSH session into the VM: SYN-ACK and data from port 22 go back to the host.
    expectVerdict(f.fromVm(tcpFrame(vmAddr(VM_IP, GW), { sport: 22, dport: 51000, flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK }), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(tcpFrame(vmAddr(VM_IP, GW), { sport: 22, dport: 51000, flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH }), T0 + 1), Verdict.PASS);
    expectVerdict(f.fromVm(icmpFrame(vmAddr(VM_IP, GW), 0), T0 + 1), Verdict.PASS); // echo reply
    expectVerdict(f.fromVm(icmpFrame(vmAddr(VM_IP, GW), 3, 3), T0 + 1), Verdict.PASS); // port unreachable
    expect(grantsHostAccess(resolveConfig(baseConfig()))).toBe(false);
  });

  it('every other host address is host_blocked, whatever its class, unless an allow rule names it', () => {
    const f = boundFilter({ hostAddresses: [HOST_PUBLIC, HOST_UPLINK, NET], globalPrefixes: ['203.0.113.0/24'] });
    for (const dst of [HOST_PUBLIC, HOST_UPLINK, NET]) {
      expectVerdict(f.fromVm(tcpFrame(vmAddr(VM_IP, dst), { sport: 40000, dport: 8080, flags: TCP_FLAGS.SYN }), T0 + 1), Verdict.HOST_BLOCKED);
      // Not even a segment that looks like a reply: the host opens nothing to a VM from these addresses.
      expectVerdict(f.fromVm(tcpFrame(vmAddr(VM_IP, dst), { sport: 40000, dport: 8080, flags: TCP_FLAGS.ACK }), T0 + 1), Verdict.HOST_BLOCKED);
    }
    const g = boundFilter({ hostAddresses: [NET], allow: [`${NET}/32`] });
    expectVerdict(g.fromVm(tcpFrame(vmAddr(VM_IP, NET), { sport: 40000, dport: 8080 }), T0 + 1), Verdict.PASS);
    // @host grants the gateway, not the host's other addresses.
    const h = boundFilter({ hostAddresses: [HOST_UPLINK], allow: ['@host'] });
    expectVerdict(h.fromVm(tcpFrame(vmAddr(VM_IP, GW), { sport: 40000, dport: 8080 }), T0 + 1), Verdict.PASS);
    expectVerdict(h.fromVm(tcpFrame(vmAddr(VM_IP, HOST_UPLINK), { sport: 40000, dport: 8080, flags: TCP_FLAGS.SYN }), T0 + 1), Verdict.HOST_BLOCKED);
  });

  it('a global address that only shares its last octet with a host address still passes', () => {
    const f = boundFilter({ hostAddresses: ['203.0.113.7', '10.98.0.11'] });
    for (const dst of ['8.8.8.7', '8.8.8.11', '140.82.112.7']) {
      expectVerdict(f.fromVm(tcpFrame(vmAddr(VM_IP, dst), { sport: 40000, dport: 443, flags: TCP_FLAGS.SYN }), T0 + 1), Verdict.PASS);
    }
  });

  it('grantsHostAccess mirrors the per-packet decision for the gateway', () => {
    const g = (over: Parameters<typeof baseConfig>[0]) => grantsHostAccess(resolveConfig(baseConfig(over)));
    expect(g({ hostAccess: true })).toBe(true);
    expect(g({ allow: ['@host'] })).toBe(true);
    expect(g({ allow: ['192.168.64.0/24'] })).toBe(true);
    expect(g({ hostAccess: true, block: [`${GW}/32`] })).toBe(false);
    expect(g({ blockLocal: true })).toBe(false);
    expect(g({ allow: ['@host'], block: ['0.0.0.0/0'] })).toBe(true);
    expect(g({ allow: ['10.0.0.0/8'] })).toBe(false);
  });

  it('hostAddresses are validated', () => {
    expect(() => createFilter(baseConfig({ hostAddresses: ['300.1.1.1'] }))).toThrow(/hostAddresses\[0\]/);
    expect(resolveConfig(baseConfig({ hostAddresses: ['10.0.0.1', '10.0.0.1'] })).hostAddressNumbers).toHaveLength(1);
  });
});

describe('unchanged for a well-behaved guest', () => {
  it('DISCOVER/REQUEST with its own identity, a host name and its reserved address gets the lease', () => {
    const f = newFilter({ address: VM_IP });
    const discover = vmDhcp({ type: DHCP.DISCOVER, xid: XID, options: [opt.type(DHCP.DISCOVER), opt.clientId(OWN_CLID), opt.raw(12, [...Buffer.from('guest')])] });
    expectVerdict(f.fromVm(discover, T0), Verdict.PASS);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.OFFER, xid: XID }), T0 + 1), Verdict.PASS);
    const request = vmDhcp({ type: DHCP.REQUEST, xid: XID, options: [opt.type(DHCP.REQUEST), opt.clientId(OWN_CLID), opt.requestedIp(VM_IP), opt.serverId(GW)] });
    expectVerdict(f.fromVm(request, T0 + 2), Verdict.PASS);
    expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid: XID }), T0 + 3), Verdict.PASS);
    expect(f.lease()?.ip).toBe(VM_IP);
    const renew = vmDhcp({ type: DHCP.REQUEST, xid: XID + 1, src: VM_IP, dst: GW, ciaddr: VM_IP, options: [opt.type(DHCP.REQUEST), opt.clientId(OWN_CLID)] });
    expectVerdict(f.fromVm(renew, T0 + 4), Verdict.PASS);
    expectVerdict(f.fromVm(tcpFrame(vmAddr(VM_IP, NET), { sport: 40000, dport: 443 }), T0 + 5), Verdict.PASS);
    void GW_MAC;
  });
});
