/**
 * VM images from OCI registries (issue 15, item 8): pull throughput against skopeo, and
 * create → running for a batch of VMs of one registry image with a cold and a warm cache.
 *
 *   pnpm exec tsx bench/image-pull.ts [--part all|pull|vms] [--size 1GiB] [--rounds 3] [--concurrency 4]
 *                                     [--vms 10] [--pairs 2] [--guest-disk 256MiB] [--vm-timeout 900] [--dir /tmp]
 *
 * `--size` may also come from FLEET_BENCH_IMAGE_SIZE. Needs Debian's docker-registry and skopeo
 * (scripts/install-system-deps.sh); part 2 also needs root, ip netns, QEMU and dnsmasq. All traffic
 * goes to 127.0.0.1 and to the network namespace the run creates (test/support/sessions-env.ts).
 *
 *  1. Pull throughput (goal: the worker's pull ≥ 90 % of skopeo's). Debian's registry on
 *     127.0.0.1 (`startTestRegistry`), one Fleet qemu image made from a raw disk of `--size`
 *     random (incompressible) bytes (`packFleetQemu`: 64 MiB layers), pushed with
 *     `skopeo copy --preserve-digests oci:… docker://…`. Then `--rounds` rounds, the order of the
 *     contenders reversed every other round, each on a fresh output dir, `sync` before each:
 *       (a) baseline: `skopeo copy --src-tls-verify=false docker://HOST/bench/disk:1 dir:OUT`
 *           (manifest, config and layers, digests verified, written as files);
 *       (b) Fleet: the worker's ImageCache.prefetch of HOST/bench/disk@DIGEST into a fresh cache:
 *           manifest, config, then the disk pieces downloaded straight into the disk file (4 at
 *           a time, positioned writes, each piece's sha256 verified as it arrives), one fsync;
 *       (c) Fleet's download phase alone: getImageManifest + config + downloadBlobs (concurrency 4);
 *       (d) right after (c), unpackFleetQemu alone on (c)'s blobs. (c) + (d) is how the cache
 *           pulled before it streamed into the disk (two passes: blob files, then the disk).
 *     MB/s = layer bytes (10^6) / wall time. CPU: this process (b, c, d), skopeo (its rusage), the
 *     registry (/proc) per GiB. The page cache is not dropped: the registry's blobs were just
 *     pushed and stay cached (checked with fincore), so every contender reads them from memory.
 *  2. create → running with an IP for `--vms` VMs of one image, at once, cold cache then warm
 *     cache, `--pairs` times (each pair its own image, so each cold batch pulls a digest the worker
 *     has never seen): the e2e world (controller on the host, a real qemu worker in a network namespace),
 *     the registry on the namespace link's host address, the built-in guest packed as a Fleet qemu
 *     image (its kernel + initrd, plus a `--guest-disk` random raw disk so that the pull matters),
 *     pushed with skopeo, the registry marked insecure through the API (`fleet registry login
 *     --insecure`). The worker is the one of sessions-env (same namespace, NAT, data dir and
 *     enrollment) restarted by this script with a capacity of `--vms` VM slots (sessions-env's has
 *     one slot per core), and with its ImageCache.acquire timed (first call → image ready = the
 *     pull). Per VM: POST /v1/vms sent → GET /v1/vms shows it running with an IP (polled every
 *     200 ms); → scheduled / → starting / → running from the VM's events. The VMs are deleted (and
 *     confirmed gone) between the batches; the image stays cached for the warm batch.
 *     QEMU runs without KVM here (TCG): guest boots dominate, and `--vms` guests share the cores.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { promisify, parseArgs } from 'node:util';
import { RegistryClient, downloadBlobs } from '@fleet/oci';
import { registryToolsMissing, startTestRegistry, type TestRegistry } from '@fleet/oci/testing';
import { packFleetQemu, parseFleetQemuConfig, parseImageManifest, unpackFleetQemu, writeOciLayout, type ImageManifest } from '@fleet/vm-image';
import { ImageCache } from '../apps/worker/src/images/image-cache.ts';
import { ensureGuestImage } from '../guest-image/src/index.ts';
import { waitUntil } from '../test/support/fleet-processes.ts';
import { sessionsPrerequisites, spawnLogged, startSessionsEnv, type SessionsEnv, type Spawned } from '../test/support/sessions-env.ts';
import { logLine, markdownTable, percentile } from './support/report.ts';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const WORKER_CHILD_ENV = 'FLEET_BENCH_IMAGE_PULL_WORKER';
const PLATFORM = { os: 'linux', architecture: 'amd64' };
const log = logLine;
const table = markdownTable;
const pct = percentile;
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));
/** What to undo if the run is interrupted (the finally blocks do it otherwise). */
const cleanups = new Set<() => Promise<void>>();
const load = (): string => os.loadavg().map((x) => x.toFixed(2)).join(' ');
const median = (xs: number[]): number => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '–');
const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '–');
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '–');

function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|k|kib|m|mib|g|gib)?$/i.exec(s.trim());
  if (!m) return NaN;
  const unit = (m[2] ?? 'b').toLowerCase();
  const mult = unit.startsWith('g') ? GiB : unit.startsWith('m') ? MiB : unit.startsWith('k') ? 1024 : 1;
  return Math.round(Number(m[1]) * mult);
}

// ------------------------------------------------------------------ measuring helpers

/** CPU ms used by this process's waited-for children so far (cutime + cstime, /proc/self/stat). */
function childrenCpuMs(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  const tick = 1000 / 100; // USER_HZ is 100 on Linux
  return (Number(fields[13]) + Number(fields[14])) * tick;
}

/** CPU ms (user + system) of a process; NaN when it is gone. */
function processCpuMs(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return NaN;
  }
}

/** The docker-registry process serving `reg` (its config file lies next to its data dir). */
function registryPid(reg: TestRegistry): number | undefined {
  const config = path.join(path.dirname(reg.dataDir), 'config.yml');
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      if (cmd.includes('docker-registry') && cmd.includes(config)) return Number(p);
    } catch {
      /* gone */
    }
  }
  return undefined;
}

/** Bytes of regular files under dir, and the files. */
async function filesUnder(dir: string): Promise<{ bytes: number; files: string[] }> {
  let bytes = 0;
  const files: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const p = path.join(e.parentPath, e.name);
    files.push(p);
    bytes += (await stat(p)).size;
  }
  return { bytes, files };
}

/** Share (0..1) of the bytes of the files that are in the page cache (util-linux fincore). */
function pageCached(files: string[]): number {
  let res = 0;
  let size = 0;
  for (let i = 0; i < files.length; i += 200) {
    try {
      const out = execFileSync('fincore', ['--bytes', '--noheadings', '--raw', '-o', 'RES,SIZE', ...files.slice(i, i + 200)], { encoding: 'utf8' });
      for (const line of out.trim().split('\n')) {
        const [r, s] = line.trim().split(/\s+/).map(Number);
        res += r ?? 0;
        size += s ?? 0;
      }
    } catch {
      return NaN;
    }
  }
  return size > 0 ? res / size : NaN;
}

async function writeRandomFile(file: string, bytes: number): Promise<void> {
  const fh = await open(file, 'w');
  try {
    const buf = Buffer.allocUnsafe(4 * MiB);
    for (let done = 0; done < bytes; ) {
      const n = Math.min(buf.length, bytes - done);
      randomFillSync(buf, 0, n);
      await fh.write(buf, 0, n);
      done += n;
    }
  } finally {
    await fh.close();
  }
}

const memInfo = (): string => {
  const m = Object.fromEntries(readFileSync('/proc/meminfo', 'utf8').split('\n').filter(Boolean).map((l) => {
    const [k, v] = l.split(':');
    return [k!, Number.parseInt(v ?? '0', 10) / 1024];
  }));
  return `memory: ${f0(m.MemTotal ?? NaN)} MiB total, ${f0(m.MemAvailable ?? NaN)} MiB available, page cache ${f0(m.Cached ?? NaN)} MiB, dirty ${f0(m.Dirty ?? NaN)} MiB`;
};

async function pushWithSkopeo(layoutDir: string, tag: string, dest: string): Promise<number> {
  const t0 = performance.now();
  await execFileP('skopeo', ['copy', '--quiet', '--preserve-digests', '--dest-tls-verify=false', `oci:${layoutDir}:${tag}`, `docker://${dest}`], { maxBuffer: 16 * MiB, timeout: 30 * 60_000 });
  return performance.now() - t0;
}

// ------------------------------------------------------------------ 1. pull throughput

interface Run {
  ms: number;
  /** CPU ms of the client (this process, or skopeo). */
  clientCpuMs: number;
  registryCpuMs: number;
}

interface PullRound {
  skopeo: Run;
  cache: Run;
  download: Run;
  unpack: Run;
}

interface PullResult {
  layerBytes: number;
  layers: number;
  pushMs: number;
  cachedBefore: number;
  cachedAfter: number;
  rounds: PullRound[];
  loadStart: string;
  loadEnd: string;
}

async function pullPart(o: { size: number; rounds: number; concurrency: number; dir: string }): Promise<PullResult> {
  const loadStart = load();
  const root = await mkdtemp(path.join(o.dir, 'fleet-bench-pull-'));
  let reg: TestRegistry | undefined;
  const cleanup = async () => {
    await reg?.stop().catch(() => {});
    await rm(root, { recursive: true, force: true });
  };
  cleanups.add(cleanup);
  try {
    reg = await startTestRegistry({ dir: path.join(root, 'registry') });
    const host = reg.host;
    const regPid = registryPid(reg);
    log(`registry ${host} (pid ${regPid ?? '?'}), data in ${reg.dataDir}`);

    // The image: a raw disk of random bytes, packed as a Fleet qemu image, pushed with skopeo.
    const disk = path.join(root, 'disk.raw');
    let t = performance.now();
    await writeRandomFile(disk, o.size);
    log(`wrote ${f0(o.size / MiB)} MiB of random bytes in ${f0(performance.now() - t)} ms`);
    t = performance.now();
    const packed = await packFleetQemu({ disk, diskFormat: 'raw', architecture: 'amd64' }, path.join(root, 'pack'));
    await writeOciLayout(packed, path.join(root, 'layout'), 'bench');
    log(`packed: ${packed.layers.length} layers, manifest ${packed.manifestDigest} (${f0(performance.now() - t)} ms)`);
    const pushMs = await pushWithSkopeo(path.join(root, 'layout'), 'bench', `${host}/bench/disk:1`);
    const layerBytes = packed.layers.reduce((n, l) => n + l.descriptor.size, 0);
    log(`pushed with skopeo in ${f0(pushMs)} ms (${f0(layerBytes / 1e6 / (pushMs / 1000))} MB/s)`);
    await rm(disk, { force: true });
    await rm(path.join(root, 'pack'), { recursive: true, force: true });
    await rm(path.join(root, 'layout'), { recursive: true, force: true });
    const digest = packed.manifestDigest;

    const regFiles = (await filesUnder(reg.dataDir)).files;
    const cachedBefore = pageCached(regFiles);
    log(`registry blobs in the page cache: ${f1(cachedBefore * 100)} %; ${memInfo()}`);

    const measure = async (fn: () => Promise<void>, childCpu: boolean): Promise<Run> => {
      execFileSync('sync');
      const cpu0 = process.cpuUsage();
      const child0 = childrenCpuMs();
      const reg0 = processCpuMs(regPid);
      const t0 = performance.now();
      await fn();
      const ms = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      return {
        ms,
        clientCpuMs: childCpu ? childrenCpuMs() - child0 : (cpu.user + cpu.system) / 1000,
        registryCpuMs: processCpuMs(regPid) - reg0,
      };
    };

    const runSkopeo = async (out: string): Promise<Run> => {
      const r = await measure(async () => {
        await execFileP('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${host}/bench/disk:1`, `dir:${out}`], { maxBuffer: 16 * MiB, timeout: 30 * 60_000 });
      }, true);
      const got = await filesUnder(out);
      if (got.bytes < layerBytes) throw new Error(`skopeo wrote ${got.bytes} bytes to ${out}; the layers are ${layerBytes}`);
      return r;
    };

    const runCache = async (dir: string): Promise<Run> => {
      const cache = new ImageCache({ dir, limitBytes: 0, platform: PLATFORM, formats: ['fleet-qemu'], inUse: async () => new Set(), log: { info() {}, warn() {} }, downloadConcurrency: o.concurrency });
      let size = 0;
      const r = await measure(async () => {
        const image = await cache.prefetch({ reference: `${host}/bench/disk@${digest}`, access: { insecure: true } });
        size = image.disk ? (await stat(image.disk.path)).size : 0;
      }, false);
      if (size !== o.size) throw new Error(`the image cache unpacked a disk of ${size} bytes; expected ${o.size}`);
      return r;
    };

    const runDownloadAndUnpack = async (dir: string): Promise<{ download: Run; unpack: Run }> => {
      const client = new RegistryClient({ registry: host, insecure: true });
      let manifest: ImageManifest | undefined;
      let config: Buffer | undefined;
      let blobs = new Map<string, string>();
      const download = await measure(async () => {
        const { manifest: fetched } = await client.getImageManifest('bench/disk', digest, PLATFORM);
        manifest = parseImageManifest(fetched.json);
        config = await client.getBlob('bench/disk', manifest.config, 4 * MiB);
        blobs = await downloadBlobs(client, 'bench/disk', manifest.layers, path.join(dir, 'blobs'), { concurrency: o.concurrency });
      }, false);
      client.close();
      const unpack = await measure(async () => {
        await unpackFleetQemu(manifest!, parseFleetQemuConfig(config!), (d) => blobs.get(d)!, path.join(dir, 'image'));
      }, false);
      return { download, unpack };
    };

    const rounds: PullRound[] = [];
    for (let r = 1; r <= o.rounds; r++) {
      const round: Partial<PullRound> = {};
      const steps: [string, () => Promise<void>][] = [
        ['a skopeo', async () => void (round.skopeo = await runSkopeo(path.join(root, `skopeo-${r}`)))],
        ['b cache', async () => void (round.cache = await runCache(path.join(root, `cache-${r}`)))],
        ['c download + d unpack', async () => void Object.assign(round, await runDownloadAndUnpack(path.join(root, `download-${r}`)))],
      ];
      if (r % 2 === 0) steps.reverse();
      for (const [, step] of steps) {
        await step();
        for (const d of ['skopeo', 'cache', 'download']) await rm(path.join(root, `${d}-${r}`), { recursive: true, force: true });
      }
      const full = round as PullRound;
      rounds.push(full);
      const mbs = (x: Run) => f0(layerBytes / 1e6 / (x.ms / 1000));
      log(`round ${r} (${steps.map((s) => s[0]).join(', ')}): skopeo ${mbs(full.skopeo)} MB/s, Fleet cache ${mbs(full.cache)} MB/s, Fleet download ${mbs(full.download)} MB/s, unpack ${mbs(full.unpack)} MB/s; load ${load()}`);
    }
    const cachedAfter = pageCached(regFiles);
    return { layerBytes, layers: packed.layers.length, pushMs, cachedBefore, cachedAfter, rounds, loadStart, loadEnd: load() };
  } finally {
    await reg?.stop().catch(() => {});
    await rm(root, { recursive: true, force: true });
    cleanups.delete(cleanup);
  }
}

// ------------------------------------------------------------------ 2. create → running, cold vs warm

interface Acquire {
  digest: string;
  cached: boolean;
  startedAt: number;
  endedAt: number;
}

interface VmBatch {
  label: string;
  vms: number;
  /** create sent → running with an IP, per VM (ms). */
  running: number[];
  /** create sent → `→ scheduled` / `→ starting` / `→ running` event, per VM (ms). */
  scheduled: number[];
  starting: number[];
  runningEvent: number[];
  cold: boolean;
  /** The worker's pull: its first acquire → image ready (ms); 0 when every acquire found the image cached. */
  pullMs: number;
  /** First create sent → pull finished (ms). */
  pullDoneMs: number;
  acquires: number;
  cachedAcquires: number;
  loadStart: string;
  loadEnd: string;
}

interface VmsResult {
  imageBytes: number;
  guestDiskBytes: number;
  batches: VmBatch[];
  host: string;
}

async function vmsPart(o: { vms: number; pairs: number; guestDisk: number; timeoutMs: number }): Promise<VmsResult> {
  let env: SessionsEnv | undefined;
  let reg: TestRegistry | undefined;
  let worker: Spawned | undefined;
  const cleanup = async () => {
    worker?.child.kill('SIGKILL');
    await reg?.stop().catch(() => {});
    await env?.destroy().catch(() => {});
  };
  cleanups.add(cleanup);
  try {
    env = await startSessionsEnv();
    const api = env.controller.api;
    log(`e2e world up: controller ${env.controller.apiUrl}, worker ${env.workerName} in namespace ${env.ns}, host address ${env.hostIp}`);

    // The worker of sessions-env, restarted with room for o.vms VMs and its image cache timed.
    env.killWorker();
    await env.worker.exited;
    const third = 100 + (env.id % 50);
    const childConfig: WorkerChildConfig = {
      dataDir: path.join(env.tmp, 'w'),
      qemuDir: path.join(env.tmp, 'q'),
      natName: `fsb${env.id}`,
      subnet: `192.168.${third}.0/24`,
      dhcpRange: [`192.168.${third}.100`, `192.168.${third}.150`],
      natDir: path.join(env.tmp, 'nat'),
      capacity: { cpus: Math.max(o.vms, os.cpus().length), vmSlots: o.vms },
    };
    const self = fileURLToPath(import.meta.url);
    worker = spawnLogged('ip', ['netns', 'exec', env.ns, process.execPath, ...process.execArgv, self], { [WORKER_CHILD_ENV]: JSON.stringify(childConfig) });
    await worker.waitFor(/bench-worker ready/, 60_000);
    await waitUntil(async () => {
      const w = await api.worker(env!.workerName);
      return w?.status === 'online' && w.connected && w.capacity?.vmSlots === o.vms;
    }, 60_000, `worker ${env.workerName} online with ${o.vms} VM slots`, 200);

    reg = await startTestRegistry({ address: env.hostIp });
    const host = reg.host;
    log(`registry ${host}`);

    // The built-in guest as a Fleet qemu image, plus a random raw disk so that the pull matters.
    // One image per pair (tag = pair number, a fresh random disk): the cold batch of each pair pulls
    // a digest the worker has never seen.
    const guest = await ensureGuestImage();
    let imageBytes = 0;
    const pushGuest = async (tag: string): Promise<string> => {
      const work = path.join(env!.tmp, 'bench-image');
      await mkdir(work, { recursive: true });
      const disk = path.join(work, 'disk.raw');
      await writeRandomFile(disk, o.guestDisk);
      const packed = await packFleetQemu({ kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdlineBase, disk, diskFormat: 'raw', architecture: 'amd64' }, path.join(work, 'pack'));
      await writeOciLayout(packed, path.join(work, 'layout'), 'guest');
      const pushMs = await pushWithSkopeo(path.join(work, 'layout'), 'guest', `${host}/bench/guest:${tag}`);
      imageBytes = packed.layers.reduce((n, l) => n + l.descriptor.size, 0);
      log(`guest image ${host}/bench/guest:${tag} = ${packed.manifestDigest}: ${packed.layers.length} layers, ${f1(imageBytes / MiB)} MiB, pushed in ${f0(pushMs)} ms`);
      await rm(work, { recursive: true, force: true });
      return packed.manifestDigest;
    };

    // `fleet registry login HOST --insecure`
    const login = await api.request('PUT', `/v1/registries/${encodeURIComponent(host)}`, { insecure: true });
    if (login.status >= 300) throw new Error(`PUT /v1/registries/${host} → ${login.status}: ${JSON.stringify(login.body)}`);

    const acquires = (): Acquire[] =>
      worker!.output().split('\n').filter((l) => l.startsWith('bench-acquire ')).map((l) => JSON.parse(l.slice('bench-acquire '.length)) as Acquire);

    const batches: VmBatch[] = [];
    const plan = Array.from({ length: o.pairs }, (_, i) => [{ cold: true, pair: i + 1 }, { cold: false, pair: i + 1 }]).flat();
    let digest = '';
    for (const { cold, pair } of plan) {
      const label = `${cold ? 'cold' : 'warm'} cache${o.pairs > 1 ? ` #${pair}` : ''}`;
      const image = `${host}/bench/guest:${pair}`;
      if (cold) digest = await pushGuest(String(pair));
      const loadStart = load();
      const before = acquires().length;
      const names = Array.from({ length: o.vms }, (_, i) => `p${pair}${cold ? 'c' : 'w'}-${i + 1}`);
      const sentAt = new Map<string, number>();
      const runningAt = new Map<string, number>();
      log(`${label}: creating ${o.vms} VMs of ${image} at once`);
      const t0 = Date.now();
      await Promise.all(names.map(async (name) => {
        sentAt.set(name, Date.now());
        const r = await api.request('POST', '/v1/vms', { name, image, driver: 'qemu', cpus: 1, memoryMib: 256 });
        if (r.status >= 300) throw new Error(`POST /v1/vms ${name} → ${r.status}: ${JSON.stringify(r.body)}`);
      }));
      let lastProgress = 0;
      const deadline = t0 + o.timeoutMs;
      while (runningAt.size < names.length) {
        if (Date.now() > deadline) throw new Error(`${label}: only ${runningAt.size} of ${names.length} VMs running after ${o.timeoutMs / 1000} s`);
        const list = await api.vms();
        const now = Date.now();
        for (const vm of list) {
          if (!sentAt.has(vm.name)) continue;
          if (vm.state === 'failed') throw new Error(`vm ${vm.name} failed: ${vm.reason}`);
          if (vm.state === 'running' && vm.ip && !runningAt.has(vm.name)) runningAt.set(vm.name, now);
        }
        if (now - lastProgress > 10_000) {
          lastProgress = now;
          const states = new Map<string, number>();
          for (const vm of list.filter((v) => sentAt.has(v.name))) {
            const k = vm.pull ? `pulling ${vm.pull.percent} %` : vm.state;
            states.set(k, (states.get(k) ?? 0) + 1);
          }
          log(`  ${((now - t0) / 1000).toFixed(0)} s: ${[...states].map(([k, n]) => `${n} ${k}`).join(', ')}`);
        }
        await sleep(200);
      }
      const running = names.map((n) => runningAt.get(n)! - sentAt.get(n)!);
      // The controller's own timestamps of each VM's state changes (one host, one clock).
      const scheduled: number[] = [];
      const starting: number[] = [];
      const runningEvent: number[] = [];
      for (const name of names) {
        const ev = await api.request<{ events: { kind: string; message: string; at: string }[] }>('GET', `/v1/vms/${name}/events?limit=500`);
        const at = (state: string): number => {
          const e = (ev.body.events ?? []).find((x) => x.kind === 'vm.state' && new RegExp(`→ ${state}\\b`).test(String(x.message)));
          return e ? Date.parse(e.at) - sentAt.get(name)! : NaN;
        };
        scheduled.push(at('scheduled'));
        starting.push(at('starting'));
        runningEvent.push(at('running'));
      }
      const mine = acquires().slice(before).filter((a) => a.digest === digest);
      const pulling = mine.filter((a) => !a.cached);
      const pullStart = Math.min(...pulling.map((a) => a.startedAt));
      const pullEnd = Math.max(...pulling.map((a) => a.endedAt));
      const batch: VmBatch = {
        label,
        cold,
        vms: o.vms,
        running,
        scheduled,
        starting,
        runningEvent,
        pullMs: pulling.length ? pullEnd - pullStart : 0,
        pullDoneMs: pulling.length ? pullEnd - t0 : 0,
        acquires: mine.length,
        cachedAcquires: mine.length - pulling.length,
        loadStart,
        loadEnd: load(),
      };
      batches.push(batch);
      log(`${label}: create → running p50 ${f1(pct(running, 50) / 1000)} s, max ${f1(Math.max(...running) / 1000)} s; pull ${f1(batch.pullMs / 1000)} s (${batch.cachedAcquires} of ${batch.acquires} acquires found it cached); load ${batch.loadEnd}`);

      // Delete them and wait until the worker has confirmed every removal.
      for (const name of names) {
        const r = await api.request('DELETE', `/v1/vms/${name}`);
        if (r.status !== 202 && r.status !== 204) throw new Error(`DELETE /v1/vms/${name} → ${r.status}: ${JSON.stringify(r.body)}`);
      }
      await waitUntil(async () => (await api.vms()).every((v) => !sentAt.has(v.name)), 180_000, `${label} VMs gone`, 250);
      await waitUntil(async () => (await api.worker(env!.workerName))?.used?.vms === 0, 60_000, 'the worker holding no VM', 250);
    }
    return { imageBytes, guestDiskBytes: o.guestDisk, batches, host };
  } finally {
    worker?.child.kill('SIGKILL');
    await reg?.stop().catch(() => {});
    await env?.destroy().catch((err: unknown) => console.error('cleanup of the e2e world failed:', err));
    cleanups.delete(cleanup);
  }
}

// ------------------------------------------------------------------ the worker (child process, inside the namespace)

interface WorkerChildConfig {
  dataDir: string;
  qemuDir: string;
  natName: string;
  subnet: string;
  dhcpRange: [string, string];
  natDir: string;
  capacity: { cpus: number; vmSlots: number };
}

/** test/support/sessions-worker.ts with a capacity override and ImageCache.acquire timed (printed as `bench-acquire {json}`). */
async function runWorkerChild(cfg: WorkerChildConfig): Promise<void> {
  const { NatNetwork } = await import('../apps/worker/src/uplink/nat-network.ts');
  const { QemuDriver } = await import('../apps/worker/src/drivers/qemu.ts');
  const { startWorker } = await import('../apps/worker/src/worker.ts');
  const { createLogger } = await import('../apps/worker/src/logger.ts');

  const acquire = ImageCache.prototype.acquire;
  ImageCache.prototype.acquire = async function (this: ImageCache, ...args: Parameters<ImageCache['acquire']>) {
    const digest = args[0].reference.split('@')[1] ?? '';
    await this.init();
    const cached = this.get(digest) !== undefined;
    const startedAt = Date.now();
    try {
      return await acquire.apply(this, args);
    } finally {
      console.log(`bench-acquire ${JSON.stringify({ digest, cached, startedAt, endedAt: Date.now() })}`);
    }
  };

  const logger = createLogger(process.env.FLEET_LOG_LEVEL ?? 'warn');
  const quiet = { debug() {}, info() {}, warn: (o: object, m?: string) => logger.warn(o, m), error: (o: object, m?: string) => logger.error(o, m) };
  const nat = await NatNetwork.open({ name: cfg.natName, subnet: cfg.subnet, uplinkInterface: 'lo', dhcpRange: cfg.dhcpRange, dataDir: cfg.natDir, log: quiet });
  const driver = new QemuDriver({ dataDir: cfg.qemuDir, nat, accel: 'tcg', stopTimeoutMs: 5000 });
  const worker = await startWorker({ dataDir: cfg.dataDir, driver, logger, resyncIntervalMs: 2000, capacity: cfg.capacity });
  console.log(`bench-worker ready ${worker.name}`);
  const stop = async () => {
    await worker.stop();
    await driver.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      part: { type: 'string', default: 'all' },
      size: { type: 'string', default: process.env.FLEET_BENCH_IMAGE_SIZE ?? '1GiB' },
      rounds: { type: 'string', default: '3' },
      concurrency: { type: 'string', default: '4' },
      vms: { type: 'string', default: '10' },
      pairs: { type: 'string', default: '2' },
      'guest-disk': { type: 'string', default: '256MiB' },
      'vm-timeout': { type: 'string', default: '900' },
      dir: { type: 'string', default: os.tmpdir() },
    },
  });
  const size = parseSize(values.size);
  const rounds = Number(values.rounds);
  const concurrency = Number(values.concurrency);
  const vms = Number(values.vms);
  const pairs = Number(values.pairs);
  const guestDisk = parseSize(values['guest-disk']);
  const timeoutMs = Number(values['vm-timeout']) * 1000;
  const part = values.part;
  if (!['all', 'pull', 'vms'].includes(part) || !(size >= MiB) || !Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(concurrency) || concurrency < 1
    || !Number.isInteger(vms) || vms < 1 || vms > 40 || !Number.isInteger(pairs) || pairs < 1 || !(guestDisk >= 0) || !(timeoutMs > 0)) {
    console.error('usage: pnpm exec tsx bench/image-pull.ts [--part all|pull|vms] [--size 1GiB] [--rounds 3] [--concurrency 4] [--vms 1..40] [--pairs N] [--guest-disk 256MiB] [--vm-timeout SECONDS] [--dir DIR]');
    process.exit(2);
  }
  const missingTools = registryToolsMissing();
  if (missingTools) {
    console.error(`bench/image-pull.ts cannot run here: ${missingTools}`);
    process.exit(2);
  }
  const wantVms = part === 'all' || part === 'vms';
  const vmsWhy = wantVms ? sessionsPrerequisites() : '';
  if (part === 'vms' && vmsWhy) {
    console.error(`bench/image-pull.ts --part vms cannot run here: ${vmsWhy}`);
    process.exit(2);
  }

  const started = Date.now();
  const skopeoVersion = execFileSync('skopeo', ['--version'], { encoding: 'utf8' }).trim();
  const registryVersion = (() => {
    try {
      return execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'docker-registry'], { encoding: 'utf8' }).trim();
    } catch {
      return '?';
    }
  })();
  console.log(`image-pull benchmark (issue 15): ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}, ${skopeoVersion}, docker-registry ${registryVersion}; load ${load()}`);
  console.log(memInfo());
  console.log(`work dir ${values.dir} (${execFileSync('df', ['--output=fstype,source', values.dir], { encoding: 'utf8' }).trim().split('\n').pop()?.trim()})`);

  let pull: PullResult | undefined;
  let vmRes: VmsResult | undefined;
  if (part === 'all' || part === 'pull') {
    console.log(`\n## 1. pull throughput: ${f0(size / MiB)} MiB random raw disk as a Fleet qemu image, ${rounds} rounds, concurrency ${concurrency}\n`);
    pull = await pullPart({ size, rounds, concurrency, dir: values.dir });
  }
  if (wantVms) {
    if (vmsWhy) console.log(`\n## 2. skipped: ${vmsWhy}`);
    else {
      console.log(`\n## 2. create → running for ${vms} VMs of one registry image, cold vs warm cache, ${pairs} pair(s)\n`);
      vmRes = await vmsPart({ vms, pairs, guestDisk, timeoutMs });
    }
  }

  // -------------------------------------------------------------- report
  const rows: (string | number)[][] = [];
  let goalLine = '';
  if (pull) {
    const p = pull;
    const gib = p.layerBytes / GiB;
    const mbs = (r: Run) => p.layerBytes / 1e6 / (r.ms / 1000);
    const col = (pick: (r: PullRound) => Run) => {
      const runs = p.rounds.map(pick);
      return {
        mbs: median(runs.map(mbs)),
        each: runs.map((r) => f0(mbs(r))).join(', '),
        s: median(runs.map((r) => r.ms)) / 1000,
        cpu: median(runs.map((r) => r.clientCpuMs)) / 1000 / gib,
        reg: median(runs.map((r) => r.registryCpuMs)) / 1000 / gib,
      };
    };
    const a = col((r) => r.skopeo);
    const b = col((r) => r.cache);
    const c = col((r) => r.download);
    const d = col((r) => r.unpack);
    // Ratios per round (same round, same machine state), then their median.
    const ratioB = median(p.rounds.map((r) => r.skopeo.ms / r.cache.ms));
    const ratioC = median(p.rounds.map((r) => r.skopeo.ms / r.download.ms));
    const met = ratioB >= 0.9;
    console.log(`\n### pull throughput (${f1(p.layerBytes / MiB)} MiB in ${p.layers} layers; medians of ${p.rounds.length} rounds)\n`);
    console.log(table(['contender', 'MB/s', 'rounds MB/s', 's', 'vs skopeo', 'client CPU s/GiB', 'registry CPU s/GiB'], [
      ['(a) skopeo copy docker:// → dir: (baseline)', f0(a.mbs), a.each, f2(a.s), '100 %', f2(a.cpu), f2(a.reg)],
      ['(b) Fleet ImageCache.prefetch (pieces verified + written into the disk as they arrive)', f0(b.mbs), b.each, f2(b.s), `${f0(ratioB * 100)} %`, f2(b.cpu), f2(b.reg)],
      ['(c) Fleet download alone (manifest + config + downloadBlobs)', f0(c.mbs), c.each, f2(c.s), `${f0(ratioC * 100)} %`, f2(c.cpu), f2(c.reg)],
      ['(d) unpackFleetQemu alone (on (c)\'s blobs)', f0(d.mbs), d.each, f2(d.s), '', f2(d.cpu), '–'],
    ]));
    console.log(`\n(b) ${f2(b.s)} s vs (c) ${f2(c.s)} s alone and (c) + (d) ${f2(c.s + d.s)} s (the two-pass pull). "vs skopeo" = median over rounds of skopeo's time / the contender's time in the same round.`);
    console.log(`registry blobs in the page cache: ${f0(p.cachedBefore * 100)} % before the rounds, ${f0(p.cachedAfter * 100)} % after (every contender reads them from memory); push with skopeo: ${f0(p.layerBytes / 1e6 / (p.pushMs / 1000))} MB/s; load ${p.loadStart} → ${p.loadEnd}`);
    goalLine = `GOAL pull throughput ≥ 90 % of skopeo: ${f0(ratioB * 100)} % (Fleet ${f0(b.mbs)} MB/s vs skopeo ${f0(a.mbs)} MB/s) — ${met ? 'met' : 'NOT MET'}`;
    console.log(`\n${goalLine}`);
    rows.push(
      [`pull ${f0(p.layerBytes / MiB)} MiB: skopeo copy (baseline)`, `${f0(a.mbs)} MB/s`, '100 %', ''],
      [`pull ${f0(p.layerBytes / MiB)} MiB: Fleet image cache (streamed into the disk)`, `${f0(b.mbs)} MB/s`, `${f0(ratioB * 100)} %`, met ? 'met (≥ 90 %)' : 'not met (≥ 90 %)'],
      [`pull ${f0(p.layerBytes / MiB)} MiB: Fleet download alone`, `${f0(c.mbs)} MB/s`, `${f0(ratioC * 100)} %`, ''],
      [`pull ${f0(p.layerBytes / MiB)} MiB: Fleet unpack alone`, `${f0(d.mbs)} MB/s`, '', ''],
    );
  }
  if (vmRes) {
    const n = vmRes.batches[0]?.vms ?? 0;
    const s1 = (ms: number) => f1(ms / 1000);
    console.log(`\n### create → running with an IP, ${n} VMs at once (image ${f1(vmRes.imageBytes / MiB)} MiB: kernel + initrd + ${f0(vmRes.guestDiskBytes / MiB)} MiB random disk; QEMU TCG, 1 vCPU / 256 MiB each)\n`);
    console.log(table(['batch', 'create → running with IP p50 s', 'max s', 'min s', '→ scheduled p50 s', '→ starting p50 s', '→ running (event) p50 s', 'pull s (worker)', 'creates → pull done s', 'pull / p50', 'acquires cached', 'load start → end'], vmRes.batches.map((b) => {
      const p50 = pct(b.running, 50);
      return [b.label, s1(p50), s1(Math.max(...b.running)), s1(Math.min(...b.running)), f2(pct(b.scheduled, 50) / 1000), s1(pct(b.starting, 50)), s1(pct(b.runningEvent, 50)),
        s1(b.pullMs), s1(b.pullDoneMs), `${f0((b.pullMs / p50) * 100)} %`, `${b.cachedAcquires}/${b.acquires}`, `${b.loadStart.split(' ')[0]} → ${b.loadEnd.split(' ')[0]}`];
    })));
    const kinds = [true, false].map((cold) => {
      const bs = vmRes!.batches.filter((b) => b.cold === cold);
      const all = bs.flatMap((b) => b.running);
      const p50 = pct(all, 50);
      const pull = median(bs.map((b) => b.pullMs));
      return { label: cold ? 'cold cache' : 'warm cache', batches: bs.length, p50, max: Math.max(...all), starting: pct(bs.flatMap((b) => b.starting), 50), pull, share: pull / p50 };
    });
    if (vmRes.batches.length > 2) {
      console.log(`\nall batches of a kind (${kinds[0]!.batches} × ${n} VMs each):\n`);
      console.log(table(['cache', 'create → running with IP p50 s', 'max s', '→ starting p50 s', 'pull s (median of batches)', 'pull / p50'], kinds.map((k) => [k.label, s1(k.p50), s1(k.max), s1(k.starting), s1(k.pull), `${f0(k.share * 100)} %`])));
    }
    console.log(`\npull s = the worker's first ImageCache.acquire of the image → image ready (download + verify into the image files, one pull shared by all ${n} VMs: the worker runs 8 VM operations at once, so some acquires come after the image is ready and find it cached); "creates → pull done" counts from the first POST. → starting / → running (event) are the controller's timestamps of the worker's reports (the worker reports starting before it pulls); "with IP" is when GET /v1/vms showed the address (polled every 200 ms). Besides the pull: placement, the disk overlay, the VM host process, QEMU and the guest's boot under TCG, all ${n} guests on ${os.cpus().length} cores.`);
    for (const k of kinds) {
      rows.push([`${n} VMs create → running with IP, ${k.label}${k.batches > 1 ? ` (${k.batches} batches)` : ''}`, `p50 ${s1(k.p50)} s, max ${s1(k.max)} s`, `pull ${s1(k.pull)} s = ${f0(k.share * 100)} % of p50`, 'no goal']);
    }
  }
  console.log('\n### summary (markdown)\n');
  console.log(table(['measure', 'figure', 'vs baseline / share', 'goal'], rows));
  if (goalLine) console.log(`\n${goalLine}`);
  console.log(`\ntotal ${((Date.now() - started) / 1000).toFixed(0)} s, load ${load()}`);
}

const childConfig = process.env[WORKER_CHILD_ENV];
if (childConfig) {
  await runWorkerChild(JSON.parse(childConfig) as WorkerChildConfig);
} else {
  let stopping = false;
  const onSignal = () => {
    if (stopping) return;
    stopping = true;
    console.error('\ninterrupted: cleaning up');
    void Promise.allSettled([...cleanups].map((c) => c())).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await main();
    process.exit(0);
  } catch (err) {
    console.error('\nbenchmark failed:', err);
    process.exit(1);
  }
}
