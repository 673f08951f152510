// A minimal QMP client: connect to QEMU's control socket, negotiate capabilities, run commands.
import net from 'node:net';

export interface QmpReply {
  return?: unknown;
  error?: { class: string; desc: string };
}

/** Runs one or more QMP commands on a fresh connection, in order; resolves with their replies. */
export function qmpCommands(socketPath: string, commands: Array<{ execute: string; arguments?: object }>, timeoutMs = 5000): Promise<QmpReply[]> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    const replies: QmpReply[] = [];
    const queue = [{ execute: 'qmp_capabilities' }, ...commands];
    let buf = '';
    let greeted = false;
    const timer = setTimeout(() => finish(new Error(`QMP ${socketPath}: timed out after ${timeoutMs} ms`)), timeoutMs);
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(replies.slice(1)); // drop qmp_capabilities' reply
    };
    const sendNext = (): void => {
      const next = queue.shift();
      if (!next) return finish();
      sock.write(JSON.stringify(next) + '\n');
    };
    sock.setEncoding('utf8');
    sock.on('error', (e) => finish(e));
    sock.on('close', () => finish(new Error(`QMP ${socketPath}: connection closed`)));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if ('QMP' in msg && !greeted) {
          greeted = true;
          sendNext();
        } else if ('return' in msg || 'error' in msg) {
          replies.push(msg as QmpReply);
          sendNext();
        } // events are ignored
      }
    });
  });
}
