// Disks of QEMU instances. Every instance gets its own qcow2 file in its run dir, created in
// milliseconds whatever the size (a "clone" is instant):
//  - the built-in guest (image "fleet-guest") boots its kernel directly; its disk is a blank
//    qcow2 of spec.diskGib that the guest formats and mounts at /data on first boot;
//  - an operator image (a qcow2 or raw file in the worker's images dir, named in spec.image)
//    becomes the read-only backing file of a copy-on-write qcow2 overlay, and the VM boots
//    from it through the firmware. Base images must not change while overlays use them.
import { execFile } from 'node:child_process';
import { access, stat } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { DriverError, type InstanceSpec } from './driver.ts';

const exec = promisify(execFile);

/** Names that select the built-in guest image. */
export const BUILTIN_IMAGES = new Set(['', 'fleet-guest', 'fleet-guest:latest']);
/** Operator image names: no path separators, so a spec can never point outside the images dir. */
const IMAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const EXTENSIONS = ['', '.qcow2', '.img', '.raw'];
const GIB = 1024 ** 3;

export type ImageSource = { kind: 'builtin' } | { kind: 'disk'; path: string; format: 'qcow2' | 'raw'; virtualBytes: number };

/** Where an instance's disk comes from; a clear DriverError for anything the worker cannot run. */
export async function resolveImage(image: string, imagesDir: string | undefined): Promise<ImageSource> {
  if (BUILTIN_IMAGES.has(image)) return { kind: 'builtin' };
  if (!IMAGE_NAME.test(image)) {
    throw new DriverError(`image ${JSON.stringify(image)}: the qemu driver runs "fleet-guest" or a file name from the worker's images dir (letters, digits, . _ -; no paths)`);
  }
  if (!imagesDir) throw new DriverError(`image ${JSON.stringify(image)}: this worker has no images dir (fleet-worker run --images-dir)`);
  for (const ext of EXTENSIONS) {
    const file = path.join(imagesDir, image + ext);
    try {
      if (!(await stat(file)).isFile()) continue;
    } catch {
      continue;
    }
    const info = await imageInfo(file);
    return { kind: 'disk', path: file, ...info };
  }
  throw new DriverError(
    `image ${JSON.stringify(image)} not found on this worker: put a qcow2 or raw disk named ${image}, ${image}.qcow2, ${image}.img or ${image}.raw in ${imagesDir}, or use "fleet-guest"`,
  );
}

/**
 * Where an instance's disk comes from and how it boots: a pulled registry image (issue 15) when the
 * spec carries one, else the built-in guest or an operator image from the images dir.
 */
export async function resolveSpecImage(spec: InstanceSpec, imagesDir: string | undefined): Promise<{ source: ImageSource; boot: 'kernel' | 'disk' }> {
  const pulled = spec.pulled;
  if (!pulled) {
    const source = await resolveImage(spec.image, imagesDir);
    return { source, boot: source.kind === 'builtin' ? 'kernel' : 'disk' };
  }
  if (pulled.format !== 'fleet-qemu') throw new DriverError(`image ${pulled.reference} is a ${pulled.format} image; the qemu driver runs Fleet qemu images`);
  if (pulled.kernel && !pulled.initrd) throw new DriverError(`image ${pulled.reference} boots a kernel without an initrd; the qemu driver needs both`);
  if (!pulled.kernel && !pulled.disk) throw new DriverError(`image ${pulled.reference} has neither a disk nor a kernel: nothing to boot`);
  let source: ImageSource = { kind: 'builtin' };
  if (pulled.disk) {
    // Checked again with qemu-img: a disk from a registry must stand alone (a backing file named
    // inside it could make QEMU read any file on the host) and be what its config says.
    const info = await imageInfo(pulled.disk.path);
    if (info.format !== pulled.disk.format) throw new DriverError(`image ${pulled.reference}: its disk is ${info.format}, its config says ${pulled.disk.format}`);
    source = { kind: 'disk', path: pulled.disk.path, ...info };
  }
  return { source, boot: pulled.kernel ? 'kernel' : 'disk' };
}

/** Format and size of a disk image, from `qemu-img info` (which also refuses broken files). */
export async function imageInfo(file: string): Promise<{ format: 'qcow2' | 'raw'; virtualBytes: number }> {
  let out: string;
  try {
    out = (await exec('qemu-img', ['info', '--output=json', '-U', file], { timeout: 30_000 })).stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new DriverError(`image ${file} cannot be read by qemu-img: ${(err.stderr ?? err.message).trim()}`);
  }
  const info = JSON.parse(out) as { format?: string; 'virtual-size'?: number; 'backing-filename'?: string };
  if (info.format !== 'qcow2' && info.format !== 'raw') throw new DriverError(`image ${file} is ${info.format ?? 'of an unknown format'}; the qemu driver takes qcow2 or raw`);
  // A backing chain could reach any file on the host: operator images must stand alone.
  if (info['backing-filename']) throw new DriverError(`image ${file} has a backing file (${info['backing-filename']}); flatten it with qemu-img convert`);
  return { format: info.format, virtualBytes: info['virtual-size'] ?? 0 };
}

/** Creates the instance's qcow2 (blank, or an overlay on the operator image); idempotent. */
export async function createInstanceDisk(file: string, source: ImageSource, diskGib: number): Promise<void> {
  try {
    await access(file);
    return; // made by an earlier create() of this instance
  } catch {
    /* create it */
  }
  const wantBytes = Math.max(1, diskGib) * GIB;
  const args =
    source.kind === 'builtin'
      ? ['create', '-q', '-f', 'qcow2', file, String(wantBytes)]
      : ['create', '-q', '-f', 'qcow2', '-b', source.path, '-F', source.format, file, String(Math.max(wantBytes, source.virtualBytes))];
  try {
    await exec('qemu-img', args, { timeout: 30_000 });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new DriverError(`cannot create the VM's disk ${file}: ${(err.stderr ?? err.message).trim()}`);
  }
}
