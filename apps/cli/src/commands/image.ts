// `fleet image list|inspect|delete|prefetch|push|operations|operation`: VM images in the
// workers' caches (issue 15), and pushing images to OCI registries.
import type { Command } from 'commander';
import type { ApiClient } from '../client/api-client.ts';
import { inUseCount, isFinished, type FleetImage, type ImageCopy, type ImageOperation, type WorkerImage } from '../client/image-types.ts';
import { CliError, ExitCode, InterruptedError, UsageError, WaitFailedError } from '../errors.ts';
import { sleep } from '../io.ts';
import { formatAge, formatDuration, formatTimestamp, parseDuration, relativeTime } from '../output/durations.ts';
import { ProgressDisplay, formatBytes, formatProgressShort, progressDisplayFor, type ProgressItem } from '../output/progress.ts';
import { dash, formatLabels } from '../output/table.ts';
import type { Runtime } from '../runtime.ts';
import { collect, parseChoice, parseLabels, validateName } from '../validate.ts';
import { addCredentialOptions } from './registry-credentials.ts';
import type { LocalPushOptions } from './image-push-local.ts';

/** Image pulls of macOS images are tens of GiB: waits are long by default. */
const DEFAULT_IMAGE_WAIT_MS = 60 * 60_000;
const POLL_FIRST_MS = 250;
const POLL_MAX_MS = 1_000;
/** On a terminal, at most this many operations are drawn; the rest are summed up in one line. */
const MAX_DRAWN = 20;

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const DIGEST_PREFIX = /^(?:sha256:)?([0-9a-f]{4,64})$/;

/** The first 12 hex digits of a sha256 digest (as `fleet image list` shows it); anything else as it is. */
export function shortDigest(digest: string): string {
  return /^sha256:[0-9a-f]{12,}$/.test(digest) ? digest.slice(7, 19) : digest;
}

function opStateText(rt: Runtime, state: string): string {
  if (state === 'succeeded') return rt.colors.green(state);
  if (state === 'failed') return rt.colors.red(state);
  return rt.colors.yellow(state);
}

function imageWaitMs(value: string | boolean | undefined): number | null {
  if (value === undefined || value === false) return null;
  if (value === true) return DEFAULT_IMAGE_WAIT_MS;
  const ms = parseDuration(value, '--wait');
  if (ms <= 0) throw new UsageError(`invalid --wait "${value}": must be more than 0`);
  return ms;
}

/** A reference as the API takes it: registry/repository[:tag][@sha256:…]; the registry host is required. */
export function validateImageReference(ref: string, flag = 'reference'): string {
  const r = ref.trim();
  if (!r) throw new UsageError(`invalid ${flag}: must not be empty`);
  if (r.length > 512) throw new UsageError(`invalid ${flag}: at most 512 characters`);
  if (/\s/.test(r)) throw new UsageError(`invalid ${flag} "${ref}": must not contain spaces`);
  const slash = r.indexOf('/');
  const first = slash > 0 ? r.slice(0, slash) : '';
  if (!(first.includes('.') || first.includes(':') || first === 'localhost')) {
    throw new UsageError(`invalid ${flag} "${ref}": expected a registry reference like 127.0.0.1:5000/fleet/guest:1 or ghcr.io/org/macos:latest (the registry host first)`);
  }
  return r;
}

function stateText(rt: Runtime, state: string, progress: ImageCopy['progress'], error?: string): string {
  if (state === 'pulling') return rt.colors.yellow(`pulling ${formatProgressShort(progress)}`);
  if (state === 'failed') return rt.colors.red(error ? `failed: ${error}` : 'failed');
  if (state === 'ready') return rt.colors.green('ready');
  return state;
}

function inUseText(v: number | boolean): string {
  const n = inUseCount(v);
  if (n === 0) return 'no';
  return typeof v === 'number' ? `${n} VM${n === 1 ? '' : 's'}` : 'yes';
}

/** A pinned reference without the digest its row shows already (unless --wide). */
function refText(reference: string, digest: string, wide: boolean): string {
  if (wide || !reference.endsWith(`@${digest}`)) return dash(reference);
  return reference.slice(0, -digest.length - 1);
}

export function workerImageRows(rt: Runtime, worker: string, items: WorkerImage[], wide: boolean): string[][] {
  const now = rt.now();
  return items.map((i) => [
    worker,
    wide ? i.digest : shortDigest(i.digest),
    refText(i.reference, i.digest, wide),
    i.format,
    formatBytes(i.sizeBytes),
    stateText(rt, i.state, i.progress, i.error),
    inUseText(i.inUse),
    relativeTime(i.lastUsedAt, now),
  ]);
}

export function fleetImageRows(rt: Runtime, items: FleetImage[], wide: boolean): string[][] {
  const now = rt.now();
  const rows: string[][] = [];
  for (const img of items) {
    const copies = img.workers.length > 0 ? img.workers : [null];
    for (const w of copies) {
      rows.push([
        w ? w.name : '-',
        wide ? img.digest : shortDigest(img.digest),
        refText(img.reference, img.digest, wide),
        img.format,
        formatBytes(img.sizeBytes),
        w ? stateText(rt, w.state, w.progress) : '-',
        w ? inUseText(w.inUse) : '-',
        w ? relativeTime(w.lastUsedAt, now) : '-',
      ]);
    }
  }
  return rows;
}

const IMAGE_HEADERS = ['WORKER', 'DIGEST', 'REFERENCE', 'FORMAT', 'SIZE', 'STATE', 'IN USE', 'LAST USED'];

/** "12 GiB of 100 GiB (12 %)", or "12 GiB (no limit)". */
export function cacheUse(used: number, limit: number): string {
  if (!(limit > 0)) return `${formatBytes(used)} used (no limit)`;
  return `${formatBytes(used)} of ${formatBytes(limit)} used (${Math.round((100 * used) / limit)} %)`;
}

/** Images in the fleet matching a reference, a digest or a digest prefix. */
export function matchImages(items: FleetImage[], query: string): FleetImage[] {
  const q = query.trim();
  const at = q.lastIndexOf('@');
  if (at > 0 && DIGEST.test(q.slice(at + 1))) return items.filter((i) => i.digest === q.slice(at + 1));
  if (DIGEST.test(q)) return items.filter((i) => i.digest === q);
  const byRef = items.filter((i) => i.reference === q || i.reference.replace(/@sha256:[0-9a-f]{64}$/, '') === q);
  if (byRef.length > 0) return byRef;
  const prefix = DIGEST_PREFIX.exec(q);
  if (prefix) return items.filter((i) => i.digest.startsWith(`sha256:${prefix[1]}`));
  // A reference without a tag means :latest, as in pulls.
  const lastSlash = q.lastIndexOf('/');
  if (lastSlash > 0 && !q.slice(lastSlash).includes(':')) return items.filter((i) => i.reference === `${q}:latest`);
  return [];
}

/** A digest from a full digest or a unique prefix of one in the worker's cache. */
async function resolveWorkerDigest(client: ApiClient, worker: string, arg: string): Promise<string> {
  const q = arg.trim();
  if (DIGEST.test(q)) return q;
  const prefix = DIGEST_PREFIX.exec(q);
  if (!prefix) throw new UsageError(`invalid digest "${arg}": expected sha256:<64 hex digits>, or a prefix of one as "fleet image list" shows it`);
  const { items } = await client.listWorkerImages(worker);
  const found = items.filter((i) => i.digest.startsWith(`sha256:${prefix[1]}`));
  if (found.length === 1) return found[0]!.digest;
  if (found.length === 0) throw new CliError(`worker "${worker}" holds no image whose digest starts with ${prefix[1]}`, ExitCode.NOT_FOUND);
  throw new UsageError(`digest prefix ${prefix[1]} is ambiguous on worker "${worker}": ${found.map((i) => i.digest).join(', ')}`);
}

// ---------------------------------------------------------------- following operations

function opStatus(op: ImageOperation): string {
  if (op.state === 'failed') return `failed${op.message ? `: ${op.message}` : ''}`;
  if (op.state === 'succeeded') return 'succeeded';
  return op.message && op.state === 'running' ? `${op.state}: ${op.message}` : op.state;
}

export function opItem(op: ImageOperation, label: string): ProgressItem {
  const progress = op.progress && !(op.state === 'failed' && op.progress.bytesTotal === 0) ? op.progress : null;
  return { key: op.id, label, progress, status: opStatus(op) };
}

function displayItems(ops: ImageOperation[], labelOf: (op: ImageOperation) => string, tty: boolean): ProgressItem[] {
  const items = ops.map((op) => opItem(op, labelOf(op)));
  if (!tty || items.length <= MAX_DRAWN) return items;
  // Running first, then pending, failed, succeeded; the rest summed up.
  const rank = (op: ImageOperation) => ({ running: 0, pending: 1, failed: 2, succeeded: 3 })[op.state as 'running'] ?? 4;
  const order = ops.map((op, i) => ({ op, i })).sort((a, b) => rank(a.op) - rank(b.op));
  const shown = order.slice(0, MAX_DRAWN - 1).map(({ i }) => items[i]!);
  const finished = ops.filter(isFinished).length;
  shown.push({ key: 'summary', label: `… and ${ops.length - shown.length} more`, progress: null, status: `${finished} of ${ops.length} finished` });
  return shown;
}

/**
 * Polls operations until each has finished (or the deadline passes), drawing their progress.
 * Returns the operations as last seen; `timedOut` when the deadline came first.
 */
export async function followOperations(
  rt: Runtime,
  client: ApiClient,
  initial: ImageOperation[],
  timeoutMs: number,
  display: ProgressDisplay | null,
  labelOf: (op: ImageOperation) => string,
): Promise<{ ops: ImageOperation[]; timedOut: boolean }> {
  const ops = [...initial];
  const deadline = Date.now() + timeoutMs;
  const tty = display?.isTty === true;
  let delay = POLL_FIRST_MS;
  let lostSince: number | null = null;
  display?.update(displayItems(ops, labelOf, tty));
  while (!ops.every(isFinished)) {
    if (Date.now() >= deadline) {
      display?.end();
      return { ops, timedOut: true };
    }
    try {
      await sleep(Math.min(delay, Math.max(0, deadline - Date.now())), rt.signal);
    } catch {
      display?.end();
      throw new InterruptedError();
    }
    delay = Math.min(POLL_MAX_MS * Math.max(1, Math.ceil(ops.length / 10)), delay * 2);
    const open = ops.map((op, i) => ({ op, i })).filter(({ op }) => !isFinished(op));
    try {
      // At most 8 at a time: a pool of a hundred workers is polled in batches.
      for (let b = 0; b < open.length; b += 8) {
        const batch = open.slice(b, b + 8);
        const fresh = await Promise.all(batch.map(({ op }) => client.getImageOperation(op.id)));
        fresh.forEach((op, j) => (ops[batch[j]!.i] = op));
      }
      lostSince = null;
    } catch (err) {
      if (err instanceof CliError && err.exitCode === ExitCode.UNREACHABLE) {
        // The operations run on the workers regardless; keep asking until the deadline.
        if (lostSince === null) display?.note(`  lost the connection to the controller (${err.message}); retrying`);
        lostSince ??= Date.now();
        continue;
      }
      display?.end();
      throw err;
    }
    display?.update(displayItems(ops, labelOf, tty));
  }
  display?.end(displayItems(ops, labelOf, tty));
  return { ops, timedOut: false };
}

export function progressDisplay(rt: Runtime, json: boolean): ProgressDisplay | null {
  return progressDisplayFor(rt.io, json);
}

function failedList(ops: ImageOperation[]): string {
  return ops.map((op) => `${op.worker}${op.message ? ` (${op.message})` : ''}`).join(', ');
}

// ---------------------------------------------------------------- commands

// A type-only import: the local push module itself is loaded only for such a push.
interface PushOptions extends LocalPushOptions {
  wait?: string | boolean;
}

/** Which push the arguments ask for: a VM's disk by its worker, or a local bundle or disk. */
export function parsePushArgs(first: string, second: string | undefined, o: PushOptions): { kind: 'remote'; vm: string; reference: string } | { kind: 'local'; reference: string } {
  const local = o.bundle !== undefined || o.disk !== undefined;
  if (o.bundle !== undefined && o.disk !== undefined) throw new UsageError('--bundle and --disk cannot be used together: a Tart bundle or a Fleet qemu image');
  if (!local) {
    for (const [flag, v] of [['--kernel', o.kernel], ['--initrd', o.initrd], ['--cmdline', o.cmdline], ['--architecture', o.architecture], ['--work-dir', o.workDir], ['--ca-file', o.caFile], ['--username', o.username]] as const) {
      if (v !== undefined) throw new UsageError(`${flag} is for a local push (with --bundle DIR or --disk FILE); a VM's disk is pushed by its worker with the controller's registry credentials`);
    }
    if (o.insecure || o.passwordStdin) throw new UsageError(`${o.insecure ? '--insecure' : '--password-stdin'} is for a local push (with --bundle DIR or --disk FILE); for a VM, set it with "fleet registry login"`);
    if (second === undefined) throw new UsageError('missing the reference: fleet image push VM REF (or fleet image push --bundle DIR REF)');
    validateName(first, 'VM');
    return { kind: 'remote', vm: first, reference: validateImageReference(second) };
  }
  if (second !== undefined) throw new UsageError(`a local push takes one argument, the reference; "${first}" and "${second}" were given`);
  if (o.bundle !== undefined && (o.kernel !== undefined || o.initrd !== undefined || o.cmdline !== undefined)) {
    throw new UsageError('--kernel, --initrd and --cmdline belong to a Fleet qemu image (--disk FILE), not to a Tart bundle');
  }
  if (o.wait !== undefined) throw new UsageError('--wait is for a push by a worker; a local push always runs to its end');
  const reference = validateImageReference(first);
  if (/@sha256:/.test(reference)) throw new UsageError(`cannot push to "${reference}": name a tag (registry/repository:tag), not a digest`);
  return { kind: 'local', reference };
}

export function registerImageCommands(program: Command, rt: Runtime): void {
  const image = program.command('image').description('VM images: worker caches, prefetching, pushing to OCI registries');

  image
    .command('list')
    .alias('ls')
    .option('--worker <name>', "only this worker's cache (with its use and limit)")
    .option('--wide', 'full digests (the same as -o wide)')
    .description('images in the workers\' caches: one row per worker and image')
    .action(async (o: { worker?: string }, cmd: Command) => {
      const client = rt.client(cmd);
      if (o.worker !== undefined) {
        validateName(o.worker, 'worker');
        const list = await client.listWorkerImages(o.worker);
        rt.render(cmd, {
          json: list,
          items: list.items,
          name: (i) => i.reference || i.digest,
          human: (wide) => {
            if (list.items.length === 0) rt.note(`No images in the cache of worker "${list.worker}".`);
            else rt.table(IMAGE_HEADERS, workerImageRows(rt, list.worker, list.items, wide));
            rt.note(`Cache of ${list.worker}: ${cacheUse(list.usedBytes, list.limitBytes)}`);
          },
        });
        return;
      }
      const { items } = await client.listImages();
      rt.render(cmd, {
        json: { items },
        items,
        name: (i) => i.reference || i.digest,
        empty: 'No images in any worker cache.',
        human: (wide) => rt.table(IMAGE_HEADERS, fleetImageRows(rt, items, wide)),
      });
    });

  image
    .command('inspect')
    .argument('<image>', 'a reference (registry/repository:tag), a digest, or a digest prefix')
    .description('which workers hold an image, in which state, and its size')
    .action(async (query: string, _o: unknown, cmd: Command) => {
      const { items } = await rt.client(cmd).listImages();
      const found = matchImages(items, query);
      if (found.length === 0) throw new CliError(`no worker cache holds an image matching "${query}"`, ExitCode.NOT_FOUND);
      if (rt.isJson(cmd)) return rt.json({ items: found });
      const now = rt.now();
      found.forEach((img, n) => {
        if (n > 0) rt.out('');
        const ready = img.workers.filter((w) => w.state === 'ready').length;
        const used = img.workers.reduce((s, w) => s + inUseCount(w.inUse), 0);
        rt.keyValues([
          ['Digest', img.digest],
          ['Reference', dash(img.reference)],
          ['Format', img.format === 'tart' ? 'tart (macOS/Linux on the vz driver; Tart-compatible)' : img.format === 'fleet-qemu' ? 'fleet-qemu (Linux on the qemu driver)' : img.format],
          ['Size', `${formatBytes(img.sizeBytes)} (${img.sizeBytes} bytes)`],
          ['Workers', `${img.workers.length} (${ready} ready); used by ${used} VM${used === 1 ? '' : 's'}`],
        ]);
        if (img.workers.length > 0) {
          rt.out('');
          rt.table(
            ['WORKER', 'STATE', 'IN USE', 'LAST USED'],
            img.workers.map((w) => [w.name, stateText(rt, w.state, w.progress), inUseText(w.inUse), w.lastUsedAt ? `${relativeTime(w.lastUsedAt, now)} (${formatTimestamp(w.lastUsedAt)})` : 'never']),
          );
        }
      });
    });

  image
    .command('delete')
    .alias('rm')
    .argument('<digest>', 'the image digest (sha256:…, or a unique prefix as "fleet image list" shows it)')
    .requiredOption('--worker <name>', 'the worker whose cache to remove it from')
    .option('--wait [duration]', `wait until the worker has removed it; default ${formatAge(DEFAULT_IMAGE_WAIT_MS)}`)
    .description("remove an image from a worker's cache (refused while a VM on it uses the image)")
    .action(async (digestArg: string, o: { worker: string; wait?: string | boolean }, cmd: Command) => {
      validateName(o.worker, 'worker');
      const wait = imageWaitMs(o.wait);
      const json = rt.isJson(cmd);
      const client = rt.client(cmd);
      const digest = await resolveWorkerDigest(client, o.worker, digestArg);
      const op = await client.deleteWorkerImage(o.worker, digest);
      if (wait === null) {
        if (json) return rt.json(op);
        rt.out(`deleting ${digest} from worker "${o.worker}" (operation ${op.id})`);
        return;
      }
      if (!json) rt.note(`deleting ${shortDigest(digest)} from worker "${o.worker}"; waiting up to ${formatDuration(wait)}`);
      const { ops, timedOut } = await followOperations(rt, client, [op], wait, null, (x) => x.worker);
      const last = ops[0]!;
      if (json) rt.json(last);
      if (timedOut) throw new WaitFailedError(`timed out after ${formatDuration(wait)} waiting for worker "${o.worker}" to delete ${digest}; it is ${last.state}`);
      if (last.state === 'failed') throw new WaitFailedError(`worker "${o.worker}" did not delete ${digest}: ${last.message || 'no reason given'}`);
      if (!json) rt.out(`deleted ${digest} from worker "${o.worker}"`);
    });

  image
    .command('prefetch')
    .argument('<reference>', 'registry/repository:tag or @sha256:… (the tag is resolved once, every worker pulls the same digest)')
    .option('--selector <key=value>', 'only workers with this label (repeatable; default: every worker)', collect)
    .option('--wait [duration]', `wait until every worker has it, showing each one's progress; default ${formatAge(DEFAULT_IMAGE_WAIT_MS)}`)
    .description('pull an image into the caches of (a pool of) workers ahead of the VMs that need it')
    .addHelpText('after', `\nExample, before a burst of CI jobs:\n  fleet image prefetch ghcr.io/org/macos-ci:15 --selector pool=ci --wait\nWith --wait: exit 7 when the pull failed on any worker (they are named), or the wait timed out.`)
    .action(async (refArg: string, o: { selector?: string[]; wait?: string | boolean }, cmd: Command) => {
      const reference = validateImageReference(refArg);
      const selector = o.selector ? parseLabels(o.selector, '--selector') : undefined;
      const wait = imageWaitMs(o.wait);
      const json = rt.isJson(cmd);
      const client = rt.client(cmd);
      const result = await client.prefetchImage({ reference, ...(selector ? { selector } : {}) });
      const where = selector ? `workers with ${formatLabels(selector)}` : 'the workers';
      if (result.operations.length === 0) {
        if (json) rt.json(result);
        throw new CliError(`no worker to prefetch ${reference} on: none of ${where} is enrolled and online`, ExitCode.ERROR);
      }
      const pinned = `${result.digest}${result.format ? `, ${result.format}` : ''}`;
      if (wait === null) {
        if (json) return rt.json(result);
        rt.out(`prefetching ${result.reference} (${pinned}) on ${result.operations.length} worker(s): ${result.operations.map((op) => op.worker).join(', ')}`);
        rt.note('Follow with "fleet image operations" or "fleet image list".');
        return;
      }
      const display = progressDisplay(rt, json);
      display?.note(`prefetching ${result.reference} (${pinned}) on ${result.operations.length} worker(s); waiting up to ${formatDuration(wait)}`);
      const { ops, timedOut } = await followOperations(rt, client, result.operations, wait, display, (op) => op.worker);
      if (json) rt.json({ ...result, operations: ops });
      const failed = ops.filter((op) => op.state === 'failed');
      const open = ops.filter((op) => !isFinished(op));
      if (!json) rt.out(`${ops.length - failed.length - open.length} of ${ops.length} worker(s) have ${result.reference} (${shortDigest(result.digest)})`);
      if (failed.length > 0 || timedOut) {
        const parts: string[] = [];
        if (failed.length > 0) parts.push(`failed on ${failed.length} of ${ops.length} worker(s): ${failedList(failed)}`);
        if (timedOut) parts.push(`still running after ${formatDuration(wait)} on ${open.map((op) => op.worker).join(', ')}`);
        throw new WaitFailedError(`prefetch of ${result.reference} ${parts.join('; ')}`);
      }
    });

  const push = image
    .command('push')
    .argument('<vm-or-reference>', 'the stopped VM whose disk to push; with --bundle or --disk: the reference')
    .argument('[reference]', 'registry/repository:tag to push to')
    .option('--wait [duration]', `VM push: wait until its worker has pushed it and print the digest; default ${formatAge(DEFAULT_IMAGE_WAIT_MS)}`)
    .option('--bundle <dir>', 'push a local Tart VM bundle (config.json, disk.img, nvram.bin) from this machine')
    .option('--disk <file>', 'push a local disk image (raw or qcow2) as a Fleet qemu image from this machine')
    .option('--kernel <file>', 'with --disk: a kernel to boot directly')
    .option('--initrd <file>', 'with --disk: its initrd')
    .option('--cmdline <text>', 'with --disk: the kernel command line')
    .option('--architecture <arch>', 'with --disk: arm64 or amd64 (default: this machine\'s)')
    .option('--insecure', 'local push: allow plain HTTP to the registry')
    .option('--ca-file <file>', "local push: PEM file with the CA that signs the registry's certificate")
    .option('--work-dir <dir>', 'local push: where to write the compressed layers before uploading (default: the system temp dir; needs about the disk\'s size)');
  addCredentialOptions(push, 'the registry (local push)');
  push
    .description("push an image to an OCI registry: a stopped VM's disk (by its worker), or a local Tart bundle or disk")
    .addHelpText(
      'after',
      `
A VM's disk is pushed by the worker that holds it, with the credentials stored by
"fleet registry login". A local push (--bundle or --disk) runs on this machine and talks to the
registry directly; its password is read with --password-stdin or asked for on a terminal.
Examples:
  fleet vm update builder --stop && fleet image push builder ghcr.io/org/macos-ci:15 --wait
  fleet image push --bundle ~/.tart/vms/sonoma ghcr.io/org/macos-base:14 --username me --password-stdin < token
  fleet image push --disk guest.qcow2 --kernel vmlinuz --initrd initrd.img --cmdline "console=ttyS0" 127.0.0.1:5000/fleet/guest:1 --insecure`,
    )
    .action(async (first: string, second: string | undefined, o: PushOptions, cmd: Command) => {
      const parsed = parsePushArgs(first, second, o);
      const json = rt.isJson(cmd);
      if (parsed.kind === 'local') {
        // Loaded only for a local push: packing and the registry client are not needed otherwise.
        const { pushLocalImage } = await import('./image-push-local.ts');
        const result = await pushLocalImage(rt, parsed.reference, o, progressDisplay(rt, json));
        if (json) return rt.json(result);
        rt.note(`pushed ${result.reference} (${formatBytes(result.sizeBytes)} in ${result.blobs} blob(s), ${result.format})`);
        rt.out(result.digest);
        return;
      }
      const wait = imageWaitMs(o.wait);
      const client = rt.client(cmd);
      const op = await client.pushVmImage(parsed.vm, parsed.reference);
      if (wait === null) {
        if (json) return rt.json(op);
        rt.out(`pushing vm "${parsed.vm}" to ${parsed.reference} on worker "${op.worker}" (operation ${op.id})`);
        rt.note(`Follow with "fleet image operation ${op.id} --wait".`);
        return;
      }
      const display = progressDisplay(rt, json);
      display?.note(`pushing vm "${parsed.vm}" to ${parsed.reference} on worker "${op.worker}"; waiting up to ${formatDuration(wait)}`);
      const { ops, timedOut } = await followOperations(rt, client, [op], wait, display, () => `pushing ${parsed.vm} → ${parsed.reference}`);
      const last = ops[0]!;
      if (json) rt.json(last);
      if (timedOut) throw new WaitFailedError(`timed out after ${formatDuration(wait)} waiting for the push of vm "${parsed.vm}"; it is ${last.state} (operation ${last.id})`);
      if (last.state === 'failed') throw new WaitFailedError(`push of vm "${parsed.vm}" to ${parsed.reference} failed: ${last.message || 'no reason given'}`);
      if (!json) {
        rt.note(`pushed vm "${parsed.vm}" to ${parsed.reference}`);
        rt.out(last.digest || '(the worker reported no digest)');
      }
    });

  image
    .command('operations')
    .alias('ops')
    .option('--worker <name>', 'only on this worker')
    .option('--state <state>', 'only in this state: pending, running, succeeded, failed')
    .description('image operations (prefetch, delete, push) asked of workers, newest first')
    .action(async (o: { worker?: string; state?: string }, cmd: Command) => {
      if (o.worker !== undefined) validateName(o.worker, 'worker');
      if (o.state !== undefined) parseChoice(o.state, '--state', ['pending', 'running', 'succeeded', 'failed'] as const);
      const { items } = await rt.client(cmd).listImageOperations({ worker: o.worker, state: o.state });
      if (rt.isJson(cmd)) return rt.json({ items });
      if (items.length === 0) return rt.note('No image operations found.');
      const now = rt.now();
      rt.table(
        ['ID', 'KIND', 'WORKER', 'VM', 'REFERENCE', 'STATE', 'PROGRESS', 'AGE', 'MESSAGE'],
        items.map((op) => [op.id, op.kind, op.worker, dash(op.vm), dash(op.reference || op.digest), opStateText(rt, op.state), op.progress && !isFinished(op) ? formatProgressShort(op.progress) : '-', relativeTime(op.createdAt, now).replace(/ ago$/, ''), dash(op.message)]),
      );
    });

  image
    .command('operation')
    .alias('op')
    .argument('<id>', 'operation id')
    .option('--wait [duration]', `wait until it has finished, showing its progress; default ${formatAge(DEFAULT_IMAGE_WAIT_MS)}`)
    .description('one image operation; with --wait, follow it to its end (exit 7 if it failed)')
    .action(async (id: string, o: { wait?: string | boolean }, cmd: Command) => {
      if (!/^[A-Za-z0-9_.:-]{1,128}$/.test(id)) throw new UsageError(`invalid operation id "${id}"`);
      const wait = imageWaitMs(o.wait);
      const json = rt.isJson(cmd);
      const client = rt.client(cmd);
      let op = await client.getImageOperation(id);
      let timedOut = false;
      if (wait !== null && !isFinished(op)) {
        const r = await followOperations(rt, client, [op], wait, progressDisplay(rt, json), (x) => `${x.kind} ${x.vm ?? x.reference ?? x.digest} on ${x.worker}`);
        op = r.ops[0]!;
        timedOut = r.timedOut;
      }
      if (json) rt.json(op);
      else {
        const now = rt.now();
        rt.keyValues([
          ['ID', op.id],
          ['Kind', op.kind],
          ['Worker', op.worker],
          ...(op.vm ? ([['VM', op.vm]] as [string, string][]) : []),
          ['Reference', dash(op.reference)],
          ['Digest', dash(op.digest)],
          ['State', op.state],
          ['Progress', formatProgressShort(op.progress)],
          ['Message', dash(op.message)],
          ['Created', `${formatTimestamp(op.createdAt)} (${relativeTime(op.createdAt, now)}) by ${op.createdBy}`],
          ['Updated', `${formatTimestamp(op.updatedAt)} (${relativeTime(op.updatedAt, now)})`],
        ]);
      }
      if (timedOut) throw new WaitFailedError(`timed out after ${formatDuration(wait!)} waiting for operation ${op.id}; it is ${op.state}`);
      if (wait !== null && op.state === 'failed') throw new WaitFailedError(`operation ${op.id} (${op.kind} on ${op.worker}) failed: ${op.message || 'no reason given'}`);
    });
}
