import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ApiContext } from '../context.ts';
import { ControllerInfo, ControllerList, Health, SchedulerSettings, WhoAmI } from '../schemas.ts';
import { actorOf } from '../auth-hook.ts';

export function metaRoutes(ctx: ApiContext): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.get(
      '/v1/health',
      {
        schema: {
          tags: ['meta'],
          summary: 'Liveness and storage health (no auth): 200 ok; 503 degraded while the database cannot take writes (back to ok by itself)',
          security: [],
          response: { 200: Health, 503: Health },
        },
      },
      async (_req, reply) => {
        const storage = ctx.storage?.status() ?? { ok: true };
        const c = ctx.cluster;
        const controller = c ? { controller: { id: c.id, name: c.name, role: c.isLeader() ? ('leader' as const) : ('follower' as const), leader: c.leaderName() } } : {};
        if (storage.ok) return { status: 'ok' as const, checks: { storage }, ...controller };
        return reply.code(503).header('retry-after', String(ctx.storage!.retryAfterS)).send({ status: 'degraded' as const, checks: { storage }, ...controller });
      },
    );
    app.get(
      '/v1/controllers',
      { config: { role: 'read' }, schema: { tags: ['meta'], summary: "The fleet's controllers as this one sees them: role, liveness, worker streams held", response: { 200: ControllerList } } },
      async () => ({ items: ctx.cluster?.controllers() ?? [] }),
    );
    app.get('/v1/info', { config: { role: 'read' }, schema: { tags: ['meta'], response: { 200: ControllerInfo } } }, async () => ctx.info());
    app.get('/v1/whoami', { config: { role: 'any' }, schema: { tags: ['meta'], response: { 200: WhoAmI } } }, async (req) => ({ name: req.principal!.name, roles: req.principal!.roles }));
    app.get('/v1/settings/scheduler', { config: { role: 'read' }, schema: { tags: ['meta'], response: { 200: SchedulerSettings } } }, async () => ({ profile: await ctx.settings.schedulerProfile() }));
    app.put('/v1/settings/scheduler', {
      config: { role: 'admin' },
      schema: { tags: ['meta'], summary: 'Set the scheduler profile: pack (fill busy workers first) or spread', body: SchedulerSettings, response: { 200: SchedulerSettings } },
    }, async (req) => {
      await ctx.settings.setSchedulerProfile(req.body.profile);
      await ctx.events.append([{ kind: 'settings.changed', message: `scheduler profile set to ${req.body.profile} by ${actorOf(req)}`, actor: actorOf(req) }]);
      ctx.bus.scheduleRequested();
      return { profile: req.body.profile };
    });
    // Counts only, but they describe the fleet (workers, VMs, failures): a read token unless the
    // operator opened it for a scraper on a trusted network (--metrics-public).
    app.get('/metrics', { ...(ctx.metricsPublic ? {} : { config: { role: 'read' as const } }), schema: { hide: true } }, async (_req, reply) => {
      const body = await ctx.metrics.registry.metrics();
      return reply.header('content-type', ctx.metrics.registry.contentType).send(body);
    });
  };
}
