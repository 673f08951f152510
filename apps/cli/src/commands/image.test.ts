// `fleet image …` against a fake controller: tables, digest prefixes, operations followed with
// --wait (progress on stderr, the failed workers named, exit 7), and the push argument rules.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FleetImage, ImageOperation, WorkerImage } from '../client/image-types.ts';
import { FakeController, sendJson } from '../testing/fake-controller.ts';
import { runCli } from '../testing/run-cli.ts';
import { matchImages, parsePushArgs, shortDigest } from './image.ts';

let fake: FakeController;
let dir: string;
let env: Record<string, string>;

beforeEach(async () => {
  fake = await FakeController.start();
  dir = mkdtempSync(join(tmpdir(), 'fleet-cli-image-'));
  env = { FLEET_URL: fake.url, FLEET_TOKEN: 'fleet_test_s3cr3t', FLEET_CONFIG: join(dir, 'config.json') };
});
afterEach(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

const fleet = (args: string[]) => runCli(args, { env });

const GiB = 1024 ** 3;
const D1 = `sha256:${'ab12cd34ef56'.padEnd(64, '0')}`;
const D2 = `sha256:${'ab99'.padEnd(64, '1')}`;
const REF = '127.0.0.1:5000/fleet/guest:1';

function workerImage(over: Partial<WorkerImage> = {}): WorkerImage {
  return { digest: D1, reference: REF, format: 'fleet-qemu', sizeBytes: Math.round(1.5 * GiB), state: 'ready', progress: null, error: '', inUse: 0, lastUsedAt: '2025-01-01T00:55:00.000Z', ...over };
}

function op(over: Partial<ImageOperation> = {}): ImageOperation {
  return { id: 'op-1', kind: 'prefetch', worker: 'mac-1', vm: null, reference: `${REF}@${D1}`, digest: D1, state: 'pending', message: '', progress: null, createdBy: 'token:admin', createdAt: '2025-01-01T00:59:00.000Z', updatedAt: '2025-01-01T00:59:00.000Z', ...over };
}

const prog = (done: number, total: number) => ({ bytesDone: done, bytesTotal: total, percent: total ? (100 * done) / total : 0 });

/** Answers GET path with the next of `bodies` each time (the last one repeats). */
function sequence(path: string, bodies: unknown[]) {
  let i = 0;
  fake.on('GET', path, (_req, res) => sendJson(res, 200, bodies[Math.min(i++, bodies.length - 1)]));
}

const fleetImages: FleetImage[] = [
  {
    digest: D1,
    reference: REF,
    format: 'fleet-qemu',
    sizeBytes: Math.round(1.5 * GiB),
    workers: [
      { name: 'mac-1', state: 'ready', inUse: 2, lastUsedAt: '2025-01-01T00:55:00.000Z', progress: null },
      { name: 'mac-2', state: 'pulling', inUse: 0, lastUsedAt: null, progress: prog(0.5 * GiB, 1.5 * GiB) },
    ],
  },
  { digest: D2, reference: 'ghcr.io/org/macos:15', format: 'tart', sizeBytes: 40 * GiB, workers: [{ name: 'mac-1', state: 'failed', inUse: 0, lastUsedAt: null, progress: null }] },
];

describe('image list', () => {
  it('without --worker: one row per worker and image, from GET /v1/images', async () => {
    fake.reply('GET', '/v1/images', 200, { items: fleetImages });
    const r = await fleet(['image', 'list']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        'WORKER   DIGEST         REFERENCE                      FORMAT       SIZE      STATE                        IN USE   LAST USED',
        'mac-1    ab12cd34ef56   127.0.0.1:5000/fleet/guest:1   fleet-qemu   1.5 GiB   ready                        2 VMs    5m ago',
        'mac-2    ab12cd34ef56   127.0.0.1:5000/fleet/guest:1   fleet-qemu   1.5 GiB   pulling 33 % (0.5/1.5 GiB)   no       never',
        'mac-1    ab9911111111   ghcr.io/org/macos:15           tart         40 GiB    failed                       no       never',
        '',
      ].join('\n'),
    );
  });

  it('--worker: that cache, with its use and limit on stderr; --json is the API object', async () => {
    const list = { worker: 'mac-1', usedBytes: 12 * GiB, limitBytes: 100 * GiB, items: [workerImage({ inUse: 1, reference: `127.0.0.1:5000/fleet/guest@${D1}` }), workerImage({ digest: D2, state: 'failed', error: 'digest mismatch on blob sha256:…', inUse: 0, lastUsedAt: null })] };
    fake.reply('GET', '/v1/workers/mac-1/images', 200, list);
    const r = await fleet(['image', 'list', '--worker', 'mac-1', '--wide']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`mac-1    ${D1}   127.0.0.1:5000/fleet/guest@${D1}   fleet-qemu   1.5 GiB   ready`);
    // without --wide, a pinned reference loses the digest its row shows already
    const narrow = await fleet(['image', 'list', '--worker', 'mac-1']);
    expect(narrow.stdout).toMatch(/^mac-1 +ab12cd34ef56 +127\.0\.0\.1:5000\/fleet\/guest +fleet-qemu/m);
    expect(r.stdout).toContain('failed: digest mismatch on blob sha256:…');
    expect(r.stdout).toMatch(/ready\s+1 VM\s+5m ago/);
    expect(r.stderr).toBe('Cache of mac-1: 12 GiB of 100 GiB used (12 %)\n');
    const j = await fleet(['image', 'list', '--worker', 'mac-1', '--json']);
    expect(JSON.parse(j.stdout)).toEqual(list);
    expect(j.stderr).toBe('');
  });

  it('an unknown worker is exit 3', async () => {
    fake.fail('GET', '/v1/workers/nope/images', 404, 'not_found', 'worker "nope" not found');
    const r = await fleet(['image', 'list', '--worker', 'nope']);
    expect(r).toMatchObject({ code: 3, stderr: 'fleet: worker "nope" not found\n' });
  });
});

describe('image inspect', () => {
  it('by reference, digest or digest prefix; what every worker holds', async () => {
    fake.reply('GET', '/v1/images', 200, { items: fleetImages });
    const r = await fleet(['image', 'inspect', REF]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Digest:     ${D1}`);
    expect(r.stdout).toContain('Workers:    2 (1 ready); used by 2 VMs');
    expect(r.stdout).toMatch(/mac-2\s+pulling 33 % \(0.5\/1.5 GiB\)\s+no\s+never/);
    expect(matchImages(fleetImages, 'ab99').map((i) => i.digest)).toEqual([D2]);
    expect(matchImages(fleetImages, `${REF}@${D1}`).map((i) => i.digest)).toEqual([D1]);
    expect(matchImages(fleetImages, 'ghcr.io/org/macos:15').map((i) => i.digest)).toEqual([D2]);
    expect(matchImages(fleetImages, 'ab')).toEqual([]);
    const j = await fleet(['image', 'inspect', 'ab12cd', '--json']);
    expect(JSON.parse(j.stdout)).toEqual({ items: [fleetImages[0]] });
  });

  it('nothing matching: exit 3', async () => {
    fake.reply('GET', '/v1/images', 200, { items: fleetImages });
    const r = await fleet(['image', 'inspect', 'ghcr.io/org/other:1']);
    expect(r).toMatchObject({ code: 3, stderr: 'fleet: no worker cache holds an image matching "ghcr.io/org/other:1"\n' });
  });
});

describe('image delete', () => {
  it('resolves a digest prefix on the worker, sends DELETE and follows the operation with --wait', async () => {
    fake.reply('GET', '/v1/workers/mac-1/images', 200, { worker: 'mac-1', usedBytes: 0, limitBytes: 0, items: [workerImage(), workerImage({ digest: D2 })] });
    fake.reply('DELETE', `/v1/workers/mac-1/images/${encodeURIComponent(D1)}`, 202, op({ id: 'op-del', kind: 'delete' }));
    sequence('/v1/image-operations/op-del', [op({ id: 'op-del', kind: 'delete', state: 'running' }), op({ id: 'op-del', kind: 'delete', state: 'succeeded' })]);
    const r = await fleet(['image', 'delete', 'ab12cd', '--worker', 'mac-1', '--wait']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`deleted ${D1} from worker "mac-1"\n`);
    expect(r.stderr).toBe('deleting ab12cd34ef56 from worker "mac-1"; waiting up to 1h\n');
    expect(fake.requestsTo('DELETE', `/v1/workers/mac-1/images/${encodeURIComponent(D1)}`)).toHaveLength(1);
  });

  it('an ambiguous prefix is exit 2, an unknown one exit 3; nothing deleted', async () => {
    fake.reply('GET', '/v1/workers/mac-1/images', 200, { worker: 'mac-1', usedBytes: 0, limitBytes: 0, items: [workerImage(), workerImage({ digest: D2 })] });
    const amb = await fleet(['image', 'delete', 'ab', '--worker', 'mac-1']);
    expect(amb.code).toBe(2);
    expect(amb.stderr).toMatch(/invalid digest "ab"/);
    const amb2 = await fleet(['image', 'delete', 'sha256:ab', '--worker', 'mac-1']);
    expect(amb2.code).toBe(2);
    // ab12 is unique (D1): the DELETE is sent, to a route this fake lacks (404 → exit 3)
    const unique = await fleet(['image', 'delete', 'ab12', '--worker', 'mac-1']);
    expect(unique.code).toBe(3);
    expect(fake.requests.at(-1)!.path).toBe(`/v1/workers/mac-1/images/${encodeURIComponent(D1)}`);
    const none = await fleet(['image', 'delete', 'ffff', '--worker', 'mac-1']);
    expect(none).toMatchObject({ code: 3, stderr: 'fleet: worker "mac-1" holds no image whose digest starts with ffff\n' });
    const noWorker = await fleet(['image', 'delete', D1]);
    expect(noWorker.code).toBe(2);
    expect(noWorker.stderr).toMatch(/--worker/);
  });

  it('an image in use: the controller\'s 409 is exit 6', async () => {
    fake.fail('DELETE', `/v1/workers/mac-1/images/${encodeURIComponent(D1)}`, 409, 'image_in_use', 'image is used by 2 VMs on mac-1 (web-1, web-2)');
    const r = await fleet(['image', 'rm', D1, '--worker', 'mac-1']);
    expect(r).toMatchObject({ code: 6, stderr: 'fleet: image is used by 2 VMs on mac-1 (web-1, web-2)\n' });
  });

  it('--wait: a failed deletion is exit 7 with the worker\'s message', async () => {
    fake.reply('DELETE', `/v1/workers/mac-1/images/${encodeURIComponent(D1)}`, 202, op({ id: 'op-del', kind: 'delete' }));
    sequence('/v1/image-operations/op-del', [op({ id: 'op-del', kind: 'delete', state: 'failed', message: 'a VM started using it' })]);
    const r = await fleet(['image', 'delete', D1, '--worker', 'mac-1', '--wait', '--json']);
    expect(r.code).toBe(7);
    expect(JSON.parse(r.stdout)).toMatchObject({ id: 'op-del', state: 'failed' });
    expect(r.stderr).toBe(`fleet: worker "mac-1" did not delete ${D1}: a VM started using it\n`);
  });
});

describe('image prefetch', () => {
  const result = (ops: ImageOperation[]) => ({ reference: REF, digest: D1, format: 'fleet-qemu', operations: ops });

  it('sends the reference and the selector with an Idempotency-Key; without --wait, says where', async () => {
    fake.on('POST', '/v1/images/prefetch', (_req, res) => sendJson(res, 202, result([op(), op({ id: 'op-2', worker: 'mac-2' })])));
    const r = await fleet(['image', 'prefetch', REF, '--selector', 'pool=ci', '--selector', 'arch=arm64']);
    expect(r.code).toBe(0);
    const req = fake.requestsTo('POST', '/v1/images/prefetch')[0]!;
    expect(req.body).toEqual({ reference: REF, selector: { pool: 'ci', arch: 'arm64' } });
    expect(req.headers['idempotency-key']).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.stdout).toBe(`prefetching ${REF} (${D1}, fleet-qemu) on 2 worker(s): mac-1, mac-2\n`);
  });

  it('--wait: a line per worker as it progresses; exit 7 naming the workers that failed', async () => {
    fake.reply('POST', '/v1/images/prefetch', 202, result([op(), op({ id: 'op-2', worker: 'mac-2' })]));
    sequence('/v1/image-operations/op-1', [
      op({ state: 'running', progress: prog(0, GiB) }),
      op({ state: 'running', progress: prog(0.5 * GiB, GiB) }),
      op({ state: 'succeeded', progress: prog(GiB, GiB) }),
    ]);
    sequence('/v1/image-operations/op-2', [op({ id: 'op-2', worker: 'mac-2', state: 'running', progress: prog(0.2 * GiB, GiB) }), op({ id: 'op-2', worker: 'mac-2', state: 'failed', message: 'no space left on device (cache limit 100 GiB)' })]);
    const r = await fleet(['image', 'prefetch', REF, '--wait', '10s']);
    expect(r.code).toBe(7);
    expect(r.stdout).toBe(`1 of 2 worker(s) have ${REF} (ab12cd34ef56)\n`);
    const err = r.stderr.split('\n');
    expect(err[0]).toBe(`prefetching ${REF} (${D1}, fleet-qemu) on 2 worker(s); waiting up to 10s`);
    expect(err).toContain('mac-1  pending');
    expect(err).toContain('mac-1  [#####     ]  50 %  0.5/1 GiB  running');
    expect(err).toContain('mac-1  [##########] 100 %  1/1 GiB  succeeded');
    expect(err).toContain('mac-2  [##        ]  20 %  0.2/1 GiB  running');
    expect(err.some((l) => /^mac-2 .*failed: no space left on device/.test(l))).toBe(true);
    expect(r.stderr).not.toMatch(/\r|\x1b/);
    expect(err.at(-2)).toBe(`fleet: prefetch of ${REF} failed on 1 of 2 worker(s): mac-2 (no space left on device (cache limit 100 GiB))`);
  });

  it('--wait on a terminal: one bar per worker, the block redrawn in place', async () => {
    fake.reply('POST', '/v1/images/prefetch', 202, result([op(), op({ id: 'op-2', worker: 'mac-22' })]));
    sequence('/v1/image-operations/op-1', [op({ state: 'running', progress: prog(0.5 * GiB, GiB) }), op({ state: 'succeeded', progress: prog(GiB, GiB) })]);
    sequence('/v1/image-operations/op-2', [op({ id: 'op-2', worker: 'mac-22', state: 'succeeded', progress: prog(GiB, GiB) })]);
    const r = await runCli(['image', 'prefetch', REF, '--wait'], { env, stderrTty: true });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`2 of 2 worker(s) have ${REF} (ab12cd34ef56)\n`);
    // the first block, then redraws of both lines (cursor up 2, clear, two lines)
    expect(r.stderr).toContain('\x1b[2Kmac-1   pending\n\x1b[2Kmac-22  pending\n');
    expect(r.stderr).toContain('\r\x1b[2A\x1b[J\x1b[2Kmac-1   [#####     ]  50 %  0.5/1 GiB  running\n\x1b[2Kmac-22  [##########] 100 %  1/1 GiB  succeeded\n');
    expect(r.stderr).toMatch(/\x1b\[2Kmac-1   \[##########\] 100 %  1\/1 GiB  succeeded\n\x1b\[2Kmac-22  \[##########\] 100 %  1\/1 GiB  succeeded\n$/);
  });

  it('--wait --json: the final operations on stdout, nothing else', async () => {
    fake.reply('POST', '/v1/images/prefetch', 202, result([op()]));
    sequence('/v1/image-operations/op-1', [op({ state: 'succeeded', progress: prog(GiB, GiB) })]);
    const r = await fleet(['image', 'prefetch', REF, '--wait', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(result([op({ state: 'succeeded', progress: prog(GiB, GiB) })]));
    expect(r.stderr).toBe('');
  });

  it('--wait: times out with exit 7, naming the workers still pulling', async () => {
    fake.reply('POST', '/v1/images/prefetch', 202, result([op()]));
    sequence('/v1/image-operations/op-1', [op({ state: 'running', progress: prog(1, 10) })]);
    const r = await fleet(['image', 'prefetch', REF, '--wait', '600ms']);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/fleet: prefetch of .* still running after 600ms on mac-1\n$/);
  });

  it('no worker matches: exit 1; a bare image name is exit 2 before any request', async () => {
    fake.reply('POST', '/v1/images/prefetch', 202, result([]));
    const r = await fleet(['image', 'prefetch', REF, '--selector', 'pool=nope']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no worker to prefetch .* none of workers with pool=nope/);
    const bare = await fleet(['image', 'prefetch', 'fleet-guest']);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toMatch(/expected a registry reference like 127.0.0.1:5000\/fleet\/guest:1/);
    expect(fake.requestsTo('POST', '/v1/images/prefetch')).toHaveLength(1);
  });
});

describe('image push (a VM, by its worker)', () => {
  it('POST /v1/vms/NAME/push; --wait prints the digest alone on stdout', async () => {
    const push = op({ id: 'op-push', kind: 'push', vm: 'builder', reference: 'ghcr.io/org/ci:15', digest: '' });
    fake.reply('POST', '/v1/vms/builder/push', 202, push);
    sequence('/v1/image-operations/op-push', [{ ...push, state: 'running', progress: prog(GiB, 4 * GiB) }, { ...push, state: 'succeeded', digest: D2, progress: prog(4 * GiB, 4 * GiB) }]);
    const r = await fleet(['image', 'push', 'builder', 'ghcr.io/org/ci:15', '--wait']);
    expect(r.code).toBe(0);
    expect(fake.requestsTo('POST', '/v1/vms/builder/push')[0]!.body).toEqual({ reference: 'ghcr.io/org/ci:15' });
    expect(r.stdout).toBe(`${D2}\n`);
    expect(r.stderr).toContain('pushing builder → ghcr.io/org/ci:15  [###       ]  25 %  1/4 GiB  running');
    expect(r.stderr).toContain('pushed vm "builder" to ghcr.io/org/ci:15');
  });

  it('a running VM: the controller\'s 409 is exit 6; without --wait the operation is named', async () => {
    fake.fail('POST', '/v1/vms/web-1/push', 409, 'vm_not_stopped', 'vm "web-1" is running: stop it first (fleet vm update web-1 --stop)');
    const r = await fleet(['image', 'push', 'web-1', 'ghcr.io/org/ci:15']);
    expect(r).toMatchObject({ code: 6, stderr: 'fleet: vm "web-1" is running: stop it first (fleet vm update web-1 --stop)\n' });
    fake.reply('POST', '/v1/vms/builder/push', 202, op({ id: 'op-push', kind: 'push', vm: 'builder', worker: 'mac-3' }));
    const q = await fleet(['image', 'push', 'builder', 'ghcr.io/org/ci:15']);
    expect(q.stdout).toBe('pushing vm "builder" to ghcr.io/org/ci:15 on worker "mac-3" (operation op-push)\n');
  });
});

describe('image push arguments', () => {
  it('a VM push takes VM and REF; a local push one REF', () => {
    expect(parsePushArgs('builder', 'ghcr.io/o/x:1', {})).toEqual({ kind: 'remote', vm: 'builder', reference: 'ghcr.io/o/x:1' });
    expect(parsePushArgs('ghcr.io/o/x:1', undefined, { bundle: '/b' })).toEqual({ kind: 'local', reference: 'ghcr.io/o/x:1' });
    expect(parsePushArgs('ghcr.io/o/x:1', undefined, { disk: '/d', kernel: '/k', cmdline: 'console=ttyS0' })).toEqual({ kind: 'local', reference: 'ghcr.io/o/x:1' });
  });

  it.each([
    [['builder', undefined, {}], /missing the reference/],
    [['Builder', 'ghcr.io/o/x:1', {}], /invalid VM name/],
    [['builder', 'ghcr.io/o/x:1', { kernel: '/k' }], /--kernel is for a local push/],
    [['builder', 'ghcr.io/o/x:1', { insecure: true }], /--insecure is for a local push .*fleet registry login/],
    [['ghcr.io/o/x:1', 'extra', { bundle: '/b' }], /a local push takes one argument/],
    [['ghcr.io/o/x:1', undefined, { bundle: '/b', disk: '/d' }], /--bundle and --disk cannot be used together/],
    [['ghcr.io/o/x:1', undefined, { bundle: '/b', kernel: '/k' }], /belong to a Fleet qemu image/],
    [['ghcr.io/o/x:1', undefined, { bundle: '/b', wait: true }], /--wait is for a push by a worker/],
    [[`ghcr.io/o/x@${D1}`, undefined, { disk: '/d' }], /name a tag/],
    [['guest:1', undefined, { disk: '/d' }], /expected a registry reference/],
  ] as const)('refuses %j', (args, message) => {
    expect(() => parsePushArgs(args[0], args[1], args[2])).toThrow(message);
  });

  it('through the CLI: usage errors are exit 2, before any request', async () => {
    const r = await fleet(['image', 'push', 'builder']);
    expect(r.code).toBe(2);
    const local = await fleet(['image', 'push', '--bundle', join(dir, 'missing'), '127.0.0.1:5000/x/y:1', '--insecure']);
    expect(local.code).toBe(2);
    expect(local.stderr).toMatch(/--bundle: cannot read .*missing: ENOENT/);
    expect(fake.requests).toHaveLength(0);
  });
});

describe('image operations', () => {
  it('lists, and one with --wait', async () => {
    fake.reply('GET', '/v1/image-operations', 200, { items: [op({ state: 'running', progress: prog(1, 4) }), op({ id: 'op-0', kind: 'delete', state: 'succeeded' })] });
    const r = await fleet(['image', 'operations', '--worker', 'mac-1', '--state', 'running']);
    expect(r.code).toBe(0);
    expect(fake.requests[0]!.query.get('worker')).toBe('mac-1');
    expect(fake.requests[0]!.query.get('state')).toBe('running');
    expect(r.stdout.split('\n')[0]).toMatch(/^ID\s+KIND\s+WORKER\s+VM\s+REFERENCE\s+STATE\s+PROGRESS\s+AGE\s+MESSAGE$/);
    expect(r.stdout).toMatch(/op-1\s+prefetch\s+mac-1\s+-\s+127.0.0.1:5000\/fleet\/guest:1@sha256:\S+\s+running\s+25 % \(1\/4 B\)\s+1m\s+-/);
    sequence('/v1/image-operations/op-1', [op({ state: 'running' }), op({ state: 'failed', message: 'registry unreachable' })]);
    const w = await fleet(['image', 'operation', 'op-1', '--wait']);
    expect(w.code).toBe(7);
    expect(w.stdout).toContain('State:      failed');
    expect(w.stderr).toMatch(/fleet: operation op-1 \(prefetch on mac-1\) failed: registry unreachable\n$/);
  });
});

describe('shortDigest', () => {
  it('12 hex digits of a sha256 digest, anything else as it is', () => {
    expect(shortDigest(D1)).toBe('ab12cd34ef56');
    expect(shortDigest('local-image')).toBe('local-image');
  });
});
