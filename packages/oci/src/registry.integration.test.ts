// RegistryClient against the real CNCF distribution registry (Debian's docker-registry
// 2.8), cross-checked with skopeo: what we push, skopeo reads byte for byte, and what
// skopeo pushes, we pull byte for byte.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MANIFEST_MEDIA_TYPES, RegistryClient, type Descriptor } from './client.ts';
import { OciError } from './errors.ts';
import { downloadBlobs } from './pull.ts';
import { registryToolsMissing, startTestRegistry, type TestRegistry } from './testing/registry-server.ts';

const execFileAsync = promisify(execFile);
const missing = registryToolsMissing();
if (missing) console.warn(`\n!!! ${missing}\n`);

const CONFIG_TYPE = 'application/vnd.fleet.test.config.v1+json';
const LAYER_TYPE = 'application/vnd.fleet.test.layer.v1';

function sha256(b: Buffer): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

function desc(bytes: Buffer, mediaType: string): Descriptor {
  return { mediaType, digest: sha256(bytes), size: bytes.length };
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

let tmp: string;

/** Runs skopeo with a private HOME so no user auth file or policy leaks in. */
async function skopeo(args: string[]): Promise<{ stdout: Buffer; stderr: string }> {
  const env = { ...process.env, HOME: tmp, XDG_RUNTIME_DIR: tmp, REGISTRY_AUTH_FILE: path.join(tmp, 'auth.json') };
  try {
    const { stdout, stderr } = await execFileAsync('skopeo', ['--insecure-policy', ...args], { env, encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 });
    return { stdout, stderr: stderr.toString() };
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`skopeo ${args.join(' ')} failed: ${e.stderr?.toString().trim() || e.message}`, { cause: err });
  }
}

/** Pushes an artifact-style image (custom config and layer media types) with the client. */
async function pushArtifact(c: RegistryClient, repo: string, tag: string): Promise<{ manifest: Buffer; config: Buffer; layer: Buffer; digest: string }> {
  const config = Buffer.from(JSON.stringify({ fleet: 'test', created: new Date(0).toISOString() }));
  const layer = randomBytes(3 * 1024 * 1024 + 17);
  const layerFile = path.join(tmp, `layer-${randomBytes(4).toString('hex')}`);
  await fsp.writeFile(layerFile, layer);
  const cd = desc(config, CONFIG_TYPE);
  const ld = desc(layer, LAYER_TYPE);
  await c.uploadBlobBytes(repo, config, cd);
  await c.uploadBlob(repo, layerFile, ld);
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST_MEDIA_TYPES.ociManifest, config: cd, layers: [ld], annotations: { 'org.fleet.test': 'yes' } }));
  const digest = await c.putManifest(repo, tag, manifest, MANIFEST_MEDIA_TYPES.ociManifest);
  return { manifest, config, layer, digest };
}

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'fleet-oci-it-'));
});

afterAll(async () => {
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

describe.skipIf(missing !== undefined)('docker-registry over plain HTTP (insecure)', () => {
  let reg: TestRegistry;
  let c: RegistryClient;

  beforeAll(async () => {
    reg = await startTestRegistry();
    c = new RegistryClient({ registry: reg.host, insecure: true });
  }, 60_000);

  afterAll(async () => {
    c?.close();
    await reg?.stop();
  });

  it('what the client pushes (custom media types) skopeo reads and copies byte for byte', async () => {
    await c.ping();
    const { manifest, config, layer, digest } = await pushArtifact(c, 'fleet/artifact', 'v1');
    expect(await c.resolve('fleet/artifact', 'v1')).toEqual({ mediaType: MANIFEST_MEDIA_TYPES.ociManifest, digest, size: manifest.length });

    const raw = await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/fleet/artifact:v1`]);
    expect(raw.stdout.equals(manifest)).toBe(true);
    const rawConfig = await skopeo(['inspect', '--config', '--raw', '--tls-verify=false', `docker://${reg.host}/fleet/artifact:v1`]);
    expect(rawConfig.stdout.equals(config)).toBe(true);
    // Without --raw skopeo 1.9 wants to interpret the config as an image config and refuses.
    await expect(skopeo(['inspect', '--tls-verify=false', `docker://${reg.host}/fleet/artifact:v1`])).rejects.toThrow(/unsupported image-specific operation on artifact/);

    const dirDest = path.join(tmp, 'skopeo-dir');
    await skopeo(['copy', '--all', '--preserve-digests', '--src-tls-verify=false', `docker://${reg.host}/fleet/artifact:v1`, `dir:${dirDest}`]);
    expect((await fsp.readFile(path.join(dirDest, 'manifest.json'))).equals(manifest)).toBe(true);
    expect((await fsp.readFile(path.join(dirDest, sha256(layer).slice(7)))).equals(layer)).toBe(true);

    const ociDest = path.join(tmp, 'skopeo-oci');
    await skopeo(['copy', '--all', '--preserve-digests', '--src-tls-verify=false', `docker://${reg.host}/fleet/artifact:v1`, `oci:${ociDest}:v1`]);
    const index = JSON.parse(await fsp.readFile(path.join(ociDest, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
    expect(index.manifests[0]!.digest).toBe(digest);
    expect((await fsp.readFile(path.join(ociDest, 'blobs', 'sha256', digest.slice(7)))).equals(manifest)).toBe(true);
    expect((await fsp.readFile(path.join(ociDest, 'blobs', 'sha256', sha256(layer).slice(7)))).equals(layer)).toBe(true);

    // And our own pull of it verifies.
    const got = await c.getImageManifest('fleet/artifact', 'v1', { os: 'linux', architecture: 'amd64' });
    expect(got.manifest.bytes.equals(manifest)).toBe(true);
    expect((await c.getBlob('fleet/artifact', desc(config, CONFIG_TYPE), 1 << 20)).equals(config)).toBe(true);
  });

  it('what skopeo pushes from a hand-built multi-arch OCI layout the client pulls byte for byte', async () => {
    const layout = path.join(tmp, 'layout');
    await fsp.mkdir(path.join(layout, 'blobs', 'sha256'), { recursive: true });
    const blobs = new Map<string, Buffer>();
    const put = async (b: Buffer, mediaType: string): Promise<Descriptor> => {
      const d = desc(b, mediaType);
      blobs.set(d.digest, b);
      await fsp.writeFile(path.join(layout, 'blobs', 'sha256', d.digest.slice(7)), b);
      return d;
    };
    const perArch = new Map<string, { manifest: Descriptor; config: Descriptor; layers: Descriptor[] }>();
    for (const architecture of ['amd64', 'arm64']) {
      const layers = [await put(randomBytes(700_000), LAYER_TYPE), await put(randomBytes(1234), LAYER_TYPE)];
      const config = await put(Buffer.from(JSON.stringify({ architecture, os: 'linux', fleet: true })), CONFIG_TYPE);
      const manifest = await put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST_MEDIA_TYPES.ociManifest, config, layers })), MANIFEST_MEDIA_TYPES.ociManifest);
      perArch.set(architecture, { manifest, config, layers });
    }
    const indexBytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MANIFEST_MEDIA_TYPES.ociIndex,
        manifests: [...perArch].map(([architecture, p]) => ({ ...p.manifest, platform: { os: 'linux', architecture } })),
      }),
    );
    const index = await put(indexBytes, MANIFEST_MEDIA_TYPES.ociIndex);
    await fsp.writeFile(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    await fsp.writeFile(path.join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ ...index, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }] }));

    await skopeo(['copy', '--all', '--preserve-digests', '--dest-tls-verify=false', `oci:${layout}:multi`, `docker://${reg.host}/fleet/multi:1.0`]);

    const resolved = await c.resolve('fleet/multi', '1.0');
    expect(resolved).toEqual({ mediaType: MANIFEST_MEDIA_TYPES.ociIndex, digest: index.digest, size: index.size });
    const arm = perArch.get('arm64')!;
    const got = await c.getImageManifest('fleet/multi', resolved.digest, { os: 'linux', architecture: 'arm64' });
    expect(got.index?.bytes.equals(indexBytes)).toBe(true);
    expect(got.manifest.digest).toBe(arm.manifest.digest);
    const noPlatform = await rejection(c.getImageManifest('fleet/multi', '1.0', { os: 'linux', architecture: 'riscv64' }));
    expect(noPlatform.code).toBe('no-platform');
    expect(noPlatform.message).toContain('linux/amd64, linux/arm64');

    const dir = path.join(tmp, 'pulled');
    const progress: number[] = [];
    const paths = await downloadBlobs(c, 'fleet/multi', [arm.config, ...arm.layers], dir, { onProgress: (p) => progress.push(p.bytesDone) });
    for (const d of [arm.config, ...arm.layers]) {
      expect((await fsp.readFile(paths.get(d.digest)!)).equals(blobs.get(d.digest)!)).toBe(true);
    }
    expect(progress.at(-1)).toBe(arm.config.size + arm.layers.reduce((n, l) => n + l.size, 0));
  });

  it('a tag deleted after resolve is not-found by tag while the pinned digest still pulls; deleting the digest removes it', async () => {
    const { digest, manifest } = await pushArtifact(c, 'fleet/deleted', 'v1');
    expect((await c.resolve('fleet/deleted', 'v1')).digest).toBe(digest);

    // distribution 2.8 cannot DELETE a tag over the API (it answers 400 DIGEST_INVALID),
    // so untag the way garbage-collecting operators do: remove the tag from storage.
    const untag = await fetch(`http://${reg.host}/v2/fleet/deleted/manifests/v1`, { method: 'DELETE' });
    expect(untag.status).toBe(400);
    const tagDir = path.join(reg.dataDir, 'docker', 'registry', 'v2', 'repositories', 'fleet', 'deleted', '_manifests', 'tags', 'v1');
    await fsp.rm(tagDir, { recursive: true });
    const byTag = await rejection(c.getManifest('fleet/deleted', 'v1'));
    expect(byTag.code).toBe('not-found');
    expect(byTag.message).toContain('fleet/deleted:v1');
    expect((await c.getManifest('fleet/deleted', digest)).bytes.equals(manifest)).toBe(true);

    // Deleting by digest (202) removes the manifest and the tags that point at it.
    expect(await c.putManifest('fleet/deleted', 'v2', manifest, MANIFEST_MEDIA_TYPES.ociManifest)).toBe(digest);
    const res = await fetch(`http://${reg.host}/v2/fleet/deleted/manifests/${digest}`, { method: 'DELETE' });
    expect(res.status).toBe(202);
    const byDigest = await rejection(c.getManifest('fleet/deleted', digest));
    expect(byDigest.code).toBe('not-found');
    expect(byDigest.message).toContain(`fleet/deleted@${digest}`);
    expect((await rejection(c.resolve('fleet/deleted', 'v2'))).code).toBe('not-found');
  });

  it('an HTTPS client refuses this plain-HTTP registry and says how to allow it', async () => {
    const err = await rejection(new RegistryClient({ registry: reg.host }).ping());
    expect(err.code).toBe('insecure-refused');
    expect(err.message).toContain(`fleet registry login ${reg.host} --insecure`);
  });
});

describe.skipIf(missing !== undefined)('docker-registry with htpasswd auth and TLS from a test CA', () => {
  let reg: TestRegistry;
  const auth = { username: 'fleet', password: 'correct horse' };

  beforeAll(async () => {
    reg = await startTestRegistry({ auth, tls: true });
  }, 60_000);

  afterAll(async () => {
    await reg?.stop();
  });

  it('wrong password is unauthorized with a clear message', async () => {
    const c = new RegistryClient({ registry: reg.host, caPem: reg.caPem!, username: auth.username, password: 'Xyzzy-not-it' });
    const err = await rejection(c.ping());
    expect(err.code).toBe('unauthorized');
    expect(err.message).toContain(`registry ${reg.host} answered 401`);
    expect(err.message).toContain(`fleet registry login ${reg.host}`);
    expect(err.message).not.toContain('Xyzzy-not-it');
    const anonymous = await rejection(new RegistryClient({ registry: reg.host, caPem: reg.caPem! }).resolve('fleet/x', 'v1'));
    expect(anonymous.code).toBe('unauthorized');
    c.close();
  });

  it('the right password with the CA works end to end, and skopeo agrees', async () => {
    const c = new RegistryClient({ registry: reg.host, caPem: reg.caPem!, username: auth.username, password: auth.password });
    await c.ping();
    const { manifest, layer, digest } = await pushArtifact(c, 'fleet/secure', 'v1');
    const dest = path.join(tmp, 'secure-layer');
    await c.downloadBlob('fleet/secure', desc(layer, LAYER_TYPE), dest);
    expect((await fsp.readFile(dest)).equals(layer)).toBe(true);
    const raw = await skopeo(['inspect', '--raw', '--cert-dir', reg.certDir!, '--creds', `${auth.username}:${auth.password}`, `docker://${reg.host}/fleet/secure@${digest}`]);
    expect(raw.stdout.equals(manifest)).toBe(true);
    c.close();
  });

  it('without the CA the certificate is not trusted: tls', async () => {
    const err = await rejection(new RegistryClient({ registry: reg.host, username: auth.username, password: auth.password }).ping());
    expect(err.code).toBe('tls');
    expect(err.message).toContain('not trusted');
  });

  it('insecure (plain HTTP) against this TLS registry fails clearly', async () => {
    const c = new RegistryClient({ registry: reg.host, insecure: true, username: auth.username, password: auth.password });
    // One at a time: a second promise created up front would reject before it is awaited.
    for (const call of [() => c.ping(), () => c.resolve('fleet/secure', 'v1')]) {
      const err = await rejection(call());
      expect(err.code).toBe('tls');
      expect(err.message).toContain('requires HTTPS but was marked insecure');
    }
    c.close();
  });
});
