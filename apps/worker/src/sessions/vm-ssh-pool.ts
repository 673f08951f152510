// One SSH connection per VM, shared by every exec / ssh session on it (a channel each),
// so a warm `fleet exec` costs one channel open instead of a TCP + SSH handshake.
// A connection is keyed by the VM instance, its address and the credentials; it is
// closed when it breaks, when it has been idle for `idleMs`, or on close(). When a
// connection carries `maxChannels` channels, another one is opened beside it: sshds
// limit concurrent sessions per connection (OpenSSH MaxSessions defaults to 10; the
// guest image's Dropbear 2022.83 refuses a 6th exec and can abort the whole connection
// on channel races near that limit), so the default is 4. Handshakes to one VM are
// serialised (Dropbear also drops bursts of unauthenticated connections).
//
// Host keys: `expectedHostKey` empty = trust on first use (the key seen is returned
// for the controller to record); otherwise a different key fails with HostKeyMismatch.
import { createHash } from 'node:crypto';
import ssh2 from 'ssh2';
import type { Client as SshClient, ClientChannel, ExecOptions, PseudoTtyOptions } from 'ssh2';

const { Client } = ssh2;

export interface SshTarget {
  vmId: string;
  attempt: number;
  host: string;
  port: number;
  username: string;
  privateKey?: string;
  password?: string;
  /** "ssh-ed25519 AAAA..." recorded by the controller; empty = first use. */
  expectedHostKey: string;
}

export class HostKeyMismatch extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`host key mismatch: the controller recorded ${fingerprint(expected)}, the VM presented ${fingerprint(actual)}; refusing to connect`);
  }
}

export class SshAuthFailed extends Error {}

/** How a channel's command ended, captured the instant ssh2 reports it. */
export interface ChannelExit {
  code: number | null;
  /** Signal name without "SIG" when the command died of a signal. */
  signal: string;
}

export interface OpenedChannel {
  channel: ClientChannel;
  hostKey: string;
  /** Resolves with the exit status (or null if the channel closed without one) once the channel closed. */
  closed: Promise<ChannelExit | null>;
  release: () => void;
}

/** "SHA256:..." as ssh-keygen -l prints it. */
export function fingerprint(keyLine: string): string {
  const blob = Buffer.from(keyLine.trim().split(/\s+/)[1] ?? '', 'base64');
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/** An SSH public key blob (string type, ...) as an OpenSSH line "type base64". */
export function keyLineFromBlob(blob: Buffer): string {
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : 0;
  const type = len > 0 && len < 64 && blob.length >= 4 + len ? blob.subarray(4, 4 + len).toString('latin1') : 'unknown';
  return `${type} ${blob.toString('base64')}`;
}

interface Conn {
  key: string;
  client: SshClient;
  ready: Promise<void>;
  isReady: boolean;
  hostKey: string;
  channels: number;
  closed: boolean;
  idleTimer: NodeJS.Timeout | undefined;
}

export interface VmSshPoolOptions {
  idleMs?: number;
  maxChannels?: number;
  readyTimeoutMs?: number;
}

export class VmSshPool {
  private readonly conns = new Map<string, Conn[]>();
  private readonly idleMs: number;
  private readonly maxChannels: number;
  private readonly readyTimeoutMs: number;
  /** Connections opened so far (tests and metrics: proves reuse). */
  opened = 0;

  constructor(opts: VmSshPoolOptions = {}) {
    this.idleMs = opts.idleMs ?? 5 * 60_000;
    this.maxChannels = opts.maxChannels ?? 4;
    this.readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
  }

  private keyOf(t: SshTarget): string {
    const cred = createHash('sha256').update(`${t.username}\0${t.privateKey ?? ''}\0${t.password ?? ''}`).digest('hex').slice(0, 16);
    return `${t.vmId}#${t.attempt}@${t.host}:${t.port}/${cred}`;
  }

  /** Opens an exec channel (or a shell when `command` is null) on a pooled connection. */
  async channel(t: SshTarget, command: string | null, pty: PseudoTtyOptions | null): Promise<OpenedChannel> {
    const conn = await this.acquire(t); // reserves a channel slot
    clearTimeout(conn.idleTimer);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      conn.channels--;
      this.armIdle(conn);
    };
    try {
      // Listeners go on inside the callback: ssh2 may deliver the exit status and the
      // close of a fast command in the same packet batch, before any await resumes.
      let closed!: Promise<ChannelExit | null>;
      const channel = await new Promise<ClientChannel>((resolve, reject) => {
        const cb = (err: Error | undefined, ch: ClientChannel) => {
          if (err) return reject(err);
          let exit: ChannelExit | null = null;
          ch.on('exit', (code: number | null, signal?: string) => {
            exit = { code: typeof code === 'number' ? code : null, signal: typeof signal === 'string' ? signal.replace(/^SIG/, '') : '' };
          });
          closed = new Promise((done) => ch.once('close', () => done(exit)));
          resolve(ch);
        };
        if (command === null) conn.client.shell(pty ?? {}, cb);
        else {
          const opts: ExecOptions = pty ? { pty } : {};
          conn.client.exec(command, opts, cb);
        }
      });
      void closed.then(release);
      return { channel, hostKey: conn.hostKey, closed, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /** A connection with a free channel slot, reserved for the caller (channels + 1). */
  private async acquire(t: SshTarget): Promise<Conn> {
    const key = this.keyOf(t);
    for (;;) {
      const list = (this.conns.get(key) ?? []).filter((c) => !c.closed);
      const c = list.find((x) => x.channels < this.maxChannels);
      if (c) {
        c.channels++;
        try {
          await c.ready;
        } catch (err) {
          c.channels--;
          throw err;
        }
        if (c.closed) {
          c.channels--;
          continue;
        }
        if (t.expectedHostKey && c.hostKey !== normalise(t.expectedHostKey)) {
          c.channels--;
          throw new HostKeyMismatch(t.expectedHostKey, c.hostKey);
        }
        return c;
      }
      const connecting = list.find((x) => !x.isReady);
      if (connecting) {
        await connecting.ready.catch(() => undefined);
        continue;
      }
      this.conns.set(key, [...list, this.connect(key, t)]);
    }
  }

  private connect(key: string, t: SshTarget): Conn {
    const client = new Client();
    let mismatch: HostKeyMismatch | undefined;
    const conn: Conn = { key, client, ready: Promise.resolve(), isReady: false, hostKey: '', channels: 0, closed: false, idleTimer: undefined };
    this.opened++;
    conn.ready = new Promise<void>((resolve, reject) => {
      client.once('ready', () => {
        // Sessions are request/response over one connection: Nagle would hold each small
        // packet (channel open, exec request, exit) for a delayed ACK.
        client.setNoDelay(true);
        conn.isReady = true;
        resolve();
      });
      client.once('error', (err: Error & { level?: string }) => {
        this.drop(conn);
        if (mismatch) reject(mismatch);
        else if (err.level === 'client-authentication') reject(new SshAuthFailed(`SSH login as ${t.username} refused by the VM (the fleet key is not authorized there${t.password ? ' and the password was rejected' : ''})`));
        else reject(err);
      });
      client.once('close', () => {
        this.drop(conn);
        reject(new Error('SSH connection closed during the handshake'));
      });
    });
    conn.ready.catch(() => undefined);
    client.on('error', () => undefined);
    client.on('close', () => this.drop(conn));
    client.connect({
      host: t.host,
      port: t.port,
      username: t.username,
      ...(t.privateKey ? { privateKey: t.privateKey } : {}),
      ...(t.password ? { password: t.password } : {}),
      // The fleet key first, the password only after it (ssh2's own order is the reverse).
      authHandler: [...(t.privateKey ? ['publickey' as const] : []), ...(t.password ? ['password' as const] : [])],
      readyTimeout: this.readyTimeoutMs,
      // AES-GCM runs in OpenSSL (AES-NI); ssh2's chacha20-poly1305 needs its optional native
      // binding to be fast, and the worker must not depend on a compiler being present.
      algorithms: { cipher: ['aes128-gcm@openssh.com', 'aes256-gcm@openssh.com', 'aes128-ctr', 'aes256-ctr', 'chacha20-poly1305@openssh.com'] },
      keepaliveInterval: 15_000,
      keepaliveCountMax: 3,
      hostVerifier: (blob: Buffer) => {
        const line = keyLineFromBlob(blob);
        conn.hostKey = line;
        if (t.expectedHostKey && normalise(t.expectedHostKey) !== line) {
          mismatch = new HostKeyMismatch(t.expectedHostKey, line);
          return false;
        }
        return true;
      },
    });
    return conn;
  }

  private armIdle(conn: Conn): void {
    clearTimeout(conn.idleTimer);
    if (conn.channels > 0 || conn.closed) return;
    conn.idleTimer = setTimeout(() => conn.client.end(), this.idleMs);
    conn.idleTimer.unref();
  }

  private drop(conn: Conn): void {
    if (conn.closed) return;
    conn.closed = true;
    clearTimeout(conn.idleTimer);
    const list = this.conns.get(conn.key)?.filter((c) => c !== conn) ?? [];
    if (list.length) this.conns.set(conn.key, list);
    else this.conns.delete(conn.key);
  }

  /** True when a handshaken connection to this target exists (no need to probe port 22). */
  hasReady(t: SshTarget): boolean {
    return (this.conns.get(this.keyOf(t)) ?? []).some((c) => c.isReady && !c.closed);
  }

  /** Connections currently open (all VMs). */
  get size(): number {
    let n = 0;
    for (const l of this.conns.values()) n += l.length;
    return n;
  }

  /** Drops every connection to a VM instance (it stopped or was removed). */
  forgetVm(vmId: string): void {
    for (const [key, list] of this.conns) {
      if (!key.startsWith(`${vmId}#`)) continue;
      for (const c of list) c.client.end();
    }
  }

  close(): void {
    for (const list of this.conns.values()) for (const c of list) c.client.end();
    this.conns.clear();
  }
}

function normalise(line: string): string {
  const p = line.trim().split(/\s+/);
  return `${p[0]} ${p[1] ?? ''}`;
}
