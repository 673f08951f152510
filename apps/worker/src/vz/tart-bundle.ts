// Tart-format VM bundles, so existing Tart images can be used as they are:
//
//   <bundle>/config.json     VM config (below)
//   <bundle>/disk.img        raw disk image (diskFormat "raw"; "asif" on newer Tart)
//   <bundle>/nvram.bin       macOS: VZMacAuxiliaryStorage; Linux: the EFI variable store
//   <bundle>/state.vzvmsave  saved machine state (macOS 14+), optional
//
// config.json keys (Tart's VMConfig CodingKeys): version, os ("darwin" | "linux"), arch
// ("arm64" | "amd64"), cpuCountMin, cpuCount, memorySizeMin, memorySize (bytes), macAddress,
// display { width, height }, displayRefit, diskFormat, and for macOS guests ecid and
// hardwareModel (base64 of VZMacMachineIdentifier / VZMacHardwareModel dataRepresentation).
// Unknown keys are kept when we rewrite the file, so a Tart that reads it later loses nothing.
import { randomBytes } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

export const BUNDLE_CONFIG = 'config.json';
export const BUNDLE_DISK = 'disk.img';
export const BUNDLE_NVRAM = 'nvram.bin';
export const BUNDLE_STATE = 'state.vzvmsave';

export interface TartConfig {
  version: number;
  os: 'darwin' | 'linux';
  arch: 'arm64' | 'amd64';
  cpuCountMin: number;
  cpuCount: number;
  memorySizeMin: number;
  memorySize: number;
  macAddress: string;
  display: { width: number; height: number; [k: string]: unknown };
  displayRefit?: boolean;
  diskFormat?: string;
  /** base64 VZMacMachineIdentifier.dataRepresentation (macOS guests). */
  ecid?: string;
  /** base64 VZMacHardwareModel.dataRepresentation (macOS guests). */
  hardwareModel?: string;
  /** Keys we do not interpret, preserved on write. */
  [extra: string]: unknown;
}

export class TartBundleError extends Error {
  override readonly name = 'TartBundleError';
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const B64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

export function bundlePaths(dir: string): { config: string; disk: string; nvram: string; state: string } {
  return {
    config: path.join(dir, BUNDLE_CONFIG),
    disk: path.join(dir, BUNDLE_DISK),
    nvram: path.join(dir, BUNDLE_NVRAM),
    state: path.join(dir, BUNDLE_STATE),
  };
}

function posInt(v: unknown, key: string, file: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new TartBundleError(`${file}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/** Validates a parsed config.json (Tart format). Throws TartBundleError naming the file and key. */
export function parseTartConfig(raw: unknown, file = BUNDLE_CONFIG): TartConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new TartBundleError(`${file}: not a JSON object`);
  const o = raw as Record<string, unknown>;
  const version = o.version === undefined ? 1 : posInt(o.version, 'version', file);
  if (o.os !== 'darwin' && o.os !== 'linux') throw new TartBundleError(`${file}: "os" must be "darwin" or "linux", got ${JSON.stringify(o.os)}`);
  if (o.arch !== 'arm64' && o.arch !== 'amd64') throw new TartBundleError(`${file}: "arch" must be "arm64" or "amd64", got ${JSON.stringify(o.arch)}`);
  const cpuCountMin = posInt(o.cpuCountMin, 'cpuCountMin', file);
  const cpuCount = posInt(o.cpuCount, 'cpuCount', file);
  const memorySizeMin = posInt(o.memorySizeMin, 'memorySizeMin', file);
  const memorySize = posInt(o.memorySize, 'memorySize', file);
  if (typeof o.macAddress !== 'string' || !MAC_RE.test(o.macAddress.toLowerCase())) {
    throw new TartBundleError(`${file}: "macAddress" must look like aa:bb:cc:dd:ee:ff, got ${JSON.stringify(o.macAddress)}`);
  }
  let display = { width: 1024, height: 768 } as TartConfig['display'];
  if (o.display !== undefined) {
    if (typeof o.display !== 'object' || o.display === null) throw new TartBundleError(`${file}: "display" must be an object`);
    const d = o.display as Record<string, unknown>;
    display = { ...d, width: posInt(d.width, 'display.width', file), height: posInt(d.height, 'display.height', file) };
  }
  if (o.os === 'darwin') {
    for (const k of ['ecid', 'hardwareModel'] as const) {
      if (typeof o[k] !== 'string' || !B64_RE.test(o[k] as string)) throw new TartBundleError(`${file}: a macOS bundle needs base64 "${k}"`);
    }
  }
  if (o.diskFormat !== undefined && o.diskFormat !== 'raw') {
    throw new TartBundleError(`${file}: disk format ${JSON.stringify(o.diskFormat)} is not supported (only "raw" disk images)`);
  }
  return { ...o, version, os: o.os, arch: o.arch, cpuCountMin, cpuCount, memorySizeMin, memorySize, macAddress: o.macAddress.toLowerCase(), display } as TartConfig;
}

export async function readTartConfig(dir: string): Promise<TartConfig> {
  const file = bundlePaths(dir).config;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new TartBundleError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); is ${dir} a Tart VM bundle?`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new TartBundleError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return parseTartConfig(raw, file);
}

/** Writes config.json atomically (temp file + rename), in Tart's key order. */
export async function writeTartConfig(dir: string, cfg: TartConfig): Promise<void> {
  parseTartConfig(cfg);
  const ordered: Record<string, unknown> = {};
  for (const k of ['version', 'os', 'arch', 'cpuCountMin', 'cpuCount', 'memorySizeMin', 'memorySize', 'macAddress', 'display', 'displayRefit', 'diskFormat', 'ecid', 'hardwareModel']) {
    if (cfg[k] !== undefined) ordered[k] = cfg[k];
  }
  for (const [k, v] of Object.entries(cfg)) if (!(k in ordered) && v !== undefined) ordered[k] = v;
  const file = bundlePaths(dir).config;
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, JSON.stringify(ordered, null, 2) + '\n', { mode: 0o644 });
  await rename(tmp, file);
}

/**
 * A random locally administered unicast MAC (like VZMACAddress.randomLocallyAdministered):
 * first octet has bit 1 (local) set and bit 0 (multicast) clear.
 */
export function randomLocalMac(random: (n: number) => Buffer = randomBytes): string {
  const b = random(6);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** The hardware model and machine identifier of a macOS bundle, decoded. */
export function macIdentity(cfg: TartConfig): { hardwareModel: Buffer; machineIdentifier: Buffer } {
  if (cfg.os !== 'darwin' || !cfg.hardwareModel || !cfg.ecid) throw new TartBundleError('not a macOS bundle (no hardwareModel/ecid)');
  return { hardwareModel: Buffer.from(cfg.hardwareModel, 'base64'), machineIdentifier: Buffer.from(cfg.ecid, 'base64') };
}

/** CPU and memory for a VM from this bundle: the request, but never below the bundle's minimums. */
export function resourcesFor(cfg: TartConfig, requested: { cpus: number; memoryMib: number }): { cpus: number; memoryBytes: number } {
  const cpus = Math.max(cfg.cpuCountMin, requested.cpus > 0 ? requested.cpus : cfg.cpuCount);
  const wanted = requested.memoryMib > 0 ? requested.memoryMib * 1024 * 1024 : cfg.memorySize;
  return { cpus, memoryBytes: Math.max(cfg.memorySizeMin, wanted) };
}
