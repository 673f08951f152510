import type { Logger } from 'pino';
import { DriverError, type Driver } from './driver.ts';
import { SyntheticDriver, SYNTHETIC_DRIVER_NAME } from './synthetic.ts';

/** Driver names `fleet-worker run --driver` accepts. QEMU and VZ land in later issues. */
export const AVAILABLE_DRIVERS = [SYNTHETIC_DRIVER_NAME] as const;
export type DriverName = (typeof AVAILABLE_DRIVERS)[number];

export interface CreateDriverOptions {
  logger: Logger;
  /** Synthetic: delay multiplier (1 realistic, 0 instant). */
  syntheticSpeed?: number;
  /** Synthetic: persist instances here (re-attach after a restart). */
  syntheticStateFile?: string;
  /** Synthetic: seed of the fake address pool (the worker name). */
  poolSeed?: string;
  /** Synthetic: macOS guests allowed at once. */
  maxMacosGuests?: number;
}

export function createDriver(name: string, options: CreateDriverOptions): Driver {
  switch (name) {
    case SYNTHETIC_DRIVER_NAME:
      return new SyntheticDriver({
        logger: options.logger,
        ...(options.syntheticSpeed !== undefined ? { speed: options.syntheticSpeed } : {}),
        ...(options.syntheticStateFile !== undefined ? { stateFile: options.syntheticStateFile } : {}),
        ...(options.poolSeed !== undefined ? { poolSeed: options.poolSeed } : {}),
        ...(options.maxMacosGuests !== undefined ? { maxMacosGuests: options.maxMacosGuests } : {}),
      });
    default:
      throw new DriverError(`driver ${JSON.stringify(name)} is not available in this build (available: ${AVAILABLE_DRIVERS.join(', ')})`);
  }
}
