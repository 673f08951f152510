import { describe, expect, it } from 'vitest';
import { addressClassName, classifyIpv4, isGlobalIpv4 } from './address-classes.ts';
import { ip } from './testing/frames.ts';

describe('classifyIpv4', () => {
  it.each([
    ['0.0.0.0', 'this-network'],
    ['0.255.255.255', 'this-network'],
    ['10.0.0.5', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.15.255.255', 'global'],
    ['172.32.0.0', 'global'],
    ['192.168.64.11', 'private'],
    ['100.64.0.1', 'shared'],
    ['100.127.255.255', 'shared'],
    ['100.63.255.255', 'global'],
    ['100.128.0.0', 'global'],
    ['127.0.0.1', 'loopback'],
    ['169.254.169.254', 'link-local'],
    ['169.253.0.1', 'global'],
    ['192.0.0.9', 'ietf-protocol'],
    ['192.0.2.1', 'documentation'],
    ['198.51.100.7', 'documentation'],
    ['203.0.113.200', 'documentation'],
    ['203.0.114.1', 'global'],
    ['198.18.0.1', 'benchmarking'],
    ['198.19.255.255', 'benchmarking'],
    ['198.20.0.0', 'global'],
    ['224.0.0.251', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['240.0.0.1', 'reserved'],
    ['255.255.255.254', 'reserved'],
    ['255.255.255.255', 'broadcast'],
    ['8.8.8.8', 'global'],
    ['1.1.1.1', 'global'],
    ['192.88.99.1', 'global'],
    ['223.255.255.255', 'global'],
  ])('%s is %s', (addr, name) => {
    expect(addressClassName(classifyIpv4(ip(addr)))).toBe(name);
    expect(isGlobalIpv4(ip(addr))).toBe(name === 'global');
  });
});
