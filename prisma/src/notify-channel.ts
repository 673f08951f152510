// A PostgreSQL LISTEN/NOTIFY channel on a connection of its own, kept open: reconnects after a
// drop and says so (`onReconnect`), since notifications sent meanwhile are lost and the listener
// must catch up from the tables. Used between controllers (apps/controller/src/cluster/cluster-bus.ts).
import type pg from 'pg';
import { loadPg } from './pg-driver.ts';
import { providerOf } from './providers.ts';

export interface NotifyChannel {
  /** NOTIFY each payload (each under 8000 bytes), in one round trip. Throws when not connected. */
  send(payloads: string[]): Promise<void>;
  readonly connected: boolean;
  close(): Promise<void>;
}

export interface NotifyChannelOptions {
  url: string;
  /** A plain identifier ([a-z_][a-z0-9_]*). */
  channel: string;
  onMessage: (payload: string) => void;
  /** Listening (again) after a start or a drop: notifications in between were lost. */
  onListening?: () => void;
  onError?: (err: unknown) => void;
  reconnectMs?: number;
}

export async function openNotifyChannel(opts: NotifyChannelOptions): Promise<NotifyChannel> {
  if (providerOf(opts.url) === 'sqlite') throw new Error('LISTEN/NOTIFY needs PostgreSQL');
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(opts.channel)) throw new Error(`bad channel name ${JSON.stringify(opts.channel)}`);
  let client: pg.Client | undefined;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;

  const reconnectSoon = () => {
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      void connect();
    }, opts.reconnectMs ?? 1_000);
    timer.unref();
  };

  const connect = async (): Promise<void> => {
    const c = new (await loadPg()).Client({ connectionString: opts.url, application_name: 'fleet-controller-bus', keepAlive: true, keepAliveInitialDelayMillis: 1_000 });
    c.on('error', (err: Error) => opts.onError?.(err));
    c.on('notification', (n: pg.Notification) => {
      if (n.channel === opts.channel && n.payload) opts.onMessage(n.payload);
    });
    c.once('end', () => {
      if (client === c) client = undefined;
      reconnectSoon();
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${opts.channel}`);
    } catch (err) {
      opts.onError?.(err);
      await c.end().catch(() => undefined);
      reconnectSoon();
      return;
    }
    if (closed) {
      await c.end().catch(() => undefined);
      return;
    }
    client = c;
    opts.onListening?.();
  };

  await connect();
  // One statement at a time on the connection (pg warns about, and queues, overlapping ones).
  let sending: Promise<unknown> = Promise.resolve();
  return {
    get connected() {
      return client !== undefined;
    },
    send(payloads) {
      const run = sending.then(async () => {
        const c = client;
        if (!c) throw new Error(`not listening on ${opts.channel} (reconnecting)`);
        await c.query('SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p', [opts.channel, payloads]);
      });
      sending = run.catch(() => undefined);
      return run;
    },
    async close() {
      closed = true;
      clearTimeout(timer);
      const c = client;
      client = undefined;
      await c?.end().catch(() => undefined);
    },
  };
}
