// The envelope format: round trips, and every kind of tampering or misplacement fails with a
// SecretError (never garbage), including a KEK the box does not hold.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SecretBox, SecretError, MAX_SECRET_BYTES, parseEnvelope, secretContext } from './secret-box.ts';
import { kekId, staticKeyProvider } from './key-provider.ts';

const k1 = randomBytes(32);
const k2 = randomBytes(32);
const box = new SecretBox(staticKeyProvider([k1]));
const AAD = secretContext('VmAccess', 'vm-1', 'privateKey');

/** Flips one bit of field `i` (1 = kek id … 5 = tag) of an envelope. */
function flip(envelope: string, i: number, byte = 0): string {
  const parts = envelope.split('.');
  const b = Buffer.from(parts[i]!, 'base64url');
  b[byte] = b[byte]! ^ 1;
  parts[i] = b.toString('base64url');
  return parts.join('.');
}

async function refusal(p: Promise<unknown>): Promise<SecretError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SecretError);
  return err as SecretError;
}

describe('SecretBox', () => {
  it('round-trips text, binary, empty and large secrets; each seal is fresh', async () => {
    const text = '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n';
    const a = await box.seal(text, AAD);
    expect(a.startsWith('fsec1.' + kekId(k1) + '.')).toBe(true);
    expect(a).not.toContain('b3BlbnNzaC1rZXktdjEAAAAA');
    expect(await box.open(a, AAD)).toBe(text);
    // Same plaintext, new data key and nonce.
    expect(await box.seal(text, AAD)).not.toBe(a);
    expect(await box.open(await box.seal('', AAD), AAD)).toBe('');
    const bin = randomBytes(1024 * 1024);
    expect((await box.openBytes(await box.seal(bin, AAD), AAD)).equals(bin)).toBe(true);
    expect(await box.open(await box.seal('pass wörd ✓', AAD), AAD)).toBe('pass wörd ✓');
  });

  it('refuses a secret above the size limit', async () => {
    expect((await refusal(box.seal(Buffer.alloc(MAX_SECRET_BYTES + 1), AAD))).code).toBe('too-large');
  });

  it('refuses tampered wrapped key, nonce, ciphertext and tag', async () => {
    const e = await box.seal('secret value', AAD);
    for (const [i, what] of [
      [2, 'wrapped key'],
      [3, 'nonce'],
      [4, 'ciphertext'],
      [5, 'tag'],
    ] as const) {
      const err = await refusal(box.open(flip(e, i), AAD));
      expect(err.code, what).toBe('tampered');
      expect(err.message).toMatch(/failed authentication/);
    }
    // The wrap's own nonce and tag too (first and last bytes of the wrapped field).
    expect((await refusal(box.open(flip(e, 2, 59), AAD))).code).toBe('tampered');
    // Truncations and garbage are malformed, not crashes.
    expect((await refusal(box.open(e.split('.').slice(0, 5).join('.'), AAD))).code).toBe('malformed');
    expect((await refusal(box.open('plain text', AAD))).code).toBe('malformed');
    expect((await refusal(box.open(e.replace('fsec1.', 'fsec2.'), AAD))).code).toBe('malformed');
    expect((await refusal(box.open(e.replace(/\.[^.]+$/, '.AAAA'), AAD))).code).toBe('malformed');
  });

  it('an envelope moved to another row or column does not open', async () => {
    const e = await box.seal('secret value', AAD);
    expect((await refusal(box.open(e, secretContext('VmAccess', 'vm-2', 'privateKey')))).code).toBe('tampered');
    expect((await refusal(box.open(e, secretContext('VmAccess', 'vm-1', 'password')))).code).toBe('tampered');
    expect((await refusal(box.open(e, secretContext('Other', 'vm-1', 'privateKey')))).code).toBe('tampered');
    // A wrapped data key spliced from another row's envelope does not open this one either.
    const other = await box.seal('secret value', secretContext('VmAccess', 'vm-2', 'privateKey'));
    const spliced = e.split('.');
    spliced[2] = other.split('.')[2]!;
    expect((await refusal(box.open(spliced.join('.'), AAD))).code).toBe('tampered');
    expect(() => secretContext('VmAccess', 'a|b', 'privateKey')).toThrow();
  });

  it('an unknown KEK id is a clear error naming the key', async () => {
    const e = await new SecretBox(staticKeyProvider([k2])).seal('x', AAD);
    const err = await refusal(box.open(e, AAD));
    expect(err.code).toBe('unknown-key');
    expect(err.message).toContain(kekId(k2));
    // A forged kek id (another key's id, with this key's wrap) fails authentication.
    const both = new SecretBox(staticKeyProvider([k1, k2]));
    const forged = (await box.seal('x', AAD)).replace(kekId(k1), kekId(k2));
    expect((await refusal(both.open(forged, AAD))).code).toBe('tampered');
  });

  it('rewrap moves the data key to the current KEK and keeps the body', async () => {
    const e1 = await box.seal('rotate me', AAD);
    const rotated = new SecretBox(staticKeyProvider([k2, k1]));
    const e2 = await rotated.rewrap(e1, AAD);
    const p1 = parseEnvelope(e1);
    const p2 = parseEnvelope(e2);
    expect(p2.kekId).toBe(kekId(k2));
    expect(p2.ciphertext.equals(p1.ciphertext) && p2.nonce.equals(p1.nonce) && p2.tag.equals(p1.tag)).toBe(true);
    expect(p2.wrapped.equals(p1.wrapped)).toBe(false);
    // During the rotation both envelopes open; afterwards only the new key is needed.
    expect(await rotated.open(e1, AAD)).toBe('rotate me');
    expect(await rotated.open(e2, AAD)).toBe('rotate me');
    expect(await new SecretBox(staticKeyProvider([k2])).open(e2, AAD)).toBe('rotate me');
    expect(await rotated.rewrap(e2, AAD)).toBe(e2);
  });
});
