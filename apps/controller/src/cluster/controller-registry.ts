// Every controller of the fleet, as the database knows them (issue 13): each one refreshes its own
// row every few seconds. A row counts as alive while it keeps changing, judged on this process's
// own clock (controllers' clocks never get compared). Used to route sessions to the controller
// holding a worker's stream, to hand workers every controller's address, and by /v1/controllers.
import type { Controller, FleetDb } from '@fleet/db';
import type { Logger } from 'pino';
import type { ControllerObject } from '../api/schemas.ts';

export interface ControllerSelf {
  id: string;
  name: string;
  apiUrl: string;
  grpcAddress: string;
  version: string;
}

export type ControllerView = ControllerObject;

/** Rows gone quiet for this long are removed by the leader (shown as down until then). */
const FORGET_AFTER_MS = 3600_000;

export class ControllerRegistry {
  private timer: NodeJS.Timeout | undefined;
  /** id → [lastSeenAt as read, when it last changed on our clock] */
  private readonly seen = new Map<string, { lastSeenAt: number; changedAtMs: number }>();
  private rows: Controller[] = [];
  private readonly intervalMs: number;

  constructor(
    private readonly db: FleetDb,
    readonly self: ControllerSelf,
    private readonly opts: { isLeader: () => boolean; connectedWorkers: () => number; log: Logger; intervalMs?: number; onError?: (err: unknown) => void },
  ) {
    this.intervalMs = opts.intervalMs ?? 2_000;
  }

  async start(): Promise<void> {
    const now = new Date();
    // Earlier incarnations of this controller (same name: names are unique in a fleet) are dead now,
    // however recently they wrote: what they held in flight is taken over at once (Idempotency-Key).
    await this.db.controller.deleteMany({ where: { name: this.self.name } });
    await this.db.controller.create({ data: { ...this.self, role: this.role(), startedAt: now, lastSeenAt: now } });
    await this.refresh();
    this.timer = setInterval(() => void this.refresh().catch((err: unknown) => this.failed(err)), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.db.controller.deleteMany({ where: { id: this.self.id } }).catch(() => undefined);
  }

  private failed(err: unknown): void {
    this.opts.onError?.(err);
    this.opts.log.warn({ err }, 'could not refresh the controller registry');
  }

  private role(): 'leader' | 'follower' {
    return this.opts.isLeader() ? 'leader' : 'follower';
  }

  /** Write our row, read everyone's. Exposed for tests. */
  async refresh(): Promise<void> {
    const mine = await this.db.controller.updateMany({ where: { id: this.self.id }, data: { lastSeenAt: new Date(), role: this.role(), connectedWorkers: this.opts.connectedWorkers() } });
    if (mine.count === 0) {
      // Removed by a controller that started with our name: two controllers share one name.
      this.opts.log.error({ name: this.self.name }, 'another controller started with this controller name and replaced its registry row: give each controller its own --controller-name');
      const now = new Date();
      await this.db.controller.create({ data: { ...this.self, role: this.role(), startedAt: now, lastSeenAt: now } });
    }
    const rows = await this.db.controller.findMany({ orderBy: { startedAt: 'asc' } });
    const nowMs = Date.now();
    for (const r of rows) {
      const t = r.lastSeenAt.getTime();
      const s = this.seen.get(r.id);
      // First sight: unknown age, so alive for two more periods at most unless it changes.
      if (!s) this.seen.set(r.id, { lastSeenAt: t, changedAtMs: nowMs - this.intervalMs });
      else if (s.lastSeenAt !== t) this.seen.set(r.id, { lastSeenAt: t, changedAtMs: nowMs });
    }
    for (const id of [...this.seen.keys()]) if (!rows.some((r) => r.id === id)) this.seen.delete(id);
    this.rows = rows;
    if (this.opts.isLeader()) {
      const stale = rows.filter((r) => !this.isAlive(r.id) && nowMs - (this.seen.get(r.id)?.changedAtMs ?? nowMs) > FORGET_AFTER_MS).map((r) => r.id);
      if (stale.length > 0) await this.db.controller.deleteMany({ where: { id: { in: stale } } });
    }
  }

  /** Alive: ourselves, or a row that changed within three refresh periods. */
  isAlive(id: string): boolean {
    if (id === this.self.id) return true;
    const s = this.seen.get(id);
    return !!s && Date.now() - s.changedAtMs <= 3 * this.intervalMs;
  }

  aliveIds(): string[] {
    return this.rows.filter((r) => this.isAlive(r.id)).map((r) => r.id);
  }

  /** A live controller by id (for routing sessions), or undefined. */
  alive(id: string): Controller | undefined {
    return this.isAlive(id) ? this.rows.find((r) => r.id === id) : undefined;
  }

  /** gRPC addresses of live controllers, ours first (for workers). */
  grpcAddresses(): string[] {
    const others = this.rows.filter((r) => r.id !== this.self.id && this.isAlive(r.id)).map((r) => r.grpcAddress);
    return [...new Set([this.self.grpcAddress, ...others])];
  }

  list(leaderId: string | undefined): ControllerView[] {
    return this.rows.map((r) => ({
      id: r.id,
      name: r.name,
      apiUrl: r.apiUrl,
      grpcAddress: r.grpcAddress,
      version: r.version,
      role: r.id === leaderId ? 'leader' : 'follower',
      alive: this.isAlive(r.id),
      connectedWorkers: r.connectedWorkers,
      startedAt: r.startedAt.toISOString(),
      lastSeenAt: r.lastSeenAt.toISOString(),
    }));
  }
}
