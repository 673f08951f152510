import { availableParallelism, hostname, totalmem } from 'node:os';
import type { DriverCapabilities } from '../drivers/driver.ts';

export interface CapacityConfig {
  cpus: number;
  memoryMib: number;
  /** VMs this worker runs at once. */
  vmSlots: number;
  /** macOS guests at once (Apple's licence: 2 per host); 0 when the driver cannot run macOS. */
  macosSlots: number;
  /**
   * VM addresses the driver's network can hand out (its NAT pool: 253 for a /24); the worker
   * holds one per VM instance, whatever its power state. 0 = the runtime does not limit them.
   */
  natAddresses: number;
}

/**
 * Host capacity with operator overrides. Defaults: logical CPUs, total memory, one VM slot
 * per logical CPU, as many macOS slots as the driver allows (capped by the VM slots), and the
 * driver's VM address pool (an override may only lower it: the pool is a fact of the network).
 */
export function detectCapacity(overrides: Partial<CapacityConfig>, driver: DriverCapabilities): CapacityConfig {
  const cpus = overrides.cpus ?? availableParallelism();
  const memoryMib = overrides.memoryMib ?? Math.floor(totalmem() / (1024 * 1024));
  const vmSlots = overrides.vmSlots ?? Math.max(1, cpus);
  const macosSlots = overrides.macosSlots ?? (driver.guestOs.includes('macos') ? Math.min(driver.maxMacosGuests, vmSlots) : 0);
  const pool = driver.natAddresses ?? 0;
  const natAddresses = overrides.natAddresses === undefined ? pool : pool > 0 ? Math.min(overrides.natAddresses, pool) : overrides.natAddresses;
  for (const [key, value] of Object.entries({ cpus, memoryMib, vmSlots, macosSlots, natAddresses })) {
    if (!Number.isInteger(value) || value < 0) throw new Error(`capacity ${key} must be a non-negative integer, got ${value}`);
  }
  return { cpus, memoryMib, vmSlots, macosSlots, natAddresses };
}

/** Platform as the controller wants it: os "darwin"/"linux", arch "arm64"/"amd64". */
export function detectPlatform(): { os: string; arch: string } {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  return { os: process.platform, arch };
}

export function detectHostname(): string {
  return hostname();
}

/**
 * A worker name the controller accepts (lower-case letters, digits and dashes, at most 63,
 * starting and ending alphanumeric) derived from a host name: "Mac-mini.local" → "mac-mini".
 */
export function defaultWorkerName(host: string = hostname()): string {
  const label = host.split('.')[0] ?? '';
  const cleaned = label
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  return cleaned || 'worker';
}
