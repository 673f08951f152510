import { describe, expect, it } from 'vitest';
import { checkNodeVersion } from './node-version.ts';

describe('Node.js version check', () => {
  it('accepts 20.19 and newer, refuses older with the version to install', () => {
    expect(checkNodeVersion('v20.19.0').status).toBe('ok');
    expect(checkNodeVersion('22.3.1').status).toBe('ok');
    const old = checkNodeVersion('v20.18.3');
    expect(old.status).toBe('fail');
    expect(old.detail).toContain('20.18.3 is too old');
    expect(old.fix).toContain('20.19');
    expect(checkNodeVersion('v18.20.0').status).toBe('fail');
  });
});
