// Which controller runs the singleton loops (issue 13). Wraps the leader lease of @fleet/db and
// starts/stops the loops that only the leader may run — scheduler, worker liveness, restart
// requeue, retention — when leadership comes and goes. On SQLite there is one controller, the
// leader for its whole life.
import type { FenceClient, LeaderLease } from '@fleet/db';
import { isNotLeaderError } from '@fleet/db';
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.ts';

/**
 * Inside a transaction written on the leader's behalf: throws NotLeaderError once deposed. Takes
 * a Prisma transaction or client, or a plain-SQL transaction's `raw` (directTransaction): the
 * fence only needs raw queries.
 */
export type Fence = (tx: FenceClient) => Promise<void>;

/** A loop only the leader runs. `start` on gaining leadership, `stop` on losing it. */
export interface SingletonLoop {
  name: string;
  start(): void | Promise<void>;
  stop(): void;
}

export class Leadership {
  private readonly loops: SingletonLoop[] = [];
  private running = false;
  private transitions: Promise<void> = Promise.resolve();
  private readonly off: () => void;

  constructor(
    readonly lease: LeaderLease,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    const changed = (leader: boolean) => {
      this.metrics.leadershipChanges.inc({ to: leader ? 'leader' : 'follower' });
      this.log.warn({ leader, token: lease.token() }, leader ? 'this controller is now the leader' : 'this controller is no longer the leader');
    };
    this.off = lease.onChange((leader) => {
      changed(leader);
      this.sync();
    });
    // Leader from its first statement on (at start): counted like any later change.
    if (lease.isLeader()) changed(true);
  }

  isLeader = (): boolean => this.lease.isLeader();

  /** The fence of the current term (see LeaderLease.fence). */
  fence: Fence = (tx) => this.lease.fence(tx);

  /** A loop saw its write refused: the lease moved on; stop acting now. */
  observe(err: unknown): boolean {
    if (!isNotLeaderError(err)) return false;
    this.log.warn({ reason: (err as Error).message }, 'a write was refused by the leader fence; stepping down');
    this.lease.deposed((err as Error).message);
    this.sync();
    return true;
  }

  add(loop: SingletonLoop): void {
    this.loops.push(loop);
  }

  /** Starts the loops now if this controller leads (call once everything is wired). */
  begin(): void {
    this.sync();
  }

  private sync(): void {
    this.metrics.controllerLeader.set(this.lease.isLeader() ? 1 : 0);
    // Transitions run one after another, so a quick lose/gain never interleaves starts and stops.
    this.transitions = this.transitions.then(async () => {
      const want = this.lease.isLeader();
      if (want === this.running) return;
      this.running = want;
      for (const l of want ? this.loops : [...this.loops].reverse()) {
        try {
          if (want) await l.start();
          else l.stop();
        } catch (err) {
          this.log.error({ err, loop: l.name }, want ? 'a leader loop failed to start' : 'a leader loop failed to stop');
        }
      }
    });
  }

  async stop(): Promise<void> {
    this.off();
    await this.transitions;
    if (this.running) for (const l of [...this.loops].reverse()) l.stop();
    this.running = false;
    await this.lease.stop();
  }
}
