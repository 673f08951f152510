// Error answers documented in a route's OpenAPI `response`: the shared {error: {code, message}}
// schema (components.schemas.Error) with what it means on this route. The answers every route
// shares (400, 401, 403, 404, 413, 415, ...) are added by documentErrors (../openapi-errors.ts).
// Inlined (not a $ref to components.schemas.Error) so that a route plugin also works on its own
// fastify instance (tests), where the shared schema is not registered.
import { ErrorBody } from '../schemas.ts';

const { $id: _id, ...errorBody } = ErrorBody; // the shared error shape, inlined (one $id per document)

/** A documented error answer: the shared shape with what it means on this route. */
export function errorResponse(description: string) {
  return { description, content: { 'application/json': { schema: errorBody } } };
}

/** VM creates and image changes with a registry image. */
export const registryImageErrors = {
  422: errorResponse('`image_unresolvable` (the registry does not have the image or refused access), `image_unsupported` (not a Fleet or Tart VM image) or `image_mismatch` (its OS or driver differs from the VM\'s); with Idempotency-Key also `idempotency_key_reused`'),
  502: errorResponse('`registry_unreachable`: the image\'s registry could not be reached'),
};
