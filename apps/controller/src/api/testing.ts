// The controller's core services on a test database, wired as the controller wires them (for
// API tests that build a real fastify server on them). Not used outside tests.
import type { FleetDb } from '@fleet/db';
import type { Logger } from 'pino';
import { TokenService } from '../auth/token-service.ts';
import { EventLog } from '../events/event-log.ts';
import { FleetBus } from '../fleet-bus.ts';
import { Metrics } from '../observability/metrics.ts';
import { VmSecrets } from '../secrets/vm-secrets.ts';
import { VmService } from '../vms/vm-service.ts';
import { WorkerService } from '../workers/worker-service.ts';

export function coreServices(db: FleetDb, log: Logger) {
  const metrics = new Metrics({ defaultMetrics: false });
  const bus = new FleetBus();
  const events = new EventLog(db);
  const vms = new VmService(db, events, bus, metrics, VmSecrets.ephemeral());
  const workers = new WorkerService(db, events, bus, vms, metrics, log, {
    timings: { heartbeatIntervalMs: 100, suspectAfterMs: 200, fenceAfterMs: 500, lostAfterMs: 1000 },
    controllerId: 'ctl-test',
    disconnect: () => undefined,
  });
  const tokens = new TokenService(db, events, 'f'.repeat(64));
  return { metrics, bus, events, vms, workers, tokens };
}
