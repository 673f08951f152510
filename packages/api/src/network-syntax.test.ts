import { Value } from '@sinclair/typebox/value';
import { describe, expect, it } from 'vitest';
import { MAC_PATTERN, macProblem, networkModeProblem, normalizeMac } from './network-syntax.ts';
import { VmCreate, VmUpdate } from './schemas.ts';

const GOOD = ['02:00:5e:10:00:01', '02:AA:BB:CC:DD:EE', '52:54:00:12:34:56', 'a4:83:e7:00:00:01', '00:00:00:00:00:01', 'fe:ff:ff:ff:ff:ff'];
const BAD: [string, RegExp][] = [
  ['01:00:5e:00:00:01', /multicast/],
  ['03:00:00:00:00:01', /multicast/],
  ['ff:ff:ff:ff:ff:ff', /broadcast/],
  ['FF:FF:FF:FF:FF:FF', /broadcast/],
  ['00:00:00:00:00:00', /all zero/],
  ['02-00-5e-10-00-01', /separate the six octets with ":"/],
  ['0200.5e10.0001', /separate the six octets with ":"/],
  ['02:00:5e:10:00', /not six two-digit hex octets/],
  ['02:00:5e:10:00:01:02', /not six two-digit hex octets/],
  ['2:0:5e:10:0:1', /not six two-digit hex octets/],
  ['02:00:5e:10:00:0g', /not six two-digit hex octets/],
  ['', /not six two-digit hex octets/],
  [' 02:00:5e:10:00:01', /not six two-digit hex octets/],
];

describe('custom MACs', () => {
  const pattern = new RegExp(MAC_PATTERN);
  it('accepts unicast MACs in either case and stores them lower case', () => {
    for (const mac of GOOD) {
      expect(macProblem(mac), mac).toBeNull();
      expect(pattern.test(mac), mac).toBe(true);
    }
    expect(normalizeMac('02:AA:BB:CC:DD:EE')).toBe('02:aa:bb:cc:dd:ee');
  });
  it('refuses multicast, broadcast, all-zero, wrong lengths and other separators, saying which', () => {
    for (const [mac, why] of BAD) {
      expect(macProblem(mac), mac).toMatch(why);
      expect(pattern.test(mac), mac).toBe(false); // the schema (and the OpenAPI document) agrees
    }
    expect(macProblem(42)).toMatch(/string/);
  });
  it('is part of the create and update schemas (null clears it on update)', () => {
    expect(Value.Check(VmCreate, { name: 'a', image: 'i', mac: '02:00:00:00:00:01' })).toBe(true);
    expect(Value.Check(VmCreate, { name: 'a', image: 'i', mac: '01:00:00:00:00:01' })).toBe(false);
    expect(Value.Check(VmUpdate, { mac: null })).toBe(true);
    expect(Value.Check(VmUpdate, { mac: 'ff:ff:ff:ff:ff:ff' })).toBe(false);
  });
});

describe('network modes', () => {
  it('takes nat, host-only and none; nothing else', () => {
    for (const mode of ['nat', 'host-only', 'none']) expect(Value.Check(VmCreate, { name: 'a', image: 'i', network: { mode } }), mode).toBe(true);
    for (const mode of ['bridged', 'shared', 'host', '', 'NAT']) expect(Value.Check(VmCreate, { name: 'a', image: 'i', network: { mode } }), mode).toBe(false);
    expect(Value.Check(VmUpdate, { network: { mode: 'host-only' } })).toBe(true);
  });
  it('mode none takes no rules and no MAC; the other modes take both', () => {
    expect(networkModeProblem('none', {})).toBeNull();
    expect(networkModeProblem('none', { allow: [], block: [], blockLocal: false })).toBeNull();
    expect(networkModeProblem('none', { allow: ['10.0.0.0/8'] })).toMatch(/no NIC to apply allow to/);
    expect(networkModeProblem('none', { block: ['10.0.0.0/8'], blockLocal: true })).toMatch(/no NIC to apply block, blockLocal to/);
    expect(networkModeProblem('none', {}, '02:00:00:00:00:01')).toMatch(/no NIC to give a MAC to/);
    expect(networkModeProblem('host-only', { allow: ['@host'], blockLocal: true }, '02:00:00:00:00:01')).toBeNull();
    expect(networkModeProblem('nat', { block: ['10.0.0.0/8'] })).toBeNull();
  });
});
