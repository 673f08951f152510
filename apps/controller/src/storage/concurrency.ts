// Concurrent writers (several controllers on PostgreSQL, or interleaved requests in one): VM
// changes read a row, decide, and write it back only if it is still as read (a conditional
// update). A write that matches nothing means someone else changed the row in between: the whole
// operation is decided again from a fresh read. Deadlocks and serialization failures reported by
// the database are retried the same way.
export class ConcurrentChangeError extends Error {
  constructor(what: string) {
    super(`${what} changed concurrently`);
    this.name = 'ConcurrentChangeError';
  }
}

function codesOf(err: unknown, depth = 0): string[] {
  if (depth > 4 || typeof err !== 'object' || err === null) return [];
  const e = err as Record<string, unknown>;
  const out: string[] = [];
  if (typeof e['code'] === 'string') out.push(e['code']);
  if (typeof e['originalCode'] === 'string') out.push(e['originalCode']);
  const meta = e['meta'];
  if (typeof meta === 'object' && meta !== null) out.push(...codesOf((meta as Record<string, unknown>)['driverAdapterError'], depth + 1));
  out.push(...codesOf(e['cause'], depth + 1));
  return out;
}

/** A conflict worth deciding again: ours, Prisma's write conflict, or PostgreSQL's deadlock / serialization failure. */
export function isTransientConflict(err: unknown): boolean {
  if (err instanceof ConcurrentChangeError || (err instanceof Error && err.name === 'ConcurrentChangeError')) return true;
  return codesOf(err).some((c) => c === 'P2034' || c === '40001' || c === '40P01' || c === 'TransactionWriteConflict');
}

/** Runs `fn` again (from its first read) while it fails with a transient conflict, at most `attempts` times. */
export async function retryOnConflict<T>(fn: () => Promise<T>, attempts = 6): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts || !isTransientConflict(err)) throw err;
      // A short, growing, jittered pause so two contenders do not collide again in lockstep.
      await new Promise((r) => setTimeout(r, Math.random() * 10 * i));
    }
  }
}
