import { describe, expect, it } from 'vitest';
import { UsageError } from '../errors.ts';
import { parseEndpoint, parseSums } from './cp.ts';
import { parseEnv } from './exec.ts';
import { parsePortSpec } from './port-forward.ts';
import { exitCodeOf } from './session-socket.ts';

describe('session command parsing', () => {
  it('parses --env pairs and rejects bad names', () => {
    expect(parseEnv(['A=1', 'B_2=x=y', 'EMPTY='])).toEqual({ A: '1', B_2: 'x=y', EMPTY: '' });
    expect(() => parseEnv(['1A=x'])).toThrow(UsageError);
    expect(() => parseEnv(['NOVALUE'])).toThrow(UsageError);
  });

  it('parses [LOCAL:]REMOTE port specs', () => {
    expect(parsePortSpec('80')).toEqual({ local: 80, remote: 80 });
    expect(parsePortSpec('8080:80')).toEqual({ local: 8080, remote: 80 });
    expect(parsePortSpec('0:22')).toEqual({ local: 0, remote: 22 });
    for (const bad of ['', 'x', '70000', '1:0', '80:', ':80', '1:2:3']) expect(() => parsePortSpec(bad)).toThrow(UsageError);
  });

  it('tells VM paths from local paths in cp arguments', () => {
    expect(parseEndpoint('web-1:/tmp/x')).toEqual({ vm: 'web-1', path: '/tmp/x' });
    expect(parseEndpoint('./a:b')).toEqual({ vm: null, path: './a:b' });
    expect(parseEndpoint('/abs/path')).toEqual({ vm: null, path: '/abs/path' });
    expect(() => parseEndpoint('web-1:')).toThrow(UsageError);
  });

  it('reads sha256sum output and maps the top directory to the local name', () => {
    const out = `${'a'.repeat(64)}  tree/x.bin\n${'b'.repeat(64)}  tree/sub/with space.txt\ngarbage\n`;
    expect([...parseSums(out, 'copy')]).toEqual([
      ['copy/x.bin', 'a'.repeat(64)],
      ['copy/sub/with space.txt', 'b'.repeat(64)],
    ]);
  });

  it('maps session outcomes to exit codes', () => {
    expect(exitCodeOf({ kind: 'exit', code: 42, signal: null }, true)).toBe(42);
    expect(exitCodeOf({ kind: 'error', code: 'timeout', message: '' }, true)).toBe(124);
    expect(exitCodeOf({ kind: 'error', code: 'timeout', message: '', stage: 'waiting-ssh' }, false)).toBe(7);
    expect(exitCodeOf({ kind: 'error', code: 'worker-disconnected', message: '' }, true)).toBe(255);
    expect(exitCodeOf({ kind: 'error', code: 'not-found', message: '' }, false)).toBe(3);
    expect(exitCodeOf({ kind: 'error', code: 'not-running', message: '' }, false)).toBe(6);
  });
});
