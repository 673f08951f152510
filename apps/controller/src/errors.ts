// Errors that cross the API boundary carry an HTTP status, a stable code and a
// message written for the person who made the request.
export class FleetError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'FleetError';
  }
}

export const notFound = (what: string, name: string) =>
  new FleetError(404, 'not_found', `${what} "${name}" not found`);
export const conflict = (message: string, details?: Record<string, unknown>) =>
  new FleetError(409, 'conflict', message, details);
export const preconditionFailed = (message: string, details?: Record<string, unknown>) =>
  new FleetError(412, 'precondition_failed', message, details);
export const badRequest = (message: string, details?: Record<string, unknown>) =>
  new FleetError(400, 'bad_request', message, details);
export const unauthorized = (message: string) => new FleetError(401, 'unauthorized', message);
export const forbidden = (message: string) => new FleetError(403, 'forbidden', message);

/** True for Prisma's unique-constraint violation (P2002), without importing Prisma's runtime. */
export function isUniqueViolation(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const { code, meta } = err as { code?: unknown; meta?: { driverAdapterError?: { cause?: { kind?: unknown } } } };
  // P2002 from Prisma's own writes; a raw statement's (insert-rows.ts, direct-sql.ts on PostgreSQL)
  // is P2010 with the driver's kind; a direct statement on SQLite throws better-sqlite3's own error.
  return (
    code === 'P2002' ||
    (code === 'P2010' && meta?.driverAdapterError?.cause?.kind === 'UniqueConstraintViolation') ||
    code === 'SQLITE_CONSTRAINT_UNIQUE' ||
    code === 'SQLITE_CONSTRAINT_PRIMARYKEY'
  );
}
