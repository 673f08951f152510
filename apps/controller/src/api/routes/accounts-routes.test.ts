// The login route's throttle, against a fake account service (no database).
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { LoginRejected, type AccountService } from '../../accounts/account-service.ts';
import type { TokenService } from '../../auth/token-service.ts';
import { accountRoutes } from './accounts-routes.ts';

describe('POST /v1/login', () => {
  it('refuses guesses beyond the limit even when they arrive all at once', async () => {
    let checked = 0;
    const accounts = {
      // Slow like scrypt, so that every request is in flight before the first answer.
      login: async () => {
        checked++;
        await new Promise((r) => setTimeout(r, 50));
        throw new LoginRejected('wrong username or password');
      },
    } as unknown as AccountService;
    const app = Fastify();
    await app.register(accountRoutes(accounts, {} as TokenService));
    const guesses = await Promise.all(
      Array.from({ length: 20 }, (_, i) => app.inject({ method: 'POST', url: '/v1/login', payload: { username: 'alice', password: `guess-${i}` } })),
    );
    const codes = guesses.map((r) => r.statusCode);
    expect(codes.filter((c) => c === 401)).toHaveLength(5);
    expect(codes.filter((c) => c === 429)).toHaveLength(15);
    expect(checked).toBe(5);
    await app.close();
  });
});
