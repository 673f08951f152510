import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** Environment variable that overrides the default data directory. */
export const DATA_DIR_ENV = 'FLEET_WORKER_DATA_DIR';

/** `--data-dir`, else $FLEET_WORKER_DATA_DIR, else ~/.fleet-worker. `~/` is expanded. */
export function resolveDataDir(dataDir?: string): string {
  const chosen = dataDir ?? process.env[DATA_DIR_ENV] ?? join(homedir(), '.fleet-worker');
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
