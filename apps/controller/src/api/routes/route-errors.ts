// Error answers documented in a route's OpenAPI `response` (the shared {error: {code, message}} shape).
import { ErrorBody } from '../schemas.ts';

const { $id: _id, ...errorBody } = ErrorBody; // the shared error shape, inlined (one $id per document)

/** A documented error answer: the shared shape with what it means on this route. */
export function errorResponse(description: string): typeof errorBody & { description: string } {
  return { ...errorBody, description };
}
