// Image references in VM specs (issue 15): a registry reference is resolved to its manifest digest
// once, when the VM is created (or its image changed), so every attempt runs the same bits. Local
// image names (`fleet-guest`, `ubuntu:24.04`) are left alone: the worker's own image store.
import { isRegistryReference, OciError, parseImageReference, pinnedReference, RegistryClient, type ImageReference } from '@fleet/oci';
import type { RegistryAccess } from '@fleet/proto';
import type { RegistryService } from './registry-service.ts';
import { resolveError } from './registry-errors.ts';
import { detectFormat, parseImageManifest } from '@fleet/vm-image';
import { FleetError } from '../errors.ts';

export interface ResolvedImage {
  /** sha256:… of the manifest; "" for local images. */
  imageDigest: string;
  /** registry/repository@sha256:… for registry images; the name as given for local images. */
  pinned: string;
}

export interface ResolvedManifest {
  ref: ImageReference;
  digest: string;
  pinned: string;
  /** The manifest's media type and raw JSON (for the format). */
  mediaType: string;
  json: unknown;
}

/** What the resolver needs of a registry client (tests may replace it). */
export interface ManifestSource {
  resolve(repository: string, tagOrDigest: string): Promise<{ mediaType: string; digest: string; size: number }>;
  getManifest(repository: string, ref: string): Promise<{ digest: string; mediaType: string; bytes: Uint8Array | Buffer; json: unknown }>;
  /** Small verified blobs (a Tart image's config, to learn its guest OS). */
  getBlob?(repository: string, desc: { mediaType: string; digest: string; size: number }, maxBytes: number): Promise<Buffer>;
}

/** A VM's image as the scheduler must know it: which runtime runs it, and its guest OS. */
export interface ResolvedVmImage extends ResolvedImage {
  /** Registry images only. */
  format?: 'tart' | 'fleet-qemu';
  /** The driver that runs the format ("vz" for Tart images, "qemu" for Fleet qemu images). */
  driver?: string;
  /** The guest OS the image declares ("macos" or "linux"): a macOS guest takes a macOS slot. */
  os?: 'macos' | 'linux';
}
export type ManifestSourceFactory = (opts: { registry: string; insecure: boolean; caPem?: string; username?: string; password?: string; timeoutMs: number }) => ManifestSource;

export interface ImageResolverOptions {
  /** Per request to the registry (default 15 s). */
  timeoutMs?: number;
  clientFactory?: ManifestSourceFactory;
}

export const RESOLVE_TIMEOUT_MS = 15_000;

export class ImageResolver {
  private readonly timeoutMs: number;
  private readonly clientFactory: ManifestSourceFactory;

  constructor(
    private readonly registries: Pick<RegistryService, 'accessFor'> & Partial<Pick<RegistryService, 'assertAllowed'>>,
    opts: ImageResolverOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? RESOLVE_TIMEOUT_MS;
    this.clientFactory = opts.clientFactory ?? ((o) => new RegistryClient(o));
  }

  /** True when `image` names a registry (and so needs resolving); false for local image names. */
  static isRegistryImage(image: string): boolean {
    return isRegistryReference(image);
  }

  /**
   * Local names → `{imageDigest: '', pinned: image}`. Registry references → the manifest digest the
   * tag names now (a reference with a digest is checked to exist). Throws FleetError: 400 for a
   * malformed reference, 422 `image_unresolvable` (not found, refused, bad manifest), 502
   * `registry_unreachable`.
   */
  async resolve(image: string): Promise<ResolvedImage> {
    if (!isRegistryReference(image)) return { imageDigest: '', pinned: image };
    const r = await this.resolveRef(image);
    return { imageDigest: r.digest, pinned: r.pinned };
  }

  /**
   * `resolve`, plus what the image is (a VM create needs it: a Tart image runs only on vz workers,
   * and a macOS one takes a macOS slot). A container image or an unknown format is refused with
   * 422 `image_unsupported`: no VM is accepted that no worker could run.
   */
  async resolveForVm(image: string): Promise<ResolvedVmImage> {
    if (!isRegistryReference(image)) return { imageDigest: '', pinned: image };
    const m = await this.resolveManifest(image);
    let format: 'tart' | 'fleet-qemu';
    try {
      format = detectFormat(parseImageManifest(m.json));
    } catch (err) {
      throw new FleetError(422, 'image_unsupported', `${image} cannot run as a VM: ${err instanceof Error ? err.message : String(err)}`, { reference: image, digest: m.digest });
    }
    if (format === 'fleet-qemu') return { imageDigest: m.digest, pinned: m.pinned, format, driver: 'qemu', os: 'linux' };
    return { imageDigest: m.digest, pinned: m.pinned, format, driver: 'vz', os: await this.tartGuestOs(m) };
  }

  /** A Tart image's guest OS, from its OCI config's "os" ("darwin" → macos); macOS when unreadable (the safe side: it takes a slot). */
  private async tartGuestOs(m: ResolvedManifest): Promise<'macos' | 'linux'> {
    const config = (m.json as { config?: { mediaType?: unknown; digest?: unknown; size?: unknown } }).config;
    if (!config || typeof config.digest !== 'string' || typeof config.size !== 'number') return 'macos';
    const { client } = await this.resolveRef(m.pinned);
    if (!client.getBlob) return 'macos';
    try {
      const bytes = await client.getBlob(m.ref.repository, { mediaType: String(config.mediaType ?? ''), digest: config.digest, size: config.size }, 64 * 1024);
      const os = (JSON.parse(bytes.toString('utf8')) as { os?: unknown }).os;
      return os === 'linux' ? 'linux' : 'macos';
    } catch {
      return 'macos';
    }
  }

  /**
   * Like `resolve` for a registry reference, plus the manifest itself (prefetch picks workers by
   * its format). For an image index the digest stays the index's (what workers pull, each picking
   * its platform) and the manifest is that of its first platform (the format is the same for all).
   */
  async resolveManifest(reference: string): Promise<ResolvedManifest> {
    const { ref, digest, pinned, client } = await this.resolveRef(reference);
    try {
      let m = await client.getManifest(ref.repository, digest);
      const child = firstPlatformManifest(m.json);
      if (child) m = await client.getManifest(ref.repository, child);
      return { ref, digest, pinned, mediaType: m.mediaType, json: m.json };
    } catch (err) {
      throw resolveError(err, reference, ref.registry);
    }
  }

  private async resolveRef(reference: string): Promise<{ ref: ImageReference; digest: string; pinned: string; client: ManifestSource }> {
    let ref: ImageReference;
    try {
      ref = parseImageReference(reference);
    } catch (err) {
      throw resolveError(err, reference, '');
    }
    await this.registries.assertAllowed?.(ref.registry);
    const access: RegistryAccess = await this.registries.accessFor(ref.registry);
    const client = this.clientFactory({
      registry: ref.registry,
      insecure: access.insecure === true,
      ...(access.caPem ? { caPem: access.caPem } : {}),
      ...(access.username ? { username: access.username } : {}),
      ...(access.password ? { password: access.password } : {}),
      timeoutMs: this.timeoutMs,
    });
    try {
      // A digest wins over a tag (registry/repo:tag@sha256:… is pinned by the digest).
      const found = await client.resolve(ref.repository, ref.digest ?? ref.tag ?? 'latest');
      if (ref.digest && found.digest && found.digest !== ref.digest) {
        throw new OciError('digest-mismatch', `registry ${ref.registry} answered with manifest ${found.digest} when asked for ${ref.digest}`);
      }
      const digest = ref.digest ?? found.digest;
      return { ref, digest, pinned: pinnedReference(ref, digest), client };
    } catch (err) {
      throw resolveError(err, reference, ref.registry);
    }
  }
}

/** The digest of an index's first real platform manifest (attestations are skipped); undefined when `json` is no index. */
export function firstPlatformManifest(json: unknown): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const manifests = (json as { manifests?: unknown }).manifests;
  if (!Array.isArray(manifests)) return undefined;
  for (const d of manifests as { digest?: unknown; platform?: { os?: unknown } }[]) {
    if (typeof d?.digest !== 'string' || !/^sha256:[a-f0-9]{64}$/.test(d.digest)) continue;
    if (d.platform?.os === 'unknown') continue; // buildkit attestation manifests
    return d.digest;
  }
  return undefined;
}

/** The resolver the controller uses: registries' credentials from `registries`, 15 s per request. */
export function createImageResolver(registries: Pick<RegistryService, 'accessFor'> & Partial<Pick<RegistryService, 'assertAllowed'>>, opts: ImageResolverOptions = {}): ImageResolver {
  return new ImageResolver(registries, opts);
}
