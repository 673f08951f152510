// OpenAPI honesty (issue 16): every documented route lists the error answers it can give,
// each with the shared error schema (components.schemas.Error), derived in one place from
// what the route declares: its role, path parameters, query string, body and idempotency.
// Routes add what only they know (409, 412, 422, 502, ...) in their own `response`; those win.
import { Type } from '@sinclair/typebox';
import type { RouteOptions } from 'fastify';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route creates what its path names when it is missing (no 404 to document). */
    upsert?: boolean;
  }
}

/** The shared error schema, registered with app.addSchema (a component of the OpenAPI document). */
export const ERROR_REF = { $ref: 'Error#' } as const;

const error = (description: string) => ({ description, content: { 'application/json': { schema: ERROR_REF } } });

/** An empty query string: routes without query parameters refuse unknown ones like the others do. */
const NoQuery = Type.Object({}, { additionalProperties: false });

/** onRoute hook: documents the error statuses of the route and closes its query string. */
export function documentErrors(route: RouteOptions): void {
  const schema = route.schema as Record<string, unknown> | undefined;
  if (!schema || schema['hide']) return;
  schema['querystring'] ??= NoQuery;
  const role = (route.config as { role?: string } | undefined)?.role;
  const idempotent = (route.config as { idempotency?: unknown } | undefined)?.idempotency !== undefined;
  // An upsert by path (PUT /v1/registries/{host}) creates what is missing: it has no 404.
  const upsert = (route.config as { upsert?: boolean } | undefined)?.upsert === true;
  const methods = Array.isArray(route.method) ? route.method : [route.method];
  const hasBody = schema['body'] !== undefined || methods.some((m) => m === 'POST' || m === 'PUT' || m === 'PATCH');
  const hasParams = route.url.includes(':');
  const response = (schema['response'] ??= {}) as Record<string, unknown>;
  const add = (status: number, description: string) => {
    response[String(status)] ??= error(description);
  };
  add(400, '`invalid_request`: a parameter, query parameter or body failed validation (the message names it; unknown query parameters are refused); `bad_url`: malformed percent-encoding' + (hasBody ? '; `invalid_json`: the body is not JSON' : ''));
  if (role) {
    add(401, '`unauthorized`: no token, a malformed Authorization header, or an unknown, revoked or expired token (with `WWW-Authenticate: Bearer realm="fleet"`)');
    if (role !== 'any') add(403, `\`forbidden\`: the token lacks the "${role}" role`);
  }
  if (route.url === '/v1/login') {
    // Public, but it checks a password (and is throttled).
    add(401, '`unauthorized`: wrong username or password, or the account is disabled');
    add(429, '`too_many_attempts`: too many failed logins for this username from this address, or from everywhere (Retry-After: seconds)');
  }
  if (hasParams) {
    if (!upsert) add(404, '`not_found`: no such object (the message names it)');
    add(414, '`uri_too_long`: a path segment is longer than 2048 characters');
  }
  if (hasBody) {
    add(413, '`payload_too_large`: the body is larger than 1 MiB');
    add(415, '`unsupported_media_type`: send the body as `Content-Type: application/json`');
  }
  if (idempotent) {
    add(409, '`idempotency_key_in_flight`: the first request with this Idempotency-Key is still running (Retry-After: 1)');
    add(422, '`idempotency_key_reused`: this Idempotency-Key was used with a different request');
  }
}

/** A route-specific error answer (the shared schema with what it means on this route). */
export function errorAnswer(description: string): ReturnType<typeof error> {
  return error(description);
}
