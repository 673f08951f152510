import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { PkiError } from './errors.ts';

// ---------------------------------------------------------------------------
// Secrets, hashes, ids
// ---------------------------------------------------------------------------

/** Secret alphabet: base64url without padding, i.e. [A-Za-z0-9_-]. */
const SECRET_RE = /^[A-Za-z0-9_-]+$/;
/** Shortest secret accepted when parsing: 16 bytes = 22 base64url characters. */
const MIN_SECRET_CHARS = 22;
/** Longest secret accepted when parsing (1024 bytes). */
const MAX_SECRET_CHARS = 1366;
/** Token ids: lowercase letters and digits only (so they never contain '.' or '_'). */
const ID_RE = /^[a-z0-9]{1,64}$/;
const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
const ID_LENGTH = 12;

/** `bytes` (default 32, min 16) random bytes as unpadded base64url. */
export function generateSecret(bytes = 32): string {
  if (!Number.isInteger(bytes) || bytes < 16 || bytes > 1024) throw new PkiError(`secret size must be an integer between 16 and 1024 bytes, got ${String(bytes)}`);
  return randomBytes(bytes).toString('base64url');
}

/** SHA-256 of the secret's UTF-8 bytes, lowercase hex. This is what the server stores. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/**
 * Constant-time comparison of two hex strings (case-insensitive). False if
 * either is not hex or their lengths differ (lengths are not secret: both are
 * SHA-256 hex in practice).
 */
export function constantTimeEqualHex(a: string, b: string): boolean {
  if (typeof a !== 'string' || typeof b !== 'string') return false;
  if (a.length !== b.length || a.length % 2 !== 0) return false;
  if (!/^[0-9a-fA-F]*$/.test(a) || !/^[0-9a-fA-F]*$/.test(b)) return false;
  return timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));
}

/** 12 random characters from [a-z0-9] (~62 bits), for token ids. */
export function newId(): string {
  let id = '';
  for (let i = 0; i < ID_LENGTH; i++) id += ID_ALPHABET[randomInt(ID_ALPHABET.length)];
  return id;
}

function checkParts(kind: string, id: string, secret: string): void {
  if (typeof id !== 'string' || !ID_RE.test(id)) throw new PkiError(`${kind}: id must be 1-64 characters of [a-z0-9]`);
  if (typeof secret !== 'string' || !SECRET_RE.test(secret)) throw new PkiError(`${kind}: secret must be base64url ([A-Za-z0-9_-])`);
  if (secret.length < MIN_SECRET_CHARS) throw new PkiError(`${kind}: secret is too short (${secret.length} characters, need at least ${MIN_SECRET_CHARS})`);
  if (secret.length > MAX_SECRET_CHARS) throw new PkiError(`${kind}: secret is too long (${secret.length} characters)`);
}

// ---------------------------------------------------------------------------
// Bootstrap tokens: fleet-bootstrap-v1.<id>.<secret>.<caFingerprint>
// ---------------------------------------------------------------------------

const BOOTSTRAP_PREFIX = 'fleet-bootstrap-';
const BOOTSTRAP_VERSION = 'v1';

export interface BootstrapTokenParts {
  id: string;
  secret: string;
  /** SHA-256 of the controller CA certificate DER, 64 lowercase hex characters. */
  caFingerprint: string;
}

function checkFingerprint(fp: string): string {
  if (typeof fp !== 'string') throw new PkiError('malformed bootstrap token: CA fingerprint missing');
  if (fp.length !== 64) throw new PkiError(`malformed bootstrap token: bad CA fingerprint length (expected 64 hex characters, got ${fp.length})`);
  if (!/^[0-9a-fA-F]{64}$/.test(fp)) throw new PkiError('malformed bootstrap token: CA fingerprint is not hexadecimal');
  return fp.toLowerCase();
}

export function encodeBootstrapToken(p: BootstrapTokenParts): string {
  checkParts('bootstrap token', p.id, p.secret);
  const fp = checkFingerprint(p.caFingerprint);
  return `${BOOTSTRAP_PREFIX}${BOOTSTRAP_VERSION}.${p.id}.${p.secret}.${fp}`;
}

/**
 * Parses a bootstrap token (surrounding whitespace is ignored; the fingerprint
 * is returned lowercase). Throws PkiError describing what is wrong; messages
 * never include the secret or any other part of the input except a version tag.
 */
export function parseBootstrapToken(token: string): BootstrapTokenParts {
  if (typeof token !== 'string' || token.trim() === '') throw new PkiError('bootstrap token is empty');
  const parts = token.trim().split('.');
  const head = parts[0] ?? '';
  if (!head.startsWith(BOOTSTRAP_PREFIX)) {
    const hint = token.trim().startsWith('fleet_') ? ' (this looks like an API token)' : '';
    throw new PkiError(`not a Fleet bootstrap token: expected it to start with "${BOOTSTRAP_PREFIX}${BOOTSTRAP_VERSION}."${hint}`);
  }
  const version = head.slice(BOOTSTRAP_PREFIX.length);
  if (version !== BOOTSTRAP_VERSION) {
    const shown = /^v[0-9]{1,4}$/.test(version) ? `"${version}"` : 'an unrecognised version';
    throw new PkiError(`unsupported bootstrap token version: got ${shown}, this build understands "${BOOTSTRAP_VERSION}"`);
  }
  if (parts.length !== 4) {
    throw new PkiError(`malformed bootstrap token: expected 4 dot-separated parts (${BOOTSTRAP_PREFIX}${BOOTSTRAP_VERSION}.<id>.<secret>.<ca-fingerprint>), got ${parts.length}`);
  }
  const [, id = '', secret = '', fp = ''] = parts;
  checkParts('malformed bootstrap token', id, secret);
  return { id, secret, caFingerprint: checkFingerprint(fp) };
}

// ---------------------------------------------------------------------------
// API tokens: fleet_<id>_<secret>
// ---------------------------------------------------------------------------

const API_PREFIX = 'fleet_';

export interface ApiTokenParts {
  id: string;
  secret: string;
}

/**
 * `fleet_<id>_<secret>`. The id alphabet is [a-z0-9] (no '_'); the secret is
 * base64url and MAY contain '_' and '-'. Parsing therefore takes the id as
 * the text between the first and second '_' and everything after the second
 * '_' as the secret.
 */
export function encodeApiToken(p: ApiTokenParts): string {
  checkParts('API token', p.id, p.secret);
  return `${API_PREFIX}${p.id}_${p.secret}`;
}

/** The parts of a Fleet API token, or null if `token` is not shaped like one. Surrounding whitespace is ignored. */
export function parseApiToken(token: string): ApiTokenParts | null {
  if (typeof token !== 'string') return null;
  const t = token.trim();
  if (!t.startsWith(API_PREFIX) || t.length > API_PREFIX.length + 65 + MAX_SECRET_CHARS) return null;
  const rest = t.slice(API_PREFIX.length);
  const sep = rest.indexOf('_');
  if (sep <= 0) return null;
  const id = rest.slice(0, sep);
  const secret = rest.slice(sep + 1);
  if (!ID_RE.test(id) || !SECRET_RE.test(secret) || secret.length < MIN_SECRET_CHARS || secret.length > MAX_SECRET_CHARS) return null;
  return { id, secret };
}
