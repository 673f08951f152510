// The VM host process's control socket: a Unix stream socket in the run dir speaking
// newline-delimited JSON. Requests: {"cmd":"status"} → one status line; {"cmd":"watch"} → the
// status now and again on every change, until the client hangs up; {"cmd":"stop"} (graceful:
// QMP powerdown, hard kill after a timeout) and {"cmd":"kill"} (optional "reason", e.g. "fenced: …",
// recorded as the final status message) → {"ok":true} at once, then the
// state changes arrive on watchers. {"cmd":"pause"} / {"cmd":"resume"} (QMP stop / cont) reply
// once QEMU confirmed, with the status (`paused`). Replies carry the request's "id" if it had one.
import net from 'node:net';
import { unlinkSync } from 'node:fs';
import type { VmHostStatus } from './qemu-host-config.ts';

export interface ControlHandlers {
  status(): VmHostStatus;
  stop(): void;
  kill(reason?: string): void;
  /** Pause/resume the guest's vCPUs (QMP stop/cont); resolves when QEMU confirmed. */
  pause(): Promise<void>;
  resume(): Promise<void>;
}

export class ControlServer {
  private readonly server: net.Server;
  private readonly watchers = new Set<net.Socket>();

  private constructor(private readonly socketPath: string, private readonly h: ControlHandlers) {
    this.server = net.createServer((s) => this.onConnection(s));
  }

  static async listen(socketPath: string, h: ControlHandlers): Promise<ControlServer> {
    try {
      unlinkSync(socketPath);
    } catch {
      /* absent */
    }
    const cs = new ControlServer(socketPath, h);
    await new Promise<void>((resolve, reject) => {
      cs.server.once('error', reject);
      cs.server.listen(socketPath, () => resolve());
    });
    return cs;
  }

  /** Push the current status to every watcher. */
  broadcast(): void {
    const line = JSON.stringify({ event: 'status', status: this.h.status() }) + '\n';
    for (const w of this.watchers) w.write(line);
  }

  close(): Promise<void> {
    for (const w of this.watchers) w.end();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(s: net.Socket): void {
    s.setEncoding('utf8');
    let buf = '';
    s.on('error', () => this.watchers.delete(s));
    s.on('close', () => this.watchers.delete(s));
    s.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 65536) return void s.destroy();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) this.onRequest(s, line);
      }
    });
  }

  private onRequest(s: net.Socket, line: string): void {
    let req: { cmd?: unknown; id?: unknown; reason?: unknown; vmId?: unknown; attempt?: unknown };
    try {
      req = JSON.parse(line) as { cmd?: unknown; id?: unknown; reason?: unknown; vmId?: unknown; attempt?: unknown };
    } catch {
      s.write(JSON.stringify({ ok: false, error: 'bad JSON' }) + '\n');
      return;
    }
    const reply = (o: object): void => void s.write(JSON.stringify({ ...(req.id !== undefined ? { id: req.id } : {}), ...o }) + '\n');
    // A request names the VM it is meant for: a socket path swapped by a VM's user (its run dir is
    // its own) can lead the worker here, but never make this VM obey a command meant for another.
    if (req.vmId !== undefined || req.attempt !== undefined) {
      const own = this.h.status();
      if (req.vmId !== own.vmId || req.attempt !== own.attempt) {
        return reply({ ok: false, code: 'wrong-vm', error: `this control socket belongs to vm ${own.vmId} attempt ${own.attempt}, not the one addressed` });
      }
    }
    switch (req.cmd) {
      case 'status':
        return reply({ ok: true, status: this.h.status() });
      case 'watch':
        this.watchers.add(s);
        return reply({ ok: true, event: 'status', status: this.h.status() });
      case 'stop':
        this.h.stop();
        return reply({ ok: true });
      case 'kill':
        this.h.kill(typeof req.reason === 'string' && req.reason ? req.reason.slice(0, 1000) : undefined);
        return reply({ ok: true });
      case 'pause':
      case 'resume':
        (req.cmd === 'pause' ? this.h.pause() : this.h.resume()).then(
          () => reply({ ok: true, status: this.h.status() }),
          (e: Error) => reply({ ok: false, error: e.message }),
        );
        return;
      default:
        return reply({ ok: false, error: `unknown cmd ${JSON.stringify(req.cmd)}` });
    }
  }
}
