// Tag → digest resolution and how registry failures reach the API: against an in-process fake
// registry on 127.0.0.1 through the real @fleet/oci client, and against a scripted client for the
// error mapping.
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OciError } from '@fleet/oci';
import { FleetError } from '../errors.ts';
import { firstPlatformManifest, ImageResolver, type ManifestSource } from './image-resolver.ts';
import { imagePullFor, imagePullsFor, pinnedImageOf } from './image-pulls.ts';
import { ANONYMOUS_ACCESS } from './registry-service.ts';

const sha256 = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const MANIFEST = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.fleet.qemu.config.v1+json', digest: 'sha256:' + '1'.repeat(64), size: 10 },
    layers: [],
  }),
);
const DIGEST = sha256(MANIFEST);
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** Serves fleet/guest:1 (and by digest); everything else is MANIFEST_UNKNOWN. */
async function fakeRegistry(): Promise<{ host: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.url === '/v2/') return void res.writeHead(200).end('{}');
    const m = /^\/v2\/fleet\/guest\/manifests\/(.+)$/.exec(req.url ?? '');
    if (m && (m[1] === '1' || m[1] === DIGEST)) {
      res.writeHead(200, { 'content-type': OCI_MANIFEST, 'docker-content-digest': DIGEST, 'content-length': String(MANIFEST.length) });
      return void res.end(req.method === 'HEAD' ? undefined : MANIFEST);
    }
    const body = JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] });
    res.writeHead(404, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { host: `127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

async function rejection(p: Promise<unknown>): Promise<FleetError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FleetError);
  return err as FleetError;
}

let registry: Awaited<ReturnType<typeof fakeRegistry>>;
beforeAll(async () => {
  registry = await fakeRegistry();
});
afterAll(async () => {
  await registry.close();
});

/** The fake registry is plain HTTP: the operator marked it insecure. */
const insecure = { accessFor: async () => ({ ...ANONYMOUS_ACCESS, insecure: true }) };

describe('ImageResolver against a registry', () => {
  it('leaves local image names alone', async () => {
    const r = new ImageResolver({ accessFor: async () => { throw new Error('must not be asked'); } });
    for (const local of ['fleet-guest', 'ubuntu:24.04', 'debian-12.qcow2']) expect(await r.resolve(local)).toEqual({ imageDigest: '', pinned: local });
  });

  it('resolves a tag to the manifest digest, and confirms a digest exists', async () => {
    const r = new ImageResolver(insecure);
    expect(await r.resolve(`${registry.host}/fleet/guest:1`)).toEqual({ imageDigest: DIGEST, pinned: `${registry.host}/fleet/guest@${DIGEST}` });
    expect(await r.resolve(`${registry.host}/fleet/guest@${DIGEST}`)).toEqual({ imageDigest: DIGEST, pinned: `${registry.host}/fleet/guest@${DIGEST}` });
    const gone = await rejection(r.resolve(`${registry.host}/fleet/guest@sha256:${'9'.repeat(64)}`));
    expect(gone.statusCode).toBe(422);
    const m = await r.resolveManifest(`${registry.host}/fleet/guest:1`);
    expect(m).toMatchObject({ digest: DIGEST, mediaType: OCI_MANIFEST, json: { schemaVersion: 2 } });
  });

  it('a missing tag is 422 image_unresolvable naming the reference', async () => {
    const err = await rejection(new ImageResolver(insecure).resolve(`${registry.host}/fleet/guest:2`));
    expect(err.statusCode).toBe(422);
    expect(err.code).toBe('image_unresolvable');
    expect(err.message).toMatch(new RegExp(`^cannot resolve ${registry.host.replace(/\./g, '\\.')}/fleet/guest:2: `));
    expect(err.details).toMatchObject({ cause: 'not-found' });
  });

  it('an unreachable registry is 502 registry_unreachable', async () => {
    const s = http.createServer();
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    const port = (s.address() as AddressInfo).port;
    await new Promise<void>((resolve) => s.close(() => resolve()));
    const err = await rejection(new ImageResolver(insecure).resolve(`127.0.0.1:${port}/fleet/guest:1`));
    expect(err.statusCode).toBe(502);
    expect(err.code).toBe('registry_unreachable');
  });

  it('a registry not marked insecure is spoken to over TLS: a plain HTTP one is refused with the fix', async () => {
    const err = await rejection(new ImageResolver({ accessFor: async () => ({ ...ANONYMOUS_ACCESS }) }).resolve(`${registry.host}/fleet/guest:1`));
    expect(err.statusCode).toBe(422);
    expect(err.message).toMatch(/fleet registry login/);
  });

  it('a malformed reference is 400 with the parser\'s reason', async () => {
    const err = await rejection(new ImageResolver(insecure).resolve(`${registry.host}/Fleet/Guest:1`));
    expect(err.statusCode).toBe(400);
    expect(err.message).toMatch(/lowercase/);
  });
});

describe('ImageResolver error mapping', () => {
  const scripted = (err: unknown): ManifestSource => ({
    resolve: async () => {
      throw err;
    },
    getManifest: async () => {
      throw err;
    },
  });
  const resolver = (err: unknown) => new ImageResolver(insecure, { clientFactory: () => scripted(err) });

  it.each([
    ['unauthorized', 422, 'image_unresolvable', /fleet registry login 127\.0\.0\.1:5000\)$/],
    ['denied', 422, 'image_unresolvable', /fleet registry login/],
    ['not-found', 422, 'image_unresolvable', /cannot resolve/],
    ['too-large', 422, 'image_unresolvable', /cannot resolve/],
    ['protocol', 422, 'image_unresolvable', /cannot resolve/],
    ['tls', 422, 'image_unresolvable', /CA certificate/],
    ['network', 502, 'registry_unreachable', /unreachable/],
    ['aborted', 502, 'registry_unreachable', /unreachable/],
  ] as const)('%s → %i %s', async (code, status, apiCode, message) => {
    const err = await rejection(resolver(new OciError(code, `the registry said ${code}`)).resolve('127.0.0.1:5000/fleet/guest:1'));
    expect([err.statusCode, err.code]).toEqual([status, apiCode]);
    expect(err.message).toMatch(message);
    expect(err.message).toContain(`the registry said ${code}`);
  });

  it('passes the stored access to the client, with a 15 s timeout', async () => {
    const seen: unknown[] = [];
    const r = new ImageResolver(
      { accessFor: async () => ({ insecure: false, caPem: 'PEM', username: 'u', password: 'p' }) },
      {
        clientFactory: (o) => {
          seen.push(o);
          return { resolve: async () => ({ mediaType: OCI_MANIFEST, digest: DIGEST, size: 1 }), getManifest: async () => ({ digest: DIGEST, mediaType: OCI_MANIFEST, bytes: MANIFEST, json: {} }) };
        },
      },
    );
    await r.resolve('ghcr.io/org/x:latest');
    expect(seen).toEqual([{ registry: 'ghcr.io', insecure: false, caPem: 'PEM', username: 'u', password: 'p', timeoutMs: 15_000 }]);
  });

  it('follows an image index to its first platform manifest for the format, keeping the index digest', async () => {
    const child = 'sha256:' + 'c'.repeat(64);
    const index = { schemaVersion: 2, manifests: [{ digest: 'sha256:' + 'f'.repeat(64), platform: { os: 'unknown', architecture: 'unknown' } }, { digest: child, platform: { os: 'linux', architecture: 'amd64' } }] };
    expect(firstPlatformManifest(index)).toBe(child);
    expect(firstPlatformManifest({ layers: [] })).toBeUndefined();
    const asked: string[] = [];
    const r = new ImageResolver(insecure, {
      clientFactory: () => ({
        resolve: async () => ({ mediaType: 'application/vnd.oci.image.index.v1+json', digest: DIGEST, size: 1 }),
        getManifest: async (_repo, ref) => {
          asked.push(ref);
          return ref === DIGEST ? { digest: DIGEST, mediaType: 'application/vnd.oci.image.index.v1+json', bytes: Buffer.alloc(0), json: index } : { digest: child, mediaType: OCI_MANIFEST, bytes: Buffer.alloc(0), json: { child: true } };
        },
      }),
    });
    const m = await r.resolveManifest('127.0.0.1:5000/fleet/guest:1');
    expect(asked).toEqual([DIGEST, child]);
    expect(m).toMatchObject({ digest: DIGEST, pinned: `127.0.0.1:5000/fleet/guest@${DIGEST}`, json: { child: true } });
  });
});

describe('image pulls in assignments', () => {
  const access = { insecure: true, caPem: '', username: 'ci', password: 'pw' };
  const registries = { accessFor: async () => access, accessForHosts: async (hosts: Iterable<string>) => new Map([...hosts].map((h) => [h, access])) };

  it('pins registry images to the recorded digest; local images need no pull', async () => {
    expect(pinnedImageOf({ image: '127.0.0.1:5000/fleet/guest:1', imageDigest: DIGEST })).toEqual({ registry: '127.0.0.1:5000', reference: `127.0.0.1:5000/fleet/guest@${DIGEST}` });
    expect(await imagePullFor({ image: 'fleet-guest', imageDigest: '' }, registries)).toBeNull();
    expect(await imagePullFor({ image: '127.0.0.1:5000/fleet/guest:1', imageDigest: '' }, registries)).toBeNull();
    expect(await imagePullFor({ image: '127.0.0.1:5000/fleet/guest:1', imageDigest: DIGEST }, registries)).toEqual({ reference: `127.0.0.1:5000/fleet/guest@${DIGEST}`, access });
    const many = await imagePullsFor(
      [
        { id: 'a', image: '127.0.0.1:5000/fleet/guest:1', imageDigest: DIGEST },
        { id: 'b', image: 'fleet-guest', imageDigest: '' },
      ],
      registries,
    );
    expect([...many.keys()]).toEqual(['a']);
  });
});

describe('ImageResolver.resolveForVm: what a VM of the image needs', () => {
  const tartManifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: 'sha256:' + '2'.repeat(64), size: 60 },
    layers: [
      { mediaType: 'application/vnd.cirruslabs.tart.config.v1', digest: 'sha256:' + '3'.repeat(64), size: 10 },
      { mediaType: 'application/vnd.cirruslabs.tart.disk.v2', digest: 'sha256:' + '4'.repeat(64), size: 10, annotations: { 'org.cirruslabs.tart.uncompressed-size': '10', 'org.cirruslabs.tart.uncompressed-content-digest': 'sha256:' + '5'.repeat(64) } },
      { mediaType: 'application/vnd.cirruslabs.tart.nvram.v1', digest: 'sha256:' + '6'.repeat(64), size: 10 },
    ],
  };
  const containerManifest = { ...tartManifest, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: 'sha256:' + '7'.repeat(64), size: 10 }] };
  const scripted = (json: unknown, configOs: string): ImageResolver =>
    new ImageResolver(insecure, {
      clientFactory: (): ManifestSource => ({
        resolve: async () => ({ mediaType: OCI_MANIFEST, digest: DIGEST, size: 1 }),
        getManifest: async () => ({ digest: DIGEST, mediaType: OCI_MANIFEST, bytes: Buffer.from(JSON.stringify(json)), json }),
        getBlob: async () => Buffer.from(JSON.stringify({ architecture: 'arm64', os: configOs })),
      }),
    });

  it('a Fleet qemu image runs on qemu as linux', async () => {
    expect(await new ImageResolver(insecure).resolveForVm(`${registry.host}/fleet/guest:1`)).toMatchObject({ imageDigest: DIGEST, format: 'fleet-qemu', driver: 'qemu', os: 'linux' });
  });

  it('a Tart image runs on vz, as macOS when its config says darwin (a macOS slot) and as linux when it says linux', async () => {
    expect(await scripted(tartManifest, 'darwin').resolveForVm('ghcr.io/org/macos:15')).toMatchObject({ format: 'tart', driver: 'vz', os: 'macos' });
    expect(await scripted(tartManifest, 'linux').resolveForVm('ghcr.io/org/ubuntu:24')).toMatchObject({ format: 'tart', driver: 'vz', os: 'linux' });
  });

  it('a container image is refused: 422 image_unsupported, naming it a container image', async () => {
    const err = await rejection(scripted(containerManifest, 'linux').resolveForVm('ghcr.io/org/app:1'));
    expect(err.statusCode).toBe(422);
    expect(err.code).toBe('image_unsupported');
    expect(err.message).toMatch(/container image/);
  });

  it('local names stay local', async () => {
    expect(await new ImageResolver(insecure).resolveForVm('fleet-guest')).toEqual({ imageDigest: '', pinned: 'fleet-guest' });
  });
});
