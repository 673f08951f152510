// `fleet image push --bundle|--disk` from this machine against the real registry (Debian's
// docker-registry on loopback, once plain, once with htpasswd auth and TLS from a test CA),
// checked with skopeo as an independent client: the tag resolves to the digest the CLI printed,
// the manifest carries the Tart / Fleet qemu media types, and skopeo copies every blob.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { registryToolsMissing, startTestRegistry, type TestRegistry } from '@fleet/oci/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../testing/run-cli.ts';

const execFileAsync = promisify(execFile);
const missing = registryToolsMissing();
if (missing) console.warn(`\n!!! SKIPPED: fleet image push --bundle/--disk against a real registry: ${missing}\n`);

const MiB = 1024 * 1024;
let tmp: string;

async function skopeo(args: string[]): Promise<string> {
  const env = { ...process.env, HOME: tmp, XDG_RUNTIME_DIR: tmp, REGISTRY_AUTH_FILE: path.join(tmp, 'auth.json') };
  try {
    const { stdout } = await execFileAsync('skopeo', ['--insecure-policy', ...args], { env, maxBuffer: 64 * MiB });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`skopeo ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`, { cause: err });
  }
}

const sha256 = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;

/** A small disk: random boot sector, text, zeros, a non-zero end. */
async function writeDisk(file: string, size: number): Promise<void> {
  const b = Buffer.alloc(size);
  randomBytes(MiB).copy(b, 0);
  b.write('fleet test disk\n'.repeat(4096), 2 * MiB, 'latin1');
  b.write('END', size - 3, 'latin1');
  await fsp.writeFile(file, b);
}

/** A Tart VM bundle as `tart` leaves it: config.json, disk.img, nvram.bin. */
async function writeTartBundle(dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const config = { version: 1, os: 'linux', arch: 'arm64', cpuCountMin: 2, cpuCount: 2, memorySizeMin: 1073741824, memorySize: 2147483648, macAddress: '7e:4a:1c:2b:9d:01', display: { width: 1024, height: 768 }, diskFormat: 'raw' };
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify(config));
  await writeDisk(path.join(dir, 'disk.img'), 6 * MiB);
  await fsp.writeFile(path.join(dir, 'nvram.bin'), randomBytes(128 * 1024));
}

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'fleet-cli-push-'));
});
afterAll(async () => {
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

describe.skipIf(missing !== undefined)('fleet image push (local) to docker-registry over plain HTTP', () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    reg = await startTestRegistry();
  }, 60_000);
  afterAll(async () => {
    await reg?.stop();
  });

  it('--disk with a kernel: a Fleet qemu image whose digest skopeo confirms, every blob copied', async () => {
    const disk = path.join(tmp, 'guest.raw');
    const kernel = path.join(tmp, 'vmlinuz');
    const initrd = path.join(tmp, 'initrd.img');
    await writeDisk(disk, 8 * MiB);
    await fsp.writeFile(kernel, randomBytes(300 * 1024));
    await fsp.writeFile(initrd, randomBytes(200 * 1024));
    const ref = `${reg.host}/fleet/guest:1`;
    const r = await runCli(['image', 'push', '--disk', disk, '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0', '--architecture', 'amd64', '--insecure', '--work-dir', tmp, ref], { env: {} });
    expect(r.code, r.stderr).toBe(0);
    const digest = r.stdout.trim();
    expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(r.stderr).toMatch(/pushing 127\.0\.0\.1:\d+\/fleet\/guest:1  \[##########\] 100 %  .* done/);
    expect(r.stderr).toContain(`pushed ${ref}`);
    expect(r.stderr).not.toMatch(/\r|\x1b/);

    const raw = await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
    expect(sha256(raw)).toBe(digest);
    const manifest = JSON.parse(raw) as { config: { mediaType: string }; layers: { mediaType: string }[] };
    expect(manifest.config.mediaType).toMatch(/fleet/);
    expect(manifest.layers.map((l) => l.mediaType).some((m) => /kernel/.test(m))).toBe(true);
    expect(manifest.layers.map((l) => l.mediaType).some((m) => /initrd/.test(m))).toBe(true);
    await skopeo(['copy', '--all', '--preserve-digests', '--src-tls-verify=false', `docker://${ref}`, `dir:${path.join(tmp, 'copy-qemu')}`]);
    // the work dir is cleaned up
    expect((await fsp.readdir(tmp)).filter((e) => e.startsWith('fleet-push-'))).toEqual([]);

    // --json: the result object
    const again = await runCli(['image', 'push', '--disk', disk, '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0', '--architecture', 'amd64', '--insecure', ref, '--json'], { env: {} });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ reference: ref, format: 'fleet-qemu', mediaType: 'application/vnd.oci.image.manifest.v1+json' });
    expect(again.stderr).toBe('');
  }, 120_000);

  it('--bundle: a Tart image (Tart media types), readable by skopeo', async () => {
    const bundle = path.join(tmp, 'bundle');
    await writeTartBundle(bundle);
    const ref = `${reg.host}/fleet/tart-linux:latest`;
    const r = await runCli(['image', 'push', '--bundle', bundle, '--insecure', ref], { env: {} });
    expect(r.code, r.stderr).toBe(0);
    const raw = await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
    expect(sha256(raw)).toBe(r.stdout.trim());
    const manifest = JSON.parse(raw) as { config: { mediaType: string }; layers: { mediaType: string }[] };
    // As Tart lays it out: an OCI config stub, Tart's config.json as the first layer, disk pieces, NVRAM.
    expect(manifest.config.mediaType).toBe('application/vnd.oci.image.config.v1+json');
    expect(manifest.layers[0]!.mediaType).toBe('application/vnd.cirruslabs.tart.config.v1');
    expect(manifest.layers.map((l) => l.mediaType)).toContain('application/vnd.cirruslabs.tart.disk.v2');
    expect(manifest.layers.map((l) => l.mediaType)).toContain('application/vnd.cirruslabs.tart.nvram.v1');
    await skopeo(['copy', '--all', '--preserve-digests', '--src-tls-verify=false', `docker://${ref}`, `dir:${path.join(tmp, 'copy-tart')}`]);
  }, 120_000);

  it('without --insecure, an HTTP registry is a clear error, not a silent downgrade', async () => {
    const disk = path.join(tmp, 'small.raw');
    await writeDisk(disk, 4 * MiB);
    const r = await runCli(['image', 'push', '--disk', disk, `${reg.host}/fleet/guest:tls`], { env: {} });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^fleet: pushing to 127\.0\.0\.1:\d+\/fleet\/guest:tls: /m);
  }, 60_000);
});

describe.skipIf(missing !== undefined)('fleet image push (local) to docker-registry with htpasswd auth and TLS from a test CA', () => {
  let reg: TestRegistry;
  const auth = { username: 'fleet', password: 'pushpass-123' };
  beforeAll(async () => {
    reg = await startTestRegistry({ auth, tls: true });
  }, 60_000);
  afterAll(async () => {
    await reg?.stop();
  });

  it('--username with --password-stdin and --ca-file pushes; a wrong password is exit 4', async () => {
    const ca = path.join(tmp, 'registry-ca.pem');
    await fsp.writeFile(ca, reg.caPem!);
    const disk = path.join(tmp, 'auth.raw');
    await writeDisk(disk, 4 * MiB);
    const ref = `${reg.host}/fleet/private:1`;
    const ok = await runCli(['image', 'push', '--disk', disk, '--ca-file', ca, '--username', auth.username, '--password-stdin', ref], { env: {}, stdin: Readable.from([`${auth.password}\n`]) });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr + ok.stdout).not.toContain(auth.password);
    const raw = await skopeo(['inspect', '--raw', '--cert-dir', reg.certDir!, '--creds', `${auth.username}:${auth.password}`, `docker://${ref}`]);
    expect(sha256(raw)).toBe(ok.stdout.trim());

    const bad = await runCli(['image', 'push', '--disk', disk, '--ca-file', ca, '--username', auth.username, '--password-stdin', `${reg.host}/fleet/private:2`], { env: {}, stdin: Readable.from(['wrong-password\n']) });
    expect(bad.code).toBe(4);
    expect(bad.stderr).toMatch(/^fleet: pushing to .*fleet\/private:2: /m);

    // Without the CA the registry's certificate is not trusted: refused, never skipped.
    const untrusted = await runCli(['image', 'push', '--disk', disk, '--username', auth.username, '--password-stdin', `${reg.host}/fleet/private:3`], { env: {}, stdin: Readable.from([`${auth.password}\n`]) });
    expect(untrusted.code).toBe(5);
  }, 120_000);
});
