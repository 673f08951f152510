import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** Environment variable that overrides the default data directory. */
export const DATA_DIR_ENV = 'FLEET_WORKER_DATA_DIR';

/** The system-wide data dir of a root worker on Linux: VM users must be able to pass through its parents. */
export const LINUX_ROOT_DATA_DIR = '/var/lib/fleet-worker';

/**
 * `--data-dir`, else $FLEET_WORKER_DATA_DIR, else ~/.fleet-worker — except for root on Linux,
 * whose home (0700) no VM user can pass through: /var/lib/fleet-worker there, unless an earlier
 * ~/.fleet-worker exists (kept, so an existing enrollment is found). `~/` is expanded.
 */
export function defaultDataDir(): string {
  const home = join(homedir(), '.fleet-worker');
  if (process.platform === 'linux' && process.getuid?.() === 0 && !existsSync(home)) return LINUX_ROOT_DATA_DIR;
  return home;
}

export function resolveDataDir(dataDir?: string): string {
  const chosen = dataDir ?? process.env[DATA_DIR_ENV] ?? defaultDataDir();
  if (chosen === '~') return homedir();
  if (chosen.startsWith('~/')) return join(homedir(), chosen.slice(2));
  return resolve(chosen);
}

/** Files of the data directory. */
export function dataDirLayout(dataDir: string) {
  return {
    dataDir,
    workerJson: join(dataDir, 'worker.json'),
    key: join(dataDir, 'key.pem'),
    cert: join(dataDir, 'cert.pem'),
    ca: join(dataDir, 'ca.pem'),
    machineId: join(dataDir, 'machine-id'),
    syntheticState: join(dataDir, 'synthetic', 'instances.json'),
  };
}
