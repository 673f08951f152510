// A tiny stand-in for the controller's REST API, for command-level tests: a
// node:http server on 127.0.0.1:0 with per-test routes, which records every
// request it gets. Not shipped behaviour: test support only.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ControllerObject, VmObject, WorkerObject } from '@fleet/api';

export interface FakeRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  body: unknown;
}

export type Handler = (req: FakeRequest, res: ServerResponse) => unknown;

export class FakeController {
  readonly requests: FakeRequest[] = [];
  private readonly routes = new Map<string, Handler>();
  private readonly open = new Set<ServerResponse>();

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  /** On `port` (default: any free one), e.g. the port of a closed fake, as a restarted controller. */
  static async start(port = 0): Promise<FakeController> {
    let fake: FakeController | undefined;
    const server = createServer((req, res) => void fake!.handle(req, res));
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    fake = new FakeController(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return fake;
  }

  /** Routes by method and path (without the query string). */
  on(method: string, path: string, handler: Handler): this {
    this.routes.set(`${method} ${path}`, handler);
    return this;
  }

  /** A fixed JSON answer. */
  reply(method: string, path: string, status: number, body?: unknown): this {
    return this.on(method, path, (_req, res) => sendJson(res, status, body));
  }

  /** The API's error shape. */
  fail(method: string, path: string, status: number, code: string, message: string): this {
    return this.reply(method, path, status, { error: { code, message } });
  }

  requestsTo(method: string, path: string): FakeRequest[] {
    return this.requests.filter((r) => r.method === method && r.path === path);
  }

  async close(): Promise<void> {
    for (const res of this.open) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://fake');
    const fr: FakeRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      headers: req.headers,
      body: text ? JSON.parse(text) : undefined,
    };
    this.requests.push(fr);
    this.open.add(res);
    res.on('close', () => this.open.delete(res));
    const handler = this.routes.get(`${fr.method} ${fr.path}`);
    if (!handler) return sendJson(res, 404, { error: { code: 'not_found', message: `no route ${fr.method} ${fr.path}` } });
    await handler(fr, res);
  }
}

export function sendJson(res: ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

/**
 * Streams NDJSON: each item is a JSON line, a raw string (sent as is, e.g. a
 * keepalive "\n" or half a line), or a number (a pause in ms). Ends the
 * response afterwards unless `keepOpen`.
 */
export async function streamNdjson(res: ServerResponse, items: (unknown | string | number)[], keepOpen = false): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.flushHeaders();
  for (const item of items) {
    if (res.destroyed) return;
    if (typeof item === 'number') await new Promise((r) => setTimeout(r, item));
    else if (typeof item === 'string') res.write(item);
    else res.write(JSON.stringify(item) + '\n');
  }
  if (!keepOpen) res.end();
}

export function vm(name: string, over: Partial<VmObject> = {}): VmObject {
  return {
    id: `id-${name}`,
    name,
    state: 'pending',
    reason: 'waiting for the scheduler',
    image: 'ubuntu:24.04',
    imageDigest: null,
    pull: null,
    os: 'linux',
    driver: '',
    cpus: 2,
    memoryMib: 4096,
    diskGib: 20,
    username: '',
    passwordSet: false,
    labels: {},
    selector: {},
    network: { mode: 'nat', allow: [], block: [], blockLocal: false },
    priority: 0,
    restartPolicy: 'never',
    disconnectPolicy: 'reschedule',
    restartCount: 0,
    powerState: 'running',
    generation: 1,
    observedGeneration: 0,
    attempt: 0,
    worker: null,
    ip: null,
    mac: null,
    macSource: null,
    createdBy: 'token:admin',
    createdAt: '2025-01-01T00:00:00.000Z',
    updatedAt: '2025-01-01T00:00:00.000Z',
    scheduledAt: null,
    runningAt: null,
    restartAt: null,
    ...over,
  };
}

export function worker(name: string, over: Partial<WorkerObject> = {}): WorkerObject {
  return {
    id: `wid-${name}`,
    name,
    status: 'online',
    connected: true,
    paused: false,
    hostname: `${name}.local`,
    os: 'darwin',
    arch: 'arm64',
    version: '0.1.0',
    labels: { pool: 'ci' },
    drivers: ['vz'],
    capacity: { cpus: 8, memoryMib: 16384, vmSlots: 8, macosSlots: 2, natAddresses: 0 },
    used: { cpus: 2, memoryMib: 4096, vms: 1, macosVms: 0, natAddresses: 1 },
    networks: [],
    lastSeenAt: '2025-01-01T00:59:55.000Z',
    certificateExpiresAt: '2025-12-01T00:00:00.000Z',
    createdAt: '2024-12-31T00:00:00.000Z',
    ...over,
  };
}

export function controllerObject(name: string, over: Partial<ControllerObject> = {}): ControllerObject {
  return {
    id: `ctl-${name}`,
    name,
    apiUrl: `https://${name}.example:8080`,
    grpcAddress: `${name}.example:7443`,
    version: '0.1.0',
    role: 'follower',
    alive: true,
    connectedWorkers: 0,
    startedAt: '2025-01-01T00:00:00.000Z',
    lastSeenAt: '2025-01-01T00:59:58.000Z',
    ...over,
  };
}
