import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { killCommand, PidLineParser, remoteCommand, shellQuote } from './remote-command.ts';

const sh = (script: string) => execFileSync('sh', ['-c', script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

describe('remote command lines', () => {
  it('quotes argv so that a POSIX shell gives the program exactly the same arguments', () => {
    const argv = ['printf', '%s|', 'a b', "it's", '$HOME', '`id`', '"q"', '', 'back\\slash', 'new\nline'];
    const line = remoteCommand({ argv, env: {}, workdir: '', reportPid: false });
    expect(sh(line)).toBe("a b|it's|$HOME|`id`|\"q\"||back\\slash|new\nline|");
    expect(shellQuote('plain-word_1.2')).toBe('plain-word_1.2');
  });

  it('applies env and workdir, and reports the pid of the process that runs the command', () => {
    const line = remoteCommand({ argv: ['sh', '-c', 'echo "$X:$(pwd):$$"'], env: { X: 'v w' }, workdir: '/tmp', reportPid: true });
    const out = execFileSync('sh', ['-c', `{ ${line}; } 2>&1`], { encoding: 'utf8' });
    const [pidLine, rest] = out.split('\n');
    const pid = /^FLEET-SESSION-PID (\d+)$/.exec(pidLine!)![1];
    expect(rest).toBe(`v w:/tmp:${pid}`); // exec keeps the pid: signals reach the command itself
  });

  it('runs ssh command strings through the shell like OpenSSH does', () => {
    expect(sh(remoteCommand({ argv: ['echo', '$X', '|', 'tr', 'a-z', 'A-Z'], env: { X: 'abc' }, workdir: '', reportPid: false, shellString: true }))).toBe('ABC\n');
  });

  it('builds kill commands only for sane input', () => {
    expect(killCommand(1234, 'SIGINT')).toBe('kill -s INT -- -1234 2>/dev/null || kill -s INT 1234');
    expect(() => killCommand(1, 'INT')).toThrow();
    expect(() => killCommand(12, 'INT; reboot')).toThrow();
  });

  it('strips the pid line from stderr however the chunks are split', () => {
    const p = new PidLineParser();
    expect(p.push(Buffer.from('FLEET-SESS')).toString()).toBe('');
    expect(p.push(Buffer.from('ION-PID 4321\nfirst err')).toString()).toBe('first err');
    expect(p.pid).toBe(4321);
    expect(p.push(Buffer.from('FLEET-SESSION-PID 9\n')).toString()).toBe('FLEET-SESSION-PID 9\n'); // only the first line is ours
    const q = new PidLineParser();
    expect(q.push(Buffer.from('not ours\nx')).toString()).toBe('not ours\nx');
    expect(q.pid).toBeUndefined();
  });
});
