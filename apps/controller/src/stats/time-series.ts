// A small in-memory time series of the fleet (slots used, starts, failures,
// scheduling latency) for the dashboard's plots. Sampled from the controller's
// own state and Prometheus metrics every few seconds; a fixed-size ring buffer,
// so it costs the same memory after a day as after a minute, and starts empty
// after a restart (long-term history belongs in Prometheus).
import type { Histogram, Counter } from 'prom-client';
import type { StatsSample, WorkerObject } from '../api/schemas.ts';
import { summarizeWorkers } from './overview.ts';
import type { Logger } from 'pino';
import { PeriodicTask, type ErrorSink } from '../storage/backoff.ts';

export interface TimeSeriesSources {
  listWorkers(): Promise<WorkerObject[]>;
  countVms(state: 'running' | 'pending'): Promise<number>;
  /** VMs that reached running (count of the start-latency histogram). */
  startLatency: Histogram;
  vmFailures: Counter;
  schedulingLatency: Histogram;
}

export class RingBuffer<T> {
  private readonly items: (T | undefined)[];
  private next = 0;
  private size = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('capacity must be a positive integer');
    this.items = new Array<T | undefined>(capacity);
  }
  push(item: T): void {
    this.items[this.next] = item;
    this.next = (this.next + 1) % this.capacity;
    this.size = Math.min(this.size + 1, this.capacity);
  }
  /** Oldest first. */
  toArray(): T[] {
    const out: T[] = [];
    const start = (this.next - this.size + this.capacity) % this.capacity;
    for (let i = 0; i < this.size; i++) out.push(this.items[(start + i) % this.capacity] as T);
    return out;
  }
  get length(): number {
    return this.size;
  }
}

async function histogramTotals(h: Histogram): Promise<{ count: number; sum: number }> {
  const values = (await h.get()).values;
  let count = 0;
  let sum = 0;
  for (const v of values) {
    if (v.metricName?.endsWith('_count')) count += v.value;
    else if (v.metricName?.endsWith('_sum')) sum += v.value;
  }
  return { count, sum };
}

async function counterTotal(c: Counter): Promise<number> {
  return (await c.get()).values.reduce((a, v) => a + v.value, 0);
}

export class FleetTimeSeries {
  private readonly buffer: RingBuffer<StatsSample>;
  private last: { starts: number; failures: number; schedCount: number; schedSum: number } | null = null;
  private task: PeriodicTask | null = null;

  constructor(
    private readonly src: TimeSeriesSources,
    readonly intervalMs = 5000,
    capacity = 720, // one hour at 5 s
  ) {
    this.buffer = new RingBuffer(capacity);
  }

  /** Samples now and every intervalMs; a failed sample is logged and retried with backoff (a gap in the plot). */
  start(log: Logger, sink?: ErrorSink): void {
    this.task = new PeriodicTask(() => this.sample(), { name: 'stats sampling', intervalMs: this.intervalMs, log, runAtStart: true, ...(sink ? { sink } : {}) }).start();
  }
  stop(): void {
    this.task?.stop();
    this.task = null;
  }

  samples(): StatsSample[] {
    return this.buffer.toArray();
  }

  async sample(now = Date.now()): Promise<StatsSample> {
    const [workers, running, pending, starts, failures, sched] = await Promise.all([
      this.src.listWorkers(),
      this.src.countVms('running'),
      this.src.countVms('pending'),
      histogramTotals(this.src.startLatency).then((h) => h.count),
      counterTotal(this.src.vmFailures),
      histogramTotals(this.src.schedulingLatency),
    ]);
    const { slots } = summarizeWorkers(workers);
    const prev = this.last ?? { starts, failures, schedCount: sched.count, schedSum: sched.sum };
    const placed = sched.count - prev.schedCount;
    const sample: StatsSample = {
      t: Math.round(now / 1000),
      slotsUsed: slots.vm.used,
      slotsTotal: slots.vm.total,
      macosSlotsUsed: slots.macos.used,
      macosSlotsTotal: slots.macos.total,
      running,
      pending,
      starts: Math.max(0, starts - prev.starts),
      failures: Math.max(0, failures - prev.failures),
      schedulingLatencyMs: placed > 0 ? ((sched.sum - prev.schedSum) / placed) * 1000 : null,
    };
    this.last = { starts, failures, schedCount: sched.count, schedSum: sched.sum };
    this.buffer.push(sample);
    return sample;
  }
}
