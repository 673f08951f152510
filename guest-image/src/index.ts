// @fleet/guest-image: build (and cache) Fleet's small Linux test guest, and describe how to
// boot it with qemu-system-x86_64. The image itself is made by ../build.sh from Debian
// packages; this module runs that script, reads its manifest, and builds QEMU argument lists.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Absolute path of the build script. */
export const BUILD_SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'build.sh');

/** Linux on x86 truncates the kernel command line beyond this many bytes (COMMAND_LINE_SIZE). */
export const MAX_CMDLINE_BYTES = 2048;

export interface GuestImage {
  /** Path of the kernel (bzImage) for `-kernel`. */
  kernel: string;
  /** Path of the gzip'd cpio initramfs for `-initrd`. */
  initrd: string;
  /** Kernel command line the image expects (serial console etc.); append fleet.* options to it. */
  cmdlineBase: string;
  /** Version hash of the image (changes whenever any input changes). */
  version: string;
  /** Directory holding the image and its manifest.json. */
  dir: string;
  /** Debian cloud kernel release, e.g. 6.1.0-56-cloud-amd64. */
  kernelVersion: string;
  /** Whether an authorized key was baked into the image (--authorized-key). */
  bakedAuthorizedKey: boolean;
}

export interface EnsureGuestImageOptions {
  /** Output directory (build.sh --out). Default: <cacheDir>/guest-image/<version>/. */
  outDir?: string;
  /** Cache root; default $FLEET_CACHE_DIR or ~/.cache/fleet. */
  cacheDir?: string;
  /** OpenSSH public key file to bake into the image (build.sh --authorized-key). */
  authorizedKeyFile?: string;
  /** Rebuild even if the cached image is current. */
  force?: boolean;
  /** Install missing Debian packages with apt-get (needs root). Default true. */
  install?: boolean;
  /** Receives build.sh's progress lines (stderr). Default: discarded. */
  log?: (line: string) => void;
}

const inFlight = new Map<string, Promise<GuestImage>>();

/**
 * Make sure the guest image exists and is current; build it if needed (a cache hit takes well
 * under a second: build.sh hashes its inputs and finds the manifest). Concurrent calls with the
 * same options share one build; build.sh also takes a file lock, so separate processes are safe.
 */
export function ensureGuestImage(opts: EnsureGuestImageOptions = {}): Promise<GuestImage> {
  const key = JSON.stringify([opts.outDir, opts.cacheDir, opts.authorizedKeyFile, opts.force, opts.install]);
  let p = inFlight.get(key);
  if (!p) {
    p = runBuild(opts).finally(() => inFlight.delete(key));
    inFlight.set(key, p);
  }
  return p;
}

async function runBuild(opts: EnsureGuestImageOptions): Promise<GuestImage> {
  const args = [BUILD_SCRIPT];
  if (opts.outDir) args.push('--out', opts.outDir);
  if (opts.authorizedKeyFile) args.push('--authorized-key', opts.authorizedKeyFile);
  if (opts.force) args.push('--force');
  if (opts.install === false) args.push('--no-install');
  const env = { ...process.env };
  if (opts.cacheDir) env.FLEET_CACHE_DIR = opts.cacheDir;
  const { code, stdout, stderr } = await run('bash', args, env, opts.log);
  if (code !== 0) {
    const tail = stderr.trim().split('\n').slice(-15).join('\n');
    throw new Error(`guest-image build.sh failed (exit ${code}):\n${tail}`);
  }
  const manifestPath = stdout.trim().split('\n').pop()?.trim();
  if (!manifestPath) throw new Error('guest-image build.sh printed no manifest path');
  const m = JSON.parse(await readFile(manifestPath, 'utf8')) as Record<string, unknown>;
  const str = (k: string): string => {
    const v = m[k];
    if (typeof v !== 'string' || !v) throw new Error(`guest-image manifest ${manifestPath}: missing "${k}"`);
    return v;
  };
  return {
    kernel: str('kernel'),
    initrd: str('initrd'),
    cmdlineBase: str('cmdlineBase'),
    version: str('version'),
    dir: path.dirname(manifestPath),
    kernelVersion: str('kernelVersion'),
    bakedAuthorizedKey: m.bakedAuthorizedKey === true,
  };
}

function run(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  log?: (line: string) => void,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (stderr.length > 1_000_000) stderr = stderr.slice(-500_000);
      if (log) {
        const lines = (partial + d).split('\n');
        partial = lines.pop() ?? '';
        for (const l of lines) log(l);
      }
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (log && partial) log(partial);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

// ------------------------------------------------------------------------------------ cmdline

export interface GuestCmdlineOptions {
  /** OpenSSH public key lines to authorize for `fleet` and `root` (fleet.authorized_key=, base64). */
  authorizedKeys?: string[];
  /** Guest hostname (fleet.hostname=); also sent to the DHCP server. */
  hostname?: string;
  /** Further raw kernel parameters. */
  extra?: string[];
}

/** The kernel command line for one boot: the image's base plus Fleet's own options. */
export function guestCmdline(base: string, opts: GuestCmdlineOptions = {}): string {
  const parts = [base.trim()];
  for (const k of opts.authorizedKeys ?? []) {
    const line = k.trim();
    if (!line) continue;
    if (line.includes('\n')) throw new Error('authorizedKeys: one key per entry');
    parts.push(`fleet.authorized_key=${Buffer.from(line, 'utf8').toString('base64')}`);
  }
  if (opts.hostname !== undefined) {
    if (!/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(opts.hostname)) {
      throw new Error(`invalid hostname ${JSON.stringify(opts.hostname)}`);
    }
    parts.push(`fleet.hostname=${opts.hostname}`);
  }
  for (const e of opts.extra ?? []) {
    if (/\s/.test(e) || !e) throw new Error(`kernel parameter must be one word: ${JSON.stringify(e)}`);
    parts.push(e);
  }
  const cmdline = parts.filter(Boolean).join(' ');
  if (Buffer.byteLength(cmdline) >= MAX_CMDLINE_BYTES) {
    throw new Error(`kernel command line is ${Buffer.byteLength(cmdline)} bytes; the limit is ${MAX_CMDLINE_BYTES - 1} (bake long keys with --authorized-key)`);
  }
  return cmdline;
}

// ------------------------------------------------------------------------------------ QEMU

export type Accel = 'tcg' | 'kvm';

export interface QemuArgsOptions {
  /** Direct kernel boot; without it the firmware boots `disk`. */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** A virtio-blk disk (first in the boot order when there is no kernel). */
  disk?: { file: string; format: 'qcow2' | 'raw' };
  cpus: number;
  memoryMib: number;
  /**
   * The VM's screen (issue 19): a standard VGA device whose text console the guest uses
   * (console=tty0), served by QEMU's VNC server on this Unix socket only (never a TCP port), with
   * no password: whoever can open the socket is the VM host process's user and the worker.
   */
  vncSocket?: string;
  /**
   * File descriptor number *in the QEMU process* of one end of an AF_UNIX/SOCK_DGRAM socketpair:
   * one Ethernet frame per datagram (`-netdev dgram,local.type=fd`). Pass the fd at that index
   * in spawn's `stdio` array (e.g. stdio: ['ignore', out, err, fd] → netFd: 3).
   */
  netFd?: number;
  /**
   * How frames travel on netFd. 'dgram' (default): a SOCK_DGRAM socketpair, one frame per datagram
   * (`-netdev dgram`). 'stream': a SOCK_STREAM socketpair, each frame a 4-byte big-endian length
   * then the frame (`-netdev stream,addr.type=fd`, QEMU ≥ 7.2), so one syscall moves many frames.
   * 'vnet-tap': a TAP opened with IFF_VNET_HDR (`-netdev tap,fd=…`): frames carry a
   * virtio-net header, so the guest may hand over TSO super-frames and leave checksums to the host.
   */
  netFraming?: 'dgram' | 'stream' | 'vnet-tap';
  /**
   * QEMU user-mode (slirp) networking instead of netFd: DHCP on 10.0.2.0/24 inside QEMU,
   * host → guest forwards bound to loopback. For tests; never combine with netFd.
   */
  userNet?: { hostForwards?: Array<{ hostPort: number; guestPort: number; hostAddr?: string }> };
  /** MAC of the virtio-net NIC (default: QEMU's 52:54:00:12:34:56; give each VM its own). */
  mac?: string;
  /** The guest's serial console is written to this file. */
  serialLog: string;
  /** QMP control socket (server, no wait) for powerdown / pause / resume. */
  qmpSocket?: string;
  accel: Accel;
  /** virtio-rng fed from the host's /dev/urandom (default true: fast entropy for sshd). */
  rng?: boolean;
  /** Extra raw QEMU arguments appended at the end (disks, etc.). */
  extraArgs?: string[];
  /** VM name shown by QEMU (`-name`). */
  name?: string;
  /**
   * QEMU's seccomp sandbox (`-sandbox on,…`): obsolete syscalls, setuid/setgid, fork/exec and
   * scheduler/affinity changes are refused for the life of the process (QEMU_SANDBOX_ARGS).
   */
  sandbox?: boolean;
}

/** `-sandbox` as the Linux VM runtime uses it (QEMU built with libseccomp; Debian's is). */
export const QEMU_SANDBOX_ARGS = ['-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny'] as const;

/** Escape a value for QEMU's comma-separated option syntax. */
export function qemuOptValue(v: string): string {
  return v.replaceAll(',', ',,');
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** A stable, locally administered unicast MAC derived from a seed (e.g. a VM slot id). */
export function macFromSeed(seed: string): string {
  const h = createHash('sha256').update(seed).digest();
  const bytes = [0x52, 0x54, 0x00, h[0]!, h[1]!, h[2]!];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** Arguments for `qemu-system-x86_64`: direct kernel boot, no display, serial console to a file. */
export function qemuArgs(o: QemuArgsOptions): string[] {
  if (!Number.isInteger(o.cpus) || o.cpus < 1 || o.cpus > 255) throw new Error(`cpus must be 1..255, got ${o.cpus}`);
  if (!Number.isInteger(o.memoryMib) || o.memoryMib < 64) throw new Error(`memoryMib must be an integer >= 64, got ${o.memoryMib}`);
  if (o.netFd !== undefined && o.userNet) throw new Error('give netFd or userNet, not both');
  if (o.netFd !== undefined && (!Number.isInteger(o.netFd) || o.netFd < 3)) {
    throw new Error(`netFd must be an inherited descriptor >= 3, got ${o.netFd}`);
  }
  if (o.mac !== undefined) {
    if (!MAC_RE.test(o.mac)) throw new Error(`invalid MAC ${o.mac}`);
    if (parseInt(o.mac.slice(0, 2), 16) & 1) throw new Error(`MAC ${o.mac} is multicast`);
  }
  const args = [
    '-nodefaults',
    '-no-user-config',
    '-name', qemuOptValue(o.name ?? 'fleet-guest'),
    '-machine', 'q35',
    '-accel', o.accel,
    ...(o.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-smp', String(o.cpus),
    '-m', String(o.memoryMib),
    // No display and no monitor on stdio; the console goes to a file (like -nographic, minus stdio).
    '-display', 'none',
    '-monitor', 'none',
    '-chardev', `file,id=serial0,path=${qemuOptValue(o.serialLog)}`,
    '-serial', 'chardev:serial0',
    // A guest reboot or panic (panic=-1) ends the QEMU process: the VM host process sees it.
    '-no-reboot',
    ...(o.sandbox ? QEMU_SANDBOX_ARGS : []),
  ];
  if (o.kernel !== undefined) {
    if (o.initrd === undefined || o.cmdline === undefined) throw new Error('kernel boot needs initrd and cmdline');
    args.push('-kernel', o.kernel, '-initrd', o.initrd, '-append', o.cmdline);
  } else if (!o.disk) {
    throw new Error('nothing to boot: give a kernel or a disk');
  }
  if (o.disk) {
    args.push(
      '-drive', `file=${qemuOptValue(o.disk.file)},if=none,id=disk0,format=${o.disk.format},cache=writeback,discard=unmap`,
      // Direct kernel boot takes boot index 0 itself; a disk-booted VM boots from this disk.
      '-device', `virtio-blk-pci,drive=disk0${o.kernel === undefined ? ',bootindex=0' : ''}`,
    );
  }
  if (o.qmpSocket) {
    args.push('-chardev', `socket,id=qmp0,path=${qemuOptValue(o.qmpSocket)},server=on,wait=off`);
    args.push('-mon', 'chardev=qmp0,mode=control');
  }
  const nic = (netdev: string): string[] => [
    '-netdev', netdev,
    '-device', `virtio-net-pci,netdev=n0${o.mac ? `,mac=${o.mac}` : ''}`,
  ];
  if (o.netFd !== undefined) {
    // stream: server=off, the fd is already connected (QEMU treats it as the client end).
    args.push(
      ...nic(
        o.netFraming === 'stream'
          ? `stream,id=n0,server=off,addr.type=fd,addr.str=${o.netFd}`
          : o.netFraming === 'vnet-tap'
            ? `tap,id=n0,fd=${o.netFd}` // QEMU reads IFF_VNET_HDR off the fd (vnet_hdr= is refused with fd=)
            : `dgram,id=n0,local.type=fd,local.str=${o.netFd}`,
      ),
    );
  } else if (o.userNet) {
    let netdev = 'user,id=n0,ipv6=off';
    for (const f of o.userNet.hostForwards ?? []) {
      const addr = f.hostAddr ?? '127.0.0.1';
      netdev += `,hostfwd=tcp:${addr}:${f.hostPort}-:${f.guestPort}`;
    }
    args.push(...nic(netdev));
  }
  if (o.vncSocket !== undefined) {
    // `-display none` stays: no local window; -vnc adds the VNC server on the socket.
    args.push('-device', 'VGA', '-vnc', `unix:${qemuOptValue(o.vncSocket)}`);
  }
  if (o.rng !== false) {
    args.push('-object', 'rng-random,id=rng0,filename=/dev/urandom', '-device', 'virtio-rng-pci,rng=rng0');
  }
  args.push(...(o.extraArgs ?? []));
  return args;
}

// ------------------------------------------------------------------------------------ serial

/** Console markers printed by the guest (each on its own line). */
export const MARKERS = {
  init: /^FLEET-GUEST init\b/m,
  hostKey: /^FLEET-GUEST hostkey=(\S+ \S+)/m,
  ip: /^FLEET-GUEST ip=(\d+\.\d+\.\d+\.\d+)/m,
  ready: /^FLEET-GUEST ready ip=(\S*)/m,
  probeOk: /^FLEET-GUEST probe-ok\b/m,
  shutdown: /^FLEET-GUEST shutdown\b/m,
} as const;

export interface WaitForMarkerOptions {
  timeoutMs: number;
  /** Poll interval (default 50 ms). */
  intervalMs?: number;
  /** Give up early when this returns true (e.g. QEMU exited). */
  abort?: () => boolean;
}

/**
 * Wait until the serial log matches `pattern`; resolves with the match, or null on timeout/abort.
 * Polls the file (the log is written by QEMU, a separate process).
 */
export async function waitForSerialMarker(
  serialLog: string,
  pattern: RegExp,
  opts: WaitForMarkerOptions,
): Promise<RegExpMatchArray | null> {
  const deadline = Date.now() + opts.timeoutMs;
  const interval = opts.intervalMs ?? 50;
  for (;;) {
    let text = '';
    try {
      text = await readFile(serialLog, 'latin1');
    } catch {
      // not created yet
    }
    const m = text.replaceAll('\r', '').match(pattern);
    if (m) return m;
    if (Date.now() >= deadline || opts.abort?.()) return null;
    await new Promise((r) => setTimeout(r, interval));
  }
}

// ------------------------------------------------------------------------------------ KVM probe

export interface ProbeKvmOptions {
  image?: GuestImage;
  qemuBinary?: string;
}

/**
 * True only if a KVM guest really runs here: boots the image with `-accel kvm` and
 * `fleet.probe=1` and waits for the guest's "probe-ok" line. /dev/kvm missing or inaccessible,
 * QEMU failing, or no output within `timeoutMs` (the hang seen on these machines) → false.
 */
export async function probeKvm(timeoutMs = 10_000, opts: ProbeKvmOptions = {}): Promise<boolean> {
  try {
    await access('/dev/kvm', fsConstants.R_OK | fsConstants.W_OK);
  } catch {
    return false;
  }
  const image = opts.image ?? (await ensureGuestImage());
  const dir = await mkdtemp(path.join(tmpdir(), 'fleet-kvm-probe-'));
  const serialLog = path.join(dir, 'serial.log');
  try {
    await (await open(serialLog, 'w')).close();
    const args = qemuArgs({
      kernel: image.kernel,
      initrd: image.initrd,
      cmdline: `${image.cmdlineBase} fleet.probe=1`,
      cpus: 1,
      memoryMib: 128,
      serialLog,
      accel: 'kvm',
      rng: false,
    });
    const child = spawn(opts.qemuBinary ?? 'qemu-system-x86_64', args, { stdio: 'ignore' });
    let exited = false;
    child.on('exit', () => (exited = true));
    child.on('error', () => (exited = true));
    try {
      const m = await waitForSerialMarker(serialLog, MARKERS.probeOk, { timeoutMs, abort: () => exited });
      return m !== null;
    } finally {
      if (!exited) {
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
      }
    }
  } catch {
    return false;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

let accelChoice: Promise<Accel> | undefined;

/** 'kvm' if probeKvm says KVM really works, else 'tcg'. Probed once per process. */
export function chooseAccel(timeoutMs = 10_000, opts: ProbeKvmOptions = {}): Promise<Accel> {
  accelChoice ??= probeKvm(timeoutMs, opts).then((ok) => (ok ? 'kvm' : 'tcg'));
  return accelChoice;
}
