/**
 * What went wrong, as a stable code callers can branch on (the worker maps these to
 * pull/push failures; the CLI to exit messages):
 * - unsupported-media-type: the manifest/config/layer type is not one of our VM image formats
 * - bad-manifest: the manifest is malformed or inconsistent (missing layers, wrong counts, offsets)
 * - bad-config: a config blob (ours or Tart's) or a pack input is invalid
 * - digest-mismatch: content does not match what the manifest promises (digest, size, undecodable data)
 * - disk-full: ENOSPC while writing; temp files were removed
 * - io: any other filesystem failure
 */
export type VmImageErrorCode = 'unsupported-media-type' | 'bad-manifest' | 'bad-config' | 'digest-mismatch' | 'disk-full' | 'io';

export class VmImageError extends Error {
  readonly code: VmImageErrorCode;

  constructor(code: VmImageErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'VmImageError';
    this.code = code;
  }
}

function errnoOf(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/**
 * Wraps a filesystem error with what we were doing. ENOSPC becomes 'disk-full' so callers can tell
 * "free some space and retry" from a real fault; VmImageErrors and aborts pass through untouched.
 */
export function asVmImageError(err: unknown, context: string): Error {
  if (err instanceof VmImageError) return err;
  if (err instanceof Error && err.name === 'AbortError') return err;
  const errno = errnoOf(err);
  const detail = err instanceof Error ? err.message : String(err);
  if (errno === 'ENOSPC' || errno === 'EDQUOT') {
    return new VmImageError('disk-full', `${context}: no space left on device (${detail})`, { cause: err });
  }
  return new VmImageError('io', `${context}: ${detail}`, { cause: err });
}
