import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ApiContext } from '../context.ts';
import { NameParam, WorkerObject } from '../schemas.ts';
import { actorOf } from '../auth-hook.ts';

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
      schema: { tags: ['workers'], summary: 'Delete a worker: revokes its credential; its VMs fail and are rescheduled per restart policy', params: NameParam, response: { 204: Type.Null() } },
    }, async (req, reply) => {
      await ctx.workers.delete(req.params.name, actorOf(req));
      return reply.code(204).send(null);
    });
  };
}
