import { describe, expect, it } from 'vitest';
import { UsageError } from '../errors.ts';
import { ageOf, formatAge, formatTimestamp, parseDuration, parseHours, relativeTime } from './durations.ts';

describe('parseDuration', () => {
  it.each([
    ['90s', 90_000],
    ['5m', 300_000],
    ['1h30m', 5_400_000],
    ['2d', 172_800_000],
    ['1w', 604_800_000],
    ['500ms', 500],
    ['10M', 600_000],
    [' 2h ', 7_200_000],
  ])('%s → %d ms', (input, ms) => {
    expect(parseDuration(input, '--wait')).toBe(ms);
  });

  it('reads a bare number in the default unit', () => {
    expect(parseDuration('60', '--wait')).toBe(60_000);
    expect(parseDuration('24', '--expires', 'h')).toBe(86_400_000);
  });

  it.each(['', 'soon', '5x', '-5m', '1.5h', 'm5', '5m junk'])('rejects %j with a message naming the flag', (input) => {
    expect(() => parseDuration(input, '--wait')).toThrow(UsageError);
    expect(() => parseDuration(input, '--wait')).toThrow(/invalid --wait ".*": expected a duration like 90s, 5m/);
  });
});

describe('parseHours', () => {
  it('takes whole hours', () => {
    expect(parseHours('24h', '--expires')).toBe(24);
    expect(parseHours('7d', '--expires')).toBe(168);
    expect(parseHours('48', '--expires')).toBe(48);
  });
  it('rejects partial hours and zero', () => {
    expect(() => parseHours('90m', '--expires')).toThrow(/whole hours/);
    expect(() => parseHours('0h', '--expires')).toThrow(/whole hours/);
  });
});

describe('formatAge', () => {
  it.each([
    [0, '0s'],
    [45_000, '45s'],
    [5 * 60_000 + 59_000, '5m'],
    [2 * 3_600_000, '2h'],
    [47 * 3_600_000, '47h'],
    [3 * 86_400_000, '3d'],
    [-5_000, '0s'],
  ])('%d ms → %s', (ms, text) => {
    expect(formatAge(ms)).toBe(text);
  });

  it('rounds to the nearest unit when asked (expiry 24h minus a second is "in 24h")', () => {
    expect(formatAge(24 * 3_600_000 - 1000, true)).toBe('24h');
  });

  it('ages and relative times from ISO timestamps', () => {
    const now = Date.parse('2025-01-01T01:00:00Z');
    expect(ageOf('2025-01-01T00:55:00Z', now)).toBe('5m');
    expect(ageOf(null, now)).toBe('-');
    expect(relativeTime('2025-01-01T00:58:00Z', now)).toBe('2m ago');
    expect(relativeTime('2025-01-02T00:59:59Z', now)).toBe('in 24h');
    expect(relativeTime(null, now)).toBe('never');
    expect(formatTimestamp('2025-01-01T00:55:00.123Z')).toBe('2025-01-01T00:55:00Z');
  });
});
