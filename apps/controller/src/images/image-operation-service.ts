// Image operations asked of workers (issue 15): prefetch (warm a pool's caches ahead of a burst),
// delete (drop an image from one worker's cache) and push (a stopped VM's disk becomes an image in
// a registry). Level-triggered like VMs: an operation stays in its worker's DesiredState while it
// is pending or running, and leaves it once the worker reports it finished (a worker that restarts
// meanwhile simply runs it again, which is harmless). Terminal states never change again.
//
// Creating one marks the worker's desired state changed on the FleetBus: the controller holding
// the worker's stream pushes a fresh DesiredState (the ClusterBus relays the change to the other
// controllers, so this works from any controller).
import { randomUUID } from 'node:crypto';
import { directSql, type FleetDb, type ImageOperation as ImageOperationRow, type Prisma, type Worker } from '@fleet/db';
import type { ImageOperation as ImageOperationProto, RegistryAccess } from '@fleet/proto';
import { isRegistryReference, OciError, parseImageReference, type ImageReference } from '@fleet/oci';
import { detectFormat, parseImageManifest } from '@fleet/vm-image';
import type { EventLog, NewEvent } from '../events/event-log.ts';
import type { FleetBus } from '../fleet-bus.ts';
import { badRequest, conflict, FleetError, notFound } from '../errors.ts';
import { parseLabels } from '../vms/vm-view.ts';
import { parseDrivers } from '../workers/worker-views.ts';
import type { ImageResolver } from './image-resolver.ts';
import type { OperationReport } from './image-input.ts';
import { toImageOperationView, type ImageOperationView } from './image-views.ts';
import type { RegistryService } from './registry-service.ts';
import type { WorkerImageService } from './worker-image-service.ts';
import { hasImageOperationIn } from '../storage/image-operation-rows.ts';

export type ImageFormat = 'tart' | 'fleet-qemu';
export type OperationKind = 'prefetch' | 'delete' | 'push';
export type OperationState = 'pending' | 'running' | 'succeeded' | 'failed';
export const ACTIVE_STATES: readonly OperationState[] = ['pending', 'running'];
const TERMINAL: ReadonlySet<string> = new Set(['succeeded', 'failed']);

/** The driver a worker needs to run (and so to cache) an image of each format. */
export const DRIVER_FOR_FORMAT: Record<ImageFormat, string> = { tart: 'vz', 'fleet-qemu': 'qemu' };

/** How many operations one DesiredState carries at most (the oldest first). */
export const MAX_OPERATIONS_PER_PUSH = 100;
/** Finished operations are kept this long (the leader purges older ones). */
export const FINISHED_RETENTION_MS = 7 * 24 * 3600_000;

export interface PrefetchResult {
  reference: string;
  digest: string;
  format: ImageFormat;
  operations: ImageOperationView[];
}

export interface ImageOperationServiceOptions {
  /** The format of a manifest (default: @fleet/vm-image's detectFormat). */
  formatOf?: (manifestJson: unknown, mediaType: string) => ImageFormat;
}

function defaultFormatOf(json: unknown): ImageFormat {
  return detectFormat(parseImageManifest(json));
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

export class ImageOperationService {
  private readonly formatOf: (manifestJson: unknown, mediaType: string) => ImageFormat;

  constructor(
    private readonly db: FleetDb,
    private readonly events: EventLog,
    private readonly bus: FleetBus,
    private readonly registries: Pick<RegistryService, 'accessForHosts'> & Partial<Pick<RegistryService, 'assertAllowed'>>,
    private readonly resolver: Pick<ImageResolver, 'resolveManifest'>,
    private readonly inventory: Pick<WorkerImageService, 'get'>,
    opts: ImageOperationServiceOptions = {},
  ) {
    this.formatOf = opts.formatOf ?? defaultFormatOf;
  }

  // ---------------------------------------------------------------- operator requests

  /**
   * Pull `reference` into the cache of every online, not drained worker that can run it (its
   * format's driver) and carries every `selector` label. One operation per worker; a worker with
   * the same prefetch still under way keeps that one.
   */
  async prefetch(reference: string, selector: Record<string, string>, actor: string): Promise<PrefetchResult> {
    if (!isRegistryReference(reference)) {
      throw badRequest(`cannot prefetch ${JSON.stringify(reference)}: not a registry reference; write it as HOST[:PORT]/REPOSITORY[:TAG] or …@sha256:DIGEST (e.g. 127.0.0.1:5000/fleet/guest:1)`);
    }
    const m = await this.resolver.resolveManifest(reference);
    let format: ImageFormat;
    try {
      format = this.formatOf(m.json, m.mediaType);
    } catch (err) {
      throw new FleetError(422, 'image_unsupported', `cannot prefetch ${reference}: ${err instanceof Error ? err.message : String(err)}`, { reference, digest: m.digest });
    }
    const driver = DRIVER_FOR_FORMAT[format];
    const workers = await this.db.worker.findMany({ orderBy: { name: 'asc' } });
    const eligible: Worker[] = [];
    const why: string[] = [];
    for (const w of workers) {
      const labels = parseLabels(w.labels);
      const missing = Object.entries(selector).filter(([k, v]) => labels[k] !== v);
      if (missing.length > 0) why.push(`${w.name}: lacks ${missing.map(([k, v]) => `${k}=${v}`).join(',')}`);
      else if (!parseDrivers(w.drivers).includes(driver)) why.push(`${w.name}: no ${driver} driver (has ${parseDrivers(w.drivers).join(', ') || 'none'})`);
      else if (w.status !== 'online') why.push(`${w.name}: offline`);
      else if (w.paused) why.push(`${w.name}: drained`);
      else eligible.push(w);
    }
    if (eligible.length === 0) {
      const sel = Object.entries(selector).map(([k, v]) => `${k}=${v}`).join(',');
      const listed = why.slice(0, 20).join('; ') + (why.length > 20 ? `; and ${why.length - 20} more` : '');
      throw new FleetError(
        422,
        'no_eligible_worker',
        `no worker can prefetch ${reference} (a ${format} image needs an online, not drained worker with the ${driver} driver${sel ? ` and labels ${sel}` : ''}): ` +
          (workers.length === 0 ? 'no worker is enrolled' : listed),
        { reference, digest: m.digest, format, driver },
      );
    }
    const ids = eligible.map((w) => w.id);
    const created: { id: string; workerId: string }[] = [];
    const ops = await this.db.$transaction(async (tx) => {
      const active = await tx.imageOperation.findMany({ where: { kind: 'prefetch', digest: m.digest, workerId: { in: ids }, state: { in: [...ACTIVE_STATES] } } });
      const have = new Set(active.map((o) => o.workerId));
      const data = eligible.filter((w) => !have.has(w.id)).map((w) => ({ id: randomUUID(), kind: 'prefetch', workerId: w.id, reference: m.pinned, digest: m.digest, createdBy: actor }));
      if (data.length > 0) await tx.imageOperation.createMany({ data });
      created.push(...data);
      return tx.imageOperation.findMany({ where: { id: { in: [...active.map((o) => o.id), ...data.map((d) => d.id)] } }, orderBy: { createdAt: 'asc' } });
    });
    const names = new Map(eligible.map((w) => [w.id, w.name]));
    await this.events.append([
      {
        kind: 'image.prefetch-requested',
        message: `prefetch of ${reference} (${m.digest}, ${format}) on ${plural(eligible.length, 'worker')} requested by ${actor}: ${eligible.map((w) => w.name).join(', ')}`,
        actor,
        data: { reference, digest: m.digest, format, workers: eligible.map((w) => w.name), selector },
      },
    ]);
    for (const c of created) this.bus.desiredStateChanged(c.workerId);
    return { reference, digest: m.digest, format, operations: ops.map((o) => toImageOperationView(o, names.get(o.workerId) ?? o.workerId, null)) };
  }

  /** Remove an image from one worker's cache. Refused (409) while a VM there uses it. */
  async deleteImage(workerName: string, digest: string, actor: string): Promise<ImageOperationView> {
    const w = await this.db.worker.findUnique({ where: { name: workerName } });
    if (!w) throw notFound('worker', workerName);
    const image = await this.inventory.get(w.id, w.name, digest);
    if (image.inUse > 0) {
      throw conflict(`image ${digest} is in use on worker ${w.name} by ${plural(image.inUse, 'VM instance')}: delete those VMs (or move them off the worker) first`, { worker: w.name, digest, inUse: image.inUse });
    }
    const vms = await this.db.vm.findMany({ where: { workerId: w.id, imageDigest: digest }, select: { name: true }, orderBy: { name: 'asc' }, take: 10 });
    if (vms.length > 0) {
      throw conflict(`image ${digest} belongs to VMs placed on worker ${w.name} (${vms.map((v) => v.name).join(', ')}): delete those VMs first`, { worker: w.name, digest, vms: vms.map((v) => v.name) });
    }
    const active = await this.db.imageOperation.findFirst({ where: { kind: 'delete', workerId: w.id, digest, state: { in: [...ACTIVE_STATES] } } });
    if (active) return toImageOperationView(active, w.name, null);
    const op = await this.db.imageOperation.create({ data: { id: randomUUID(), kind: 'delete', workerId: w.id, reference: image.reference, digest, createdBy: actor } });
    await this.events.append([{ kind: 'image.delete-requested', message: `deletion of image ${image.reference || digest} from worker ${w.name} requested by ${actor}`, workerId: w.id, actor, data: { digest } }]);
    this.bus.desiredStateChanged(w.id);
    return toImageOperationView(op, w.name, null);
  }

  /**
   * Push a stopped VM's disk to `reference` (registry/repository[:tag]) from the worker it is
   * placed on. The VM must stay stopped until the push finishes.
   */
  async push(vmName: string, reference: string, actor: string): Promise<ImageOperationView> {
    if (!isRegistryReference(reference)) throw badRequest(`cannot push to ${JSON.stringify(reference)}: not a registry reference; write it as HOST[:PORT]/REPOSITORY:TAG (e.g. 127.0.0.1:5000/fleet/guest:2)`);
    let ref: ImageReference;
    try {
      ref = parseImageReference(reference);
    } catch (err) {
      throw badRequest(err instanceof OciError ? err.message : String(err));
    }
    if (ref.digest) throw badRequest(`cannot push to ${reference}: a push names a tag (HOST[:PORT]/REPOSITORY:TAG), not a digest; the digest is what the push produces`);
    const target = `${ref.registry}/${ref.repository}:${ref.tag ?? 'latest'}`;
    await this.registries.assertAllowed?.(ref.registry);
    const vm = await this.db.vm.findUnique({ where: { name: vmName }, include: { worker: { select: { name: true } } } });
    if (!vm) throw notFound('VM', vmName);
    if (!vm.workerId || !vm.worker) {
      throw conflict(`VM ${vmName} has no disk on any worker yet (state ${vm.state}): a push needs a VM that has been placed and started once, then stopped (fleet vm stop ${vmName})`, { vm: vmName, state: vm.state });
    }
    if (vm.state !== 'stopped' || vm.desiredPower !== 'stopped') {
      const doing = vm.desiredPower === 'stopped' ? `is still ${vm.state}: wait until it is stopped` : `is ${vm.state}: stop it first (fleet vm stop ${vmName} --wait)`;
      throw conflict(`VM ${vmName} ${doing}, then push; only a stopped VM's disk is consistent`, { vm: vmName, state: vm.state, powerState: vm.desiredPower });
    }
    const busy = await this.db.imageOperation.findFirst({ where: { kind: 'push', vmId: vm.id, state: { in: [...ACTIVE_STATES] } } });
    if (busy) throw conflict(`VM ${vmName} is already being pushed to ${busy.reference} (operation ${busy.id}); wait for it to finish (GET /v1/image-operations/${busy.id})`, { vm: vmName, operation: busy.id });
    const op = await this.db.imageOperation.create({ data: { id: randomUUID(), kind: 'push', workerId: vm.workerId, vmId: vm.id, reference: target, createdBy: actor } });
    await this.events.append([
      { kind: 'image.push-requested', message: `push of VM ${vmName} (attempt ${vm.attempt}) to ${target} from worker ${vm.worker.name} requested by ${actor}`, vmId: vm.id, vmName, workerId: vm.workerId, actor, data: { reference: target, operation: op.id } },
    ]);
    this.bus.desiredStateChanged(vm.workerId);
    return toImageOperationView(op, vm.worker.name, vm.name);
  }

  /** True while a push of this VM is pending or running (its VM must not start meanwhile). */
  async pushInProgress(vmId: string): Promise<ImageOperationRow | null> {
    return this.db.imageOperation.findFirst({ where: { kind: 'push', vmId, state: { in: [...ACTIVE_STATES] } } });
  }

  // ---------------------------------------------------------------- the worker's side

  /**
   * The operations in the worker's DesiredState: pending and running ones, oldest first, with the
   * registry access they need. One indexed probe in plain SQL when there are none (most pushes).
   */
  async pendingFor(workerId: string): Promise<ImageOperationProto[]> {
    // Most pushes find none: a cheap probe first (issue 20).
    if (!(await hasImageOperationIn(directSql(this.db), workerId, ACTIVE_STATES))) return [];
    const ops = await this.db.imageOperation.findMany({
      where: { workerId, state: { in: [...ACTIVE_STATES] } },
      orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
      take: MAX_OPERATIONS_PER_PUSH,
    });
    if (ops.length === 0) return [];
    const registryOf = new Map<string, string>();
    for (const op of ops) {
      if (op.kind !== 'prefetch' && op.kind !== 'push') continue;
      try {
        registryOf.set(op.id, parseImageReference(op.reference).registry);
      } catch {
        // stored by us after validation; a row that does not parse is failed below
      }
    }
    const access = await this.registries.accessForHosts(new Set(registryOf.values()));
    const pushVmIds = ops.filter((o) => o.kind === 'push' && o.vmId).map((o) => o.vmId!);
    const vms = pushVmIds.length ? new Map((await this.db.vm.findMany({ where: { id: { in: pushVmIds } }, select: { id: true, name: true, attempt: true, workerId: true, scheduledAt: true } })).map((v) => [v.id, v])) : new Map();
    const out: ImageOperationProto[] = [];
    const stale: { op: ImageOperationRow; why: string }[] = [];
    for (const op of ops) {
      const registry = registryOf.get(op.id);
      const acc: RegistryAccess | undefined = registry !== undefined ? access.get(registry) : undefined;
      if (op.kind === 'delete') out.push({ id: op.id, delete: { digest: op.digest } });
      else if (op.kind === 'prefetch' && acc) out.push({ id: op.id, prefetch: { pull: { reference: op.reference, access: acc } } });
      else if (op.kind === 'push' && acc && op.vmId) {
        const vm = vms.get(op.vmId);
        // The attempt whose disk was asked for: the VM must still be on this worker, not re-placed since.
        if (!vm) stale.push({ op, why: 'the VM was deleted before the push started' });
        else if (vm.workerId !== workerId) stale.push({ op, why: `VM ${vm.name} left the worker before the push started` });
        else if (op.state === 'pending' && vm.scheduledAt && vm.scheduledAt > op.createdAt) stale.push({ op, why: `VM ${vm.name} was placed again (attempt ${vm.attempt}) after the push was requested` });
        else out.push({ id: op.id, push: { vmId: vm.id, attempt: vm.attempt, reference: op.reference, access: acc } });
      } else stale.push({ op, why: `malformed ${op.kind} operation` });
    }
    for (const s of stale) await this.finish(s.op, { state: 'failed', message: `not started: ${s.why}` }, null);
    return out;
  }

  /**
   * What the worker says about one of its operations. Operations of other workers, unknown ids and
   * reports on finished operations are ignored (returns false).
   */
  async report(workerId: string, r: OperationReport, workerName?: string): Promise<boolean> {
    const op = await this.db.imageOperation.findUnique({ where: { id: r.id } });
    if (!op || op.workerId !== workerId || TERMINAL.has(op.state)) return false;
    if (r.state === 'running') {
      const { count } = await this.db.imageOperation.updateMany({
        where: { id: op.id, workerId, state: { in: [...ACTIVE_STATES] } },
        data: { state: 'running', bytesDone: r.bytesDone, bytesTotal: r.bytesTotal, ...(r.message ? { message: r.message } : {}), ...(!op.digest && r.digest ? { digest: r.digest } : {}) },
      });
      return count > 0;
    }
    return this.finish(op, r, workerName ?? null);
  }

  private async finish(op: ImageOperationRow, r: Pick<OperationReport, 'state' | 'message'> & Partial<OperationReport>, workerName: string | null): Promise<boolean> {
    const failed = r.state === 'failed';
    const digest = op.digest || r.digest || '';
    const data: Prisma.ImageOperationUpdateManyMutationInput = {
      state: r.state,
      message: r.message || (failed ? `${op.kind} failed (the worker gave no reason)` : ''),
      ...(r.bytesTotal !== undefined && r.bytesTotal > 0n ? { bytesDone: r.bytesDone ?? r.bytesTotal, bytesTotal: r.bytesTotal } : {}),
      ...(!op.digest && digest ? { digest } : {}),
    };
    const name = workerName ?? (await this.db.worker.findUnique({ where: { id: op.workerId }, select: { name: true } }))?.name ?? op.workerId;
    const vm = op.vmId ? await this.db.vm.findUnique({ where: { id: op.vmId }, select: { name: true } }) : null;
    const what =
      op.kind === 'prefetch' ? `prefetch of ${op.reference} on worker ${name}` : op.kind === 'delete' ? `deletion of image ${op.reference || op.digest} from worker ${name}` : `push of VM ${vm?.name ?? op.vmId} to ${op.reference}${digest ? ` (${digest})` : ''} from worker ${name}`;
    const event: NewEvent = {
      kind: `image.${op.kind}`,
      level: failed ? 'error' : 'info',
      message: `${what} ${failed ? 'failed' : 'succeeded'}${data.message ? `: ${String(data.message)}` : ''}`,
      workerId: op.workerId,
      vmId: op.vmId,
      vmName: vm?.name ?? null,
      actor: workerName ? `worker:${workerName}` : 'controller',
      data: { operation: op.id, reference: op.reference, digest, state: r.state },
    };
    const done = await this.db.$transaction(async (tx) => {
      const { count } = await tx.imageOperation.updateMany({ where: { id: op.id, state: { in: [...ACTIVE_STATES] } }, data });
      if (count === 0) return false;
      await this.events.append([event], tx);
      return true;
    });
    if (done) {
      this.events.publish([event]);
      // The worker may forget it now: the next DesiredState no longer lists it.
      this.bus.desiredStateChanged(op.workerId);
    }
    return done;
  }

  // ---------------------------------------------------------------- reads and retention

  async get(id: string): Promise<ImageOperationView> {
    const op = await this.db.imageOperation.findUnique({ where: { id }, include: { worker: { select: { name: true } } } });
    if (!op) throw notFound('image operation', id);
    const vm = op.vmId ? await this.db.vm.findUnique({ where: { id: op.vmId }, select: { name: true } }) : null;
    return toImageOperationView(op, op.worker.name, vm?.name ?? null);
  }

  /** Newest first, at most `limit` (default 500). */
  async list(q: { worker?: string; state?: string; limit?: number } = {}): Promise<ImageOperationView[]> {
    let workerId: string | undefined;
    if (q.worker) {
      const w = await this.db.worker.findUnique({ where: { name: q.worker }, select: { id: true } });
      if (!w) throw notFound('worker', q.worker);
      workerId = w.id;
    }
    const ops = await this.db.imageOperation.findMany({
      where: { ...(workerId ? { workerId } : {}), ...(q.state ? { state: q.state } : {}) },
      include: { worker: { select: { name: true } } },
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: q.limit ?? 500,
    });
    const vmIds = [...new Set(ops.map((o) => o.vmId).filter((id): id is string => id !== null))];
    const vmNames = vmIds.length ? new Map((await this.db.vm.findMany({ where: { id: { in: vmIds } }, select: { id: true, name: true } })).map((v) => [v.id, v.name])) : new Map<string, string>();
    return ops.map((o) => toImageOperationView(o, o.worker.name, o.vmId ? (vmNames.get(o.vmId) ?? null) : null));
  }

  /** Deletes finished operations created before `olderThan` (the leader's retention loop). */
  async purgeFinished(olderThan: Date = new Date(Date.now() - FINISHED_RETENTION_MS)): Promise<number> {
    const { count } = await this.db.imageOperation.deleteMany({ where: { state: { in: ['succeeded', 'failed'] }, createdAt: { lt: olderThan } } });
    return count;
  }
}
