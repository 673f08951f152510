import { describe, expect, it } from 'vitest';
import { UsageError } from './errors.ts';
import { applyLabelEdits, parseChoice, parseInteger, parseLabelEdits, parseLabels, validateName, validateUsername } from './validate.ts';

describe('validateName', () => {
  it.each(['web-1', 'a', '0', 'a'.repeat(63), 'x-y-z'])('accepts %s', (name) => {
    expect(validateName(name, 'VM')).toBe(name);
  });
  it.each(['Web-1', 'web_1', '-web', 'web-', '', 'a'.repeat(64), 'web 1', 'wéb'])('rejects %j', (name) => {
    expect(() => validateName(name, 'VM')).toThrow(UsageError);
    expect(() => validateName(name, 'VM')).toThrow(/invalid VM name/);
  });
});

describe('parseLabels', () => {
  it('reads key=value pairs in the API\'s (Kubernetes) label syntax; the value may be empty', () => {
    expect(parseLabels(['team=web', 'empty=', 'example.com/tier=fe', 'v=1.2_b-c'], '--label')).toEqual({
      team: 'web',
      empty: '',
      'example.com/tier': 'fe',
      v: '1.2_b-c',
    });
  });
  it('the last value for a key wins', () => {
    expect(parseLabels(['a=1', 'a=2'], '--label')).toEqual({ a: '2' });
  });
  it.each([
    ['team', /expected key=value/],
    ['=web', /label key must not be empty/],
    ['-bad=1', /label key "-bad" must be/],
    ['sp ace=1', /label key "sp ace" must be/],
    ['Example.com/x=1', /label key "Example.com\/x" must be/],
    ['expr=a=b', /label value "a=b" must be/],
  ])('rejects %j', (item, message) => {
    expect(() => parseLabels([item], '--selector')).toThrow(message);
    expect(() => parseLabels([item], '--selector')).toThrow(/--selector/);
  });
  it('rejects values over 63 characters, as the API does', () => {
    expect(parseLabels([`k=${'v'.repeat(63)}`], '--label')).toEqual({ k: 'v'.repeat(63) });
    expect(() => parseLabels([`k=${'v'.repeat(64)}`], '--label')).toThrow(/at most 63/);
  });
});

describe('label edits', () => {
  it('sets with k=v and removes with k-', () => {
    const edits = parseLabelEdits(['team=db', 'old-', 'new=1'], '--label');
    expect(edits).toEqual({ set: { team: 'db', new: '1' }, remove: ['old'] });
    expect(applyLabelEdits({ team: 'web', old: 'x', keep: 'y' }, edits)).toEqual({ team: 'db', keep: 'y', new: '1' });
  });
  it('rejects a bare key', () => {
    expect(() => parseLabelEdits(['team'], '--label')).toThrow(/key=value, or key- to remove/);
  });
});

describe('numbers and choices', () => {
  it('parses integers in range', () => {
    expect(parseInteger('4', '--cpus', 1, 256)).toBe(4);
    expect(parseInteger('-10', '--priority', -1000, 1000)).toBe(-10);
    expect(() => parseInteger('0', '--cpus', 1, 256)).toThrow('invalid --cpus "0": must be between 1 and 256');
    expect(() => parseInteger('2.5', '--cpus', 1, 256)).toThrow(/whole number/);
    expect(() => parseInteger('four', '--cpus', 1, 256)).toThrow(/whole number/);
  });
  it('checks choices', () => {
    expect(parseChoice('macos', '--os', ['linux', 'macos'])).toBe('macos');
    expect(() => parseChoice('windows', '--os', ['linux', 'macos'])).toThrow('invalid --os "windows": expected one of linux, macos');
  });
  it('checks usernames', () => {
    expect(validateUsername('admin')).toBe('admin');
    expect(() => validateUsername('Admin')).toThrow(/--username/);
  });
});
