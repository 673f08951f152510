// The session runner against an in-process ssh2 server standing in for a VM's sshd and
// a fake Session RPC call standing in for the controller: frames the controller may send
// in any order must never crash the worker.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { SessionFrame, SessionFrame__Output, SessionOpen__Output, VmStatus, WorkerServiceClient } from '@fleet/proto';
import pino from 'pino';
import ssh2 from 'ssh2';
import type { Connection, ServerChannel } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SessionRunner, SYNTHETIC_REFUSAL } from './session-runner.ts';
import { VmSshPool } from './vm-ssh-pool.ts';
import { testKeyPair } from './test-keys.ts';

const { Server } = ssh2;
const hostKey = testKeyPair();
const clientKey = testKeyPair();

let server: InstanceType<typeof Server>;
let port = 0;
/** Delay before the server accepts a session channel (a slow sshd). */
let sessionDelayMs = 0;
/** Exec channels the server has open right now. */
let openChannels = 0;
/** Every exec command line the server received. */
const execCommands: string[] = [];
const running = new Set<ServerChannel>();

beforeAll(async () => {
  server = new Server({ hostKeys: [hostKey.private] }, (client: Connection) => {
    client.on('authentication', (ctx) => ctx.accept());
    client.on('ready', () => {
      client.on('session', (accept) => {
        setTimeout(() => {
          const session = accept();
          session.on('exec', (acc, _rej, info) => {
            execCommands.push(info.command);
            if (info.command.startsWith('kill ')) {
              // The worker's signal delivery: TERM ends the running commands by that signal.
              const k: ServerChannel = acc();
              if (info.command.startsWith('kill -s TERM ')) {
                for (const c of running) {
                  c.exit('TERM');
                  c.end();
                }
              }
              k.exit(0);
              k.end();
              return;
            }
            if (info.command.endsWith(' abort-me')) {
              // A command that dies of SIGABRT.
              const a: ServerChannel = acc();
              a.exit('ABRT');
              a.end();
              return;
            }
            // Like `exec cat`-ish after the pid line: reads stdin, exits 7 a moment after stdin's EOF.
            const ch: ServerChannel = acc();
            running.add(ch);
            ch.once('close', () => running.delete(ch));
            openChannels++;
            ch.once('close', () => openChannels--);
            ch.stderr.write('FLEET-SESSION-PID 4242\n');
            let got = '';
            ch.on('data', (d: Buffer) => (got += d.toString()));
            ch.on('end', () => {
              setTimeout(() => {
                ch.write(`got: ${got}`);
                ch.exit(7);
                ch.end();
              }, 150);
            });
          });
        }, sessionDelayMs);
      });
    });
    client.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  port = (server.address() as net.AddressInfo).port;
});

afterAll(() => server.close());

class FakeCall extends EventEmitter {
  frames: SessionFrame[] = [];
  private onEnd: () => void = () => undefined;
  readonly ended = new Promise<void>((r) => (this.onEnd = r));
  write(f: SessionFrame): boolean {
    this.frames.push(f);
    return true;
  }
  end(): void {
    this.onEnd();
  }
  pause(): this {
    return this;
  }
  resume(): this {
    return this;
  }
  fromController(f: Partial<SessionFrame__Output>): void {
    this.emit('data', f as SessionFrame__Output);
  }
}

function openSession(runner: SessionRunner, call: FakeCall, over: Partial<SessionOpen__Output> = {}): void {
  const open = {
    sessionId: 's-1',
    vmId: 'vm-1',
    kind: 'SESSION_KIND_EXEC',
    port: 0,
    command: ['cat'],
    env: {},
    workdir: '',
    tty: false,
    rows: 0,
    cols: 0,
    username: 'fleet',
    privateKey: clientKey.private,
    password: '',
    hostKey: '',
    // Generous: under a loaded CI machine the SSH handshake with the in-process server can take seconds.
    waitMs: 20_000,
    timeoutMs: 0,
    attempt: 1,
    ...over,
  } as SessionOpen__Output;
  runner.open(open, { Session: () => call } as unknown as WorkerServiceClient);
}

function makeRunner(pool: VmSshPool, tcpPort = port): SessionRunner {
  const status = { vmId: 'vm-1', attempt: 1, phase: 'VM_PHASE_RUNNING', ip: '127.0.0.1' } as VmStatus;
  return new SessionRunner({
    pool,
    instance: () => status,
    log: pino({ level: 'silent' }),
    // Port 22 of "the VM" is the test server.
    connect: (host) => net.connect({ host, port: tcpPort }),
  });
}

/** Resolves once the session started; a session that ended with an error instead fails at once, saying why. */
const started = (call: FakeCall) =>
  new Promise<void>((resolve, reject) => {
    const t = setInterval(() => {
      if (call.frames.some((f) => f.started)) {
        clearInterval(t);
        resolve();
      }
      const failed = call.frames.find((f) => f.sessionError);
      if (failed) {
        clearInterval(t);
        reject(new Error(`the session did not start: ${JSON.stringify(failed.sessionError)}`));
      }
    }, 10);
  });

describe('SessionRunner', () => {
  it('survives stdin and signals the controller sends after EOF or with unknown names, and still reports the exit code', async () => {
    const pool = new VmSshPool();
    // The pool dials target.port (22); route it to the test server.
    const realChannel = pool.channel.bind(pool);
    pool.channel = (t, c, p) => realChannel({ ...t, port }, c, p);
    const runner = makeRunner(pool);
    const call = new FakeCall();
    openSession(runner, call);
    await started(call);
    call.fromController({ payload: 'stdin', stdin: Buffer.from('hello') });
    await new Promise((r) => setTimeout(r, 50));
    call.fromController({ payload: 'signal', signal: 'NOT-A-SIGNAL' });
    call.fromController({ payload: 'eof' });
    // A client may keep typing after it sent EOF: the channel's write side is closed.
    call.fromController({ payload: 'stdin', stdin: Buffer.from('late') });
    await call.ended;
    const out = Buffer.concat(call.frames.filter((f) => f.stdout).map((f) => Buffer.from(f.stdout as Uint8Array))).toString();
    expect(out).toBe('got: hello');
    expect(call.frames.at(-1)).toEqual({ exit: { code: 7, signal: '' } });
    pool.close();
  });

  it('port-forward: data the client sends after its EOF is dropped, the reply to what came before still arrives', async () => {
    // A service that answers once the client half-closed (like an HTTP/1.0 request).
    const svc = net.createServer({ allowHalfOpen: true }, (sock) => {
      let got = '';
      sock.on('data', (d: Buffer) => (got += d.toString()));
      sock.on('end', () => setTimeout(() => sock.end(`got: ${got}`), 100));
      sock.on('error', () => undefined);
    });
    await new Promise<void>((r) => svc.listen(0, '127.0.0.1', () => r()));
    const svcPort = (svc.address() as net.AddressInfo).port;
    const pool = new VmSshPool();
    const runner = makeRunner(pool, svcPort);
    const call = new FakeCall();
    openSession(runner, call, { kind: 'SESSION_KIND_PORT_FORWARD', port: svcPort, command: [] });
    await started(call);
    call.fromController({ payload: 'stdin', stdin: Buffer.from('hello') });
    await new Promise((r) => setTimeout(r, 50));
    call.fromController({ payload: 'eof' });
    call.fromController({ payload: 'stdin', stdin: Buffer.from('late') });
    await call.ended;
    const out = Buffer.concat(call.frames.filter((f) => f.stdout).map((f) => Buffer.from(f.stdout as Uint8Array))).toString();
    expect(out).toBe('got: hello');
    expect(call.frames.at(-1)).toEqual({ exit: { code: 0, signal: '' } });
    svc.close();
    pool.close();
  });

  it('a session cancelled while its SSH channel is opening closes that channel (no command left running unseen)', async () => {
    const pool = new VmSshPool();
    const realChannel = pool.channel.bind(pool);
    pool.channel = (t, c, p) => realChannel({ ...t, port }, c, p);
    const runner = makeRunner(pool);
    const call = new FakeCall();
    sessionDelayMs = 300;
    try {
      const before = openChannels;
      openSession(runner, call);
      await new Promise((r) => setTimeout(r, 150)); // past the port probe, channel open pending
      runner.cancel('s-1', 'cancelled by the test');
      await call.ended;
      expect(call.frames.some((f) => f.started)).toBe(false);
      // The command the channel started is ended, not left waiting for stdin.
      for (let i = 0; i < 100 && openChannels > before; i++) await new Promise((r) => setTimeout(r, 20));
      expect(openChannels).toBe(before);
      expect(runner.size).toBe(0);
    } finally {
      sessionDelayMs = 0;
      pool.close();
    }
  });

  it('--timeout: TERM ends the command, and no KILL follows for a process that is gone', async () => {
    const pool = new VmSshPool();
    const realChannel = pool.channel.bind(pool);
    pool.channel = (t, c, p) => realChannel({ ...t, port }, c, p);
    const runner = makeRunner(pool);
    const call = new FakeCall();
    execCommands.length = 0;
    openSession(runner, call, { timeoutMs: 200 });
    await call.ended;
    expect(call.frames.at(-1)).toMatchObject({ sessionError: { code: 'timeout' } });
    expect(execCommands.some((c) => c.startsWith('kill -s TERM -- -4242'))).toBe(true);
    // Past the TERM grace period (2 s).
    await new Promise((r) => setTimeout(r, 2300));
    expect(execCommands.filter((c) => c.startsWith('kill -s KILL'))).toEqual([]);
    pool.close();
  });

  it('a command killed by a signal exits with 128 + its number, like a shell reports it', async () => {
    const pool = new VmSshPool();
    const realChannel = pool.channel.bind(pool);
    pool.channel = (t, c, p) => realChannel({ ...t, port }, c, p);
    const runner = makeRunner(pool);
    const call = new FakeCall();
    openSession(runner, call, { command: ['abort-me'] });
    await call.ended;
    expect(call.frames.at(-1)).toEqual({ exit: { code: 134, signal: 'ABRT' } });
    pool.close();
  });

  it('refuses every session to a VM of the synthetic driver, and dials nothing (its addresses are made up)', async () => {
    const dialled: string[] = [];
    const pool = new VmSshPool();
    pool.channel = (t) => {
      dialled.push(`ssh ${t.host}`);
      throw new Error('must not be reached');
    };
    const status = { vmId: 'vm-1', attempt: 1, phase: 'VM_PHASE_RUNNING', ip: '198.18.3.7' } as VmStatus;
    const runner = new SessionRunner({
      pool,
      instance: () => status,
      log: pino({ level: 'silent' }),
      driver: 'synthetic',
      connect: (host, p) => {
        dialled.push(`tcp ${host}:${p}`);
        throw new Error('must not be reached');
      },
    });
    for (const [i, kind] of (['SESSION_KIND_EXEC', 'SESSION_KIND_SSH', 'SESSION_KIND_PORT_FORWARD'] as const).entries()) {
      const call = new FakeCall();
      openSession(runner, call, { sessionId: `s-${i}`, kind, ...(kind === 'SESSION_KIND_PORT_FORWARD' ? { port: 22 } : {}) });
      await call.ended;
      expect(call.frames).toEqual([{ sessionError: { code: 'not-supported', message: SYNTHETIC_REFUSAL, stage: '' } }]);
    }
    expect(SYNTHETIC_REFUSAL).toMatch(/synthetic driver runs no real VM.*qemu or vz/);
    expect(dialled).toEqual([]);
    expect(runner.size).toBe(0);
    pool.close();
  });
});
