import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Event } from '@fleet/db';
import type { ApiContext } from '../context.ts';
import { EventPage, EventQueryString, type EventObject } from '../schemas.ts';
import { notFound } from '../../errors.ts';

export function toEventObject(e: Event): EventObject {
  let data: unknown = {};
  try {
    data = JSON.parse(e.data);
  } catch {
    data = {};
  }
  return { id: e.id, at: e.at.toISOString(), kind: e.kind, level: e.level, message: e.message, vm: e.vmName, vmId: e.vmId, workerId: e.workerId, actor: e.actor, data };
}

export function eventRoutes(ctx: ApiContext): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.get('/v1/events', {
      config: { role: 'read' },
      schema: { tags: ['events'], summary: 'Fleet-wide events and audit trail, newest first by default, paged', querystring: EventQueryString, response: { 200: EventPage } },
    }, async (req) => {
      const q = req.query;
      let vmId: string | undefined;
      let workerId: string | undefined;
      if (q.vm) {
        vmId = await ctx.vms.idForEvents(q.vm);
        if (!vmId) throw notFound('vm', q.vm);
      }
      if (q.worker) {
        workerId = (await ctx.workers.getByName(q.worker)).id; // 404 names it
      }
      const page = await ctx.events.query({
        limit: q.limit ?? 100,
        order: q.order ?? 'desc',
        ...(q.cursor !== undefined ? { cursor: q.cursor } : {}),
        ...(vmId ? { vmId } : {}),
        ...(workerId ? { workerId } : {}),
        ...(q.kind ? { kind: q.kind } : {}),
        ...(q.actor ? { actor: q.actor } : {}),
      });
      return { events: page.events.map(toEventObject), nextCursor: page.nextCursor };
    });
  };
}
