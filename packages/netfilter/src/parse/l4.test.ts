import { describe, expect, it } from 'vitest';
import { IcmpParse, checkIcmp, icmpType, isIcmpError } from './icmp.ts';
import { TcpParse, checkTcp, isConnectionOpen, tcpDstPort, tcpFlags, tcpSrcPort } from './tcp.ts';
import { UdpParse, checkUdp, udpDstPort, udpLength, udpSrcPort } from './udp.ts';
import { TCP_FLAGS, icmp, tcp, udp } from '../testing/frames.ts';

describe('UDP', () => {
  it('reads ports and length', () => {
    const u = udp({ sport: 68, dport: 67, payload: new Uint8Array(10) });
    expect(checkUdp(u, 0, u.length)).toBe(UdpParse.OK);
    expect([udpSrcPort(u, 0), udpDstPort(u, 0), udpLength(u, 0)]).toEqual([68, 67, 18]);
  });

  it('rejects a short header and inconsistent lengths; allows trailing bytes', () => {
    const u = udp({ sport: 1, dport: 2, payload: new Uint8Array(4) });
    for (let n = 0; n < 8; n++) expect(checkUdp(u, 0, n)).toBe(UdpParse.TRUNCATED);
    expect(checkUdp(udp({ sport: 1, dport: 2, length: 4 }), 0, 8)).toBe(UdpParse.BAD_LENGTH);
    expect(checkUdp(udp({ sport: 1, dport: 2, length: 13 }), 0, 8)).toBe(UdpParse.BAD_LENGTH);
    expect(checkUdp(udp({ sport: 1, dport: 2, payload: new Uint8Array(4), length: 8 }), 0, 12)).toBe(UdpParse.OK);
  });
});

describe('TCP', () => {
  it('reads ports and flags', () => {
    const t = tcp({ sport: 50000, dport: 443, flags: TCP_FLAGS.SYN });
    expect(checkTcp(t, 0, t.length)).toBe(TcpParse.OK);
    expect([tcpSrcPort(t, 0), tcpDstPort(t, 0), tcpFlags(t, 0)]).toEqual([50000, 443, TCP_FLAGS.SYN]);
  });

  it('rejects a short header and a bad data offset', () => {
    const t = tcp({ sport: 1, dport: 2 });
    for (let n = 0; n < 20; n++) expect(checkTcp(t, 0, n)).toBe(TcpParse.TRUNCATED);
    expect(checkTcp(tcp({ sport: 1, dport: 2, dataOffset: 4 }), 0, 20)).toBe(TcpParse.BAD_DATA_OFFSET);
    expect(checkTcp(tcp({ sport: 1, dport: 2, dataOffset: 6 }), 0, 20)).toBe(TcpParse.BAD_DATA_OFFSET);
    expect(checkTcp(tcp({ sport: 1, dport: 2, dataOffset: 6, payload: new Uint8Array(4) }), 0, 24)).toBe(TcpParse.OK);
  });

  it('isConnectionOpen is SYN without ACK', () => {
    expect(isConnectionOpen(TCP_FLAGS.SYN)).toBe(true);
    expect(isConnectionOpen(TCP_FLAGS.SYN | TCP_FLAGS.ACK)).toBe(false);
    expect(isConnectionOpen(TCP_FLAGS.ACK | TCP_FLAGS.PSH)).toBe(false);
    expect(isConnectionOpen(TCP_FLAGS.SYN | TCP_FLAGS.FIN)).toBe(true);
  });
});

describe('ICMP', () => {
  it('needs 8 bytes and classifies errors', () => {
    const m = icmp({ type: 3, code: 4 });
    expect(checkIcmp(0, m.length)).toBe(IcmpParse.OK);
    expect(checkIcmp(0, 7)).toBe(IcmpParse.TRUNCATED);
    expect(icmpType(m, 0)).toBe(3);
    expect([3, 11, 12].every(isIcmpError)).toBe(true);
    expect([0, 5, 8, 13].some(isIcmpError)).toBe(false);
  });
});
