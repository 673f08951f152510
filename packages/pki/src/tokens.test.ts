import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  PkiError,
  constantTimeEqualHex,
  encodeApiToken,
  encodeBootstrapToken,
  generateSecret,
  hashSecret,
  newId,
  parseApiToken,
  parseBootstrapToken,
} from './index.ts';

const FP = 'ab'.repeat(32);

function errorOf(fn: () => unknown): PkiError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PkiError);
    return err as PkiError;
  }
  throw new Error('expected a PkiError');
}

describe('secrets and ids', () => {
  it('generateSecret gives 32 random bytes as unpadded base64url by default', () => {
    const s = generateSecret();
    expect(s).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(s, 'base64url')).toHaveLength(32);
    expect(generateSecret()).not.toBe(s);
    expect(generateSecret(16)).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(() => generateSecret(8)).toThrow(PkiError);
    expect(() => generateSecret(1.5)).toThrow(PkiError);
  });

  it('hashSecret is lowercase SHA-256 hex of the UTF-8 secret', () => {
    expect(hashSecret('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(hashSecret('é')).toBe(createHash('sha256').update(Buffer.from('é', 'utf8')).digest('hex'));
  });

  it('constantTimeEqualHex compares hex values, case-insensitively, and is false for junk', () => {
    const h = hashSecret('x');
    expect(constantTimeEqualHex(h, h)).toBe(true);
    expect(constantTimeEqualHex(h, h.toUpperCase())).toBe(true);
    expect(constantTimeEqualHex(h, hashSecret('y'))).toBe(false);
    expect(constantTimeEqualHex(h, h.slice(2))).toBe(false);
    expect(constantTimeEqualHex('zz', 'zz')).toBe(false);
    expect(constantTimeEqualHex('abc', 'abc')).toBe(false); // odd length is not a byte string
    expect(constantTimeEqualHex('', '')).toBe(true);
    expect(constantTimeEqualHex(undefined as unknown as string, h)).toBe(false);
  });

  it('newId is 12 characters of [a-z0-9] and does not repeat', () => {
    const ids = new Set(Array.from({ length: 2000 }, () => newId()));
    expect(ids.size).toBe(2000);
    for (const id of ids) expect(id).toMatch(/^[a-z0-9]{12}$/);
    // Every character of the alphabet shows up (no modulo-bias holes).
    expect(new Set([...ids].join('')).size).toBe(36);
  });
});

describe('bootstrap tokens', () => {
  const parts = { id: newId(), secret: generateSecret(), caFingerprint: FP };

  it('round-trips', () => {
    const token = encodeBootstrapToken(parts);
    expect(token).toBe(`fleet-bootstrap-v1.${parts.id}.${parts.secret}.${FP}`);
    expect(parseBootstrapToken(token)).toEqual(parts);
    expect(parseBootstrapToken(`  ${token}\n`)).toEqual(parts);
    // Secrets may contain '-' and '_' (base64url).
    const tricky = { ...parts, secret: '-_' + 'A'.repeat(41) };
    expect(parseBootstrapToken(encodeBootstrapToken(tricky))).toEqual(tricky);
    // Uppercase fingerprints are accepted and normalised.
    expect(parseBootstrapToken(token.replace(FP, FP.toUpperCase())).caFingerprint).toBe(FP);
  });

  it('explains each malformation without echoing the secret', () => {
    const s = parts.secret;
    const cases: Array<[string, RegExp]> = [
      ['', /empty/],
      [`fleet_${parts.id}_${s}`, /not a Fleet bootstrap token.*looks like an API token/],
      [`bootstrap-v1.${parts.id}.${s}.${FP}`, /not a Fleet bootstrap token/],
      [`fleet-bootstrap-v2.${parts.id}.${s}.${FP}`, /unsupported bootstrap token version: got "v2"/],
      [`fleet-bootstrap-${s}.${parts.id}.${s}.${FP}`, /unsupported bootstrap token version: got an unrecognised version/],
      [`fleet-bootstrap-v1.${parts.id}.${s}`, /expected 4 dot-separated parts .* got 3/],
      [`fleet-bootstrap-v1.${parts.id}.${s}.${FP}.extra`, /expected 4 dot-separated parts .* got 5/],
      [`fleet-bootstrap-v1.${parts.id}.${s}.${FP.slice(1)}`, /bad CA fingerprint length \(expected 64 hex characters, got 63\)/],
      [`fleet-bootstrap-v1.${parts.id}.${s}.${FP}ab`, /bad CA fingerprint length .* got 66/],
      [`fleet-bootstrap-v1.${parts.id}.${s}.${'g'.repeat(64)}`, /CA fingerprint is not hexadecimal/],
      [`fleet-bootstrap-v1.${parts.id}.${s}.`, /got 0\)/],
      [`fleet-bootstrap-v1.UPPER.${s}.${FP}`, /id must be 1-64 characters of \[a-z0-9\]/],
      [`fleet-bootstrap-v1..${s}.${FP}`, /id must be/],
      [`fleet-bootstrap-v1.${parts.id}.${s.slice(0, 10)}.${FP}`, /secret is too short \(10 characters/],
      [`fleet-bootstrap-v1.${parts.id}.${s.slice(0, 30)}+/=.${FP}`, /secret must be base64url/],
    ];
    for (const [token, message] of cases) {
      const err = errorOf(() => parseBootstrapToken(token));
      expect(err.message, token).toMatch(message);
      expect(err.message).not.toContain(s);
      expect(err.message).not.toContain(s.slice(0, 10));
    }
    expect(errorOf(() => parseBootstrapToken(undefined as unknown as string)).message).toMatch(/empty/);
  });

  it('encode validates its input', () => {
    expect(() => encodeBootstrapToken({ ...parts, caFingerprint: 'abc' })).toThrow(/fingerprint length/);
    expect(() => encodeBootstrapToken({ ...parts, id: 'a.b' })).toThrow(/id must be/);
    expect(() => encodeBootstrapToken({ ...parts, secret: 'a.b'.repeat(10) })).toThrow(/base64url/);
  });
});

describe('API tokens', () => {
  it('round-trips, including secrets that contain "_"', () => {
    for (let i = 0; i < 200; i++) {
      const p = { id: newId(), secret: generateSecret() };
      const token = encodeApiToken(p);
      expect(token).toBe(`fleet_${p.id}_${p.secret}`);
      expect(parseApiToken(token)).toEqual(p);
    }
    const p = { id: 'abc123', secret: '_leading_and__double_' + 'x'.repeat(22) };
    expect(parseApiToken(encodeApiToken(p))).toEqual(p);
    expect(parseApiToken(` fleet_e2eadmin0001_${'A'.repeat(43)}\n`)).toEqual({ id: 'e2eadmin0001', secret: 'A'.repeat(43) });
  });

  it('returns null for anything not shaped like a Fleet API token', () => {
    const secret = generateSecret();
    const junk = [
      '',
      'fleet_',
      'fleet__' + secret,
      `fleet_abc`,
      `fleet_abc_`,
      `fleet_abc_short`,
      `Fleet_abc_${secret}`,
      `fleet-abc-${secret}`,
      `fleet_ABC_${secret}`,
      `fleet_a-b_${secret}`,
      `fleet_abc_${secret}!`,
      `fleet_abc_${secret} trailing`,
      `fleet_abc_${secret}.x`,
      `Bearer fleet_abc_${secret}`,
      `fleet-bootstrap-v1.abc.${secret}.${FP}`,
      `fleet_${'a'.repeat(65)}_${secret}`,
      `fleet_abc_${'a'.repeat(5000)}`,
      undefined as unknown as string,
      42 as unknown as string,
    ];
    for (const t of junk) expect(parseApiToken(t), String(t)).toBeNull();
  });

  it('encode validates its input', () => {
    expect(() => encodeApiToken({ id: 'a_b', secret: generateSecret() })).toThrow(/id must be/);
    expect(() => encodeApiToken({ id: 'ab', secret: 'short' })).toThrow(/too short/);
  });
});
