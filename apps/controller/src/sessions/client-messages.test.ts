import { describe, expect, it } from 'vitest';
import { BadRequest, parseControl, parseOpening } from './client-messages.ts';

describe('session client messages', () => {
  it('parses a full start request and applies defaults', () => {
    const r = parseOpening(JSON.stringify({ type: 'start', kind: 'exec', command: ['sh', '-c', 'echo hi'], env: { A_B: 'x' }, workdir: '/tmp', timeoutMs: 5000 }));
    expect(r).toMatchObject({ type: 'start', kind: 'exec', command: ['sh', '-c', 'echo hi'], tty: false, rows: 24, cols: 80, env: { A_B: 'x' }, workdir: '/tmp', waitMs: 60_000, timeoutMs: 5000, retainMs: 0 });
    expect(parseOpening(JSON.stringify({ type: 'start', kind: 'ssh' }))).toMatchObject({ kind: 'ssh', tty: true, port: 22 });
    expect(parseOpening(JSON.stringify({ type: 'start', kind: 'port-forward', port: 8080 }))).toMatchObject({ kind: 'port-forward', port: 8080 });
    expect(parseOpening(JSON.stringify({ type: 'start', kind: 'vnc' }))).toMatchObject({ kind: 'vnc', port: 0, tty: false });
  });

  it('parses attach requests', () => {
    const id = '0ed7dc00-69fd-409b-8b35-cb19546e765f';
    expect(parseOpening(JSON.stringify({ type: 'attach', sessionId: id, stdoutOffset: 10 }))).toEqual({ type: 'attach', sessionId: id, stdoutOffset: 10, stderrOffset: 0 });
  });

  it.each([
    ['not json', '{oops'],
    ['no type', '{}'],
    ['an array', '[1]'],
    ['unknown first frame', '{"type":"resize","rows":1,"cols":1}'],
    ['unknown kind', '{"type":"start","kind":"telnet"}'],
    ['exec without command', '{"type":"start","kind":"exec"}'],
    ['non-string argv', '{"type":"start","kind":"exec","command":["ls",1]}'],
    ['NUL in argv', '{"type":"start","kind":"exec","command":["a\\u0000b"]}'],
    ['bad env name', '{"type":"start","kind":"exec","command":["x"],"env":{"1A":"v"}}'],
    ['non-string env value', '{"type":"start","kind":"exec","command":["x"],"env":{"A":1}}'],
    ['port-forward without port', '{"type":"start","kind":"port-forward"}'],
    ['port out of range', '{"type":"start","kind":"port-forward","port":70000}'],
    ['fractional rows', '{"type":"start","kind":"ssh","rows":1.5}'],
    ['wait too long', '{"type":"start","kind":"ssh","waitMs":999999999}'],
    ['tty not boolean', '{"type":"start","kind":"ssh","tty":"yes"}'],
    ['bad attach id', '{"type":"attach","sessionId":"../../etc"}'],
  ])('rejects %s', (_what, text) => {
    expect(() => parseOpening(text)).toThrow(BadRequest);
  });

  it('parses control frames and rejects unknown ones', () => {
    expect(parseControl('{"type":"resize","rows":40,"cols":100}')).toEqual({ type: 'resize', rows: 40, cols: 100 });
    expect(parseControl('{"type":"signal","name":"SIGINT"}')).toEqual({ type: 'signal', name: 'INT' });
    expect(parseControl('{"type":"eof"}')).toEqual({ type: 'eof' });
    expect(() => parseControl('{"type":"signal","name":"STOP; rm -rf /"}')).toThrow(BadRequest);
    expect(() => parseControl('{"type":"resize","rows":0,"cols":10}')).toThrow(BadRequest);
    expect(() => parseControl('{"type":"start","kind":"exec"}')).toThrow(BadRequest);
  });
});
