// The VM-row statements run once per VM on the create-to-running path (create, placement,
// the worker's reports, the desired-state push), in plain SQL (@fleet/db direct-sql.ts):
// through the Prisma client they were most of the controller's CPU per VM (issue 20,
// BENCHMARKS.md control plane). Everything else about VMs stays on the Prisma client.
import { columnList, quotedColumns, rowsOf, sqlText, VM_COLUMNS, type DirectSql, type SqlValue, type Vm } from '@fleet/db';
import { rowsByKey } from './rows-by-key.ts';

const ALL = Object.keys(VM_COLUMNS) as Array<keyof Vm & string>;
const INSERT = `INSERT INTO "Vm" (${columnList(VM_COLUMNS)}) VALUES (${ALL.map(() => '?').join(', ')})`;

/** What an operator's create decides; every other column starts at its schema default. */
export type NewVm = Pick<
  Vm,
  | 'id'
  | 'name'
  | 'state'
  | 'reason'
  | 'image'
  | 'imageDigest'
  | 'os'
  | 'driver'
  | 'cpus'
  | 'memoryMib'
  | 'diskGib'
  | 'username'
  | 'labels'
  | 'selector'
  | 'network'
  | 'networkMode'
  | 'customMac'
  | 'priority'
  | 'restartPolicy'
  | 'disconnectPolicy'
  | 'desiredPower'
  | 'createdBy'
>;

/**
 * The whole row of a new VM: the schema's defaults (prisma/schema.prisma, model Vm) for what the
 * create does not decide. vm-rows.test.ts checks it against the row Prisma's own create stores.
 */
export function newVmRow(fields: NewVm, now: Date): Vm {
  return {
    pullProgress: '',
    restartCount: 0,
    restartAt: null,
    attempt: 0,
    generation: 1,
    observedGeneration: 0,
    workerId: null,
    ip: null,
    mac: null,
    createdAt: now,
    updatedAt: now,
    scheduledAt: null,
    runningAt: null,
    deleteRequestedAt: null,
    ...fields,
  };
}

export async function insertVm(sql: DirectSql, vm: Vm): Promise<void> {
  await sql.execute(INSERT, ALL.map((c) => vm[c]));
}

/** The VMs with these ids that exist (in no particular order). */
export function readVms(sql: DirectSql, ids: readonly string[]): Promise<Vm[]> {
  return rowsByKey(sql, 'Vm', VM_COLUMNS, 'id', ids);
}

/** Columns a guarded update may set (the identity and the creation are never rewritten). */
export type VmChange = Partial<Omit<Vm, 'id' | 'name' | 'createdAt' | 'createdBy'>>;

/**
 * Sets `change` on the VM only if it is still in the state and attempt it was read in (the
 * optimistic check every VM transition uses). Returns whether it was. The caller sets
 * `updatedAt` (the row's version) in `change` when the row changes.
 */
export async function updateVmIf(sql: DirectSql, guard: Pick<Vm, 'id' | 'state' | 'attempt'>, change: VmChange): Promise<boolean> {
  const columns = Object.keys(change) as Array<keyof VmChange & string>;
  if (columns.length === 0) throw new Error('updateVmIf: nothing to change');
  const values: SqlValue[] = [];
  for (const c of columns) {
    const v = change[c];
    if (v === undefined) throw new Error(`updateVmIf: column ${c} has no value (use null)`);
    values.push(v);
  }
  // The text once per set of columns (sql-text.ts): this runs for every VM on the create path.
  const text = sqlText(`vm-update-if:${columns.join(',')}`, () => {
    const set = quotedColumns(VM_COLUMNS, columns)
      .map((c) => `${c} = ?`)
      .join(', ');
    return `UPDATE "Vm" SET ${set} WHERE "id" = ? AND "state" = ? AND "attempt" = ?`;
  });
  values.push(guard.id, guard.state, guard.attempt);
  const changed = await sql.execute(text, values);
  return changed > 0;
}

/** These columns of the worker's VMs in these states, oldest first (a desired-state push reads them at every push). */
export async function vmsOfWorker<K extends keyof Vm & string>(sql: DirectSql, workerId: string, states: readonly string[], columns: readonly K[]): Promise<Array<Pick<Vm, K>>> {
  const text = sqlText(`vms-of-worker:${columns.join(',')}:${states.length}`, () => `SELECT ${columnList(VM_COLUMNS, columns)} FROM "Vm" WHERE "workerId" = ? AND "state" IN (${states.map(() => '?').join(', ')}) ORDER BY "createdAt" ASC, "id" ASC`);
  const rows = await sql.query(text, [workerId, ...states]);
  return rowsOf(VM_COLUMNS, rows, columns);
}
