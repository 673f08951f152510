// The rendezvous between the root network host and the unprivileged VM agent (agent-protocol.ts):
// root listens on a unix socket in a directory it owns, accepts only the VM user's uid (peer
// credentials, checked on the connection itself, not on any path), hands the job and the NIC fd
// over with SCM_RIGHTS, then both sides speak JSON lines on the same connection.
import { chownSync, writeSync } from 'node:fs';
import { Socket } from 'node:net';
import { AGENT_PROTOCOL_VERSION, LineSplitter, parseHandover, type AgentHandover, type AgentJob } from './agent-protocol.ts';

/** The native calls this needs (@fleet/native-vz; injectable so tests can wrap them). */
export interface FdPassing {
  unixListen(path: string, opts: { mode?: number; backlog?: number }): number;
  unixAccept(fd: number): number | null;
  unixConnect(path: string): number;
  peerCredentials(fd: number): { uid: number; gid: number; pid?: number };
  sendFds(sock: number, fds: number[], data: Buffer): void;
  recvFds(sock: number, opts: { maxFds?: number; maxBytes?: number }): { data: Buffer; fds: number[] } | null;
  closeFd(fd: number): void;
}

const POLL_MS = 20;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Newline-delimited JSON over a connected stream socket, both directions, input validated by `parse`. */
export class JsonLineChannel<In> {
  readonly closed: Promise<void>;
  private readonly listeners: Array<(m: In) => void> = [];
  private readonly invalid: Array<(why: string) => void> = [];

  constructor(private readonly socket: Socket, parse: (line: string) => In) {
    socket.setEncoding('utf8');
    const split = new LineSplitter(
      (line) => {
        let m: In;
        try {
          m = parse(line);
        } catch (e) {
          for (const f of this.invalid) f((e as Error).message);
          return;
        }
        for (const f of this.listeners) f(m);
      },
      () => {
        for (const f of this.invalid) f('line too long: connection closed');
        socket.destroy();
      },
    );
    socket.on('data', (c: string) => split.push(c));
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  onMessage(f: (m: In) => void): void {
    this.listeners.push(f);
  }

  /** A line that failed validation (it is dropped; the caller decides whether that ends the link). */
  onInvalid(f: (why: string) => void): void {
    this.invalid.push(f);
  }

  send(m: object): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(`${JSON.stringify(m)}\n`);
  }

  close(): void {
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }
}

/** Root's side: one listening socket per VM (or install), for exactly one uid. */
export class AgentListener {
  private constructor(
    private readonly np: FdPassing,
    private readonly fd: number,
    readonly path: string,
    private readonly uid: number,
  ) {}

  /**
   * Listens on `socketPath` (its directory must be root's: the caller made it) and gives the
   * socket to the VM user (0600): nobody else can even connect, and the uid is checked again on
   * every accepted connection.
   */
  static open(np: FdPassing, socketPath: string, owner: { uid: number; gid: number }): AgentListener {
    const fd = np.unixListen(socketPath, { mode: 0o600, backlog: 4 });
    try {
      // Root just created this path in its own directory: nothing of the user's is followed.
      chownSync(socketPath, owner.uid, owner.gid);
    } catch (e) {
      np.closeFd(fd);
      throw new Error(`cannot give ${socketPath} to uid ${owner.uid}: ${(e as Error).message}`);
    }
    return new AgentListener(np, fd, socketPath, owner.uid);
  }

  /** Waits for the agent's connection; connections from any other uid are closed and reported. */
  async accept(timeoutMs: number, opts: { signal?: AbortSignal; onRefused?: (uid: number) => void } = {}): Promise<{ fd: number; pid: number | undefined }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (opts.signal?.aborted) throw new Error('aborted while waiting for the VM agent');
      const c = this.np.unixAccept(this.fd);
      if (c !== null) {
        let creds: { uid: number; pid?: number };
        try {
          creds = this.np.peerCredentials(c);
        } catch {
          this.np.closeFd(c);
          continue;
        }
        if (creds.uid === this.uid) return { fd: c, pid: creds.pid };
        this.np.closeFd(c);
        opts.onRefused?.(creds.uid);
        continue;
      }
      if (Date.now() > deadline) throw new Error(`the VM agent did not connect to ${this.path} within ${Math.round(timeoutMs / 1000)} s`);
      await sleep(POLL_MS);
    }
  }

  private open = true;

  /** Idempotent. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.np.closeFd(this.fd);
  }
}

/**
 * Root: sends the job (and fds) on an accepted connection, then returns the JSON-line channel.
 * Our copies of `fds` stay open: the caller closes them (the kernel duplicated them into the message).
 */
export function handOver<In>(np: FdPassing, fd: number, job: AgentJob, fds: number[], parse: (line: string) => In): JsonLineChannel<In> {
  const msg: AgentHandover = { v: AGENT_PROTOCOL_VERSION, job };
  const data = Buffer.from(`${JSON.stringify(msg)}\n`);
  try {
    // SCM_RIGHTS needs at least one fd; a job without any (an install) is a plain write.
    if (fds.length > 0) np.sendFds(fd, fds, data);
    else if (writeSync(fd, data) !== data.length) throw new Error('short write');
  } catch (e) {
    np.closeFd(fd);
    throw new Error(`cannot hand the job to the VM agent: ${(e as Error).message}`);
  }
  return new JsonLineChannel(new Socket({ fd, readable: true, writable: true }), parse);
}

/** The agent's side: connects, receives the job and its fds, and returns the channel. */
export async function receiveJob<In>(
  np: FdPassing,
  socketPath: string,
  parse: (line: string) => In,
  timeoutMs = 30_000,
): Promise<{ job: AgentJob; fds: number[]; channel: JsonLineChannel<In> }> {
  const fd = np.unixConnect(socketPath);
  const deadline = Date.now() + timeoutMs;
  let got: { data: Buffer; fds: number[] } | null = null;
  try {
    while ((got = np.recvFds(fd, { maxFds: 4, maxBytes: 65536 })) === null) {
      if (Date.now() > deadline) throw new Error(`no job arrived on ${socketPath} within ${Math.round(timeoutMs / 1000)} s`);
      await sleep(POLL_MS);
    }
    if (got.data.length === 0) throw new Error(`${socketPath} closed before handing over a job`);
    const text = got.data.toString('utf8');
    // Root writes nothing after the handover until we answer, so the message is exactly one line.
    if (!text.endsWith('\n') || text.indexOf('\n') !== text.length - 1) throw new Error('the handover is not exactly one line');
    const { job } = parseHandover(text.slice(0, -1));
    return { job, fds: got.fds, channel: new JsonLineChannel(new Socket({ fd, readable: true, writable: true }), parse) };
  } catch (e) {
    for (const f of got?.fds ?? []) np.closeFd(f);
    np.closeFd(fd);
    throw e;
  }
}
