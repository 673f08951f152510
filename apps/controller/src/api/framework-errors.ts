// Errors fastify (and node's HTTP parser) would otherwise answer in their own shape
// ({"error":"Bad Request","statusCode":400,...}): every one gets Fleet's
// {error: {code, message}} with a stable code, so clients parse one shape.
import http from 'node:http';
import type { Duplex as Socket } from 'node:stream';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';

export const WWW_AUTHENTICATE = 'Bearer realm="fleet"';

/** The Fleet error code for an error fastify raised itself (body parsing, routing, limits). */
export function fleetCodeOf(err: FastifyError): { status: number; code: string; message: string } | null {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, code: 'payload_too_large', message: 'request body is larger than the limit of 1 MiB' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, code: 'unsupported_media_type', message: `unsupported Content-Type${err.message.includes(':') ? err.message.slice(err.message.indexOf(':')) : ''}; send "Content-Type: application/json"` };
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 400, code: 'bad_request', message: 'Content-Length does not match the body' };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, code: 'invalid_json', message: 'the body is empty but Content-Type is application/json; send a JSON document or no Content-Type' };
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { status: 400, code: 'invalid_json', message: `the body is not valid JSON: ${err.message}` };
    case 'FST_ERR_BAD_URL':
      return { status: 400, code: 'bad_url', message: `the URL path is not valid percent-encoding: ${err.message}` };
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return { status: 414, code: 'uri_too_long', message: 'a path segment of the URL is too long (at most 2048 characters)' };
    case 'FST_ERR_ASYNC_CONSTRAINT':
      return { status: 500, code: 'internal', message: 'internal error; see the controller log' };
    default:
      if (err instanceof SyntaxError || (err as { type?: string }).type === 'entity.parse.failed') {
        return { status: 400, code: 'invalid_json', message: `the body is not valid JSON: ${err.message}` };
      }
      return null;
  }
}

/** fastify's `frameworkErrors` option: a bad percent-encoding (GET /v1/vms/%ZZ), an over-long path segment. */
export function frameworkErrors(err: FastifyError, _req: FastifyRequest, reply: FastifyReply): void {
  const mapped = fleetCodeOf(err) ?? { status: err.statusCode ?? 400, code: 'bad_request', message: err.message };
  void reply.code(mapped.status).header('x-content-type-options', 'nosniff').type('application/json; charset=utf-8').send({ error: { code: mapped.code, message: mapped.message } });
}

/** Node's HTTP parser refused the request (headers too large, malformed request line, timeout). */
export function clientErrorHandler(err: NodeJS.ErrnoException & { code?: string }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  let status = 400;
  let code = 'bad_request';
  let message = 'malformed HTTP request';
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') [status, code, message] = [408, 'request_timeout', 'the request was not received in time'];
  else if (err.code === 'HPE_HEADER_OVERFLOW') [status, code, message] = [431, 'headers_too_large', 'the request line and headers are larger than 16 KiB (is the URL too long?)'];
  else if (err.code === 'HPE_URI_TOO_LONG') [status, code, message] = [414, 'uri_too_long', 'the URL is too long'];
  const body = JSON.stringify({ error: { code, message } });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}
