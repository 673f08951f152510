// Runs one remote-access session on the worker: on a SessionOpen (received over
// Connect) it opens the Session RPC back to the controller on the same HTTP/2
// connection, waits for the VM through named stages (running → has IP → port accepts),
// then connects — SSH (pooled connection, one channel per session) for exec / ssh, a
// plain TCP socket for port-forward, the runtime's VNC console for vnc (issue 19: a Unix
// socket of the VM host process, or the guest's own port 5900) — and pumps bytes both ways
// with backpressure:
//   VM -> controller: grpc write() returning false pauses the SSH channel / socket
//     until 'drain' (the SSH window then stops the remote command);
//   controller -> VM: a channel / socket write() returning false pauses the gRPC
//     stream until the VM side drains.
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import {
  SESSION_ID_METADATA_KEY,
  type SessionFrame,
  type SessionFrame__Output,
  type SessionOpen__Output,
  type VmStatus,
  type WorkerServiceClient,
} from '@fleet/proto';
import type { Logger } from 'pino';
import type { ClientChannel } from 'ssh2';
import { HostKeyMismatch, SshAuthFailed, type VmSshPool } from './vm-ssh-pool.ts';
import { killCommand, PidLineParser, remoteCommand } from './remote-command.ts';
import type { ConsoleEndpoint } from '../drivers/driver.ts';

export type SessionCallClient = grpc.ClientDuplexStream<SessionFrame, SessionFrame__Output>;

export interface SessionRunnerDeps {
  pool: VmSshPool;
  /** Current status of a VM instance held by this worker. */
  instance(vmId: string, attempt: number): VmStatus | undefined;
  log: Logger;
  /** TCP connect to the VM (tests may route it elsewhere). */
  connect?: (host: string, port: number) => net.Socket;
  /** Where the VM's screen is served (the driver's consoleEndpoint); absent = no vnc sessions. */
  consoleEndpoint?(vmId: string, attempt: number): Promise<ConsoleEndpoint | undefined>;
  /** Unix-socket connect (tests may route it elsewhere). */
  connectUnix?: (path: string) => net.Socket;
  /**
   * The worker's driver name. The synthetic driver runs no real VM: its addresses are made up
   * (198.18.0.0/15), so its sessions are refused before anything is dialled (SYNTHETIC_REFUSAL).
   */
  driver?: string;
}

/** Why a session to a VM of the synthetic driver is refused (SessionError code "not-supported"). */
export const SYNTHETIC_REFUSAL = 'the synthetic driver runs no real VM: exec/ssh/port-forward need the qemu or vz driver';

class StageError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly stage?: string,
  ) {
    super(message);
  }
}

const TERM_GRACE_MS = 2000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class SessionRunner {
  private readonly active = new Map<string, { abort: (why: string) => void }>();

  constructor(private readonly deps: SessionRunnerDeps) {}

  get size(): number {
    return this.active.size;
  }

  /** A SessionOpen from the controller: opens the Session RPC on `client` and runs it. */
  open(open: SessionOpen__Output, client: WorkerServiceClient): void {
    if (this.active.has(open.sessionId)) return;
    const md = new grpc.Metadata();
    md.set(SESSION_ID_METADATA_KEY, open.sessionId);
    const call = client.Session(md) as SessionCallClient;
    void this.run(open, call);
  }

  cancel(sessionId: string, reason: string): void {
    this.active.get(sessionId)?.abort(reason);
  }

  /** Ends every session (worker stopping). */
  closeAll(reason: string): void {
    for (const s of [...this.active.values()]) s.abort(reason);
  }

  private async run(open: SessionOpen__Output, call: SessionCallClient): Promise<void> {
    const log = this.deps.log.child({ sessionId: open.sessionId, vmId: open.vmId, kind: open.kind });
    let ended = false;
    let aborted: string | null = null;
    const onAbort: Array<(why: string) => void> = [];
    const abort = (why: string) => {
      if (aborted !== null || ended) return;
      aborted = why;
      log.info({ why }, 'session aborted');
      for (const f of onAbort.splice(0)) f(why);
    };
    this.active.set(open.sessionId, { abort });
    call.on('error', (e: grpc.ServiceError) => abort(`controller ended the session: ${e.details || e.message}`));
    call.on('status', (s: grpc.StatusObject) => abort(s.code === grpc.status.OK ? 'controller closed the session' : `controller ended the session: ${s.details}`));
    const send = (f: SessionFrame): boolean => {
      if (ended || aborted !== null) return true;
      try {
        return call.write(f);
      } catch {
        return true;
      }
    };
    const end = (last: SessionFrame | null) => {
      if (ended) return;
      if (last) send(last);
      ended = true;
      this.active.delete(open.sessionId);
      try {
        call.end();
      } catch {
        /* already closed */
      }
    };

    try {
      // Never dial a synthetic VM's made-up address (it would leave this machine).
      if (this.deps.driver === 'synthetic') throw new StageError('not-supported', SYNTHETIC_REFUSAL);
      const deadline = Date.now() + Math.max(1000, open.waitMs || 60_000);
      if (open.kind === 'SESSION_KIND_VNC') {
        const sock = await this.consoleSocket(open, deadline, send, () => aborted);
        await this.pump(sock, 'the VM console', call, send, end, onAbort, () => aborted);
        return;
      }
      const ip = await this.waitForVm(open, deadline, send, () => aborted);
      if (open.kind === 'SESSION_KIND_PORT_FORWARD') {
        const sock = await this.tcpConnect(ip, open.port, deadline, 'connecting', send, () => aborted);
        await this.pump(sock, `port ${open.port} of the VM`, call, send, end, onAbort, () => aborted);
      } else await this.shell(open, ip, deadline, call, send, end, onAbort, () => aborted, log);
    } catch (err) {
      const e =
        err instanceof StageError
          ? err
          : err instanceof HostKeyMismatch
            ? new StageError('host-key-mismatch', err.message, 'connecting')
            : err instanceof SshAuthFailed
              ? new StageError('auth-failed', err.message, 'connecting')
              : new StageError('failed', (err as Error).message ?? String(err));
      if (aborted === null) log.warn({ code: e.code, err: e.message, stage: e.stage }, 'session failed');
      end({ sessionError: { code: e.code, message: e.message, stage: e.stage ?? '' } });
    } finally {
      this.active.delete(open.sessionId);
    }
  }

  /** Stages: the instance is running, has an IP. Returns the IP. */
  private async waitForVm(open: SessionOpen__Output, deadline: number, send: (f: SessionFrame) => boolean, aborted: () => string | null): Promise<string> {
    let stage = '';
    const enter = (next: string, message: string) => {
      if (stage === next) return;
      stage = next;
      send({ progress: { stage: next, message } });
    };
    for (;;) {
      if (aborted() !== null) throw new StageError('cancelled', aborted()!);
      const st = this.deps.instance(open.vmId, open.attempt);
      const sameAttempt = st && (!open.attempt || st.attempt === open.attempt);
      if (sameAttempt && (st.phase === 'VM_PHASE_FAILED' || st.phase === 'VM_PHASE_STOPPED' || st.phase === 'VM_PHASE_GONE' || st.phase === 'VM_PHASE_STOPPING')) {
        throw new StageError('not-running', `the VM is ${st.phase.replace('VM_PHASE_', '').toLowerCase()} on this worker${st.message ? ` (${st.message})` : ''}`, 'waiting-running');
      }
      if (sameAttempt && st.phase === 'VM_PHASE_RUNNING') {
        if (st.ip) return st.ip;
        if (Date.now() >= deadline) throw new StageError('timeout', 'the VM runs but got no IP address in time (no DHCP lease yet); raise --wait or check the guest network', 'waiting-ip');
        enter('waiting-ip', 'the VM runs; waiting for its IP address (DHCP)');
      } else {
        if (Date.now() >= deadline) throw new StageError('timeout', 'the VM was not running on the worker in time; raise --wait', 'waiting-running');
        enter('waiting-running', 'waiting for the VM to run on the worker');
      }
      await sleep(100);
    }
  }

  /** TCP connect with retries until the deadline (the guest's service may still be starting). */
  private async tcpConnect(ip: string, port: number, deadline: number, stage: string, send: (f: SessionFrame) => boolean, aborted: () => string | null): Promise<net.Socket> {
    let announced = false;
    let lastErr = '';
    for (;;) {
      if (aborted() !== null) throw new StageError('cancelled', aborted()!);
      try {
        return await new Promise<net.Socket>((resolve, reject) => {
          const sock = this.deps.connect ? this.deps.connect(ip, port) : net.connect({ host: ip, port });
          const t = setTimeout(() => {
            sock.destroy();
            reject(new Error('connect timed out'));
          }, Math.max(200, Math.min(3000, deadline - Date.now())));
          sock.once('connect', () => {
            clearTimeout(t);
            sock.removeAllListeners('error');
            resolve(sock);
          });
          sock.once('error', (e) => {
            clearTimeout(t);
            sock.destroy();
            reject(e);
          });
        });
      } catch (e) {
        lastErr = (e as Error).message;
        if (Date.now() >= deadline) {
          throw new StageError('timeout', `port ${port} of the VM (${ip}) did not accept connections in time (${lastErr}); raise --wait`, stage);
        }
        if (!announced) {
          announced = true;
          send({ progress: { stage, message: `waiting for port ${port} of the VM (${ip}) to accept connections` } });
        }
        await sleep(200);
      }
    }
  }

  /**
   * The VM's console (vnc): waits until it runs, asks the driver where its screen is, and connects
   * (the VM host's Unix socket appears as QEMU starts: retried until the deadline).
   */
  private async consoleSocket(open: SessionOpen__Output, deadline: number, send: (f: SessionFrame) => boolean, aborted: () => string | null): Promise<net.Socket> {
    if (!this.deps.consoleEndpoint) throw new StageError('not-supported', `the ${this.deps.driver ?? 'worker\'s'} driver offers no VM console`);
    await this.waitForRunning(open, deadline, send, aborted);
    let announced = false;
    for (;;) {
      if (aborted() !== null) throw new StageError('cancelled', aborted()!);
      const ep = await this.deps.consoleEndpoint(open.vmId, open.attempt);
      if (ep?.kind === 'guest-port') {
        const ip = await this.waitForVm(open, deadline, send, aborted);
        return this.tcpConnect(ip, ep.port, deadline, 'connecting', send, aborted);
      }
      if (ep?.kind === 'unix') {
        try {
          return await new Promise<net.Socket>((resolve, reject) => {
            const sock = this.deps.connectUnix ? this.deps.connectUnix(ep.path) : net.connect({ path: ep.path });
            sock.once('connect', () => {
              sock.removeAllListeners('error');
              resolve(sock);
            });
            sock.once('error', (e) => {
              sock.destroy();
              reject(e);
            });
          });
        } catch {
          /* QEMU not listening yet */
        }
      }
      if (Date.now() >= deadline) throw new StageError('timeout', 'the VM console did not open in time (its VM host process serves it once QEMU runs); raise --wait', 'connecting');
      if (!announced) {
        announced = true;
        send({ progress: { stage: 'connecting', message: 'waiting for the VM console' } });
      }
      await sleep(200);
    }
  }

  /** The instance is running (any address or none). */
  private async waitForRunning(open: SessionOpen__Output, deadline: number, send: (f: SessionFrame) => boolean, aborted: () => string | null): Promise<void> {
    let announced = false;
    for (;;) {
      if (aborted() !== null) throw new StageError('cancelled', aborted()!);
      const st = this.deps.instance(open.vmId, open.attempt);
      const sameAttempt = st && (!open.attempt || st.attempt === open.attempt);
      if (sameAttempt && st.phase === 'VM_PHASE_RUNNING') return;
      if (sameAttempt && (st.phase === 'VM_PHASE_FAILED' || st.phase === 'VM_PHASE_STOPPED' || st.phase === 'VM_PHASE_GONE' || st.phase === 'VM_PHASE_STOPPING')) {
        throw new StageError('not-running', `the VM is ${st.phase.replace('VM_PHASE_', '').toLowerCase()} on this worker${st.message ? ` (${st.message})` : ''}`, 'waiting-running');
      }
      if (Date.now() >= deadline) throw new StageError('timeout', 'the VM was not running on the worker in time; raise --wait', 'waiting-running');
      if (!announced) {
        announced = true;
        send({ progress: { stage: 'waiting-running', message: 'waiting for the VM to run on the worker' } });
      }
      await sleep(100);
    }
  }

  /** Bytes both ways between a connected socket and the session (port-forward, vnc). */
  private async pump(
    sock: net.Socket,
    what: string,
    call: SessionCallClient,
    send: (f: SessionFrame) => boolean,
    end: (last: SessionFrame | null) => void,
    onAbort: Array<(why: string) => void>,
    aborted: () => string | null,
  ): Promise<void> {
    if (aborted() !== null) {
      sock.destroy();
      throw new StageError('cancelled', aborted()!);
    }
    sock.setNoDelay(true);
    onAbort.push(() => sock.destroy());
    send({ started: true });
    await new Promise<void>((resolve) => {
      let sentExit = false;
      const finish = (code: number, error?: string) => {
        if (sentExit) return;
        sentExit = true;
        end(error ? { sessionError: { code: 'connection-failed', message: error, stage: '' } } : { exit: { code, signal: '' } });
        sock.destroy();
        resolve();
      };
      sock.on('data', (chunk: Buffer) => {
        if (!send({ stdout: chunk })) {
          sock.pause();
          call.once('drain', () => sock.resume());
        }
      });
      sock.on('end', () => finish(0));
      sock.on('close', () => finish(0));
      sock.on('error', (e) => finish(1, `connection to ${what} failed: ${e.message}`));
      call.on('data', (f: SessionFrame__Output) => {
        if (f.payload === 'stdin' && f.stdin) {
          // After the client's EOF a write would error and end the forward before the reply.
          if (sock.writableEnded || sock.destroyed) return;
          if (!sock.write(f.stdin)) {
            call.pause();
            sock.once('drain', () => call.resume());
          }
        } else if (f.payload === 'eof') sock.end();
      });
      call.on('end', () => sock.end());
      onAbort.push(() => resolve());
    });
  }

  private async shell(
    open: SessionOpen__Output,
    ip: string,
    deadline: number,
    call: SessionCallClient,
    send: (f: SessionFrame) => boolean,
    end: (last: SessionFrame | null) => void,
    onAbort: Array<(why: string) => void>,
    aborted: () => string | null,
    log: Logger,
  ): Promise<void> {
    const target = {
      vmId: open.vmId,
      attempt: open.attempt,
      host: ip,
      port: 22,
      username: open.username || 'fleet',
      ...(open.privateKey ? { privateKey: open.privateKey } : {}),
      ...(open.password ? { password: open.password } : {}),
      expectedHostKey: open.hostKey,
    };
    // waiting-ssh: port 22 accepts (the probe socket is closed at once; ssh2 dials its own).
    // Skipped with a warm pooled connection: a probe costs the guest a fork of its sshd.
    if (!this.deps.pool.hasReady(target)) {
      const probe = await this.tcpConnect(ip, 22, deadline, 'waiting-ssh', send, aborted);
      probe.destroy();
    }
    const interactive = open.kind === 'SESSION_KIND_SSH' && open.command.length === 0;
    const tty = open.tty || interactive;
    const reportPid = !tty;
    const command = interactive
      ? null
      : remoteCommand({ argv: open.command, env: open.env, workdir: open.workdir, reportPid, shellString: open.kind === 'SESSION_KIND_SSH' });
    const pty = tty ? { rows: open.rows || 24, cols: open.cols || 80, term: (open.env.TERM || 'xterm-256color').slice(0, 64) } : null;
    let opened: Awaited<ReturnType<VmSshPool['channel']>>;
    for (let attempt = 0; ; attempt++) {
      try {
        opened = await this.deps.pool.channel(target, command, pty);
        break;
      } catch (err) {
        if (err instanceof HostKeyMismatch || err instanceof SshAuthFailed || attempt >= 20 || Date.now() >= deadline || aborted() !== null) throw err;
        // dropbear may accept TCP a moment before it can run sessions.
        if (attempt === 0) send({ progress: { stage: 'connecting', message: `SSH to ${ip} not ready yet (${(err as Error).message}); retrying` } });
        await sleep(250);
      }
    }
    const { channel, hostKey, closed } = opened;
    // Cancelled while the channel was opening: nothing else would ever close it.
    if (aborted() !== null) {
      channel.close();
      throw new StageError('cancelled', aborted()!);
    }
    if (!open.hostKey) send({ hostKey });
    const ch: ClientChannel = channel;
    send({ started: true });

    let pid: number | undefined;
    const pidParser = reportPid ? new PidLineParser() : null;
    const signal = (name: string) => {
      if (tty) {
        const byte = name === 'INT' ? '\x03' : name === 'QUIT' ? '\x1c' : null;
        if (byte && !ch.writableEnded && !ch.destroyed) ch.write(byte);
        else ch.close();
        return;
      }
      const p = pidParser?.pid ?? pid;
      if (!p) {
        ch.signal(name); // best effort (OpenSSH honours it, Dropbear ignores it)
        return;
      }
      void this.deps.pool
        .channel(target, killCommand(p, name), null)
        .then(({ channel: k }) => {
          k.resume();
          k.stderr.resume();
        })
        .catch((e: Error) => log.warn({ err: e.message }, 'delivering a signal failed'));
    };

    await new Promise<void>((resolve) => {
      let exit: { code: number; signal: string } | null = null;
      let timedOut = false;
      let timer: NodeJS.Timeout | undefined;
      let graceTimer: NodeJS.Timeout | undefined;
      if (open.timeoutMs > 0) {
        timer = setTimeout(() => {
          timedOut = true;
          signal('TERM');
          graceTimer = setTimeout(() => {
            signal('KILL');
            ch.close();
          }, TERM_GRACE_MS).unref();
        }, open.timeoutMs);
      }
      const pauseVm = () => {
        ch.pause();
        ch.stderr.pause();
        call.once('drain', () => {
          ch.resume();
          ch.stderr.resume();
        });
      };
      // A write after EOF (stdin the client sent after its eof) or a broken channel emits
      // 'error'; unhandled it would crash the worker. The close that follows ends the session.
      ch.on('error', (e: Error) => log.debug({ err: e.message }, 'SSH channel error'));
      ch.stderr.on('error', (e: Error) => log.debug({ err: e.message }, 'SSH channel stderr error'));
      ch.on('data', (d: Buffer) => {
        if (!send({ stdout: d })) pauseVm();
      });
      ch.stderr.on('data', (d: Buffer) => {
        const out = pidParser ? pidParser.push(d) : d;
        if (pidParser?.pid) pid = pidParser.pid;
        if (out.length && !send({ stderr: out })) pauseVm();
      });
      let stopWaiting: () => void = () => undefined;
      const abortWait = new Promise<void>((r) => (stopWaiting = r));
      onAbort.push(() => stopWaiting());
      void closed.then(async (status) => {
        clearTimeout(timer);
        // The command is gone: a late KILL could hit a process that reused its pid.
        clearTimeout(graceTimer);
        if (status) exit = { code: status.code ?? (status.signal ? 128 + signalNumber(status.signal) : 255), signal: status.code === null ? status.signal : '' };
        // The channel can close while output is still queued in its (paused) readables:
        // the exit status goes out only after every byte before it.
        await Promise.race([Promise.all([drained(ch), drained(ch.stderr)]), abortWait]);
        if (timedOut) {
          end({ sessionError: { code: 'timeout', message: `the command ran longer than its timeout (${open.timeoutMs} ms) and was terminated`, stage: '' } });
        } else if (aborted() === null) {
          end(exit ? { exit } : { sessionError: { code: 'connection-lost', message: 'the SSH channel to the VM closed without an exit status (VM stopped or network lost)', stage: '' } });
        } else end(null);
        resolve();
      });
      call.on('data', (f: SessionFrame__Output) => {
        switch (f.payload) {
          case 'stdin':
            // After the client's EOF the write side is closed: a write would error and
            // destroy the channel, losing the command's output and exit status.
            if (ch.writableEnded || ch.destroyed) return;
            if (f.stdin && !ch.write(f.stdin)) {
              call.pause();
              ch.once('drain', () => call.resume());
            }
            return;
          case 'eof':
            ch.end();
            return;
          case 'resize':
            if (tty && f.resize) ch.setWindow(f.resize.rows, f.resize.cols, 0, 0);
            return;
          case 'signal':
            // Unknown names would throw (killCommand, ssh2's signal()) inside this handler.
            if (f.signal && signalNumber(f.signal) > 0) signal(f.signal.replace(/^SIG/, ''));
            else log.warn({ signal: f.signal }, 'unknown signal name from the controller ignored');
            return;
          default:
            return;
        }
      });
      onAbort.push(() => {
        // The client or the controller went away: stop the command, do not leave it running unseen.
        if (!tty && (pidParser?.pid ?? pid)) signal('HUP');
        setTimeout(() => ch.close(), 200).unref();
      });
    });
  }
}

function drained(r: NodeJS.ReadableStream & { readableEnded?: boolean; destroyed?: boolean }): Promise<void> {
  if (r.readableEnded || r.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    r.once('end', () => resolve());
    r.once('close', () => resolve());
  });
}

/** The signals SSH names (RFC 4254 6.10, exactly ssh2's list) with their Linux numbers. */
const SIGNALS: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, ILL: 4, ABRT: 6, FPE: 8, KILL: 9, USR1: 10, SEGV: 11, USR2: 12, PIPE: 13, ALRM: 14, TERM: 15 };
function signalNumber(name: string): number {
  return SIGNALS[name.replace(/^SIG/, '')] ?? 0;
}
