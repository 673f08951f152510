import { describe, expect, it } from 'vitest';
import { type FilterConfig, parseExposure, resolveConfig } from './config.ts';
import { NetfilterConfigError } from './errors.ts';
import { createFilter } from './filter.ts';
import { ip } from './testing/frames.ts';
import { baseConfig } from './testing/scenario.ts';

function errorOf(cfg: unknown): NetfilterConfigError {
  try {
    createFilter(cfg as FilterConfig);
  } catch (err) {
    expect(err).toBeInstanceOf(NetfilterConfigError);
    return err as NetfilterConfigError;
  }
  throw new Error('expected NetfilterConfigError');
}

describe('resolveConfig', () => {
  it('fills defaults and normalises text', () => {
    const c = resolveConfig({ vmMac: '02:00:00:00:00:0A', gatewayIp: '192.168.64.1', subnet: '192.168.64.0/24' });
    expect(c).toMatchObject({
      vmMac: '02:00:00:00:00:0a',
      gatewayMac: null,
      subnet: '192.168.64.0/24',
      subnetBroadcast: ip('192.168.64.255'),
      dhcpServers: ['192.168.64.1'],
      allow: [],
      block: [],
      hostAccess: false,
      hostAddresses: [],
      address: null,
      blockLocal: false,
      ingress: 'open',
      expose: [],
      maxFrame: 1514,
      dhcpRate: { perSecond: 10, burst: 50 },
      arpRate: { perSecond: 20, burst: 50 },
      dhcpTransactionMs: 60_000,
      leaseSkewMs: 100,
      maxLeaseSeconds: 86_400,
      verifyIpChecksum: false,
      lease: null,
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('blockLocal turns host access off and restricts ingress', () => {
    const c = resolveConfig(baseConfig({ blockLocal: true }));
    expect(c).toMatchObject({ hostAccess: false, blockLocal: true, ingress: 'restricted' });
  });

  it('resolves @host and exposure strings', () => {
    const c = resolveConfig(baseConfig({ allow: ['@host'], expose: ['2222:22', '127.0.0.1:8053:53/udp', { hostPort: 8080, vmPort: 80 }] }));
    expect(c.rules).toEqual([{ cidr: { base: ip('192.168.64.1'), prefix: 32 }, action: 1 }]);
    expect(c.expose).toEqual([
      { hostPort: 2222, vmPort: 22, protocol: 'tcp', hostAddress: '0.0.0.0' },
      { hostPort: 8053, vmPort: 53, protocol: 'udp', hostAddress: '127.0.0.1' },
      { hostPort: 8080, vmPort: 80, protocol: 'tcp', hostAddress: '0.0.0.0' },
    ]);
  });

  it('parseExposure', () => {
    expect(parseExposure('2222:22')).toEqual({ hostPort: 2222, vmPort: 22, protocol: 'tcp' });
    expect(parseExposure('10.0.0.1:53:53/udp')).toEqual({ hostPort: 53, vmPort: 53, protocol: 'udp', hostAddress: '10.0.0.1' });
    expect(parseExposure('22')).toBeNull();
    expect(parseExposure('a:b')).toBeNull();
  });
});

describe('NetfilterConfigError names the option and the problem', () => {
  it.each<[string, Record<string, unknown>, string, RegExp]>([
    ['bad vmMac', { vmMac: '02:00:00:00:00' }, 'vmMac', /not a MAC/],
    ['group vmMac', { vmMac: '01:00:5e:00:00:01' }, 'vmMac', /unicast/],
    ['zero vmMac', { vmMac: '00:00:00:00:00:00' }, 'vmMac', /all-zero/],
    ['vmMac not a string', { vmMac: 42 }, 'vmMac', /MAC address string/],
    ['bad gatewayMac', { gatewayMac: 'ff:ff:ff:ff:ff:ff' }, 'gatewayMac', /unicast/],
    ['gatewayMac = vmMac', { gatewayMac: '02:00:00:00:00:01' }, 'gatewayMac', /differ/],
    ['subnet without prefix', { subnet: '192.168.64.0' }, 'subnet', /prefix length/],
    ['subnet with host bits', { subnet: '192.168.64.1/24' }, 'subnet', /host bits.*192\.168\.64\.0\/24/],
    ['subnet /31', { subnet: '192.168.64.0/31' }, 'subnet', /1\.\.30/],
    ['gateway outside subnet', { gatewayIp: '192.168.65.1' }, 'gatewayIp', /not inside subnet/],
    ['gateway = network', { gatewayIp: '192.168.64.0' }, 'gatewayIp', /network or broadcast/],
    ['gateway not an IP', { gatewayIp: '192.168.64.300' }, 'gatewayIp', /dotted-quad/],
    ['empty dhcpServers', { dhcpServers: [] }, 'dhcpServers', /at least one/],
    ['broadcast dhcpServer', { dhcpServers: ['255.255.255.255'] }, 'dhcpServers[0]', /unicast/],
    ['bad allow', { allow: ['10.0.0.1/8'] }, 'allow[0]', /host bits/],
    ['bad block type', { block: [7] }, 'block[0]', /CIDR string/],
    ['allow not an array', { allow: '10.0.0.0/8' }, 'allow', /array/],
    ['hostAccess + blockLocal', { hostAccess: true, blockLocal: true }, 'hostAccess', /conflicts/],
    ['ingress open + blockLocal', { ingress: 'open', blockLocal: true }, 'ingress', /conflicts/],
    ['bad ingress', { ingress: 'closed' }, 'ingress', /"open" or "restricted"/],
    ['bad expose string', { expose: ['22'] }, 'expose[0]', /hostPort:vmPort/],
    ['bad expose port', { expose: [{ hostPort: 0, vmPort: 22 }] }, 'expose[0].hostPort', /1\.\.65535/],
    ['bad expose protocol', { expose: [{ hostPort: 1, vmPort: 22, protocol: 'sctp' }] }, 'expose[0].protocol', /tcp/],
    ['duplicate expose', { expose: ['2222:22', '2222:23'] }, 'expose[1]', /already exposed/],
    ['unknown expose key', { expose: [{ hostPort: 1, vmPort: 2, vm: 3 }] }, 'expose[0].vm', /unknown option/],
    ['maxFrame too small', { maxFrame: 10 }, 'maxFrame', /64\.\.65549/],
    ['maxFrame fraction', { maxFrame: 1514.5 }, 'maxFrame', /integer/],
    ['dhcpRate burst 0', { dhcpRate: { perSecond: 1, burst: 0 } }, 'dhcpRate.burst', /1\.\./],
    ['leaseSkewMs NaN', { leaseSkewMs: Number.NaN }, 'leaseSkewMs', /finite/],
    ['unknown option', { alow: ['10.0.0.0/8'] }, 'alow', /unknown option/],
    ['seed outside subnet', { lease: { ip: '10.0.0.5', expiresAt: 1 } }, 'lease.ip', /not inside subnet/],
    ['seed = gateway', { lease: { ip: '192.168.64.1', expiresAt: 1 } }, 'lease.ip', /gateway/],
    ['seed = broadcast', { lease: { ip: '192.168.64.255', expiresAt: 1 } }, 'lease.ip', /broadcast/],
    ['seed without expiry', { lease: { ip: '192.168.64.10' } }, 'lease.expiresAt', /finite/],
    ['seed bad dns', { lease: { ip: '192.168.64.10', expiresAt: 1, dns: ['x'] } }, 'lease.dns[0]', /dotted-quad/],
  ])('%s', (_name, over, field, problem) => {
    const e = errorOf({ ...baseConfig(), ...over });
    expect(e.field).toBe(field);
    expect(e.message).toMatch(problem);
    expect(e.message).toContain(`netfilter config: ${field} =`);
  });

  it('rejects a non-object config', () => {
    expect(errorOf(null).field).toBe('config');
  });
});
