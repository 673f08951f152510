// Idempotency-Key records (issue 12, point 3): a client that retries a POST with the same key
// gets the outcome of its first request instead of doing it twice.
//
// A record is scoped to (principal, route, key) and remembers a hash of the request. Its life:
//   begin()    claims the key (state in_progress, owned by this process) before the handler runs;
//   link()     runs inside the effect's own transaction (VM creation) and stores what it created;
//   finish()   stores the response (2xx-4xx: state completed) or, for a 5xx, drops an unlinked
//              record so that a retry executes again.
//
// The crash window ("VM committed, response not stored") is closed by link(): the VM and the
// record's resourceId commit together or not at all. After a kill -9 a retry finds the record
// in_progress but owned by no running request; then
//   - resourceId set:  the effect committed; the response is rebuilt from the resource (the VM
//                      as it is now: same id and spec, a newer state) and stored;
//   - resourceId null: nothing committed (or the route has no resource: drain/resume/enable/
//                      disable, which are idempotent themselves); the request executes again.
// Threading the transaction through VmService.create is one optional callback, so no "in_progress
// older than a few seconds" guess is needed to tell a crashed request from a slow one: a request
// is in flight exactly when this process runs it (`running`). With several controllers on one
// database (issue 13) the record names its owner (the controller's id): a record in_progress owned
// by another controller that is alive is in flight there (for at most IN_FLIGHT_ELSEWHERE_MAX_MS,
// far beyond any POST handler), one whose owner is gone (or released it) is taken over — by one
// controller only, with a conditional update of the owner.
import { createHash, randomUUID } from 'node:crypto';
import type { DirectSql, FleetDb, IdempotencyKey } from '@fleet/db';
import { isUniqueViolation } from '../errors.ts';

/** How long a key is remembered (from its first request). */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;
/** Printable ASCII, 1..255 characters. */
export const IDEMPOTENCY_KEY_PATTERN = '^[\\x20-\\x7e]{1,255}$';
const KEY_RE = new RegExp(IDEMPOTENCY_KEY_PATTERN);

/** A request in flight on another live controller for longer than this is taken to have been abandoned. */
export const IN_FLIGHT_ELSEWHERE_MAX_MS = 60_000;

export function isValidIdempotencyKey(key: string): boolean {
  return KEY_RE.test(key);
}

export interface IdempotencyScope {
  /** The caller (token name). */
  principal: string;
  /** "POST /v1/vms": method and path, without the query string. */
  route: string;
  key: string;
}

export interface StoredResponse {
  statusCode: number;
  /** The serialized body, exactly as sent. */
  body: string;
}

/** Rebuilds the response of a request whose effect committed but whose response was never stored; null = the resource is gone. */
export type Recoverer = (resourceId: string) => Promise<StoredResponse | null>;

export type BeginResult =
  /** Run the handler, then call finish(); `link` goes into the effect's transaction. */
  | { kind: 'execute'; recordId: string }
  /** Send this stored (or, `recovered`, rebuilt) response again. */
  | { kind: 'replay'; response: StoredResponse; recovered: boolean }
  /** The key was used with a different request. */
  | { kind: 'mismatch' }
  /** The first request with this key is still running. */
  | { kind: 'in_flight' };


/** SHA-256 of method, path and the body as canonical JSON (object keys sorted). */
export function requestHash(method: string, path: string, body: unknown): string {
  return createHash('sha256').update(`${method.toUpperCase()} ${path}\n${canonicalJson(body ?? null)}`).digest('hex');
}

export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

export class IdempotencyService {
  /** This process (its controller id), as recorded in the `owner` of the records it executes. */
  readonly instanceId: string;
  /** Requests this process is executing: scope → request hash. */
  private readonly running = new Map<string, string>();
  private purgeTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: FleetDb,
    private readonly opts: { now?: () => Date; ttlMs?: number; ownerId?: string; isOwnerAlive?: (owner: string) => boolean } = {},
  ) {
    this.instanceId = opts.ownerId ?? randomUUID();
  }

  private now(): Date {
    return this.opts.now?.() ?? new Date();
  }
  private get ttlMs(): number {
    return this.opts.ttlMs ?? IDEMPOTENCY_TTL_MS;
  }

  async begin(scope: IdempotencyScope, hash: string, recover?: Recoverer): Promise<BeginResult> {
    const k = scopeKey(scope);
    // Claimed in memory before the first await: two requests with one key in this process
    // can never both pass (the database's unique index covers the rest).
    const runningHash = this.running.get(k);
    if (runningHash !== undefined) return runningHash === hash ? { kind: 'in_flight' } : { kind: 'mismatch' };
    this.running.set(k, hash);
    try {
      const result = await this.decide(scope, hash, recover);
      if (result.kind !== 'execute') this.running.delete(k);
      return result;
    } catch (err) {
      this.running.delete(k);
      throw err;
    }
  }

  private async decide(scope: IdempotencyScope, hash: string, recover?: Recoverer): Promise<BeginResult> {
    let rec = await this.db.idempotencyKey.findUnique({ where: { principal_route_key: scope } });
    if (rec && this.expired(rec)) {
      await this.db.idempotencyKey.deleteMany({ where: { id: rec.id } });
      rec = null;
    }
    if (!rec) {
      const id = randomUUID();
      try {
        await this.db.idempotencyKey.create({ data: { id, ...scope, requestHash: hash, state: 'in_progress', owner: this.instanceId, createdAt: this.now() } });
      } catch (err) {
        // Claimed by another process between our read and write (not expected with one controller).
        if (isUniqueViolation(err)) return { kind: 'in_flight' };
        throw err;
      }
      return { kind: 'execute', recordId: id };
    }
    if (rec.requestHash !== hash) return { kind: 'mismatch' };
    if (rec.state === 'completed' && rec.statusCode !== null && rec.responseBody !== null) {
      return { kind: 'replay', response: { statusCode: rec.statusCode, body: rec.responseBody }, recovered: false };
    }
    // in_progress on another controller that is alive: it is running there.
    if (rec.owner && rec.owner !== this.instanceId && this.opts.isOwnerAlive?.(rec.owner) && this.now().getTime() - rec.createdAt.getTime() < IN_FLIGHT_ELSEWHERE_MAX_MS) {
      return { kind: 'in_flight' };
    }
    // in_progress, and not running anywhere: the process that ran it died (see the top of the file).
    if (rec.resourceId !== null && recover) {
      const response = (await recover(rec.resourceId)) ?? gone(rec.resourceId);
      await this.store(rec.id, response);
      return { kind: 'replay', response, recovered: true };
    }
    // Nothing committed: execute it again, as this process — unless another controller took it first.
    const claimed = await this.db.idempotencyKey.updateMany({ where: { id: rec.id, owner: rec.owner, state: 'in_progress' }, data: { owner: this.instanceId } });
    if (claimed.count === 0) return { kind: 'in_flight' };
    return { kind: 'execute', recordId: rec.id };
  }

  /**
   * Marks, inside the effect's transaction, what the request created: from then on a retry gets
   * this resource back even if the response is never stored.
   */
  link(sql: DirectSql, recordId: string, resourceId: string): Promise<unknown> {
    // Plain SQL: it runs in the group transaction of the VM's create (issue 20), which runs
    // without Prisma. The row has no @updatedAt: this is all Prisma's updateMany wrote.
    return sql.execute('UPDATE "IdempotencyKey" SET "resourceId" = ? WHERE "id" = ?', [resourceId, recordId]);
  }

  /** The handler's response: stored (below 500) or forgotten (5xx: a retry executes again). */
  async finish(scope: IdempotencyScope, recordId: string, response: StoredResponse): Promise<void> {
    try {
      if (response.statusCode >= 500) {
        // A record with a resource stays: its effect committed, and a retry rebuilds the response.
        await this.db.idempotencyKey.deleteMany({ where: { id: recordId, resourceId: null } });
      } else {
        await this.store(recordId, response);
      }
    } finally {
      this.running.delete(scopeKey(scope));
    }
  }

  /** Ends an execution without storing anything (the request ended without a response). */
  release(scope: IdempotencyScope, recordId?: string): void {
    this.running.delete(scopeKey(scope));
    // No longer running here: another controller may take the record over at once.
    if (recordId) void this.db.idempotencyKey.updateMany({ where: { id: recordId, state: 'in_progress', owner: this.instanceId }, data: { owner: '' } }).catch(() => undefined);
  }

  /** Deletes records older than the TTL; returns how many. */
  async purgeExpired(): Promise<number> {
    const { count } = await this.db.idempotencyKey.deleteMany({ where: { createdAt: { lte: new Date(this.now().getTime() - this.ttlMs) } } });
    return count;
  }

  /** Purges now and then every `intervalMs` (there is no other retention job in the controller). */
  startPurging(intervalMs: number, onError: (err: unknown) => void): void {
    const run = () => void this.purgeExpired().catch(onError);
    run();
    this.purgeTimer = setInterval(run, intervalMs);
    this.purgeTimer.unref();
  }

  stop(): void {
    clearInterval(this.purgeTimer);
  }

  private expired(rec: IdempotencyKey): boolean {
    return rec.createdAt.getTime() <= this.now().getTime() - this.ttlMs;
  }

  private async store(recordId: string, response: StoredResponse): Promise<void> {
    await this.db.idempotencyKey.updateMany({
      where: { id: recordId },
      data: { state: 'completed', statusCode: response.statusCode, responseBody: response.body, completedAt: this.now() },
    });
  }
}

function scopeKey(s: IdempotencyScope): string {
  return `${s.principal}\0${s.route}\0${s.key}`;
}

/** What a retry gets when the resource its first request created has been deleted since. */
function gone(resourceId: string): StoredResponse {
  return {
    statusCode: 404,
    body: JSON.stringify({ error: { code: 'not_found', message: `the first request with this Idempotency-Key created ${resourceId}, which has been deleted since` } }),
  };
}
