import { describe, expect, it } from 'vitest';
import { Ipv4Header, Ipv4Parse, checksumOk, parseIpv4Header } from './ipv4.ts';
import { ip, ipv4, PROTO, udp } from '../testing/frames.ts';

const spec = { src: '192.168.64.10', dst: '8.8.8.8', protocol: PROTO.UDP, payload: udp({ sport: 1234, dport: 53 }) };

function parse(bytes: Uint8Array, verify = false, end = bytes.length): [Ipv4Parse, Ipv4Header] {
  const h = new Ipv4Header();
  return [parseIpv4Header(bytes, 0, end, h, verify), h];
}

describe('parseIpv4Header', () => {
  it('reads every field of a plain header', () => {
    const [st, h] = parse(ipv4({ ...spec, ttl: 7, id: 0xbeef, df: true }), true);
    expect(st).toBe(Ipv4Parse.OK);
    expect(h).toMatchObject({
      headerLength: 20,
      totalLength: 28,
      protocol: 17,
      ttl: 7,
      id: 0xbeef,
      dontFragment: true,
      moreFragments: false,
      fragmentOffset: 0,
      src: ip('192.168.64.10'),
      dst: ip('8.8.8.8'),
      payloadOffset: 20,
      payloadEnd: 28,
    });
    expect(h.isFragment).toBe(false);
  });

  it('addresses above 2^31 come out unsigned', () => {
    const [, h] = parse(ipv4({ ...spec, src: '255.255.255.255', dst: '224.0.0.251' }));
    expect(h.src).toBe(0xffffffff);
    expect(h.dst).toBe(0xe00000fb);
  });

  it('uses the total length, not the (padded) buffer length, as the packet end', () => {
    const padded = new Uint8Array(60);
    padded.set(ipv4(spec));
    const [st, h] = parse(padded);
    expect(st).toBe(Ipv4Parse.OK);
    expect(h.payloadEnd).toBe(28);
  });

  it('reports options through headerLength', () => {
    const [st, h] = parse(ipv4({ ...spec, options: [0x94, 4, 0, 0] })); // router alert
    expect(st).toBe(Ipv4Parse.OK);
    expect(h.headerLength).toBe(24);
    expect(h.payloadOffset).toBe(24);
  });

  it('reads fragment fields', () => {
    const [, h] = parse(ipv4({ ...spec, mf: true, fragmentOffset: 185 }));
    expect(h).toMatchObject({ moreFragments: true, fragmentOffset: 185 });
    expect(h.isFragment).toBe(true);
  });

  it('rejects truncation, bad version, bad IHL, bad total length, the reserved flag', () => {
    const good = ipv4(spec);
    for (let n = 0; n < 20; n++) expect(parse(good.subarray(0, n))[0]).toBe(Ipv4Parse.TRUNCATED);
    expect(parse(good.subarray(0, 27))[0]).toBe(Ipv4Parse.BAD_TOTAL_LENGTH);
    expect(parse(ipv4({ ...spec, version: 6 }))[0]).toBe(Ipv4Parse.BAD_VERSION);
    expect(parse(ipv4({ ...spec, ihl: 4 }))[0]).toBe(Ipv4Parse.BAD_IHL);
    expect(parse(ipv4({ ...spec, ihl: 0 }))[0]).toBe(Ipv4Parse.BAD_IHL);
    expect(parse(ipv4({ ...spec, ihl: 15 }))[0]).toBe(Ipv4Parse.BAD_IHL); // 60-byte header in a 28-byte packet
    expect(parse(ipv4({ ...spec, totalLength: 19 }))[0]).toBe(Ipv4Parse.BAD_TOTAL_LENGTH);
    expect(parse(ipv4({ ...spec, totalLength: 29 }))[0]).toBe(Ipv4Parse.BAD_TOTAL_LENGTH);
    expect(parse(ipv4({ ...spec, reservedFlag: true }))[0]).toBe(Ipv4Parse.RESERVED_FLAG);
  });

  it('verifies the checksum only when asked', () => {
    const bad = ipv4({ ...spec, badChecksum: true });
    expect(parse(bad, false)[0]).toBe(Ipv4Parse.OK);
    expect(parse(bad, true)[0]).toBe(Ipv4Parse.BAD_CHECKSUM);
    expect(checksumOk(ipv4(spec), 0, 20)).toBe(true);
    expect(checksumOk(ipv4({ ...spec, options: [1, 1, 1, 0] }), 0, 24)).toBe(true);
  });
});
