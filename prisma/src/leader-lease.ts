// The leader lease (issue 13): of all controllers on one database, exactly one runs the singleton
// loops (scheduler, worker liveness, restarts, retention). No consensus of our own: the lease is a
// row in the database, taken and renewed with the database's clock, and carrying a fencing token.
//
// PostgreSQL: each controller runs one statement on a connection of its own, every third of the
// lease (the holder) or every `pollMs` (the others). The statement renews the lease for its holder,
// or takes it over when it expired, or at once when the holder's lease session is gone from
// pg_stat_activity (a holder killed with -9: its socket closes and its backend exits, so failover
// does not wait for the expiry). A takeover adds one to `token`.
//
// The holder counts its lease from when it *sent* the renewal, by its own monotonic clock, and stops
// acting a tenth of the lease before the database would let another controller take it. That is
// not what makes it safe, though: every transaction the singleton loops write in first reads the
// lease row `FOR SHARE` and checks the token (`fence`). A takeover's UPDATE waits for such a
// transaction to finish, and a transaction that starts after the takeover sees the new token and
// rolls back. A deposed leader's writes are refused however late it notices.
//
// SQLite: one controller per database is enforced by the controller lock (controller-lock.ts), so
// that controller is the leader for its whole life and the fence has nothing to check.
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { loadPg } from './pg-driver.ts';
import { providerOf } from './providers.ts';

const LEASE_ID = 'leader';

/** A write was refused because this controller no longer holds the leader lease. */
export class NotLeaderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotLeaderError';
  }
}

export function isNotLeaderError(err: unknown): err is NotLeaderError {
  return err instanceof NotLeaderError || (err instanceof Error && err.name === 'NotLeaderError');
}

/** What `fence` needs of a transaction client: raw queries (Prisma's `$queryRawUnsafe`). */
export interface FenceClient {
  $queryRawUnsafe<T = unknown>(query: string, ...values: unknown[]): Promise<T>;
}

export interface LeaderInfo {
  id: string;
  name: string;
}

export interface LeaderLease {
  /** True while this controller may act as leader. */
  isLeader(): boolean;
  /** The fencing token of this controller's current (or last) term; 0 before its first. */
  token(): number;
  /** The holder as last seen (this controller, another one, or null when unknown/none). */
  leader(): LeaderInfo | null;
  /** Told on every change of `isLeader()`. Returns an unsubscribe function. */
  onChange(listener: (leader: boolean) => void): () => void;
  /**
   * Inside a transaction that writes on the leader's behalf: throws NotLeaderError unless the lease
   * row still carries this term's token. Holds a share lock on the row until the transaction ends,
   * so no takeover can commit in between.
   */
  fence(tx: FenceClient): Promise<void>;
  /** A fenced write was refused: stop acting now (the next renewal tells whether we lead again). */
  deposed(reason: string): void;
  /** Stop renewing; a held lease is given up so another controller takes over at once. */
  stop(): Promise<void>;
}

export interface LeaderLeaseOptions {
  url: string;
  /** This controller's id and name (recorded as the holder). */
  holderId: string;
  holderName?: string;
  /** Lease length (default 3 000 ms). The holder renews every third of it. */
  ttlMs?: number;
  /** How often a non-holder tries to take the lease (default min(500 ms, ttl / 3)). */
  pollMs?: number;
  /** SQLite only: records the (single) holder in the lease row for the API and the dashboard. */
  recordSqliteHolder?: (holder: LeaderInfo) => Promise<void>;
  /** Told about failed lease statements (logging). */
  onError?: (err: unknown) => void;
}

export async function startLeaderLease(opts: LeaderLeaseOptions): Promise<LeaderLease> {
  if (providerOf(opts.url) === 'sqlite') {
    const me = { id: opts.holderId, name: opts.holderName ?? hostname() };
    await opts.recordSqliteHolder?.(me);
    return {
      isLeader: () => true,
      token: () => 1,
      leader: () => me,
      onChange: () => () => undefined,
      fence: async () => undefined,
      deposed: () => undefined,
      stop: async () => undefined,
    };
  }
  const lease = new PostgresLeaderLease(opts);
  await lease.start();
  return lease;
}

// Renew ours, or take an expired one, or one whose holder's session is gone. $3 = lease ms,
// $4 = our current token (0 = none). Returns the row only when we hold the lease afterwards.
const TAKE_OR_RENEW = `
INSERT INTO "ControllerLease" (id, "holderId", "holderName", token, "expiresAt", "backendPid", "acquiredAt")
VALUES ('${LEASE_ID}', $1, $2, 1, now() + make_interval(secs => $3::double precision / 1000), pg_backend_pid(), now())
ON CONFLICT (id) DO UPDATE SET
  token = CASE WHEN "ControllerLease"."holderId" = $1 AND "ControllerLease".token = $4 THEN "ControllerLease".token ELSE "ControllerLease".token + 1 END,
  "acquiredAt" = CASE WHEN "ControllerLease"."holderId" = $1 AND "ControllerLease".token = $4 THEN "ControllerLease"."acquiredAt" ELSE now() END,
  "holderId" = $1,
  "holderName" = $2,
  "expiresAt" = EXCLUDED."expiresAt",
  "backendPid" = pg_backend_pid()
WHERE ("ControllerLease"."holderId" = $1 AND "ControllerLease".token = $4)
   OR "ControllerLease"."expiresAt" < now()
   OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = "ControllerLease"."backendPid")
RETURNING token`;

const READ_HOLDER = `SELECT "holderId", "holderName", token FROM "ControllerLease" WHERE id = '${LEASE_ID}'`;
const RELEASE = `UPDATE "ControllerLease" SET "expiresAt" = now() - interval '1 second' WHERE id = '${LEASE_ID}' AND "holderId" = $1 AND token = $2`;
const FENCE = `SELECT token FROM "ControllerLease" WHERE id = '${LEASE_ID}' FOR SHARE`;

class PostgresLeaderLease implements LeaderLease {
  private client: pg.Client | undefined;
  private connecting: Promise<pg.Client> | undefined;
  private readonly ttlMs: number;
  private readonly pollMs: number;
  private readonly name: string;
  private leading = false;
  private term = 0;
  /** Monotonic time until which we may act (from the send time of the last successful renewal). */
  private validUntil = 0;
  private holder: LeaderInfo | null = null;
  private readonly listeners = new Set<(leader: boolean) => void>();
  private timer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private ticking = false;
  /** The tick under way (stop() waits for it: one statement at a time on the connection). */
  private inflight: Promise<void> = Promise.resolve();

  constructor(private readonly opts: LeaderLeaseOptions) {
    this.ttlMs = opts.ttlMs ?? 3_000;
    this.pollMs = opts.pollMs ?? Math.min(500, Math.floor(this.ttlMs / 3));
    this.name = opts.holderName ?? hostname();
  }

  async start(): Promise<void> {
    await this.tick();
  }

  isLeader(): boolean {
    return this.leading && performance.now() < this.validUntil;
  }

  token(): number {
    return this.term;
  }

  leader(): LeaderInfo | null {
    return this.holder;
  }

  onChange(listener: (leader: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async fence(tx: FenceClient): Promise<void> {
    if (!this.isLeader()) throw new NotLeaderError(`controller ${this.name} is not the leader`);
    const rows = await tx.$queryRawUnsafe<{ token: number }[]>(FENCE);
    const current = rows[0]?.token;
    if (current !== this.term) {
      throw new NotLeaderError(`controller ${this.name} lost the leader lease (token ${this.term}, the lease is at ${String(current)})`);
    }
  }

  deposed(_reason: string): void {
    this.setLeading(false);
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.expiryTimer);
    const wasLeading = this.leading;
    this.setLeading(false);
    await this.inflight;
    const c = this.client;
    this.client = undefined;
    if (!c) return;
    if (wasLeading) await c.query(RELEASE, [this.opts.holderId, this.term]).catch(() => undefined);
    await c.end().catch(() => undefined);
  }

  private setLeading(leading: boolean): void {
    if (this.leading === leading) return;
    this.leading = leading;
    if (leading) this.holder = { id: this.opts.holderId, name: this.name };
    for (const l of this.listeners) {
      try {
        l(leading);
      } catch (err) {
        this.opts.onError?.(err);
      }
    }
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  private async connection(): Promise<pg.Client> {
    if (this.client) return this.client;
    this.connecting ??= (async () => {
      const c = new (await loadPg()).Client({
        connectionString: this.opts.url,
        application_name: `fleet-controller-lease ${this.name}`,
        // A statement that hangs (the database is cut off) must not outlive the lease it renews.
        query_timeout: Math.max(200, Math.floor(this.ttlMs / 2)),
        connectionTimeoutMillis: Math.max(200, Math.floor(this.ttlMs / 2)),
        keepAlive: true,
        keepAliveInitialDelayMillis: 1_000,
        // expiresAt is a timestamp without time zone, compared with now(): all holders in UTC.
        options: '-c TimeZone=UTC',
      });
      c.on('error', () => undefined); // surfaced by the next query
      c.once('end', () => {
        if (this.client === c) this.client = undefined;
      });
      try {
        await c.connect();
      } catch (err) {
        await c.end().catch(() => undefined);
        throw err;
      }
      this.client = c;
      return c;
    })().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private tick(): Promise<void> {
    if (this.stopped || this.ticking) return this.inflight;
    this.inflight = this.tickOnce();
    return this.inflight;
  }

  private async tickOnce(): Promise<void> {
    this.ticking = true;
    const sentAt = performance.now();
    try {
      const c = await this.connection();
      const r = await c.query<{ token: number }>(TAKE_OR_RENEW, [this.opts.holderId, this.name, this.ttlMs, this.term]);
      const row = r.rows[0];
      if (row) {
        const newTerm = row.token !== this.term;
        this.term = row.token;
        // A tenth of the lease in hand for clock rate differences and scheduling delays.
        this.validUntil = sentAt + this.ttlMs * 0.9;
        this.armExpiry();
        if (newTerm && this.leading) this.setLeading(false); // a new term: listeners restart cleanly
        this.setLeading(true);
      } else {
        this.setLeading(false);
        const h = await c.query<{ holderId: string; holderName: string }>(READ_HOLDER);
        const hr = h.rows[0];
        this.holder = hr ? { id: hr.holderId, name: hr.holderName } : null;
      }
    } catch (err) {
      this.opts.onError?.(err);
      const c = this.client;
      // A timed-out statement leaves the connection unusable: start over on a new one.
      if (c) {
        this.client = undefined;
        void c.end().catch(() => undefined);
      }
      if (!this.isLeader()) this.setLeading(false);
    } finally {
      this.ticking = false;
      this.schedule(this.leading ? Math.floor(this.ttlMs / 3) : this.pollMs);
    }
  }

  /** Step down when the lease runs out without a renewal, even if no tick gets to run. */
  private armExpiry(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = setTimeout(() => {
      if (performance.now() >= this.validUntil) this.setLeading(false);
    }, Math.max(0, this.validUntil - performance.now()) + 1);
    this.expiryTimer.unref();
  }
}
