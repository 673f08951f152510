// Every few seconds, the packet-filter counters of every running instance go to the controller
// (the API and the dashboard show them: passed and dropped frames by reason). Runtimes without
// a filter (synthetic) have nothing to sample, and then nothing runs.
import type { VmNetworkCounters, VmNetworkReport, VmStatus } from '@fleet/proto';
import type { Logger } from 'pino';
import type { Driver } from '../drivers/driver.ts';

export interface NetworkCounterSamplerOptions {
  driver: Driver;
  /** Instances the worker holds right now. */
  instances: () => VmStatus[];
  send: (report: VmNetworkReport) => void;
  log: Logger;
  intervalMs?: number;
}

export class NetworkCounterSampler {
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(private readonly opts: NetworkCounterSamplerOptions) {}

  start(): void {
    if (!this.opts.driver.networkCounters || this.timer) return;
    this.timer = setInterval(() => void this.sampleOnce(), this.opts.intervalMs ?? 5000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One round: ask the driver for every running instance, send what it answered. */
  async sampleOnce(): Promise<number> {
    const read = this.opts.driver.networkCounters?.bind(this.opts.driver);
    if (!read || this.busy) return 0;
    this.busy = true;
    try {
      const vms: VmNetworkCounters[] = [];
      for (const s of this.opts.instances()) {
        if (s.phase !== 'VM_PHASE_RUNNING' || !s.vmId) continue;
        const attempt = Number(s.attempt);
        const c = await read({ vmId: s.vmId, attempt }).catch((err: unknown) => {
          this.opts.log.debug({ vmId: s.vmId, err: String(err) }, 'network counters unavailable');
          return undefined;
        });
        if (!c) continue;
        vms.push({ vmId: s.vmId, attempt, fromVm: strings(c.fromVm), fromHost: strings(c.fromHost), sampledAtUnixMs: String(Date.now()) });
      }
      if (vms.length) this.opts.send({ vms });
      return vms.length;
    } finally {
      this.busy = false;
    }
  }
}

const strings = (o: Record<string, number>): Record<string, string> => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, String(v)]));
