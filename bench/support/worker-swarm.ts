// A child process that enrolls and runs many synthetic workers (the benchmark's
// stand-in for N hosts). Prints "ready <n>" once all are connected.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { enrollWorker, silentLogger, startWorker, type WorkerHandle } from '@fleet/worker';

const [controller, token, prefix, countArg, slotsArg] = process.argv.slice(2);
const slots = Number(slotsArg ?? 20);
const count = Number(countArg);
if (!controller || !token || !prefix || !Number.isInteger(count) || count < 1) {
  console.error('usage: worker-swarm CONTROLLER TOKEN NAME-PREFIX COUNT');
  process.exit(2);
}

const root = await mkdtemp(path.join(os.tmpdir(), `fleet-swarm-${prefix}-`));
const handles: WorkerHandle[] = [];
const logger = silentLogger();
for (let i = 0; i < count; i += 25) {
  // Enroll in small parallel batches: fast, without a thundering herd.
  const batch = Array.from({ length: Math.min(25, count - i) }, (_, j) => i + j);
  await Promise.all(
    batch.map(async (n) => {
      const dataDir = path.join(root, String(n));
      const name = `${prefix}-${n}`;
      await enrollWorker({ controller, token, name, dataDir, logger });
      handles.push(
        await startWorker({
          dataDir,
          logger,
          driver: 'synthetic',
          synthetic: { speed: 0, persist: false },
          // Synthetic VMs cost nothing: declare enough room for the benchmark's VMs.
          capacity: { cpus: slots * 2, memoryMib: slots * 4096, vmSlots: slots, macosSlots: 0 },
          labels: { swarm: prefix, rack: `r${n % 10}` },
        }),
      );
    }),
  );
}
const deadline = Date.now() + 120_000;
while (handles.some((h) => !h.connected()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
console.log(`ready ${handles.filter((h) => h.connected()).length}`);

const shutdown = async () => {
  await Promise.all(handles.map((h) => h.stop()));
  await rm(root, { recursive: true, force: true });
  process.exit(0);
};
process.once('SIGTERM', () => void shutdown());
process.once('SIGINT', () => void shutdown());
