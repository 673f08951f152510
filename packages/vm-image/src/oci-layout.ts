/**
 * OCI image layout directories (what skopeo's oci: transport reads and writes): an `oci-layout`
 * file, `index.json` naming manifests by org.opencontainers.image.ref.name, and blobs/sha256/<hex>.
 */
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { VmImageError, asVmImageError } from './errors.ts';
import { exists, randomSuffix } from './fsutil.ts';
import { ANNOTATIONS, MEDIA_TYPES, isDigest, parseDescriptor, parseImageManifest, type Descriptor } from './manifest.ts';
import type { BlobFile, PackedImage } from './types.ts';

// Docker's tag grammar: what `skopeo ... oci:DIR:TAG` accepts without surprises.
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const MAX_INDEX_BYTES = 16 * 1024 * 1024;
const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

function checkTag(tag: string): void {
  if (!TAG_RE.test(tag)) throw new VmImageError('bad-manifest', `invalid tag ${JSON.stringify(tag)}: use letters, digits, '_', '.', '-' (at most 128, not starting with '.' or '-')`);
}

function blobFile(layoutDir: string, digest: string): string {
  return path.join(layoutDir, 'blobs', 'sha256', digest.slice('sha256:'.length));
}

async function writeFileAtomically(file: string, data: Uint8Array): Promise<void> {
  const tmp = `${file}.tmp-${randomSuffix()}`;
  try {
    await fsp.writeFile(tmp, data, { flag: 'wx' });
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}

/** Puts a blob into the layout: hard link when possible (same filesystem), else copy. */
async function placeBlob(src: string, d: Descriptor, dest: string): Promise<void> {
  const st = await fsp.stat(dest).catch(() => undefined);
  if (st && st.size === d.size) return; // content-addressed: same name, same size, same bytes
  const srcSt = await fsp.stat(src);
  if (srcSt.size !== d.size) throw new VmImageError('digest-mismatch', `blob ${d.digest} at ${src} is ${srcSt.size} bytes, its descriptor says ${d.size}`);
  if (path.resolve(src) === path.resolve(dest)) return;
  const tmp = `${dest}.tmp-${randomSuffix()}`;
  try {
    try {
      await fsp.link(src, tmp);
    } catch {
      await fsp.copyFile(src, tmp);
    }
    await fsp.rename(tmp, dest);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}

interface IndexJson {
  schemaVersion: 2;
  mediaType: string;
  manifests: Array<Record<string, unknown>>;
  [k: string]: unknown;
}

async function readIndex(layoutDir: string): Promise<IndexJson | undefined> {
  const file = path.join(layoutDir, 'index.json');
  if (!(await exists(file))) return undefined;
  const st = await fsp.stat(file);
  if (st.size > MAX_INDEX_BYTES) throw new VmImageError('bad-manifest', `${file} is ${st.size} bytes; refusing to read more than ${MAX_INDEX_BYTES}`);
  let v: unknown;
  try {
    v = JSON.parse(await fsp.readFile(file, 'utf8'));
  } catch (err) {
    throw new VmImageError('bad-manifest', `${file} is not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new VmImageError('bad-manifest', `${file} is not a JSON object`);
  const o = v as Record<string, unknown>;
  if (o.schemaVersion !== 2 || !Array.isArray(o.manifests)) throw new VmImageError('bad-manifest', `${file} is not an OCI image index (schemaVersion 2 with "manifests")`);
  return { ...o, schemaVersion: 2, mediaType: typeof o.mediaType === 'string' ? o.mediaType : MEDIA_TYPES.ociIndex, manifests: o.manifests as Array<Record<string, unknown>> };
}

/**
 * Writes (or adds to) an OCI image layout: blobs (hard-linked or copied), the manifest blob, and an
 * index.json entry for `tag` (replacing an earlier entry with the same tag).
 */
export async function writeOciLayout(image: PackedImage, layoutDir: string, tag: string): Promise<void> {
  checkTag(tag);
  const dir = path.resolve(layoutDir);
  try {
    await fsp.mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true });
    const layoutFile = path.join(dir, 'oci-layout');
    if (!(await exists(layoutFile))) await writeFileAtomically(layoutFile, Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
    for (const b of [image.config, ...image.layers]) await placeBlob(b.path, b.descriptor, blobFile(dir, b.descriptor.digest));
    const manifestDigest = `sha256:${createHash('sha256').update(image.manifestBytes).digest('hex')}`;
    if (manifestDigest !== image.manifestDigest) throw new VmImageError('digest-mismatch', `manifestBytes hash to ${manifestDigest}, but manifestDigest says ${image.manifestDigest}`);
    const manifestFile = blobFile(dir, manifestDigest);
    if (!(await exists(manifestFile))) await writeFileAtomically(manifestFile, image.manifestBytes);

    const index = (await readIndex(dir)) ?? { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: [] };
    const others = index.manifests.filter((m) => {
      const ann = m.annotations;
      return !(typeof ann === 'object' && ann !== null && (ann as Record<string, unknown>)[ANNOTATIONS.ociRefName] === tag);
    });
    const entry: Record<string, unknown> = {
      mediaType: image.manifest.mediaType,
      digest: manifestDigest,
      size: image.manifestBytes.length,
      annotations: { [ANNOTATIONS.ociRefName]: tag },
    };
    index.manifests = [...others, entry];
    await writeFileAtomically(path.join(dir, 'index.json'), Buffer.from(JSON.stringify(index)));
  } catch (err) {
    throw asVmImageError(err, `writing OCI layout ${dir}`);
  }
}

/**
 * Reads the image tagged `tag` from an OCI image layout. The manifest's bytes are checked against
 * their digest and every blob must exist with its descriptor's size; blob contents are not
 * re-hashed here (a registry push checks them anyway).
 */
export async function readOciLayout(layoutDir: string, tag: string): Promise<PackedImage> {
  checkTag(tag);
  const dir = path.resolve(layoutDir);
  try {
    let layout: unknown;
    try {
      layout = JSON.parse(await fsp.readFile(path.join(dir, 'oci-layout'), 'utf8'));
    } catch (err) {
      throw new VmImageError('bad-manifest', `${dir} is not an OCI image layout (no readable oci-layout file: ${(err as Error).message})`);
    }
    if (typeof layout !== 'object' || layout === null || (layout as Record<string, unknown>).imageLayoutVersion !== '1.0.0') {
      throw new VmImageError('bad-manifest', `${dir}/oci-layout does not say imageLayoutVersion "1.0.0"`);
    }
    const index = await readIndex(dir);
    if (!index) throw new VmImageError('bad-manifest', `${dir} has no index.json`);
    const matches = index.manifests.filter((m) => {
      const ann = m.annotations;
      return typeof ann === 'object' && ann !== null && (ann as Record<string, unknown>)[ANNOTATIONS.ociRefName] === tag;
    });
    if (matches.length === 0) throw new VmImageError('bad-manifest', `${dir} has no image tagged ${JSON.stringify(tag)}`);
    if (matches.length > 1) throw new VmImageError('bad-manifest', `${dir} has ${matches.length} images tagged ${JSON.stringify(tag)}`);
    const ref = parseDescriptor(matches[0], `index.json entry for ${tag}`);
    if (ref.mediaType === MEDIA_TYPES.ociIndex || ref.mediaType === MEDIA_TYPES.dockerManifestList) {
      throw new VmImageError('bad-manifest', `${tag} in ${dir} is an image index; only single-platform VM images are supported`);
    }
    if (ref.size > MAX_MANIFEST_BYTES) throw new VmImageError('bad-manifest', `manifest for ${tag} is ${ref.size} bytes; at most ${MAX_MANIFEST_BYTES} are accepted`);
    const manifestBytes = await fsp.readFile(blobFile(dir, ref.digest));
    const digest = `sha256:${createHash('sha256').update(manifestBytes).digest('hex')}`;
    if (digest !== ref.digest || manifestBytes.length !== ref.size) {
      throw new VmImageError('digest-mismatch', `manifest blob for ${tag} hashes to ${digest} (${manifestBytes.length} bytes), index.json says ${ref.digest} (${ref.size} bytes)`);
    }
    let json: unknown;
    try {
      json = JSON.parse(manifestBytes.toString('utf8'));
    } catch (err) {
      throw new VmImageError('bad-manifest', `manifest for ${tag} is not JSON: ${(err as Error).message}`);
    }
    const manifest = parseImageManifest(json);
    const toFile = async (d: Descriptor): Promise<BlobFile> => {
      if (!isDigest(d.digest)) throw new VmImageError('bad-manifest', `bad digest ${d.digest}`);
      const file = blobFile(dir, d.digest);
      const st = await fsp.stat(file).catch(() => undefined);
      if (!st) throw new VmImageError('bad-manifest', `blob ${d.digest} (${d.mediaType}) is missing from ${dir}`);
      if (st.size !== d.size) throw new VmImageError('digest-mismatch', `blob ${d.digest} in ${dir} is ${st.size} bytes, the manifest says ${d.size}`);
      return { descriptor: d, path: file };
    };
    const config = await toFile(manifest.config);
    const layers: BlobFile[] = [];
    for (const l of manifest.layers) layers.push(await toFile(l));
    return { manifest, manifestBytes, manifestDigest: digest, config, layers };
  } catch (err) {
    throw asVmImageError(err, `reading OCI layout ${dir}`);
  }
}
