import { describe, expect, it } from 'vitest';
import { formatIpv4, formatMac, isGroupMac, parseIpv4, parseMac } from './address.ts';

describe('IPv4 text', () => {
  it('round-trips', () => {
    for (const t of ['0.0.0.0', '255.255.255.255', '192.168.64.10', '8.8.8.8']) expect(formatIpv4(parseIpv4(t)!)).toBe(t);
    expect(parseIpv4('255.255.255.255')).toBe(0xffffffff);
  });
  it('is strict', () => {
    for (const t of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.-4', ' 1.2.3.4', '1.2.3.4 ', '0x1.2.3.4', '1..3.4']) {
      expect(parseIpv4(t), t).toBeNull();
    }
  });
});

describe('MAC text', () => {
  it('parses colon and dash forms, any case, and formats lower-case', () => {
    expect(formatMac(parseMac('02:00:00:00:00:0A')!)).toBe('02:00:00:00:00:0a');
    expect(formatMac(parseMac('02-00-00-00-00-0b')!)).toBe('02:00:00:00:00:0b');
  });
  it('rejects malformed text', () => {
    for (const t of ['', '02:00:00:00:00', '02:00:00:00:00:00:00', '02:00-00:00:00:00', '0g:00:00:00:00:00', '2:0:0:0:0:1']) {
      expect(parseMac(t), t).toBeNull();
    }
  });
  it('knows group addresses', () => {
    expect(isGroupMac(parseMac('01:00:5e:00:00:fb')!)).toBe(true);
    expect(isGroupMac(parseMac('ff:ff:ff:ff:ff:ff')!)).toBe(true);
    expect(isGroupMac(parseMac('02:00:00:00:00:01')!)).toBe(false);
  });
});
