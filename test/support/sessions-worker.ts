// A worker process for the session e2e tests, run INSIDE the test's network namespace
// (`ip netns exec NS node test/support/sessions-worker.mjs`): it opens the namespace's NAT
// network, runs the real QEMU driver and the real worker (enrolled in FLEET_WORKER_DATA_DIR),
// and so reaches its VMs directly, exactly as a production worker does on its host.
// Config comes from the environment (JSON in FLEET_SESSIONS_WORKER).
import { NatNetwork } from '../../apps/worker/src/uplink/nat-network.ts';
import { QemuDriver } from '../../apps/worker/src/drivers/qemu.ts';
import { startWorker } from '../../apps/worker/src/worker.ts';
import { createLogger } from '../../apps/worker/src/logger.ts';

interface Config {
  dataDir: string;
  qemuDir: string;
  natName: string;
  subnet: string;
  dhcpRange: [string, string];
  natDir: string;
}

const cfg = JSON.parse(process.env.FLEET_SESSIONS_WORKER ?? '{}') as Config;
const logger = createLogger(process.env.FLEET_LOG_LEVEL ?? 'warn');
const quiet = { debug() {}, info() {}, warn: (o: object, m?: string) => logger.warn(o, m), error: (o: object, m?: string) => logger.error(o, m) };
const nat = await NatNetwork.open({ name: cfg.natName, subnet: cfg.subnet, uplinkInterface: 'lo', dhcpRange: cfg.dhcpRange, dataDir: cfg.natDir, log: quiet });
const driver = new QemuDriver({ dataDir: cfg.qemuDir, nat, accel: 'tcg', stopTimeoutMs: 5000 });
const worker = await startWorker({ dataDir: cfg.dataDir, driver, logger, resyncIntervalMs: 2000 });
console.log(`sessions-worker ready ${worker.name}`);
const stop = async () => {
  await worker.stop();
  await driver.close();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
