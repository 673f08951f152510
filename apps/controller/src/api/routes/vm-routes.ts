import { Readable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Vm } from '@fleet/db';
import type { ApiContext } from '../context.ts';
import { EventPage, NameParam, VmCreate, VmEventQueryString, VmListQuery, VmObject, VmUpdate, VmWatchLine, WatchQuery } from '../schemas.ts';
import { toVmObject } from '../../vms/vm-view.ts';
import { actorOf } from '../auth-hook.ts';
import { idempotencyLink } from '../idempotency.ts';
import { startWatch } from '../watch-stream.ts';
import { toEventObject } from './event-routes.ts';
import { badRequest, notFound } from '../../errors.ts';
import { errorResponse, registryImageErrors } from './route-errors.ts';
import { ndjsonOrJson } from '../watch-stream.ts';

/** The body errors every VM write shares (the generic 400 of openapi-errors.ts, with the MAC rule named). */
const VM_BODY_400 =
  '`invalid_request`: a parameter or body field failed validation (the message names it; a mac that is not six ":"-separated hex octets, multicast, broadcast or all zero says which); `bad_url`: malformed percent-encoding; `invalid_json`: the body is not JSON';

export function vmRoutes(ctx: ApiContext): FastifyPluginAsyncTypebox {
  return async (app) => {
    // Worker names never change (there is no rename), so id → name is cached: a
    // watch stream during a burst of placements must not cost a query per change.
    const nameCache = new Map<string, string>();
    const workerNames = async (): Promise<Map<string, string>> => {
      for (const [id, name] of await ctx.vms.workerNames()) nameCache.set(id, name);
      return nameCache;
    };
    // Counters count only when reported by the worker the VM is placed on.
    const withCounters = (vm: Vm, o: VmObject): VmObject => ({ ...o, networkCounters: ctx.networkCounters?.get(o.id, o.attempt, vm.workerId) ?? null });
    const view = async (vm: Vm) => withCounters(vm, await baseView(vm));
    const vmsWithPassword = () => ctx.vms.idsWithPassword();
    const baseView = async (vm: Vm) => {
      const passwordSet = await ctx.vms.passwordSet(vm.id);
      if (!vm.workerId) return toVmObject(vm, null, passwordSet);
      let name = nameCache.get(vm.workerId);
      if (name === undefined) {
        name = (await ctx.vms.workerNames([vm.workerId])).get(vm.workerId);
        if (name !== undefined) nameCache.set(vm.workerId, name);
      }
      return toVmObject(vm, name ?? null, passwordSet);
    };
    /**
     * One queue per watch stream: the initial snapshot first, then every change
     * in the order it happened, even when a name lookup is needed.
     */
    const orderedSender = (send: (line: unknown) => void) => {
      let chain = Promise.resolve();
      const run = (task: () => Promise<void>) => {
        chain = chain.then(task).catch(() => undefined);
      };
      return { run, change: (type: string, vm: Vm) => run(async () => send({ type, vm: await view(vm) })) };
    };

    app.post('/v1/vms', {
      config: {
        role: 'write',
        // The VM is linked to the request's Idempotency-Key record in its creating transaction;
        // after a crash before the response was stored, a retry gets the VM as it is now.
        idempotency: {
          recover: async (vmId) => {
            const vm = await ctx.vms.getById(vmId);
            return vm ? { statusCode: 201, body: JSON.stringify(await view(vm)) } : null;
          },
        },
      },
      schema: {
        tags: ['vms'],
        summary: 'Create a VM',
        body: VmCreate,
        response: {
          201: VmObject,
          400: errorResponse(`${VM_BODY_400}; \`bad_request\`: a network rule the packet filter cannot parse, or network mode "none" with rules or a mac (there is no NIC to apply them to)`),
          403: errorResponse('`forbidden`: the token lacks the "write" role; `registry_not_allowed`: the image\'s registry is not one this fleet uses (--registries known)'),
          409: errorResponse('`conflict`: a VM with this name exists; with Idempotency-Key also `idempotency_key_in_flight`'),
          ...registryImageErrors,
        },
      },
    }, async (req, reply) => {
      const link = idempotencyLink(req);
      const vm = await ctx.vms.create(req.body, actorOf(req), link ? { inTransaction: (tx, created) => link(tx, created.id) } : {});
      return reply.code(201).send(toVmObject(vm, null, req.body.password !== undefined));
    });

    app.get('/v1/vms', {
      config: { role: 'read' },
      schema: {
        tags: ['vms'],
        summary: 'List VMs; with ?watch=true, stream changes as NDJSON',
        querystring: VmListQuery,
        response: { 200: ndjsonOrJson(Type.Object({ vms: Type.Array(VmObject) }), VmWatchLine, 'the VMs; with ?watch=true an NDJSON stream of watch lines (ADDED for each VM first, then changes)') },
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
        // Streamed in batches (issue 20): with 10,000 VMs the whole array and its ~10 MB JSON
        // string were a ~40 MiB peak of the controller's heap. The bytes are the ones the response
        // schema's serializer made for the whole list: each VM goes through that serializer for
        // VmObject. The first batch is read before the response starts, so that a failing
        // database still gets its error answer; a failure later cuts the response short.
        const batches = ctx.vms.listInBatches({ ...(req.query.state ? { state: req.query.state } : {}), ...(workerId ? { workerId } : {}) });
        const [withPassword, first] = await Promise.all([vmsWithPassword(), batches.next()]);
        const serialize = reply.compileSerializationSchema(VmObject);
        const view = (vm: Vm) => serialize(withCounters(vm, toVmObject(vm, vm.workerId ? (names.get(vm.workerId) ?? null) : null, withPassword.has(vm.id))));
        async function* body(): AsyncGenerator<string> {
          yield '{"vms":[';
          let sep = '';
          for (let batch = first; !batch.done; batch = await batches.next()) {
            let chunk = '';
            for (const vm of batch.value) {
              chunk += sep + view(vm);
              sep = ',';
            }
            yield chunk;
          }
          yield ']}';
        }
        reply.type('application/json; charset=utf-8');
        return reply.send(Readable.from(body()) as never); // a stream, not the JSON schema's object
      }
      const { sink, stream } = startWatch(req, reply);
      const out = orderedSender((line) => sink.send(line));
      // Snapshot queued first, subscription right after: a change during the
      // snapshot query is sent after it (at worst twice), never lost or early.
      out.run(async () => {
        const withPassword = await vmsWithPassword();
        for (const vm of await ctx.vms.list()) if (matches(vm)) sink.send({ type: 'ADDED', vm: toVmObject(vm, vm.workerId ? (names.get(vm.workerId) ?? null) : null, withPassword.has(vm.id)) });
      });
      const off = ctx.bus.onVmChange((c) => {
        if (matches(c.vm) || c.type === 'DELETED') out.change(c.type, c.vm);
      });
      sink.onClose(off);
      return reply.send(stream as never); // a stream, not the JSON schema's object
    });

    app.get('/v1/vms/:name', {
      config: { role: 'read' },
      schema: {
        tags: ['vms'],
        summary: 'Get a VM; with ?watch=true, stream its changes as NDJSON',
        params: NameParam,
        querystring: WatchQuery,
        response: { 200: ndjsonOrJson(VmObject, VmWatchLine, 'the VM (ETag: its version, for If-Match); with ?watch=true an NDJSON stream of watch lines (ADDED first, then its changes)') },
      },
    }, async (req, reply) => {
      const vm = await ctx.vms.get(req.params.name);
      if (!req.query.watch) {
        // The VM's version for a later `PATCH` with If-Match (read-modify-write without lost updates).
        reply.header('etag', vmEtag(vm));
        return view(vm);
      }
      const { sink, stream } = startWatch(req, reply);
      const out = orderedSender((line) => sink.send(line));
      out.run(async () => {
        const current = await ctx.vms.getById(vm.id);
        if (current) sink.send({ type: 'ADDED', vm: await view(current) });
      });
      const off = ctx.bus.onVmChange((c) => {
        if (c.vm.id === vm.id) out.change(c.type, c.vm);
      });
      sink.onClose(off);
      return reply.send(stream as never); // a stream, not the JSON schema's object
    });

    app.patch('/v1/vms/:name', {
      config: { role: 'write' },
      schema: {
        tags: ['vms'],
        summary: 'Update a VM (image, power state, labels, priority, restart policy; CPUs/memory only while pending; network mode, rules and MAC only while stopped or pending)',
        params: NameParam,
        body: VmUpdate,
        headers: Type.Object({ 'if-match': Type.Optional(Type.String({ description: 'the ETag of GET /v1/vms/{name}: refuse the change (412) if the VM changed since' })) }),
        response: {
          200: VmObject,
          400: errorResponse(`${VM_BODY_400}; \`bad_request\`: a network rule the packet filter cannot parse, or network mode "none" with rules or a mac, given or already stored (the message says how to drop them); If-Match that is not an ETag`),
          403: errorResponse('`forbidden`: the token lacks the "write" role; `registry_not_allowed`: the new image\'s registry is not one this fleet uses'),
          409: errorResponse('`conflict`: the VM is being deleted or pushed, or CPUs / memory / selector change while it is placed on a worker, or the network mode, rules or MAC change while it is placed and not stopped; for a stopped VM, its worker does not offer the new network mode, has no free address on that network, or another instance there holds the new MAC'),
          412: errorResponse('`precondition_failed`: If-Match does not match: the VM changed since it was read (read it again and retry)'),
          ...registryImageErrors,
        },
      },
    }, async (req, reply) => {
      const ifMatch = req.headers['if-match'];
      const expected = typeof ifMatch === 'string' ? parseVmEtag(ifMatch) : undefined;
      if (expected === null) throw badRequest(`If-Match must be the ETag of GET /v1/vms/${req.params.name} (a quoted version such as "2025-01-01T00:00:00.000Z"), got ${JSON.stringify(String(ifMatch).slice(0, 80))}`);
      const vm = await ctx.vms.update(req.params.name, req.body, actorOf(req), expected !== undefined ? { ifVersion: expected } : {});
      reply.header('etag', vmEtag(vm));
      return view(vm);
    });

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
      schema: { tags: ['vms', 'events'], summary: "A VM's events (its log), oldest first by default, paged", params: NameParam, querystring: VmEventQueryString, response: { 200: EventPage } },
    }, async (req) => {
      // A deleted VM's history stays readable by name.
      const vmId = await ctx.vms.idForEvents(req.params.name);
      if (!vmId) throw notFound('vm', req.params.name);
      const page = await ctx.events.query({
        vmId,
        limit: req.query.limit ?? 100,
        order: req.query.order ?? 'asc',
        ...(req.query.cursor !== undefined ? { cursor: req.query.cursor } : {}),
        ...(req.query.kind ? { kind: req.query.kind } : {}),
        ...(req.query.actor ? { actor: req.query.actor } : {}),
      });
      return { events: page.events.map(toEventObject), nextCursor: page.nextCursor };
    });
  };
}

/** A VM's version is its updatedAt (every write moves it). */
export function vmEtag(vm: Vm): string {
  return `"${vm.updatedAt.toISOString()}"`;
}

/** The version in an If-Match header, or null when malformed. */
export function parseVmEtag(header: string): Date | null {
  const m = /^\s*(?:W\/)?"([^"]{1,40})"\s*$/.exec(header);
  if (!m) return null;
  const at = new Date(m[1]!);
  return Number.isNaN(at.getTime()) ? null : at;
}

