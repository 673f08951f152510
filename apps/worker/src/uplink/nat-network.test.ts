// Pure checks of the NAT uplink's option validation and generated configuration
// (no root, no system changes; the real thing is exercised by test/nat-uplink.test.ts).
import { describe, expect, it } from 'vitest';
import { broadcastOf, formatCidr, formatIpv4, overlaps, parseCidr, parseIpv4 } from './ipv4.ts';
import { silentLogger } from '../logger.ts';
import { dnsmasqConfig, gatewayMacFor, nftHostAccessUpdate, nftRuleset, parseLeaseFile, resolveNatOptions, validateIfName, type NatNetworkOptions, type UplinkLog } from './nat-network.ts';

const log = { debug() {}, info() {}, warn() {}, error() {} };
const base: NatNetworkOptions = { name: 'fleet0', subnet: '192.168.64.0/24', dataDir: '/var/lib/fleet/nat', log };

describe('ipv4', () => {
  it('parses and formats addresses and CIDRs', () => {
    expect(formatIpv4(parseIpv4('192.168.64.1'))).toBe('192.168.64.1');
    expect(formatIpv4(parseIpv4('255.255.255.255'))).toBe('255.255.255.255');
    for (const bad of ['192.168.64', '192.168.64.256', '01.2.3.4', '1.2.3.4 ', 'a.b.c.d', '']) {
      expect(() => parseIpv4(bad)).toThrow(/not a dotted-quad/);
    }
    const c = parseCidr('192.168.64.0/24');
    expect(formatCidr(c)).toBe('192.168.64.0/24');
    expect(formatIpv4(broadcastOf(c))).toBe('192.168.64.255');
    expect(() => parseCidr('192.168.64.1/24')).toThrow(/did you mean 192\.168\.64\.0\/24/);
    expect(formatCidr(parseCidr('192.168.64.1/24', 'x', false))).toBe('192.168.64.0/24');
    expect(() => parseCidr('192.168.64.0/33')).toThrow(/0\.\.32/);
    expect(() => parseCidr('192.168.64.0')).toThrow(/CIDR form/);
  });
  it('computes overlaps', () => {
    expect(overlaps(parseCidr('192.168.0.0/16'), parseCidr('192.168.64.0/24'))).toBe(true);
    expect(overlaps(parseCidr('192.168.64.0/24'), parseCidr('192.168.65.0/24'))).toBe(false);
    expect(overlaps(parseCidr('0.0.0.0/0'), parseCidr('10.0.0.0/8'))).toBe(true);
  });
});

describe('resolveNatOptions', () => {
  it('fills defaults: gateway .1, range .2–.254, 600 s leases, DNS on', () => {
    const cfg = resolveNatOptions(base);
    expect(formatIpv4(cfg.gateway)).toBe('192.168.64.1');
    expect(cfg.dhcpRange.map(formatIpv4)).toEqual(['192.168.64.2', '192.168.64.254']);
    expect(cfg.leaseSeconds).toBe(600);
    expect(cfg.table).toBe('fleet_fleet0');
    expect(cfg.dns).toBe(true);
  });
  it('puts the default range on the larger side of a custom gateway', () => {
    const cfg = resolveNatOptions({ ...base, gateway: '192.168.64.254' });
    expect(cfg.dhcpRange.map(formatIpv4)).toEqual(['192.168.64.1', '192.168.64.253']);
  });
  it.each([
    [{ name: 'fleet-0' }, /name/],
    [{ name: 'a234567890123456' }, /name/],
    [{ subnet: '10.0.0.0/8' }, /\/16 and \/29/],
    [{ subnet: '192.168.64.0/30' }, /\/16 and \/29/],
    [{ subnet: 'nonsense' }, /CIDR form/],
    [{ gateway: '10.0.0.1' }, /outside the subnet/],
    [{ gateway: '192.168.64.255' }, /broadcast/],
    [{ dhcpRange: ['192.168.64.1', '192.168.64.9'] }, /contains the gateway/],
    [{ dhcpRange: ['192.168.64.20', '192.168.64.10'] }, /after its end/],
    [{ dhcpRange: ['192.168.64.10', '192.168.65.10'] }, /not a host address/],
    [{ leaseSeconds: 60 }, /at least|between 120/],
    [{ leaseSeconds: 600.5 }, /integer/],
    [{ uplinkInterface: 'eth0 ; rm' }, /may only contain/],
    [{ uplinkInterface: 'averyveryverylongname' }, /at most 15/],
    [{ netns: 'bad/ns' }, /netns/],
    [{ dataDir: '' }, /dataDir/],
    [{ dataDir: '/var/lib/x\ndhcp-script=/tmp/evil' }, /control characters/],
    [{ dataDir: '/var/lib/my dir' }, /whitespace/],
  ] as [Partial<NatNetworkOptions>, RegExp][])('rejects %j', (patch, re) => {
    expect(() => resolveNatOptions({ ...base, ...patch } as NatNetworkOptions)).toThrow(re);
  });
  it("accepts the worker's pino logger", () => {
    const pinoLog: UplinkLog = silentLogger();
    expect(resolveNatOptions({ ...base, log: pinoLog }).name).toBe('fleet0');
  });
  it('validates interface names', () => {
    expect(validateIfName('tap-vm.1', 'TAP')).toBe('tap-vm.1');
    expect(() => validateIfName('', 'TAP')).toThrow(/non-empty/);
    expect(() => validateIfName('x/y', 'TAP')).toThrow(/may only contain/);
  });
});

describe('generated configuration', () => {
  it('derives a stable, locally administered unicast gateway MAC', () => {
    const mac = gatewayMacFor('fleet0');
    expect(mac).toBe(gatewayMacFor('fleet0'));
    expect(mac).not.toBe(gatewayMacFor('fleet1'));
    const first = parseInt(mac.slice(0, 2), 16);
    expect(first & 1).toBe(0); // unicast
    expect(first & 2).toBe(2); // locally administered
  });
  it('writes an inet table of its own that is replaced atomically (and removes the ip table of earlier versions)', () => {
    const rules = nftRuleset({ table: 'fleet_fleet0', bridge: 'fleet0', subnet: parseCidr('192.168.64.0/24'), uplink: 'eth0', gateway: parseCidr('192.168.64.1/32').network, dns: true, hostAccess: [] });
    expect(rules.split('\n').slice(0, 5)).toEqual(['table ip fleet_fleet0', 'delete table ip fleet_fleet0', 'table inet fleet_fleet0', 'delete table inet fleet_fleet0', 'table inet fleet_fleet0 {']);
    expect(rules).toContain('meta nfproto ipv4 ip saddr 192.168.64.0/24 ip daddr != 192.168.64.0/24 oifname "eth0" masquerade');
    expect(rules).toContain('iifname "eth0" oifname "fleet0" ct state established,related accept');
    expect(rules).toContain('iifname "fleet0" drop');
  });
  it('guards the host: from the bridge only replies, DHCP, DNS on the gateway, and host access for listed VMs reach it', () => {
    const gateway = parseCidr('192.168.64.1/32').network;
    const rules = nftRuleset({ table: 'fleet_fleet0', bridge: 'fleet0', subnet: parseCidr('192.168.64.0/24'), uplink: 'eth0', gateway, dns: true, hostAccess: ['192.168.64.7', '192.168.64.9'] });
    const input = rules.slice(rules.indexOf('chain input'), rules.indexOf('chain postrouting'));
    expect(input.trim().split('\n').map((l) => l.trim())).toEqual([
      'chain input {',
      'type filter hook input priority filter; policy accept;',
      'iifname "fleet0" ct state established,related accept',
      'iifname "fleet0" meta nfproto ipv4 udp sport 68 udp dport 67 accept',
      'iifname "fleet0" ip daddr 192.168.64.1 udp dport 53 accept',
      'iifname "fleet0" ip daddr 192.168.64.1 tcp dport 53 accept',
      'iifname "fleet0" ip daddr 192.168.64.1 ip saddr @host_access accept',
      'iifname "fleet0" counter drop comment "fleet: VM to host"',
      '}',
    ]);
    expect(rules).toContain('set host_access { type ipv4_addr; elements = { 192.168.64.7, 192.168.64.9 }; }');
    const noDns = nftRuleset({ table: 't', bridge: 'b', subnet: parseCidr('10.0.0.0/24'), uplink: 'eth0', gateway, dns: false, hostAccess: [] });
    expect(noDns).not.toContain('dport 53');
    expect(noDns).toContain('set host_access { type ipv4_addr; }');
    expect(nftHostAccessUpdate('fleet_fleet0', ['192.168.64.7'])).toBe('flush set inet fleet_fleet0 host_access\nadd element inet fleet_fleet0 host_access { 192.168.64.7 }\n');
    expect(nftHostAccessUpdate('fleet_fleet0', [])).toBe('flush set inet fleet_fleet0 host_access\n');
  });
  it('a host-only network (issue 18) has no masquerade and forwards nothing in or out; its DNS has no upstream', () => {
    const gateway = parseCidr('192.168.128.1/32').network;
    const rules = nftRuleset({ table: 'fleet_fleet1', bridge: 'fleet1', subnet: parseCidr('192.168.128.0/24'), uplink: undefined, gateway, dns: true, hostAccess: [] });
    expect(rules).not.toContain('masquerade');
    expect(rules).not.toContain('chain postrouting');
    const forward = rules.slice(rules.indexOf('chain forward'));
    expect(forward.trim().split('\n').map((l) => l.trim()).slice(0, 6)).toEqual([
      'chain forward {',
      'type filter hook forward priority filter; policy accept;',
      'iifname "fleet1" oifname "fleet1" meta nfproto ipv4 ip saddr 192.168.128.0/24 ip daddr 192.168.128.0/24 accept',
      'iifname "fleet1" drop',
      'oifname "fleet1" drop',
      '}',
    ]);
    // The host boundary is the same as NAT's.
    expect(rules).toContain('iifname "fleet1" counter drop comment "fleet: VM to host"');
    const conf = dnsmasqConfig(resolveNatOptions({ ...base, name: 'fleet1', subnet: '192.168.128.0/24', mode: 'host-only' }));
    expect(conf.split('\n')).toContain('no-resolv');
    expect(dnsmasqConfig(resolveNatOptions(base)).split('\n')).not.toContain('no-resolv');
    expect(() => resolveNatOptions({ ...base, mode: 'bridged' as 'nat' })).toThrow(/mode must be "nat" or "host-only"/);
    expect(() => resolveNatOptions({ ...base, mode: 'host-only', uplinkInterface: 'eth0' })).toThrow(/no uplink/);
  });
  it('reads dnsmasq\'s lease file, leaving out expired leases', () => {
    const text = '1700000100 02:aa:00:00:00:01 192.168.64.5 * 01:02:aa:00:00:00:01\n1600000000 02:aa:00:00:00:02 192.168.64.6 * *\n0 02:AA:00:00:00:03 192.168.64.7 vm *\ngarbage\n\n';
    expect(parseLeaseFile(text, 1_700_000_000)).toEqual([
      { ip: '192.168.64.5', mac: '02:aa:00:00:00:01' },
      { ip: '192.168.64.7', mac: '02:aa:00:00:00:03' },
    ]);
  });
  it('binds dnsmasq to the bridge only, with the lease time and files in dataDir', () => {
    const conf = dnsmasqConfig(resolveNatOptions({ ...base, leaseSeconds: 900, dns: false }));
    for (const line of [
      'interface=fleet0',
      'except-interface=lo',
      'bind-interfaces',
      'port=0',
      'dhcp-range=192.168.64.0,static,255.255.255.0,900s',
      'dhcp-ignore-clid',
      'dhcp-ignore-names',
      'dhcp-leasefile=/var/lib/fleet/nat/dnsmasq.leases',
      'dhcp-authoritative',
    ]) {
      expect(conf.split('\n')).toContain(line);
    }
    expect(conf).not.toContain('dns-server');
    expect(conf).not.toContain('addn-hosts');
    // What dnsmasq re-reads after dropping root is published where its user can read it.
    expect(conf).toMatch(/^dhcp-hostsfile=\/run\/fleet\/nat-[0-9a-f]{12}\/dhcp-hosts$/m);
    expect(dnsmasqConfig(resolveNatOptions(base))).toMatch(/^addn-hosts=\/run\/fleet\/nat-[0-9a-f]{12}\/dns-hosts$/m);
    expect(dnsmasqConfig(resolveNatOptions({ ...base, runtimeDir: '/run/x' }))).toContain('dhcp-hostsfile=/run/x/dhcp-hosts');
    expect(resolveNatOptions(base).runtimeDir).not.toBe(resolveNatOptions({ ...base, dataDir: '/var/lib/other' }).runtimeDir);
    expect(dnsmasqConfig(resolveNatOptions(base))).toContain('dhcp-option=option:dns-server,192.168.64.1');
  });
});
