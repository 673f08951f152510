// Registry settings on a real database: the password sealed at rest (never in the clear in the
// database, a view or an event), verified against an in-process fake registry on 127.0.0.1 (the
// real @fleet/oci client: /v2/ answers 200 to the right basic credentials, 401 otherwise), and
// covered by `fleet-controller rotate-key`.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { migrateDatabase, openDatabase } from '@fleet/db';
import { createCertificateAuthority } from '@fleet/pki';
import { EventLog } from '../events/event-log.ts';
import { FleetError } from '../errors.ts';
import { FileKeyProvider, staticKeyProvider } from '../secrets/key-provider.ts';
import { RegistrySecrets } from '../secrets/registry-secrets.ts';
import { rotateKey } from '../secrets/rotate-key.ts';
import { SecretBox } from '../secrets/secret-box.ts';
import { tempDb, type TempDb } from '../storage/testing.ts';
import { checkCaPem, normalizeRegistryHost, RegistryService } from './registry-service.ts';
import { ImageResolver } from './image-resolver.ts';

const PASSWORD = 'canary-registry-PW-3b9d1f';

/** A registry that knows one user: /v2/ is 200 with the right basic credentials, 401 otherwise. */
async function fakeRegistry(user: string, password: string): Promise<{ host: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const expected = 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url} ${req.headers.authorization ? 'auth' : 'anon'}`);
    res.setHeader('docker-distribution-api-version', 'registry/2.0');
    if (req.url === '/v2/' && req.headers.authorization === expected) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    res.writeHead(401, { 'www-authenticate': 'Basic realm="fleet-test"', 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return { host: `127.0.0.1:${port}`, requests, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

async function fleetError(p: Promise<unknown>): Promise<FleetError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FleetError);
  return err as FleetError;
}

let t: TempDb;
let secrets: RegistrySecrets;
let events: EventLog;
let registries: RegistryService;
let registry: Awaited<ReturnType<typeof fakeRegistry>>;

beforeAll(async () => {
  registry = await fakeRegistry('alice', PASSWORD);
});
afterAll(async () => {
  await registry.close();
});
beforeEach(async () => {
  t = await tempDb();
  secrets = new RegistrySecrets(new SecretBox(staticKeyProvider([randomBytes(32)], 'test key')));
  events = new EventLog(t.db);
  registries = new RegistryService(t.db, secrets, events, { timeoutMs: 5000 });
});
afterEach(async () => {
  await t.close();
});

describe('normalizeRegistryHost', () => {
  it('accepts host[:port] as in image references and canonicalizes it', () => {
    expect(normalizeRegistryHost('127.0.0.1:5000')).toBe('127.0.0.1:5000');
    expect(normalizeRegistryHost('Ghcr.IO')).toBe('ghcr.io');
    expect(normalizeRegistryHost('registry.example.com:05000')).toBe('registry.example.com:5000');
    expect(normalizeRegistryHost('[::1]:5000')).toBe('[::1]:5000');
    expect(normalizeRegistryHost('[FE80::1]')).toBe('[fe80::1]');
    expect(normalizeRegistryHost('localhost:5000')).toBe('localhost:5000');
  });

  it('refuses anything else with a 400 saying why', () => {
    for (const bad of ['', 'a b', 'host:0', 'host:65536', 'host:http', '::1', '[::1', '[nope]:5000', 'host/path', '-bad.com', 'a..b', 'x'.repeat(300)]) {
      let err: unknown;
      try {
        normalizeRegistryHost(bad);
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(FleetError);
      expect((err as FleetError).statusCode).toBe(400);
    }
  });
});

describe('checkCaPem', () => {
  it('accepts X.509 PEM certificates and refuses other text', async () => {
    const ca = await createCertificateAuthority({ commonName: 'registry test CA' });
    expect(() => checkCaPem(ca.certPem)).not.toThrow();
    expect(() => checkCaPem(ca.certPem + '\n' + ca.certPem)).not.toThrow();
    expect(() => checkCaPem('hello')).toThrow(/no PEM certificate/);
    expect(() => checkCaPem(ca.certPem + ca.keyPem)).toThrow(/besides PEM certificates/);
    expect(() => checkCaPem('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n')).toThrow(/does not parse as X.509/);
  });
});

describe('RegistryService', () => {
  it('verifies the credentials against the registry, seals the password, and never shows it', async () => {
    const view = await registries.put(registry.host, { username: 'alice', password: PASSWORD, insecure: true }, 'token:admin');
    expect(view).toMatchObject({ host: registry.host, username: 'alice', passwordSet: true, insecure: true, caSet: false, createdBy: 'token:admin' });
    expect(JSON.stringify(view)).not.toContain(PASSWORD);
    expect(registry.requests.some((r) => r === 'GET /v2/ auth')).toBe(true);

    // At rest: an envelope, not the password.
    const row = await t.db.registry.findUniqueOrThrow({ where: { host: registry.host } });
    expect(row.passwordSealed).toMatch(/^fsec1\./);
    expect(JSON.stringify(row)).not.toContain(PASSWORD);
    const raw = await t.db.$queryRawUnsafe<unknown[]>('SELECT * FROM "Registry"');
    expect(JSON.stringify(raw)).not.toContain(PASSWORD);

    // Not in the list, not in the events.
    expect(JSON.stringify(await registries.list())).not.toContain(PASSWORD);
    const ev = await events.query({ limit: 10, order: 'desc', kind: 'registry.login' });
    expect(ev.events).toHaveLength(1);
    expect(ev.events[0]!.message).toContain(registry.host);
    expect(JSON.stringify(ev.events)).not.toContain(PASSWORD);

    // Workers get it through accessFor.
    expect(await registries.accessFor(registry.host)).toEqual({ insecure: true, caPem: '', username: 'alice', password: PASSWORD });
  });

  it('refuses a wrong password with a clear 422 and stores nothing', async () => {
    const err = await fleetError(registries.put(registry.host, { username: 'alice', password: 'bad-guess-71c2', insecure: true }, 'token:admin'));
    expect(err.statusCode).toBe(422);
    expect(err.code).toBe('registry_login_failed');
    expect(err.message).toContain(registry.host);
    expect(err.message).toMatch(/refused the credentials/);
    expect(err.message).not.toContain('bad-guess-71c2');
    expect(await t.db.registry.count()).toBe(0);
    expect((await events.query({ limit: 10, order: 'desc' })).events).toHaveLength(0);
  });

  it('says a registry is unreachable (502), and stores it anyway with verify=false', async () => {
    const host = `127.0.0.1:${await closedPort()}`;
    const err = await fleetError(registries.put(host, { username: 'bob', password: 'pw', insecure: true }, 'token:admin'));
    expect(err.statusCode).toBe(502);
    expect(err.code).toBe('registry_unreachable');
    expect(err.message).toMatch(/verify=false/);
    const view = await registries.put(host, { username: 'bob', password: 'pw', insecure: true, verify: false }, 'token:admin');
    expect(view.passwordSet).toBe(true);
  });

  it('refuses TLS to a plain HTTP registry unless it is marked insecure', async () => {
    const err = await fleetError(registries.put(registry.host, { username: 'alice', password: PASSWORD }, 'token:admin'));
    expect(err.statusCode).toBe(422);
    expect(err.details).toMatchObject({ cause: expect.stringMatching(/insecure-refused|tls/) });
  });

  it('keeps omitted fields, removes the password with null, and keeps the envelope when it does not change', async () => {
    await registries.put(registry.host, { username: 'alice', password: PASSWORD, insecure: true }, 'token:admin');
    const before = await t.db.registry.findUniqueOrThrow({ where: { host: registry.host } });
    // Changing only the CA keeps user and password (verified again with the stored password).
    const ca = await createCertificateAuthority({ commonName: 'registry test CA' });
    const v = await registries.put(registry.host, { caPem: ca.certPem }, 'token:other');
    expect(v).toMatchObject({ username: 'alice', passwordSet: true, insecure: true, caSet: true, createdBy: 'token:admin' });
    const after = await t.db.registry.findUniqueOrThrow({ where: { host: registry.host } });
    expect(after.passwordSealed).toBe(before.passwordSealed);
    // null removes the password.
    const anon = await registries.put(registry.host, { password: null, verify: false }, 'token:admin');
    expect(anon.passwordSet).toBe(false);
    expect((await registries.accessFor(registry.host)).password).toBe('');
  });

  it('refuses a password without a username, and a bad CA', async () => {
    expect((await fleetError(registries.put('r.example.com', { password: 'x', verify: false }, 'a'))).statusCode).toBe(400);
    expect((await fleetError(registries.put('r.example.com', { caPem: 'not a cert', verify: false }, 'a'))).statusCode).toBe(400);
  });

  it('gives unknown registries anonymous TLS access, and matches hosts case-insensitively', async () => {
    expect(await registries.accessFor('ghcr.io')).toEqual({ insecure: false, caPem: '', username: '', password: '' });
    await registries.put('Registry.Example.com:5000', { username: 'u', password: 'p', verify: false }, 'a');
    expect((await registries.accessFor('registry.example.com:5000')).username).toBe('u');
    const many = await registries.accessForHosts(['REGISTRY.example.com:5000', 'ghcr.io', 'not a host']);
    expect(many.get('REGISTRY.example.com:5000')?.password).toBe('p');
    expect(many.get('ghcr.io')?.username).toBe('');
    expect(many.has('not a host')).toBe(false);
  });

  it('removes a registry (404 when unknown), with an event', async () => {
    await registries.put('r.example.com', { username: 'u', password: 'p', verify: false }, 'a');
    await registries.remove('R.example.com', 'token:admin');
    expect(await t.db.registry.count()).toBe(0);
    expect((await fleetError(registries.remove('r.example.com', 'token:admin'))).statusCode).toBe(404);
    expect((await events.query({ limit: 10, order: 'desc', kind: 'registry.logout' })).events).toHaveLength(1);
  });

  it('binds each envelope to its row: a password copied onto another registry does not open there', async () => {
    await registries.put('a.example.com', { username: 'u', password: 'secret-a', verify: false }, 'x');
    await registries.put('b.example.com', { username: 'u', password: 'secret-b', verify: false }, 'x');
    const a = await t.db.registry.findUniqueOrThrow({ where: { host: 'a.example.com' } });
    await t.db.registry.update({ where: { host: 'b.example.com' }, data: { passwordSealed: a.passwordSealed } });
    await expect(registries.accessFor('b.example.com')).rejects.toThrow(/failed authentication/);
  });
});

describe('rotate-key covers registry passwords', () => {
  it('re-wraps them under the new key; they still open, and nothing is left under the old key', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'fleet-rotate-registry-'));
    try {
      const url = `file:${path.join(dataDir, 'fleet.db')}`;
      await migrateDatabase(url);
      const running = new RegistrySecrets(new SecretBox(await FileKeyProvider.load(path.join(dataDir, 'secrets.key'), { create: true })));
      const db = openDatabase({ url });
      try {
        const svc = new RegistryService(db, running, new EventLog(db));
        for (let i = 0; i < 7; i++) await svc.put(`r${i}.example.com`, { username: 'u', password: `pw-${i}`, verify: false }, 'test');
        await svc.put('anon.example.com', { verify: false }, 'test');
        const oldId = running.box.keys.current().id;
        expect(await running.envelopesByKek(db)).toEqual(new Map([[oldId, 7]]));
        const lines: string[] = [];
        const r = await rotateKey({ dataDir, env: {}, db, batch: 3, say: (l) => lines.push(l) });
        expect(r.current).not.toBe(oldId);
        expect(r.registries).toEqual({ rows: 7, moved: 7 });
        expect(r.byKey).toEqual(new Map([[r.current, 7]]));
        expect(lines.join('\n')).toContain('re-wrapped the passwords of 7 registries');
        // The running controller reloads its keyring on the new key id and opens them.
        for (let i = 0; i < 7; i++) expect((await svc.accessFor(`r${i}.example.com`)).password).toBe(`pw-${i}`);
        // Nothing left to move.
        const again = await rotateKey({ dataDir, env: {}, db, rewrapOnly: true });
        expect(again.registries.moved).toBe(0);
      } finally {
        await db.$disconnect();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('registry policy (--registries known)', () => {
  it('"known" refuses a registry no admin added (403 registry_not_allowed, naming the fix), for resolution too; "any" allows all', async () => {
    const known = new RegistryService(t.db, secrets, events, { timeoutMs: 5000, policy: 'known' });
    const err = await known.assertAllowed('ghcr.io').then(() => undefined, (e: unknown) => e as FleetError);
    expect(err).toMatchObject({ statusCode: 403, code: 'registry_not_allowed' });
    expect(err!.message).toMatch(/fleet registry login ghcr\.io/);
    const resolved = await new ImageResolver(known).resolve('ghcr.io/org/macos:15').then(() => undefined, (e: unknown) => e as FleetError);
    expect(resolved).toMatchObject({ statusCode: 403, code: 'registry_not_allowed' });
    await known.put('ghcr.io', { verify: false }, 'token:admin'); // anonymous, but known
    await expect(known.assertAllowed('GHCR.io')).resolves.toBeUndefined();
    await expect(registries.assertAllowed('anything.example:5000')).resolves.toBeUndefined();
  });
});
