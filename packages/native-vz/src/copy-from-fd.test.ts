/**
 * copyFileFromFd (issue 17): root copies a VM user's Tart bundle files from an fd it already holds
 * open into a root-owned directory, keeping holes, off the event loop. Files live in temp
 * directories this test creates (os.tmpdir(), and /dev/shm for the cross-filesystem fallback).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  existsSync,
  ftruncateSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  readSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { copyFileFromFd, socketpairDgram, closeFd, type CopyFileFromFdResult } from './index.ts';

const GiB = 1024 ** 3;
const isRoot = process.getuid?.() === 0;
const addonPath = createRequire(import.meta.url).resolve('../build/Release/native_vz.node');

const dirs: string[] = [];
const mounts: string[] = [];
function tmpDir(base = os.tmpdir()): string {
  const d = mkdtempSync(path.join(base, 'fvz-copy-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const m of mounts) spawnSync('umount', [m]);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const fds = new Set<number>();
afterEach(() => {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {
      /* closed by the test */
    }
  }
  fds.clear();
});
/** Opens like root opens a VM user's file: read-only, never through a link. */
function openSrc(p: string): number {
  const fd = openSync(p, constants.O_RDONLY | constants.O_NOFOLLOW);
  fds.add(fd);
  return fd;
}

function readAt(p: string, pos: number, len: number): Buffer {
  const fd = openSync(p, 'r');
  try {
    const b = Buffer.alloc(len);
    const n = readSync(fd, b, 0, len, pos);
    return b.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

const METHODS: CopyFileFromFdResult['method'][] = ['clone', 'copy_file_range', 'sparse-copy'];

describe('copyFileFromFd', () => {
  it('copies a 64 GiB sparse file with three data extents, keeping the holes (and the source offset)', async (ctx) => {
    const dir = tmpDir();
    const src = path.join(dir, 'disk.img');
    const size = 64 * GiB;
    const extents = [
      { at: 0, data: randomBytes(8192) },
      { at: 1 * GiB, data: randomBytes(4096) },
      { at: 40 * GiB + 123, data: randomBytes(5000) }, // unaligned: its block is partly data
    ];
    const w = openSync(src, 'w', 0o600);
    ftruncateSync(w, size);
    for (const e of extents) writeSync(w, e.data, 0, e.data.length, e.at);
    closeSync(w);
    const srcSt = statSync(src);
    if (srcSt.size !== size || srcSt.blocks * 512 > 64 * 1024 * 1024) {
      console.warn(`\n*** sparse copy test SKIPPED: ${os.tmpdir()} does not keep a 64 GiB file sparse ***\n`);
      ctx.skip();
    }

    const fd = openSrc(src);
    // Move the source's offset: the copy must leave it where it was.
    const head = Buffer.alloc(100);
    expect(readSync(fd, head, 0, 100, null)).toBe(100);

    const dst = path.join(dir, 'copy.img');
    const p = copyFileFromFd(fd, dst, { mode: 0o666 });
    expect(p).toBeInstanceOf(Promise); // runs on the threadpool, not on the event loop
    const r = await p;
    expect(r.bytes).toBe(size);
    expect(METHODS).toContain(r.method);
    if (process.platform === 'linux' && r.method !== 'clone') expect(r.method).toBe('copy_file_range'); // same filesystem

    const st = lstatSync(dst);
    expect(st.isFile()).toBe(true);
    expect(st.size).toBe(size);
    expect(st.blocks * 512).toBeLessThan(64 * 1024 * 1024); // holes kept: a few extents, not 64 GiB
    expect(st.mode & 0o7777).toBe(0o666); // fchmod: the umask (022) did not apply
    expect(st.uid).toBe(process.getuid!());
    for (const e of extents) expect(readAt(dst, e.at, e.data.length).equals(e.data)).toBe(true);
    expect(readAt(dst, 2 * GiB, 4096).equals(Buffer.alloc(4096))).toBe(true); // a hole reads as zeros
    expect(readAt(dst, size - 10, 100)).toEqual(Buffer.alloc(10)); // trailing hole, exact size

    // The source offset was restored: the next read() continues at byte 100.
    const next = Buffer.alloc(20);
    expect(readSync(fd, next, 0, 20, null)).toBe(20);
    expect(next.equals(extents[0]!.data.subarray(100, 120))).toBe(true);
  });

  it('copies a small file and an empty one; the default mode is 0o644', async () => {
    const dir = tmpDir();
    const src = path.join(dir, 'config.json');
    const body = Buffer.from(JSON.stringify({ cpuCount: 4, memorySize: 8 * GiB, display: { width: 1024 } }));
    writeFileSync(src, body, { mode: 0o600 });
    const r = await copyFileFromFd(openSrc(src), path.join(dir, 'out.json'));
    expect(r).toEqual({ bytes: body.length, method: expect.stringMatching(/^(clone|copy_file_range|sparse-copy)$/) });
    expect(readFileSync(path.join(dir, 'out.json')).equals(body)).toBe(true);
    expect(statSync(path.join(dir, 'out.json')).mode & 0o7777).toBe(0o644);

    const empty = path.join(dir, 'empty');
    writeFileSync(empty, '');
    const r0 = await copyFileFromFd(openSrc(empty), path.join(dir, 'empty.copy'), { mode: 0o600 });
    expect(r0.bytes).toBe(0);
    expect(['clone', 'sparse-copy']).toContain(r0.method);
    expect(statSync(path.join(dir, 'empty.copy'))).toMatchObject({ size: 0 });
    expect(statSync(path.join(dir, 'empty.copy')).mode & 0o7777).toBe(0o600);
  });

  it('falls back to pread/pwrite across filesystems (copy_file_range EXDEV), leaving all-zero chunks as holes', async (ctx) => {
    if (process.platform !== 'linux' || !existsSync('/dev/shm') || statSync('/dev/shm').dev === statSync(os.tmpdir()).dev) {
      console.warn('\n*** cross-filesystem fallback test SKIPPED: no /dev/shm on another filesystem ***\n');
      ctx.skip();
    }
    const srcDir = tmpDir('/dev/shm');
    const src = path.join(srcDir, 'nvram.bin');
    const MiB = 1024 * 1024;
    const a = randomBytes(MiB);
    const b = randomBytes(MiB + 17);
    // Zeros WRITTEN (allocated, so SEEK_DATA calls them data) between two random MiBs.
    writeFileSync(src, Buffer.concat([a, Buffer.alloc(6 * MiB), b]));
    expect(statSync(src).blocks * 512).toBeGreaterThanOrEqual(8 * MiB);

    const dst = path.join(tmpDir(), 'nvram.copy');
    const r = await copyFileFromFd(openSrc(src), dst);
    expect(r).toEqual({ bytes: 8 * MiB + 17, method: 'sparse-copy' });
    expect(readFileSync(dst).equals(readFileSync(src))).toBe(true);
    // The six zero MiBs were not written: at most the two data MiBs (plus a block) are allocated.
    expect(statSync(dst).blocks * 512).toBeLessThanOrEqual(2 * MiB + 64 * 1024);
  });

  it('never replaces an existing destination (EEXIST, untouched)', async () => {
    const dir = tmpDir();
    const src = path.join(dir, 'src');
    writeFileSync(src, 'new contents');
    const dst = path.join(dir, 'dst');
    writeFileSync(dst, 'precious', { mode: 0o600 });
    const before = statSync(dst);
    await expect(copyFileFromFd(openSrc(src), dst)).rejects.toMatchObject({ code: 'EEXIST', errno: os.constants.errno.EEXIST, syscall: expect.any(String) });
    expect(readFileSync(dst, 'utf8')).toBe('precious');
    const after = statSync(dst);
    expect([after.ino, after.mode, after.size, after.mtimeMs]).toEqual([before.ino, before.mode, before.size, before.mtimeMs]);

    // A directory is "existing" too.
    mkdirSync(path.join(dir, 'adir'));
    await expect(copyFileFromFd(openSrc(src), path.join(dir, 'adir'))).rejects.toMatchObject({ code: 'EEXIST' });
  });

  it('never follows a symlink at the destination (live or dangling); the target is untouched', async () => {
    const dir = tmpDir();
    const src = path.join(dir, 'src');
    writeFileSync(src, 'attacker-controlled bytes');
    const target = path.join(dir, 'target');
    writeFileSync(target, 'root file', { mode: 0o600 });
    const link = path.join(dir, 'link');
    symlinkSync(target, link);
    await expect(copyFileFromFd(openSrc(src), link)).rejects.toMatchObject({ code: expect.stringMatching(/^(EEXIST|ELOOP)$/) });
    expect(readFileSync(target, 'utf8')).toBe('root file');
    expect(statSync(target).mode & 0o7777).toBe(0o600);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readlinkSync(link)).toBe(target);

    const missing = path.join(dir, 'would-be-created');
    const dangling = path.join(dir, 'dangling');
    symlinkSync(missing, dangling);
    await expect(copyFileFromFd(openSrc(src), dangling)).rejects.toMatchObject({ code: expect.stringMatching(/^(EEXIST|ELOOP)$/) });
    expect(existsSync(missing)).toBe(false);
    expect(lstatSync(dangling).isSymbolicLink()).toBe(true);
  });

  it('rejects bad arguments with TypeError/RangeError (the wrapper and the native function)', () => {
    const dir = tmpDir();
    const src = path.join(dir, 'src');
    writeFileSync(src, 'x');
    const fd = openSrc(src);
    const dst = path.join(dir, 'dst');
    const bad: Array<[() => unknown, string]> = [
      [() => copyFileFromFd(-1, dst), 'TypeError'],
      [() => copyFileFromFd(1.5, dst), 'TypeError'],
      [() => copyFileFromFd('3' as unknown as number, dst), 'TypeError'],
      [() => copyFileFromFd(2 ** 40, dst), 'TypeError'],
      [() => copyFileFromFd(fd, 42 as unknown as string), 'TypeError'],
      [() => copyFileFromFd(fd, ''), 'RangeError'],
      [() => copyFileFromFd(fd, `${dst}\0x`), 'RangeError'],
      [() => copyFileFromFd(fd, dst, null as unknown as object), 'TypeError'],
      [() => copyFileFromFd(fd, dst, { mode: 0o1777 }), 'RangeError'],
      [() => copyFileFromFd(fd, dst, { mode: -1 }), 'RangeError'],
      [() => copyFileFromFd(fd, dst, { mode: '644' as unknown as number }), 'RangeError'],
    ];
    for (const [f, name] of bad) expect(f, String(f)).toThrow(expect.objectContaining({ name }));

    const raw = createRequire(import.meta.url)(addonPath) as { copyFileFromFd: (...a: unknown[]) => unknown };
    const rawBad: Array<[unknown[], string]> = [
      [[], 'TypeError'],
      [[fd], 'TypeError'],
      [[fd, dst], 'TypeError'],
      [['x', dst, 0o644], 'TypeError'],
      [[-1, dst, 0o644], 'RangeError'],
      [[Number.NaN, dst, 0o644], 'RangeError'],
      [[fd, {}, 0o644], 'TypeError'],
      [[fd, '', 0o644], 'RangeError'],
      [[fd, 'a\0b', 0o644], 'RangeError'],
      [[fd, dst, 0o10000], 'RangeError'],
      [[fd, dst, 0.5], 'RangeError'],
    ];
    for (const [args, name] of rawBad) expect(() => raw.copyFileFromFd(...args), JSON.stringify(args)).toThrow(expect.objectContaining({ name }));
    expect(existsSync(dst)).toBe(false);
  });

  it('rejects a closed fd (EBADF), a non-regular file (EINVAL) and a write-only fd (EBADF) without creating the destination', async () => {
    const dir = tmpDir();
    const src = path.join(dir, 'src');
    writeFileSync(src, 'data');
    const dst = path.join(dir, 'dst');

    const closed = openSync(src, 'r');
    closeSync(closed);
    await expect(copyFileFromFd(closed, dst)).rejects.toMatchObject({ code: 'EBADF', errno: os.constants.errno.EBADF, syscall: expect.any(String) });

    const [a, b] = socketpairDgram();
    try {
      await expect(copyFileFromFd(a, dst)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringContaining('not a regular file') });
    } finally {
      closeFd(a);
      closeFd(b);
    }
    const dirFd = openSync(dir, 'r');
    fds.add(dirFd);
    await expect(copyFileFromFd(dirFd, dst)).rejects.toMatchObject({ code: 'EINVAL' });

    const wo = openSync(src, 'a');
    fds.add(wo);
    await expect(copyFileFromFd(wo, dst)).rejects.toMatchObject({ code: 'EBADF', message: expect.stringContaining('not open for reading') });

    // A missing directory: ENOENT from open.
    await expect(copyFileFromFd(openSrc(src), path.join(dir, 'no', 'such', 'dir'))).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open' });
    expect(existsSync(dst)).toBe(false);
  });

  it('keeps working when srcFd is closed right after the call (the copy reads its own dup)', async () => {
    const dir = tmpDir();
    const src = path.join(dir, 'src');
    const body = randomBytes(3 * 1024 * 1024 + 5);
    writeFileSync(src, body);
    const fd = openSync(src, 'r');
    const p = copyFileFromFd(fd, path.join(dir, 'dst'));
    closeSync(fd);
    await expect(p).resolves.toMatchObject({ bytes: body.length });
    expect(readFileSync(path.join(dir, 'dst')).equals(body)).toBe(true);
  });

  it('runs off the event loop, and a worker thread terminated mid-copy neither crashes nor leaves a partial file', async () => {
    const dir = tmpDir(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
    const src = path.join(dir, 'dense');
    const MiB = 1024 * 1024;
    const w = openSync(src, 'w');
    const chunk = randomBytes(MiB);
    for (let i = 0; i < 64; i++) writeSync(w, chunk);
    closeSync(w);

    // Timers keep firing while copies run on the threadpool.
    let ticks = 0;
    const t = setInterval(() => ticks++, 0);
    try {
      const copies = Array.from({ length: 4 }, (_, i) => copyFileFromFd(openSrc(src), path.join(dir, `c${i}`)));
      await Promise.all(copies);
    } finally {
      clearInterval(t);
    }
    expect(ticks).toBeGreaterThan(0);

    // Worker threads terminated while their copies run (in a child: a crash must not take vitest
    // down). Node waits for the threadpool work before tearing the env down; the copy finishes
    // (complete) and its promise is dropped with the env.
    const script = `
const { Worker } = require('node:worker_threads');
const [addon, src, dir] = process.argv.slice(1);
const code = \`
const native = require(\${JSON.stringify(addon)});
const fs = require('node:fs');
const { workerData, parentPort } = require('node:worker_threads');
const fd = fs.openSync(workerData.src, 'r');
native.copyFileFromFd(fd, workerData.dst, 0o644).then(() => parentPort.postMessage('done'), (e) => parentPort.postMessage(String(e)));
parentPort.postMessage('started');
\`;
let n = 0;
function one() {
  const w = new Worker(code, { eval: true, workerData: { src, dst: dir + '/w' + n } });
  w.on('message', (m) => { if (m === 'started') (n % 2 ? w.terminate() : setTimeout(() => w.terminate(), 2)); });
  w.on('error', (e) => { console.error(e); process.exit(2); });
  w.on('exit', () => (++n < 6 ? one() : console.log('ok ' + n)));
}
one();`;
    const r = spawnSync(process.execPath, ['-e', script, addonPath, src, dir], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('ok 6');
    // Every copy a terminated worker started either completed or is gone.
    const size = statSync(src).size;
    for (let i = 0; i < 6; i++) {
      const p = path.join(dir, `w${i}`);
      if (existsSync(p)) expect(statSync(p).size, p).toBe(size);
    }
  });

  it.runIf(process.platform === 'linux')('removes the partial destination when the copy fails (ENOSPC on a 1 MiB tmpfs)', async (ctx) => {
    if (!isRoot) {
      console.warn('\n*** partial-copy cleanup test SKIPPED: mounting a tmpfs needs root ***\n');
      ctx.skip();
    }
    const mnt = tmpDir();
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', mnt]);
    if (m.status !== 0) {
      console.warn(`\n*** partial-copy cleanup test SKIPPED: mount -t tmpfs failed: ${String(m.stderr).trim()} ***\n`);
      ctx.skip();
    }
    mounts.push(mnt);
    const dir = tmpDir();
    const src = path.join(dir, 'big');
    writeFileSync(src, randomBytes(4 * 1024 * 1024));
    const dst = path.join(mnt, 'big.copy');
    await expect(copyFileFromFd(openSrc(src), dst)).rejects.toMatchObject({ code: 'ENOSPC', syscall: expect.stringMatching(/^(pwrite|copy_file_range)$/) });
    expect(existsSync(dst)).toBe(false);
  });
});
