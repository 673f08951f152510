import { describe, expect, it } from 'vitest';
import type { Capacity__Output, Hello__Output, WorkerNetwork__Output } from '@fleet/proto';
import { capacityInfo, helloInfo, MAX_WORKER_NETWORKS, workerNetworks } from './worker-input.ts';

const cap = (over: Partial<Capacity__Output> = {}): Capacity__Output => ({ cpus: 8, memoryMib: '16384', vmSlots: 8, macosSlots: 2, natAddresses: 0, ...over });

describe('capacityInfo', () => {
  it('takes the VM address pool; 0 (or a worker that predates the field) = not limited', () => {
    expect(capacityInfo(cap({ natAddresses: 253 }))).toEqual({ cpus: 8, memoryMib: 16384, vmSlots: 8, macosSlots: 2, natAddresses: 253 });
    expect(capacityInfo(cap()).natAddresses).toBe(0);
    const { natAddresses: _, ...older } = cap();
    expect(capacityInfo(older as Capacity__Output).natAddresses).toBe(0);
    expect(capacityInfo(null)).toEqual({ cpus: 0, memoryMib: 0, vmSlots: 0, macosSlots: 0, natAddresses: 0 });
  });

  it('bounds what a worker claims', () => {
    expect(capacityInfo(cap({ natAddresses: 4_000_000_000 })).natAddresses).toBe(1 << 24);
    expect(capacityInfo(cap({ natAddresses: -1 })).natAddresses).toBe(0);
  });
});

describe('helloInfo labels', () => {
  it('keeps valid labels and drops invalid ones with a reason (never clipped into another key)', () => {
    const rejected: string[] = [];
    const long = 'k'.repeat(500);
    const hello = { protocolVersion: 1, labels: { pool: 'ci', 'example.com/arch': 'arm64', empty: '', 'a b': 'x', [long]: 'v', '<script>': 'x', k2: 'bad value' } } as unknown as Hello__Output;
    const info = helloInfo(hello, (key, reason) => rejected.push(`${key}: ${reason}`));
    expect(info.labels).toEqual({ pool: 'ci', 'example.com/arch': 'arm64', empty: '' });
    expect(rejected).toHaveLength(4);
    expect(rejected.join('\n')).toMatch(/label key "a b"/);
    expect(rejected.join('\n')).toMatch(/label value "bad value"/);
  });
  it('keeps at most 64', () => {
    const labels = Object.fromEntries(Array.from({ length: 70 }, (_, i) => [`k${i}`, 'v']));
    let dropped = 0;
    expect(Object.keys(helloInfo({ protocolVersion: 1, labels } as unknown as Hello__Output, () => dropped++).labels)).toHaveLength(64);
    expect(dropped).toBe(6);
  });
});

describe('worker networks (issue 18)', () => {
  const net = (over: Partial<WorkerNetwork__Output> = {}): WorkerNetwork__Output => ({ mode: 'nat', subnet: '192.168.64.0/24', gateway: '192.168.64.1', addresses: 253, interface: 'fleet0', ...over });
  const check = (list: WorkerNetwork__Output[]) => {
    const rejected: string[] = [];
    return { kept: workerNetworks(list, (r) => rejected.push(r)), rejected };
  };

  it('keeps valid networks as reported', () => {
    const { kept, rejected } = check([net(), net({ mode: 'host-only', subnet: '192.168.128.0/24', gateway: '192.168.128.1', addresses: 100, interface: 'vmnet host' })]);
    expect(rejected).toEqual([]);
    expect(kept).toEqual([
      { mode: 'nat', subnet: '192.168.64.0/24', gateway: '192.168.64.1', addresses: 253, interface: 'fleet0' },
      { mode: 'host-only', subnet: '192.168.128.0/24', gateway: '192.168.128.1', addresses: 100, interface: 'vmnet host' },
    ]);
    expect(check([]).kept).toEqual([]);
  });

  it('drops, with a reason, unknown modes, bad subnets and gateways, impossible counts, odd interfaces and second networks of a mode', () => {
    const cases: [Partial<WorkerNetwork__Output>, RegExp][] = [
      [{ mode: 'bridge' }, /unknown mode "bridge"/],
      [{ mode: 'none' }, /unknown mode "none"/],
      [{ subnet: '192.168.64.1/24' }, /host bits are set/],
      [{ subnet: '192.168.64.0' }, /no prefix length/],
      [{ subnet: '300.1.1.0/24' }, /not a dotted-quad/],
      [{ subnet: '0.0.0.0/4', gateway: '1.0.0.1' }, /must be a \/8 to \/30/],
      [{ subnet: '10.0.0.0/31' }, /must be a \/8 to \/30/],
      [{ subnet: 'fd00::/64' }, /subnet/],
      [{ gateway: '10.0.0.1' }, /gateway "10.0.0.1" is not an IPv4 address in 192.168.64.0\/24/],
      [{ gateway: 'gw' }, /gateway "gw"/],
      [{ addresses: 300 }, /300 addresses do not fit in 192.168.64.0\/24 \(at most 254\)/],
      [{ interface: 'br\u0000x' }, /interface/],
      [{ interface: 'x'.repeat(65) }, /interface/],
    ];
    for (const [over, reason] of cases) {
      const { kept, rejected } = check([net(over)]);
      expect(kept, JSON.stringify(over)).toEqual([]);
      expect(rejected.join('\n'), JSON.stringify(over)).toMatch(reason);
    }
    const dup = check([net(), net({ subnet: '10.1.0.0/16', gateway: '10.1.0.1' })]);
    expect(dup.kept).toHaveLength(1);
    expect(dup.kept[0]!.subnet).toBe('192.168.64.0/24');
    expect(dup.rejected.join('\n')).toMatch(/a second nat network/);
  });

  it('bounds the count', () => {
    const list = Array.from({ length: 20 }, (_, i) => net({ mode: i % 2 ? 'nat' : 'host-only' }));
    const { kept, rejected } = check(list);
    expect(kept).toHaveLength(2);
    expect(rejected[0]).toBe(`${20 - MAX_WORKER_NETWORKS} networks over the limit of ${MAX_WORKER_NETWORKS}`);
  });

  it('a Hello without networks means NAT only; a NAT pool stated only on the network limits natAddresses', () => {
    expect(helloInfo({ protocolVersion: 1, capacity: cap({ natAddresses: 253 }) } as unknown as Hello__Output).networks).toEqual([]);
    const info = helloInfo({ protocolVersion: 1, capacity: cap(), networks: [net({ addresses: 120 })] } as unknown as Hello__Output);
    expect(info.natAddresses).toBe(120);
    expect(info.networks).toHaveLength(1);
    const rejected: string[] = [];
    helloInfo({ protocolVersion: 1, networks: [net({ mode: 'bridged' })] } as unknown as Hello__Output, undefined, (r) => rejected.push(r));
    expect(rejected).toEqual(['network 0: unknown mode "bridged" (nat or host-only)']);
  });
});
