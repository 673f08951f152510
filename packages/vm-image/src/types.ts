import type { Descriptor, ImageManifest } from './manifest.ts';

/** A blob (config or layer) that exists as a file: what to push, or what was pulled. */
export interface BlobFile {
  descriptor: Descriptor;
  path: string;
}

/** A packed image: manifestBytes is exactly what gets pushed (manifestDigest is its sha256). */
export interface PackedImage {
  manifest: ImageManifest;
  manifestBytes: Buffer;
  manifestDigest: string;
  config: BlobFile;
  layers: BlobFile[];
}

export interface UnpackProgress {
  bytesDone: number;
  bytesTotal: number;
}
