// Account session revocation, against an in-memory stand-in for the token table.
import type { FleetDb } from '@fleet/db';
import { describe, expect, it } from 'vitest';
import type { EventLog } from '../events/event-log.ts';
import type { TokenService } from '../auth/token-service.ts';
import { AccountService } from './account-service.ts';

interface TokenRow {
  name: string;
  createdBy: string;
  revokedAt: Date | null;
}
interface TokenWhere {
  createdBy?: string;
  name?: { startsWith: string };
  revokedAt?: null;
}

describe('AccountService', () => {
  it("disabling an account revokes its own login sessions and not those of an account whose name it prefixes", async () => {
    const tokens: TokenRow[] = [
      { name: 'login-bob-0a1b2c3d', createdBy: 'account:bob', revokedAt: null },
      { name: 'login-bob-x-4e5f6a7b', createdBy: 'account:bob-x', revokedAt: null },
    ];
    const accounts = [{ id: 'a1', username: 'bob', disabledAt: null }];
    const db = {
      account: {
        findUnique: async ({ where }: { where: { username: string } }) => accounts.find((a) => a.username === where.username) ?? null,
        update: async ({ data }: { data: object }) => ({ ...accounts[0], ...data }),
      },
      apiToken: {
        findMany: async ({ where }: { where: TokenWhere }) =>
          tokens.filter((t) => (where.createdBy === undefined || t.createdBy === where.createdBy) && (!where.name || t.name.startsWith(where.name.startsWith)) && (where.revokedAt !== null || t.revokedAt === null)),
      },
    } as unknown as FleetDb;
    const revoked: string[] = [];
    const tokenService = { revokeApiToken: async (name: string) => void revoked.push(name) } as unknown as TokenService;
    const events = { append: async () => undefined } as unknown as EventLog;
    await new AccountService(db, events, tokenService).setDisabled('bob', true, 'token:admin');
    expect(revoked).toEqual(['login-bob-0a1b2c3d']);
  });

  it('a password change ends the account\'s open logins (a stolen login token must not outlive the reset)', async () => {
    const tokens: TokenRow[] = [{ name: 'login-bob-0a1b2c3d', createdBy: 'account:bob', revokedAt: null }];
    const db = {
      account: {
        findUnique: async () => ({ id: 'a1', username: 'bob', disabledAt: null }),
        update: async () => undefined,
      },
      apiToken: { findMany: async ({ where }: { where: TokenWhere }) => tokens.filter((t) => t.createdBy === where.createdBy) },
    } as unknown as FleetDb;
    const revoked: string[] = [];
    const tokenService = { revokeApiToken: async (name: string) => void revoked.push(name) } as unknown as TokenService;
    const events = { append: async () => undefined } as unknown as EventLog;
    await new AccountService(db, events, tokenService).setPassword('bob', 'a new long password', 'account:bob');
    expect(revoked).toEqual(['login-bob-0a1b2c3d']);
  });
});
