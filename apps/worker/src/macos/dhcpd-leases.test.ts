import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { findLease, leaseForMac, normalizeMac, parseDhcpdLeases } from './dhcpd-leases.ts';

const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
const text = readFileSync(path.join(fixtures, 'dhcpd_leases.txt'), 'utf8');
// 0x6566c1a2 = 1701233058 s (debian's expiry); our "now" sits between the leases' expiries.
const NOW = 0x6566c1b0 * 1000;

describe('/var/db/dhcpd_leases', () => {
  it('parses the bootpd block format, normalising hex octets without leading zeros', () => {
    const leases = parseDhcpdLeases(text);
    expect(leases.map((l) => [l.name, l.ip, l.mac])).toEqual([
      ['debian', '192.168.64.2', '5a:94:ef:e4:0c:ee'],
      ['admins-Virtual-Machine', '192.168.64.3', '2e:7f:02:11:2f:8a'],
      // the DUID ("ff,…") client of an Ubuntu guest is skipped: it names no MAC
      ['admins-Virtual-Machine', '192.168.64.7', '2e:7f:02:11:2f:8a'],
      ['old-clone', '192.168.64.9', '0e:00:00:00:00:01'],
    ]);
    expect(leases[0]!.expiresAt).toBe(0x6566c1a2 * 1000);
  });

  it('finds the newest unexpired lease by MAC, comparing octets as numbers', () => {
    const leases = parseDhcpdLeases(text);
    expect(findLease(leases, '2e:7f:02:11:2f:8a', NOW)?.ip).toBe('192.168.64.7'); // newest of two
    expect(findLease(leases, '2E:7F:2:11:2F:8A', NOW)?.ip).toBe('192.168.64.7');
    expect(findLease(leases, '5a:94:ef:e4:0c:ee', NOW)).toBeUndefined(); // expired just before NOW
    expect(findLease(leases, '5a:94:ef:e4:0c:ee', 0x6566c1a1 * 1000)?.ip).toBe('192.168.64.2');
    expect(findLease(leases, '0e:00:00:00:00:01', NOW)).toBeUndefined(); // old, expired
    expect(findLease(leases, 'aa:bb:cc:dd:ee:ff', NOW)).toBeUndefined();
    expect(() => findLease(leases, 'not-a-mac')).toThrow(/not a MAC/);
  });

  it('skips malformed blocks without throwing', () => {
    const leases = parseDhcpdLeases(readFileSync(path.join(fixtures, 'dhcpd_leases_malformed.txt'), 'utf8'));
    expect(leases.map((l) => l.name)).toEqual(['good']);
    expect(parseDhcpdLeases('')).toEqual([]);
    expect(parseDhcpdLeases('garbage } { = ')).toEqual([]);
    expect(normalizeMac('a:b:c:d:e:f')).toBe('0a:0b:0c:0d:0e:0f');
    expect(normalizeMac('a:b:c')).toBeUndefined();
  });

  it('reads the file; a missing file means no lease', async () => {
    expect((await leaseForMac('2e:7f:2:11:2f:8a', { file: path.join(fixtures, 'dhcpd_leases.txt'), now: NOW }))?.ip).toBe('192.168.64.7');
    expect(await leaseForMac('2e:7f:2:11:2f:8a', { file: path.join(fixtures, 'nope') })).toBeUndefined();
  });
});
