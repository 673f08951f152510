// Client side of the VM host process's control socket (see control-server.ts).
import net from 'node:net';
import type { VmHostStatus } from './config.ts';

/** One request, one reply line. Rejects if nobody listens (ENOENT/ECONNREFUSED: the host is gone). */
export function controlRequest(
  socketPath: string,
  cmd: 'status' | 'stop' | 'kill' | 'pause' | 'resume',
  timeoutMs = 3000,
  /** Extra request fields, e.g. `{ reason }` for kill (recorded as the final status message). */
  fields: Record<string, unknown> = {},
): Promise<{ ok: boolean; status?: VmHostStatus; error?: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`control socket ${socketPath}: no reply within ${timeoutMs} ms`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write(JSON.stringify({ ...fields, cmd }) + '\n'));
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('data', (c: string) => {
      buf += c;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      s.end();
      try {
        resolve(JSON.parse(buf.slice(0, nl)) as { ok: boolean; status?: VmHostStatus; error?: string });
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}

export interface ControlWatch {
  close(): void;
  /** Resolves when the connection ends (the host process exited or closed the socket). */
  closed: Promise<void>;
}

/** Streams status changes (the current status first). */
export function watchControl(socketPath: string, onStatus: (s: VmHostStatus) => void, onError?: (e: Error) => void): ControlWatch {
  const s = net.connect(socketPath);
  let buf = '';
  s.setEncoding('utf8');
  s.on('connect', () => s.write(JSON.stringify({ cmd: 'watch' }) + '\n'));
  s.on('error', (e) => onError?.(e));
  s.on('data', (c: string) => {
    buf += c;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        const m = JSON.parse(line) as { status?: VmHostStatus };
        if (m.status) onStatus(m.status);
      } catch {
        /* ignore */
      }
    }
  });
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  return { close: () => s.destroy(), closed };
}
