import { describe, expect, it } from 'vitest';
import { VmImageError } from './errors.ts';
import { MEDIA_TYPES, detectFormat, imageLayerBytes, parseImageManifest, type ImageManifest } from './manifest.ts';
import { sha256 } from './test-helpers.ts';

const d1 = sha256(Buffer.from('1'));
const d2 = sha256(Buffer.from('2'));
const d3 = sha256(Buffer.from('3'));

function tartManifest(): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config: { mediaType: MEDIA_TYPES.ociConfig, digest: d1, size: 100 },
    layers: [
      { mediaType: MEDIA_TYPES.tartConfig, digest: d2, size: 300, annotations: {} },
      { mediaType: MEDIA_TYPES.tartDiskV2, digest: d3, size: 1000, annotations: { 'org.cirruslabs.tart.uncompressed-size': '5000', 'org.cirruslabs.tart.uncompressed-content-digest': d1 } },
      { mediaType: MEDIA_TYPES.tartNvram, digest: d1, size: 20 },
    ],
    annotations: { 'org.cirruslabs.tart.uncompressed-disk-size': '5000', 'org.cirruslabs.tart.upload-time': '2024-01-02T03:04:05Z' },
  };
}

function fleetManifest(): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config: { mediaType: MEDIA_TYPES.fleetQemuConfig, digest: d1, size: 10 },
    layers: [{ mediaType: MEDIA_TYPES.fleetQemuDisk, digest: d2, size: 10, annotations: { 'org.fleet.disk.offset': '0' } }],
  };
}

function reject(json: unknown): VmImageError {
  try {
    parseImageManifest(json);
  } catch (e) {
    expect(e).toBeInstanceOf(VmImageError);
    return e as VmImageError;
  }
  throw new Error('parseImageManifest accepted it');
}

describe('parseImageManifest', () => {
  it('accepts Tart and fleet qemu manifests and detects their format', () => {
    const t = parseImageManifest(tartManifest());
    expect(detectFormat(t)).toBe('tart');
    expect(imageLayerBytes(t)).toBe(100 + 300 + 1000 + 20);
    expect(detectFormat(parseImageManifest(fleetManifest()))).toBe('fleet-qemu');
  });

  it('accepts a Docker v2 manifest and an OCI manifest without mediaType', () => {
    const docker = { ...tartManifest(), mediaType: MEDIA_TYPES.dockerManifest };
    expect(parseImageManifest(docker).mediaType).toBe(MEDIA_TYPES.dockerManifest);
    const bare = fleetManifest();
    delete bare.mediaType;
    expect(parseImageManifest(bare).mediaType).toBe(MEDIA_TYPES.ociManifest);
  });

  it('keeps only the descriptor fields it knows (and the annotations)', () => {
    const m = fleetManifest();
    (m.layers as Array<Record<string, unknown>>)[0]!.urls = ['https://example.invalid/x'];
    expect(parseImageManifest(m).layers[0]).toEqual({ mediaType: MEDIA_TYPES.fleetQemuDisk, digest: d2, size: 10, annotations: { 'org.fleet.disk.offset': '0' } });
  });

  it.each<[string, (m: Record<string, unknown>) => unknown, RegExp]>([
    ['a non-object', () => 'manifest', /JSON object/],
    ['schemaVersion 1', (m) => ({ ...m, schemaVersion: 1 }), /schemaVersion must be 2/],
    ['a missing config', (m) => ({ ...m, config: undefined }), /manifest.config must be a descriptor/],
    ['missing layers', (m) => ({ ...m, layers: undefined }), /layers must be an array/],
    ['a layer without digest', (m) => ({ ...m, layers: [{ mediaType: MEDIA_TYPES.tartConfig, size: 1 }] }), /layers\[0\].digest/],
    ['a layer without mediaType', (m) => ({ ...m, layers: [{ digest: d1, size: 1 }] }), /layers\[0\].mediaType/],
    ['an uppercase digest', (m) => ({ ...m, config: { mediaType: MEDIA_TYPES.ociConfig, digest: d1.toUpperCase(), size: 1 } }), /config.digest/],
    ['a sha512 digest', (m) => ({ ...m, config: { mediaType: MEDIA_TYPES.ociConfig, digest: `sha512:${'a'.repeat(128)}`, size: 1 } }), /config.digest/],
    ['a short digest', (m) => ({ ...m, config: { mediaType: MEDIA_TYPES.ociConfig, digest: 'sha256:abcd', size: 1 } }), /config.digest/],
    ['a negative size', (m) => ({ ...m, config: { mediaType: MEDIA_TYPES.ociConfig, digest: d1, size: -1 } }), /size must be a non-negative safe integer/],
    ['a fractional size', (m) => ({ ...m, config: { mediaType: MEDIA_TYPES.ociConfig, digest: d1, size: 1.5 } }), /size must be/],
    ['an unsafe size', (m) => ({ ...m, config: { mediaType: MEDIA_TYPES.ociConfig, digest: d1, size: 2 ** 60 } }), /size must be/],
    ['a string size', (m) => ({ ...m, config: { mediaType: MEDIA_TYPES.ociConfig, digest: d1, size: '5' } }), /size must be/],
    ['a non-string annotation', (m) => ({ ...m, annotations: { 'org.cirruslabs.tart.uncompressed-disk-size': 5000 } }), /annotations\["org.cirruslabs.tart.uncompressed-disk-size"\] must be a string, got number/],
    ['a non-string layer annotation', (m) => ({ ...m, layers: [{ mediaType: MEDIA_TYPES.tartConfig, digest: d1, size: 1, annotations: { a: null } }] }), /must be a string, got null/],
    ['an image index', (m) => ({ ...m, mediaType: MEDIA_TYPES.ociIndex }), /image index/],
    ['an index without mediaType', () => ({ schemaVersion: 2, manifests: [] }), /image index/],
  ])('rejects %s as bad-manifest', (_name, mutate, message) => {
    const err = reject(mutate(tartManifest()));
    expect(err.code).toBe('bad-manifest');
    expect(err.message).toMatch(message);
  });

  it('rejects more than 100000 layers', () => {
    const layer = { mediaType: MEDIA_TYPES.fleetQemuDisk, digest: d2, size: 1 };
    const err = reject({ ...fleetManifest(), layers: Array.from({ length: 100_001 }, () => layer) });
    expect(err.code).toBe('bad-manifest');
    expect(err.message).toMatch(/100001 layers; at most 100000/);
    expect(parseImageManifest({ ...fleetManifest(), layers: Array.from({ length: 100_000 }, () => layer) }).layers).toHaveLength(100_000);
  });

  it('rejects container images, saying that they are not VM images', () => {
    const container = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d1, size: 1469 },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d2, size: 3623807 }],
    };
    const err = reject(container);
    expect(err.code).toBe('unsupported-media-type');
    expect(err.message).toMatch(/this is a container image \(config application\/vnd.oci.image.config.v1\+json, layers like application\/vnd.oci.image.layer.v1.tar\+gzip\), not a VM image/);
    const dockerContainer = { ...container, mediaType: MEDIA_TYPES.dockerManifest, config: { ...container.config, mediaType: MEDIA_TYPES.dockerConfig } };
    expect(reject(dockerContainer).message).toMatch(/container image/);
  });

  it('rejects unknown config types and foreign layers in a known format, naming the type and format', () => {
    const other = reject({ ...fleetManifest(), config: { mediaType: 'application/vnd.example.thing.v1+json', digest: d1, size: 1 } });
    expect(other.code).toBe('unsupported-media-type');
    expect(other.message).toMatch(/application\/vnd.example.thing.v1\+json/);
    const mixed = fleetManifest();
    (mixed.layers as unknown[]).push({ mediaType: MEDIA_TYPES.tartNvram, digest: d3, size: 1 });
    const err = reject(mixed);
    expect(err.code).toBe('unsupported-media-type');
    expect(err.message).toMatch(/layer 1 has media type application\/vnd.cirruslabs.tart.nvram.v1, which is not a layer of the fleet-qemu VM image format/);
    const tartPlusTar = tartManifest();
    (tartPlusTar.layers as unknown[]).push({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: d3, size: 1 });
    expect(reject(tartPlusTar).message).toMatch(/application\/vnd.oci.image.layer.v1.tar, which is not a layer of the tart VM image format/);
  });
});

describe('detectFormat', () => {
  it('names an artifact type when the config is empty', () => {
    const m: ImageManifest = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      artifactType: 'application/vnd.example.sbom',
      config: { mediaType: MEDIA_TYPES.ociEmpty, digest: d1, size: 2 },
      layers: [],
    };
    expect(() => detectFormat(m)).toThrow(/unsupported artifact type application\/vnd.example.sbom/);
  });
});
