import { describe, expect, it } from 'vitest';
import { FleetError } from '../errors.ts';
import { normalizeNetwork } from './network-policy.ts';

describe('normalizeNetwork', () => {
  it('fills in the defaults and drops duplicates', () => {
    expect(normalizeNetwork(undefined)).toEqual({ allow: [], block: [], blockLocal: false });
    expect(normalizeNetwork({ allow: ['10.0.0.0/8', '10.0.0.0/8', '@host'], blockLocal: true })).toEqual({
      allow: ['10.0.0.0/8', '@host'],
      block: [],
      blockLocal: true,
    });
  });

  it('refuses what the schema pattern lets through but the packet filter would not take, naming the entry', () => {
    for (const [bad, why] of [
      ['300.1.1.1', /not a dotted-quad/],
      ['10.0.0.0/33', /prefix length "33"/],
      ['10.0.0.1/8', /host bits/],
    ] as const) {
      let err: unknown;
      try {
        normalizeNetwork({ block: ['1.1.1.1', bad] });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FleetError);
      expect((err as FleetError).statusCode).toBe(400);
      expect((err as FleetError).message).toMatch(/^network\.block\[1\]/);
      expect((err as FleetError).message).toMatch(why);
    }
  });
});
