import { describe, expect, it } from 'vitest';
import { controllerV8Flags } from './v8-flags.ts';

describe('controllerV8Flags', () => {
  it('runs wasm on Liftoff code only, grows the old generation 50% past the live size and flushes unused baseline code by default', () => {
    const defaults = ['--liftoff-only', '--heap-growing-percent=50', '--flush-baseline-code'];
    expect(controllerV8Flags([], undefined)).toEqual(defaults);
    expect(controllerV8Flags(['--enable-source-maps'], '--max-old-space-size=512')).toEqual(defaults);
  });

  it('keeps a wasm tiering choice made on the command line or in NODE_OPTIONS', () => {
    expect(controllerV8Flags(['--no-liftoff-only'], undefined)).toEqual(['--heap-growing-percent=50', '--flush-baseline-code']);
    expect(controllerV8Flags([], '--max-old-space-size=512 --wasm_tier_up')).toEqual(['--heap-growing-percent=50', '--flush-baseline-code']);
    expect(controllerV8Flags(['--wasm-dynamic-tiering=false'], undefined)).toEqual(['--heap-growing-percent=50', '--flush-baseline-code']);
  });

  it('keeps a heap growth choice made on the command line or in NODE_OPTIONS', () => {
    expect(controllerV8Flags(['--heap-growing-percent=50'], undefined)).toEqual(['--liftoff-only', '--flush-baseline-code']);
    expect(controllerV8Flags([], '--no-memory-reducer')).toEqual(['--liftoff-only', '--flush-baseline-code']);
    expect(controllerV8Flags(['--optimize_for_size', '--liftoff', '--no-flush-baseline-code'], undefined)).toEqual([]);
  });

  it('keeps a code flushing choice made on the command line or in NODE_OPTIONS', () => {
    expect(controllerV8Flags(['--no-flush-baseline-code'], undefined)).toEqual(['--liftoff-only', '--heap-growing-percent=50']);
    expect(controllerV8Flags([], '--bytecode_old_age=10')).toEqual(['--liftoff-only', '--heap-growing-percent=50']);
    expect(controllerV8Flags(['--no-sparkplug'], undefined)).toEqual(['--liftoff-only', '--heap-growing-percent=50']);
  });
});
