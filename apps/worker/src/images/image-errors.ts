// One operator-facing sentence for whatever went wrong in a pull or push: the registry client's,
// the format code's and the file system's errors all end up on the VM and in its events.
export type ImageErrorCode = 'disk-full' | 'auth' | 'not-found' | 'digest-mismatch' | 'network' | 'format' | 'other';

export function describeImageError(error: unknown, reference: string): { code: ImageErrorCode; message: string } {
  const e = error as { code?: unknown; message?: unknown; name?: unknown };
  const raw = typeof e?.message === 'string' ? e.message : String(error);
  const message = raw.includes(reference) ? raw : `${reference}: ${raw}`;
  switch (e?.code) {
    case 'ENOSPC':
    case 'disk-full':
      return { code: 'disk-full', message: raw.startsWith('not enough disk space') ? raw : `${message} (the worker's disk is full)` };
    case 'unauthorized':
    case 'denied':
      return { code: 'auth', message };
    case 'not-found':
      return { code: 'not-found', message };
    case 'digest-mismatch':
      return { code: 'digest-mismatch', message: /digest/i.test(message) ? message : `digest mismatch: ${message}` };
    case 'network':
    case 'tls':
    case 'insecure-refused':
    case 'ECONNREFUSED':
    case 'ECONNRESET':
    case 'ETIMEDOUT':
      return { code: 'network', message };
    case 'unsupported-media-type':
    case 'bad-manifest':
    case 'bad-config':
    case 'no-platform':
    case 'too-large':
    case 'wrong-format':
      return { code: 'format', message };
    default:
      return { code: 'other', message };
  }
}
