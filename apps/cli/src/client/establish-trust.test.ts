import { describe, expect, it } from 'vitest';
import { CliError, ExitCode } from '../errors.ts';
import { establishTrust, type TrustPrompt } from './establish-trust.ts';
import { normalizeFingerprint } from './controller-trust.ts';

const noPrompt: TrustPrompt = {
  interactive: false,
  ask: async () => {
    throw new Error('must not ask');
  },
  note: () => undefined,
};

describe('establishTrust', () => {
  it('needs nothing for http:// and refuses CA flags there (no silent downgrade)', async () => {
    await expect(establishTrust('http://127.0.0.1:8080', {}, noPrompt)).resolves.toBeNull();
    await expect(establishTrust('http://127.0.0.1:8080', { caFingerprint: 'ab'.repeat(32) }, noPrompt)).rejects.toMatchObject({ exitCode: ExitCode.USAGE });
  });

  it('takes one of --ca-fingerprint and --ca-file, not both', async () => {
    const err = await establishTrust('https://127.0.0.1:1', { caFingerprint: 'ab'.repeat(32), caFile: '/x.pem' }, noPrompt).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).message).toContain('alternatives');
  });

  it('rejects an unreadable --ca-file before connecting', async () => {
    await expect(establishTrust('https://127.0.0.1:1', { caFile: '/nonexistent/ca.pem' }, noPrompt)).rejects.toMatchObject({ exitCode: ExitCode.USAGE });
  });
});

describe('normalizeFingerprint', () => {
  it('accepts colon-separated upper case and sha256: prefixes', () => {
    const hex = '0123456789abcdef'.repeat(4);
    expect(normalizeFingerprint(hex.toUpperCase().replace(/(..)(?!$)/g, '$1:'))).toBe(hex);
    expect(normalizeFingerprint(`sha256:${hex}`)).toBe(hex);
    expect(() => normalizeFingerprint('abc')).toThrow(/64 hex/);
  });
});
