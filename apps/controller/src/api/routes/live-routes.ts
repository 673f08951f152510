// GET /v1/live: one NDJSON stream with everything the dashboard's live pages
// need — {"type":"overview",...} and {"type":"workers",...} lines, sent on every
// VM change or event (coalesced) and at least every 2 s. One computation is
// shared by all open streams.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { ApiContext } from '../context.ts';
import { Type } from '@sinclair/typebox';
import { FleetOverview, WorkerObject } from '../schemas.ts';
import type { PassThrough } from 'node:stream';
import { startWatch, type WatchSink } from '../watch-stream.ts';
import { TokenRejected } from '../../auth/token-service.ts';

interface Subscriber {
  sink: WatchSink;
  stream: PassThrough;
  /** Re-checked on every refresh: a revoked or expired token ends the stream at once, not at the next reconnect. */
  token: string;
}

export type LiveLine = { type: 'overview'; overview: FleetOverview } | { type: 'workers'; workers: WorkerObject[] };

const LiveLineSchema = Type.Union([
  Type.Object({ type: Type.Literal('overview'), overview: FleetOverview }),
  Type.Object({ type: Type.Literal('workers'), workers: Type.Array(WorkerObject) }),
  Type.Object({ type: Type.Literal('ERROR'), error: Type.Object({ code: Type.String(), message: Type.String() }) }),
]);

const TICK_MS = 2000;
const COALESCE_MS = 150;

class LiveHub {
  private readonly sinks = new Set<Subscriber>();
  private timer: NodeJS.Timeout | null = null;
  private soon: NodeJS.Timeout | null = null;
  private offs: (() => void)[] = [];
  private running = false;
  private again = false;

  constructor(
    private readonly ctx: ApiContext,
    private readonly log: Logger,
  ) {}

  add(sub: Subscriber): void {
    this.sinks.add(sub);
    sub.sink.onClose(() => {
      this.sinks.delete(sub);
      if (this.sinks.size === 0) this.stop();
    });
    if (!this.timer) {
      this.timer = setInterval(() => this.refresh(), TICK_MS);
      this.offs = [this.ctx.bus.onVmChange(() => this.refreshSoon()), this.ctx.events.onEvent(() => this.refreshSoon())];
    }
    this.refresh();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    this.timer = this.soon = null;
    for (const off of this.offs) off();
    this.offs = [];
  }

  private refreshSoon(): void {
    if (this.soon) return;
    this.soon = setTimeout(() => {
      this.soon = null;
      this.refresh();
    }, COALESCE_MS);
  }

  private refresh(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.compute()
      .catch((err: unknown) => this.log.warn({ err }, 'live dashboard refresh failed'))
      .finally(() => {
        this.running = false;
        if (this.again) {
          this.again = false;
          this.refresh();
        }
      });
  }

  private async compute(): Promise<void> {
    if (this.sinks.size === 0) return;
    const workers = await this.ctx.workers.list();
    const overview = await this.ctx.overview(workers);
    const lines: LiveLine[] = [{ type: 'overview', overview }, { type: 'workers', workers }];
    for (const sub of this.sinks) {
      try {
        await this.ctx.tokens.authenticate(sub.token);
      } catch (err) {
        if (!(err instanceof TokenRejected)) throw err;
        sub.sink.send({ type: 'ERROR', error: { code: 'unauthorized', message: err.message } });
        sub.stream.end();
        this.sinks.delete(sub);
        continue;
      }
      for (const line of lines) sub.sink.send(line);
    }
  }
}

export function liveRoutes(ctx: ApiContext): FastifyPluginAsyncTypebox {
  return async (app) => {
    const hub = new LiveHub(ctx, app.log as unknown as Logger);
    app.addHook('onClose', async () => hub.stop());
    app.get('/v1/live', {
      config: { role: 'read' },
      schema: {
        tags: ['stats'],
        summary: 'NDJSON stream of {type:"overview"} and {type:"workers"} lines for live dashboards (on change and every 2 s)',
        response: {
          200: {
            description: 'application/x-ndjson: one line per document (blank lines are keepalives); an ERROR line ends the stream (token revoked or expired, slow consumer)',
            content: { 'application/x-ndjson': { schema: LiveLineSchema } },
          },
        },
      },
    }, async (req, reply) => {
      const { sink, stream } = startWatch(req, reply);
      // The auth hook accepted this exact header ("Bearer <token>").
      hub.add({ sink, stream, token: (req.headers.authorization ?? '').replace(/^Bearer\s+/i, '') });
      return reply.send(stream as never);
    });
  };
}
