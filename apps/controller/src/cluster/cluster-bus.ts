// Changes made through one controller reach the others (issue 13, point 4): PostgreSQL
// LISTEN/NOTIFY on one channel. What crosses:
//   w  workers whose desired state changed (the controller holding the stream pushes it),
//   s  "something to schedule" (the leader runs a pass),
//   v  VM changes (watch streams, the dashboard and sessions on every controller).
// Notifications are sent after the change committed, coalesced per event-loop turn into as few
// NOTIFY payloads as fit PostgreSQL's 8000-byte limit. A notification can be lost (the listening
// connection dropped); so after every reconnect, and every `resyncMs` anyway, each controller
// pushes the full desired state to every worker it holds and asks for a scheduler pass.
import { openNotifyChannel, type NotifyChannel, type Vm } from '@fleet/db';
import type { Logger } from 'pino';
import type { FleetBus, VmChange, VmChangeType } from '../fleet-bus.ts';
import type { Metrics } from '../observability/metrics.ts';

export const CLUSTER_CHANNEL = 'fleet_changes';
/** NOTIFY payloads must stay under 8000 bytes. */
const MAX_PAYLOAD = 7_500;
const VM_DATE_FIELDS = ['createdAt', 'updatedAt', 'scheduledAt', 'runningAt', 'deleteRequestedAt', 'restartAt'] as const;
const CHANGE_TYPES: ReadonlySet<string> = new Set<VmChangeType>(['ADDED', 'MODIFIED', 'DELETED']);

interface Outgoing {
  f: string;
  w?: string[];
  s?: 1;
  v?: { t: VmChangeType; vm: unknown }[];
}

export interface ClusterBusOptions {
  url: string;
  controllerId: string;
  bus: FleetBus;
  log: Logger;
  metrics: Metrics;
  /** The worker's stream is held here: its desired-state change needs no notification. */
  heldHere: (workerId: string) => boolean;
  /** This controller runs the scheduler: its schedule requests need no notification. */
  isLeader: () => boolean;
  /** Whether any other controller is alive (VM changes are only sent when someone listens). */
  othersAlive: () => boolean;
  /** Push everything to every local stream and ask for a pass (missed notifications). */
  resync: () => void;
  resyncMs?: number;
  reconnectMs?: number;
  /** Reads a VM whose row was too big to travel in a notification. */
  loadVm?: (id: string) => Promise<Vm | null>;
}

export class ClusterBus {
  private channel: NotifyChannel | undefined;
  private relaying = false;
  private readonly offs: (() => void)[] = [];
  private queue: { w: Set<string>; s: boolean; v: VmChange[] } = { w: new Set(), s: false, v: [] };
  private flushScheduled = false;
  private resyncTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: ClusterBusOptions) {}

  async start(): Promise<void> {
    const { bus } = this.opts;
    this.offs.push(
      bus.onDesiredStateChange((id) => {
        if (this.relaying || this.opts.heldHere(id)) return;
        this.queue.w.add(id);
        this.scheduleFlush();
      }),
      bus.onScheduleRequest(() => {
        if (this.relaying || this.opts.isLeader()) return;
        this.queue.s = true;
        this.scheduleFlush();
      }),
      bus.onVmChange((c) => {
        if (this.relaying || !this.opts.othersAlive()) return;
        this.queue.v.push(c);
        this.scheduleFlush();
      }),
    );
    this.channel = await openNotifyChannel({
      url: this.opts.url,
      channel: CLUSTER_CHANNEL,
      onMessage: (p) => this.receive(p),
      // Whatever was announced while we were not listening: catch up from the database.
      onListening: () => this.opts.resync(),
      onError: (err) => this.opts.log.warn({ err }, 'cluster bus connection failed; reconnecting'),
      ...(this.opts.reconnectMs ? { reconnectMs: this.opts.reconnectMs } : {}),
    });
    this.resyncTimer = setInterval(() => this.opts.resync(), this.opts.resyncMs ?? 15_000);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    for (const off of this.offs.splice(0)) off();
    clearInterval(this.resyncTimer);
    await this.channel?.close();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => void this.flush());
  }

  private async flush(): Promise<void> {
    this.flushScheduled = false;
    const q = this.queue;
    this.queue = { w: new Set(), s: false, v: [] };
    const payloads = encodePayloads(this.opts.controllerId, q);
    if (payloads.length === 0) return;
    const ch = this.channel;
    if (!ch?.connected) return; // the others catch up at their next resync
    try {
      await ch.send(payloads);
      this.opts.metrics.clusterNotifications.inc({ direction: 'sent' }, payloads.length);
    } catch (err) {
      this.opts.log.warn({ err, payloads: payloads.length }, 'could not notify the other controllers; they catch up at their next resync');
    }
  }

  private receive(payload: string): void {
    const msg = decodePayload(payload);
    if (!msg || msg.from === this.opts.controllerId) return;
    this.opts.metrics.clusterNotifications.inc({ direction: 'received' });
    const { bus } = this.opts;
    this.relaying = true;
    try {
      for (const id of msg.workers) bus.desiredStateChanged(id);
      if (msg.schedule) bus.scheduleRequested();
      for (const c of msg.vms) bus.vmChanged(c);
    } catch (err) {
      this.opts.log.error({ err }, 'a listener failed on a change from another controller');
    } finally {
      this.relaying = false;
    }
    for (const t of msg.truncated) void this.relayLoaded(t.type, t.id);
  }

  private async relayLoaded(type: VmChangeType, id: string): Promise<void> {
    const vm = await this.opts.loadVm?.(id).catch(() => null);
    if (!vm) return;
    this.relaying = true;
    try {
      this.opts.bus.vmChanged({ type, vm });
    } finally {
      this.relaying = false;
    }
  }
}

/** Splits a batch into NOTIFY payloads under the size limit. Exported for tests. */
export function encodePayloads(from: string, q: { w: Set<string>; s: boolean; v: VmChange[] }): string[] {
  const out: string[] = [];
  let cur: Outgoing = { f: from };
  let size = JSON.stringify(cur).length;
  const emit = () => {
    if (cur.w || cur.s || cur.v) out.push(JSON.stringify(cur));
    cur = { f: from };
    size = JSON.stringify(cur).length;
  };
  if (q.s) {
    cur.s = 1;
    size += 6;
  }
  for (const id of q.w) {
    const add = JSON.stringify(id).length + 8;
    if (size + add > MAX_PAYLOAD) emit();
    (cur.w ??= []).push(id);
    size += add;
  }
  for (const c of q.v) {
    let item = { t: c.type, vm: c.vm as unknown };
    let add = JSON.stringify(item).length + 8;
    // A row too big for one payload travels as its id: the receiver reads it (a deleted one is lost to remote watchers).
    if (add > MAX_PAYLOAD - 100) {
      item = { t: c.type, vm: { id: c.vm.id, name: c.vm.name, truncated: true } };
      add = JSON.stringify(item).length + 8;
    }
    if (size + add > MAX_PAYLOAD) emit();
    (cur.v ??= []).push(item);
    size += add;
  }
  emit();
  return out;
}

export interface DecodedPayload {
  from: string;
  workers: string[];
  schedule: boolean;
  vms: VmChange[];
  /** Rows that were too big to travel: to be read from the database. */
  truncated: { type: VmChangeType; id: string }[];
}

const isId = (x: unknown): x is string => typeof x === 'string' && x.length > 0 && x.length <= 200;

/** Parses and checks a payload; undefined when it is not one of ours. Exported for tests. */
export function decodePayload(payload: string): DecodedPayload | undefined {
  let o: unknown;
  try {
    o = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (typeof o !== 'object' || o === null) return undefined;
  const m = o as Record<string, unknown>;
  if (!isId(m['f'])) return undefined;
  const workers = Array.isArray(m['w']) ? m['w'].filter(isId) : [];
  const vms: VmChange[] = [];
  const truncated: { type: VmChangeType; id: string }[] = [];
  if (Array.isArray(m['v'])) {
    for (const item of m['v'] as unknown[]) {
      const c = item as { t?: unknown; vm?: unknown };
      if (typeof c !== 'object' || c === null || typeof c.t !== 'string' || !CHANGE_TYPES.has(c.t)) continue;
      const type = c.t as VmChangeType;
      const ref = c.vm as { id?: unknown; truncated?: unknown } | null;
      if (ref && typeof ref === 'object' && ref.truncated === true && isId(ref.id)) {
        if (type !== 'DELETED') truncated.push({ type, id: ref.id });
        continue;
      }
      const vm = reviveVm(c.vm);
      if (vm) vms.push({ type, vm });
    }
  }
  return { from: m['f'], workers, schedule: m['s'] === 1, vms, truncated };
}

function reviveVm(x: unknown): Vm | undefined {
  if (typeof x !== 'object' || x === null) return undefined;
  const r = { ...(x as Record<string, unknown>) };
  if (!isId(r['id']) || typeof r['name'] !== 'string' || r['truncated'] === true) return undefined;
  for (const f of VM_DATE_FIELDS) {
    const v = r[f];
    if (v === null || v === undefined) continue;
    const d = typeof v === 'string' ? new Date(v) : undefined;
    if (!d || Number.isNaN(d.getTime())) return undefined;
    r[f] = d;
  }
  return r as unknown as Vm;
}
