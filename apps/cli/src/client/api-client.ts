// A typed client for the controller's REST API (/v1). It uses fetch (with the
// context's pinned CA for https, see controller-trust.ts) with a timeout, maps every failure to a CliError with the exit code
// scripts rely on, and reads `?watch=true` NDJSON streams line by line.
//
// Requests that create or act (`idempotent: true`: VM create, worker drain/resume, account
// enable/disable) carry a fresh `Idempotency-Key` per call and are retried with the same key and
// body on connection failures, timeouts, 502/503/504 and 409 idempotency_key_in_flight, with
// backoff and honouring Retry-After: the controller answers a repeat with the first outcome, so
// a retry never does the thing twice. Nothing else is retried, and no other 4xx ever.
//
// Several controllers (issue 13): the base URL may belong to a group of URLs (a context with several,
// see controller-endpoints.ts). When no connection can be made to one (refused, unreachable, a
// connect timeout; a reset before any answer only where repeating is safe), the same request goes
// to the next at once, and the first that answers is used for the rest of the process. Any HTTP
// response is an answer; a certificate that does not verify is reported, never skipped.
import { randomUUID } from 'node:crypto';
//
// Only types come from the controller package (`import type`): the CLI never
// loads server code at runtime.
import type {
  BootstrapTokenCreate,
  BootstrapTokenCreated,
  BootstrapTokenObject,
  ControllerInfo,
  ControllerObject,
  EventPage,
  SchedulerSettings,
  TokenCreate,
  TokenCreated,
  TokenObject,
  VmCreate,
  VmObject,
  VmUpdate,
  WhoAmI,
  WorkerObject,
  Health,
} from '@fleet/api';
import { ApiError, CliError, ExitCode, InterruptedError, UnreachableError } from '../errors.ts';
import type { FleetImage, ImageOperation, PrefetchResult, RegistryObject, RegistryPut, WorkerImageList } from './image-types.ts';
import { formatDuration } from '../output/durations.ts';
import { CLI_VERSION } from '../version.ts';
import { readNdjson } from './ndjson.ts';
import { endpointsFor, failoverCode, type ControllerEndpoints } from './controller-endpoints.ts';
import { fetchFor, isCertificateError, untrustedControllerError } from './controller-trust.ts';

export type VmState = VmObject['state'];
export type Role = TokenObject['roles'][number];

export interface VmWatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  vm: VmObject;
}

/** `GET /v1/health` (no auth; 503 while the database cannot take writes). */
export type HealthReport = Health;

export interface EventQuery {
  limit?: number | undefined;
  cursor?: number | undefined;
  order?: 'asc' | 'desc' | undefined;
  vm?: string | undefined;
  worker?: string | undefined;
  kind?: string | undefined;
  actor?: string | undefined;
}

export interface ApiClientOptions {
  /** Base URL without /v1, e.g. http://127.0.0.1:8080. */
  url: string;
  token: string | null;
  /** Per request (and until a watch stream's headers arrive). Default 30 s. */
  timeoutMs?: number;
  /** A watch stream with no bytes for this long is treated as lost (the controller sends keepalives every 15 s). Default 45 s. */
  streamIdleMs?: number;
  /** Aborted when the user interrupts. */
  signal?: AbortSignal | undefined;
  /** Retries of idempotent requests (see the top of the file). */
  retry?: Partial<RetryPolicy>;
  /** Told before each retry, and when a controller cannot be reached and the next one is tried (the CLI prints it on stderr). */
  onRetry?: (message: string) => void;
}

export interface RetryPolicy {
  /** Attempts in all, the first included. Default 5. */
  attempts: number;
  /** The first wait; doubled after each attempt (±20 % jitter). Default 500 ms. */
  baseDelayMs: number;
  /** No wait is longer, Retry-After included. Default 10 s. */
  maxDelayMs: number;
}
const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 500, maxDelayMs: 10_000 };

/** Failures after which the request may not have reached the controller, or its answer was lost. */
const RETRYABLE_NETWORK = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT']);
const RETRYABLE_STATUS = new Set([502, 503, 504]);
/** 5xx codes with which the controller reports a service behind it (issue 15: image registries). */
const UPSTREAM_CODES = new Set(['registry_unreachable']);

interface RequestOptions {
  query?: Query;
  body?: unknown;
  headers?: Record<string, string>;
  /** Send a fresh Idempotency-Key and retry safely (only for routes that honour the key). */
  idempotent?: boolean;
  /** Error statuses whose body is the answer (/v1/health's 503 carries the health report). */
  acceptStatus?: number[];
}

/** One failed attempt: the error to report, and whether (and after how long at least) it may be retried. */
class AttemptFailure {
  constructor(
    readonly error: CliError,
    /** Short, for the retry note: "connection refused", "HTTP 503". */
    readonly reason: string,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
    /** No connection could be made (nothing reached the controller): another controller may be tried. */
    readonly failover = false,
  ) {}
}

export interface WatchOptions {
  /** Ends the stream quietly (the generator returns) when aborted: deadlines, grace periods. */
  stop?: AbortSignal;
}

type Query = Record<string, string | number | boolean | undefined>;

const HINT = 'is it running? Check the URL, or run "fleet login URL --token T"';

const NETWORK_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'DNS lookup failed',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection closed',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
  UND_ERR_HEADERS_TIMEOUT: 'no response headers in time',
  UND_ERR_SOCKET: 'connection closed unexpectedly',
  UND_ERR_CLOSED: 'connection closed unexpectedly',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'TLS: self-signed certificate',
  SELF_SIGNED_CERT_IN_CHAIN: 'TLS: self-signed certificate in chain',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'TLS: unable to verify the certificate',
  ERR_TLS_CERT_ALTNAME_INVALID: 'TLS: the certificate does not match the host name',
  CERT_HAS_EXPIRED: 'TLS: the certificate has expired',
  EPROTO: 'protocol error (https:// against a plain HTTP server?)',
};

/** The `code` of a network error, looking through undici's `cause` and AggregateErrors. */
function networkCode(err: unknown, depth = 0): string | undefined {
  if (depth > 4 || typeof err !== 'object' || err === null) return undefined;
  const e = err as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string' && e.code !== 'ERR_INVALID_STATE') return e.code;
  const fromCause = networkCode(e.cause, depth + 1);
  if (fromCause) return fromCause;
  if (Array.isArray(e.errors)) for (const inner of e.errors) {
    const c = networkCode(inner, depth + 1);
    if (c) return c;
  }
  return undefined;
}

function networkReason(err: unknown): string {
  const code = networkCode(err);
  if (code && NETWORK_REASONS[code]) return NETWORK_REASONS[code];
  if (code) return code;
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof Error && cause.message) return cause.message;
  return err instanceof Error ? err.message : String(err);
}

export class ApiClient {
  private readonly endpoints: ControllerEndpoints;
  private readonly token: string | null;
  private readonly timeoutMs: number;
  private readonly streamIdleMs: number;
  private readonly signal: AbortSignal | undefined;
  private readonly retry: RetryPolicy;
  private readonly onRetry: ((message: string) => void) | undefined;

  constructor(opts: ApiClientOptions) {
    this.endpoints = endpointsFor(opts.url.replace(/\/+$/, ''));
    this.token = opts.token;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.streamIdleMs = opts.streamIdleMs ?? 45_000;
    this.signal = opts.signal;
    this.retry = { ...DEFAULT_RETRY, ...opts.retry };
    this.onRetry = opts.onRetry;
  }

  /** The controller URL in use (the first of its context's that answered). */
  get url(): string {
    return this.endpoints.active;
  }

  // ------------------------------------------------------------------ meta

  /** Also while degraded (HTTP 503): the report says why. */
  health(): Promise<HealthReport> {
    return this.json('GET', '/v1/health', { acceptStatus: [503] });
  }
  /** Every controller of the fleet as the one answering sees them (issue 13). */
  listControllers(): Promise<{ items: ControllerObject[] }> {
    return this.json('GET', '/v1/controllers');
  }
  info(): Promise<ControllerInfo> {
    return this.json('GET', '/v1/info');
  }
  whoami(): Promise<WhoAmI> {
    return this.json('GET', '/v1/whoami');
  }
  getScheduler(): Promise<SchedulerSettings> {
    return this.json('GET', '/v1/settings/scheduler');
  }
  setScheduler(settings: SchedulerSettings): Promise<SchedulerSettings> {
    return this.json('PUT', '/v1/settings/scheduler', { body: settings });
  }

  // ------------------------------------------------------------------ workers

  listWorkers(): Promise<{ workers: WorkerObject[] }> {
    return this.json('GET', '/v1/workers');
  }
  getWorker(name: string): Promise<WorkerObject> {
    return this.json('GET', `/v1/workers/${enc(name)}`);
  }
  drainWorker(name: string): Promise<WorkerObject> {
    return this.json('POST', `/v1/workers/${enc(name)}/drain`, { idempotent: true });
  }
  resumeWorker(name: string): Promise<WorkerObject> {
    return this.json('POST', `/v1/workers/${enc(name)}/resume`, { idempotent: true });
  }
  async deleteWorker(name: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.request('DELETE', `/v1/workers/${enc(name)}`, { query: { force: opts.force ? 'true' : undefined } });
  }

  // ------------------------------------------------------------------ VMs

  /** Safe to retry: a lost answer is replayed by the controller, never a second VM or a 409 for our own. */
  createVm(spec: VmCreate): Promise<VmObject> {
    return this.json('POST', '/v1/vms', { body: spec, idempotent: true });
  }
  listVms(filter: { state?: string | undefined; worker?: string | undefined } = {}): Promise<{ vms: VmObject[] }> {
    return this.json('GET', '/v1/vms', { query: { state: filter.state, worker: filter.worker } });
  }
  getVm(name: string): Promise<VmObject> {
    return this.json('GET', `/v1/vms/${enc(name)}`);
  }
  /** With `ifVersion` (a VM's updatedAt), the controller refuses with 412 if the VM changed since. */
  updateVm(name: string, patch: VmUpdate, opts: { ifVersion?: string } = {}): Promise<VmObject> {
    return this.json('PATCH', `/v1/vms/${enc(name)}`, { body: patch, ...(opts.ifVersion ? { headers: { 'if-match': `"${opts.ifVersion}"` } } : {}) });
  }
  /** 202 with the VM (now `deleting`, the worker removes it) or 204 (removed at once: `vm` is null). */
  async deleteVm(name: string): Promise<{ status: 202 | 204; vm: VmObject | null }> {
    const { status, data } = await this.request<VmObject>('DELETE', `/v1/vms/${enc(name)}`);
    return status === 202 && data ? { status: 202, vm: data } : { status: 204, vm: null };
  }
  vmEvents(name: string, q: Omit<EventQuery, 'vm' | 'worker' | 'actor'> = {}): Promise<EventPage> {
    return this.json('GET', `/v1/vms/${enc(name)}/events`, { query: { ...q } });
  }
  events(q: EventQuery = {}): Promise<EventPage> {
    return this.json('GET', '/v1/events', { query: { ...q } });
  }

  /** Streams changes: every existing (matching) VM as ADDED first, then changes. Ends when the controller closes the stream. */
  watchVms(filter: { state?: string | undefined; worker?: string | undefined } = {}, opts: WatchOptions = {}): AsyncGenerator<VmWatchEvent> {
    return this.watch('/v1/vms', { watch: true, state: filter.state, worker: filter.worker }, opts.stop);
  }
  /** Streams one VM: ADDED with its current state, then MODIFIED, and DELETED when it is gone. */
  watchVm(name: string, opts: WatchOptions = {}): AsyncGenerator<VmWatchEvent> {
    return this.watch(`/v1/vms/${enc(name)}`, { watch: true }, opts.stop);
  }

  // ------------------------------------------------------------------ registries and images (issue 15)

  /** Creates or replaces what the controller knows about a registry (credentials are write-only). */
  putRegistry(host: string, body: RegistryPut): Promise<RegistryObject> {
    return this.json('PUT', `/v1/registries/${enc(host)}`, { body });
  }
  listRegistries(): Promise<{ items: RegistryObject[] }> {
    return this.json('GET', '/v1/registries');
  }
  async deleteRegistry(host: string): Promise<void> {
    await this.request('DELETE', `/v1/registries/${enc(host)}`);
  }
  /** Every image in the fleet's worker caches, with the workers holding it. */
  listImages(): Promise<{ items: FleetImage[] }> {
    return this.json('GET', '/v1/images');
  }
  listWorkerImages(worker: string): Promise<WorkerImageList> {
    return this.json('GET', `/v1/workers/${enc(worker)}/images`);
  }
  /** 202: the worker removes the image from its cache (refused with 409 while a VM uses it). */
  deleteWorkerImage(worker: string, digest: string): Promise<ImageOperation> {
    return this.json('DELETE', `/v1/workers/${enc(worker)}/images/${enc(digest)}`);
  }
  /** 202: the reference resolved once, one prefetch per matching worker. Carries an Idempotency-Key. */
  prefetchImage(body: { reference: string; selector?: Record<string, string> }): Promise<PrefetchResult> {
    return this.json('POST', '/v1/images/prefetch', { body, idempotent: true });
  }
  /** 202: the stopped VM's worker pushes its disk as an image. Carries an Idempotency-Key. */
  pushVmImage(vm: string, reference: string): Promise<ImageOperation> {
    return this.json('POST', `/v1/vms/${enc(vm)}/push`, { body: { reference }, idempotent: true });
  }
  getImageOperation(id: string): Promise<ImageOperation> {
    return this.json('GET', `/v1/image-operations/${enc(id)}`);
  }
  listImageOperations(filter: { worker?: string | undefined; state?: string | undefined } = {}): Promise<{ items: ImageOperation[] }> {
    return this.json('GET', '/v1/image-operations', { query: { worker: filter.worker, state: filter.state } });
  }

  // ------------------------------------------------------------------ tokens

  createToken(body: TokenCreate): Promise<TokenCreated> {
    return this.json('POST', '/v1/tokens', { body });
  }
  listTokens(): Promise<{ tokens: TokenObject[] }> {
    return this.json('GET', '/v1/tokens');
  }
  async revokeToken(name: string): Promise<void> {
    await this.request('DELETE', `/v1/tokens/${enc(name)}`);
  }
  createBootstrapToken(body: BootstrapTokenCreate): Promise<BootstrapTokenCreated> {
    return this.json('POST', '/v1/bootstrap-tokens', { body });
  }
  listBootstrapTokens(): Promise<{ tokens: BootstrapTokenObject[] }> {
    return this.json('GET', '/v1/bootstrap-tokens');
  }
  async revokeBootstrapToken(name: string): Promise<void> {
    await this.request('DELETE', `/v1/bootstrap-tokens/${enc(name)}`);
  }

  // ------------------------------------------------------------------ plumbing

  private async json<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const { data } = await this.request<T>(method, path, opts);
    if (data === undefined) throw new CliError(`${method} ${path}: the controller sent an empty response`, ExitCode.ERROR);
    return data;
  }

  private urlFor(base: string, path: string, query?: Query): string {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== '') params.set(k, String(v));
    const qs = params.toString();
    return `${base}${path}${qs ? `?${qs}` : ''}`;
  }

  private headers(hasBody: boolean, accept: string): Record<string, string> {
    return {
      accept,
      'user-agent': `fleet-cli/${CLI_VERSION}`,
      ...(hasBody ? { 'content-type': 'application/json' } : {}),
      ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
    };
  }

  /**
   * Sends a request and reads the whole body, all within the timeout. With `idempotent`, under a
   * fresh Idempotency-Key, retried (same key, same body) while the failure may be transient.
   */
  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<{ status: number; data: T | undefined }> {
    const key = opts.idempotent ? randomUUID() : undefined;
    const headers = { ...opts.headers, ...(key ? { 'idempotency-key': key } : {}) };
    const body = opts.body !== undefined ? JSON.stringify(opts.body) : undefined;
    for (let attempt = 1; ; attempt++) {
      const result = await this.attempt<T>(method, path, opts.query, headers, body, opts.acceptStatus);
      if (!(result instanceof AttemptFailure)) return result;
      if (!key || !result.retryable || attempt >= this.retry.attempts) throw result.error;
      const backoff = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (attempt - 1) * (0.8 + Math.random() * 0.4));
      const delay = Math.round(Math.min(this.retry.maxDelayMs, Math.max(backoff, result.retryAfterMs ?? 0)));
      this.onRetry?.(`${method} ${path}: ${result.reason}; retrying in ${formatDuration(delay)} (attempt ${attempt + 1} of ${this.retry.attempts}, same Idempotency-Key)`);
      await this.sleep(delay);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.signal?.aborted) return reject(new InterruptedError());
      const onAbort = () => {
        clearTimeout(timer);
        reject(new InterruptedError());
      };
      const timer = setTimeout(() => {
        this.signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      this.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * One try: the answer, or the failure with whether a retry could help. A controller that
   * cannot be reached hands the request to the next URL of its group at once.
   */
  private async attempt<T>(method: string, path: string, query: Query | undefined, headers: Record<string, string>, body: string | undefined, acceptStatus: number[] = []): Promise<{ status: number; data: T | undefined } | AttemptFailure> {
    // A reset before the answer may come after the controller acted: only safe requests move on then.
    const repeatable = method === 'GET' || method === 'HEAD' || headers['idempotency-key'] !== undefined;
    const candidates = this.endpoints.candidates();
    const unreachable: string[] = [];
    for (let i = 0; ; i++) {
      const url = candidates[i]!;
      const result = await this.attemptAt<T>(url, method, path, query, headers, body, repeatable, acceptStatus);
      if (!(result instanceof AttemptFailure) || !result.failover) {
        this.endpoints.answered(url);
        return result;
      }
      unreachable.push(`${url}: ${result.reason}`);
      const next = candidates[i + 1];
      if (next === undefined) {
        if (unreachable.length === 1) return result;
        const error = new UnreachableError(`cannot reach any controller of this context (${unreachable.join('; ')}); ${HINT}`, { cause: result.error });
        return new AttemptFailure(error, `no controller reachable`, result.retryable, result.retryAfterMs, true);
      }
      this.onRetry?.(`cannot reach the controller at ${url} (${result.reason}); trying ${next}`);
    }
  }

  private async attemptAt<T>(url: string, method: string, path: string, query: Query | undefined, headers: Record<string, string>, body: string | undefined, repeatable: boolean, acceptStatus: number[] = []): Promise<{ status: number; data: T | undefined } | AttemptFailure> {
    const ac = new AbortController();
    const onUserAbort = () => ac.abort();
    this.signal?.addEventListener('abort', onUserAbort, { once: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, this.timeoutMs);
    try {
      if (this.signal?.aborted) throw new InterruptedError();
      let res: Response | undefined;
      let text: string;
      try {
        res = await fetchFor(url)(this.urlFor(url, path, query), {
          method,
          headers: { ...this.headers(body !== undefined, 'application/json'), ...headers },
          ...(body !== undefined ? { body } : {}),
          signal: ac.signal,
        });
        text = await res.text();
      } catch (err) {
        const error = this.networkError(url, err, timedOut);
        const reason = timedOut ? `no answer within ${formatDuration(this.timeoutMs)}` : networkReason(err);
        // Only when fetch itself failed (no response yet): a body cut off is after the answer.
        const failover = res === undefined && !timedOut && error instanceof UnreachableError && failoverCode(networkCode(err), repeatable);
        return new AttemptFailure(error, reason, error instanceof UnreachableError && (timedOut || RETRYABLE_NETWORK.has(networkCode(err) ?? '')), undefined, failover);
      }
      if (!res.ok && !acceptStatus.includes(res.status)) {
        const error = this.httpError(url, res, text);
        // The controller's own 502 about a service behind it (an image registry it could not
        // reach) is an answer, not a proxy's failure: the controller already tried, so no retry.
        const retryable = (RETRYABLE_STATUS.has(res.status) && !UPSTREAM_CODES.has(error.code)) || (res.status === 409 && error.code === 'idempotency_key_in_flight');
        return new AttemptFailure(error, `HTTP ${res.status} ${error.code}`, retryable, parseRetryAfter(res.headers.get('retry-after')));
      }
      if (res.status === 204 || text === '') return { status: res.status, data: undefined };
      try {
        return { status: res.status, data: JSON.parse(text) as T };
      } catch {
        throw new CliError(`${url} answered ${method} ${path} with something that is not JSON (HTTP ${res.status}); is it a Fleet controller?`, ExitCode.ERROR);
      }
    } finally {
      clearTimeout(timer);
      this.signal?.removeEventListener('abort', onUserAbort);
    }
  }

  private async *watch(path: string, query: Query, stop?: AbortSignal): AsyncGenerator<VmWatchEvent> {
    const ac = new AbortController();
    const onUserAbort = () => ac.abort();
    this.signal?.addEventListener('abort', onUserAbort, { once: true });
    stop?.addEventListener('abort', onUserAbort, { once: true });
    let timedOut = false;
    let stalled = false;
    let timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, this.timeoutMs);
    try {
      if (this.signal?.aborted) throw new InterruptedError();
      if (stop?.aborted) return;
      let res: Response | undefined;
      let url = this.url;
      // The controllers of the group in turn, within the one timeout, until one answers.
      const candidates = this.endpoints.candidates();
      for (let i = 0; res === undefined; i++) {
        url = candidates[i]!;
        try {
          res = await fetchFor(url)(this.urlFor(url, path, query), { headers: this.headers(false, 'application/x-ndjson'), signal: ac.signal });
        } catch (err) {
          if (stop?.aborted && !this.signal?.aborted) return;
          const error = this.networkError(url, err, timedOut);
          const next = candidates[i + 1];
          if (next === undefined || timedOut || !(error instanceof UnreachableError) || !failoverCode(networkCode(err), true)) throw error;
          this.onRetry?.(`cannot reach the controller at ${url} (${networkReason(err)}); trying ${next}`);
        }
      }
      this.endpoints.answered(url);
      clearTimeout(timer);
      if (!res.ok) {
        let text = '';
        try {
          text = await res.text();
        } catch {
          // the status says enough
        }
        throw this.httpError(url, res, text);
      }
      if (!res.body) return;
      const reader = res.body.getReader();
      const idleMs = this.streamIdleMs;
      async function* chunks(): AsyncGenerator<Uint8Array> {
        for (;;) {
          clearTimeout(timer);
          timer = setTimeout(() => {
            stalled = true;
            ac.abort();
          }, idleMs);
          const { done, value } = await reader.read();
          if (done) return;
          yield value;
        }
      }
      try {
        for await (const item of readNdjson(chunks())) {
          const line = item as { type?: unknown; vm?: unknown; error?: { message?: unknown } };
          if (line.type === 'ERROR') {
            const message = typeof line.error?.message === 'string' ? line.error.message : 'unknown error';
            throw new CliError(`the controller ended the watch: ${message}`, ExitCode.ERROR);
          }
          if ((line.type === 'ADDED' || line.type === 'MODIFIED' || line.type === 'DELETED') && typeof line.vm === 'object' && line.vm !== null) {
            yield line as VmWatchEvent;
          }
          // anything else: a newer controller's line type this CLI does not know; skip it
        }
      } catch (err) {
        if (err instanceof CliError) throw err;
        if (this.signal?.aborted) throw new InterruptedError();
        if (stop?.aborted) return;
        if (stalled) {
          throw new UnreachableError(`lost the watch stream from ${url}: no data for ${formatDuration(idleMs)} (the controller sends keepalives every 15s)`);
        }
        throw new UnreachableError(`lost the watch stream from ${url}: ${networkReason(err)}`, { cause: err });
      }
    } finally {
      clearTimeout(timer);
      this.signal?.removeEventListener('abort', onUserAbort);
      stop?.removeEventListener('abort', onUserAbort);
      ac.abort(); // closes the connection when the consumer stops early
    }
  }

  private networkError(url: string, err: unknown, timedOut: boolean): CliError {
    if (err instanceof CliError) return err;
    if (this.signal?.aborted) return new InterruptedError();
    if (timedOut) return new UnreachableError(`cannot reach the controller at ${url}: no answer within ${formatDuration(this.timeoutMs)}; ${HINT}`);
    const code = networkCode(err);
    if (isCertificateError(code)) return untrustedControllerError(url, code!);
    return new UnreachableError(`cannot reach the controller at ${url}: ${networkReason(err)}; ${HINT}`, { cause: err });
  }

  private httpError(url: string, res: Response, text: string): ApiError {
    let code = `http_${res.status}`;
    let message = '';
    let details: unknown;
    try {
      const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
      if (body.error && typeof body.error.message === 'string') {
        message = body.error.message;
        if (typeof body.error.code === 'string') code = body.error.code;
        details = body.error.details;
      }
    } catch {
      // not our error shape (a proxy?): fall back to the status line
    }
    if (!message) message = `HTTP ${res.status} ${res.statusText || ''}`.trim() + ` from ${url}`;
    switch (res.status) {
      case 401:
        message = this.token
          ? `authentication failed: ${message}; log in again with "fleet login URL --token T"`
          : `not authenticated: no token configured; run "fleet login URL --token T" or set FLEET_TOKEN`;
        break;
      case 403:
        message = `permission denied: ${message}`;
        break;
      default:
        // (an upstream code names the service behind the controller that failed, not the controller)
        if (res.status >= 500 && !UPSTREAM_CODES.has(code)) message = `the controller failed (HTTP ${res.status}): ${message}`;
    }
    return new ApiError(message, res.status, code, details);
  }
}

function enc(name: string): string {
  return encodeURIComponent(name);
}

/** Retry-After in ms (delta-seconds or an HTTP date), or undefined. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
