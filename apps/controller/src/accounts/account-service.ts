// Dashboard accounts: a username and password that log in to a short-lived API
// token carrying the account's roles. Tokens stay the one credential the API
// checks, so revoking a login session is revoking its token.
import { randomBytes } from 'node:crypto';
import type { Account, FleetDb } from '@fleet/db';
import { newId } from '@fleet/pki/basics';
import type { EventLog } from '../events/event-log.ts';
import type { TokenService } from '../auth/token-service.ts';
import { parseRoles, type Role } from '../auth/roles.ts';
import { conflict, isUniqueViolation, notFound } from '../errors.ts';
import { hashPassword, verifyPassword } from './password.ts';

export const SESSION_HOURS = 12;

export class LoginRejected extends Error {}

export class AccountService {
  // A fixed hash to verify against for unknown users, so a wrong username costs
  // the same time as a wrong password (no user enumeration by timing).
  private readonly dummyHash = hashPassword(randomBytes(16).toString('hex'));

  constructor(
    private readonly db: FleetDb,
    private readonly events: EventLog,
    private readonly tokens: TokenService,
  ) {}

  async create(input: { username: string; password: string; roles: Role[] }, actor: string): Promise<Account> {
    try {
      const row = await this.db.account.create({
        data: { id: newId(), username: input.username, passwordHash: await hashPassword(input.password), roles: input.roles.join(','), createdBy: actor },
      });
      await this.events.append([{ kind: 'account.created', message: `account ${input.username} (${input.roles.join(', ')}) created by ${actor}`, actor }]);
      return row;
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`account "${input.username}" already exists`);
      throw err;
    }
  }

  list(): Promise<Account[]> {
    return this.db.account.findMany({ orderBy: { createdAt: 'asc' } });
  }

  async setPassword(username: string, password: string, actor: string): Promise<void> {
    const row = await this.db.account.findUnique({ where: { username } });
    if (!row) throw notFound('account', username);
    await this.db.account.update({ where: { id: row.id }, data: { passwordHash: await hashPassword(password) } });
    // A new password ends the old logins too: a stolen login token must not outlive the reset.
    await this.revokeSessions(username, actor);
    await this.events.append([{ kind: 'account.password-changed', message: `password of account ${username} changed by ${actor}`, actor }]);
  }

  /** Deletes the account and revokes its open login sessions. */
  async delete(username: string, actor: string): Promise<void> {
    const row = await this.db.account.findUnique({ where: { username } });
    if (!row) throw notFound('account', username);
    await this.db.account.delete({ where: { id: row.id } });
    await this.revokeSessions(username, actor);
    await this.events.append([{ kind: 'account.deleted', level: 'warn', message: `account ${username} deleted by ${actor}`, actor }]);
  }

  /** A disabled account cannot log in and its open sessions are revoked; enabling lets it log in again. */
  async setDisabled(username: string, disabled: boolean, actor: string): Promise<Account> {
    const row = await this.db.account.findUnique({ where: { username } });
    if (!row) throw notFound('account', username);
    if (Boolean(row.disabledAt) === disabled) return row;
    const updated = await this.db.account.update({ where: { id: row.id }, data: { disabledAt: disabled ? new Date() : null } });
    if (disabled) await this.revokeSessions(username, actor);
    await this.events.append([{ kind: disabled ? 'account.disabled' : 'account.enabled', level: disabled ? 'warn' : 'info', message: `account ${username} ${disabled ? 'disabled' : 'enabled'} by ${actor}`, actor }]);
    return updated;
  }

  private async revokeSessions(username: string, actor: string): Promise<void> {
    // By creator, not just by name prefix: "login-bob-" is also the prefix of account bob-x's sessions.
    const sessions = await this.db.apiToken.findMany({ where: { createdBy: `account:${username}`, name: { startsWith: `login-${username}-` }, revokedAt: null }, select: { name: true } });
    for (const s of sessions) await this.tokens.revokeApiToken(s.name, actor);
  }

  /** Checks the password and issues a session token; throws LoginRejected with a reason that does not reveal which part was wrong. */
  async login(username: string, password: string): Promise<{ token: string; name: string; roles: Role[]; expiresAt: Date }> {
    const row = await this.db.account.findUnique({ where: { username } });
    const ok = await verifyPassword(password, row?.passwordHash ?? (await this.dummyHash));
    if (!row || !ok) {
      await this.events.append([{ kind: 'account.login-failed', level: 'warn', message: `failed login for "${username.slice(0, 64)}"`, actor: 'anonymous' }]);
      throw new LoginRejected('wrong username or password');
    }
    if (row.disabledAt) throw new LoginRejected(`account "${username}" is disabled`);
    const roles = parseRoles(row.roles);
    const name = `login-${username}-${randomBytes(4).toString('hex')}`;
    const { token, row: tokenRow } = await this.tokens.createApiToken({ name, roles, expiresInHours: SESSION_HOURS }, `account:${username}`);
    await this.db.account.update({ where: { id: row.id }, data: { lastLoginAt: new Date() } });
    return { token, name, roles, expiresAt: tokenRow.expiresAt! };
  }
}
