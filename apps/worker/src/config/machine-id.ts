// The machine identity a worker enrolls with and presents in every Hello. The controller
// refuses to hand a worker name held by one machine id to another.
//
// It is derived from the host's platform id AND the data dir:
//   platform id: /etc/machine-id (or /var/lib/dbus/machine-id) on Linux, IOPlatformUUID on
//                macOS, else a random UUID generated once and kept in <data-dir>/machine-id
//   machine id:  sha256("fleet-worker\0" + platform id + "\0" + absolute data dir), 32 hex
// so it is stable for a data dir (restarts, `enroll --force`), differs between two workers
// (two data dirs) on one host — each is its own "machine" to the controller — and never
// reveals the raw platform id. worker.json keeps the value used at enrollment.
import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { atomicWrite } from './credentials.ts';
import { dataDirLayout } from './paths.ts';

const execFileAsync = promisify(execFile);

export interface MachineIdOptions {
  /** Files tried in order (default: /etc/machine-id, /var/lib/dbus/machine-id). */
  files?: string[];
  /** Ask macOS for IOPlatformUUID (default: on darwin). */
  useIoreg?: boolean;
}

export async function resolveMachineId(dataDir: string, options: MachineIdOptions = {}): Promise<string> {
  const platformId = await resolvePlatformId(dataDir, options);
  return createHash('sha256').update(`fleet-worker\0${platformId}\0${resolve(dataDir)}`).digest('hex').slice(0, 32);
}

/** The host's own identity (see the file comment). */
export async function resolvePlatformId(dataDir: string, options: MachineIdOptions = {}): Promise<string> {
  for (const file of options.files ?? ['/etc/machine-id', '/var/lib/dbus/machine-id']) {
    const id = await readFile(file, 'utf8').then((t) => t.trim(), () => '');
    if (/^[0-9a-f]{32}$/i.test(id)) return id.toLowerCase();
  }
  if (options.useIoreg ?? process.platform === 'darwin') {
    try {
      const { stdout } = await execFileAsync('ioreg', ['-rd1', '-c', 'IOPlatformExpertDevice'], { timeout: 5000 });
      const match = /"IOPlatformUUID"\s*=\s*"([0-9A-Fa-f-]{36})"/.exec(stdout);
      if (match) return match[1]!.toLowerCase();
    } catch {
      // fall through to the generated id
    }
  }
  const file = dataDirLayout(dataDir).machineId;
  const stored = await readFile(file, 'utf8').then((t) => t.trim(), () => '');
  if (stored !== '') return stored;
  const generated = randomUUID();
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await atomicWrite(file, `${generated}\n`, 0o644);
  return generated;
}
