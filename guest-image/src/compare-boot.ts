/**
 * Boot-time comparison of guest image builds (Linux, QEMU TCG, user-mode networking; no root
 * needed). Boots each image RUNS times, interleaved (A, B, A, B, …) so load from other jobs hits
 * all of them alike, one VM at a time (1 vCPU, 256 MiB), and prints medians (min–max):
 *
 *   pnpm exec tsx guest-image/src/compare-boot.ts DIR_A DIR_B …     (RUNS=12 to change the count)
 *
 * Each DIR holds a build's manifest.json (build.sh --out DIR, or ~/.cache/fleet/guest-image/<v>/).
 * Figures: QEMU spawn → the `ready` console marker; the guest's own uptime when /init started
 * (kernel boot + initramfs unpacking, the part a bigger initramfs slows down) and at `ready`;
 * QEMU spawn → the first `ssh root@… true` that succeeded has exited (retried at once).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { MARKERS, guestCmdline, macFromSeed, qemuArgs, waitForSerialMarker } from './index.ts';

interface Image {
  dir: string;
  kernel: string;
  initrd: string;
  cmdlineBase: string;
}

interface Samples {
  ready: number[];
  initUptime: number[];
  readyUptime: number[];
  ssh: number[];
}

function readImage(dir: string): Image {
  const m = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  const field = (k: string): string => {
    const v = m[k];
    if (typeof v !== 'string' || !v) throw new Error(`${dir}/manifest.json: missing "${k}"`);
    return v;
  };
  return { dir, kernel: field('kernel'), initrd: field('initrd'), cmdlineBase: field('cmdlineBase') };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const uptimeMs = (log: string, marker: RegExp): number => Number(marker.exec(log)?.[1] ?? NaN) * 1000;

async function bootOnce(img: Image, tmp: string, key: string, pub: string): Promise<{ ready: number; initUptime: number; readyUptime: number; ssh: number }> {
  const port = await freePort();
  const serialLog = path.join(tmp, `serial-${Date.now()}.log`);
  const args = qemuArgs({
    kernel: img.kernel,
    initrd: img.initrd,
    cmdline: guestCmdline(img.cmdlineBase, { authorizedKeys: [pub] }),
    cpus: 1,
    memoryMib: 256,
    userNet: { hostForwards: [{ hostPort: port, guestPort: 22 }] },
    mac: macFromSeed('compare-boot'),
    serialLog,
    accel: 'tcg',
  });
  const t0 = performance.now();
  const qemu = spawn('qemu-system-x86_64', args, { stdio: 'ignore' });
  let exited = false;
  qemu.once('exit', () => (exited = true));
  try {
    const ready = await waitForSerialMarker(serialLog, MARKERS.ready, { timeoutMs: 60_000, abort: () => exited });
    if (!ready) throw new Error(`${img.dir}: no ready marker within 60 s`);
    const tReady = performance.now() - t0;
    const sshArgs = ['-i', key, '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-p', String(port), 'root@127.0.0.1', 'true'];
    let ok = false;
    for (let i = 0; !ok && i < 200; i++) ok = spawnSync('ssh', sshArgs, { timeout: 15_000 }).status === 0;
    if (!ok) throw new Error(`${img.dir}: ssh never succeeded`);
    const tSsh = performance.now() - t0;
    const log = readFileSync(serialLog, 'utf8');
    return { ready: tReady, initUptime: uptimeMs(log, /FLEET-GUEST init .*uptime=([\d.]+)/), readyUptime: uptimeMs(log, /FLEET-GUEST ready .*uptime=([\d.]+)/), ssh: tSsh };
  } finally {
    if (!exited) {
      qemu.kill('SIGKILL');
      await new Promise((r) => qemu.once('exit', r));
    }
  }
}

function summary(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const med = sorted[Math.floor(sorted.length / 2)] ?? NaN;
  return `${med.toFixed(0)} (${(sorted[0] ?? NaN).toFixed(0)}–${(sorted.at(-1) ?? NaN).toFixed(0)})`;
}

async function main(): Promise<void> {
  const dirs = process.argv.slice(2);
  const runs = Number(process.env.RUNS ?? 8);
  if (dirs.length === 0 || !Number.isInteger(runs) || runs < 1) {
    console.error('usage: [RUNS=n] tsx guest-image/src/compare-boot.ts IMAGE_DIR [IMAGE_DIR …]');
    process.exit(2);
  }
  const images = dirs.map(readImage);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'fleet-compare-boot-'));
  try {
    const key = path.join(tmp, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const pub = readFileSync(`${key}.pub`, 'utf8').trim();
    const samples = new Map<Image, Samples>(images.map((i) => [i, { ready: [], initUptime: [], readyUptime: [], ssh: [] }]));
    console.log(`load average at start: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
    for (let run = 0; run < runs; run++) {
      for (const img of images) {
        const r = await bootOnce(img, tmp, key, pub);
        const s = samples.get(img)!;
        s.ready.push(r.ready);
        s.initUptime.push(r.initUptime);
        s.readyUptime.push(r.readyUptime);
        s.ssh.push(r.ssh);
        console.log(`${img.dir} #${run + 1}: ready ${r.ready.toFixed(0)} ms, guest uptime at /init ${r.initUptime.toFixed(0)} ms and at ready ${r.readyUptime.toFixed(0)} ms, SSH ${r.ssh.toFixed(0)} ms`);
      }
    }
    console.log(`load average at end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
    console.log(`\nmedian (min–max) over ${runs} boots, ms:`);
    console.log('| image | initrd bytes | boot → ready | guest uptime at /init | guest uptime at ready | boot → SSH |');
    console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
    for (const [img, s] of samples) {
      console.log(`| ${img.dir} | ${statSync(img.initrd).size} | ${summary(s.ready)} | ${summary(s.initUptime)} | ${summary(s.readyUptime)} | ${summary(s.ssh)} |`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
