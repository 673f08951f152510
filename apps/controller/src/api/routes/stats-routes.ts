import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ApiContext } from '../context.ts';
import { FleetOverview, StatsSeries } from '../schemas.ts';
import type { FleetTimeSeries } from '../../stats/time-series.ts';

export function statsRoutes(ctx: ApiContext, series: FleetTimeSeries): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.get('/v1/stats/overview', {
      config: { role: 'read' },
      schema: { tags: ['stats'], summary: 'The fleet at a glance: workers, slots, VMs by state, pending queue, recent failures', response: { 200: FleetOverview } },
    }, async () => ctx.overview());
    app.get('/v1/stats/timeseries', {
      config: { role: 'read' },
      schema: { tags: ['stats'], summary: 'Recent samples (last hour, in memory) of slots used, VM starts/failures and scheduling latency', response: { 200: StatsSeries } },
    }, async () => ({ intervalSeconds: series.intervalMs / 1000, samples: series.samples() }));
  };
}
