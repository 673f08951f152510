import { describe, expect, it } from 'vitest';
import { Counter, Histogram, Registry } from 'prom-client';
import type { WorkerObject } from '../api/schemas.ts';
import { FleetTimeSeries, RingBuffer } from './time-series.ts';
import { summarizeWorkers } from './overview.ts';

function worker(over: Partial<WorkerObject> & { name: string }): WorkerObject {
  return {
    id: over.name, status: 'online', connected: true, paused: false, hostname: '', os: 'darwin', arch: 'arm64', version: '1', labels: {}, drivers: ['vz'],
    capacity: { cpus: 8, memoryMib: 16384, vmSlots: 2, macosSlots: 2, natAddresses: 0 }, used: { cpus: 0, memoryMib: 0, vms: 0, macosVms: 0, natAddresses: 0 }, networks: [], lastSeenAt: null, createdAt: '', certificateExpiresAt: null,
    ...over,
  };
}

describe('RingBuffer', () => {
  it('keeps the newest items, oldest first, at a fixed size', () => {
    const r = new RingBuffer<number>(3);
    expect(r.toArray()).toEqual([]);
    for (const n of [1, 2]) r.push(n);
    expect(r.toArray()).toEqual([1, 2]);
    for (const n of [3, 4, 5]) r.push(n);
    expect(r.toArray()).toEqual([3, 4, 5]);
    expect(r.length).toBe(3);
  });
  it('refuses a useless capacity', () => {
    expect(() => new RingBuffer(0)).toThrow(RangeError);
  });
});

describe('summarizeWorkers', () => {
  it('counts online/offline/draining and slots of online workers; drained workers offer no schedulable slots', () => {
    const s = summarizeWorkers([
      worker({ name: 'a', used: { cpus: 2, memoryMib: 0, vms: 1, macosVms: 1, natAddresses: 1 } }),
      worker({ name: 'b', paused: true, used: { cpus: 0, memoryMib: 0, vms: 2, macosVms: 0, natAddresses: 2 } }),
      worker({ name: 'c', status: 'offline', used: { cpus: 0, memoryMib: 0, vms: 2, macosVms: 2, natAddresses: 2 } }),
    ]);
    expect(s.workers).toEqual({ total: 3, online: 2, offline: 1, draining: 1 });
    expect(s.slots.vm).toEqual({ used: 3, total: 4, schedulable: 1 });
    expect(s.slots.macos).toEqual({ used: 1, total: 4, schedulable: 1 });
  });

  it('offers no more schedulable slots than a worker has free VM addresses', () => {
    const s = summarizeWorkers([
      worker({ name: 'a', capacity: { cpus: 8, memoryMib: 16384, vmSlots: 4, macosSlots: 0, natAddresses: 2 }, used: { cpus: 1, memoryMib: 0, vms: 1, macosVms: 0, natAddresses: 1 } }),
      worker({ name: 'b', capacity: { cpus: 8, memoryMib: 16384, vmSlots: 4, macosSlots: 0, natAddresses: 253 }, used: { cpus: 1, memoryMib: 0, vms: 1, macosVms: 0, natAddresses: 1 } }),
    ]);
    expect(s.slots.vm).toEqual({ used: 2, total: 8, schedulable: 1 + 3 });
  });
});

describe('FleetTimeSeries', () => {
  it('samples slots and per-interval starts, failures and mean scheduling latency from the metrics', async () => {
    const registers = [new Registry()];
    const startLatency = new Histogram({ name: 's', help: 's', registers });
    const schedulingLatency = new Histogram({ name: 'l', help: 'l', registers });
    const vmFailures = new Counter({ name: 'f', help: 'f', registers });
    let running = 0;
    const series = new FleetTimeSeries({
      listWorkers: async () => [worker({ name: 'a', used: { cpus: 1, memoryMib: 0, vms: running, macosVms: 0, natAddresses: running } })],
      countVms: async (state) => (state === 'running' ? running : 0),
      startLatency, schedulingLatency, vmFailures,
    }, 5000, 10);
    const first = await series.sample(1_000_000);
    expect(first).toMatchObject({ t: 1000, slotsUsed: 0, slotsTotal: 2, starts: 0, failures: 0, schedulingLatencyMs: null });

    schedulingLatency.observe(0.1);
    schedulingLatency.observe(0.3);
    startLatency.observe(1);
    startLatency.observe(2);
    vmFailures.inc();
    running = 2;
    const second = await series.sample(1_005_000);
    expect(second).toMatchObject({ t: 1005, slotsUsed: 2, running: 2, starts: 2, failures: 1 });
    expect(second.schedulingLatencyMs).toBeCloseTo(200);

    const third = await series.sample(1_010_000); // nothing happened since
    expect(third).toMatchObject({ starts: 0, failures: 0, schedulingLatencyMs: null });
    expect(series.samples().map((s) => s.t)).toEqual([1000, 1005, 1010]);
  });
});
