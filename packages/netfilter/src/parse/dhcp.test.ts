import { describe, expect, it } from 'vitest';
import { DhcpMessage, DhcpParse, parseDhcp } from './dhcp.ts';
import { DHCP, dhcp, ip, opt } from '../testing/frames.ts';

function parse(bytes: Uint8Array, off = 0, end = bytes.length): [DhcpParse, DhcpMessage] {
  const m = new DhcpMessage();
  return [parseDhcp(bytes, off, end, m), m];
}

const ack = {
  op: 2 as const,
  xid: 0xdeadbeef,
  chaddr: '02:00:00:00:00:01',
  yiaddr: '192.168.64.10',
  ciaddr: '0.0.0.0',
  siaddr: '192.168.64.1',
  broadcast: true,
  options: [
    opt.type(DHCP.ACK),
    opt.serverId('192.168.64.1'),
    opt.leaseTime(600),
    opt.subnetMask('255.255.255.0'),
    opt.router('192.168.64.1'),
    opt.dns('192.168.64.1', '10.0.0.53'),
    opt.clientId([1, 2, 0, 0, 0, 0, 0, 1]),
  ],
};

describe('parseDhcp', () => {
  it('reads the fixed header and the recorded options', () => {
    const b = dhcp(ack);
    const [st, m] = parse(b);
    expect(st).toBe(DhcpParse.OK);
    expect(m).toMatchObject({
      op: 2,
      xid: 0xdeadbeef,
      flags: 0x8000,
      yiaddr: ip('192.168.64.10'),
      siaddr: ip('192.168.64.1'),
      chaddrOffset: 28,
      messageType: DHCP.ACK,
      hasLeaseTime: true,
      leaseTime: 600,
      hasServerId: true,
      serverId: ip('192.168.64.1'),
      hasSubnetMask: true,
      subnetMask: ip('255.255.255.0'),
      dnsCount: 2,
      routerCount: 1,
      clientIdLength: 8,
    });
    expect(b[m.dnsOffset]).toBe(192);
    expect(b[m.dnsOffset + 4]).toBe(10);
  });

  it('resets the output between messages', () => {
    const m = new DhcpMessage();
    parseDhcp(dhcp(ack), 0, dhcp(ack).length, m);
    const disc = dhcp({ op: 1, xid: 1, chaddr: '02:00:00:00:00:01', options: [opt.type(DHCP.DISCOVER)] });
    expect(parseDhcp(disc, 0, disc.length, m)).toBe(DhcpParse.OK);
    expect(m).toMatchObject({ messageType: 1, hasLeaseTime: false, dnsOffset: -1, dnsCount: 0, hasServerId: false });
  });

  it('skips pads, stops at END, ignores bytes after END, tolerates a missing END', () => {
    const b = dhcp({ ...ack, options: [opt.type(DHCP.ACK)], trailer: [53, 1, 6] }); // after END: ignored
    expect(parse(b)[0]).toBe(DhcpParse.OK);
    expect(parse(b)[1].messageType).toBe(DHCP.ACK);
    const noEnd = dhcp({ ...ack, options: [opt.type(DHCP.ACK)], end: false });
    expect(parse(noEnd)[0]).toBe(DhcpParse.OK);
    const pads = dhcp({ ...ack, options: [], end: false, trailer: [0, 0, 0, 53, 1, 5, 0, 255] });
    expect(parse(pads)[0]).toBe(DhcpParse.OK);
    expect(parse(pads)[1].messageType).toBe(DHCP.ACK);
  });

  it('rejects truncation, bad op, non-Ethernet hardware, bad cookie', () => {
    const b = dhcp(ack);
    for (const n of [0, 1, 100, 236, 239]) expect(parse(b, 0, n)[0]).toBe(DhcpParse.TRUNCATED);
    expect(parse(dhcp({ ...ack, op: 3 as never }))[0]).toBe(DhcpParse.BAD_OP);
    expect(parse(dhcp({ ...ack, htype: 6 }))[0]).toBe(DhcpParse.BAD_HARDWARE);
    expect(parse(dhcp({ ...ack, hlen: 16 }))[0]).toBe(DhcpParse.BAD_HARDWARE);
    expect(parse(dhcp({ ...ack, cookie: 0x63825364 }))[0]).toBe(DhcpParse.BAD_COOKIE);
  });

  it('rejects an option whose length byte or value runs past the end', () => {
    expect(parse(dhcp({ ...ack, options: [opt.type(DHCP.ACK)], end: false, trailer: [6] }))[0]).toBe(DhcpParse.OPTION_OVERRUN);
    expect(parse(dhcp({ ...ack, options: [opt.type(DHCP.ACK)], end: false, trailer: [6, 8, 1, 2, 3] }))[0]).toBe(DhcpParse.OPTION_OVERRUN);
    // Unknown options are bounded too.
    expect(parse(dhcp({ ...ack, options: [opt.type(DHCP.ACK)], end: false, trailer: [200, 255] }))[0]).toBe(DhcpParse.OPTION_OVERRUN);
    // Every truncation inside the options is either OK (cut on an option boundary) or an overrun, never more.
    const b = dhcp(ack);
    for (let n = 240; n <= b.length; n++) expect([DhcpParse.OK, DhcpParse.OPTION_OVERRUN]).toContain(parse(b, 0, n)[0]);
  });

  it('rejects duplicates of recorded options (53, 51, 54, 6, 1, 3, 50, 61)', () => {
    const dup = (o: readonly [number, readonly number[]]) => parse(dhcp({ ...ack, options: [...ack.options, o] }))[0];
    expect(dup(opt.type(DHCP.ACK))).toBe(DhcpParse.DUPLICATE_OPTION);
    expect(dup(opt.leaseTime(1))).toBe(DhcpParse.DUPLICATE_OPTION);
    expect(dup(opt.serverId('1.2.3.4'))).toBe(DhcpParse.DUPLICATE_OPTION);
    expect(dup(opt.dns('1.1.1.1'))).toBe(DhcpParse.DUPLICATE_OPTION);
    expect(dup(opt.subnetMask('255.0.0.0'))).toBe(DhcpParse.DUPLICATE_OPTION);
    expect(dup(opt.router('1.2.3.4'))).toBe(DhcpParse.DUPLICATE_OPTION);
    expect(dup(opt.clientId([1, 2]))).toBe(DhcpParse.DUPLICATE_OPTION);
    const req = dhcp({ ...ack, options: [opt.requestedIp('1.2.3.4'), opt.requestedIp('1.2.3.5')] });
    expect(parse(req)[0]).toBe(DhcpParse.DUPLICATE_OPTION);
    // Unrecorded options may repeat.
    expect(parse(dhcp({ ...ack, options: [...ack.options, opt.raw(15, [97]), opt.raw(15, [98])] }))[0]).toBe(DhcpParse.OK);
  });

  it('rejects bad lengths of recorded options and option overload', () => {
    const one = (o: readonly [number, readonly number[]]) => parse(dhcp({ ...ack, options: [o] }))[0];
    expect(one(opt.raw(53, [5, 5]))).toBe(DhcpParse.BAD_OPTION_LENGTH);
    expect(one(opt.raw(53, [0]))).toBe(DhcpParse.BAD_OPTION_LENGTH);
    expect(one(opt.raw(51, [0, 0, 1]))).toBe(DhcpParse.BAD_OPTION_LENGTH);
    expect(one(opt.raw(54, []))).toBe(DhcpParse.BAD_OPTION_LENGTH);
    expect(one(opt.raw(6, [1, 2, 3, 4, 5]))).toBe(DhcpParse.BAD_OPTION_LENGTH);
    expect(one(opt.raw(6, []))).toBe(DhcpParse.BAD_OPTION_LENGTH);
    expect(one(opt.raw(3, [1, 2]))).toBe(DhcpParse.BAD_OPTION_LENGTH);
    expect(one(opt.raw(61, [1]))).toBe(DhcpParse.BAD_OPTION_LENGTH);
    expect(one(opt.overload(3))).toBe(DhcpParse.OVERLOAD);
  });

  it('records where the host name (12) and client FQDN (81) options sit, and whether relay information (82) is present', () => {
    const b = dhcp({ ...ack, options: [opt.type(DHCP.REQUEST), opt.raw(12, [104, 111, 115, 116]), opt.raw(81, [0, 0, 0, 120]), opt.raw(82, [1, 1, 7])] });
    const [st, m] = parse(b);
    expect(st).toBe(DhcpParse.OK);
    expect(b[m.hostnameOptionOffset]).toBe(12);
    expect(b[m.fqdnOptionOffset]).toBe(81);
    expect(m.hasRelayInfo).toBe(true);
    const [, plain] = parse(dhcp(ack));
    expect([plain.hostnameOptionOffset, plain.fqdnOptionOffset, plain.hasRelayInfo]).toEqual([-1, -1, false]);
    // Twice is malformed (a second copy would survive blanking the first).
    expect(parse(dhcp({ ...ack, options: [opt.raw(12, [97]), opt.raw(12, [98])] }))[0]).toBe(DhcpParse.DUPLICATE_OPTION);
    expect(parse(dhcp({ ...ack, options: [opt.raw(81, [0, 0, 0]), opt.raw(81, [0, 0, 0])] }))[0]).toBe(DhcpParse.DUPLICATE_OPTION);
  });
});
