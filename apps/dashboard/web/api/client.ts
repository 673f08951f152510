// A small REST client for the controller: bearer token on every request, the
// API's {error:{code,message}} shape turned into ApiError, and NDJSON watch
// streams read with fetch() (a browser EventSource cannot send headers).
import type { Health } from './types.ts';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type UnauthorizedListener = (message: string) => void;

export class ApiClient {
  private unauthorizedListeners = new Set<UnauthorizedListener>();

  constructor(
    readonly token: string,
    private readonly base = '',
  ) {}

  onUnauthorized(fn: UnauthorizedListener): () => void {
    this.unauthorizedListeners.add(fn);
    return () => this.unauthorizedListeners.delete(fn);
  }

  private headers(json: boolean): HeadersInit {
    return { authorization: `Bearer ${this.token}`, ...(json ? { 'content-type': 'application/json' } : {}) };
  }

  private async fail(res: Response): Promise<never> {
    let code = 'http_' + res.status;
    let message = `${res.status} ${res.statusText}`;
    try {
      const body = (await res.json()) as { error?: { code?: string; message?: string } };
      if (body.error?.code) code = body.error.code;
      if (body.error?.message) message = body.error.message;
    } catch {
      // not JSON: keep the status line
    }
    if (res.status === 401) for (const fn of this.unauthorizedListeners) fn(message);
    throw new ApiError(res.status, code, message);
  }

  async request<T>(method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<T> {
    const res = await fetch(this.base + path, { method, headers: { ...this.headers(body !== undefined), ...extraHeaders }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    if (!res.ok) return this.fail(res);
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** `/v1/health` needs no token, and its 503 (storage degraded) still carries the report. */
  async health(): Promise<Health> {
    const res = await fetch(this.base + '/v1/health');
    if (!res.ok && res.status !== 503) return this.fail(res);
    return (await res.json()) as Health;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }
  /** `idempotencyKey`: the same key for a retried (or double-submitted) request makes the controller answer it once. */
  post<T>(path: string, body?: unknown, idempotencyKey?: string): Promise<T> {
    return this.request<T>('POST', path, body ?? {}, idempotencyKey ? { 'idempotency-key': idempotencyKey } : {});
  }
  del(path: string): Promise<void> {
    return this.request<void>('DELETE', path);
  }

  /**
   * Follows an NDJSON stream, reconnecting after a drop (with backoff) until
   * stop() is called. `onLine` gets each parsed line; `onStatus` tells whether
   * the stream is connected so pages can say "reconnecting…".
   */
  watch<T>(path: string, onLine: (line: T) => void, onStatus: (connected: boolean, error?: string) => void = () => {}): () => void {
    const abort = new AbortController();
    let stopped = false;
    const run = async () => {
      let delay = 500;
      while (!stopped) {
        try {
          const res = await fetch(this.base + path, { headers: this.headers(false), signal: abort.signal });
          if (!res.ok) await this.fail(res);
          onStatus(true);
          delay = 500;
          const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
          let buffered = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffered += value;
            let nl: number;
            while ((nl = buffered.indexOf('\n')) >= 0) {
              const raw = buffered.slice(0, nl).trim();
              buffered = buffered.slice(nl + 1);
              if (!raw) continue; // keepalive
              const line = JSON.parse(raw) as T & { type?: string; error?: { code?: string; message?: string } };
              if (line.type === 'ERROR') {
                if (line.error?.code === 'unauthorized') for (const fn of this.unauthorizedListeners) fn(line.error.message ?? 'session ended');
                throw new Error(line.error?.message ?? 'stream error');
              }
              onLine(line);
            }
          }
          if (!stopped) onStatus(false, 'stream ended; reconnecting');
        } catch (err) {
          if (stopped) return;
          if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
            onStatus(false, err.message);
            return;
          }
          onStatus(false, err instanceof Error ? err.message : String(err));
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5000);
      }
    };
    void run();
    return () => {
      stopped = true;
      abort.abort();
    };
  }
}

/** Logging in with an account needs no token yet. */
export async function login(username: string, password: string): Promise<{ token: string; name: string }> {
  const res = await fetch('/v1/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }) });
  const body = (await res.json().catch(() => ({}))) as { token?: string; name?: string; error?: { code: string; message: string } };
  if (!res.ok || !body.token) throw new ApiError(res.status, body.error?.code ?? 'login_failed', body.error?.message ?? `login failed (${res.status})`);
  return { token: body.token, name: body.name ?? username };
}
