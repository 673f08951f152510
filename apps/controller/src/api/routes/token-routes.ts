import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ApiToken, BootstrapToken } from '@fleet/db';
import type { ApiContext } from '../context.ts';
import {
  BootstrapTokenCreate,
  BootstrapTokenCreated,
  BootstrapTokenObject,
  NameParam,
  TokenCreate,
  TokenCreated,
  TokenObject,
} from '../schemas.ts';
import { actorOf } from '../auth-hook.ts';
import { parseRoles } from '../../auth/roles.ts';
import { errorResponse } from './route-errors.ts';

const iso = (d: Date | null) => (d ? d.toISOString() : null);

function toTokenObject(t: ApiToken): TokenObject {
  return { id: t.id, name: t.name, roles: parseRoles(t.roles), createdBy: t.createdBy, createdAt: t.createdAt.toISOString(), expiresAt: iso(t.expiresAt), lastUsedAt: iso(t.lastUsedAt), revokedAt: iso(t.revokedAt) };
}
function toBootstrapObject(t: BootstrapToken): BootstrapTokenObject {
  return { id: t.id, name: t.name, usesLeft: t.usesLeft, createdBy: t.createdBy, createdAt: t.createdAt.toISOString(), expiresAt: iso(t.expiresAt), lastUsedAt: iso(t.lastUsedAt), revokedAt: iso(t.revokedAt) };
}

export function enrollCommand(grpcAddress: string, token: string): string {
  return `fleet-worker enroll --controller ${grpcAddress} --token ${token} && fleet-worker run`;
}

export function tokenRoutes(ctx: ApiContext): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.post('/v1/tokens', {
      config: { role: 'admin' },
      schema: { tags: ['tokens'], summary: 'Create an API token (service account); the secret is returned once', body: TokenCreate, response: { 201: TokenCreated, 409: errorResponse('`conflict`: a token with this name exists') } },
    }, async (req, reply) => {
      const { token, row } = await ctx.tokens.createApiToken(req.body, actorOf(req));
      return reply.code(201).send({ token, info: toTokenObject(row) });
    });
    app.get('/v1/tokens', {
      config: { role: 'admin' },
      schema: { tags: ['tokens'], response: { 200: Type.Object({ tokens: Type.Array(TokenObject) }) } },
    }, async () => ({ tokens: (await ctx.tokens.listApiTokens()).map(toTokenObject) }));
    app.delete('/v1/tokens/:name', {
      config: { role: 'admin' },
      schema: { tags: ['tokens'], summary: 'Revoke an API token', params: NameParam, response: { 204: Type.Null() } },
    }, async (req, reply) => {
      await ctx.tokens.revokeApiToken(req.params.name, actorOf(req));
      return reply.code(204).send(null);
    });

    app.post('/v1/bootstrap-tokens', {
      config: { role: 'admin' },
      schema: { tags: ['workers'], summary: 'Create a bootstrap token for enrolling workers', body: BootstrapTokenCreate, response: { 201: BootstrapTokenCreated, 409: errorResponse('`conflict`: a bootstrap token with this name exists') } },
    }, async (req, reply) => {
      const { token, row } = await ctx.tokens.createBootstrapToken(req.body, actorOf(req));
      return reply.code(201).send({ token, info: toBootstrapObject(row), enrollCommand: enrollCommand(ctx.grpcAdvertiseAddress, token) });
    });
    app.get('/v1/bootstrap-tokens', {
      config: { role: 'admin' },
      schema: { tags: ['workers'], response: { 200: Type.Object({ tokens: Type.Array(BootstrapTokenObject) }) } },
    }, async () => ({ tokens: (await ctx.tokens.listBootstrapTokens()).map(toBootstrapObject) }));
    app.delete('/v1/bootstrap-tokens/:name', {
      config: { role: 'admin' },
      schema: { tags: ['workers'], params: NameParam, response: { 204: Type.Null() } },
    }, async (req, reply) => {
      await ctx.tokens.revokeBootstrapToken(req.params.name, actorOf(req));
      return reply.code(204).send(null);
    });
  };
}
