import { VmImageError } from './errors.ts';
import { parseFleetQemuConfig } from './fleet-qemu.ts';
import type { ImageFormat } from './manifest.ts';
import { tartPlatform } from './tart.ts';

export { VmImageError, type VmImageErrorCode } from './errors.ts';
export {
  MEDIA_TYPES,
  ANNOTATIONS,
  MAX_LAYERS,
  parseImageManifest,
  detectFormat,
  imageLayerBytes,
  serializeManifest,
  type Descriptor,
  type ImageManifest,
  type ImageFormat,
} from './manifest.ts';
export type { BlobFile, PackedImage, UnpackProgress } from './types.ts';
export { packTartBundle, unpackTartImage, parseTartConfig, TART_DISK_CHUNK_SIZE } from './tart.ts';
export { packFleetQemu, unpackFleetQemu, planFleetQemu, parseFleetQemuConfig, inspectDisk, FLEET_DISK_CHUNK_SIZE, type FleetQemuConfig, type FleetQemuPlan } from './fleet-qemu.ts';
export { writeOciLayout, readOciLayout } from './oci-layout.ts';
export { AppleLz4Encoder, AppleLz4Decoder, Lz4FormatError, appleLz4Compress, appleLz4Decompress } from './apple-lz4.ts';

/**
 * The platform an image runs on, from its manifest config blob. Tart: the OCI config stub's
 * os/architecture (Tart's config.json, with os/arch, is accepted too); darwin/arm64 when absent,
 * as in Tart. Fleet qemu: always linux, architecture from the config.
 */
export function platformOf(format: ImageFormat, config: Buffer): { os: string; architecture: string } {
  if (format === 'tart') return tartPlatform(config);
  if (format === 'fleet-qemu') {
    const c = parseFleetQemuConfig(config);
    return { os: c.os, architecture: c.architecture };
  }
  throw new VmImageError('unsupported-media-type', `unknown image format ${String(format)}`);
}
