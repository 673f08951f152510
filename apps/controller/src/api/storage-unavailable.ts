// 503 storage_unavailable: what the REST API answers when the database cannot take the
// request right now (disk full, I/O error, locked, read-only, server unreachable), with
// Retry-After, instead of a 500. Documented on every route of the OpenAPI document.
import type { FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import { classifyStorageError, describeStorageFault, type StorageFault } from '@fleet/db';
import { ErrorBody } from './schemas.ts';
import type { StorageHealth } from '../storage/storage-health.ts';

export const STORAGE_UNAVAILABLE = 'storage_unavailable';
const DEFAULT_RETRY_AFTER_S = 5;

/**
 * If `err` is a storage fault: tells the tracker, logs it and answers 503 with Retry-After.
 * Returns undefined for every other error (the caller answers it).
 */
export function replyIfStorageUnavailable(err: unknown, req: FastifyRequest, reply: FastifyReply, health?: StorageHealth): FastifyReply | undefined {
  const fault: StorageFault | null = health ? health.observe(err) : classifyStorageError(err);
  if (!fault) return undefined;
  const retryAfterS = health?.retryAfterS ?? DEFAULT_RETRY_AFTER_S;
  // One line per refused request, without the stack: the tracker logs the fault itself (once, at error).
  req.log.warn({ storage: fault, method: req.method, url: req.url }, 'request refused: storage unavailable');
  return reply
    .code(503)
    .header('retry-after', String(retryAfterS))
    .send({
      error: {
        code: STORAGE_UNAVAILABLE,
        message: `the controller's database cannot take this request right now: ${describeStorageFault(fault)}. Retry after ${retryAfterS} s; GET /v1/health shows when it is back.`,
        details: { storage: fault.code, retryAfterSeconds: retryAfterS },
      },
    });
}

const { $id: _id, ...errorBody } = ErrorBody; // the shared error shape, inlined (one $id per document)
const StorageUnavailableResponse = {
  ...errorBody,
  description:
    '`storage_unavailable`: the database cannot take the request right now (disk full, I/O error, locked, read-only, database server unreachable); the write that failed was not committed. Retry after `Retry-After` seconds; `GET /v1/health` says when the storage is back.',
  headers: { 'Retry-After': { type: 'integer', description: 'seconds to wait before retrying' } },
};

/** onRoute hook: every documented route may answer 503 storage_unavailable. */
export function documentStorageUnavailable(route: RouteOptions): void {
  const schema = route.schema as Record<string, unknown> | undefined;
  if (!schema || schema['hide']) return;
  const response = (schema['response'] ??= {}) as Record<string, unknown>;
  response['503'] ??= StorageUnavailableResponse;
}
