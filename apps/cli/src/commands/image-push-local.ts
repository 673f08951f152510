// `fleet image push --bundle DIR REF` and `fleet image push --disk FILE REF`: pack a local Tart
// bundle or disk into an image and push it from this machine straight to the registry.
// Loaded by image.ts only for such a push (it pulls in the packer and the registry client).
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistryClient, isOciError, parseImageReference } from '@fleet/oci';
import { packFleetQemu, packTartBundle, type PackedImage } from '@fleet/vm-image';
import { CliError, ExitCode, InterruptedError, UsageError } from '../errors.ts';
import type { ProgressDisplay } from '../output/progress.ts';
import type { Runtime } from '../runtime.ts';
import { readCaFile, readRegistryCredentials, type CredentialOptions } from './registry-credentials.ts';

export interface LocalPushOptions extends CredentialOptions {
  bundle?: string;
  disk?: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  architecture?: string;
  insecure?: boolean;
  caFile?: string;
  workDir?: string;
}

export interface LocalPushResult {
  reference: string;
  digest: string;
  mediaType: string;
  format: 'tart' | 'fleet-qemu';
  /** Config and layers, as uploaded (blobs the registry had already are counted too). */
  sizeBytes: number;
  blobs: number;
}

/** Blobs uploaded at once (Tart disks come in 512 MiB pieces). */
const UPLOAD_CONCURRENCY = 4;

/** This machine's architecture in OCI terms. */
export function hostArchitecture(arch: string = process.arch): string {
  if (arch === 'x64') return 'amd64';
  if (arch === 'arm64') return 'arm64';
  return arch;
}

async function checkPath(file: string, flag: string, kind: 'file' | 'dir'): Promise<void> {
  let st;
  try {
    st = await stat(file);
  } catch (err) {
    throw new UsageError(`${flag}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (kind === 'dir' && !st.isDirectory()) throw new UsageError(`${flag}: ${file} is not a directory (a Tart bundle holds config.json, disk.img and nvram.bin)`);
  if (kind === 'file' && !st.isFile()) throw new UsageError(`${flag}: ${file} is not a file`);
}

/** The flags of this command that fix what the registry client's message points at. */
const LOCAL_HINTS: Partial<Record<string, string>> = {
  'insecure-refused': 'for a push from this machine: add --insecure',
  tls: "for a push from this machine: --ca-file FILE with the registry's CA",
  unauthorized: 'for a push from this machine: --username U --password-stdin',
  denied: 'for a push from this machine: --username U --password-stdin, with a user allowed to push there',
};

function describeFailure(err: unknown, what: string): CliError {
  if (err instanceof CliError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (isOciError(err)) {
    if (err.code === 'aborted') return new InterruptedError();
    const exit =
      err.code === 'unauthorized' || err.code === 'denied' ? ExitCode.AUTH
      : err.code === 'network' || err.code === 'tls' ? ExitCode.UNREACHABLE
      : err.code === 'bad-reference' || err.code === 'insecure-refused' ? ExitCode.USAGE
      : ExitCode.ERROR;
    const hint = LOCAL_HINTS[err.code];
    return new CliError(`${what}: ${message}${hint ? ` (${hint})` : ''}`, exit, { cause: err });
  }
  return new CliError(`${what}: ${message}`, ExitCode.ERROR, { cause: err });
}

export async function pushLocalImage(rt: Runtime, reference: string, o: LocalPushOptions, display: ProgressDisplay | null): Promise<LocalPushResult> {
  let ref;
  try {
    ref = parseImageReference(reference);
  } catch (err) {
    throw new UsageError(`invalid reference "${reference}": ${err instanceof Error ? err.message : String(err)}`);
  }
  if (ref.digest) throw new UsageError(`cannot push to "${reference}": name a tag, not a digest`);
  const tag = ref.tag ?? 'latest';
  const target = `${ref.registry}/${ref.repository}:${tag}`;

  if (o.bundle !== undefined) await checkPath(o.bundle, '--bundle', 'dir');
  if (o.disk !== undefined) await checkPath(o.disk, '--disk', 'file');
  if (o.kernel !== undefined) await checkPath(o.kernel, '--kernel', 'file');
  if (o.initrd !== undefined) await checkPath(o.initrd, '--initrd', 'file');
  if (o.workDir !== undefined) await checkPath(o.workDir, '--work-dir', 'dir');
  const architecture = o.architecture ?? hostArchitecture();
  if (!['amd64', 'arm64', 'x86_64', 'aarch64'].includes(architecture)) throw new UsageError(`invalid --architecture "${architecture}": expected arm64 or amd64`);
  const caPem = o.caFile !== undefined ? await readCaFile(o.caFile) : undefined;
  // Ask for the password before the (long) packing, not after it.
  const creds = await readRegistryCredentials(rt.io, o, ref.registry);

  const workDir = await mkdtemp(join(o.workDir ?? tmpdir(), 'fleet-push-'));
  const client = new RegistryClient({ registry: ref.registry, insecure: o.insecure === true, ...(caPem ? { caPem } : {}), ...(creds ?? {}), userAgent: 'fleet-cli' });
  const signal = rt.signal;
  try {
    // 1. Pack: compressed pieces as blob files under the work dir.
    const format: LocalPushResult['format'] = o.bundle !== undefined ? 'tart' : 'fleet-qemu';
    const source = o.bundle ?? o.disk!;
    display?.note(`packing ${source} as a ${format} image (in ${workDir})`);
    let packed: PackedImage;
    try {
      if (o.bundle !== undefined) {
        packed = await packTartBundle(o.bundle, workDir, {
          onProgress: (p) => display?.update([{ key: 'pack', label: `packing ${o.bundle}`, progress: { ...p, percent: p.bytesTotal > 0 ? (100 * p.bytesDone) / p.bytesTotal : 0 } }]),
        });
      } else {
        packed = await packFleetQemu(
          {
            ...(o.disk !== undefined ? { disk: o.disk } : {}),
            ...(o.kernel !== undefined ? { kernel: o.kernel } : {}),
            ...(o.initrd !== undefined ? { initrd: o.initrd } : {}),
            ...(o.cmdline !== undefined ? { cmdline: o.cmdline } : {}),
            architecture,
          },
          workDir,
        );
      }
    } catch (err) {
      throw describeFailure(err, `packing ${source}`);
    } finally {
      display?.end();
    }
    if (signal?.aborted) throw new InterruptedError();

    // 2. Upload config and layers (each skipped when the registry has it), a few at a time.
    const blobs = [packed.config, ...packed.layers];
    const total = blobs.reduce((s, b) => s + b.descriptor.size, 0);
    const done = new Map<string, number>();
    const label = `pushing ${target}`;
    const show = () => {
      const bytesDone = [...done.values()].reduce((s, n) => s + n, 0);
      display?.update([{ key: 'push', label, progress: { bytesDone, bytesTotal: total, percent: total > 0 ? (100 * bytesDone) / total : 0 } }]);
    };
    show();
    try {
      let next = 0;
      const worker = async () => {
        while (next < blobs.length) {
          const blob = blobs[next++]!;
          if (signal?.aborted) throw new InterruptedError();
          await client.uploadBlob(ref.repository, blob.path, blob.descriptor, {
            ...(signal ? { signal } : {}),
            onProgress: (n) => {
              done.set(blob.descriptor.digest, n);
              show();
            },
          });
          done.set(blob.descriptor.digest, blob.descriptor.size);
          show();
        }
      };
      await Promise.all(Array.from({ length: Math.min(UPLOAD_CONCURRENCY, blobs.length) }, worker));
      // 3. The manifest last: the tag appears only once every blob is there.
      const digest = await client.putManifest(ref.repository, tag, packed.manifestBytes, packed.manifest.mediaType);
      display?.end([{ key: 'push', label, progress: { bytesDone: total, bytesTotal: total, percent: 100 }, status: 'done' }]);
      return { reference: target, digest, mediaType: packed.manifest.mediaType, format, sizeBytes: total, blobs: blobs.length };
    } catch (err) {
      display?.end();
      if (signal?.aborted) throw new InterruptedError();
      throw describeFailure(err, `pushing to ${target}`);
    }
  } finally {
    client.close();
    await rm(workDir, { recursive: true, force: true });
  }
}
