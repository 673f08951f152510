// `fleet registry …` against a fake controller: the request bodies, the password rules
// (stdin with --password-stdin, a prompt on a terminal, never an argument), list and logout.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { RegistryObject } from '../client/image-types.ts';
import type { Io } from '../io.ts';
import { FakeController, sendJson } from '../testing/fake-controller.ts';
import { runCli } from '../testing/run-cli.ts';
import { promptHidden, validateRegistryHost } from './registry-credentials.ts';

let fake: FakeController;
let dir: string;
let env: Record<string, string>;

beforeEach(async () => {
  fake = await FakeController.start();
  dir = mkdtempSync(join(tmpdir(), 'fleet-cli-registry-'));
  env = { FLEET_URL: fake.url, FLEET_TOKEN: 'fleet_test_s3cr3t', FLEET_CONFIG: join(dir, 'config.json') };
});
afterEach(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

const fleet = (args: string[], opts: { stdin?: Io['stdin'] } = {}) => runCli(args, { env, ...opts });

function registry(host: string, over: Partial<RegistryObject> = {}): RegistryObject {
  return { host, username: '', passwordSet: false, insecure: false, caSet: false, createdBy: 'token:admin', createdAt: '2025-01-01T00:00:00.000Z', updatedAt: '2025-01-01T00:30:00.000Z', ...over };
}

/** Echoes the PUT body back as the stored registry. */
function acceptPut(host: string) {
  fake.on('PUT', `/v1/registries/${encodeURIComponent(host)}`, (req, res) => {
    const b = req.body as { username?: string; password?: string; insecure?: boolean; caPem?: string };
    sendJson(res, 200, registry(host, { username: b.username ?? '', passwordSet: b.password !== undefined, insecure: b.insecure === true, caSet: b.caPem !== undefined }));
  });
}

/** A terminal stdin: isTTY, a raw-mode switch that is recorded, keys typed after a moment. */
function ttyStdin(keys: string) {
  const s = new PassThrough() as PassThrough & { isTTY: boolean; setRawMode: (raw: boolean) => void; rawCalls: boolean[] };
  s.isTTY = true;
  s.rawCalls = [];
  s.setRawMode = (raw) => void s.rawCalls.push(raw);
  setTimeout(() => s.write(keys), 20);
  return s;
}

describe('registry login', () => {
  it('--password-stdin: reads the password from stdin, sends it once, never prints it', async () => {
    acceptPut('127.0.0.1:5000');
    const r = await fleet(['registry', 'login', '127.0.0.1:5000', '--username', 'ci', '--password-stdin'], { stdin: Readable.from(['t0k3n-s3cr3t\n']) });
    expect(r.code).toBe(0);
    const put = fake.requestsTo('PUT', '/v1/registries/127.0.0.1%3A5000');
    expect(put).toHaveLength(1);
    expect(put[0]!.body).toEqual({ username: 'ci', password: 't0k3n-s3cr3t', insecure: false, verify: true });
    expect(r.stdout).toBe('registry 127.0.0.1:5000 saved: user ci (password stored, write-only); https\n');
    expect(r.stdout + r.stderr).not.toContain('t0k3n-s3cr3t');
  });

  it('--insecure, --ca-file and --no-verify go into the body; anonymous without --username', async () => {
    acceptPut('registry.lan:5000');
    const ca = join(dir, 'ca.pem');
    writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    const r = await fleet(['registry', 'login', 'Registry.LAN:5000', '--ca-file', ca, '--no-verify']);
    expect(r.code).toBe(0);
    expect(fake.requests[0]!.body).toEqual({ insecure: false, verify: false, caPem: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' });
    expect(r.stdout).toBe('registry registry.lan:5000 saved: anonymous; https, extra CA (not verified)\n');

    acceptPut('127.0.0.1:5000');
    const plain = await fleet(['registry', 'login', '127.0.0.1:5000', '--insecure', '--json']);
    expect(plain.code).toBe(0);
    expect(JSON.parse(plain.stdout)).toMatchObject({ host: '127.0.0.1:5000', insecure: true, passwordSet: false });
  });

  it('--anonymous removes the stored credentials (password null)', async () => {
    acceptPut('ghcr.io');
    const r = await fleet(['registry', 'login', 'ghcr.io', '--anonymous']);
    expect(r.code).toBe(0);
    expect(fake.requests[0]!.body).toEqual({ insecure: false, verify: true, username: '', password: null });
    const both = await fleet(['registry', 'login', 'ghcr.io', '--anonymous', '--username', 'ci']);
    expect(both.code).toBe(2);
  });

  it('a password as an argument is refused, before any request', async () => {
    const r = await fleet(['registry', 'login', 'ghcr.io', '--username', 'ci', '--password', 'hunter22']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--password is not accepted: a password in an argument shows in ps and in shell history; pipe it with --password-stdin/);
    expect(fake.requests).toHaveLength(0);
    const help = await fleet(['registry', 'login', '--help']);
    expect(help.stdout).not.toMatch(/--password </);
  });

  it('--username without --password-stdin and no terminal to ask on: exit 2, nothing sent', async () => {
    const r = await fleet(['registry', 'login', 'ghcr.io', '--username', 'ci'], { stdin: Readable.from(['not-read\n']) });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/a password is needed for user "ci": give it on stdin with --password-stdin/);
    expect(fake.requests).toHaveLength(0);
  });

  it('--password-stdin without --username, or with nothing on stdin: exit 2', async () => {
    const a = await fleet(['registry', 'login', 'ghcr.io', '--password-stdin'], { stdin: Readable.from(['x\n']) });
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/--password-stdin needs --username/);
    const b = await fleet(['registry', 'login', 'ghcr.io', '--username', 'ci', '--password-stdin'], { stdin: Readable.from(['\n']) });
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/the password is empty/);
    expect(fake.requests).toHaveLength(0);
  });

  it('on a terminal: asks for the password without echo (raw mode on, then off)', async () => {
    acceptPut('ghcr.io');
    const stdin = ttyStdin('pa\x7fass\r');
    const r = await fleet(['registry', 'login', 'ghcr.io', '--username', 'ci'], { stdin });
    expect(r.code).toBe(0);
    expect(fake.requests[0]!.body).toMatchObject({ username: 'ci', password: 'pass' });
    expect(r.stderr).toBe('Password for ci@ghcr.io: \n');
    expect(stdin.rawCalls).toEqual([true, false]);
  });

  it('Ctrl-C at the prompt: exit 130, nothing sent', async () => {
    const r = await fleet(['registry', 'login', 'ghcr.io', '--username', 'ci'], { stdin: ttyStdin('abc\x03') });
    expect(r.code).toBe(130);
    expect(fake.requests).toHaveLength(0);
  });

  it('refuses a URL or a bad host, naming the host to use', async () => {
    const r = await fleet(['registry', 'login', 'https://ghcr.io/v2/']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/without a scheme: ghcr.io/);
    expect(() => validateRegistryHost('ghcr.io/org')).toThrow(/expected host\[:port\]/);
    expect(() => validateRegistryHost('host:70000')).toThrow(/port must be 1..65535/);
    expect(validateRegistryHost('[::1]:5000')).toBe('[::1]:5000');
    expect(validateRegistryHost('localhost')).toBe('localhost');
  });

  it('a controller error comes back with its exit code', async () => {
    fake.fail('PUT', '/v1/registries/ghcr.io', 400, 'registry_unverified', 'registry ghcr.io refused the credentials: 401 unauthorized');
    const r = await fleet(['registry', 'login', 'ghcr.io', '--username', 'ci', '--password-stdin'], { stdin: Readable.from(['wrong']) });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('fleet: registry ghcr.io refused the credentials: 401 unauthorized\n');
  });
});

describe('registry list and logout', () => {
  it('lists registries without any secret', async () => {
    fake.reply('GET', '/v1/registries', 200, {
      items: [registry('127.0.0.1:5000', { insecure: true }), registry('ghcr.io', { username: 'ci', passwordSet: true, caSet: false }), registry('registry.lan', { caSet: true })],
    });
    const r = await fleet(['registry', 'list']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        'HOST             USERNAME   PASSWORD   TRANSPORT                 UPDATED   BY',
        '127.0.0.1:5000   -          -          http allowed (insecure)   30m ago   token:admin',
        'ghcr.io          ci         set        https                     30m ago   token:admin',
        'registry.lan     -          -          https, extra CA           30m ago   token:admin',
        '',
      ].join('\n'),
    );
    fake.reply('GET', '/v1/registries', 200, { items: [] });
    const empty = await fleet(['registry', 'ls']);
    expect(empty.stdout).toBe('');
    expect(empty.stderr).toMatch(/No registries configured/);
  });

  it('logout deletes the registry (URL-encoded host); 404 is exit 3', async () => {
    fake.reply('DELETE', '/v1/registries/127.0.0.1%3A5000', 204);
    const r = await fleet(['registry', 'logout', '127.0.0.1:5000']);
    expect(r).toMatchObject({ code: 0, stdout: 'registry 127.0.0.1:5000 removed: its credentials are deleted from the controller\n' });
    fake.fail('DELETE', '/v1/registries/ghcr.io', 404, 'not_found', 'registry "ghcr.io" not found');
    const missing = await fleet(['registry', 'logout', 'ghcr.io', '--json']);
    expect(missing.code).toBe(3);
  });
});

describe('promptHidden', () => {
  it('works without raw mode (a terminal stdin that cannot switch), and Ctrl-U clears', async () => {
    const s = new PassThrough() as PassThrough & { isTTY: boolean };
    s.isTTY = true;
    setTimeout(() => s.write('wrong\x15right\n'), 5);
    let err = '';
    const got = await promptHidden({ stdin: s, stdout: { write: () => true }, stderr: { write: (c: string) => (err += c) }, env: {} }, 'Password: ');
    expect(got).toBe('right');
    expect(err).toBe('Password: \n');
  });
});
