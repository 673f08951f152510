import { describe, expect, it } from 'vitest';
import { AddressPool, AddressPoolFull, type ReserveRequest } from './address-pool.ts';
import { parseIpv4 } from './ipv4.ts';

const FIRST = parseIpv4('192.168.64.2');
const LAST = parseIpv4('192.168.64.254');
const mac = (i: number): string => `02:aa:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
const req = (i: number, over: Partial<ReserveRequest> = {}): ReserveRequest => ({
  key: `vm-${i}.1`,
  vmId: `vm-${i}`,
  mac: mac(i),
  name: `vm-${i}`,
  hostAccess: false,
  ...over,
});

describe('AddressPool', () => {
  it('gives every instance its own address, bound to its MAC, until the pool is full — then says so', () => {
    const pool = new AddressPool(FIRST, LAST, '192.168.64.0/24');
    expect(pool.size).toBe(253);
    const ips = new Set<string>();
    for (let i = 0; i < 253; i++) ips.add(pool.reserve(req(i)).ip);
    expect(ips.size).toBe(253);
    expect(pool.free).toBe(0);
    expect(() => pool.reserve(req(999))).toThrow(AddressPoolFull);
    expect(() => pool.reserve(req(999))).toThrow('no free VM address in NAT subnet 192.168.64.0/24: all 253 addresses are reserved by VMs on this worker');
    pool.release('vm-7.1');
    expect(pool.reserve(req(999)).ip).toMatch(/^192\.168\.64\./);
  });

  it('is idempotent per instance and deterministic per VM: the same VM comes back to the same address', () => {
    const a = new AddressPool(FIRST, LAST, 'x');
    const first = a.reserve(req(1));
    expect(a.reserve(req(1, { hostAccess: true })).ip).toBe(first.ip);
    expect(a.get('vm-1.1')?.hostAccess).toBe(true);
    a.release('vm-1.1');
    // A new attempt of the same VM (new key, new MAC) gets the same address again.
    expect(a.reserve(req(1, { key: 'vm-1.2', mac: mac(500) })).ip).toBe(first.ip);
    // And on another worker's pool, the same VM prefers the same address too.
    expect(new AddressPool(FIRST, LAST, 'x').reserve(req(1)).ip).toBe(first.ip);
  });

  it('keeps an address the instance held before when it is still free', () => {
    const pool = new AddressPool(FIRST, LAST, 'x');
    expect(pool.reserve(req(1, { preferredIp: '192.168.64.77' })).ip).toBe('192.168.64.77');
    expect(pool.reserve(req(2, { preferredIp: '192.168.64.77' })).ip).not.toBe('192.168.64.77');
    expect(pool.reserve(req(3, { preferredIp: '10.0.0.1' })).ip).toMatch(/^192\.168\.64\./);
  });

  it('avoids addresses another MAC still holds a lease on, while clean ones are left', () => {
    const pool = new AddressPool(parseIpv4('10.0.0.2'), parseIpv4('10.0.0.4'), 'x');
    const leases = [
      { ip: '10.0.0.2', mac: mac(50) },
      { ip: '10.0.0.3', mac: mac(51) },
      { ip: '10.0.0.4', mac: mac(1) }, // its own lease is no obstacle
    ];
    expect(pool.reserve(req(1), leases).ip).toBe('10.0.0.4');
    const second = pool.reserve(req(2), leases).ip;
    expect(['10.0.0.2', '10.0.0.3']).toContain(second);
  });

  it('names each VM in DNS once: an invalid label or a name another VM holds gets no DNS name', () => {
    const pool = new AddressPool(FIRST, LAST, 'x');
    const a = pool.reserve(req(1, { name: 'web' }));
    const b = pool.reserve(req(2, { name: 'web' }));
    const c = pool.reserve(req(3, { name: 'Not_A_Label' }));
    expect([a.dnsName, b.dnsName, c.dnsName]).toEqual(['web', null, null]);
    expect(pool.dnsHostsFile()).toBe(`${a.ip} web\n`);
    expect(pool.dhcpHostsFile().split('\n').filter(Boolean).sort()).toEqual([`${mac(1)},${a.ip}`, `${mac(2)},${b.ip}`, `${mac(3)},${c.ip}`].sort());
  });

  it('lists the addresses granted host access', () => {
    const pool = new AddressPool(FIRST, LAST, 'x');
    const a = pool.reserve(req(1, { hostAccess: true }));
    pool.reserve(req(2));
    expect(pool.hostAccessIps()).toEqual([a.ip]);
  });

  it('loads persisted reservations, dropping what no longer fits', () => {
    const pool = new AddressPool(FIRST, LAST, 'x');
    const good = { key: 'k1', vmId: 'v1', mac: '02:AA:00:00:00:01', ip: '192.168.64.9', dnsName: 'v1', hostAccess: true };
    const skipped = pool.load([
      good,
      { ...good, key: 'k2', mac: '02:aa:00:00:00:02' }, // same address twice
      { ...good, key: 'k3', ip: '10.1.1.1' }, // outside the pool
      { ...good, key: 'k4', ip: '192.168.64.10', mac: 'nope' },
      null,
      'junk',
    ]);
    expect(skipped.map((r) => r.key)).toEqual(['k2', 'k3', 'k4']);
    expect(pool.list()).toEqual([{ ...good, mac: '02:aa:00:00:00:01' }]);
  });

  it('rejects a bad MAC', () => {
    expect(() => new AddressPool(FIRST, LAST, 'x').reserve(req(1, { mac: 'zz' }))).toThrow(/not a MAC/);
  });
});
