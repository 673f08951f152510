import { describe, expect, it } from 'vitest';
import { formatGib, formatMib, parseDiskGib, parseMemoryMib, parseSizeMib } from './sizes.ts';

describe('parseMemoryMib', () => {
  it.each([
    ['4G', 4096],
    ['4g', 4096],
    ['4GB', 4096],
    ['4Gi', 4096],
    ['4GiB', 4096],
    ['4096M', 4096],
    ['4096MiB', 4096],
    ['4096', 4096],
    ['1.5G', 1536],
    ['128M', 128],
    ['1T', 1024 * 1024],
  ])('%s → %d MiB', (input, mib) => {
    expect(parseMemoryMib(input)).toBe(mib);
  });

  it.each([
    ['4X', /expected a size like 4G, 4096M or 4096/],
    ['G', /expected a size/],
    ['-1G', /expected a size/],
    ['four', /expected a size/],
    ['0.3M', /whole number of MiB/],
    ['64M', /at least 128M/],
    ['5T', /at most 4T/],
  ])('rejects %s', (input, message) => {
    expect(() => parseMemoryMib(input)).toThrow(message);
  });

  it('names the flag', () => {
    expect(() => parseMemoryMib('lots')).toThrow('invalid --memory "lots"');
  });
});

describe('parseDiskGib', () => {
  it('reads GiB by default and converts other units', () => {
    expect(parseDiskGib('20G')).toBe(20);
    expect(parseDiskGib('20')).toBe(20);
    expect(parseDiskGib('1T')).toBe(1024);
    expect(parseDiskGib('2048M')).toBe(2);
  });
  it('rejects partial GiB and zero', () => {
    expect(() => parseDiskGib('1.5G')).toThrow(/whole number of GiB/);
    expect(() => parseDiskGib('512M')).toThrow(/whole number of GiB/);
    expect(() => parseDiskGib('0')).toThrow(/at least 1G/);
  });
  it('returns null for non-sizes at the lowest level', () => {
    expect(parseSizeMib('abc', 'M')).toBeNull();
  });
});

describe('formatting', () => {
  it.each([
    [512, '512M'],
    [1024, '1G'],
    [1536, '1.5G'],
    [4096, '4G'],
    [16384, '16G'],
    [1024 * 1024, '1T'],
  ])('%d MiB → %s', (mib, text) => {
    expect(formatMib(mib)).toBe(text);
  });
  it('formats GiB', () => {
    expect(formatGib(20)).toBe('20G');
    expect(formatGib(2048)).toBe('2T');
  });
});
