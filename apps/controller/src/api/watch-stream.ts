// NDJSON watch streams with a bounded buffer: a client that does not read is
// cut off with a final error line instead of growing the controller's memory.
import { PassThrough } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';

const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

export interface WatchSink {
  send(line: unknown): void;
  onClose(fn: () => void): void;
}

export function startWatch(req: FastifyRequest, reply: FastifyReply): { sink: WatchSink; stream: PassThrough } {
  const stream = new PassThrough();
  const closers: (() => void)[] = [];
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    for (const fn of closers) fn();
    stream.end();
  };
  req.raw.on('close', close);
  const keepalive = setInterval(() => stream.write('\n'), 15_000);
  closers.push(() => clearInterval(keepalive));
  reply.header('content-type', 'application/x-ndjson').header('cache-control', 'no-cache');
  // A blank keepalive line at once: the response headers go out now, so a client watching an
  // empty list is not left waiting for them until the first change.
  stream.write('\n');
  return {
    stream,
    sink: {
      send(line) {
        if (closed) return;
        if (stream.writableLength > MAX_BUFFERED_BYTES) {
          stream.write(JSON.stringify({ type: 'ERROR', error: { code: 'slow_consumer', message: 'watch stream closed: client is not reading fast enough' } }) + '\n');
          close();
          return;
        }
        stream.write(JSON.stringify(line) + '\n');
      },
      onClose(fn) {
        closers.push(fn);
      },
    },
  };
}

/**
 * The OpenAPI response of a route that answers JSON, or with ?watch=true an NDJSON stream
 * (application/x-ndjson: one JSON document per line, blank lines are keepalives).
 */
export function ndjsonOrJson<J extends object, L extends object>(json: J, line: L, description: string) {
  return { description, content: { 'application/json': { schema: json }, 'application/x-ndjson': { schema: line } } };
}
