// Everything that changes a VM: operator requests (create / update / delete),
// the scheduler's placements, and what workers report. Rules that hold here:
//  - a worker's resources are held by an Allocation per (vm, attempt) and freed
//    only when that worker confirms the instance is GONE (or the worker is deleted);
//  - deletes always win: a deleting VM never goes back, and disappears once no
//    worker holds anything for it;
//  - every state transition is written with an event in the same transaction.
import { directSql, directSqlIn, insertRows, type DirectSql, type DirectTx, type FleetDb, type Prisma, type Vm } from '@fleet/db';
import type { EventLog, NewEvent } from '../events/event-log.ts';
import type { FleetBus } from '../fleet-bus.ts';
import { ConcurrentChangeError, retryOnConflict } from '../storage/concurrency.ts';
import { GroupCommitter } from '../storage/group-commit.ts';
import { insertVm, newVmRow, readVms, updateVmIf } from '../storage/vm-rows.ts';
import { newRowId } from '../storage/row-ids.ts';
import { lockWorkerNetworks } from '../storage/allocation-rows.ts';
import { bumpNetworkVersion } from '../storage/worker-rows.ts';
import { conflict, FleetError, isUniqueViolation, notFound, preconditionFailed } from '../errors.ts';
import type { VmCreate, VmUpdate } from '../api/schemas.ts';
import { checkNetworkMode, normalizeNetwork } from './network-policy.ts';
import { networkModeOf, parseNetwork, type NetworkPolicy } from './vm-view.ts';
import { normalizeMac, type NetworkMode } from '@fleet/api';
import { offeredModes, offersMode, parseWorkerNetworks, poolOf } from '../workers/worker-networks.ts';
import { DEFAULT_GUEST_USER, generateVmKeyPair } from '../sessions/vm-access.ts';
import type { VmSecrets } from '../secrets/vm-secrets.ts';
import {
  restartDelayMs,
  shouldRestart,
  stateFromWorkerPhase,
  type RestartPolicy,
  type VmState,
  type WorkerPhase,
  SUSPECTABLE_STATES,
  disconnectPolicyOf,
} from './lifecycle.ts';
import type { Metrics } from '../observability/metrics.ts';

type Tx = Prisma.TransactionClient;
type Fence = (tx: Tx) => Promise<void>;

/** States in which a VM is part of its worker's desired set. */
export const PLACED_STATES: VmState[] = ['scheduled', 'starting', 'running', 'stopping', 'stopped', 'unknown'];

export interface ReportedInstance {
  vmId: string;
  attempt: number;
  phase: WorkerPhase;
  observedGeneration: number;
  ip: string;
  mac: string;
  message: string;
  /** Issue 15: set while the worker pulls the instance's image. */
  pull?: { bytesDone: number; bytesTotal: number } | null;
}

interface Change {
  vm: Vm;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
}

/** What one worker's reports changed, applied once their group committed. */
interface ReportOutcome {
  changes: Change[];
  events: NewEvent[];
  dirtyWorkers: Set<string>;
  scheduleNeeded: boolean;
  /** VMs that began to run (start latency metric). */
  started: Vm[];
}

/** A registry image must suit the VM: its runtime and guest OS (when the image says them). */
function imageMatches(name: string, image: string, resolved: { driver?: string; os?: string }, vm: { os: string; driver: string }): void {
  if (resolved.driver && vm.driver && vm.driver !== resolved.driver) {
    throw new FleetError(422, 'image_mismatch', `vm "${name}": ${image} runs on the ${resolved.driver} driver, not ${vm.driver}`, { image, driver: resolved.driver });
  }
  if (resolved.os && vm.os !== resolved.os) {
    throw new FleetError(422, 'image_mismatch', `vm "${name}": ${image} is a ${resolved.os} image, not ${vm.os} (leave --os out to take the image's)`, { image, os: resolved.os });
  }
}

export class VmService {
  /**
   * Set by the composition root (issue 15): resolves a registry image's tag to the manifest digest
   * every attempt of the VM then runs (images/image-resolver.ts); local names resolve to "".
   */
  resolveImage: (image: string) => Promise<{ imageDigest: string; driver?: string; os?: string }> = async () => ({ imageDigest: '' });
  /** Set by the composition root: the push of this VM's disk still pending or running, if any (its id). */
  pushInProgress: (vmId: string) => Promise<string | null> = async () => null;
  /** How a worker's report reads the VMs it names (plain SQL, issue 20); tests replace it to stage a read that races a change. */
  readReportedVms: (ids: readonly string[]) => Promise<Vm[]> = (ids) => readVms(directSql(this.db), ids);
  /**
   * Creates are group-committed (issue 20): concurrent creates share one transaction (one fsync),
   * each in its own savepoint, and each is acknowledged only after that transaction committed.
   */
  private readonly creates: GroupCommitter<{ vm: Vm; event: NewEvent }>;
  /** Workers' status reports are group-committed too: at scale most transactions are reports. */
  private readonly reports: GroupCommitter<ReportOutcome>;

  constructor(
    private readonly db: FleetDb,
    private readonly events: EventLog,
    private readonly bus: FleetBus,
    private readonly metrics: Metrics,
    /** Seals VM passwords and key pairs written here (secrets at rest). */
    private readonly secrets: VmSecrets,
    private readonly now: () => Date = () => new Date(),
  ) {
    // The group's `vm.created` events go in one multi-row insert (one statement per group, not per create).
    this.creates = new GroupCommitter(db, { afterWrites: (tx, created) => this.events.append(created.map((c) => c.event), tx.raw) });
    this.reports = new GroupCommitter(db, { afterWrites: (tx, outcomes) => this.events.append(outcomes.flatMap((o) => o.events), tx.raw) });
  }

  /** How workers' reports were grouped so far: transactions and reports (logs, tests). */
  get reportCommits(): { readonly groups: number; readonly writes: number; readonly retried: number; readonly prismaGroups: number } {
    return this.reports.stats;
  }

  /** How creates were grouped so far: transactions and creates (logs, tests). */
  get createCommits(): { readonly groups: number; readonly writes: number; readonly retried: number; readonly prismaGroups: number } {
    return this.creates.stats;
  }

  // ---------------------------------------------------------------- reads

  async get(name: string): Promise<Vm> {
    const vm = await this.db.vm.findUnique({ where: { name } });
    if (!vm) throw notFound('vm', name);
    return vm;
  }

  getById(id: string): Promise<Vm | null> {
    return this.db.vm.findUnique({ where: { id } });
  }

  /** The VM of that name, or null (no throw: for callers that answer 404 themselves). */
  findByName(name: string): Promise<Vm | null> {
    return this.db.vm.findUnique({ where: { name } });
  }

  /** The id whose events `name` names: the VM's, or — once it is deleted — the last one that had that name. */
  findById(id: string): Promise<Vm | null> {
    return this.db.vm.findUnique({ where: { id } });
  }

  async idForEvents(name: string): Promise<string | undefined> {
    const vm = await this.db.vm.findUnique({ where: { name }, select: { id: true } });
    if (vm) return vm.id;
    return (await this.db.event.findFirst({ where: { vmName: name }, orderBy: { id: 'desc' }, select: { vmId: true } }))?.vmId ?? undefined;
  }

  count(state: string): Promise<number> {
    return this.db.vm.count({ where: { state } });
  }

  /** Whether sessions may log in with a password (only that ever leaves the database, never the password). */
  async passwordSet(vmId: string): Promise<boolean> {
    return (await this.db.vmAccess.count({ where: { vmId, OR: [{ passwordSealed: { not: null } }, { password: { not: null } }] } })) > 0;
  }

  /** The VMs that have a password. */
  async idsWithPassword(): Promise<Set<string>> {
    return new Set((await this.db.vmAccess.findMany({ where: { OR: [{ passwordSealed: { not: null } }, { password: { not: null } }] }, select: { vmId: true } })).map((a) => a.vmId));
  }

  /** Worker id → name, for views. */
  async workerNames(ids?: readonly string[]): Promise<Map<string, string>> {
    const rows = await this.db.worker.findMany({ ...(ids ? { where: { id: { in: [...ids] } } } : {}), select: { id: true, name: true } });
    return new Map(rows.map((w) => [w.id, w.name]));
  }

  list(filter: { state?: string; workerId?: string } = {}): Promise<Vm[]> {
    return this.db.vm.findMany({
      where: { ...(filter.state ? { state: filter.state } : {}), ...(filter.workerId ? { workerId: filter.workerId } : {}) },
      orderBy: { createdAt: 'asc' },
    });
  }

  /**
   * What list() returns, in the same order, read `batch` rows at a time: the ids first (one
   * small query), then the rows slice by slice, so that a caller streaming them never holds
   * them all (issue 20: 10,000 VMs at once were a ~40 MiB peak of the controller's heap). Not one
   * snapshot: a VM deleted meanwhile, or no longer matching the filter, is left out; one changed
   * meanwhile comes in its newer state.
   */
  async *listInBatches(filter: { state?: string; workerId?: string } = {}, batch = 500): AsyncGenerator<Vm[]> {
    const where = { ...(filter.state ? { state: filter.state } : {}), ...(filter.workerId ? { workerId: filter.workerId } : {}) };
    const ids = (await this.db.vm.findMany({ where, orderBy: { createdAt: 'asc' }, select: { id: true } })).map((v) => v.id);
    for (let i = 0; i < ids.length; i += batch) {
      const slice = ids.slice(i, i + batch);
      const byId = new Map((await this.db.vm.findMany({ where: { ...where, id: { in: slice } } })).map((vm) => [vm.id, vm]));
      yield slice.flatMap((id) => byId.get(id) ?? []);
    }
  }

  // ---------------------------------------------------------------- operator requests

  /** `inTransaction` runs in the creating transaction (the API links an Idempotency-Key record to the VM there). */
  async create(spec: VmCreate, actor: string, opts: { inTransaction?: (sql: DirectSql, vm: Vm) => Promise<unknown> } = {}): Promise<Vm> {
    let vm: Vm;
    let event: NewEvent;
    const id = newRowId(); // time-ordered: storage/row-ids.ts
    // Sealed before the transaction (the row id is the associated data, so it is chosen first).
    let sealed: { publicKey: string } & Awaited<ReturnType<VmSecrets['sealNew']>> | undefined;
    // A registry tag is resolved now, once: every attempt of this VM runs exactly this digest. The
    // image also says which runtime runs it and its guest OS (a macOS guest takes a macOS slot).
    const resolved = await this.resolveImage(spec.image);
    const { imageDigest } = resolved;
    const os = spec.os ?? resolved.os ?? 'linux';
    const driver = spec.driver ?? resolved.driver ?? '';
    imageMatches(spec.name, spec.image, resolved, { os, driver });
    // Issue 18: the mode and the custom MAC (checked for mode "none" before anything is written).
    const network = normalizeNetwork(spec.network);
    const networkMode = spec.network?.mode ?? 'nat';
    const customMac = spec.mac ? normalizeMac(spec.mac) : '';
    checkNetworkMode(networkMode, network, customMac);
    if (spec.password !== undefined) {
      const pair = generateVmKeyPair(spec.name);
      sealed = { publicKey: pair.publicKey, ...(await this.secrets.sealNew(id, pair.privateKey, spec.password)) };
    }
    try {
      // In the next group's transaction: a duplicate name (or a failing inTransaction) fails this
      // create alone (the group is retried with a savepoint per create); it resolves only after
      // the group committed. The callback may run twice (see GroupCommitter.run).
      const committed = await this.creates.run(async (sql) => {
        // Plain SQL (storage/vm-rows.ts), the whole group without Prisma (issue 20).
        const created = newVmRow(
          {
            id,
            name: spec.name,
            state: 'pending',
            reason: 'waiting for the scheduler',
            image: spec.image,
            imageDigest,
            os,
            driver,
            cpus: spec.cpus ?? 2,
            memoryMib: spec.memoryMib ?? 4096,
            diskGib: spec.diskGib ?? 20,
            username: spec.username ?? '',
            labels: JSON.stringify(spec.labels ?? {}),
            selector: JSON.stringify(spec.selector ?? {}),
            network: JSON.stringify(network),
            networkMode,
            customMac,
            priority: spec.priority ?? 0,
            restartPolicy: spec.restartPolicy ?? 'never',
            disconnectPolicy: spec.disconnectPolicy ?? 'reschedule',
            desiredPower: spec.powerState ?? 'running',
            createdBy: actor,
          },
          new Date(), // wall clock, as Prisma's now() and @updatedAt (this.now() may be a test clock)
        );
        await insertVm(sql, created);
        if (sealed) {
          // The access row (key pair + password) exists from the start, in the same transaction.
          await insertRows(sql.raw, sql.provider, 'VmAccess', [{ vmId: created.id, username: created.username || DEFAULT_GUEST_USER, ...sealed, createdAt: created.createdAt }]);
        }
        await opts.inTransaction?.(sql, created);
        // Its event is appended with the group's (afterWrites), in the same transaction.
        return { vm: created, event: vmEvent(created, 'vm.created', `created by ${actor}`, actor) };
      });
      vm = committed.vm;
      event = committed.event;
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`vm "${spec.name}" already exists`);
      throw err;
    }
    this.publish([{ vm, type: 'ADDED' }], [event]);
    this.metrics.vmsCreated.inc();
    // The hint lets the scheduler add this VM to its queue without reloading every pending VM.
    this.bus.scheduleRequested({ created: [vm] });
    return vm;
  }

  /** `ifVersion`: apply only if the VM is still at that version (its updatedAt), else 412. */
  async update(name: string, patch: VmUpdate, actor: string, opts: { ifVersion?: Date } = {}): Promise<Vm> {
    return retryOnConflict(() => this.updateOnce(name, patch, actor, opts));
  }

  private async updateOnce(name: string, patch: VmUpdate, actor: string, opts: { ifVersion?: Date }): Promise<Vm> {
    const vm = await this.get(name);
    const stale = () => preconditionFailed(`vm "${name}" changed since it was read (now at version ${vm.updatedAt.toISOString()}); read it again and retry`, { version: vm.updatedAt.toISOString() });
    if (opts.ifVersion && opts.ifVersion.getTime() !== vm.updatedAt.getTime()) throw stale();
    if (vm.state === 'deleting') throw conflict(`vm "${name}" is being deleted`);
    const placed = PLACED_STATES.includes(vm.state as VmState);
    const resized =
      (patch.cpus !== undefined && patch.cpus !== vm.cpus) || (patch.memoryMib !== undefined && patch.memoryMib !== vm.memoryMib);
    if (placed && resized) {
      throw conflict(`cannot change CPUs or memory of vm "${name}" while it is placed on a worker (state ${vm.state}); stop and recreate it, or change it while pending`);
    }
    if (patch.selector !== undefined && placed) {
      throw conflict(`cannot change the selector of vm "${name}" while it is placed on a worker`);
    }
    // Issue 18: network mode, rules and custom MAC change only while the VM is stopped on its
    // worker (the instance takes them at its next start) or not placed at all.
    const net = nextNetwork(vm, patch);
    if (net.changed) {
      const stoppedThere = vm.state === 'stopped' && vm.desiredPower === 'stopped';
      if (placed && !stoppedThere) {
        throw conflict(`cannot change the network mode, rules or MAC of vm "${name}" while it is ${vm.state} on a worker: stop it first (fleet vm update ${name} --stop, and wait for state stopped), then change it`, { state: vm.state });
      }
    }
    // Checked inside the transaction below (the worker's instances may change until then).
    // Spec fields the worker must apply bump the generation; metadata does not.
    const specChanged =
      (patch.image !== undefined && patch.image !== vm.image) ||
      resized ||
      net.changed ||
      (patch.powerState !== undefined && patch.powerState !== vm.desiredPower);
    // Asking a failed VM to run is how an operator restarts it (whatever its restart policy):
    // back to pending, and the scheduler gives it a new attempt.
    const restart = vm.state === 'failed' && patch.powerState === 'running';
    // Its worker is reading the disk for a push: starting the VM now would change it mid-copy.
    if (patch.powerState === 'running' && vm.desiredPower === 'stopped') {
      const push = await this.pushInProgress(vm.id);
      if (push) throw conflict(`vm "${name}" is being pushed as an image (image operation ${push}); start it once the push has finished (fleet image operations)`);
    }
    // A new registry image is resolved now, like at create (the old digest stays until it commits).
    const resolved = patch.image !== undefined && patch.image !== vm.image ? await this.resolveImage(patch.image) : undefined;
    if (resolved) imageMatches(name, patch.image!, resolved, { os: vm.os, driver: vm.driver });
    const data: Prisma.VmUncheckedUpdateManyInput = {
      ...(restart
        ? { state: 'pending', workerId: null, ip: null, restartAt: null, restartCount: { increment: 1 }, reason: `restart requested by ${actor}: waiting for the scheduler` }
        : {}),
      ...(patch.image !== undefined ? { image: patch.image } : {}),
      ...(resolved ? { imageDigest: resolved.imageDigest } : {}),
      ...(patch.cpus !== undefined ? { cpus: patch.cpus } : {}),
      ...(patch.memoryMib !== undefined ? { memoryMib: patch.memoryMib } : {}),
      ...(patch.labels !== undefined ? { labels: JSON.stringify(patch.labels) } : {}),
      ...(patch.selector !== undefined ? { selector: JSON.stringify(patch.selector) } : {}),
      ...(patch.priority !== undefined ? { priority: patch.priority } : {}),
      ...(patch.restartPolicy !== undefined ? { restartPolicy: patch.restartPolicy } : {}),
      ...(patch.disconnectPolicy !== undefined ? { disconnectPolicy: patch.disconnectPolicy } : {}),
      ...(patch.powerState !== undefined ? { desiredPower: patch.powerState } : {}),
      ...(net.changed ? { networkMode: net.mode, network: JSON.stringify(net.policy), customMac: net.mac } : {}),
      ...(specChanged ? { generation: { increment: 1 } } : {}),
      // Every update moves the version (a password-only change included: If-Match sees it).
      updatedAt: new Date(),
    };
    // The password is a secret: events record only that it was set or removed.
    const { password, ...visible } = patch;
    const events = [
      vmEvent(vm, 'vm.updated', `spec updated by ${actor}: ${Object.keys(patch).join(', ')}`, actor, {
        patch: visible,
        ...(password !== undefined ? { password: password === null ? 'removed' : 'set' } : {}),
      }),
    ];
    if (restart) events.push(vmEvent(vm, 'vm.restart', `failed → pending (restart requested by ${actor})`, actor, { from: 'failed', to: 'pending' }));
    // Sealed outside the transaction; a row created here gets a fresh key pair, sealed too.
    let passwordData: Awaited<ReturnType<VmSecrets['passwordColumns']>> | undefined;
    let createAccess: ({ publicKey: string } & Awaited<ReturnType<VmSecrets['sealNew']>>) | undefined;
    if (password !== undefined) {
      passwordData = await this.secrets.passwordColumns(vm.id, password);
      const pair = generateVmKeyPair(vm.name);
      createAccess = { publicKey: pair.publicKey, ...(await this.secrets.sealNew(vm.id, pair.privateKey, password)) };
    }
    const networkOnWorker = net.changed && placed ? vm.workerId : null;
    const updated = await this.db.$transaction(async (tx) => {
      if (networkOnWorker) {
        // Against the scheduler's placements and other VMs' changes on that worker (they check
        // the same rows): serialised by the worker's network lock (PostgreSQL) or the one writer.
        const sql = directSqlIn(this.db, tx);
        await lockWorkerNetworks(sql, [networkOnWorker]);
        // A scheduler pass that planned with this worker's pools as they were places nothing there.
        await bumpNetworkVersion(sql, networkOnWorker);
        await this.checkNetworkOnWorker(tx, vm, networkOnWorker, net.mode, net.mac);
      }
      if (opts.ifVersion) {
        // Compare-and-set inside the transaction: a write that landed after the read above
        // moved updatedAt, and this matches no row.
        const { count } = await tx.vm.updateMany({ where: { id: vm.id, updatedAt: opts.ifVersion }, data: { updatedAt: new Date() } });
        if (count === 0) throw stale();
      }
      // Decided from the VM as read: if its state or attempt moved meanwhile, decide again.
      const res = await tx.vm.updateMany({ where: { id: vm.id, state: vm.state, attempt: vm.attempt }, data });
      if (res.count === 0) throw new ConcurrentChangeError(`vm ${name}`);
      // The instance of the current attempt holds the new mode's address and the new MAC from now on
      // (the scheduler counts allocations); older attempts' instances keep what they were made with.
      if (net.changed && placed) await tx.allocation.updateMany({ where: { vmId: vm.id, attempt: vm.attempt }, data: { networkMode: net.mode, mac: net.mac } });
      const u = await tx.vm.findUniqueOrThrow({ where: { id: vm.id } });
      if (passwordData && createAccess) {
        await tx.vmAccess.upsert({
          where: { vmId: vm.id },
          create: { vmId: vm.id, username: vm.username || DEFAULT_GUEST_USER, ...createAccess },
          update: passwordData,
        });
      }
      await this.events.append(events, tx);
      return u;
    });
    this.publish([{ vm: updated, type: 'MODIFIED' }], events);
    if (updated.workerId && placed) this.bus.desiredStateChanged(updated.workerId);
    // Pending: the scheduler's queue changed. A placed VM's network changed: the address pools
    // its worker has left changed (the scheduler keeps its views of the workers between passes).
    if (updated.state === 'pending' || networkOnWorker) this.bus.scheduleRequested();
    return updated;
  }

  /**
   * Deletes win over everything. A VM no worker holds is removed at once
   * (returns null); otherwise it becomes `deleting` until its worker confirms.
   */
  async delete(name: string, actor: string): Promise<Vm | null> {
    return retryOnConflict(() => this.deleteOnce(name, actor));
  }

  private async deleteOnce(name: string, actor: string): Promise<Vm | null> {
    const vm = await this.get(name);
    const result = await this.db.$transaction(async (tx) => {
      if (vm.state === 'scheduled' && vm.workerId) {
        // Placed but never sent to its worker (by whichever controller holds its stream): nothing
        // to wait for. The push marks allocations delivered before sending, so one or the other wins.
        await tx.allocation.deleteMany({ where: { vmId: vm.id, attempt: vm.attempt, workerId: vm.workerId, deliveredAt: null } });
      }
      const held = await tx.allocation.count({ where: { vmId: vm.id } });
      if (held === 0) {
        // Only the VM as read (a placement committed meanwhile matches nothing: decide again).
        const res = await tx.vm.deleteMany({ where: { id: vm.id, state: vm.state, attempt: vm.attempt } });
        if (res.count === 0) throw new ConcurrentChangeError(`vm ${name}`);
        const e = vmEvent(vm, 'vm.deleted', `deleted by ${actor}`, actor);
        await this.events.append([e], tx);
        return { vm: null, events: [e], changes: [{ vm, type: 'DELETED' as const }] };
      }
      if (vm.state === 'deleting') return { vm, events: [], changes: [] };
      const res = await tx.vm.updateMany({
        where: { id: vm.id, state: vm.state, attempt: vm.attempt },
        data: { state: 'deleting', reason: `delete requested by ${actor}; waiting for the worker to remove it`, deleteRequestedAt: this.now() },
      });
      if (res.count === 0) throw new ConcurrentChangeError(`vm ${name}`);
      const u = await tx.vm.findUniqueOrThrow({ where: { id: vm.id } });
      const e = vmEvent(vm, 'vm.state', `${vm.state} → deleting (requested by ${actor})`, actor, { from: vm.state, to: 'deleting' });
      await this.events.append([e], tx);
      return { vm: u, events: [e], changes: [{ vm: u, type: 'MODIFIED' as const }] };
    });
    this.publish(result.changes, result.events);
    if (vm.workerId) this.bus.desiredStateChanged(vm.workerId);
    return result.vm;
  }

  // ---------------------------------------------------------------- worker reports

  /** Apply status reports from a worker. Reports about instances the worker no longer should hold are only used to free allocations. */
  async applyWorkerReports(workerId: string, workerName: string, reports: ReportedInstance[]): Promise<void> {
    if (reports.length === 0) return;
    await retryOnConflict(() => this.applyWorkerReportsOnce(workerId, workerName, reports));
  }

  private async applyWorkerReportsOnce(workerId: string, workerName: string, reports: ReportedInstance[]): Promise<void> {
    const ids = [...new Set(reports.map((r) => r.vmId))];
    const read = new Map((await this.readReportedVms(ids)).map((v) => [v.id, v]));
    // Group-committed with other workers' reports (one transaction, one fsync for all of them).
    // The work may run twice (GroupCommitter.run), so it starts from the rows as read each time
    // and its effects outside the database (watchers, metrics, the bus) wait for the commit.
    // Plain SQL (the group without Prisma, issue 20) unless an instance is gone or failed: freeing
    // its allocation, failing or removing its VM still go through Prisma's models (rare paths).
    const needsPrisma = reports.some((r) => {
      if (r.phase === 'VM_PHASE_GONE') return true;
      const vm = read.get(r.vmId);
      return vm !== undefined && vm.workerId === workerId && vm.attempt === r.attempt && stateFromWorkerPhase(vm.state as VmState, r.phase, vm.desiredPower as 'running' | 'stopped')?.state === 'failed';
    });
    const apply = async (tx: Tx | undefined, sql: DirectTx): Promise<ReportOutcome> => {
      const vms = new Map(read);
      const o: ReportOutcome = { changes: [], events: [], dirtyWorkers: new Set(), scheduleNeeded: false, started: [] };
      const { changes, events, dirtyWorkers } = o;
      for (const report of reports) {
        const vm = vms.get(report.vmId);
        const current = vm && vm.workerId === workerId && vm.attempt === report.attempt;
        if (report.phase === 'VM_PHASE_GONE') {
          if (!tx) throw new Error('a report of a gone instance needs the Prisma transaction (needsPrisma)');
          const released = await tx.allocation.deleteMany({ where: { vmId: report.vmId, attempt: report.attempt, workerId } });
          if (released.count > 0) o.scheduleNeeded = true;
          if (!vm) continue;
          if (vm.state === 'deleting') {
            const remaining = await tx.allocation.count({ where: { vmId: vm.id } });
            if (remaining === 0) {
              const res = await tx.vm.deleteMany({ where: { id: vm.id, state: 'deleting' } });
              if (res.count === 0) throw new ConcurrentChangeError(`vm ${vm.name}`);
              events.push(vmEvent(vm, 'vm.deleted', `removed from worker ${workerName}`, `worker:${workerName}`));
              changes.push({ vm, type: 'DELETED' });
              vms.delete(vm.id);
            }
            continue;
          }
          if (current && vm.state !== 'failed' && vm.state !== 'pending') {
            const failed = await this.failInTx(tx, vm, `instance disappeared from worker ${workerName}`, `worker:${workerName}`, events);
            vms.set(vm.id, failed);
            changes.push({ vm: failed, type: 'MODIFIED' });
          }
          continue;
        }
        if (!vm || !current) continue; // an orphan: not in the desired set, the worker will remove it

        const next = stateFromWorkerPhase(vm.state as VmState, report.phase, vm.desiredPower as 'running' | 'stopped');
        // Plain column values only: the updated row is then known without reading it back.
        const data: Partial<Pick<Vm, 'ip' | 'mac' | 'observedGeneration' | 'state' | 'reason' | 'runningAt' | 'pullProgress' | 'updatedAt'>> = {};
        if (report.ip && report.ip !== vm.ip) data.ip = report.ip;
        if (report.mac && report.mac !== vm.mac) data.mac = report.mac;
        if (report.observedGeneration > vm.observedGeneration) data.observedGeneration = report.observedGeneration;
        if (next && next.state === 'failed') {
          if (vm.pullProgress) data.pullProgress = '';
          if (!tx) throw new Error('a report of a failed instance needs the Prisma transaction (needsPrisma)');
          const failed = await this.failInTx(tx, vm, report.message || next.reason || `failed on worker ${workerName}`, `worker:${workerName}`, events, data);
          vms.set(vm.id, failed);
          changes.push({ vm: failed, type: 'MODIFIED' });
          dirtyWorkers.add(workerId); // drop the failed instance from the worker's desired set
          continue;
        }
        if (next) {
          data.state = next.state;
          data.reason = next.reason ?? describeState(next.state, workerName);
          // Running since: the last time it began to run (a restart, a new attempt), not a worker
          // that reports again after being unreachable — the VM ran all along then.
          if (next.state === 'running' && (vm.state !== 'unknown' || !vm.runningAt)) data.runningAt = this.now();
          if (next.state !== 'running' && next.state !== 'starting') data.ip = null;
          events.push(
            vmEvent(vm, 'vm.state', `${vm.state} → ${next.state} on ${workerName}${report.message ? `: ${report.message}` : ''}`, `worker:${workerName}`, {
              from: vm.state,
              to: next.state,
              ip: report.ip || undefined,
            }),
          );
          if (next.state === 'running') o.started.push(vm);
        }
        // Issue 15: while the worker pulls the image, the VM says how far it got ("pulling … 37 %").
        const pull = report.pull && report.pull.bytesTotal >= 0 ? JSON.stringify({ bytesDone: report.pull.bytesDone, bytesTotal: report.pull.bytesTotal }) : '';
        if (pull !== vm.pullProgress) data.pullProgress = pull;
        if (pull && report.message && (data.reason ?? vm.reason) !== report.message) data.reason = report.message;
        if (!pull && vm.pullProgress && !next && vm.reason.startsWith('pulling image ')) data.reason = describeState(vm.state as VmState, workerName);
        if (Object.keys(data).length === 0) continue;
        // The version (updatedAt) is set here rather than by Prisma, so the row after the update
        // is the row as read plus `data`: no read-back per reported VM (issue 20: reports are
        // one of the per-VM statements on the create-to-running path).
        data.updatedAt = new Date(); // wall clock, as Prisma's @updatedAt (this.now() may be a test clock)
        if (!(await updateVmIf(sql, vm, data))) throw new ConcurrentChangeError(`vm ${vm.name}`);
        const updated: Vm = { ...vm, ...data };
        vms.set(vm.id, updated);
        changes.push({ vm: updated, type: 'MODIFIED' });
      }
      return o;
    };
    const outcome = await (needsPrisma ? this.reports.runWithPrisma((tx, sql) => apply(tx, sql)) : this.reports.run((sql) => apply(undefined, sql)));
    // Committed.
    for (const vm of outcome.started) this.metrics.observeStart(vm, this.now());
    this.publish(outcome.changes, outcome.events);
    for (const w of outcome.dirtyWorkers) this.bus.desiredStateChanged(w);
    if (outcome.scheduleNeeded) this.bus.scheduleRequested();
  }

  /**
   * A (re)connected worker said what it really holds. Free what it does not hold,
   * fail VMs it lost, and apply the phases it reported. Returns nothing: the
   * desired state pushed next tells the worker what to stop.
   */
  async reconcileInventory(workerId: string, workerName: string, held: ReportedInstance[]): Promise<void> {
    await retryOnConflict(() => this.reconcileInventoryOnce(workerId, workerName, held));
    await this.applyWorkerReports(workerId, workerName, held.filter((h) => h.phase !== 'VM_PHASE_GONE'));
    this.bus.scheduleRequested();
  }

  private async reconcileInventoryOnce(workerId: string, workerName: string, held: ReportedInstance[]): Promise<void> {
    const heldKeys = new Set(held.map((h) => `${h.vmId}/${h.attempt}`));
    const events: NewEvent[] = [];
    const changes: Change[] = [];
    await this.db.$transaction(async (tx) => {
      const allocations = await tx.allocation.findMany({ where: { workerId } });
      const vmIds = [...new Set(allocations.map((a) => a.vmId))];
      const vms = new Map((await tx.vm.findMany({ where: { OR: [{ id: { in: vmIds } }, { workerId }] } })).map((v) => [v.id, v]));
      for (const a of allocations) {
        if (heldKeys.has(`${a.vmId}/${a.attempt}`)) continue;
        const vm = vms.get(a.vmId);
        // Placed but not yet started: the desired state will start it; keep the slot.
        if (vm && vm.workerId === workerId && vm.attempt === a.attempt && vm.state === 'scheduled') continue;
        await tx.allocation.deleteMany({ where: { id: a.id } });
      }
      for (const vm of vms.values()) {
        if (vm.workerId !== workerId || heldKeys.has(`${vm.id}/${vm.attempt}`)) continue;
        if (['starting', 'running', 'stopping', 'stopped', 'unknown'].includes(vm.state)) {
          const failed = await this.failInTx(tx, vm, `worker ${workerName} reconnected without this VM (instance lost)`, `worker:${workerName}`, events);
          changes.push({ vm: failed, type: 'MODIFIED' });
        }
      }
      await this.removeSettledDeletes(tx, events, changes);
      await this.events.append(events, tx);
    });
    this.publish(changes, events);
  }

  /**
   * The worker cannot be reached (stream lost, heartbeats missing): its live VMs become `unknown`.
   * Nothing is re-placed here — the attempt is current and may well be running. Returns how many changed.
   */
  async markWorkerUnreachable(workerId: string, reason: string, fence?: Fence): Promise<number> {
    const events: NewEvent[] = [];
    const changes: Change[] = [];
    await this.db.$transaction(async (tx) => {
      await fence?.(tx);
      const vms = await tx.vm.findMany({ where: { workerId, state: { in: [...SUSPECTABLE_STATES] } } });
      for (const vm of vms) {
        const res = await tx.vm.updateMany({ where: { id: vm.id, state: vm.state, attempt: vm.attempt }, data: { state: 'unknown', reason } });
        if (res.count === 0) continue;
        const e = vmEvent(vm, 'vm.state', `${vm.state} → unknown: ${reason}`, 'controller', { from: vm.state, to: 'unknown' });
        e.level = 'warn';
        events.push(e);
        const updated = await tx.vm.findUnique({ where: { id: vm.id } });
        if (updated) changes.push({ vm: updated, type: 'MODIFIED' });
      }
      await this.events.append(events, tx);
    });
    this.publish(changes, events);
    return changes.length;
  }

  /**
   * The worker is lost (no contact for lostAfter). Disconnect policy "reschedule": the VM fails
   * (and is re-placed per its restart policy) — the worker stopped it when its lease ran out
   * (fenceAfter < lostAfter), so no two attempts run at once. "wait": the VM stays `unknown` and
   * keeps its placement until the worker returns. Allocations stay until the worker confirms.
   * Returns how many VMs failed.
   */
  async handleLostWorker(workerId: string, workerName: string, silentS: number, guard?: (tx: Tx) => Promise<boolean>): Promise<number> {
    return retryOnConflict(() => this.handleLostWorkerOnce(workerId, workerName, silentS, guard));
  }

  private async handleLostWorkerOnce(workerId: string, workerName: string, silentS: number, guard?: (tx: Tx) => Promise<boolean>): Promise<number> {
    const events: NewEvent[] = [];
    const changes: Change[] = [];
    await this.db.$transaction(async (tx) => {
      // The caller's condition (the leader's fence, the worker still silent) in the same transaction.
      if (guard && !(await guard(tx))) return;
      const vms = await tx.vm.findMany({ where: { workerId, state: { in: PLACED_STATES } } });
      for (const vm of vms) {
        // A `wait` VM is never re-placed while its worker may still run it — not even one still
        // `scheduled`: the worker may have started it just before it was cut off.
        if (disconnectPolicyOf(vm.disconnectPolicy) === 'wait') {
          const reason = `worker ${workerName} lost (no contact for ${silentS}s); disconnect policy wait: not re-placed, continues when the worker returns`;
          const res = await tx.vm.updateMany({ where: { id: vm.id, attempt: vm.attempt, state: vm.state }, data: { state: 'unknown', reason } });
          if (res.count === 0) continue;
          if (vm.state !== 'unknown') {
            const e = vmEvent(vm, 'vm.state', `${vm.state} → unknown: ${reason}`, 'controller', { from: vm.state, to: 'unknown' });
            e.level = 'warn';
            events.push(e);
          }
          const updated = await tx.vm.findUnique({ where: { id: vm.id } });
          if (updated) changes.push({ vm: updated, type: 'MODIFIED' });
          continue;
        }
        const reason =
          vm.state === 'scheduled'
            ? `worker ${workerName} lost (no contact for ${silentS}s) before it started the VM`
            : `worker ${workerName} lost (no contact for ${silentS}s); the worker stopped the VM when its lease ran out (disconnect policy reschedule)`;
        changes.push({ vm: await this.failInTx(tx, vm, reason, 'controller', events), type: 'MODIFIED' });
      }
      await this.events.append(events, tx);
    });
    this.publish(changes, events);
    return changes.filter((c) => c.vm.state === 'failed').length;
  }

  /** VMs of a worker in state unknown (may still run on it). */
  countUnknownOn(workerId: string): Promise<number> {
    return this.db.vm.count({ where: { workerId, state: 'unknown' } });
  }

  /** A deleted worker holds nothing any more: its allocations are gone (cascade); fail its VMs and finish deletes. */
  async forgetWorker(workerId: string, workerName: string, actor: string): Promise<void> {
    await retryOnConflict(() => this.forgetWorkerOnce(workerId, workerName, actor));
    this.bus.scheduleRequested();
  }

  private async forgetWorkerOnce(workerId: string, workerName: string, actor: string): Promise<void> {
    const events: NewEvent[] = [];
    const changes: Change[] = [];
    await this.db.$transaction(async (tx) => {
      const vms = await tx.vm.findMany({ where: { workerId, state: { in: PLACED_STATES } } });
      for (const vm of vms) {
        changes.push({ vm: await this.failInTx(tx, vm, `worker ${workerName} was deleted by ${actor}`, actor, events), type: 'MODIFIED' });
      }
      await tx.allocation.deleteMany({ where: { workerId } });
      await this.removeSettledDeletes(tx, events, changes);
      await this.events.append(events, tx);
    });
    this.publish(changes, events);
  }

  /** Failed on-failure VMs whose backoff has passed go back to pending. */
  async requeueRestarts(fence?: Fence): Promise<number> {
    const due = await this.db.vm.findMany({ where: { state: 'failed', restartAt: { lte: this.now() } } });
    if (due.length === 0) return 0;
    const events: NewEvent[] = [];
    const changes: Change[] = [];
    await this.db.$transaction(async (tx) => {
      await fence?.(tx);
      for (const vm of due) {
        const res = await tx.vm.updateMany({
          where: { id: vm.id, state: 'failed' },
          data: { state: 'pending', workerId: null, ip: null, restartAt: null, restartCount: { increment: 1 }, reason: 'restarting after failure: waiting for the scheduler' },
        });
        if (res.count === 0) continue;
        events.push(vmEvent(vm, 'vm.restart', `failed → pending (restart ${vm.restartCount + 1}, policy on-failure)`, 'controller', { from: 'failed', to: 'pending' }));
        const updated = await tx.vm.findUnique({ where: { id: vm.id } });
        if (updated) changes.push({ vm: updated, type: 'MODIFIED' });
      }
      await this.events.append(events, tx);
    });
    this.publish(changes, events);
    this.bus.scheduleRequested();
    return changes.length;
  }

  // ---------------------------------------------------------------- helpers

  /**
   * A stopped VM keeps its worker: a new mode must be offered there, with a free address of that
   * network, and a new MAC must not be held by another instance on it (409 otherwise).
   */
  private async checkNetworkOnWorker(tx: Tx, vm: Vm, workerId: string, mode: NetworkMode, mac: string): Promise<void> {
    const worker = await tx.worker.findUnique({ where: { id: workerId }, select: { name: true, networks: true, natAddresses: true } });
    if (!worker) return; // deleted meanwhile: the VM fails and is placed anew
    const networks = parseWorkerNetworks(worker.networks);
    const where = `worker ${worker.name}, where vm "${vm.name}" is placed`;
    if (!offersMode(networks, mode)) {
      throw conflict(`${where}, does not offer network mode ${mode} (it offers ${offeredModes(networks).join(', ')}); delete the VM and create it again to place it on a worker that does`, { worker: worker.name, mode });
    }
    if (mode !== networkModeOf(vm.networkMode)) {
      const pool = poolOf(networks, mode, worker.natAddresses);
      if (pool > 0) {
        const used = await tx.allocation.count({ where: { workerId, networkMode: mode } });
        if (used >= pool) throw conflict(`${where}, has no free ${mode === 'nat' ? 'NAT' : mode} address (${used} of ${pool} in use)`, { worker: worker.name, mode });
      }
    }
    if (mac && mac !== vm.customMac) {
      // Any other instance: another VM's, or an earlier attempt of this one that the worker has
      // not yet confirmed gone (the scheduler keeps a VM off such a worker too).
      const holder = await tx.allocation.findFirst({ where: { workerId, mac, NOT: { vmId: vm.id, attempt: vm.attempt } }, select: { vmId: true, attempt: true } });
      if (holder?.vmId === vm.id) {
        throw conflict(`MAC ${mac} is still held by an earlier instance of vm "${vm.name}" (attempt ${holder.attempt}) on ${where}, which the worker has not yet confirmed gone; retry once it has, or choose another MAC`, { worker: worker.name, mac });
      }
      if (holder) {
        const other = await tx.vm.findUnique({ where: { id: holder.vmId }, select: { name: true } });
        throw conflict(`MAC ${mac} is already used by vm "${other?.name ?? holder.vmId}" on ${where}: two VMs with one MAC never share a worker; choose another MAC`, { worker: worker.name, mac });
      }
    }
  }

  /** The VM fails (its event goes in `events`; publish() counts the failure once committed). */
  private async failInTx(tx: Tx, vm: Vm, reason: string, actor: string, events: NewEvent[], extra: Prisma.VmUpdateInput = {}): Promise<Vm> {
    const restart = shouldRestart(vm.restartPolicy as RestartPolicy);
    const restartAt = restart ? new Date(this.now().getTime() + restartDelayMs(vm.restartCount)) : null;
    // Only the VM as read: if it changed meanwhile, the caller decides again (retryOnConflict).
    const res = await tx.vm.updateMany({
      where: { id: vm.id, state: vm.state, attempt: vm.attempt },
      data: { ...(extra as Prisma.VmUpdateManyMutationInput), state: 'failed', reason, ip: null, restartAt },
    });
    if (res.count === 0) throw new ConcurrentChangeError(`vm ${vm.name}`);
    const updated = await tx.vm.findUniqueOrThrow({ where: { id: vm.id } });
    events.push(
      vmEvent(vm, 'vm.state', `${vm.state} → failed: ${reason}${restartAt ? ` (restart at ${restartAt.toISOString()})` : ''}`, actor, {
        from: vm.state,
        to: 'failed',
      }),
    );
    events[events.length - 1]!.level = 'error';
    return updated;
  }

  /** VMs being deleted that no worker holds any more are removed for good. */
  private async removeSettledDeletes(tx: Tx, events: NewEvent[], changes: Change[]): Promise<void> {
    const deleting = await tx.vm.findMany({ where: { state: 'deleting' } });
    for (const vm of deleting) {
      if ((await tx.allocation.count({ where: { vmId: vm.id } })) > 0) continue;
      const res = await tx.vm.deleteMany({ where: { id: vm.id, state: 'deleting' } });
      if (res.count === 0) continue; // removed meanwhile
      events.push(vmEvent(vm, 'vm.deleted', 'deleted (no worker holds it any more)', 'controller'));
      changes.push({ vm, type: 'DELETED' });
    }
  }

  /** After the commit: watchers, the bus, and the failure count (not in the transaction, which may run again or roll back). */
  private publish(changes: Change[], events: NewEvent[]): void {
    const failures = events.filter((e) => e.kind === 'vm.state' && e.data?.['to'] === 'failed').length;
    if (failures > 0) this.metrics.vmFailures.inc(failures);
    this.events.publish(events);
    for (const c of changes) this.bus.vmChanged(c);
  }
}

export function vmEvent(vm: Pick<Vm, 'id' | 'name' | 'workerId'>, kind: string, message: string, actor: string, data?: Record<string, unknown>): NewEvent {
  return { kind, message, vmId: vm.id, vmName: vm.name, workerId: vm.workerId, actor, ...(data ? { data } : {}) };
}

function describeState(state: VmState, workerName: string): string {
  switch (state) {
    case 'starting':
      return `starting on ${workerName}`;
    case 'running':
      return `running on ${workerName}`;
    case 'stopping':
      return `stopping on ${workerName}`;
    case 'stopped':
      return `stopped on ${workerName}`;
    default:
      return '';
  }
}

/** The network a PATCH leaves the VM with, and whether it differs from the stored one (400 for mode "none" with rules or a MAC). */
function nextNetwork(vm: Vm, patch: VmUpdate): { changed: boolean; mode: NetworkMode; policy: NetworkPolicy; mac: string } {
  const mode0 = networkModeOf(vm.networkMode);
  const policy0 = parseNetwork(vm.network);
  if (patch.network === undefined && patch.mac === undefined) return { changed: false, mode: mode0, policy: policy0, mac: vm.customMac };
  const n = patch.network ?? {};
  const mode = n.mode ?? mode0;
  const policy = normalizeNetwork({ allow: n.allow ?? policy0.allow, block: n.block ?? policy0.block, blockLocal: n.blockLocal ?? policy0.blockLocal });
  const mac = patch.mac === undefined ? vm.customMac : patch.mac === null ? '' : normalizeMac(patch.mac);
  const changed = mode !== mode0 || mac !== vm.customMac || JSON.stringify(policy) !== JSON.stringify(policy0);
  if (changed) {
    try {
      checkNetworkMode(mode, policy, mac);
    } catch (err) {
      // Stored rules or MAC the patch did not mention: say how to drop them.
      const kept = (n.allow === undefined && policy0.allow.length > 0) || (n.block === undefined && policy0.block.length > 0) || (n.blockLocal === undefined && policy0.blockLocal) || (patch.mac === undefined && vm.customMac !== '');
      if (kept && err instanceof FleetError) throw new FleetError(err.statusCode, err.code, `${err.message} (vm "${vm.name}" has them: send network {"mode": "none", "allow": [], "block": [], "blockLocal": false} and "mac": null to drop them)`, err.details);
      throw err;
    }
  }
  return { changed, mode, policy, mac };
}
