// Cheap VM clones: every file of a Tart bundle copied with APFS copy-on-write (clonefile(2), what
// `cp -c` does; Node's fs.copyFile with COPYFILE_FICLONE_FORCE maps to copyfile(3) with
// COPYFILE_CLONE_FORCE on macOS), then a fresh identity: always a new MAC (two VMs with one MAC
// get one DHCP lease — Orchard's lesson), optionally a new machine identifier (ECID, macOS
// guests). A new MAC invalidates a saved state, so state.vzvmsave is not carried over then.
import { constants as fsc } from 'node:fs';
import { copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { BUNDLE_STATE, randomLocalMac, readTartConfig, writeTartConfig, type TartConfig } from './tart-bundle.ts';

export type CloneFile = (src: string, dst: string) => Promise<void>;

/** clonefile via copyfile(3): fails (ENOTSUP/EXDEV) instead of silently copying when the volume cannot clone. */
export const apfsClone: CloneFile = (src, dst) => copyFile(src, dst, fsc.COPYFILE_EXCL | fsc.COPYFILE_FICLONE_FORCE);

export interface CloneOptions {
  /** Generate a new machine identifier (macOS guests): needs the addon's newMachineIdentifier(). */
  newMachineIdentifier?: () => Uint8Array;
  /** How each file is cloned (default: APFS clone, failing if the volume cannot). */
  cloneFile?: CloneFile;
  /** MAC generator (tests). */
  randomMac?: () => string;
}

export interface CloneResult {
  config: TartConfig;
  files: string[];
}

export async function cloneBundle(srcDir: string, dstDir: string, opts: CloneOptions = {}): Promise<CloneResult> {
  const src = await readTartConfig(srcDir);
  const clone = opts.cloneFile ?? apfsClone;
  await mkdir(dstDir, { recursive: true, mode: 0o700 });
  const copied: string[] = [];
  try {
    for (const name of (await readdir(srcDir)).sort()) {
      // Runtime files of a running source VM and its saved state (the MAC changes) stay behind.
      if (name === BUNDLE_STATE || name === 'control.sock' || name.endsWith('.lock') || name.startsWith('.')) continue;
      try {
        await clone(path.join(srcDir, name), path.join(dstDir, name));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOTSUP' || code === 'EXDEV' || code === 'ENOSYS' || code === 'EOPNOTSUPP') {
          throw new Error(
            `cannot clone ${name} copy-on-write (${code}): the VM store and the image must be on the same APFS volume (a full copy of a disk image is refused on purpose)`,
          );
        }
        throw e;
      }
      copied.push(name);
    }
    const config: TartConfig = { ...src, macAddress: (opts.randomMac ?? randomLocalMac)() };
    if (opts.newMachineIdentifier) {
      if (src.os !== 'darwin') throw new Error('a new machine identifier applies to macOS bundles only');
      config.ecid = Buffer.from(opts.newMachineIdentifier()).toString('base64');
    }
    await writeTartConfig(dstDir, config);
    return { config, files: copied };
  } catch (e) {
    await rm(dstDir, { recursive: true, force: true });
    throw e;
  }
}
