// Typed rows for direct-sql.ts: which columns a model has and what kind each is, derived from
// the Prisma model types (a column added to the schema fails to compile here until it is
// listed, and its kind is forced by its type), and the conversion of a driver's row to the
// model type (SQLite returns dates as text and booleans as 0/1).
import type { Allocation, ApiToken, Vm, VmAccess } from '../generated/client/client.ts';

export type ColumnKind = 'text' | 'int' | 'date' | 'bool';

type KindOf<T> = [T] extends [Date | null] ? 'date' : [T] extends [boolean | null] ? 'bool' : [T] extends [number | null] ? 'int' : 'text';

/** Every column of model M with its kind (exhaustive: checked by the compiler). */
export type ColumnKinds<M> = { readonly [K in keyof M]-?: KindOf<M[K]> };

export const VM_COLUMNS: ColumnKinds<Vm> = {
  id: 'text',
  name: 'text',
  state: 'text',
  reason: 'text',
  image: 'text',
  imageDigest: 'text',
  pullProgress: 'text',
  os: 'text',
  driver: 'text',
  cpus: 'int',
  memoryMib: 'int',
  diskGib: 'int',
  username: 'text',
  labels: 'text',
  selector: 'text',
  network: 'text',
  networkMode: 'text',
  customMac: 'text',
  priority: 'int',
  restartPolicy: 'text',
  disconnectPolicy: 'text',
  restartCount: 'int',
  restartAt: 'date',
  attempt: 'int',
  generation: 'int',
  observedGeneration: 'int',
  desiredPower: 'text',
  workerId: 'text',
  ip: 'text',
  mac: 'text',
  createdBy: 'text',
  createdAt: 'date',
  updatedAt: 'date',
  scheduledAt: 'date',
  runningAt: 'date',
  deleteRequestedAt: 'date',
};

export const ALLOCATION_COLUMNS: ColumnKinds<Allocation> = {
  id: 'text',
  vmId: 'text',
  attempt: 'int',
  workerId: 'text',
  cpus: 'int',
  memoryMib: 'int',
  macos: 'bool',
  networkMode: 'text',
  mac: 'text',
  createdAt: 'date',
  deliveredAt: 'date',
};

export const API_TOKEN_COLUMNS: ColumnKinds<ApiToken> = {
  id: 'text',
  name: 'text',
  secretHash: 'text',
  roles: 'text',
  createdBy: 'text',
  createdAt: 'date',
  expiresAt: 'date',
  lastUsedAt: 'date',
  revokedAt: 'date',
};

export const VM_ACCESS_COLUMNS: ColumnKinds<VmAccess> = {
  vmId: 'text',
  username: 'text',
  publicKey: 'text',
  privateKey: 'text',
  privateKeySealed: 'text',
  password: 'text',
  passwordSealed: 'text',
  hostKey: 'text',
  hostKeyAttempt: 'int',
  hostKeyBootAt: 'date',
  hostKeySeenAt: 'date',
  createdAt: 'date',
};

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A table or column name, double-quoted for SQL (both engines); anything but a plain identifier is refused. */
export function quotedIdentifier(name: string): string {
  if (!IDENTIFIER.test(name)) throw new Error(`not a plain SQL identifier: ${JSON.stringify(name)}`);
  return `"${name}"`;
}

/** The quoted names of these columns (all of `kinds` unless `only`), each checked to be one of the model's. */
export function quotedColumns<M>(kinds: ColumnKinds<M>, only?: ReadonlyArray<keyof M & string>): string[] {
  return (only ?? (Object.keys(kinds) as Array<keyof M & string>)).map((n) => {
    if (!(n in kinds)) throw new Error(`not a column: ${JSON.stringify(n)}`);
    return quotedIdentifier(n);
  });
}

/** `"a", "b", …` for a SELECT or INSERT of these columns (names checked: they are written into SQL). */
export function columnList<M>(kinds: ColumnKinds<M>, only?: ReadonlyArray<keyof M & string>): string {
  return quotedColumns(kinds, only).join(', ');
}

function convert(kind: ColumnKind, v: unknown, column: string): unknown {
  if (v === null || v === undefined) return null;
  switch (kind) {
    case 'date':
      if (v instanceof Date) return v;
      if (typeof v === 'string' || typeof v === 'number') {
        const d = new Date(v);
        if (Number.isNaN(d.getTime())) throw new Error(`column ${column}: not a date: ${JSON.stringify(v)}`);
        return d;
      }
      break;
    case 'bool':
      if (typeof v === 'boolean') return v;
      if (typeof v === 'number' || typeof v === 'bigint') return Number(v) !== 0;
      break;
    case 'int':
      if (typeof v === 'number') return v;
      if (typeof v === 'bigint') return Number(v);
      break;
    case 'text':
      if (typeof v === 'string') return v;
      break;
  }
  throw new Error(`column ${column}: unexpected ${typeof v} for a ${kind} column`);
}

/** Rows of the driver as the model type, for the columns selected (every column of `kinds` unless `only`). */
export function rowsOf<M, K extends keyof M & string = keyof M & string>(
  kinds: ColumnKinds<M>,
  rows: ReadonlyArray<Record<string, unknown>>,
  only?: readonly K[],
): Array<Pick<M, K>> {
  const names = (only ?? (Object.keys(kinds) as K[])) as K[];
  return rows.map((row) => {
    const out = {} as Record<string, unknown>;
    for (const n of names) out[n] = convert((kinds as Record<string, ColumnKind>)[n]!, row[n], n);
    return out as Pick<M, K>;
  });
}
