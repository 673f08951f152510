// GET /metrics behind the API's own auth hook: a read token by default, open only when the
// operator asked for it.
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { TokenRejected, type TokenService } from '../../auth/token-service.ts';
import { Metrics } from '../../observability/metrics.ts';
import { registerAuth } from '../auth-hook.ts';
import type { ApiContext } from '../context.ts';
import { metaRoutes } from './meta-routes.ts';

const tokens = {
  authenticate: async (t: string) => {
    if (t === 'reader') return { tokenId: 'r', name: 'reader', roles: ['read'] };
    if (t === 'ssh-only') return { tokenId: 's', name: 'ssh-only', roles: ['connect'] };
    throw new TokenRejected('unknown token');
  },
} as unknown as TokenService;

async function server(metricsPublic: boolean) {
  const metrics = new Metrics();
  metrics.vmsCreated.inc(3);
  const app = Fastify();
  registerAuth(app, tokens);
  await app.register(metaRoutes({ metrics, metricsPublic } as unknown as ApiContext));
  return app;
}

describe('GET /metrics', () => {
  it('needs a token with the read role by default', async () => {
    const app = await server(false);
    expect((await app.inject({ url: '/metrics' })).statusCode).toBe(401);
    expect((await app.inject({ url: '/metrics', headers: { authorization: 'Bearer ssh-only' } })).statusCode).toBe(403);
    const ok = await app.inject({ url: '/metrics', headers: { authorization: 'Bearer reader' } });
    expect(ok.statusCode).toBe(200);
    expect(ok.body).toMatch(/^fleet_vms_created_total 3$/m);
    await app.close();
  });

  it('is open with metricsPublic (a scraper on a trusted network)', async () => {
    const app = await server(true);
    const ok = await app.inject({ url: '/metrics' });
    expect(ok.statusCode).toBe(200);
    expect(ok.body).toMatch(/^fleet_vms_created_total 3$/m);
    await app.close();
  });
});
