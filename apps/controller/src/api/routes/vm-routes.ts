import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Vm } from '@fleet/db';
import type { ApiContext } from '../context.ts';
import { EventPage, EventQueryString, NameParam, VmCreate, VmListQuery, VmObject, VmUpdate, WatchQuery } from '../schemas.ts';
import { toVmObject } from '../../vms/vm-view.ts';
import { actorOf } from '../auth-hook.ts';
import { startWatch } from '../watch-stream.ts';
import { toEventObject } from './event-routes.ts';
import { notFound } from '../../errors.ts';

export function vmRoutes(ctx: ApiContext): FastifyPluginAsyncTypebox {
  return async (app) => {
    const workerNames = async (): Promise<Map<string, string>> =>
      new Map((await ctx.db.worker.findMany({ select: { id: true, name: true } })).map((w) => [w.id, w.name]));
    const view = async (vm: Vm) => {
      const w = vm.workerId ? await ctx.db.worker.findUnique({ where: { id: vm.workerId }, select: { name: true } }) : null;
      return toVmObject(vm, w?.name ?? null);
    };

    app.post('/v1/vms', {
      config: { role: 'write' },
      schema: { tags: ['vms'], summary: 'Create a VM', body: VmCreate, response: { 201: VmObject } },
    }, async (req, reply) => {
      const vm = await ctx.vms.create(req.body, actorOf(req));
      return reply.code(201).send(toVmObject(vm, null));
    });

    app.get('/v1/vms', {
      config: { role: 'read' },
      schema: {
        tags: ['vms'],
        summary: 'List VMs; with ?watch=true, stream changes as NDJSON',
        querystring: VmListQuery,
        response: { 200: Type.Object({ vms: Type.Array(VmObject) }) },
      },
    }, async (req, reply) => {
      const names = await workerNames();
      let workerId: string | undefined;
      if (req.query.worker) {
        workerId = [...names].find(([, n]) => n === req.query.worker)?.[0];
        if (!workerId) throw notFound('worker', req.query.worker);
      }
      const matches = (vm: Vm) => (!req.query.state || vm.state === req.query.state) && (!workerId || vm.workerId === workerId);
      if (!req.query.watch) {
        const vms = await ctx.vms.list({ ...(req.query.state ? { state: req.query.state } : {}), ...(workerId ? { workerId } : {}) });
        return { vms: vms.map((vm) => toVmObject(vm, vm.workerId ? (names.get(vm.workerId) ?? null) : null)) };
      }
      const { sink, stream } = startWatch(req, reply);
      // Subscribe before listing so no change falls between the two.
      const off = ctx.bus.onVmChange((c) => {
        if (!matches(c.vm) && c.type !== 'DELETED') return;
        void view(c.vm).then((vm) => sink.send({ type: c.type, vm }));
      });
      sink.onClose(off);
      for (const vm of await ctx.vms.list()) if (matches(vm)) sink.send({ type: 'ADDED', vm: toVmObject(vm, vm.workerId ? (names.get(vm.workerId) ?? null) : null) });
      return reply.send(stream as never); // a stream, not the JSON schema's object
    });

    app.get('/v1/vms/:name', {
      config: { role: 'read' },
      schema: { tags: ['vms'], summary: 'Get a VM; with ?watch=true, stream its changes as NDJSON', params: NameParam, querystring: WatchQuery, response: { 200: VmObject } },
    }, async (req, reply) => {
      const vm = await ctx.vms.get(req.params.name);
      if (!req.query.watch) return view(vm);
      const { sink, stream } = startWatch(req, reply);
      const off = ctx.bus.onVmChange((c) => {
        if (c.vm.id !== vm.id) return;
        void view(c.vm).then((v) => sink.send({ type: c.type, vm: v }));
      });
      sink.onClose(off);
      sink.send({ type: 'ADDED', vm: await view(await ctx.vms.get(req.params.name)) });
      return reply.send(stream as never); // a stream, not the JSON schema's object
    });

    app.patch('/v1/vms/:name', {
      config: { role: 'write' },
      schema: { tags: ['vms'], summary: 'Update a VM (image, power state, labels, priority, restart policy; CPUs/memory only while pending)', params: NameParam, body: VmUpdate, response: { 200: VmObject } },
    }, async (req) => view(await ctx.vms.update(req.params.name, req.body, actorOf(req))));

    app.delete('/v1/vms/:name', {
      config: { role: 'write' },
      schema: {
        tags: ['vms'],
        summary: 'Delete a VM: 204 when removed at once, 202 while its worker removes it',
        params: NameParam,
        response: { 202: VmObject, 204: Type.Null() },
      },
    }, async (req, reply) => {
      const vm = await ctx.vms.delete(req.params.name, actorOf(req));
      if (!vm) return reply.code(204).send(null);
      return reply.code(202).send(await view(vm));
    });

    app.get('/v1/vms/:name/events', {
      config: { role: 'read' },
      schema: { tags: ['vms', 'events'], summary: "A VM's events (its log), paged", params: NameParam, querystring: EventQueryString, response: { 200: EventPage } },
    }, async (req) => {
      const vm = await ctx.db.vm.findUnique({ where: { name: req.params.name }, select: { id: true } });
      // A deleted VM's history stays readable by name.
      const vmId = vm?.id ?? (await ctx.db.event.findFirst({ where: { vmName: req.params.name }, orderBy: { id: 'desc' }, select: { vmId: true } }))?.vmId;
      if (!vmId) throw notFound('vm', req.params.name);
      const page = await ctx.events.query({
        vmId,
        limit: req.query.limit ?? 100,
        order: req.query.order ?? 'asc',
        ...(req.query.cursor !== undefined ? { cursor: req.query.cursor } : {}),
        ...(req.query.kind ? { kind: req.query.kind } : {}),
      });
      return { events: page.events.map(toEventObject), nextCursor: page.nextCursor };
    });
  };
}
