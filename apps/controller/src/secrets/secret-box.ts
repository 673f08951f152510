// Envelope encryption for secrets the controller keeps in its database (issue 14).
//
// Every secret gets its own random 256-bit data key (DEK). The secret is encrypted with the DEK
// (AES-256-GCM); the DEK is encrypted ("wrapped") with the key-encryption key (KEK, AES-256-GCM),
// which lives outside the database (key-provider.ts). The database holds only the envelope:
//
//   fsec1.<kek id>.<wrapped DEK>.<nonce>.<ciphertext>.<tag>        (base64url fields, no padding)
//
// - "fsec1": format and version; anything else is refused, never guessed at.
// - kek id: a fingerprint of the KEK (key-provider.ts), so a keyring holding several KEKs
//   (during a rotation) knows which one opens this envelope.
// - wrapped DEK: wrap nonce (12) ‖ encrypted DEK (32) ‖ wrap tag (16).
// - nonce (12), ciphertext, tag (16): the secret under the DEK.
//
// Both layers are authenticated with associated data naming where the secret lives (table, row id,
// column, see `secretContext`), so an envelope copied to another row or column — or a wrapped DEK
// spliced into another envelope — fails to open instead of decrypting to someone else's secret.
// Rotation re-wraps the DEK under a new KEK and keeps nonce, ciphertext and tag (`rewrap`).
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { randomBytesPooled } from './random-bytes.ts';
import type { KeyProvider } from './key-provider.ts';

export const ENVELOPE_PREFIX = 'fsec1';
const DOMAIN = 'fleet-secret/v1';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const WRAPPED_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES;
/** Far below GCM's limit (64 GiB); the secrets here are keys and passwords, so larger is a bug. */
export const MAX_SECRET_BYTES = 16 * 1024 * 1024;

export type SecretErrorCode = 'malformed' | 'unknown-key' | 'tampered' | 'too-large';

/** A secret that cannot be sealed or opened; never carries key material or plaintext. */
export class SecretError extends Error {
  constructor(
    readonly code: SecretErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'SecretError';
  }
}

/** Where a secret lives: the associated data both layers are bound to. */
export function secretContext(table: string, rowId: string, column: string): string {
  for (const part of [table, rowId, column]) {
    // '|' separates the parts: a part containing it could make two contexts equal.
    if (!part || part.includes('|')) throw new Error(`invalid secret context part ${JSON.stringify(part)}`);
  }
  return `${table}|${rowId}|${column}`;
}

export interface ParsedEnvelope {
  kekId: string;
  wrapped: Buffer;
  nonce: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

const b64 = (b: Buffer) => b.toString('base64url');
function unb64(s: string, what: string): Buffer {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new SecretError('malformed', `secret envelope: ${what} is not base64url`);
  return Buffer.from(s, 'base64url');
}

export function isEnvelope(value: string): boolean {
  return value.startsWith(ENVELOPE_PREFIX + '.');
}

export function parseEnvelope(envelope: string): ParsedEnvelope {
  const parts = envelope.split('.');
  if (parts[0] !== ENVELOPE_PREFIX) throw new SecretError('malformed', `not a Fleet secret envelope (expected the "${ENVELOPE_PREFIX}" format)`);
  if (parts.length !== 6) throw new SecretError('malformed', `secret envelope: expected 6 fields, found ${parts.length}`);
  const [, kekId, wrapped, nonce, ciphertext, tag] = parts as [string, string, string, string, string, string];
  if (!/^[0-9a-f]{16}$/.test(kekId)) throw new SecretError('malformed', 'secret envelope: bad key id');
  const out = { kekId, wrapped: unb64(wrapped, 'wrapped key'), nonce: unb64(nonce, 'nonce'), ciphertext: unb64(ciphertext, 'ciphertext'), tag: unb64(tag, 'tag') };
  if (out.wrapped.length !== WRAPPED_BYTES) throw new SecretError('malformed', 'secret envelope: wrapped key has the wrong length');
  if (out.nonce.length !== NONCE_BYTES) throw new SecretError('malformed', 'secret envelope: nonce has the wrong length');
  if (out.tag.length !== TAG_BYTES) throw new SecretError('malformed', 'secret envelope: tag has the wrong length');
  return out;
}

function formatEnvelope(e: ParsedEnvelope): string {
  return [ENVELOPE_PREFIX, e.kekId, b64(e.wrapped), b64(e.nonce), b64(e.ciphertext), b64(e.tag)].join('.');
}

function gcmSeal(key: Buffer, plaintext: Buffer, aad: string): { nonce: Buffer; ciphertext: Buffer; tag: Buffer } {
  const nonce = randomBytesPooled(NONCE_BYTES);
  const c = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  c.setAAD(Buffer.from(aad, 'utf8'));
  const ciphertext = Buffer.concat([c.update(plaintext), c.final()]);
  return { nonce, ciphertext, tag: c.getAuthTag() };
}

function gcmOpen(key: Buffer, nonce: Buffer, ciphertext: Buffer, tag: Buffer, aad: string, what: string): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(tag);
  try {
    return Buffer.concat([d.update(ciphertext), d.final()]);
  } catch {
    // Node says only "Unsupported state or unable to authenticate data": say what it means here.
    throw new SecretError('tampered', `${what} failed authentication: the envelope was altered, belongs to another row or column, or was sealed under another key with the same id`);
  }
}

const wrapAad = (kekId: string, aad: string) => `${DOMAIN}|wrap|${kekId}|${aad}`;
const dataAad = (aad: string) => `${DOMAIN}|data|${aad}`;

export class SecretBox {
  constructor(readonly keys: KeyProvider) {}

  /** Encrypts `plaintext` for the place named by `aad` (secretContext) under the current KEK. */
  async seal(plaintext: string | Buffer, aad: string): Promise<string> {
    const data = typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext;
    if (data.length > MAX_SECRET_BYTES) throw new SecretError('too-large', `secret of ${data.length} bytes is larger than the ${MAX_SECRET_BYTES} allowed`);
    await this.keys.refresh?.();
    const kek = this.keys.current();
    const dek = randomBytesPooled(KEY_BYTES);
    try {
      const body = gcmSeal(dek, data, dataAad(aad));
      const w = gcmSeal(kek.key, dek, wrapAad(kek.id, aad));
      return formatEnvelope({ kekId: kek.id, wrapped: Buffer.concat([w.nonce, w.ciphertext, w.tag]), ...body });
    } finally {
      dek.fill(0);
    }
  }

  async openBytes(envelope: string, aad: string): Promise<Buffer> {
    const e = parseEnvelope(envelope);
    const dek = await this.unwrap(e, aad);
    try {
      return gcmOpen(dek, e.nonce, e.ciphertext, e.tag, dataAad(aad), 'secret');
    } finally {
      dek.fill(0);
    }
  }

  async open(envelope: string, aad: string): Promise<string> {
    return (await this.openBytes(envelope, aad)).toString('utf8');
  }

  /** The KEK id an envelope is wrapped under (no key needed). */
  kekIdOf(envelope: string): string {
    return parseEnvelope(envelope).kekId;
  }

  /**
   * The same secret with its data key wrapped under the current KEK: nonce, ciphertext and tag are
   * kept (the body is never decrypted). Returns the envelope unchanged if it already is.
   */
  async rewrap(envelope: string, aad: string): Promise<string> {
    const e = parseEnvelope(envelope);
    await this.keys.refresh?.();
    const kek = this.keys.current();
    if (e.kekId === kek.id) return envelope;
    const dek = await this.unwrap(e, aad);
    try {
      const w = gcmSeal(kek.key, dek, wrapAad(kek.id, aad));
      return formatEnvelope({ ...e, kekId: kek.id, wrapped: Buffer.concat([w.nonce, w.ciphertext, w.tag]) });
    } finally {
      dek.fill(0);
    }
  }

  private async unwrap(e: ParsedEnvelope, aad: string): Promise<Buffer> {
    let kek = this.keys.byId(e.kekId);
    if (!kek && this.keys.refresh) {
      // A key this process has not loaded yet: another process (rotate-key, another controller)
      // may have made it current since. Reload the keyring once and look again.
      await this.keys.refresh(true);
      kek = this.keys.byId(e.kekId);
    }
    if (!kek) {
      throw new SecretError('unknown-key', `secret is sealed under key ${e.kekId}, which this controller does not hold (its keys: ${this.keys.ids().join(', ') || 'none'}); give it that key (see docs/operations.md, "Secrets at rest")`);
    }
    const w = e.wrapped;
    return gcmOpen(kek, w.subarray(0, NONCE_BYTES), w.subarray(NONCE_BYTES, NONCE_BYTES + KEY_BYTES), w.subarray(NONCE_BYTES + KEY_BYTES), wrapAad(e.kekId, aad), 'secret data key');
  }
}
