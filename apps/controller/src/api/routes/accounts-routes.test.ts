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

  it("locks a (client, username) pair, not the user: the same user from another address can still log in", async () => {
    const accounts = {
      login: async (_u: string, password: string) => {
        if (password !== 'right-password') throw new LoginRejected('wrong username or password');
        return { token: 'fleet_x', name: 'login:alice', roles: ['read'], expiresAt: new Date(0) };
      },
    } as unknown as AccountService;
    const app = Fastify();
    await app.register(accountRoutes(accounts, {} as TokenService));
    const attempt = (ip: string, password: string) => app.inject({ method: 'POST', url: '/v1/login', remoteAddress: ip, payload: { username: 'alice', password } });
    for (let i = 0; i < 5; i++) expect((await attempt('10.0.0.66', `guess-${i}`)).statusCode).toBe(401);
    expect((await attempt('10.0.0.66', 'right-password')).statusCode).toBe(429);
    expect((await attempt('10.0.0.7', 'right-password')).statusCode).toBe(200);
    await app.close();
  });

  it('stops a guess spread over many addresses after 50 failures for one username', async () => {
    const accounts = { login: async () => { throw new LoginRejected('wrong username or password'); } } as unknown as AccountService;
    const app = Fastify();
    await app.register(accountRoutes(accounts, {} as TokenService));
    const codes: number[] = [];
    for (let i = 0; i < 60; i++) {
      const r = await app.inject({ method: 'POST', url: '/v1/login', remoteAddress: `10.0.${Math.floor(i / 4)}.${i % 4}`, payload: { username: 'alice', password: `guess-${i}` } });
      codes.push(r.statusCode);
    }
    expect(codes.filter((c) => c === 401)).toHaveLength(50);
    expect(codes.slice(50).every((c) => c === 429)).toBe(true);
    await app.close();
  });
});
