// Driver prerequisites, reusing what the drivers themselves use: findBinary (uplink tools),
// probeKvm / ensureGuestImage (@fleet/guest-image), checkSignature (macOS codesign).
import { execFile } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, readdir } from 'node:fs/promises';
import { homedir, release } from 'node:os';
import path from 'node:path';
import { ensureGuestImage, probeKvm, type GuestImage } from '@fleet/guest-image';
import { checkSignature, signedNodePaths, VIRTUALIZATION_ENTITLEMENT } from '../macos/codesign.ts';
import { DEBIAN_PACKAGE, findBinary } from '../uplink/exec.ts';
import { fail, ok, skip, warn, type Check, type Finding } from './check.ts';
import { checkDataDirPermissions, checkSignedNodePermissions, checkVmUserGuiSessions } from './macos.ts';
import { checkQemuSandbox, checkRunningVms, checkVmUsers } from './vm-users.ts';
import { checkTapIo } from './tap-io.ts';

export const QEMU_BINARY = 'qemu-system-x86_64';

export function checkRoot(uid: number | undefined = process.getuid?.()): Finding {
  if (uid === undefined) return skip('no user ids on this platform');
  return uid === 0
    ? ok('running as root')
    : fail(`running as uid ${uid}; the qemu driver creates a bridge, TAP devices and nftables rules`, 'run fleet-worker as root (sudo fleet-worker run --driver qemu ...)');
}

/** A host tool the driver runs, found the way the uplink finds it. */
export function checkTool(name: string, find: (name: string) => string = findBinary): Finding {
  try {
    return ok(find(name));
  } catch {
    const pkg = DEBIAN_PACKAGE[name] ?? (name === QEMU_BINARY ? 'qemu-system-x86' : undefined);
    return fail(`\`${name}\` is not installed`, pkg ? `apt-get install ${pkg}   (or: scripts/install-system-deps.sh)` : `install ${name}`);
  }
}

/**
 * `dhcp_release` ends a removed VM's lease at once. Without it the network works, but a freed
 * address stays leased to the old MAC until the lease expires and is handed out again last.
 */
export function checkReleaseTool(find: (name: string) => string = findBinary): Finding {
  const found = checkTool('dhcp_release', find);
  if (found.status === 'ok') return found;
  return warn('`dhcp_release` is not installed: a removed VM\'s address stays leased until its lease expires', 'apt-get install dnsmasq-utils   (or: scripts/install-system-deps.sh)');
}

function commandOutput(file: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout) => (error ? reject(error) : resolve(stdout)));
  });
}

export async function checkQemu(find: (name: string) => string = findBinary): Promise<Finding> {
  const found = checkTool(QEMU_BINARY, find);
  if (found.status !== 'ok') return found;
  try {
    const version = (await commandOutput(found.detail, ['--version'], 3_000)).split('\n')[0]?.trim() ?? '';
    return ok(`${found.detail}: ${version}`);
  } catch (error) {
    return fail(`${found.detail} --version failed: ${(error as Error).message}`, 'reinstall QEMU: apt-get install --reinstall qemu-system-x86');
  }
}

export async function checkDeviceReadWrite(device: string, fix: string): Promise<Finding> {
  try {
    await access(device, fsConstants.R_OK | fsConstants.W_OK);
    return ok(`${device} is usable`);
  } catch (error) {
    return fail(`${device}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, fix);
  }
}

/** Where build.sh caches images ($FLEET_CACHE_DIR or ~/.cache/fleet). */
export function guestImageCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.FLEET_CACHE_DIR ?? path.join(env.HOME ?? homedir(), '.cache', 'fleet'), 'guest-image');
}

async function hasCachedImage(cacheRoot: string): Promise<boolean> {
  const entries = await readdir(cacheRoot, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    if (await access(path.join(cacheRoot, e.name, 'manifest.json')).then(() => true, () => false)) return true;
  }
  return false;
}

/**
 * The built-in guest image: when one is cached, ensureGuestImage() confirms it is current (a
 * cache hit is well under a second). Without a cache we do not start a build from doctor.
 */
export async function checkGuestImage(
  cacheRoot: string = guestImageCacheRoot(),
  ensure: () => Promise<GuestImage> = () => ensureGuestImage({ install: false }),
): Promise<{ finding: Finding; image?: GuestImage }> {
  const buildFix = 'build it now (a few minutes, installs Debian packages as root): bash guest-image/build.sh — or let the first VM build it';
  if (!(await hasCachedImage(cacheRoot))) {
    return { finding: warn(`no guest image cached under ${cacheRoot}; the first VM on the built-in image will build it`, buildFix) };
  }
  try {
    const image = await ensure();
    return { finding: ok(`guest image ${image.version} (kernel ${image.kernelVersion}) in ${image.dir}`), image };
  } catch (error) {
    return { finding: fail(`the cached guest image is out of date and cannot be rebuilt: ${(error as Error).message.split('\n')[0]}`, buildFix) };
  }
}

export async function checkKvm(
  image: GuestImage | undefined,
  probe: (image: GuestImage) => Promise<boolean> = (img) => probeKvm(10_000, { image: img }),
  device = '/dev/kvm',
): Promise<Finding> {
  const slower = 'guests run under TCG emulation, slower';
  try {
    await access(device, fsConstants.R_OK | fsConstants.W_OK);
  } catch (error) {
    return warn(`KVM not usable (${device}: ${(error as NodeJS.ErrnoException).code ?? 'inaccessible'}): ${slower}`, 'enable virtualization (VT-x/AMD-V, nested virtualization on a VM host) and load kvm_intel/kvm_amd');
  }
  if (!image) return warn(`${device} is present but KVM cannot be probed without the guest image; until then ${slower}`, 'build the guest image (see above) and run doctor again');
  return (await probe(image))
    ? ok('KVM works (a probe guest booted under -accel kvm)')
    : warn(`${device} is present but a KVM guest does not boot here: ${slower}`, 'check dmesg for kvm errors; nested virtualization may be disabled on this VM host');
}

/** Darwin kernel major → macOS major (Darwin 20 = macOS 11, ..., Darwin 22 = macOS 13). */
export function macosMajor(darwinRelease: string = release()): number {
  const major = Number(darwinRelease.split('.')[0]);
  return major >= 20 ? major - 9 : 10;
}

export function checkMacosVersion(darwinRelease: string = release()): Finding {
  const major = macosMajor(darwinRelease);
  return major >= 13
    ? ok(`macOS ${major} (Darwin ${darwinRelease})`)
    : fail(`macOS ${major} (Darwin ${darwinRelease}); the vz driver needs macOS 13 or newer`, 'upgrade macOS to 13 (Ventura) or newer');
}

export async function checkVirtualizationEntitlement(dataDir: string, check: typeof checkSignature = checkSignature): Promise<Finding> {
  const paths = signedNodePaths(dataDir);
  try {
    await access(paths.node);
  } catch {
    return warn(`${paths.node} does not exist yet`, 'it is created and signed by `fleet-worker run --driver vz` at start (needs the Xcode Command Line Tools: xcode-select --install)');
  }
  try {
    await check(paths);
    return ok(`${paths.node} is signed with ${VIRTUALIZATION_ENTITLEMENT}`);
  } catch (error) {
    const message = (error as Error).message;
    const at = message.indexOf('Fix: ');
    return fail(at >= 0 ? message.slice(0, at).trim() : message, at >= 0 ? message.slice(at + 5) : 'restart the worker, it re-signs its node copy at start');
  }
}

export interface DriverCheckOptions {
  driver: string;
  dataDir: string;
  platform?: NodeJS.Platform;
  /** vz: the VM users (names or uids), i.e. `--vm-user` of `fleet-worker run`. */
  vmUsers?: readonly string[];
}

/** The checks for one driver, in the order an operator would fix them. */
export function driverChecks(opts: DriverCheckOptions): Check[] {
  const platform = opts.platform ?? process.platform;
  switch (opts.driver) {
    case 'synthetic':
      return [{ name: 'driver', run: async () => skip('synthetic driver: nothing to check') }];
    case 'qemu': {
      if (platform !== 'linux') return [{ name: 'driver', run: async () => fail(`the qemu driver runs on Linux only (this is ${platform})`, 'use --driver vz on macOS') }];
      let image: GuestImage | undefined;
      return [
        { name: 'root', run: async () => checkRoot() },
        { name: 'qemu', run: () => checkQemu() },
        { name: 'qemu sandbox', timeoutMs: 5_000, run: () => checkQemuSandbox() },
        { name: 'vm users', run: () => checkVmUsers(opts.dataDir) },
        { name: '/dev/net/tun', run: () => checkDeviceReadWrite('/dev/net/tun', 'modprobe tun (and run as root)') },
        { name: 'tap io', run: () => checkTapIo() },
        ...['nft', 'dnsmasq', 'ip'].map((tool): Check => ({ name: tool, run: async () => checkTool(tool) })),
        { name: 'dhcp_release', run: async () => checkReleaseTool() },
        {
          name: 'guest image',
          timeoutMs: 30_000,
          run: async () => {
            const r = await checkGuestImage();
            image = r.image;
            return r.finding;
          },
        },
        { name: 'kvm', timeoutMs: 15_000, run: () => checkKvm(image) },
        { name: 'vm processes', run: () => checkRunningVms(path.join(opts.dataDir, 'qemu')) },
      ];
    }
    case 'vz':
      if (platform !== 'darwin') return [{ name: 'driver', run: async () => fail(`vz needs macOS (this is ${platform})`, 'use --driver qemu on Linux') }];
      return [
        { name: 'macOS', run: async () => checkMacosVersion() },
        { name: 'entitlement', timeoutMs: 10_000, run: () => checkVirtualizationEntitlement(opts.dataDir) },
        // Darwin only (this branch): macOS guests 15.2+ need the VM user's GUI login session.
        { name: 'gui session', timeoutMs: 10_000, run: () => checkVmUserGuiSessions(opts.vmUsers ? { configured: opts.vmUsers } : {}) },
        { name: 'data dir permissions', run: () => checkDataDirPermissions(opts.dataDir) },
        { name: 'signed node permissions', run: () => checkSignedNodePermissions(opts.dataDir) },
      ];
    default:
      return [{ name: 'driver', run: async () => fail(`unknown driver ${JSON.stringify(opts.driver)}`, 'use --driver qemu, vz or synthetic') }];
  }
}
