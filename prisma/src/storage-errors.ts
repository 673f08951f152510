// Which database errors mean "the storage is unavailable right now" (disk full, I/O
// error, locked past the busy timeout, read-only, cannot open, server unreachable or
// gone, out of resources) rather than "this request is wrong" or "this is a bug".
// Callers answer the former with 503 + Retry-After and retry background work later.
//
// How errors reach us (Prisma 7.10 with driver adapters; each shape below was captured
// from a real failure, see storage-errors.test.ts):
//  - PrismaClientKnownRequestError whose `meta.driverAdapterError` is a DriverAdapterError
//    with `cause = {kind, originalCode?, originalMessage?, code? (PostgreSQL SQLSTATE)}`:
//      P2039 "Database error" (kind sqlite | postgres: SQLITE_FULL, SQLITE_READONLY, 53100, 25006, 57P03),
//      P2010 "Raw query failed" (same, from $queryRaw: 57P01, SQLITE_IOERR_READ),
//      P1008 "Operation has timed out" (kind SocketTimeout: SQLITE_BUSY after the busy timeout, ETIMEDOUT),
//      P1001 "Can't reach database server" (kind DatabaseNotReachable: ECONNREFUSED),
//      P1017 (ConnectionClosed: ECONNRESET), P2037 (TooManyConnections: 53300);
//  - a bare DriverAdapterError (same `cause`) when the COMMIT of an interactive
//    transaction fails (SQLITE_FULL on a full file system);
//  - PrismaClientKnownRequestError with the driver's own code (SQLITE_CANTOPEN when the
//    connection cannot be opened);
//  - pg's plain Error "Connection terminated unexpectedly" (the server died mid-query);
//  - the drivers' own errors (better-sqlite3 SqliteError with `code`, pg DatabaseError
//    with a SQLSTATE `code`, Node socket errors with `errno`/`syscall`).

export type StorageFaultKind =
  | 'disk-full'
  | 'io-error'
  | 'locked'
  | 'read-only'
  | 'cannot-open'
  | 'unreachable'
  | 'connection-lost'
  | 'timeout'
  | 'resources';

export interface StorageFault {
  kind: StorageFaultKind;
  /** The most specific code found: SQLITE_FULL, 53100, ECONNREFUSED, P1001, ... */
  code: string;
  /** The database's own message (one line). */
  message: string;
}

const KIND_TEXT: Record<StorageFaultKind, string> = {
  'disk-full': 'the disk is full',
  'io-error': 'an I/O error',
  locked: 'the database is locked by another connection (busy timeout exceeded)',
  'read-only': 'the database is read-only',
  'cannot-open': 'the database file cannot be opened',
  unreachable: 'the database server is unreachable',
  'connection-lost': 'the connection to the database server was lost',
  timeout: 'a database operation timed out',
  resources: 'the database server is out of resources',
};

/** "the disk is full (SQLITE_FULL: database or disk is full)". */
export function describeStorageFault(f: StorageFault): string {
  return `${KIND_TEXT[f.kind]} (${f.code}${f.message ? `: ${f.message}` : ''})`;
}

function sqliteKind(code: string): StorageFaultKind | undefined {
  const is = (base: string) => code === base || code.startsWith(base + '_');
  if (is('SQLITE_FULL')) return 'disk-full';
  if (is('SQLITE_IOERR')) return 'io-error';
  if (is('SQLITE_BUSY') || is('SQLITE_LOCKED')) return 'locked';
  if (is('SQLITE_READONLY')) return 'read-only';
  if (is('SQLITE_CANTOPEN')) return 'cannot-open';
  return undefined;
}

/** PostgreSQL SQLSTATE classes and codes (https://www.postgresql.org/docs/current/errcodes-appendix.html). */
function sqlstateKind(code: string): StorageFaultKind | undefined {
  if (code === '53100') return 'disk-full'; // disk_full
  if (code.startsWith('53')) return 'resources'; // insufficient_resources, out_of_memory, too_many_connections, ...
  if (code === '57P01' || code === '57P02') return 'connection-lost'; // admin_shutdown, crash_shutdown
  if (code === '57P03') return 'unreachable'; // cannot_connect_now (starting up, shutting down, recovering)
  if (code === '08001' || code === '08004') return 'unreachable'; // cannot establish / server rejected
  if (code.startsWith('08')) return 'connection-lost'; // connection_exception
  if (code === '25006') return 'read-only'; // read_only_sql_transaction (a standby, or default_transaction_read_only)
  if (code === '58030') return 'io-error'; // io_error
  return undefined;
}

function errnoKind(code: string): StorageFaultKind | undefined {
  switch (code) {
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EAI_AGAIN':
      return 'unreachable';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'connection-lost';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'ENOSPC':
    case 'EDQUOT':
      return 'disk-full';
    case 'EIO':
      return 'io-error';
    case 'EROFS':
      return 'read-only';
    default:
      return undefined;
  }
}

/** Prisma's own codes for mapped driver-adapter errors (and the same kinds by name). */
function prismaKind(code: string): StorageFaultKind | undefined {
  switch (code) {
    case 'P1001':
    case 'DatabaseNotReachable':
      return 'unreachable';
    case 'P1002':
    case 'P1008':
    case 'SocketTimeout':
      return 'timeout';
    case 'P1017':
    case 'ConnectionClosed':
      return 'connection-lost';
    case 'P2037':
    case 'TooManyConnections':
      return 'resources';
    default:
      return undefined;
  }
}

/** pg's own messages for a connection that died or never came (plain Errors, no code). */
function messageKind(message: string): StorageFaultKind | undefined {
  if (/^Connection terminated\b/.test(message)) return 'connection-lost';
  if (/^Client (has encountered a connection error|was closed) and is not queryable$/.test(message)) return 'connection-lost';
  if (/^timeout exceeded when trying to connect$/.test(message)) return 'unreachable';
  if (/^Query read timeout$/.test(message)) return 'timeout'; // query_timeout (adapters.ts): a server that stopped answering
  return undefined;
}

interface Fact {
  code?: string;
  message?: string;
  /** 0 = the driver's own code (most specific), 1 = Prisma's mapping, 2 = a bare message. */
  rank: 0 | 1 | 2;
}

function oneLine(s: unknown): string {
  if (typeof s !== 'string') return '';
  const lines = s.split('\n').map((l) => l.trim()).filter(Boolean);
  const last = lines[lines.length - 1] ?? '';
  return last.length > 300 ? last.slice(0, 297) + '...' : last;
}

function collect(err: unknown, out: Fact[], depth: number): void {
  if (depth > 4 || typeof err !== 'object' || err === null) return;
  const e = err as Record<string, unknown>;
  const message = oneLine(e['message']);
  const code = typeof e['code'] === 'string' ? e['code'] : undefined;
  if (code) out.push({ code, message, rank: /^P\d{4}$/.test(code) ? 1 : 0 });
  // A DriverAdapterError's cause is the adapter's mapped error (a plain object).
  const cause = e['cause'];
  if (e['name'] === 'DriverAdapterError' && typeof cause === 'object' && cause !== null) {
    const c = cause as Record<string, unknown>;
    const msg = oneLine(c['originalMessage'] ?? c['message']) || message;
    if (typeof c['originalCode'] === 'string') out.push({ code: c['originalCode'], message: msg, rank: 0 });
    if (c['kind'] === 'postgres' && typeof c['code'] === 'string') out.push({ code: c['code'], message: msg, rank: 0 });
    if (typeof c['kind'] === 'string') out.push({ code: c['kind'], message: msg, rank: 1 });
  } else if (cause !== undefined) {
    collect(cause, out, depth + 1);
  }
  const meta = e['meta'];
  if (typeof meta === 'object' && meta !== null) collect((meta as Record<string, unknown>)['driverAdapterError'], out, depth + 1);
  if (!code && message) out.push({ message, rank: 2 });
}

function kindOf(f: Fact): StorageFaultKind | undefined {
  if (f.code === undefined) return f.message ? messageKind(f.message) : undefined;
  if (f.code.startsWith('SQLITE_')) return sqliteKind(f.code);
  if (/^E[A-Z]+$/.test(f.code)) return errnoKind(f.code); // no SQLSTATE class starts with E
  if (/^[0-9A-Z]{5}$/.test(f.code) && !/^P\d{4}$/.test(f.code)) return sqlstateKind(f.code);
  return prismaKind(f.code);
}

/**
 * The storage fault behind `err`, or null when `err` is anything else (a constraint
 * violation, a missing row, a validation error, a bug).
 */
export function classifyStorageError(err: unknown): StorageFault | null {
  const facts: Fact[] = [];
  collect(err, facts, 0);
  facts.sort((a, b) => a.rank - b.rank);
  for (const f of facts) {
    const kind = kindOf(f);
    if (kind) return { kind, code: f.code ?? 'pg-connection', message: f.message ?? '' };
  }
  return null;
}

export function isStorageUnavailable(err: unknown): boolean {
  return classifyStorageError(err) !== null;
}
