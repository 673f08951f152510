// Client side of the VM host process's control socket (see control-server.ts).
import net from 'node:net';
import type { VmHostStatus } from './qemu-host-config.ts';

/** The VM a request is meant for: the host process refuses requests that name another. */
export interface ControlTarget {
  vmId: string;
  attempt: number;
}

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
        const r = JSON.parse(buf.slice(0, nl)) as { ok: boolean; code?: string; status?: VmHostStatus; error?: string };
        // Not the host process of the VM addressed (a swapped path): as if nobody listened.
        if (r.code === 'wrong-vm') return reject(new Error(`control socket ${socketPath}: ${r.error ?? 'another VM'}`));
        resolve(r);
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
export function watchControl(socketPath: string, onStatus: (s: VmHostStatus) => void, onError?: (e: Error) => void, target?: ControlTarget): ControlWatch {
  const s = net.connect(socketPath);
  let buf = '';
  s.setEncoding('utf8');
  s.on('connect', () => s.write(JSON.stringify({ ...(target ?? {}), cmd: 'watch' }) + '\n'));
  s.on('error', (e) => onError?.(e));
  s.on('data', (c: string) => {
    buf += c;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        const m = JSON.parse(line) as { status?: VmHostStatus; code?: string; error?: string };
        // Another VM's host behind a swapped path: it refuses, and its statuses are not this VM's.
        const foreign = m.code === 'wrong-vm' || (m.status && target && (m.status.vmId !== target.vmId || m.status.attempt !== target.attempt));
        if (foreign) {
          s.destroy();
          onError?.(new Error(`control socket ${socketPath} belongs to another VM: ${m.error ?? `vm ${m.status?.vmId} attempt ${m.status?.attempt}`}`));
          return;
        }
        if (m.status) onStatus(m.status);
      } catch {
        /* ignore */
      }
    }
  });
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  return { close: () => s.destroy(), closed };
}
