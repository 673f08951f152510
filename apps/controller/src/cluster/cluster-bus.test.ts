// The change notifications between controllers: every batch fits PostgreSQL's payload limit, and
// whatever arrives is checked before it reaches the controller's listeners.
import { describe, expect, it } from 'vitest';
import type { Vm } from '@fleet/db';
import { decodePayload, encodePayloads } from './cluster-bus.ts';

const vm = (i: number, labels = '{}'): Vm =>
  ({
    id: `vm-${i}`,
    name: `vm-${i}`,
    state: 'running',
    labels,
    createdAt: new Date('2026-12-06T07:00:00.000Z'),
    updatedAt: new Date('2026-12-06T07:00:01.000Z'),
    scheduledAt: null,
    runningAt: new Date('2026-12-06T07:00:02.000Z'),
    deleteRequestedAt: null,
    restartAt: null,
  }) as unknown as Vm;

describe('cluster bus payloads', () => {
  it('splits a large batch into payloads under 8000 bytes and loses nothing', () => {
    const workers = new Set(Array.from({ length: 500 }, (_, i) => `worker-${i}`));
    const vms = Array.from({ length: 300 }, (_, i) => ({ type: 'MODIFIED' as const, vm: vm(i) }));
    const payloads = encodePayloads('ctl-a', { w: workers, s: true, v: vms });
    expect(payloads.length).toBeGreaterThan(1);
    for (const p of payloads) expect(Buffer.byteLength(p)).toBeLessThan(8000);
    const decoded = payloads.map((p) => decodePayload(p)!);
    expect(decoded.flatMap((d) => d.workers)).toEqual([...workers]);
    expect(decoded.filter((d) => d.schedule)).toHaveLength(1);
    const got = decoded.flatMap((d) => d.vms);
    expect(got).toHaveLength(300);
    expect(got[7]!.vm.runningAt).toEqual(new Date('2026-12-06T07:00:02.000Z'));
    expect(got[7]!.vm.scheduledAt).toBeNull();
  });

  it('a row too big to travel goes as its id, to be read by the receiver', () => {
    const big = vm(1, JSON.stringify({ note: 'x'.repeat(9000) }));
    const [p] = encodePayloads('ctl-a', { w: new Set(), s: false, v: [{ type: 'MODIFIED', vm: big }] });
    const d = decodePayload(p!)!;
    expect(d.vms).toEqual([]);
    expect(d.truncated).toEqual([{ type: 'MODIFIED', id: 'vm-1' }]);
  });

  it('ignores what is not a payload of ours', () => {
    expect(decodePayload('not json')).toBeUndefined();
    expect(decodePayload('null')).toBeUndefined();
    expect(decodePayload('{"w":["x"]}')).toBeUndefined(); // no sender
    const d = decodePayload(JSON.stringify({ f: 'ctl-b', w: ['ok', 7, ''], v: [{ t: 'EXPLODED', vm: vm(1) }, { t: 'ADDED', vm: { id: 'x', name: 'x', createdAt: 'yesterday' } }, { t: 'ADDED', vm: vm(2) }] }))!;
    expect(d.workers).toEqual(['ok']);
    expect(d.vms.map((c) => c.vm.id)).toEqual(['vm-2']);
  });
});
