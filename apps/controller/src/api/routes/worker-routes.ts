import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ApiContext } from '../context.ts';
import { NameParam, WorkerObject } from '../schemas.ts';
import { actorOf } from '../auth-hook.ts';
import { errorResponse } from './route-errors.ts';

export function workerRoutes(ctx: ApiContext): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.get('/v1/workers', {
      config: { role: 'read' },
      schema: { tags: ['workers'], summary: 'List workers with capacity and use', response: { 200: Type.Object({ workers: Type.Array(WorkerObject) }) } },
    }, async () => ({ workers: await ctx.workers.list() }));

    app.get('/v1/workers/:name', {
      config: { role: 'read' },
      schema: { tags: ['workers'], params: NameParam, response: { 200: WorkerObject } },
    }, async (req) => ctx.workers.view(await ctx.workers.getByName(req.params.name)));

    app.post('/v1/workers/:name/drain', {
      config: { role: 'write', idempotency: {} },
      schema: { tags: ['workers'], summary: 'Drain (pause): keep running VMs, place nothing new', params: NameParam, response: { 200: WorkerObject } },
    }, async (req) => ctx.workers.view(await ctx.workers.setPaused(req.params.name, true, actorOf(req))));

    app.post('/v1/workers/:name/resume', {
      config: { role: 'write', idempotency: {} },
      schema: { tags: ['workers'], summary: 'Resume a drained worker', params: NameParam, response: { 200: WorkerObject } },
    }, async (req) => ctx.workers.view(await ctx.workers.setPaused(req.params.name, false, actorOf(req))));

    app.delete('/v1/workers/:name', {
      config: { role: 'admin' },
      schema: {
        tags: ['workers'],
        summary: 'Delete a worker: revokes its credential; its VMs fail and are rescheduled per restart policy',
        description:
          'Refused (409) while the worker is not yet lost (its VMs may still run there and would run twice) or while it holds VMs in state unknown ' +
          '(disconnect policy wait: they may still run on a cut-off host). force=true deletes anyway: only when the host is known to be gone.',
        params: NameParam,
        querystring: Type.Object({ force: Type.Optional(Type.Boolean({ description: 'delete even though its VMs may still run on that host' })) }, { additionalProperties: false }),
        response: { 204: Type.Null(), 409: errorResponse('`conflict`: the worker is not lost yet, or holds VMs in state unknown (force=true deletes anyway)') },
      },
    }, async (req, reply) => {
      await ctx.workers.delete(req.params.name, actorOf(req), { force: req.query.force === true });
      return reply.code(204).send(null);
    });
  };
}
