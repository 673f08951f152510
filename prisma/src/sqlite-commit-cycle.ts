// One COMMIT for every plain-SQL transaction that is ready at the same moment (issue 20).
//
// On SQLite with synchronous=FULL each COMMIT is a WAL fsync on the controller's main thread
// (better-sqlite3 is synchronous): while creating VMs the controller committed a group of creates,
// a scheduling pass, a group of delivery marks, a group of heartbeats, a group of worker reports,
// each on its own, and those fsyncs were ~15 % of its main thread. Here the transactions asked for
// (directTransaction) while the current job and its promise jobs run are one cycle: BEGIN, each
// transaction's work in a SAVEPOINT of its own, one COMMIT. A failing transaction is rolled back
// to its savepoint alone and rejected at once (nothing of it is kept, whatever the others do); the
// others resolve only after the COMMIT returned, so nothing is acknowledged before it is durable,
// and if the COMMIT fails every one of them is rejected. Each transaction is still atomic and sees
// the writes of the transactions before it in the cycle, as it would after their COMMITs.
//
// When a cycle starts: after the I/O callbacks of the current turn of the event loop
// (setImmediate), so that what the HTTP requests, worker messages and heartbeats read in one turn
// asked for shares one COMMIT; the group committers (group-commit.ts) gathered their writes over
// that same turn already, and now take them when the cycle runs. A transaction that must not wait
// for the rest of the turn (the scheduler's placements: issue 20's scheduling latency) asks for
// an urgent one: it starts on process.nextTick, with whatever is queued by then. A cycle holds the
// connection's gate from BEGIN to COMMIT, so Prisma's queries and transactions wait for it as for
// any transaction; cycles take the gate in turn with them (first come, first served).
import type { ConnectionGate } from './sqlite-connection.ts';

/** What a cycle needs of the connection: run one statement without values, the gate, and whether a transaction is open. */
export interface CycleConnection {
  gate: ConnectionGate;
  exec(sql: string): void;
  inTransaction(): boolean;
}

interface Unit {
  /** Runs the transaction's statements; `live` tells them whether they may still run. */
  work: (live: () => boolean) => Promise<unknown>;
  /** How long its work may wait for anything but its own statements before it fails. */
  timeoutMs: number;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** Most transactions in one cycle (bounds how long the gate is held). */
const MAX_UNITS = 256;
const SAVEPOINT = 'fleet_cycle_unit';
/** A transaction's default time limit (Prisma's interactive transactions had one too). */
export const DEFAULT_CYCLE_TIMEOUT_MS = 15_000;

export class CommitCycle {
  private queue: Unit[] = [];
  private tickScheduled = false;
  private immediateScheduled = false;
  private running = false;
  /** Cycles (COMMITs) and transactions so far: how well they were merged (tests, measurements). */
  readonly stats = { cycles: 0, transactions: 0 };

  constructor(private readonly conn: CycleConnection) {}

  /**
   * Runs `work` in a cycle: the next one after this turn's I/O callbacks, or with `urgent` the
   * next one after the current job; resolves with its result after that cycle's COMMIT.
   * Statements are synchronous, so only a `work` that waits for something else (I/O, a timer, a
   * query that needs the connection this cycle holds: a deadlock) can reach `timeoutMs`: it then
   * fails alone with a timeout, its statements from then on are refused, and the cycle goes on.
   */
  run<T>(work: (live: () => boolean) => Promise<T>, urgent = false, timeoutMs = DEFAULT_CYCLE_TIMEOUT_MS): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ work, timeoutMs, resolve: resolve as (v: unknown) => void, reject });
      this.schedule(urgent);
    });
  }

  private schedule(urgent: boolean): void {
    if (urgent) {
      if (this.tickScheduled) return;
      this.tickScheduled = true;
      process.nextTick(() => {
        this.tickScheduled = false;
        void this.cycle();
      });
    } else {
      if (this.immediateScheduled) return;
      this.immediateScheduled = true;
      setImmediate(() => {
        this.immediateScheduled = false;
        void this.cycle();
      });
    }
  }

  private async cycle(): Promise<void> {
    // One cycle at a time; the running one starts the next for what came meanwhile.
    if (this.running || this.queue.length === 0) return;
    this.running = true;
    const release = await this.conn.gate.acquire();
    // Everything queued until the gate was ours (a transaction that was open meanwhile) joins.
    const units = this.queue.splice(0, MAX_UNITS);
    try {
      if (units.length > 0) await this.commit(units);
    } finally {
      release();
      this.running = false;
      // Came while this cycle ran: the next cycle, after the current job (they waited already).
      if (this.queue.length > 0) this.schedule(true);
    }
  }

  private async commit(units: Unit[]): Promise<void> {
    this.stats.cycles += 1;
    this.stats.transactions += units.length;
    try {
      this.conn.exec('BEGIN');
    } catch (err) {
      for (const u of units) u.reject(err);
      return;
    }
    // One transaction alone needs no savepoint: its failure rolls back the whole (its own) transaction.
    const alone = units.length === 1;
    const done: Array<{ unit: Unit; value: unknown }> = [];
    let open = true;
    for (let i = 0; i < units.length; i++) {
      const unit = units[i]!;
      let ended = false;
      const live = () => open && !ended;
      try {
        if (!alone) this.conn.exec(`SAVEPOINT ${SAVEPOINT}`);
        const value = await withTimeout(unit.work(live), unit.timeoutMs);
        if (!alone) this.conn.exec(`RELEASE SAVEPOINT ${SAVEPOINT}`);
        ended = true;
        done.push({ unit, value });
      } catch (err) {
        ended = true;
        if (!alone && this.conn.inTransaction()) {
          try {
            // This transaction alone is undone; the cycle goes on.
            this.conn.exec(`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`);
            this.conn.exec(`RELEASE SAVEPOINT ${SAVEPOINT}`);
            unit.reject(err);
            continue;
          } catch {
            // The connection failed under us: handled below as a lost transaction.
          }
        }
        // The whole transaction is gone (SQLite rolls it back itself on some errors, or this was
        // the cycle's only transaction): nothing of the cycle is kept.
        open = false;
        this.rollback();
        unit.reject(err);
        for (const d of done) d.unit.reject(err);
        // Not run yet: their own cycle, as if they had come later.
        this.queue.unshift(...units.slice(i + 1));
        return;
      }
    }
    try {
      // better-sqlite3 returns from COMMIT (and with synchronous=FULL from its WAL fsync) only
      // once it is durable: nothing is acknowledged before this line.
      this.conn.exec('COMMIT');
    } catch (err) {
      open = false;
      this.rollback();
      for (const d of done) d.unit.reject(err);
      return;
    }
    open = false;
    for (const d of done) d.unit.resolve(d.value);
  }

  private rollback(): void {
    if (!this.conn.inTransaction()) return;
    try {
      this.conn.exec('ROLLBACK');
    } catch {
      // The connection is broken; the caller's error says why.
    }
  }
}

/** `p`, or a rejection after `ms` if it has not settled by then (the timer does not keep the process alive). */
function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`transaction timed out after ${ms} ms waiting for something other than its own statements; rolled back`)), ms);
    timer.unref();
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}
