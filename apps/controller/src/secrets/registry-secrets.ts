// Registry passwords at rest (issue 15): sealed with the SecretBox like the VM secrets, each bound
// to its row (Registry, host, password), so an envelope copied onto another registry's row does not
// open there. Every reader and writer of Registry.passwordSealed goes through here.
//
// Also the whole-table passes `fleet-controller rotate-key` runs (rotate-key.ts): `rewrapAll`
// moves every envelope to the current KEK in place (compare-and-set per row, so a concurrent
// `fleet registry login` is never overwritten), `envelopesByKek` counts what each key wraps.
import type { FleetDb, Registry } from '@fleet/db';
import { secretContext, type SecretBox } from './secret-box.ts';

const TABLE = 'Registry';
const ctx = (host: string) => secretContext(TABLE, host, 'password');

export class RegistrySecrets {
  constructor(readonly box: SecretBox) {}

  /** The sealed column value for a registry's password. */
  seal(host: string, password: string): Promise<string> {
    return this.box.seal(password, ctx(host));
  }

  /** The registry's password, or null when it has none (anonymous, or only a username). */
  async passwordOf(row: Pick<Registry, 'host' | 'passwordSealed'>): Promise<string | null> {
    if (!row.passwordSealed) return null;
    return this.box.open(row.passwordSealed, ctx(row.host));
  }

  async rewrapAll(db: FleetDb, opts: { batch?: number; onBatch?: (moved: number) => void } = {}): Promise<{ rows: number; moved: number }> {
    const batch = opts.batch ?? 200;
    await this.box.keys.refresh?.(true);
    let moved = 0;
    let rowsSeen = 0;
    let after = '';
    for (;;) {
      const rows = await db.registry.findMany({
        where: { host: { gt: after }, passwordSealed: { not: null } },
        orderBy: { host: 'asc' },
        take: batch,
        select: { host: true, passwordSealed: true },
      });
      if (rows.length === 0) return { rows: rowsSeen, moved };
      rowsSeen += rows.length;
      const current = this.box.keys.current().id;
      for (const r of rows) {
        if (r.passwordSealed === null || this.box.kekIdOf(r.passwordSealed) === current) continue;
        const next = await this.box.rewrap(r.passwordSealed, ctx(r.host));
        const { count } = await db.registry.updateMany({ where: { host: r.host, passwordSealed: r.passwordSealed }, data: { passwordSealed: next } });
        moved += count;
      }
      opts.onBatch?.(moved);
      after = rows[rows.length - 1]!.host;
    }
  }

  async envelopesByKek(db: FleetDb): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    let after = '';
    for (;;) {
      const rows = await db.registry.findMany({ where: { host: { gt: after }, passwordSealed: { not: null } }, orderBy: { host: 'asc' }, take: 1000, select: { host: true, passwordSealed: true } });
      if (rows.length === 0) return out;
      for (const r of rows) {
        if (r.passwordSealed === null) continue;
        const id = this.box.kekIdOf(r.passwordSealed);
        out.set(id, (out.get(id) ?? 0) + 1);
      }
      after = rows[rows.length - 1]!.host;
    }
  }
}

/** Adds the counts of `b` into `a` (envelopes per KEK of several tables). */
export function mergeKekCounts(a: Map<string, number>, b: Map<string, number>): Map<string, number> {
  const out = new Map(a);
  for (const [id, n] of b) out.set(id, (out.get(id) ?? 0) + n);
  return out;
}
