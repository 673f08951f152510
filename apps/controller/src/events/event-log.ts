// The fleet's append-only event log (VM transitions, worker changes, audit
// records). Writes go to the database; listeners (watch streams, metrics) hear
// about each event in-process right after it is stored.
import { EventEmitter } from 'node:events';
import { insertRows, providerOfDb, type FleetDb, type Event, type Provider, type RawExecutor } from '@fleet/db';

export type EventLevel = 'info' | 'warn' | 'error';

export interface NewEvent {
  kind: string;
  message: string;
  level?: EventLevel;
  vmId?: string | null;
  vmName?: string | null;
  workerId?: string | null;
  actor?: string;
  data?: Record<string, unknown>;
}

export interface EventQuery {
  vmId?: string;
  workerId?: string;
  kind?: string;
  actor?: string;
  /** Return events with id < cursor (newest first) or > cursor (oldest first). */
  cursor?: number;
  limit: number;
  order: 'asc' | 'desc';
}

type Tx = RawExecutor;

/** The largest id an event can have (Prisma Int: int4 on PostgreSQL). */
const MAX_EVENT_ID = 2_147_483_647;

export class EventLog {
  private readonly bus = new EventEmitter();
  private readonly provider: Provider;

  constructor(private readonly db: FleetDb) {
    this.bus.setMaxListeners(0);
    this.provider = providerOfDb(db);
  }

  /** Append events, inside the caller's transaction when one is given. */
  async append(events: NewEvent[], tx: Tx = this.db): Promise<void> {
    if (events.length === 0) return;
    const at = new Date();
    // One raw multi-row INSERT: a createMany would run Prisma's query compiler at every call.
    await insertRows(
      tx,
      this.provider,
      'Event',
      events.map((e) => ({
        at,
        kind: e.kind,
        level: e.level ?? 'info',
        message: e.message,
        vmId: e.vmId ?? null,
        vmName: e.vmName ?? null,
        workerId: e.workerId ?? null,
        actor: e.actor ?? 'controller',
        data: JSON.stringify(e.data ?? {}),
      })),
    );
    // Listeners hear about it after the caller's transaction commits (see publish()).
    if (tx === this.db) this.publish(events);
  }

  publish(events: NewEvent[]): void {
    for (const e of events) this.bus.emit('event', e);
  }

  onEvent(listener: (e: NewEvent) => void): () => void {
    this.bus.on('event', listener);
    return () => this.bus.off('event', listener);
  }

  async query(q: EventQuery): Promise<{ events: Event[]; nextCursor: number | null }> {
    const where = {
      ...(q.vmId ? { vmId: q.vmId } : {}),
      ...(q.workerId ? { workerId: q.workerId } : {}),
      ...(q.kind ? { kind: q.kind } : {}),
      ...(q.actor ? { actor: q.actor } : {}),
      // Event ids are 32-bit (Prisma Int): a larger cursor (the API allows any safe integer) is past every event.
      ...(q.cursor !== undefined && !(q.order === 'desc' && q.cursor > MAX_EVENT_ID) ? { id: q.order === 'desc' ? { lt: q.cursor } : { gt: q.cursor } } : {}),
    };
    if (q.cursor !== undefined && q.order === 'asc' && q.cursor >= MAX_EVENT_ID) return { events: [], nextCursor: null };
    const rows = await this.db.event.findMany({ where, orderBy: { id: q.order }, take: q.limit + 1 });
    const page = rows.slice(0, q.limit);
    const last = page[page.length - 1];
    return { events: page, nextCursor: rows.length > q.limit && last ? last.id : null };
  }
}
