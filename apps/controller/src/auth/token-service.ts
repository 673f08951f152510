// API tokens (service accounts with roles) and bootstrap tokens (worker
// enrollment). Secrets are shown once at creation; only SHA-256 hashes are stored.
import { API_TOKEN_COLUMNS, directSql, isStorageUnavailable, type FleetDb, type ApiToken, type BootstrapToken } from '@fleet/db';
import {
  encodeApiToken,
  encodeBootstrapToken,
  generateSecret,
  hashSecret,
  newId,
  parseApiToken,
  parseBootstrapToken,
  PkiError,
  constantTimeEqualHex,
} from '@fleet/pki/basics';
import type { EventLog } from '../events/event-log.ts';
import { conflict, isUniqueViolation, notFound } from '../errors.ts';
import { parseRoles, type Role } from './roles.ts';
import { rowsByKey } from '../storage/rows-by-key.ts';

export interface Principal {
  tokenId: string;
  name: string;
  roles: Role[];
}

export class TokenRejected extends Error {}

const HOUR = 3_600_000;

export class TokenService {
  /** lastUsedAt is written at most once a minute per token. */
  private readonly lastUsedWritten = new Map<string, number>();
  /** Told when a lastUsedAt write fails on storage (the storage-health tracker). */
  onStorageError: ((err: unknown) => void) | undefined;

  constructor(
    private readonly db: FleetDb,
    private readonly events: EventLog,
    private readonly caFingerprint: string,
  ) {}

  // ---------------------------------------------------------------- API tokens

  /** `presetToken` lets automation choose the first admin token (FLEET_BOOTSTRAP_ADMIN_TOKEN). */
  async createApiToken(input: { name: string; roles: Role[]; expiresInHours?: number; presetToken?: string }, actor: string): Promise<{ token: string; row: ApiToken }> {
    let id = newId();
    let secret = generateSecret();
    if (input.presetToken) {
      const parts = parseApiToken(input.presetToken);
      if (!parts) throw new TokenRejected('the preset admin token is not shaped like a Fleet API token (fleet_<id>_<secret>)');
      ({ id, secret } = parts);
    }
    try {
      const row = await this.db.apiToken.create({
        data: {
          id,
          name: input.name,
          secretHash: hashSecret(secret),
          roles: input.roles.join(','),
          createdBy: actor,
          expiresAt: input.expiresInHours ? new Date(Date.now() + input.expiresInHours * HOUR) : null,
        },
      });
      await this.events.append([{ kind: 'token.created', message: `API token ${input.name} (${input.roles.join(', ')}) created by ${actor}`, actor }]);
      return { token: encodeApiToken({ id, secret }), row };
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`token "${input.name}" already exists`);
      throw err;
    }
  }

  /** Accepts a token given in full (`fleet_<id>_<secret>`); throws TokenRejected with the reason. */
  async authenticate(token: string): Promise<Principal> {
    const parts = parseApiToken(token);
    if (!parts) throw new TokenRejected('malformed token (expected fleet_<id>_<secret>)');
    // Plain SQL (@fleet/db direct-sql.ts): every API request runs this lookup (issue 20).
    const [row] = await rowsByKey(directSql(this.db), 'ApiToken', API_TOKEN_COLUMNS, 'id', [parts.id]);
    if (!row || !constantTimeEqualHex(row.secretHash, hashSecret(parts.secret))) throw new TokenRejected('unknown token');
    if (row.revokedAt) throw new TokenRejected(`token "${row.name}" was revoked`);
    if (row.expiresAt && row.expiresAt.getTime() <= Date.now()) throw new TokenRejected(`token "${row.name}" expired at ${row.expiresAt.toISOString()}`);
    const last = this.lastUsedWritten.get(row.id) ?? 0;
    if (Date.now() - last > 60_000) {
      try {
        await this.db.apiToken.update({ where: { id: row.id }, data: { lastUsedAt: new Date() } });
        this.lastUsedWritten.set(row.id, Date.now()); // remembered once committed
      } catch (err) {
        // Bookkeeping must not refuse a valid token while the storage cannot take writes
        // (reads keep working on a full disk): try again in 10 s.
        if (!isStorageUnavailable(err)) throw err;
        this.lastUsedWritten.set(row.id, Date.now() - 50_000);
        this.onStorageError?.(err);
      }
    }
    return { tokenId: row.id, name: row.name, roles: parseRoles(row.roles) };
  }

  listApiTokens(): Promise<ApiToken[]> {
    return this.db.apiToken.findMany({ orderBy: { createdAt: 'asc' } });
  }

  async revokeApiToken(name: string, actor: string): Promise<void> {
    const row = await this.db.apiToken.findUnique({ where: { name } });
    if (!row) throw notFound('token', name);
    if (!row.revokedAt) {
      await this.db.apiToken.update({ where: { id: row.id }, data: { revokedAt: new Date() } });
      await this.events.append([{ kind: 'token.revoked', level: 'warn', message: `API token ${name} revoked by ${actor}`, actor }]);
    }
  }

  async hasAnyApiToken(): Promise<boolean> {
    return (await this.db.apiToken.count()) > 0;
  }

  // ---------------------------------------------------------------- bootstrap tokens

  async createBootstrapToken(input: { name?: string; uses?: number; expiresInHours?: number }, actor: string): Promise<{ token: string; row: BootstrapToken }> {
    const id = newId();
    const secret = generateSecret();
    const name = input.name ?? `bootstrap-${id}`;
    try {
      const row = await this.db.bootstrapToken.create({
        data: {
          id,
          name,
          secretHash: hashSecret(secret),
          usesLeft: input.uses ?? null,
          createdBy: actor,
          expiresAt: new Date(Date.now() + (input.expiresInHours ?? 24) * HOUR),
        },
      });
      await this.events.append([{ kind: 'bootstrap-token.created', message: `bootstrap token ${name} created by ${actor}`, actor }]);
      return { token: encodeBootstrapToken({ id, secret, caFingerprint: this.caFingerprint }), row };
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`bootstrap token "${name}" already exists`);
      throw err;
    }
  }

  listBootstrapTokens(): Promise<BootstrapToken[]> {
    return this.db.bootstrapToken.findMany({ orderBy: { createdAt: 'asc' } });
  }

  async revokeBootstrapToken(name: string, actor: string): Promise<void> {
    const row = await this.db.bootstrapToken.findUnique({ where: { name } });
    if (!row) throw notFound('bootstrap token', name);
    if (!row.revokedAt) {
      await this.db.bootstrapToken.update({ where: { id: row.id }, data: { revokedAt: new Date() } });
      await this.events.append([{ kind: 'bootstrap-token.revoked', level: 'warn', message: `bootstrap token ${name} revoked by ${actor}`, actor }]);
    }
  }

  /**
   * Check a bootstrap token and use it up once, atomically (two hosts racing for
   * the last use cannot both enroll). Throws TokenRejected with the reason.
   */
  async consumeBootstrapToken(token: string): Promise<BootstrapToken> {
    const row = await this.checkBootstrapToken(token);
    await this.useBootstrapToken(row);
    return row;
  }

  /** Check a bootstrap token without using it up (enrollment uses it in its own transaction). Throws TokenRejected. */
  async checkBootstrapToken(token: string): Promise<BootstrapToken> {
    let parts;
    try {
      parts = parseBootstrapToken(token);
    } catch (err) {
      throw new TokenRejected(err instanceof PkiError ? err.message : 'malformed bootstrap token');
    }
    if (parts.caFingerprint !== this.caFingerprint) {
      throw new TokenRejected('bootstrap token was issued by a different controller (CA fingerprint differs)');
    }
    const row = await this.db.bootstrapToken.findUnique({ where: { id: parts.id } });
    if (!row || !constantTimeEqualHex(row.secretHash, hashSecret(parts.secret))) throw new TokenRejected('unknown bootstrap token');
    if (row.revokedAt) throw new TokenRejected(`bootstrap token "${row.name}" was revoked`);
    if (row.expiresAt && row.expiresAt.getTime() <= Date.now()) throw new TokenRejected(`bootstrap token "${row.name}" expired at ${row.expiresAt.toISOString()}`);
    if (row.usesLeft !== null && row.usesLeft <= 0) throw new TokenRejected(`bootstrap token "${row.name}" has no enrollments left`);
    return row;
  }

  /**
   * Use up one enrollment of a checked bootstrap token, atomically (two hosts racing for the
   * last use cannot both enroll); inside the caller's transaction when one is given, so that
   * the use counts only if the enrollment commits. Throws TokenRejected when none is left.
   */
  async useBootstrapToken(row: BootstrapToken, tx: Pick<FleetDb, 'bootstrapToken'> = this.db): Promise<void> {
    if (row.usesLeft !== null) {
      const res = await tx.bootstrapToken.updateMany({ where: { id: row.id, usesLeft: { gt: 0 }, revokedAt: null }, data: { usesLeft: { decrement: 1 }, lastUsedAt: new Date() } });
      if (res.count === 0) throw new TokenRejected(`bootstrap token "${row.name}" has no enrollments left`);
    } else {
      await tx.bootstrapToken.update({ where: { id: row.id }, data: { lastUsedAt: new Date() } });
    }
  }
}
