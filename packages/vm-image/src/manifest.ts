import { createHash } from 'node:crypto';
import { VmImageError } from './errors.ts';

/** Media types of the two VM image formats and of the OCI/Docker documents around them. */
export const MEDIA_TYPES = {
  // Tart (see docs/images.md): the manifest's config is an OCI image config "stub"; Tart's own
  // config.json travels as a LAYER of type tartConfig.
  tartConfig: 'application/vnd.cirruslabs.tart.config.v1',
  tartDiskV2: 'application/vnd.cirruslabs.tart.disk.v2',
  tartDiskV1: 'application/vnd.cirruslabs.tart.disk.v1',
  tartNvram: 'application/vnd.cirruslabs.tart.nvram.v1',
  // Fleet's qemu format.
  fleetQemuConfig: 'application/vnd.fleet.qemu.config.v1+json',
  fleetQemuDisk: 'application/vnd.fleet.qemu.disk.v1',
  fleetQemuKernel: 'application/vnd.fleet.qemu.kernel.v1',
  fleetQemuInitrd: 'application/vnd.fleet.qemu.initrd.v1',
  // OCI / Docker.
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

/** Annotation keys. */
export const ANNOTATIONS = {
  /** Tart disk layer: decompressed byte count (decimal string). */
  tartUncompressedSize: 'org.cirruslabs.tart.uncompressed-size',
  /** Tart disk layer: "sha256:<hex>" of the decompressed bytes. */
  tartUncompressedContentDigest: 'org.cirruslabs.tart.uncompressed-content-digest',
  /** Tart manifest: size of the whole disk.img (decimal string). */
  tartUncompressedDiskSize: 'org.cirruslabs.tart.uncompressed-disk-size',
  /** Tart manifest: push time, ISO 8601 in UTC without fractional seconds. */
  tartUploadTime: 'org.cirruslabs.tart.upload-time',
  /** Tart OCI config stub label: "raw" or "asif". */
  tartDiskFormatLabel: 'org.cirruslabs.tart.disk.format',
  /** Fleet qemu disk layer: byte offset of this chunk in the disk file (decimal string). */
  fleetDiskOffset: 'org.fleet.disk.offset',
  ociCreated: 'org.opencontainers.image.created',
  ociRefName: 'org.opencontainers.image.ref.name',
} as const;

/** Structurally identical to @fleet/oci's Descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export type ImageFormat = 'tart' | 'fleet-qemu';

export const MAX_LAYERS = 100_000;
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
// RFC 6838 type/subtype (the grammar the OCI spec points to), with +suffixes and parameters excluded.
const MEDIA_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

const TART_LAYER_TYPES: readonly string[] = [MEDIA_TYPES.tartConfig, MEDIA_TYPES.tartDiskV2, MEDIA_TYPES.tartDiskV1, MEDIA_TYPES.tartNvram];
const FLEET_LAYER_TYPES: readonly string[] = [MEDIA_TYPES.fleetQemuDisk, MEDIA_TYPES.fleetQemuKernel, MEDIA_TYPES.fleetQemuInitrd];
/** Config types a Tart manifest may carry: Tart writes ociConfig; the rest appear after copies between registries/tools. */
const TART_CONFIG_TYPES: readonly string[] = [MEDIA_TYPES.ociConfig, MEDIA_TYPES.dockerConfig, MEDIA_TYPES.tartConfig, MEDIA_TYPES.ociEmpty];

export function isDigest(s: unknown): s is string {
  return typeof s === 'string' && DIGEST_RE.test(s);
}

export function sha256Digest(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function bad(message: string): VmImageError {
  return new VmImageError('bad-manifest', message);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseAnnotations(v: unknown, where: string): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (!isRecord(v)) throw bad(`${where}.annotations must be an object of strings`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') throw bad(`${where}.annotations[${JSON.stringify(k)}] must be a string, got ${val === null ? 'null' : typeof val}`);
    out[k] = val;
  }
  return out;
}

function parseMediaType(v: unknown, where: string): string {
  if (typeof v !== 'string' || !MEDIA_TYPE_RE.test(v)) throw bad(`${where}.mediaType must be a media type string, got ${JSON.stringify(v)}`);
  return v;
}

export function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isRecord(v)) throw bad(`${where} must be a descriptor object`);
  const mediaType = parseMediaType(v.mediaType, where);
  if (!isDigest(v.digest)) throw bad(`${where}.digest must be sha256:<64 lowercase hex>, got ${JSON.stringify(v.digest)}`);
  const size = v.size;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw bad(`${where}.size must be a non-negative safe integer, got ${JSON.stringify(size)}`);
  const annotations = parseAnnotations(v.annotations, where);
  const d: Descriptor = { mediaType, digest: v.digest, size };
  if (annotations) d.annotations = annotations;
  return d;
}

/**
 * Validates a manifest's shape strictly and that it is one of our VM image formats: every layer
 * type must belong to the detected format. An OCI image manifest and a Docker v2 manifest are both
 * accepted (a missing mediaType means OCI, as the OCI spec allows); indexes are refused.
 */
export function parseImageManifest(json: unknown): ImageManifest {
  if (!isRecord(json)) throw bad('manifest must be a JSON object');
  if (json.schemaVersion !== 2) throw bad(`manifest schemaVersion must be 2, got ${JSON.stringify(json.schemaVersion)}`);
  let mediaType: string = MEDIA_TYPES.ociManifest;
  if (json.mediaType !== undefined) {
    mediaType = parseMediaType(json.mediaType, 'manifest');
    if (mediaType === MEDIA_TYPES.ociIndex || mediaType === MEDIA_TYPES.dockerManifestList) {
      throw bad(`manifest is an image index (${mediaType}); resolve it to one platform's manifest first`);
    }
    if (mediaType !== MEDIA_TYPES.ociManifest && mediaType !== MEDIA_TYPES.dockerManifest) {
      throw new VmImageError('unsupported-media-type', `unsupported manifest media type ${mediaType} (expected ${MEDIA_TYPES.ociManifest} or ${MEDIA_TYPES.dockerManifest})`);
    }
  } else if (json.manifests !== undefined) {
    throw bad('manifest is an image index (it has "manifests"); resolve it to one platform\'s manifest first');
  }
  const m: ImageManifest = { schemaVersion: 2, mediaType, config: parseDescriptor(json.config, 'manifest.config'), layers: [] };
  if (json.artifactType !== undefined) {
    if (typeof json.artifactType !== 'string' || !MEDIA_TYPE_RE.test(json.artifactType)) throw bad(`manifest.artifactType must be a media type string, got ${JSON.stringify(json.artifactType)}`);
    m.artifactType = json.artifactType;
  }
  if (!Array.isArray(json.layers)) throw bad('manifest.layers must be an array');
  if (json.layers.length > MAX_LAYERS) throw bad(`manifest has ${json.layers.length} layers; at most ${MAX_LAYERS} are accepted`);
  m.layers = json.layers.map((l: unknown, i: number) => parseDescriptor(l, `manifest.layers[${i}]`));
  const annotations = parseAnnotations(json.annotations, 'manifest');
  if (annotations) m.annotations = annotations;

  const format = detectFormat(m);
  const known = format === 'tart' ? TART_LAYER_TYPES : FLEET_LAYER_TYPES;
  for (const [i, l] of m.layers.entries()) {
    if (!known.includes(l.mediaType)) {
      throw new VmImageError('unsupported-media-type', `layer ${i} has media type ${l.mediaType}, which is not a layer of the ${format} VM image format (known: ${known.join(', ')})`);
    }
  }
  return m;
}

/**
 * Which VM image format a manifest is. Fleet qemu images are recognised by their config type.
 * Tart images are recognised by their layers: Tart's manifest config is a plain OCI image config
 * (a stub with os/architecture for registries' UIs), the same type a container image has.
 */
export function detectFormat(m: ImageManifest): ImageFormat {
  const configType = m.config.mediaType;
  if (configType === MEDIA_TYPES.fleetQemuConfig) return 'fleet-qemu';
  const hasTartLayer = m.layers.some((l) => TART_LAYER_TYPES.includes(l.mediaType));
  if (hasTartLayer && TART_CONFIG_TYPES.includes(configType)) return 'tart';
  if (configType === MEDIA_TYPES.ociConfig || configType === MEDIA_TYPES.dockerConfig) {
    throw new VmImageError(
      'unsupported-media-type',
      `this is a container image (config ${configType}${m.layers[0] ? `, layers like ${m.layers[0].mediaType}` : ''}), not a VM image; ` +
        `Fleet runs Tart VM images (layers ${MEDIA_TYPES.tartConfig}, ${MEDIA_TYPES.tartDiskV2}, ${MEDIA_TYPES.tartNvram}) and Fleet qemu images (config ${MEDIA_TYPES.fleetQemuConfig})`,
    );
  }
  const what = configType === MEDIA_TYPES.ociEmpty && m.artifactType ? `artifact type ${m.artifactType}` : `config media type ${configType}`;
  throw new VmImageError('unsupported-media-type', `unsupported ${what}: not a Tart or Fleet qemu VM image`);
}

/** Bytes to download for an image (config + layers), for progress totals. */
export function imageLayerBytes(m: ImageManifest): number {
  return m.layers.reduce((sum, l) => sum + l.size, m.config.size);
}

/** The exact bytes we push for a manifest: compact JSON, fields in a fixed order. */
export function serializeManifest(m: ImageManifest): Buffer {
  const ordered: Record<string, unknown> = { schemaVersion: m.schemaVersion, mediaType: m.mediaType };
  if (m.artifactType !== undefined) ordered.artifactType = m.artifactType;
  ordered.config = orderDescriptor(m.config);
  ordered.layers = m.layers.map(orderDescriptor);
  if (m.annotations !== undefined) ordered.annotations = m.annotations;
  return Buffer.from(JSON.stringify(ordered), 'utf8');
}

function orderDescriptor(d: Descriptor): Record<string, unknown> {
  const o: Record<string, unknown> = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.annotations !== undefined) o.annotations = d.annotations;
  return o;
}
