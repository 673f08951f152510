import { describe, expect, it } from 'vitest';
import { ArpParse, checkArp } from './arp.ts';
import { arp } from '../testing/frames.ts';

const base = { op: 1, sha: '02:00:00:00:00:01', spa: '192.168.64.10', tpa: '192.168.64.1' };

describe('checkArp', () => {
  it('accepts Ethernet/IPv4 requests and replies, 28 bytes, with trailing padding', () => {
    expect(checkArp(arp(base), 0, 28)).toBe(ArpParse.OK);
    expect(checkArp(arp({ ...base, op: 2 }), 0, 28)).toBe(ArpParse.OK);
    const padded = new Uint8Array(46);
    padded.set(arp(base));
    expect(checkArp(padded, 0, 46)).toBe(ArpParse.OK);
  });

  it('rejects every truncation', () => {
    const a = arp(base);
    for (let n = 0; n < 28; n++) expect(checkArp(a.subarray(0, n), 0, n)).toBe(ArpParse.TRUNCATED);
  });

  it('rejects a wrong htype, ptype, hlen, plen or op', () => {
    expect(checkArp(arp({ ...base, htype: 6 }), 0, 28)).toBe(ArpParse.BAD_HTYPE);
    expect(checkArp(arp({ ...base, ptype: 0x86dd }), 0, 28)).toBe(ArpParse.BAD_PTYPE);
    expect(checkArp(arp({ ...base, hlen: 8 }), 0, 32)).toBe(ArpParse.BAD_HLEN);
    expect(checkArp(arp({ ...base, plen: 16 }), 0, 52)).toBe(ArpParse.BAD_PLEN);
    expect(checkArp(arp({ ...base, plen: 3 }), 0, 26)).toBe(ArpParse.TRUNCATED);
    expect(checkArp(arp({ ...base, op: 3 }), 0, 28)).toBe(ArpParse.BAD_OP); // RARP request
    expect(checkArp(arp({ ...base, op: 0 }), 0, 28)).toBe(ArpParse.BAD_OP);
  });

  it('respects the offset', () => {
    const f = new Uint8Array(14 + 28);
    f.set(arp(base), 14);
    expect(checkArp(f, 14, f.length)).toBe(ArpParse.OK);
    expect(checkArp(f, 14, f.length - 1)).toBe(ArpParse.TRUNCATED);
  });
});
