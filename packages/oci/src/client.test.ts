// RegistryClient against an in-process fake registry on 127.0.0.1: auth flows,
// verification, resumable downloads, redirects and the pull scheduler.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseChallenges } from './auth.ts';
import { MANIFEST_MEDIA_TYPES, RegistryClient, type Descriptor } from './client.ts';
import { OciError } from './errors.ts';
import { downloadBlobs, pullBlobs } from './pull.ts';

// ------------------------------------------------------------------ fake registry

interface Logged {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

type Auth = { scheme: 'basic'; user: string; pass: string } | { scheme: 'bearer'; user?: string; pass?: string; service?: string };

/** Return true when the request was answered. Runs after authentication. */
type Override = (req: http.IncomingMessage, res: http.ServerResponse, route: Route) => boolean | Promise<boolean>;

interface Route {
  repo?: string;
  kind?: 'manifests' | 'blobs' | 'uploads';
  ref?: string;
}

function digestOf(bytes: Buffer): string {
  return 'sha256:' + createHash('sha256').update(bytes).digest('hex');
}

function descOf(bytes: Buffer, mediaType = 'application/octet-stream'): Descriptor {
  return { mediaType, digest: digestOf(bytes), size: bytes.length };
}

function basic(user: string, pass: string): string {
  return 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64');
}

function sendError(res: http.ServerResponse, status: number, code: string, message: string, extra: Record<string, string> = {}): void {
  const body = JSON.stringify({ errors: [{ code, message }] });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

class FakeRegistry {
  readonly log: Logged[] = [];
  readonly tokenRequests: { scopes: string[]; service: string | null; authorization: string | undefined }[] = [];
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, { bytes: Buffer; mediaType: string }>();
  /** Bytes of blob bodies actually written to clients. */
  blobBytesServed = 0;
  override: Override | undefined;
  auth: Auth | undefined;
  private readonly server: http.Server;
  private readonly sockets = new Set<import('node:net').Socket>();
  port = 0;

  constructor(auth?: Auth) {
    this.auth = auth;
    this.server = http.createServer((req, res) => {
      void this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendError(res, 500, 'UNKNOWN', String(err));
        else res.destroy();
      });
    });
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  addManifest(repo: string, tag: string | undefined, bytes: Buffer, mediaType: string): string {
    const digest = digestOf(bytes);
    this.manifests.set(`${repo}@${digest}`, { bytes, mediaType });
    if (tag) this.manifests.set(`${repo}:${tag}`, { bytes, mediaType });
    return digest;
  }

  addBlob(bytes: Buffer): Descriptor {
    const d = descOf(bytes);
    this.blobs.set(d.digest, bytes);
    return d;
  }

  requests(filter: (l: Logged) => boolean = () => true): Logged[] {
    return this.log.filter(filter);
  }

  private challenge(scope: string | undefined): string {
    const a = this.auth!;
    if (a.scheme === 'basic') return 'Basic realm="fake registry"';
    const parts = [`realm="http://${this.host}/token"`, `service="${a.service ?? 'fake'}"`];
    if (scope) parts.push(`scope="${scope}"`);
    // Offer Basic too, after Bearer, as some registries do: the client must pick Bearer.
    return `Bearer ${parts.join(',')}, Basic realm="x"`;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', `http://${this.host}`);
    if (url.pathname === '/token') return this.token(req, res, url);
    this.log.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const route = parseRoute(url.pathname);
    if (this.auth && !this.authorized(req, route)) {
      await readBody(req);
      const scope = route.repo ? `repository:${route.repo}:${isWrite(req.method) ? 'pull,push' : 'pull'}` : undefined;
      return sendError(res, 401, 'UNAUTHORIZED', 'authentication required', { 'www-authenticate': this.challenge(scope) });
    }
    if (this.override && (await this.override(req, res, route))) return;
    if (url.pathname === '/v2/' || url.pathname === '/v2') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
      return void res.end('{}');
    }
    if (route.kind === 'manifests') return this.manifest(req, res, route);
    if (route.kind === 'blobs') return this.blob(req, res, route);
    if (route.kind === 'uploads') return this.upload(req, res, route, url);
    sendError(res, 404, 'NOT_FOUND', 'no route');
  }

  private authorized(req: http.IncomingMessage, route: Route): boolean {
    const a = this.auth!;
    const got = req.headers.authorization;
    if (a.scheme === 'basic') return got === basic(a.user, a.pass);
    if (!got?.startsWith('Bearer tok|')) return false;
    const scopes = got.slice('Bearer tok|'.length).split('|');
    if (!route.repo) return true;
    const need = isWrite(req.method) ? 'push' : 'pull';
    return scopes.some((s) => {
      const [type, repo, actions] = s.split(':');
      return type === 'repository' && repo === route.repo && (actions ?? '').split(',').includes(need);
    });
  }

  private token(req: http.IncomingMessage, res: http.ServerResponse, url: URL): void {
    const a = this.auth;
    this.tokenRequests.push({ scopes: url.searchParams.getAll('scope'), service: url.searchParams.get('service'), authorization: req.headers.authorization });
    if (a?.scheme === 'bearer' && a.user !== undefined && req.headers.authorization !== basic(a.user, a.pass ?? '')) {
      return sendError(res, 401, 'UNAUTHORIZED', 'bad credentials');
    }
    const body = JSON.stringify({ access_token: 'tok|' + url.searchParams.getAll('scope').join('|'), expires_in: 300 });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body);
  }

  private manifest(req: http.IncomingMessage, res: http.ServerResponse, route: Route): void {
    const key = route.ref!.startsWith('sha256:') ? `${route.repo}@${route.ref}` : `${route.repo}:${route.ref}`;
    if (req.method === 'PUT') {
      void readBody(req).then((bytes) => {
        const mediaType = req.headers['content-type'] ?? '';
        const digest = this.addManifest(route.repo!, route.ref!.startsWith('sha256:') ? undefined : route.ref, bytes, mediaType);
        res.writeHead(201, { 'docker-content-digest': digest, location: `/v2/${route.repo}/manifests/${digest}`, 'content-length': 0 });
        res.end();
      });
      return;
    }
    const m = this.manifests.get(key);
    if (!m) return sendError(res, 404, 'MANIFEST_UNKNOWN', `manifest unknown: ${key}`);
    res.writeHead(200, { 'content-type': m.mediaType, 'docker-content-digest': digestOf(m.bytes), 'content-length': m.bytes.length });
    res.end(req.method === 'HEAD' ? undefined : m.bytes);
  }

  private blob(req: http.IncomingMessage, res: http.ServerResponse, route: Route): void {
    const bytes = this.blobs.get(route.ref!);
    if (!bytes) return sendError(res, 404, 'BLOB_UNKNOWN', 'blob unknown');
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = range ? Number(range[1]) : 0;
    if (start > bytes.length) {
      res.writeHead(416, { 'content-range': `bytes */${bytes.length}` });
      return void res.end();
    }
    const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/octet-stream', 'content-length': bytes.length - start, 'docker-content-digest': route.ref };
    if (range) headers['content-range'] = `bytes ${start}-${bytes.length - 1}/${bytes.length}`;
    res.writeHead(range ? 206 : 200, headers);
    if (req.method === 'HEAD') return void res.end();
    this.blobBytesServed += bytes.length - start;
    res.end(bytes.subarray(start));
  }

  private upload(req: http.IncomingMessage, res: http.ServerResponse, route: Route, url: URL): void {
    if (req.method === 'POST') {
      // A relative Location with its own query string, as distribution sends (_state).
      res.writeHead(202, { location: `/v2/${route.repo}/blobs/uploads/u-${randomBytes(4).toString('hex')}?_state=abc%2Bdef%3D%3D`, 'content-length': 0 });
      return void res.end();
    }
    if (req.method === 'PUT') {
      void readBody(req).then((bytes) => {
        const digest = url.searchParams.get('digest');
        if (digest !== digestOf(bytes)) return sendError(res, 400, 'DIGEST_INVALID', 'provided digest did not match uploaded content');
        this.blobs.set(digest, bytes);
        res.writeHead(201, { 'docker-content-digest': digest, location: `/v2/${route.repo}/blobs/${digest}`, 'content-length': 0 });
        res.end();
      });
      return;
    }
    sendError(res, 405, 'UNSUPPORTED', 'method');
  }
}

function isWrite(method: string | undefined): boolean {
  return method === 'POST' || method === 'PUT' || method === 'PATCH' || method === 'DELETE';
}

function parseRoute(pathname: string): Route {
  let m = /^\/v2\/(.+)\/blobs\/uploads\/(.*)$/.exec(pathname);
  if (m) return { repo: m[1]!, kind: 'uploads', ref: m[2]! };
  m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(pathname);
  if (m) return { repo: m[1]!, kind: m[2] as 'manifests' | 'blobs', ref: m[3]! };
  return {};
}

async function rejection(p: Promise<unknown>): Promise<OciError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(OciError);
    return err as OciError;
  }
  throw new Error('expected the promise to reject');
}

// ------------------------------------------------------------------ fixtures

let fake: FakeRegistry;
let tmp: string;
const toStop: { stop(): Promise<void> }[] = [];

beforeEach(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'fleet-oci-client-'));
});

afterEach(async () => {
  while (toStop.length) await toStop.pop()!.stop();
  await fsp.rm(tmp, { recursive: true, force: true });
});

async function startFake(auth?: Auth): Promise<FakeRegistry> {
  fake = await new FakeRegistry(auth).start();
  toStop.push(fake);
  return fake;
}

function client(opts: Partial<ConstructorParameters<typeof RegistryClient>[0]> = {}): RegistryClient {
  const c = new RegistryClient({ registry: fake.host, insecure: true, ...opts });
  toStop.push({ stop: async () => c.close() });
  return c;
}

function imageManifest(config: Descriptor, layers: Descriptor[]): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST_MEDIA_TYPES.ociManifest, config, layers }));
}

// ------------------------------------------------------------------ tests

describe('WWW-Authenticate parsing', () => {
  it('handles several challenges, quoted commas and escapes', () => {
    const got = parseChallenges([
      'Bearer realm="https://auth.example/token?a=1,b=2",service="reg, primary",scope="repository:a/b:pull,push", Basic realm="say \\"hi\\""',
      'Negotiate',
    ]);
    expect(got).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.example/token?a=1,b=2', service: 'reg, primary', scope: 'repository:a/b:pull,push' } },
      { scheme: 'basic', params: { realm: 'say "hi"' } },
      { scheme: 'negotiate', params: {} },
    ]);
    expect(parseChallenges(['BASIC Realm=simple'])).toEqual([{ scheme: 'basic', params: { realm: 'simple' } }]);
    expect(parseChallenges([', ,,', 'realm="no scheme"', ''])).toEqual([]);
  });
});

describe('authentication', () => {
  it('Basic: anonymous first, then credentials on the challenge; reused afterwards', async () => {
    await startFake({ scheme: 'basic', user: 'alice', pass: 's3cret' });
    const bytes = imageManifest(descOf(Buffer.from('{}')), []);
    const digest = fake.addManifest('fleet/guest', '1.0', bytes, MANIFEST_MEDIA_TYPES.ociManifest);
    const c = client({ username: 'alice', password: 's3cret' });
    await c.ping();
    const m = await c.getManifest('fleet/guest', '1.0');
    expect(m.digest).toBe(digest);
    expect(m.bytes.equals(bytes)).toBe(true);
    const log = fake.requests();
    expect(log[0]!.headers.authorization).toBeUndefined();
    expect(log.slice(1).every((l) => l.headers.authorization === basic('alice', 's3cret'))).toBe(true);
    expect(log).toHaveLength(3); // anonymous ping, ping with credentials, manifest with credentials
  });

  it('Basic: wrong or missing credentials give a clear unauthorized error', async () => {
    await startFake({ scheme: 'basic', user: 'alice', pass: 's3cret' });
    const wrong = await rejection(client({ username: 'alice', password: 'nope' }).resolve('fleet/guest', 'latest'));
    expect(wrong.code).toBe('unauthorized');
    expect(wrong.status).toBe(401);
    expect(wrong.message).toBe(`registry ${fake.host} answered 401 for fleet/guest:latest: wrong or missing credentials (fleet registry login ${fake.host})`);
    expect(wrong.message).not.toContain('nope');
    const none = await rejection(client().ping());
    expect(none.code).toBe('unauthorized');
    expect(none.message).toContain('credentials are required');
  });

  it('Bearer: token fetched from the realm with service, scope and the credentials; cached per scope', async () => {
    await startFake({ scheme: 'bearer', user: 'bob', pass: 'pw', service: 'fake, registry' });
    const config = Buffer.from('{"a":1}');
    const c = client({ username: 'bob', password: 'pw' });
    await c.ping();
    const cfg = fake.addBlob(config);
    const manifest = imageManifest(cfg, []);
    fake.addManifest('fleet/guest', 'v1', manifest, MANIFEST_MEDIA_TYPES.ociManifest);
    expect((await c.resolve('fleet/guest', 'v1')).digest).toBe(digestOf(manifest));
    expect((await c.getManifest('fleet/guest', 'v1')).bytes.equals(manifest)).toBe(true);
    expect((await c.getBlob('fleet/guest', cfg, 1024)).equals(config)).toBe(true);

    // Push scope is requested for writes.
    const layer = randomBytes(1000);
    await c.uploadBlobBytes('fleet/other', layer, descOf(layer));
    expect(fake.blobs.get(digestOf(layer))?.equals(layer)).toBe(true);

    expect(fake.tokenRequests.map((t) => t.scopes)).toEqual([[], ['repository:fleet/guest:pull'], ['repository:fleet/other:pull'], ['repository:fleet/other:pull,push']]);
    expect(fake.tokenRequests.every((t) => t.service === 'fake, registry' && t.authorization === basic('bob', 'pw'))).toBe(true);
    // Registry requests carry Bearer tokens, never the password.
    expect(fake.requests().every((l) => !l.headers.authorization?.startsWith('Basic'))).toBe(true);
  });

  it('Bearer: anonymous pulls get a token without credentials; wrong credentials are unauthorized', async () => {
    await startFake({ scheme: 'bearer' });
    fake.addManifest('pub/img', 'latest', imageManifest(descOf(Buffer.from('{}')), []), MANIFEST_MEDIA_TYPES.ociManifest);
    await client().getManifest('pub/img', 'latest');
    expect(fake.tokenRequests).toHaveLength(1);
    expect(fake.tokenRequests[0]!.authorization).toBeUndefined();

    fake.auth = { scheme: 'bearer', user: 'bob', pass: 'pw' };
    const err = await rejection(client({ username: 'bob', password: 'wrong' }).getManifest('pub/img', 'latest'));
    expect(err.code).toBe('unauthorized');
    expect(err.message).toContain('rejected the credentials for pub/img:latest: wrong or missing credentials');
    expect(err.message).toContain(`fleet registry login ${fake.host}`);
  });

  it('403 is denied; 404 names the repository and tag', async () => {
    await startFake();
    fake.override = (req, res, route) => {
      if (route.repo === 'secret/img') {
        sendError(res, 403, 'DENIED', 'requested access to the resource is denied');
        return true;
      }
      return false;
    };
    const denied = await rejection(client().getManifest('secret/img', 'v1'));
    expect(denied.code).toBe('denied');
    expect(denied.status).toBe(403);
    expect(denied.message).toContain('secret/img:v1');
    const missing = await rejection(client().resolve('fleet/guest', 'nope'));
    expect(missing.code).toBe('not-found');
    expect(missing.message).toContain('fleet/guest:nope');
  });
});

describe('manifests', () => {
  it('refuses manifests over the size limit, by Content-Length and while reading', async () => {
    await startFake();
    const big = Buffer.from(JSON.stringify({ schemaVersion: 2, pad: 'x'.repeat(5000) }));
    fake.addManifest('fleet/guest', 'big', big, MANIFEST_MEDIA_TYPES.ociManifest);
    const err = await rejection(client({ maxManifestBytes: 4096 }).getManifest('fleet/guest', 'big'));
    expect(err.code).toBe('too-large');
    expect(err.message).toContain('4096');
    // Without Content-Length (chunked) the cap applies while reading.
    fake.override = (req, res, route) => {
      if (route.kind !== 'manifests') return false;
      res.writeHead(200, { 'content-type': MANIFEST_MEDIA_TYPES.ociManifest });
      res.write(big.subarray(0, 3000));
      res.end(big.subarray(3000));
      return true;
    };
    expect((await rejection(client({ maxManifestBytes: 4096 }).getManifest('fleet/guest', 'big'))).code).toBe('too-large');
  });

  it('verifies bytes against the digest asked for and against Docker-Content-Digest', async () => {
    await startFake();
    const good = imageManifest(descOf(Buffer.from('{}')), []);
    const digest = digestOf(good);
    const evil = Buffer.from(good.toString().replace('"layers":[]', '"layers": []'));
    fake.manifests.set(`fleet/guest@${digest}`, { bytes: evil, mediaType: MANIFEST_MEDIA_TYPES.ociManifest });
    fake.override = (req, res, route) => {
      if (route.ref !== 'labelled') return false;
      res.writeHead(200, { 'content-type': MANIFEST_MEDIA_TYPES.ociManifest, 'docker-content-digest': digest });
      res.end(evil);
      return true;
    };
    const byDigest = await rejection(client().getManifest('fleet/guest', digest));
    expect(byDigest.code).toBe('digest-mismatch');
    expect(byDigest.message).toContain(digest);
    expect((await rejection(client().getManifest('fleet/guest', 'labelled'))).code).toBe('digest-mismatch');
  });

  it('resolve falls back to GET when HEAD has no Docker-Content-Digest', async () => {
    await startFake();
    const bytes = imageManifest(descOf(Buffer.from('{}')), []);
    fake.addManifest('fleet/guest', 'v1', bytes, MANIFEST_MEDIA_TYPES.ociManifest);
    fake.override = (req, res) => {
      if (req.method !== 'HEAD') return false;
      res.writeHead(200, { 'content-type': MANIFEST_MEDIA_TYPES.ociManifest });
      res.end();
      return true;
    };
    expect(await client().resolve('fleet/guest', 'v1')).toEqual({ mediaType: MANIFEST_MEDIA_TYPES.ociManifest, digest: digestOf(bytes), size: bytes.length });
    expect(fake.requests().map((l) => l.method)).toEqual(['HEAD', 'GET']);
    expect(fake.requests()[0]!.headers.accept).toContain(MANIFEST_MEDIA_TYPES.dockerList);
  });

  it('selects the platform from an index, and lists what it offers when nothing matches', async () => {
    await startFake();
    const amd = imageManifest(descOf(Buffer.from('{"arch":"amd64"}')), []);
    const arm = imageManifest(descOf(Buffer.from('{"arch":"arm64"}')), []);
    const armV7 = imageManifest(descOf(Buffer.from('{"arch":"arm/v7"}')), []);
    const entries = [
      { bytes: amd, platform: { os: 'linux', architecture: 'amd64' } },
      { bytes: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { bytes: armV7, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
    ];
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MANIFEST_MEDIA_TYPES.ociIndex,
        manifests: entries.map((e) => {
          fake.addManifest('fleet/guest', undefined, e.bytes, MANIFEST_MEDIA_TYPES.ociManifest);
          return { mediaType: MANIFEST_MEDIA_TYPES.ociManifest, digest: digestOf(e.bytes), size: e.bytes.length, platform: e.platform };
        }),
      }),
    );
    fake.addManifest('fleet/guest', 'multi', index, MANIFEST_MEDIA_TYPES.ociIndex);
    const c = client();
    const a = await c.getImageManifest('fleet/guest', 'multi', { os: 'linux', architecture: 'amd64' });
    expect(a.manifest.digest).toBe(digestOf(amd));
    expect(a.index?.digest).toBe(digestOf(index));
    expect((await c.getImageManifest('fleet/guest', 'multi', { os: 'linux', architecture: 'arm64' })).manifest.digest).toBe(digestOf(arm));
    expect((await c.getImageManifest('fleet/guest', 'multi', { os: 'linux', architecture: 'arm', variant: 'v7' })).manifest.digest).toBe(digestOf(armV7));
    const none = await rejection(c.getImageManifest('fleet/guest', 'multi', { os: 'darwin', architecture: 'arm64' }));
    expect(none.code).toBe('no-platform');
    expect(none.message).toContain('darwin/arm64');
    expect(none.message).toContain('linux/amd64, linux/arm64/v8, linux/arm/v7');
    // A plain image manifest is returned as is.
    const single = await c.getImageManifest('fleet/guest', digestOf(amd), { os: 'linux', architecture: 'arm64' });
    expect(single.index).toBeUndefined();
    // Unknown top-level types are refused.
    fake.addManifest('fleet/guest', 'odd', Buffer.from('{"schemaVersion":1}'), 'application/vnd.docker.distribution.manifest.v1+prettyjws');
    expect((await rejection(c.getImageManifest('fleet/guest', 'odd', { os: 'linux', architecture: 'amd64' }))).code).toBe('unsupported-media-type');
  });

  it('putManifest returns the digest of the bytes', async () => {
    await startFake();
    const bytes = imageManifest(descOf(Buffer.from('{}')), []);
    expect(await client().putManifest('fleet/guest', 'v9', bytes, MANIFEST_MEDIA_TYPES.ociManifest)).toBe(digestOf(bytes));
    expect(fake.manifests.get('fleet/guest:v9')?.mediaType).toBe(MANIFEST_MEDIA_TYPES.ociManifest);
  });
});

describe('downloadBlob', () => {
  it('rejects a blob whose bytes do not match its digest and leaves nothing behind', async () => {
    await startFake();
    const real = randomBytes(10_000);
    const desc = descOf(real);
    fake.blobs.set(desc.digest, randomBytes(10_000)); // same size, other bytes
    const dest = path.join(tmp, 'blob');
    const err = await rejection(client().downloadBlob('fleet/guest', desc, dest));
    expect(err.code).toBe('digest-mismatch');
    expect(err.message).toContain(desc.digest);
    expect(existsSync(dest)).toBe(false);
    expect(existsSync(dest + '.partial')).toBe(false);
  });

  it('resumes with Range after the connection drops mid-blob and verifies the result', async () => {
    await startFake();
    const bytes = randomBytes(1024 * 1024 + 123);
    const desc = fake.addBlob(bytes);
    let drops = 2;
    fake.override = (req, res, route) => {
      if (route.kind !== 'blobs' || req.method !== 'GET' || drops === 0) return false;
      drops--;
      const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
      const end = start + 300_000;
      res.writeHead(start ? 206 : 200, {
        'content-length': bytes.length - start,
        ...(start ? { 'content-range': `bytes ${start}-${bytes.length - 1}/${bytes.length}` } : {}),
      });
      fake.blobBytesServed += end - start;
      res.write(bytes.subarray(start, end), () => setTimeout(() => res.socket?.destroy(), 20));
      return true;
    };
    const dest = path.join(tmp, 'blob');
    const seen: number[] = [];
    await client().downloadBlob('fleet/guest', desc, dest, { onProgress: (n) => seen.push(n) });
    expect((await fsp.readFile(dest)).equals(bytes)).toBe(true);
    expect(existsSync(dest + '.partial')).toBe(false);
    const gets = fake.requests((l) => l.method === 'GET');
    expect(gets.map((l) => l.headers.range)).toEqual([undefined, 'bytes=300000-', 'bytes=600000-']);
    expect(fake.blobBytesServed).toBeLessThan(2 * bytes.length);
    expect(seen.at(-1)).toBe(bytes.length);
  });

  it('is still correct when the server ignores Range after a drop', async () => {
    await startFake();
    const bytes = randomBytes(500_000);
    const desc = fake.addBlob(bytes);
    let dropped = false;
    fake.override = (req, res, route) => {
      if (route.kind !== 'blobs' || req.method !== 'GET') return false;
      res.writeHead(200, { 'content-length': bytes.length }); // never honours Range
      if (!dropped) {
        dropped = true;
        res.write(bytes.subarray(0, 200_000), () => setTimeout(() => res.socket?.destroy(), 20));
      } else {
        res.end(bytes);
      }
      return true;
    };
    const dest = path.join(tmp, 'blob');
    await client().downloadBlob('fleet/guest', desc, dest);
    expect((await fsp.readFile(dest)).equals(bytes)).toBe(true);
    expect(fake.requests((l) => l.method === 'GET').map((l) => l.headers.range)).toEqual([undefined, 'bytes=200000-']);
  });

  it('resumes a partial file left by an earlier run, and restarts on 416', async () => {
    await startFake();
    const bytes = randomBytes(100_000);
    const desc = fake.addBlob(bytes);
    const dest = path.join(tmp, 'blob');
    await fsp.writeFile(dest + '.partial', bytes.subarray(0, 40_000));
    await client().downloadBlob('fleet/guest', desc, dest);
    expect((await fsp.readFile(dest)).equals(bytes)).toBe(true);
    expect(fake.requests((l) => l.method === 'GET').map((l) => l.headers.range)).toEqual(['bytes=40000-']);

    // A damaged partial (wrong bytes) is detected and the blob fetched again from 0.
    const dest2 = path.join(tmp, 'blob2');
    await fsp.writeFile(dest2 + '.partial', randomBytes(40_000));
    await client().downloadBlob('fleet/guest', desc, dest2);
    expect((await fsp.readFile(dest2)).equals(bytes)).toBe(true);

    // The server cannot satisfy the range: start from 0.
    const dest3 = path.join(tmp, 'blob3');
    await fsp.writeFile(dest3 + '.partial', bytes.subarray(0, 10));
    fake.override = (req, res, route) => {
      if (route.kind !== 'blobs' || !req.headers.range) return false;
      res.writeHead(416, { 'content-range': `bytes */${bytes.length}` });
      res.end();
      return true;
    };
    await client().downloadBlob('fleet/guest', desc, dest3);
    expect((await fsp.readFile(dest3)).equals(bytes)).toBe(true);
  });

  it('never accepts more bytes than the descriptor says', async () => {
    await startFake();
    const bytes = randomBytes(5000);
    const desc = descOf(bytes);
    fake.blobs.set(desc.digest, Buffer.concat([bytes, Buffer.from('extra')]));
    const dest = path.join(tmp, 'blob');
    const err = await rejection(client().downloadBlob('fleet/guest', desc, dest));
    expect(err.code).toBe('too-large');
    expect(existsSync(dest)).toBe(false);
    expect(existsSync(dest + '.partial')).toBe(false);
  });

  it('abort keeps the partial for a later resume', async () => {
    await startFake();
    const bytes = randomBytes(400_000);
    const desc = fake.addBlob(bytes);
    const ac = new AbortController();
    fake.override = (req, res, route) => {
      if (route.kind !== 'blobs' || req.headers.range) return false;
      res.writeHead(200, { 'content-length': bytes.length });
      res.write(bytes.subarray(0, 150_000)); // then stall
      return true;
    };
    const dest = path.join(tmp, 'blob');
    const p = client().downloadBlob('fleet/guest', desc, dest, {
      signal: ac.signal,
      onProgress: (n) => {
        if (n >= 150_000) ac.abort(new Error('operator cancelled'));
      },
    });
    const err = await rejection(p);
    expect(err.code).toBe('aborted');
    expect(err.message).toContain('operator cancelled');
    expect((await fsp.stat(dest + '.partial')).size).toBe(150_000);
    await client().downloadBlob('fleet/guest', desc, dest);
    expect((await fsp.readFile(dest)).equals(bytes)).toBe(true);
  });

  it.skipIf(!existsSync('/dev/full'))('a full disk is disk-full, not a network error', async () => {
    await startFake();
    const desc = fake.addBlob(randomBytes(10_000));
    const dest = path.join(tmp, 'blob');
    // /dev/full fails every write with ENOSPC.
    await fsp.symlink('/dev/full', dest + '.partial');
    const err = await rejection(client().downloadBlob('fleet/guest', desc, dest));
    expect(err.code).toBe('disk-full');
    expect(err.message).toContain(desc.digest);
    expect(existsSync(dest)).toBe(false);
  });

  it('an existing destination file is trusted and not fetched again', async () => {
    await startFake();
    const desc = fake.addBlob(randomBytes(100));
    const dest = path.join(tmp, 'blob');
    await fsp.writeFile(dest, 'already verified');
    await client().downloadBlob('fleet/guest', desc, dest);
    expect(fake.requests()).toHaveLength(0);
  });

  it('does not send Authorization to a storage host it is redirected to', async () => {
    await startFake({ scheme: 'basic', user: 'u', pass: 'p' });
    const bytes = randomBytes(50_000);
    const desc = descOf(bytes);
    const storageLog: http.IncomingHttpHeaders[] = [];
    const storage = http.createServer((req, res) => {
      storageLog.push(req.headers);
      res.writeHead(200, { 'content-length': bytes.length });
      res.end(bytes);
    });
    await new Promise<void>((resolve) => storage.listen(0, '127.0.0.1', resolve));
    toStop.push({ stop: () => new Promise<void>((resolve) => storage.close(() => resolve())) });
    storage.on('connection', (s) => toStop.push({ stop: async () => void s.destroy() }));
    const storagePort = (storage.address() as AddressInfo).port;
    fake.override = (req, res, route) => {
      if (route.kind !== 'blobs') return false;
      res.writeHead(307, { location: `http://127.0.0.1:${storagePort}/bucket/blob?sig=abc` });
      res.end();
      return true;
    };
    const dest = path.join(tmp, 'blob');
    const c = client({ username: 'u', password: 'p' });
    await c.downloadBlob('fleet/guest', desc, dest);
    expect((await fsp.readFile(dest)).equals(bytes)).toBe(true);
    expect(storageLog).toHaveLength(1);
    expect(storageLog[0]!.authorization).toBeUndefined();
    expect(fake.requests((l) => l.url.includes('/blobs/')).at(-1)!.headers.authorization).toBe(basic('u', 'p'));
    expect((await c.getBlob('fleet/guest', desc, 100_000)).equals(bytes)).toBe(true);
    expect(storageLog.every((h) => h.authorization === undefined)).toBe(true);
  });

  it('a stalled response times out as a network error', async () => {
    await startFake();
    fake.override = (req, res, route) => {
      if (route.kind !== 'manifests') return false;
      res.writeHead(200, { 'content-type': MANIFEST_MEDIA_TYPES.ociManifest, 'content-length': 100 });
      res.write('{"schemaVersion":'); // then nothing
      return true;
    };
    const err = await rejection(client({ timeoutMs: 300 }).getManifest('fleet/guest', 'v1'));
    expect(err.code).toBe('network');
    expect(err.message).toMatch(/timed out/);
  });
});

describe('transport rules', () => {
  it('refuses to talk plain HTTP unless the registry is marked insecure', async () => {
    await startFake();
    const err = await rejection(new RegistryClient({ registry: fake.host }).ping());
    expect(['insecure-refused', 'tls']).toContain(err.code);
    expect(err.message).toContain(`fleet registry login ${fake.host} --insecure`);
  });

  it('resends an idempotent request when a reused keep-alive socket turns out closed', async () => {
    await startFake();
    const bytes = imageManifest(descOf(Buffer.from('{}')), []);
    fake.addManifest('fleet/guest', 'v1', bytes, MANIFEST_MEDIA_TYPES.ociManifest);
    const perSocket = new WeakMap<object, number>();
    let killed = 0;
    fake.override = (req) => {
      const n = (perSocket.get(req.socket) ?? 0) + 1;
      perSocket.set(req.socket, n);
      if (n === 2 && killed === 0) {
        // As if the server had closed the idle connection just before this request.
        killed++;
        req.socket.destroy();
        return true;
      }
      return false;
    };
    const c = client();
    expect((await c.getManifest('fleet/guest', 'v1')).digest).toBe(digestOf(bytes));
    expect((await c.getManifest('fleet/guest', 'v1')).digest).toBe(digestOf(bytes));
    expect(killed).toBe(1);
    expect(fake.requests()).toHaveLength(3);
  });

  it('a closed port is a network error', async () => {
    await startFake();
    const port = fake.port;
    await fake.stop();
    toStop.splice(toStop.indexOf(fake), 1);
    const err = await rejection(new RegistryClient({ registry: `127.0.0.1:${port}`, insecure: true }).ping());
    expect(err.code).toBe('network');
    expect(err.message).toContain('ECONNREFUSED');
  });
});

describe('uploads', () => {
  it('POSTs, then PUTs to the relative Location keeping its query, and skips existing blobs', async () => {
    await startFake();
    const bytes = randomBytes(300_000);
    const file = path.join(tmp, 'layer');
    await fsp.writeFile(file, bytes);
    const desc = descOf(bytes);
    const progress: number[] = [];
    const c = client();
    await c.uploadBlob('fleet/guest', file, desc, { onProgress: (n) => progress.push(n) });
    expect(fake.blobs.get(desc.digest)?.equals(bytes)).toBe(true);
    const put = fake.requests((l) => l.method === 'PUT')[0]!;
    expect(put.url).toMatch(/\/v2\/fleet\/guest\/blobs\/uploads\/u-[0-9a-f]+\?_state=abc%2Bdef%3D%3D&digest=sha256%3A[0-9a-f]{64}$/);
    expect(progress.at(-1)).toBe(bytes.length);
    expect(await c.blobExists('fleet/guest', desc.digest)).toBe(true);
    expect(await c.blobExists('fleet/guest', digestOf(Buffer.from('nope')))).toBe(false);

    const before = fake.requests().length;
    await c.uploadBlob('fleet/guest', file, desc);
    expect(fake.requests().slice(before).map((l) => l.method)).toEqual(['HEAD']);
  });

  it('handles an absolute Location and reports a digest the registry rejects', async () => {
    await startFake();
    fake.override = (req, res, route) => {
      if (route.kind !== 'uploads' || req.method !== 'POST') return false;
      res.writeHead(202, { location: `http://${fake.host}/v2/${route.repo}/blobs/uploads/abs`, 'content-length': 0 });
      res.end();
      return true;
    };
    const bytes = Buffer.from('config bytes');
    await client().uploadBlobBytes('fleet/guest', bytes, descOf(bytes));
    expect(fake.requests((l) => l.method === 'PUT')[0]!.url).toBe(`/v2/fleet/guest/blobs/uploads/abs?digest=${encodeURIComponent(digestOf(bytes))}`);

    const file = path.join(tmp, 'f');
    await fsp.writeFile(file, 'abc');
    const lie = { ...descOf(Buffer.from('xyz')), size: 3 };
    const err = await rejection(client().uploadBlob('fleet/guest', file, lie));
    expect(err.code).toBe('digest-mismatch');
  });
});

describe('downloadBlobs', () => {
  it('keeps at most N downloads in flight, fetches each digest once and sums progress', async () => {
    await startFake();
    const blobs = Array.from({ length: 6 }, (_, i) => fake.addBlob(randomBytes(20_000 + i)));
    let inFlight = 0;
    let maxInFlight = 0;
    fake.override = async (req, res, route) => {
      if (route.kind !== 'blobs' || req.method !== 'GET') return false;
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      res.on('close', () => inFlight--);
      await new Promise((r) => setTimeout(r, 40));
      const bytes = fake.blobs.get(route.ref!)!;
      res.writeHead(200, { 'content-length': bytes.length });
      res.end(bytes);
      return true;
    };
    const descs = [...blobs, blobs[0]!, blobs[3]!];
    const progress: { bytesDone: number; bytesTotal: number }[] = [];
    const dir = path.join(tmp, 'blobs');
    const got = await downloadBlobs(client(), 'fleet/guest', descs, dir, { concurrency: 2, onProgress: (p) => progress.push(p) });
    expect(maxInFlight).toBe(2);
    expect(got.size).toBe(6);
    const total = blobs.reduce((n, b) => n + b.size, 0);
    for (const b of blobs) {
      expect(got.get(b.digest)).toBe(path.join(dir, `sha256-${b.digest.slice(7)}`));
      expect(digestOf(await fsp.readFile(got.get(b.digest)!))).toBe(b.digest);
    }
    const gets = fake.requests((l) => l.method === 'GET');
    expect(gets).toHaveLength(6);
    expect(new Set(gets.map((l) => l.url)).size).toBe(6);
    expect(progress.at(-1)).toEqual({ bytesDone: total, bytesTotal: total });
    expect(progress.every((p, i) => i === 0 || p.bytesDone >= progress[i - 1]!.bytesDone)).toBe(true);
  });

  it('the first failure aborts the others, whose partials stay for resume', async () => {
    await startFake();
    const slow = fake.addBlob(randomBytes(200_000));
    const missing = descOf(randomBytes(10));
    const dir = path.join(tmp, 'blobs');
    const partial = path.join(dir, `sha256-${slow.digest.slice(7)}.partial`);
    let streaming!: () => void;
    const slowStarted = new Promise<void>((resolve) => (streaming = resolve));
    fake.override = async (req, res, route) => {
      if (route.kind !== 'blobs' || req.method !== 'GET') return false;
      if (route.ref === slow.digest) {
        res.writeHead(200, { 'content-length': slow.size });
        res.write(fake.blobs.get(slow.digest)!.subarray(0, 50_000), () => streaming()); // then stall
        return true;
      }
      // Fail the other blob only once the slow one has bytes on disk.
      await slowStarted;
      for (let i = 0; i < 100 && !(existsSync(partial) && (await fsp.stat(partial)).size > 0); i++) await new Promise((r) => setTimeout(r, 10));
      return false;
    };
    const err = await rejection(downloadBlobs(client(), 'fleet/guest', [slow, missing], dir, { concurrency: 2 }));
    expect(err.code).toBe('not-found');
    expect(err.message).toContain(missing.digest);
    // The slow download was aborted (not left running): its partial survives.
    expect((await fsp.stat(partial)).size).toBe(50_000);
    expect(existsSync(partial.slice(0, -'.partial'.length))).toBe(false);
  });
});

describe('downloadBlobInto', () => {
  /** A file of `size` bytes of 0xee (to see that nothing outside a region is touched). */
  async function filled(size: number): Promise<{ file: string; fh: fsp.FileHandle }> {
    const file = path.join(tmp, `disk-${randomBytes(3).toString('hex')}`);
    await fsp.writeFile(file, Buffer.alloc(size, 0xee));
    const fh = await fsp.open(file, 'r+');
    toStop.push({ stop: () => fh.close().catch(() => {}) });
    return { file, fh };
  }

  it('resumes with Range into the right offset after the connection drops mid-body', async () => {
    await startFake();
    const bytes = randomBytes(1024 * 1024 + 123);
    const desc = fake.addBlob(bytes);
    let drops = 2;
    fake.override = (req, res, route) => {
      if (route.kind !== 'blobs' || req.method !== 'GET' || drops === 0) return false;
      drops--;
      const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
      res.writeHead(start ? 206 : 200, {
        'content-length': bytes.length - start,
        ...(start ? { 'content-range': `bytes ${start}-${bytes.length - 1}/${bytes.length}` } : {}),
      });
      res.write(bytes.subarray(start, start + 300_000), () => setTimeout(() => res.socket?.destroy(), 20));
      return true;
    };
    const offset = 70_001;
    const { file, fh } = await filled(offset + bytes.length + 5000);
    const seen: number[] = [];
    await client().downloadBlobInto('fleet/guest', desc, fh, offset, { onProgress: (n) => seen.push(n) });
    const got = await fsp.readFile(file);
    expect(got.subarray(offset, offset + bytes.length).equals(bytes)).toBe(true);
    expect(got.subarray(0, offset).every((b) => b === 0xee)).toBe(true);
    expect(got.subarray(offset + bytes.length).every((b) => b === 0xee)).toBe(true);
    expect(fake.requests((l) => l.method === 'GET').map((l) => l.headers.range)).toEqual([undefined, 'bytes=300000-', 'bytes=600000-']);
    expect(seen.at(-1)).toBe(bytes.length);
  });

  it('bytes that do not hash to the digest are digest-mismatch naming expected and actual', async () => {
    await startFake();
    const real = randomBytes(10_000);
    const desc = descOf(real);
    const wrong = randomBytes(10_000); // same size, other bytes
    fake.blobs.set(desc.digest, wrong);
    const { fh } = await filled(20_000);
    const err = await rejection(client().downloadBlobInto('fleet/guest', desc, fh, 5000));
    expect(err.code).toBe('digest-mismatch');
    expect(err.message).toContain(`expected ${desc.digest}`);
    expect(err.message).toContain(digestOf(wrong));
    expect(err.message).toMatch(/digest/);
  });

  it('fills two regions of one file at once', async () => {
    await startFake();
    const a = randomBytes(700_000);
    const b = randomBytes(500_001);
    const da = fake.addBlob(a);
    const db = fake.addBlob(b);
    let inFlight = 0;
    let maxInFlight = 0;
    fake.override = (req, res, route) => {
      if (route.kind !== 'blobs' || req.method !== 'GET') return false;
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      const bytes = fake.blobs.get(route.ref!)!;
      res.writeHead(200, { 'content-length': bytes.length });
      // Dribble out in pieces so both bodies are in flight together.
      let at = 0;
      const next = (): void => {
        if (at >= bytes.length) {
          inFlight--;
          return void res.end();
        }
        res.write(bytes.subarray(at, (at += 64 * 1024)), () => setTimeout(next, 2));
      };
      next();
      return true;
    };
    const { file, fh } = await filled(a.length + b.length);
    const c = client();
    await Promise.all([c.downloadBlobInto('fleet/guest', db, fh, a.length), c.downloadBlobInto('fleet/guest', da, fh, 0)]);
    expect(maxInFlight).toBe(2);
    expect((await fsp.readFile(file)).equals(Buffer.concat([a, b]))).toBe(true);
  });

  it('`have` re-hashes what an earlier call wrote and resumes after it; damaged bytes are fetched again', async () => {
    await startFake();
    const bytes = randomBytes(100_000);
    const desc = fake.addBlob(bytes);
    const offset = 4096;
    const { file, fh } = await filled(offset + bytes.length);
    await fh.write(bytes, 0, 40_000, offset);
    await client().downloadBlobInto('fleet/guest', desc, fh, offset, { have: 40_000 });
    expect((await fsp.readFile(file)).subarray(offset).equals(bytes)).toBe(true);
    expect(fake.requests((l) => l.method === 'GET').map((l) => l.headers.range)).toEqual(['bytes=40000-']);

    const second = await filled(offset + bytes.length);
    await second.fh.write(randomBytes(40_000), 0, 40_000, offset); // not what the blob holds
    await client().downloadBlobInto('fleet/guest', desc, second.fh, offset, { have: 40_000 });
    expect((await fsp.readFile(second.file)).subarray(offset).equals(bytes)).toBe(true);
    expect(fake.requests((l) => l.method === 'GET').map((l) => l.headers.range).slice(1)).toEqual(['bytes=40000-', undefined]);
  });

  it('sparse: all-zero pieces stay holes, but a restart from byte 0 overwrites what an attempt wrote', async () => {
    await startFake();
    const KiB = 1024;
    // 1 MiB of zeros, then 256 KiB of data, then 1 MiB of zeros.
    const bytes = Buffer.concat([Buffer.alloc(1024 * KiB), randomBytes(256 * KiB), Buffer.alloc(1024 * KiB)]);
    const desc = fake.addBlob(bytes);
    const file = path.join(tmp, 'sparse');
    const fh = await fsp.open(file, 'w+');
    toStop.push({ stop: () => fh.close().catch(() => {}) });
    await fh.truncate(bytes.length);
    await client().downloadBlobInto('fleet/guest', desc, fh, 0, { sparse: true });
    await fh.sync();
    expect((await fsp.readFile(file)).equals(bytes)).toBe(true);
    const st = await fsp.stat(file);
    expect(st.blocks * 512).toBeLessThan(bytes.length / 2); // only the data was written

    // First attempt: garbage where the blob has zeros, then a drop; the retry ignores Range and
    // sends the real blob from 0. The zeros must be written over the garbage.
    let first = true;
    fake.override = (req, res, route) => {
      if (route.kind !== 'blobs' || req.method !== 'GET') return false;
      res.writeHead(200, { 'content-length': bytes.length });
      if (first) {
        first = false;
        res.write(randomBytes(300 * KiB), () => setTimeout(() => res.socket?.destroy(), 20));
      } else {
        res.end(bytes);
      }
      return true;
    };
    const file2 = path.join(tmp, 'sparse2');
    const fh2 = await fsp.open(file2, 'w+');
    toStop.push({ stop: () => fh2.close().catch(() => {}) });
    await fh2.truncate(bytes.length);
    await client().downloadBlobInto('fleet/guest', desc, fh2, 0, { sparse: true });
    expect((await fsp.readFile(file2)).equals(bytes)).toBe(true);
  });

  it.skipIf(!existsSync('/dev/full'))('a full disk is disk-full', async () => {
    await startFake();
    const desc = fake.addBlob(randomBytes(10_000));
    const fh = await fsp.open('/dev/full', 'r+');
    toStop.push({ stop: () => fh.close().catch(() => {}) });
    const err = await rejection(client().downloadBlobInto('fleet/guest', desc, fh, 0));
    expect(err.code).toBe('disk-full');
    expect(err.message).toContain(desc.digest);
  });
});

describe('pullBlobs', () => {
  it('regions and files together, N at a time; a digest at several offsets is fetched once and copied', async () => {
    await startFake();
    const piece = 300_000;
    const zero = fake.addBlob(Buffer.alloc(piece));
    const data = [randomBytes(piece), randomBytes(piece), randomBytes(123_456)];
    const descs = data.map((d) => fake.addBlob(d));
    const kernel = fake.addBlob(randomBytes(50_000));
    let inFlight = 0;
    let maxInFlight = 0;
    fake.override = async (req, res, route) => {
      if (route.kind !== 'blobs' || req.method !== 'GET') return false;
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      res.on('close', () => inFlight--);
      await new Promise((r) => setTimeout(r, 30));
      const bytes = fake.blobs.get(route.ref!)!;
      res.writeHead(200, { 'content-length': bytes.length });
      res.end(bytes);
      return true;
    };
    // zero, data0, zero, data1, zero, data2
    const layout = [zero, descs[0]!, zero, descs[1]!, zero, descs[2]!];
    const expected = Buffer.concat([Buffer.alloc(piece), data[0]!, Buffer.alloc(piece), data[1]!, Buffer.alloc(piece), data[2]!]);
    const file = path.join(tmp, 'disk');
    const fh = await fsp.open(file, 'w+');
    toStop.push({ stop: () => fh.close().catch(() => {}) });
    await fh.truncate(expected.length);
    let offset = 0;
    const jobs = layout.map((desc) => {
      const job = { desc, fh, offset };
      offset += desc.size;
      return job;
    });
    const progress: { bytesDone: number; bytesTotal: number }[] = [];
    await pullBlobs(client(), 'fleet/guest', [{ desc: kernel, file: path.join(tmp, 'kernel') }, ...jobs], { concurrency: 2, sparse: true, onProgress: (p) => progress.push(p) });
    expect((await fsp.readFile(file)).equals(expected)).toBe(true);
    expect(digestOf(await fsp.readFile(path.join(tmp, 'kernel')))).toBe(kernel.digest);
    const gets = fake.requests((l) => l.method === 'GET');
    expect(gets).toHaveLength(5); // kernel, zero once, 3 data pieces
    expect(maxInFlight).toBe(2);
    const total = expected.length + kernel.size;
    expect(progress.at(-1)).toEqual({ bytesDone: total, bytesTotal: total });
  });

  it('the first failure aborts the others and returns only once none writes any more; overlapping regions are refused', async () => {
    await startFake();
    const slow = fake.addBlob(randomBytes(200_000));
    const missing = descOf(randomBytes(10));
    fake.override = async (req, res, route) => {
      if (route.kind !== 'blobs' || req.method !== 'GET' || route.ref !== slow.digest) return false;
      res.writeHead(200, { 'content-length': slow.size });
      res.write(fake.blobs.get(slow.digest)!.subarray(0, 50_000)); // then stall
      return true;
    };
    const fh = await fsp.open(path.join(tmp, 'disk'), 'w+');
    toStop.push({ stop: () => fh.close().catch(() => {}) });
    const err = await rejection(pullBlobs(client(), 'fleet/guest', [{ desc: slow, fh, offset: 0 }, { desc: missing, fh, offset: slow.size }], { concurrency: 2 }));
    expect(err.code).toBe('not-found');
    expect(err.message).toContain(missing.digest);
    await expect(pullBlobs(client(), 'fleet/guest', [{ desc: slow, fh, offset: 0 }, { desc: missing, fh, offset: slow.size - 1 }])).rejects.toThrow(/overlap/);
  });
});
