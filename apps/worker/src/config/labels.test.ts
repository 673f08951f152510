import { describe, expect, it } from 'vitest';
import { parseLabels } from './labels.ts';

describe('fleet-worker run --label (Kubernetes label syntax)', () => {
  it('accepts prefixed keys, empty values, and the 63-character limits', () => {
    expect(parseLabels(`fleet.example.com/pool=ci,arch=arm64,empty=,${'k'.repeat(63)}=${'v'.repeat(63)}`)).toEqual({ 'fleet.example.com/pool': 'ci', arch: 'arm64', empty: '', ['k'.repeat(63)]: 'v'.repeat(63) });
  });
  it.each([['a b=1'], ['"q"=1'], ['<script>=1'], [`${'k'.repeat(64)}=1`], ['Upper.Case/x=1'], ['/x=1'], ['k=has space'], [`k=${'v'.repeat(64)}`], ['k=-dash']])('rejects %s', (text) => {
    expect(() => parseLabels(text)).toThrow(/label (key|value)/);
  });
});
