// The REST API: fastify with TypeBox validation on every route, an OpenAPI
// document at /v1/openapi.json, and one error shape: {error: {code, message}}.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import Ajv, { type ErrorObject } from 'ajv';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { ApiContext } from './context.ts';
import { registerAuth } from './auth-hook.ts';
import { registerIdempotency } from './idempotency.ts';
import { FleetError } from '../errors.ts';
import { ErrorBody } from './schemas.ts';
import { documentErrors } from './openapi-errors.ts';
import { LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, MAC_PATTERN, labelKeyProblem, labelValueProblem, macProblem } from '@fleet/api';
import { clientErrorHandler, fleetCodeOf, frameworkErrors, WWW_AUTHENTICATE } from './framework-errors.ts';
import { documentStorageUnavailable, replyIfStorageUnavailable } from './storage-unavailable.ts';
import { vmRoutes } from './routes/vm-routes.ts';
import { workerRoutes } from './routes/worker-routes.ts';
import { eventRoutes } from './routes/event-routes.ts';
import { tokenRoutes } from './routes/token-routes.ts';
import { metaRoutes } from './routes/meta-routes.ts';
import websocket from '@fastify/websocket';
import { MAX_CLIENT_FRAME, selectSubprotocol, sessionRoutes } from './routes/session-routes.ts';
import { accountRoutes } from './routes/accounts-routes.ts';
import { statsRoutes } from './routes/stats-routes.ts';
import { liveRoutes } from './routes/live-routes.ts';
import { dashboardRoutes } from './routes/dashboard-routes.ts';
import { registryRoutes } from './routes/registry-routes.ts';
import { imageRoutes } from './routes/image-routes.ts';
import { FleetTimeSeries } from '../stats/time-series.ts';
import { CONTROLLER_VERSION } from '../version.ts';
import { lazySerializerFactory, lazyValidatorCompiler } from './lazy-compilers.ts';

/** A validation error's message, naming the offending property (Ajv's own text does not for unknown ones). */
function describeValidation(err: FastifyError): string {
  const first = err.validation?.[0];
  const extra = (first?.params as { additionalProperty?: unknown } | undefined)?.additionalProperty;
  if (first && first.keyword === 'additionalProperties' && typeof extra === 'string') {
    const where = err.validationContext === 'querystring' ? 'query parameter' : 'property';
    const at = first.instancePath ? ` in ${first.instancePath.slice(1).replace(/\//g, '.')}` : '';
    return `unknown ${where} "${extra.slice(0, 64)}"${at} (${err.message})`;
  }
  // Labels and selectors: say what the rule is instead of quoting a regular expression.
  const path = `${err.validationContext ?? 'body'}${first?.instancePath ?? ''}`;
  const propertyName = (first as { propertyName?: unknown } | undefined)?.propertyName;
  if (first && typeof propertyName === 'string' && first.params && (first.params as { pattern?: unknown }).pattern === LABEL_KEY_PATTERN) {
    return `${path}: ${labelKeyProblem(propertyName) ?? 'invalid label key'}`;
  }
  if (first?.keyword === 'pattern' && (first.params as { pattern?: unknown }).pattern === LABEL_VALUE_PATTERN) {
    return `${path}: ${labelValueProblem((first as { data?: unknown }).data) ?? 'invalid label value'}`;
  }
  // Custom MACs (issue 18): multicast, broadcast, all-zero, wrong length or separators, in words.
  if (first?.keyword === 'pattern' && (first.params as { pattern?: unknown }).pattern === MAC_PATTERN) {
    return `${path}: ${macProblem((first as { data?: unknown }).data) ?? 'invalid MAC address'}`;
  }
  return err.message;
}

/** A snake_case Fleet code for a 4xx fastify raised that fleetCodeOf does not name. */
function fastifyCode(code: string | undefined): string {
  return code && /^[a-z_]+$/.test(code) ? code : 'bad_request';
}

/** Names of a querystring/params object schema's integer properties. */
function integerProperties(schema: unknown): string[] {
  const props = (schema as { properties?: Record<string, { type?: unknown }> }).properties ?? {};
  return Object.entries(props).filter(([, p]) => p.type === 'integer').map(([k]) => k);
}

export interface ApiTlsOptions {
  /** PEM private key. */
  key: string;
  /** PEM chain: the server certificate, then its CA (so clients can find and pin the CA). */
  cert: string;
}

export async function buildApiServer(ctx: ApiContext, log: Logger, tls?: ApiTlsOptions): Promise<FastifyInstance> {
  // With `https`, fastify types the instance on https.Server; the routes do not care, so the
  // option is spread in untyped and the app is used through the plain (http) instance type.
  const httpsOption = (tls ? { https: { key: tls.key, cert: tls.cert } } : {}) as Record<string, never>;
  const app = Fastify({
    ...httpsOption,
    loggerInstance: log.child({ component: 'api' }) as FastifyBaseLogger,
    // Requests are not logged one by one (sessions and watch streams would flood the log).
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024 * 1024,
    // Bad percent-encoding, over-long path segments and malformed HTTP answer in Fleet's error shape too.
    frameworkErrors,
    clientErrorHandler,
    // Long path segments reach their route and fail its validation (a 400 naming the parameter);
    // only beyond this the router answers 414 uri_too_long.
    routerOptions: { maxParamLength: 2048 },
    // Watch streams never end on their own: close them on shutdown instead of waiting forever.
    forceCloseConnections: true,
    // Each response serializer compiled at its first response (lazy-compilers.ts).
    schemaController: { compilersFactory: { buildSerializer: lazySerializerFactory() } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Query strings and path parameters arrive as text and are coerced ("limit=5");
  // JSON bodies are validated strictly: a label value 1 is an error, not "1".
  const strict = new Ajv({ coerceTypes: false, removeAdditional: false, useDefaults: true, allErrors: false, verbose: true });
  const coercing = new Ajv({ coerceTypes: 'array', removeAdditional: false, useDefaults: true, allErrors: false });
  const compileValidator = ({ schema, httpPart }: { schema: object; httpPart?: string }) => {
    if (httpPart === 'body') return strict.compile(schema);
    const validate = coercing.compile(schema);
    // Ajv coerces any text JavaScript reads as a number ("1e400" → Infinity, "0x10", "1e3"):
    // integers in a query string or path must be plain decimal digits within the safe range.
    const integers = integerProperties(schema);
    if (integers.length === 0) return validate;
    const checked: ((data: unknown) => boolean) & { errors?: ErrorObject[] | null } = (data: unknown): boolean => {
      if (data && typeof data === 'object') {
        for (const key of integers) {
          const v = (data as Record<string, unknown>)[key];
          if (v === undefined || typeof v === 'number') continue;
          const text = Array.isArray(v) ? String(v[0]) : String(v);
          if (!/^-?(0|[1-9][0-9]{0,15})$/.test(text) || !Number.isSafeInteger(Number(text))) {
            checked.errors = [{ instancePath: `/${key}`, schemaPath: '#/properties/' + key, keyword: 'type', params: {}, message: `must be a decimal integer within the safe range, got ${JSON.stringify(text.slice(0, 40))}` }];
            return false;
          }
        }
      }
      const ok = validate(data);
      checked.errors = validate.errors;
      return ok;
    };
    return checked;
  };
  // Each validator compiled at its route's first request (lazy-compilers.ts).
  app.setValidatorCompiler(lazyValidatorCompiler(compileValidator));

  await app.register(swagger, {
    // Shared schemas keep their $id as their component name (components.schemas.Error).
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json['$id'] === 'string' ? json['$id'] : `def-${i}`) },
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Fleet controller API', version: CONTROLLER_VERSION, description: 'Manage VMs and workers. Authenticate with "Authorization: Bearer <token>".' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });

  app.setErrorHandler((err: FastifyError | FleetError, req, reply) => {
    if (err instanceof FleetError) {
      if (err.statusCode === 401) reply.header('www-authenticate', WWW_AUTHENTICATE);
      return reply.code(err.statusCode).send({ error: { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) } });
    }
    if (err.validation) {
      const where = err.validationContext ?? 'request';
      return reply.code(400).send({ error: { code: 'invalid_request', message: `invalid ${where}: ${describeValidation(err)}` } });
    }
    const mapped = fleetCodeOf(err);
    if (mapped && mapped.status < 500) return reply.code(mapped.status).send({ error: { code: mapped.code, message: mapped.message } });
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      if (err.statusCode === 401) reply.header('www-authenticate', WWW_AUTHENTICATE);
      return reply.code(err.statusCode).send({ error: { code: fastifyCode(err.code), message: err.message } });
    }
    const unavailable = replyIfStorageUnavailable(err, req, reply, ctx.storage);
    if (unavailable) return unavailable;
    req.log.error({ err, url: req.url, method: req.method }, 'request failed');
    return reply.code(500).send({ error: { code: 'internal', message: 'internal error; see the controller log' } });
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: { code: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` } }));
  app.addHook('onRoute', documentStorageUnavailable);
  // No response is ever sniffed into something else (a JSON error rendered as HTML, say).
  app.addHook('onSend', async (_req, reply, payload) => {
    if (!reply.hasHeader('x-content-type-options')) reply.header('x-content-type-options', 'nosniff');
    return payload;
  });

  registerAuth(app, ctx.tokens);
  if (ctx.idempotency) registerIdempotency(app, ctx.idempotency);
  // The shared error schema (components.schemas.Error) and, on every documented route, the
  // error answers it can give; routes without query parameters refuse unknown ones.
  app.addSchema(ErrorBody);
  app.addHook('onRoute', documentErrors);
  await app.register(metaRoutes(ctx));
  await app.register(vmRoutes(ctx));
  await app.register(workerRoutes(ctx));
  await app.register(eventRoutes(ctx));
  await app.register(tokenRoutes(ctx));
  if (ctx.images) {
    await app.register(registryRoutes(ctx.images));
    await app.register(imageRoutes(ctx.images));
  }
  // Sessions (exec / ssh / port-forward) over WebSocket; frames over 1 MiB close the socket with 1009.
  if (ctx.sessions) {
    await app.register(websocket, { options: { maxPayload: MAX_CLIENT_FRAME, handleProtocols: selectSubprotocol } });
    await app.register(sessionRoutes(ctx, ctx.sessions));
  }
  // Dashboard: accounts/login, overview + time series for plots, the live stream, the built UI at /.
  const series = new FleetTimeSeries({
    listWorkers: () => ctx.workers.list(),
    countVms: (state) => ctx.vms.count(state),
    startLatency: ctx.metrics.startLatency,
    vmFailures: ctx.metrics.vmFailures,
    schedulingLatency: ctx.metrics.schedulingLatency,
  });
  series.start(log.child({ component: 'stats' }), ctx.storage);
  app.addHook('onClose', async () => series.stop());
  await app.register(accountRoutes(ctx.accounts, ctx.tokens));
  await app.register(statsRoutes(ctx, series));
  await app.register(liveRoutes(ctx));
  await app.register(dashboardRoutes());
  app.get('/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}
