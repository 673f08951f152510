import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Account } from '@fleet/db';
import { AccountCreate, AccountObject, LoginRequest, LoginResponse, Username } from '../schemas.ts';
import { actorOf } from '../auth-hook.ts';
import { parseRoles } from '../../auth/roles.ts';
import { LoginRejected, type AccountService } from '../../accounts/account-service.ts';
import type { TokenService } from '../../auth/token-service.ts';
import { FleetError, unauthorized } from '../../errors.ts';
import { LoginThrottle } from '../../accounts/login-throttle.ts';
import { errorResponse } from './route-errors.ts';

const iso = (d: Date | null) => (d ? d.toISOString() : null);

function toAccountObject(a: Account): AccountObject {
  return { id: a.id, username: a.username, roles: parseRoles(a.roles), createdBy: a.createdBy, createdAt: a.createdAt.toISOString(), lastLoginAt: iso(a.lastLoginAt), disabledAt: iso(a.disabledAt) };
}

const UsernameParam = Type.Object({ username: Username });

export function accountRoutes(accounts: AccountService, tokens: TokenService): FastifyPluginAsyncTypebox {
  return async (app) => {
    // Two limits, so that a stranger cannot lock a user out everywhere: 5 failures per
    // (client address, username) lock that pair for 5 minutes; 50 failures per username
    // from all addresses together stop a distributed guess.
    const perClient = new LoginThrottle(5);
    const perUser = new LoginThrottle(50);
    app.post('/v1/login', {
      schema: { tags: ['accounts'], summary: 'Log in with an account: returns a session token (12 h) with the account\'s roles', security: [], body: LoginRequest, response: { 200: LoginResponse } }, // its 401 / 429: openapi-errors.ts
    }, async (req, reply) => {
      const user = req.body.username;
      const pair = `${req.ip}\0${user}`;
      const wait = Math.max(perClient.retryAfter(pair), perUser.retryAfter(user));
      if (wait > 0) {
        reply.header('retry-after', String(wait));
        throw new FleetError(429, 'too_many_attempts', `too many failed logins for "${user.slice(0, 64)}"; try again in ${wait} s`);
      }
      // Counted as a failure before the password check (a success clears it): otherwise any
      // number of concurrent guesses would all pass the check above while scrypt runs.
      perClient.failed(pair);
      perUser.failed(user);
      try {
        const s = await accounts.login(req.body.username, req.body.password);
        perClient.succeeded(pair);
        perUser.succeeded(user);
        return { token: s.token, name: s.name, roles: s.roles, expiresAt: s.expiresAt.toISOString() };
      } catch (err) {
        if (err instanceof LoginRejected) throw unauthorized(err.message);
        throw err;
      }
    });
    app.post('/v1/logout', {
      config: { role: 'any' },
      schema: { tags: ['accounts'], summary: 'Revoke the token this request was made with', response: { 204: Type.Null() } },
    }, async (req, reply) => {
      await tokens.revokeApiToken(req.principal!.name, actorOf(req));
      return reply.code(204).send(null);
    });

    app.get('/v1/accounts', {
      config: { role: 'admin' },
      schema: { tags: ['accounts'], response: { 200: Type.Object({ accounts: Type.Array(AccountObject) }) } },
    }, async () => ({ accounts: (await accounts.list()).map(toAccountObject) }));
    app.post('/v1/accounts', {
      config: { role: 'admin' },
      schema: { tags: ['accounts'], summary: 'Create a dashboard account (username + password) with roles', body: AccountCreate, response: { 201: AccountObject, 409: errorResponse('`conflict`: an account with this username exists') } },
    }, async (req, reply) => reply.code(201).send(toAccountObject(await accounts.create(req.body, actorOf(req)))));
    app.put('/v1/accounts/:username/password', {
      config: { role: 'admin' },
      schema: { tags: ['accounts'], params: UsernameParam, body: Type.Pick(AccountCreate, ['password'], { additionalProperties: false }), response: { 204: Type.Null() } },
    }, async (req, reply) => {
      await accounts.setPassword(req.params.username, req.body.password, actorOf(req));
      return reply.code(204).send(null);
    });
    for (const [action, disabled] of [['disable', true], ['enable', false]] as const) {
      app.post(`/v1/accounts/:username/${action}`, {
        config: { role: 'admin', idempotency: {} },
        schema: { tags: ['accounts'], summary: disabled ? 'Disable an account (no logins; open sessions revoked)' : 'Enable a disabled account', params: UsernameParam, response: { 200: AccountObject } },
      }, async (req) => toAccountObject(await accounts.setDisabled(req.params.username, disabled, actorOf(req))));
    }
    app.delete('/v1/accounts/:username', {
      config: { role: 'admin' },
      schema: { tags: ['accounts'], summary: 'Delete an account and revoke its login sessions', params: UsernameParam, response: { 204: Type.Null() } },
    }, async (req, reply) => {
      await accounts.delete(req.params.username, actorOf(req));
      return reply.code(204).send(null);
    });
  };
}
