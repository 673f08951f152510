import { describe, expect, it } from 'vitest';
import { paddedLength, sqlText, SQL_TEXT_CACHE_SIZE } from './sql-text.ts';

describe('sqlText', () => {
  it('builds a shape once and hands out the same text after', () => {
    let builds = 0;
    const build = () => {
      builds += 1;
      return `SELECT ${'x'.repeat(3)}`;
    };
    const first = sqlText('test:one', build);
    expect(sqlText('test:one', build)).toBe(first);
    expect(builds).toBe(1);
    expect(sqlText('test:two', () => 'SELECT 2')).toBe('SELECT 2');
  });

  it('keeps at most SQL_TEXT_CACHE_SIZE shapes, dropping the oldest', () => {
    let builds = 0;
    const build = () => String(++builds);
    sqlText('test:oldest', build);
    for (let i = 0; i < SQL_TEXT_CACHE_SIZE; i++) sqlText(`test:filler:${i}`, () => 'filler');
    const before = builds;
    sqlText('test:oldest', build);
    expect(builds).toBe(before + 1); // built again
  });

  it('rounds list lengths up to powers of two', () => {
    expect([0, 1, 2, 3, 4, 5, 8, 9, 500, 512].map(paddedLength)).toEqual([1, 1, 2, 4, 4, 8, 8, 16, 512, 512]);
  });
});
