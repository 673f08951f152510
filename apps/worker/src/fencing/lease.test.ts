// The lease keeper (expiry on injected clocks and timers, lease.json round trip) and the VM host
// process's fence decision (pure).
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fenceDue, leaseFilePath, parseLeaseFile, watchLeaseFile, writeLeaseFile, type LeaseFile } from './lease-file.ts';
import { LeaseKeeper, type LeaseKeeperOptions } from './lease.ts';

/** Monotonic and wall clocks that only move when told, and timers that fire as they pass. */
function fakeTime(wallStart = 1_700_000_000_000) {
  let mono = 1000;
  let wallOffset = wallStart - mono;
  let nextId = 1;
  const timers = new Map<number, { at: number; fn: () => void }>();
  const options: Required<Pick<LeaseKeeperOptions, 'now' | 'wallNow' | 'setTimer' | 'clearTimer'>> = {
    now: () => mono,
    wallNow: () => mono + wallOffset,
    setTimer: (fn, ms) => {
      const id = nextId++;
      timers.set(id, { at: mono + ms, fn });
      return id;
    },
    clearTimer: (id) => void timers.delete(id as number),
  };
  return {
    options,
    get mono() {
      return mono;
    },
    wall: () => mono + wallOffset,
    /** Moves both clocks, firing due timers in order. */
    advance(ms: number): void {
      const end = mono + ms;
      for (;;) {
        const due = [...timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) break;
        timers.delete(due[0]);
        mono = Math.max(mono, due[1].at);
        due[1].fn();
      }
      mono = end;
    },
    /** The wall clock jumps (NTP step); the monotonic one does not. */
    stepWall(ms: number): void {
      wallOffset += ms;
    },
    pending: () => timers.size,
  };
}

function recorder(keeper: LeaseKeeper): string[] {
  const events: string[] = [];
  keeper.onExpired(() => events.push('expired'));
  keeper.onRenewed(() => events.push('renewed'));
  return events;
}

let tmp = '';
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'fleet-lease-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('LeaseKeeper', () => {
  it('starts without a lease (expired), is valid after a renewal until heartbeat time + fence-after, then fires expired once', () => {
    const t = fakeTime();
    const keeper = new LeaseKeeper(t.options);
    const events = recorder(keeper);
    expect(keeper.expired).toBe(true);
    expect(keeper.fencing).toBe(true);

    // The renewal of a heartbeat sent 100 ms ago with fence-after 3 s: valid for 2.9 s more.
    const sentMono = t.mono;
    const sentWall = t.wall();
    t.advance(100);
    keeper.renew(sentMono + 3000, sentWall + 3000, 3000);
    expect(keeper.expired).toBe(false);
    expect(events).toEqual(['renewed']);
    expect(keeper.validUntilMonoMs).toBe(sentMono + 3000);
    expect(keeper.validUntilUnixMs).toBe(sentWall + 3000);

    t.advance(2899);
    expect(keeper.expired).toBe(false);
    expect(events).toEqual(['renewed']);
    t.advance(1);
    expect(keeper.expired).toBe(true);
    expect(events).toEqual(['renewed', 'expired']);
    expect(keeper.noLeaseForMs()).toBe(3000);
    t.advance(10_000);
    expect(events).toEqual(['renewed', 'expired']); // reported once
    expect(keeper.noLeaseForMs()).toBe(13_000);

    // Back: renewed again, and the timer is re-armed for the new expiry.
    keeper.renew(t.mono + 3000, t.wall() + 3000, 3000);
    expect(events).toEqual(['renewed', 'expired', 'renewed']);
    t.advance(3000);
    expect(events).toEqual(['renewed', 'expired', 'renewed', 'expired']);
    keeper.close();
    expect(t.pending()).toBe(0);
  });

  it('keeps counting on the monotonic clock when the wall clock jumps', () => {
    const t = fakeTime();
    const keeper = new LeaseKeeper(t.options);
    keeper.renew(t.mono + 5000, t.wall() + 5000, 5000);
    t.stepWall(-3_600_000); // an hour back: must not extend the lease
    t.advance(5000);
    expect(keeper.expired).toBe(true);
    keeper.close();
  });

  it('never lets a renewal shorten the lease; a renewal that already ran out changes nothing', () => {
    const t = fakeTime();
    const keeper = new LeaseKeeper(t.options);
    const events = recorder(keeper);
    keeper.renew(t.mono + 5000, t.wall() + 5000, 5000);
    keeper.renew(t.mono + 2000, t.wall() + 2000, 5000); // an older heartbeat's echo, arriving late
    expect(keeper.validUntilMonoMs).toBe(t.mono + 5000);
    t.advance(6000);
    expect(events).toEqual(['renewed', 'expired']);
    // A renewal whose heartbeat is older than fence-after (a very slow round trip) does not revive it.
    keeper.renew(t.mono - 1, t.wall() - 1, 5000);
    expect(keeper.expired).toBe(true);
    expect(events).toEqual(['renewed', 'expired']);
    keeper.close();
  });

  it('Welcome with fence_after_ms 0 (an older controller) means no fencing at all; a fencing controller later counts from its Hello', () => {
    const t = fakeTime();
    const keeper = new LeaseKeeper(t.options);
    const events = recorder(keeper);
    keeper.welcome(0, t.mono, t.wall());
    expect(keeper.expired).toBe(false);
    expect(keeper.fencing).toBe(false);
    expect(keeper.validUntilMonoMs).toBeNull();
    expect(events).toEqual(['renewed']);
    t.advance(86_400_000);
    expect(keeper.expired).toBe(false);
    expect(t.pending()).toBe(0);

    // An upgraded controller: the lease becomes timed, from the Hello it answered.
    const helloMono = t.mono;
    const helloWall = t.wall();
    t.advance(50);
    keeper.welcome(4000, helloMono, helloWall);
    expect(keeper.validUntilMonoMs).toBe(helloMono + 4000);
    expect(keeper.fenceAfterMs).toBe(4000);
    // Welcome does not renew a timed lease: only LeaseRenewals do.
    t.advance(1000);
    keeper.welcome(4000, t.mono, t.wall());
    expect(keeper.validUntilMonoMs).toBe(helloMono + 4000);
    t.advance(3000);
    expect(events).toEqual(['renewed', 'expired']);
    keeper.close();
  });

  it('writes lease.json atomically (0644: no secret; unprivileged VM host processes read it) on every renewal; a new keeper inherits the remaining validity', async () => {
    const dir = await mkdtemp(path.join(tmp, 'rt-'));
    const file = leaseFilePath(dir);
    const t = fakeTime();
    const keeper = new LeaseKeeper({ ...t.options, file });
    const wallAtRenewal = t.wall();
    keeper.renew(t.mono + 10_000, t.wall() + 10_000, 10_000);
    const stored = JSON.parse(await readFile(file, 'utf8')) as LeaseFile;
    expect(stored).toEqual({ validUntilUnixMs: wallAtRenewal + 10_000, fenceAfterMs: 10_000, renewedAtUnixMs: wallAtRenewal });
    expect((await stat(file)).mode & 0o777).toBe(0o644);
    keeper.close();

    // The worker restarts 4 s later (a new process: a new monotonic origin).
    const t2 = fakeTime(wallAtRenewal + 4000);
    const next = new LeaseKeeper({ ...t2.options, file });
    const events = recorder(next);
    expect(next.expired).toBe(false);
    expect(next.validUntilMonoMs).toBe(t2.mono + 6000);
    expect(next.noLeaseForMs()).toBe(4000);
    t2.advance(6000);
    expect(events).toEqual(['expired']);
    next.close();

    // Restarted after the lease ran out: expired from the start (no reschedule VM may start).
    expect(new LeaseKeeper({ ...fakeTime(wallAtRenewal + 11_000).options, file }).expired).toBe(true);

    // Unlimited round trip: null.
    const unlimited = new LeaseKeeper({ ...fakeTime().options, file });
    unlimited.unlimited();
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ validUntilUnixMs: null, fenceAfterMs: 0 });
    const after = new LeaseKeeper({ ...fakeTime().options, file });
    expect(after.expired).toBe(false);
    expect(after.fencing).toBe(false);

    // A corrupt file is no lease.
    await writeFile(file, '{"validUntilUnixMs":');
    expect(new LeaseKeeper({ ...fakeTime().options, file }).expired).toBe(true);
  });

  it('an unwritable lease file is logged, never thrown', () => {
    const t = fakeTime();
    const errors: string[] = [];
    const keeper = new LeaseKeeper({ ...t.options, file: path.join(tmp, 'missing-dir', 'lease.json'), log: { info() {}, warn() {}, error: (_o, m) => errors.push(m ?? '') } });
    keeper.renew(t.mono + 1000, t.wall() + 1000, 1000);
    expect(keeper.expired).toBe(false);
    expect(errors).toEqual([expect.stringMatching(/cannot write the lease file/)]);
    keeper.close();
  });
});

describe('lease file and the VM host fence decision', () => {
  // As the worker writes it: valid until one fenceAfter past the renewal.
  const lease = (validUntilUnixMs: number | null, fenceAfterMs = 10_000): string =>
    JSON.stringify({ validUntilUnixMs, fenceAfterMs, renewedAtUnixMs: validUntilUnixMs === null ? 1 : validUntilUnixMs - fenceAfterMs });

  it('parses only well-formed lease files', () => {
    expect(parseLeaseFile(lease(5))).toEqual({ validUntilUnixMs: 5, fenceAfterMs: 10_000, renewedAtUnixMs: -9_995 });
    expect(parseLeaseFile(lease(null, 0))).toEqual({ validUntilUnixMs: null, fenceAfterMs: 0, renewedAtUnixMs: 1 });
    // A validity beyond one fenceAfter past the renewal (corrupt, hand-edited, a clock that was ahead) would switch fencing off until then.
    expect(parseLeaseFile(JSON.stringify({ validUntilUnixMs: 1e15, fenceAfterMs: 10_000, renewedAtUnixMs: 1_000 }))).toBeUndefined();
    for (const bad of [undefined, '', 'null', '[]', '{}', '{"validUntilUnixMs":"5","fenceAfterMs":1,"renewedAtUnixMs":1}', '{"validUntilUnixMs":5,"fenceAfterMs":-1,"renewedAtUnixMs":1}', '{"validUntilUnixMs":5,"fenceAfterMs":1}']) {
      expect(parseLeaseFile(bad)).toBeUndefined();
    }
  });

  it('fences once now is past validUntilUnixMs, with how long the controller has been silent', () => {
    const now = 1_000_000;
    expect(fenceDue(lease(now + 1), now, 0, 2000)).toEqual({ due: false, lease: expect.objectContaining({ validUntilUnixMs: now + 1 }) });
    expect(fenceDue(lease(now), now, 0, 2000).due).toBe(false);
    const d = fenceDue(lease(now - 2000, 10_000), now, 0, 2000);
    expect(d).toMatchObject({ due: true, message: 'fenced: no lease from the controller for 12s (lease ran out 2s ago; disconnect policy reschedule)' });
  });

  it('never fences on validUntilUnixMs null', () => {
    expect(fenceDue(lease(null, 0), Number.MAX_SAFE_INTEGER, 0, 0).due).toBe(false);
  });

  it('a missing or invalid file fences after the grace period since start; the last good lease still applies meanwhile', () => {
    const started = 5000;
    expect(fenceDue(undefined, started + 2000, started, 2000).due).toBe(false);
    expect(fenceDue(undefined, started + 2001, started, 2000)).toMatchObject({ due: true, message: expect.stringMatching(/^fenced: no valid lease file for 2s \(missing or unreadable\)/) });
    expect(fenceDue('garbage', started + 2001, started, 2000)).toMatchObject({ due: true, message: expect.stringMatching(/\(invalid\)/) });
    // Read once, then gone: the lease read before still decides, in both directions.
    const good = parseLeaseFile(lease(started + 60_000))!;
    expect(fenceDue(undefined, started + 30_000, started, 2000, good)).toEqual({ due: false, lease: good });
    expect(fenceDue(undefined, started + 60_001, started, 2000, good).due).toBe(true);
  });

  it('watchLeaseFile reads the real file on its interval and fences once', async () => {
    const file = path.join(tmp, 'watched.json');
    writeLeaseFile(file, { validUntilUnixMs: Date.now() + 400, fenceAfterMs: 1000, renewedAtUnixMs: Date.now() });
    const fenced: string[] = [];
    const watch = watchLeaseFile({ leaseFile: file, graceMs: 0 }, (m) => fenced.push(m), { intervalMs: 50, startedAt: Date.now() });
    expect(watch.check().due).toBe(false);
    await new Promise((r) => setTimeout(r, 200));
    expect(fenced).toEqual([]);
    // Renewed in time: still running.
    writeLeaseFile(file, { validUntilUnixMs: Date.now() + 300, fenceAfterMs: 1000, renewedAtUnixMs: Date.now() });
    await new Promise((r) => setTimeout(r, 250));
    expect(fenced).toEqual([]);
    await expect.poll(() => fenced.length, { timeout: 1000, interval: 20 }).toBe(1);
    await new Promise((r) => setTimeout(r, 150));
    expect(fenced).toHaveLength(1);
    expect(fenced[0]).toMatch(/^fenced: no lease from the controller for 1s/);
    watch.stop();
  });
});
