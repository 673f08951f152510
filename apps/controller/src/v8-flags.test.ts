import { describe, expect, it } from 'vitest';
import { controllerV8Flags } from './v8-flags.ts';

describe('controllerV8Flags', () => {
  it('runs wasm on Liftoff code only by default', () => {
    expect(controllerV8Flags([], undefined)).toEqual(['--liftoff-only']);
    expect(controllerV8Flags(['--enable-source-maps'], '--max-old-space-size=512')).toEqual(['--liftoff-only']);
  });

  it('keeps a wasm tiering choice made on the command line or in NODE_OPTIONS', () => {
    expect(controllerV8Flags(['--no-liftoff-only'], undefined)).toEqual([]);
    expect(controllerV8Flags([], '--max-old-space-size=512 --wasm_tier_up')).toEqual([]);
    expect(controllerV8Flags(['--wasm-dynamic-tiering=false'], undefined)).toEqual([]);
  });
});
