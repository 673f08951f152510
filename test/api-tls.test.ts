// The REST API over TLS: a real controller with --api-tls on serves HTTPS with a
// certificate from its own CA, refuses plain HTTP, upgrades session WebSockets over
// TLS; the real CLI pins that CA with `fleet context add --ca-fingerprint` and then
// refuses a controller presenting any other CA.
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { certificateFingerprint, createCertificateAuthority } from '@fleet/pki';
import { REPO_ROOT, startControllerProcess, startProcess, tempDir, type ControllerProcess } from './support/fleet-processes.ts';

const FLEET = path.join(REPO_ROOT, 'apps/cli/bin/fleet.js');
const CONTROLLER_MAIN = path.join(REPO_ROOT, 'apps/controller/bin/fleet-controller.js');

let controller: ControllerProcess;
let caPem: string;
let caFingerprint: string;
let configDir: string;

function fleet(args: string[], configFile: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [FLEET, ...args], { cwd: REPO_ROOT, env: { ...process.env, FLEET_CONFIG: configFile, FLEET_URL: '', FLEET_TOKEN: '', FLEET_CONTEXT: '' } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    child.stdin?.end(); // not a terminal: the CLI must never ask
  });
}

beforeAll(async () => {
  const dataDir = await tempDir('api-tls');
  configDir = await tempDir('api-tls-cli');
  controller = await startControllerProcess({ dataDir, extraArgs: ['--api-tls', 'on'] });
  caPem = await readFile(path.join(dataDir, 'pki', 'ca.pem'), 'utf8');
  caFingerprint = certificateFingerprint(caPem);
}, 90_000);

afterAll(async () => {
  await controller?.kill();
});

describe('controller with --api-tls on', () => {
  it('serves HTTPS with a certificate chaining to its CA, and prints and logs that CA fingerprint', async () => {
    expect(controller.apiUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(controller.output()).toContain(`CA fingerprint: ${caFingerprint}`);
    const printed = startProcess([CONTROLLER_MAIN, 'ca-fingerprint', '--data-dir', controller.dataDir]);
    expect(await printed.exited).toBe(0);
    expect(printed.output().trim()).toBe(caFingerprint);

    const url = new URL(controller.apiUrl);
    const authorized = await new Promise<boolean>((resolve, reject) => {
      const s = tls.connect({ host: url.hostname, port: Number(url.port), ca: caPem }, () => {
        resolve(s.authorized);
        s.end();
      });
      s.on('error', reject);
    });
    expect(authorized).toBe(true);
    const res = await fetch(`${controller.apiUrl}/v1/whoami`).catch((err: unknown) => err);
    expect(res, 'Node does not trust the controller CA by default').toBeInstanceOf(Error);
  });

  it('does not answer plain HTTP on the API port', async () => {
    const plain = controller.apiUrl.replace(/^https:/, 'http:');
    const outcome = await fetch(`${plain}/v1/whoami`, { headers: { authorization: `Bearer ${controller.adminToken}` }, signal: AbortSignal.timeout(5000) }).then(
      (r) => `HTTP ${r.status}`,
      () => 'failed',
    );
    expect(outcome).toBe('failed');
  });

  it('upgrades the session WebSocket over TLS (and the route answers behind it)', async () => {
    const wsUrl = `${controller.apiUrl.replace(/^https:/, 'wss:')}/v1/vms/no-such-vm/session`;
    const status = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(wsUrl, ['fleet.v1'], { ca: caPem, headers: { authorization: `Bearer ${controller.adminToken}` } });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => {
        ws.send(JSON.stringify({ type: 'start', kind: 'exec', command: ['true'] }));
      });
      ws.on('close', (code) => resolve(code));
      ws.on('error', reject);
    });
    // The session route itself answered (the unknown VM is refused before the upgrade
    // with 404): TLS, the token and the upgrade path all worked.
    expect(status).toBe(404);

    const wrongCa = (await createCertificateAuthority({ commonName: 'Someone else CA' })).certPem;
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
      const ws = new WebSocket(wsUrl, ['fleet.v1'], { ca: wrongCa, headers: { authorization: `Bearer ${controller.adminToken}` } });
      ws.on('error', (e: NodeJS.ErrnoException) => resolve(e));
    });
    expect(err.code).toMatch(/CERT|SIGNATURE|VERIFY/);
  });
});

describe('fleet context add against an https controller', () => {
  it('pins the CA when the fingerprint matches, and every later request trusts it', async () => {
    const config = path.join(configDir, 'ok.json');
    const added = await fleet(['context', 'add', 'tls', '--url', controller.apiUrl, '--token', controller.adminToken, '--ca-fingerprint', caFingerprint.toUpperCase().replace(/(..)(?!$)/g, '$1:')], config);
    expect(added.stderr).toBe('');
    expect(added.code).toBe(0);
    const saved = JSON.parse(await readFile(config, 'utf8')) as { currentContext: string; contexts: Record<string, { caPem?: string; url: string }> };
    expect(saved.currentContext).toBe('tls');
    expect(certificateFingerprint(saved.contexts.tls!.caPem!)).toBe(caFingerprint);

    const shown = await fleet(['context', 'show', '--json'], config);
    expect(JSON.parse(shown.stdout)).toMatchObject({ context: 'tls', url: controller.apiUrl, caPinned: true });
    const who = await fleet(['whoami'], config);
    expect(who.code).toBe(0);
    expect(who.stdout).toContain('admin');
    const created = await fleet(['vm', 'create', 'tls-vm', '--image', 'img'], config);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    const list = await fleet(['vm', 'list', '--json'], config);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain('tls-vm');
  });

  it('completes a session WebSocket upgrade over TLS for an existing VM', async () => {
    const wsUrl = `${controller.apiUrl.replace(/^https:/, 'wss:')}/v1/vms/tls-vm/session`;
    const opened = await new Promise<string>((resolve, reject) => {
      const ws = new WebSocket(wsUrl, ['fleet.v1'], { ca: caPem, headers: { authorization: `Bearer ${controller.adminToken}` } });
      ws.on('open', () => {
        resolve(ws.protocol);
        ws.close();
      });
      ws.on('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.on('error', reject);
    });
    expect(opened).toBe('fleet.v1');
  });

  it('refuses a wrong fingerprint, saving nothing', async () => {
    const config = path.join(configDir, 'wrong.json');
    const r = await fleet(['context', 'add', 'tls', '--url', controller.apiUrl, '--token', controller.adminToken, '--ca-fingerprint', 'ab'.repeat(32)], config);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain(caFingerprint); // what the controller presented
    expect(r.stderr).toContain('refusing to trust it');
    await expect(readFile(config, 'utf8')).rejects.toThrow();
  });

  it('without a terminal and without --ca-fingerprint, refuses and names the flag', async () => {
    const config = path.join(configDir, 'notty.json');
    const r = await fleet(['context', 'add', 'tls', '--url', controller.apiUrl, '--token', controller.adminToken], config);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--ca-fingerprint');
    expect(r.stderr).toContain('fleet-controller ca-fingerprint');
    await expect(readFile(config, 'utf8')).rejects.toThrow();
  });

  it('accepts --ca-file with the CA PEM', async () => {
    const config = path.join(configDir, 'cafile.json');
    const file = path.join(configDir, 'ca.pem');
    await writeFile(file, caPem);
    const r = await fleet(['context', 'add', 'byfile', '--url', controller.apiUrl, '--token', controller.adminToken, '--ca-file', file], config);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('fails clearly (exit 4, no fallback to http) when the controller no longer presents the pinned CA', async () => {
    const config = path.join(configDir, 'changed.json');
    const added = await fleet(['context', 'add', 'tls', '--url', controller.apiUrl, '--token', controller.adminToken, '--ca-fingerprint', caFingerprint], config);
    expect(added.code).toBe(0);
    // Same URL, but the context now pins another CA: as if the controller's CA had changed.
    const saved = JSON.parse(await readFile(config, 'utf8')) as { contexts: Record<string, { caPem?: string }> };
    saved.contexts.tls!.caPem = (await createCertificateAuthority({ commonName: 'Some other CA' })).certPem;
    await writeFile(config, JSON.stringify(saved));
    const r = await fleet(['whoami'], config);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/does not verify against the CA pinned in context "tls"/);
    expect(r.stderr).toContain('--ca-fingerprint');
    const exec = await fleet(['exec', 'no-such-vm', '--', 'true'], config);
    expect(exec.code).toBe(4);
    expect(exec.stderr).toMatch(/TLS: the certificate/);
  });
});
