// The VmAccess secrets (a VM's SSH private key and optional password) at rest: sealed with the
// SecretBox, each bound to its row and column. Every reader and writer of those columns goes
// through here; nothing else sees an envelope or a plaintext column.
//
// Also the two whole-table passes:
//   - `sealLegacyRows`: rows written by Fleet before issue 14 hold plain text; at every start they
//     are sealed and their plaintext columns emptied (idempotent; safe while other controllers run:
//     each row is changed only if it still holds what was read);
//   - `rewrapAll`: the rotation (`fleet-controller rotate-key`, and every start): every envelope not
//     under the current KEK gets its data key re-wrapped, batch by batch, in place.
import { randomBytes } from 'node:crypto';
import type { FleetDb, VmAccess } from '@fleet/db';
import { SecretBox, isEnvelope, secretContext } from './secret-box.ts';
import { staticKeyProvider } from './key-provider.ts';

const TABLE = 'VmAccess';
type Column = 'privateKey' | 'password';
const ctx = (vmId: string, column: Column) => secretContext(TABLE, vmId, column);

export interface SealedAccessSecrets {
  privateKey: '';
  privateKeySealed: string;
  passwordSealed?: string | null;
}

export class VmSecrets {
  constructor(readonly box: SecretBox) {}

  /** Tests only: a keyring with one random key held in memory (lost with the process). */
  static ephemeral(): VmSecrets {
    return new VmSecrets(new SecretBox(staticKeyProvider([randomBytes(32)], 'ephemeral test key')));
  }

  /** The columns of a new VmAccess row for these secrets (the plaintext column stays empty). */
  async sealNew(vmId: string, privateKey: string, password?: string | null): Promise<SealedAccessSecrets> {
    return {
      privateKey: '',
      privateKeySealed: await this.box.seal(privateKey, ctx(vmId, 'privateKey')),
      ...(password !== undefined ? { passwordSealed: password === null ? null : await this.box.seal(password, ctx(vmId, 'password')) } : {}),
    };
  }

  /** The columns that set (or, with null, remove) a VM's password. */
  async passwordColumns(vmId: string, password: string | null): Promise<{ password: null; passwordSealed: string | null }> {
    return { password: null, passwordSealed: password === null ? null : await this.box.seal(password, ctx(vmId, 'password')) };
  }

  async privateKeyOf(access: Pick<VmAccess, 'vmId' | 'privateKey' | 'privateKeySealed'>): Promise<string> {
    if (access.privateKeySealed) return this.box.open(access.privateKeySealed, ctx(access.vmId, 'privateKey'));
    // A legacy row a controller of an older version wrote after our start-up pass.
    return access.privateKey;
  }

  async passwordOf(access: Pick<VmAccess, 'vmId' | 'password' | 'passwordSealed'>): Promise<string | null> {
    if (access.passwordSealed) return this.box.open(access.passwordSealed, ctx(access.vmId, 'password'));
    return access.password;
  }

  /**
   * Seals every row still holding plain text and empties its plaintext columns. Returns how many
   * rows changed. A row changed concurrently (its plaintext differs from what was read) is left
   * for the next pass.
   */
  async sealLegacyRows(db: FleetDb, batch = 200): Promise<number> {
    let sealed = 0;
    let after = '';
    for (;;) {
      const rows = await db.vmAccess.findMany({
        where: { vmId: { gt: after }, OR: [{ privateKey: { not: '' } }, { password: { not: null } }] },
        orderBy: { vmId: 'asc' },
        take: batch,
        select: { vmId: true, privateKey: true, privateKeySealed: true, password: true, passwordSealed: true },
      });
      if (rows.length === 0) return sealed;
      for (const r of rows) {
        const data: { privateKey?: string; privateKeySealed?: string; password?: null; passwordSealed?: string } = {};
        if (r.privateKey !== '') {
          // A sealed key wins over a stale plaintext one; isEnvelope guards a half-migrated row.
          if (!r.privateKeySealed || !isEnvelope(r.privateKeySealed)) data.privateKeySealed = await this.box.seal(r.privateKey, ctx(r.vmId, 'privateKey'));
          data.privateKey = '';
        }
        if (r.password !== null) {
          // A plaintext password is newer than a sealed one only if an old controller wrote it.
          data.passwordSealed = await this.box.seal(r.password, ctx(r.vmId, 'password'));
          data.password = null;
        }
        const { count } = await db.vmAccess.updateMany({ where: { vmId: r.vmId, privateKey: r.privateKey, password: r.password }, data });
        sealed += count;
      }
      after = rows[rows.length - 1]!.vmId;
    }
  }

  /**
   * Re-wraps every envelope not under the current KEK (the secret bodies are not re-encrypted).
   * Each row is updated only if its envelopes are still those read (compare-and-set), so a
   * concurrent password change is never overwritten. `onBatch` reports progress.
   */
  async rewrapAll(db: FleetDb, opts: { batch?: number; onBatch?: (moved: number) => void } = {}): Promise<{ rows: number; moved: number }> {
    const batch = opts.batch ?? 200;
    await this.box.keys.refresh?.(true);
    let moved = 0;
    let rowsSeen = 0;
    let after = '';
    for (;;) {
      const rows = await db.vmAccess.findMany({
        where: { vmId: { gt: after } },
        orderBy: { vmId: 'asc' },
        take: batch,
        select: { vmId: true, privateKeySealed: true, passwordSealed: true },
      });
      if (rows.length === 0) return { rows: rowsSeen, moved };
      rowsSeen += rows.length;
      const current = this.box.keys.current().id;
      for (const r of rows) {
        const stale = (e: string | null) => e !== null && this.box.kekIdOf(e) !== current;
        if (!stale(r.privateKeySealed) && !stale(r.passwordSealed)) continue;
        const data: { privateKeySealed?: string; passwordSealed?: string } = {};
        if (stale(r.privateKeySealed)) data.privateKeySealed = await this.box.rewrap(r.privateKeySealed!, ctx(r.vmId, 'privateKey'));
        if (stale(r.passwordSealed)) data.passwordSealed = await this.box.rewrap(r.passwordSealed!, ctx(r.vmId, 'password'));
        const { count } = await db.vmAccess.updateMany({ where: { vmId: r.vmId, privateKeySealed: r.privateKeySealed, passwordSealed: r.passwordSealed }, data });
        moved += count;
      }
      opts.onBatch?.(moved);
      after = rows[rows.length - 1]!.vmId;
    }
  }

  /** How many envelopes each KEK id wraps (rotate-key's report: an old key is retired at 0). */
  async envelopesByKek(db: FleetDb): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    let after = '';
    for (;;) {
      const rows = await db.vmAccess.findMany({ where: { vmId: { gt: after } }, orderBy: { vmId: 'asc' }, take: 1000, select: { vmId: true, privateKeySealed: true, passwordSealed: true } });
      if (rows.length === 0) return out;
      for (const r of rows) {
        for (const e of [r.privateKeySealed, r.passwordSealed]) {
          if (e === null) continue;
          const id = this.box.kekIdOf(e);
          out.set(id, (out.get(id) ?? 0) + 1);
        }
      }
      after = rows[rows.length - 1]!.vmId;
    }
  }
}
