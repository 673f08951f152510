import { describe, expect, it } from 'vitest';
import { hasRole, parseRoles } from './roles.ts';

describe('roles', () => {
  it('admin can do everything', () => {
    for (const r of ['read', 'write', 'connect', 'admin'] as const) expect(hasRole(['admin'], r)).toBe(true);
  });
  it('write implies read but not connect or admin', () => {
    expect(hasRole(['write'], 'read')).toBe(true);
    expect(hasRole(['write'], 'connect')).toBe(false);
    expect(hasRole(['write'], 'admin')).toBe(false);
  });
  it('read cannot write, connect cannot write', () => {
    expect(hasRole(['read'], 'write')).toBe(false);
    expect(hasRole(['connect'], 'write')).toBe(false);
    expect(hasRole(['connect'], 'read')).toBe(false);
    expect(hasRole(['connect', 'read'], 'connect')).toBe(true);
  });
  it('parses stored role lists and drops unknown roles', () => {
    expect(parseRoles('read, connect,bogus')).toEqual(['read', 'connect']);
  });
});
