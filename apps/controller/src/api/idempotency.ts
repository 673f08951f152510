// The `Idempotency-Key` request header (issue 12, point 3; like Stripe's and the IETF httpapi
// draft's). A route opts in with `config.idempotency`; the logic lives in IdempotencyService.
//
//   first request with a key      executed; its response (status + body) stored for 24 h
//   retry, same key and request   the stored response again, with `Idempotent-Replayed: true`
//   same key, different request   422 idempotency_key_reused
//   first one still running       409 idempotency_key_in_flight, `Retry-After: 1`
//   5xx                           not stored: a retry executes again
//
// Keys are scoped to the caller (token name) and the route (method + path). Routes that return
// a secret (token and account creation, login) do not opt in: their response would have to be
// stored, and only hashes of secrets are kept. A key sent to them is ignored.
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import type { DirectSql } from '@fleet/db';
import { badRequest, FleetError } from '../errors.ts';
import { ErrorBody } from './schemas.ts';
import {
  isValidIdempotencyKey,
  requestHash,
  type IdempotencyScope,
  type IdempotencyService,
  type Recoverer,
} from '../idempotency/idempotency-service.ts';

export interface IdempotencyRouteConfig {
  /** For routes that create something (and link() it): rebuilds the response from it after a crash. */
  recover?: Recoverer;
}

interface Execution {
  scope: IdempotencyScope;
  recordId: string;
  finished: boolean;
  /** Call inside the effect's transaction with what the request created. */
  link: (sql: DirectSql, resourceId: string) => Promise<unknown>;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    idempotency?: IdempotencyRouteConfig;
  }
  interface FastifyRequest {
    idempotencyExecution: Execution | null;
  }
}

export const IdempotencyKeyHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({
      description:
        'Makes a retry safe: the first request with this key (1..255 printable ASCII characters, e.g. a UUID) is executed and its response kept ' +
        'for 24 h; a retry with the same key and body gets that response again (header Idempotent-Replayed: true). Scoped to the token and the route.',
    }),
  ),
});

/**
 * Documents the header and the 409/422 answers on an opted-in route. The header schema has no
 * pattern on purpose: the preHandler answers a bad key with a clearer 400 than the validator's.
 */
function addToSchema(route: RouteOptions): void {
  const schema = (route.schema ??= {}) as Record<string, unknown>;
  const headers = schema['headers'] as { properties?: Record<string, unknown> } | undefined;
  schema['headers'] = headers?.properties
    ? { ...headers, properties: { ...headers.properties, ...IdempotencyKeyHeaders.properties } }
    : IdempotencyKeyHeaders;
  const response = (schema['response'] ??= {}) as Record<string, unknown>;
  const { $id: _id, ...errorBody } = ErrorBody; // the shared error shape, inlined (one $id per document)
  response['409'] ??= { ...errorBody, description: 'conflict; with Idempotency-Key also `idempotency_key_in_flight` (the first request with this key is still running; Retry-After: 1)' };
  response['422'] ??= { ...errorBody, description: '`idempotency_key_reused`: this Idempotency-Key was used with a different request' };
}

/** Registers the hooks; call before the routes are registered (onRoute sees only later routes). */
export function registerIdempotency(app: FastifyInstance, service: IdempotencyService): void {
  app.decorateRequest('idempotencyExecution', null);
  app.addHook('onRoute', (route) => {
    if (route.config?.idempotency) addToSchema(route);
  });

  app.addHook('preHandler', async (req: FastifyRequest, reply: FastifyReply) => {
    const cfg = req.routeOptions.config.idempotency;
    const key = req.headers['idempotency-key'];
    if (!cfg || key === undefined || !req.principal) return;
    if (typeof key !== 'string' || !isValidIdempotencyKey(key)) {
      throw badRequest(`Idempotency-Key must be 1 to 255 printable ASCII characters (a UUID is a good choice), got ${JSON.stringify(String(key).slice(0, 80))}`);
    }
    const path = req.url.split('?')[0]!;
    const scope: IdempotencyScope = { principal: req.principal.name, route: `${req.method} ${path}`, key };
    const result = await service.begin(scope, requestHash(req.method, path, req.body), cfg.recover);
    switch (result.kind) {
      case 'execute':
        req.idempotencyExecution = { scope, recordId: result.recordId, finished: false, link: (tx, resourceId) => service.link(tx, result.recordId, resourceId) };
        return;
      case 'replay':
        if (result.recovered) req.log.info({ route: scope.route, principal: scope.principal }, 'idempotency: rebuilt the response of a request interrupted after its effect committed');
        return reply
          .code(result.response.statusCode)
          .header('idempotent-replayed', 'true')
          .type('application/json; charset=utf-8')
          .send(result.response.body);
      case 'mismatch':
        throw new FleetError(422, 'idempotency_key_reused', `Idempotency-Key ${JSON.stringify(key)} was already used for a different request to ${scope.route}; use a new key for a new request`);
      case 'in_flight':
        reply.header('retry-after', '1');
        throw new FleetError(409, 'idempotency_key_in_flight', `a request with Idempotency-Key ${JSON.stringify(key)} is still being processed; retry shortly`);
    }
  });

  // Stored before the response goes out: a client that saw it can always get it again.
  app.addHook('onSend', async (req, reply, payload) => {
    const ex = req.idempotencyExecution;
    if (!ex || ex.finished) return payload;
    ex.finished = true;
    if (typeof payload !== 'string') {
      service.release(ex.scope, ex.recordId); // not a JSON body (no such idempotent route today): nothing to replay
      return payload;
    }
    try {
      await service.finish(ex.scope, ex.recordId, { statusCode: reply.statusCode, body: payload });
    } catch (err) {
      // Left in_progress: a retry rebuilds the response (linked) or executes again.
      req.log.error({ err, route: ex.scope.route }, 'idempotency: could not store the response');
    }
    return payload;
  });
  const releaseUnfinished = async (req: FastifyRequest) => {
    const ex = req.idempotencyExecution;
    if (ex && !ex.finished) {
      ex.finished = true;
      service.release(ex.scope, ex.recordId);
    }
  };
  // (Not onRequestAbort: a client that hangs up does not stop the handler, so its key stays in flight.)
  app.addHook('onResponse', releaseUnfinished);
}

/** For a route's service call: links what the request creates to its idempotency record, in the same transaction. */
export function idempotencyLink(req: FastifyRequest): Execution['link'] | undefined {
  return req.idempotencyExecution?.link;
}
