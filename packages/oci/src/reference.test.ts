import { describe, expect, it } from 'vitest';
import { OciError } from './errors.ts';
import { formatImageReference, isDigest, isRegistryReference, parseImageReference, pinnedReference } from './reference.ts';

const HEX = 'a'.repeat(64);
const DIGEST = `sha256:${HEX}`;

function badReference(input: string): OciError {
  try {
    parseImageReference(input);
  } catch (err) {
    expect(err).toBeInstanceOf(OciError);
    expect((err as OciError).code).toBe('bad-reference');
    return err as OciError;
  }
  throw new Error(`expected ${JSON.stringify(input)} to be rejected`);
}

describe('isRegistryReference', () => {
  it('tells registry references from local image names', () => {
    for (const local of ['fleet-guest', 'ubuntu-base', 'macos-sonoma', 'ubuntu-base:24.04', 'fleet/guest', 'localhost', '127.0.0.1:5000', '']) {
      expect(isRegistryReference(local), local).toBe(false);
    }
    for (const remote of ['127.0.0.1:5000/fleet/guest', 'localhost/guest', 'localhost:5000/guest', 'ghcr.io/acme/img:1', '[::1]:5000/img', 'registry.example/x@' + DIGEST]) {
      expect(isRegistryReference(remote), remote).toBe(true);
    }
  });
});

describe('parseImageReference', () => {
  it('parses host:port, nested paths, tags and digests', () => {
    expect(parseImageReference('127.0.0.1:5000/fleet/guest:1.0')).toEqual({ registry: '127.0.0.1:5000', repository: 'fleet/guest', tag: '1.0' });
    expect(parseImageReference('ghcr.io/acme/vm/ubuntu_24.04__x-y')).toEqual({ registry: 'ghcr.io', repository: 'acme/vm/ubuntu_24.04__x-y', tag: 'latest' });
    expect(parseImageReference(`localhost:5000/guest@${DIGEST}`)).toEqual({ registry: 'localhost:5000', repository: 'guest', digest: DIGEST });
    expect(parseImageReference(`localhost/guest:v2@${DIGEST}`)).toEqual({ registry: 'localhost', repository: 'guest', tag: 'v2', digest: DIGEST });
    expect(parseImageReference('Registry.Example.COM/a--b/c:_Tag.-x')).toEqual({ registry: 'Registry.Example.COM', repository: 'a--b/c', tag: '_Tag.-x' });
  });

  it('parses IPv6 registries in brackets, with and without port', () => {
    expect(parseImageReference('[::1]:5000/fleet/guest:2')).toEqual({ registry: '[::1]:5000', repository: 'fleet/guest', tag: '2' });
    expect(parseImageReference('[fe80::1]/img')).toEqual({ registry: '[fe80::1]', repository: 'img', tag: 'latest' });
    expect(badReference('[::1/img').message).toMatch(/unclosed/);
    expect(badReference('[zz::1]:5000/img').message).toMatch(/not an IPv6 address/);
    expect(badReference('[::1]x/img').message).toMatch(/after the IPv6 address/);
  });

  it('rejects bad ports and host names', () => {
    expect(badReference('host.example:0/img').message).toMatch(/port/);
    expect(badReference('host.example:65536/img').message).toMatch(/port/);
    expect(badReference('host.example:12ab/img').message).toMatch(/port/);
    expect(badReference('-bad.example/img').message).toMatch(/label/);
    expect(badReference('a..b/img').message).toMatch(/empty label/);
  });

  it('rejects NUL, control characters and whitespace', () => {
    expect(badReference('127.0.0.1:5000/img\u0000:1').message).toMatch(/control characters/);
    expect(badReference('127.0.0.1:5000/img\n').message).toMatch(/control characters/);
    expect(badReference('127.0.0.1:5000/im g').message).toMatch(/whitespace/);
    expect(badReference('').message).toMatch(/empty/);
  });

  it('requires lowercase repositories and non-empty components', () => {
    expect(badReference('127.0.0.1:5000/Fleet/guest').message).toMatch(/lowercase/);
    expect(badReference('127.0.0.1:5000/fleet//guest').message).toMatch(/empty path component/);
    expect(badReference('127.0.0.1:5000/').message).toMatch(/empty/);
    expect(badReference('127.0.0.1:5000/fleet/').message).toMatch(/empty path component/);
    expect(badReference('127.0.0.1:5000/a...b').message).toMatch(/may only hold/);
    expect(badReference('127.0.0.1:5000/_a').message).toMatch(/may only hold/);
  });

  it('validates tags', () => {
    expect(badReference('127.0.0.1:5000/img:').message).toMatch(/tag after ":" is empty/);
    expect(badReference('127.0.0.1:5000/img:.hidden').message).toMatch(/tag/);
    expect(badReference(`127.0.0.1:5000/img:${'t'.repeat(129)}`).message).toMatch(/tag/);
    expect(parseImageReference(`127.0.0.1:5000/img:${'t'.repeat(128)}`).tag).toHaveLength(128);
  });

  it('accepts only sha256 digests', () => {
    expect(badReference(`127.0.0.1:5000/img@sha512:${'a'.repeat(128)}`).message).toMatch(/sha512 is not supported; only sha256/);
    expect(badReference(`127.0.0.1:5000/img@sha256:${'A'.repeat(64)}`).message).toMatch(/64 lowercase hex/);
    expect(badReference('127.0.0.1:5000/img@sha256:abc').message).toMatch(/64 lowercase hex/);
    expect(badReference(`127.0.0.1:5000/img@${DIGEST}@${DIGEST}`).message).toMatch(/more than one/);
  });

  it('limits the name to 255 characters', () => {
    const registry = 'r.example';
    const fits = 'a'.repeat(255 - registry.length - 1);
    expect(parseImageReference(`${registry}/${fits}:t`).repository).toBe(fits);
    expect(badReference(`${registry}/${fits}b:t`).message).toMatch(/256 characters long; at most 255/);
    expect(badReference(`${registry}/${'a/'.repeat(300)}a`).message).toMatch(/at most 255/);
  });

  it('refuses local names with a hint on how to write a registry reference', () => {
    for (const local of ['fleet-guest', 'ubuntu-base:24.04', 'fleet/guest:1']) {
      expect(badReference(local).message).toMatch(/HOST\[:PORT\]\/REPOSITORY/);
    }
  });
});

describe('formatting', () => {
  it('round-trips and pins', () => {
    for (const s of ['127.0.0.1:5000/fleet/guest:1.0', `[::1]:5000/a/b@${DIGEST}`, `localhost/x:y@${DIGEST}`]) {
      expect(formatImageReference(parseImageReference(s))).toBe(s);
    }
    const ref = parseImageReference('127.0.0.1:5000/fleet/guest:1.0');
    expect(pinnedReference(ref, DIGEST)).toBe(`127.0.0.1:5000/fleet/guest@${DIGEST}`);
    expect(() => pinnedReference(ref, 'sha256:zz')).toThrow(OciError);
  });

  it('isDigest', () => {
    expect(isDigest(DIGEST)).toBe(true);
    expect(isDigest(DIGEST.toUpperCase())).toBe(false);
    expect(isDigest(`sha512:${HEX}`)).toBe(false);
    expect(isDigest(DIGEST + 'a')).toBe(false);
  });
});
