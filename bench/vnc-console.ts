// VNC console benchmark (issue 19), all in one run against ONE real QEMU VM (TCG) in a network
// namespace (test/support/sessions-env.ts: controller on the host, worker + VM in the namespace).
// The same RFB client (test/support/rfb-client.ts), in this process, talks to QEMU's VNC server
//   direct:  straight to the VM host process's Unix socket (<run dir>/vnc.sock) — the baseline;
//   session: through a `vnc` session (WebSocket to the controller, the worker's gRPC stream, the
//            worker's connection to that same socket).
// Measured, alternating direct / session in rounds so both see the same guest and machine load:
//   1. session open: connect → ServerInit (the RFB handshake done);
//   2. full frames: non-incremental FramebufferUpdateRequests of the whole 720x400 screen, one at a
//      time (1.15 MB of Raw each): round trips per second = the transport's bandwidth in frames;
//   3. incremental frames: incremental requests, one outstanding, while a loop in the guest's root
//      shell rewrites a counter on tty1 as fast as it can: updates per second (what a viewer sees);
//   4. key → echo: a KeyEvent ('x' or BackSpace) typed into the tty1 shell until the first
//      FramebufferUpdate whose glyph rows changed (the echoed or erased character), p50/p95/max;
//      each key after a random 0–60 ms pause, so it lands at a random phase of QEMU's refresh tick.
//
//   pnpm exec tsx bench/vnc-console.ts [--rounds 3] [--seconds 8] [--frames 20] [--keys 20]
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { readdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { SessionSocket } from '../apps/cli/src/commands/session-socket.ts';
import { KEYSYM, openVncSession, RfbClient } from '../test/support/rfb-client.ts';
import { sessionsPrerequisites, startSessionsEnv, type SessionsEnv } from '../test/support/sessions-env.ts';
import { markdownTable, percentile } from './support/report.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '8' }, frames: { type: 'string', default: '20' }, keys: { type: 'string', default: '20' } } });
const ROUNDS = Number(values.rounds);
const SECONDS = Number(values.seconds);
const FRAMES = Number(values.frames);
const KEYS = Number(values.keys);
const VM = 'vnc-bench-vm';

const why = sessionsPrerequisites();
if (why) {
  console.error(`cannot run: ${why}`);
  process.exit(2);
}

type Path = 'direct' | 'session';

function findVncSocket(root: string): string {
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    if (depth > 6) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(dir, e.name), depth + 1);
      else if (e.name === 'vnc.sock') found.push(path.join(dir, e.name));
    }
  };
  walk(root, 0);
  if (found.length !== 1) throw new Error(`expected one vnc.sock under ${root}, found ${JSON.stringify(found)}`);
  return found[0]!;
}

async function open(env: SessionsEnv, sock: string, via: Path): Promise<{ rfb: RfbClient; ms: number; close: () => Promise<void> }> {
  const t0 = performance.now();
  if (via === 'direct') {
    const rfb = await RfbClient.connect(net.connect(sock));
    const ms = performance.now() - t0;
    return { rfb, ms, close: async () => rfb.close() };
  }
  const s = openVncSession(env.controller.apiUrl, env.controller.adminToken, VM);
  await s.started;
  const rfb = await RfbClient.connect(s.stream);
  const ms = performance.now() - t0;
  return {
    rfb,
    ms,
    close: async () => {
      rfb.close();
      await s.closed;
    },
  };
}

/** Non-incremental full-screen round trips, one at a time. */
async function fullFrames(rfb: RfbClient, n: number): Promise<{ perSec: number; mibPerSec: number }> {
  await rfb.update(false); // warm
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await rfb.update(false, 30_000);
  const s = (performance.now() - t0) / 1000;
  return { perSec: n / s, mibPerSec: (n * rfb.width * rfb.height * 4) / 1024 / 1024 / s };
}

/** Incremental round trips (one outstanding request) for `seconds` while the guest repaints. */
async function incremental(rfb: RfbClient, seconds: number): Promise<{ perSec: number; avgBytes: number }> {
  await rfb.update(false);
  let n = 0;
  let bytes = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    const u = await rfb.update(true, 10_000);
    n++;
    for (const r of u.rects) bytes += r.width * r.height * 4;
  }
  return { perSec: n / ((performance.now() - t0) / 1000), avgBytes: n ? bytes / n : 0 };
}

/** Pixels of the text glyph rows (rows 0..12 of each 16-row cell: the blinking underline cursor is below). */
function glyphRows(rfb: RfbClient): Uint8Array {
  const out = new Uint8Array(rfb.fb.length);
  for (let y = 0; y < rfb.height; y++) if (y % 16 < 13) out.set(rfb.fb.subarray(y * rfb.width * 4, (y + 1) * rfb.width * 4), y * rfb.width * 4);
  return out;
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

/** KeyEvent → the first update whose glyph rows differ from before the key. */
async function keyLatency(rfb: RfbClient, n: number): Promise<number[]> {
  const out: number[] = [];
  await rfb.update(false);
  for (let i = 0; i < n; i++) {
    // Let the screen settle (the echo of the previous key, the cursor) before the snapshot.
    await new Promise((r) => setTimeout(r, 150));
    await rfb.update(false);
    const before = glyphRows(rfb);
    // QEMU answers on its display refresh tick (every 30 ms while the screen changes), and the full
    // update above ended on a tick: without a random pause the key would always land at the same
    // phase of the tick (a path's latency would then say more about its delay modulo 30 ms than
    // about the path).
    await new Promise((r) => setTimeout(r, Math.random() * 60));
    const sym = i % 2 === 0 ? 0x78 /* x */ : KEYSYM.BackSpace;
    const t0 = performance.now();
    rfb.key(sym, true);
    rfb.key(sym, false);
    for (;;) {
      const u = await rfb.update(true, 10_000);
      if (!sameBytes(before, glyphRows(rfb))) {
        out.push(u.at - t0);
        break;
      }
      if (performance.now() - t0 > 10_000) throw new Error('no echo within 10 s');
    }
  }
  return out;
}

/** Average bytes per incremental update over ~1.5 s (the cursor blink alone is ~0.1 KiB at ~2/s). */
async function activity(rfb: RfbClient): Promise<{ perSec: number; avgBytes: number }> {
  return incremental(rfb, 1.5);
}

/**
 * Starts the repaint loop in the tty1 root shell and checks it runs (a key lost under load would
 * garble the typed line): a Return first flushes whatever is on the line.
 */
async function startSpin(rfb: RfbClient): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    await rfb.type("\n(i=0; while [ ! -e /tmp/stop-spin ]; do i=$((i+1)); printf '\\033[H%08d' $i; done) &\n");
    await new Promise((res) => setTimeout(res, 1000));
    const a = await activity(rfb);
    if (a.perSec > 10) return;
    if (attempt === 3) throw new Error(`the repaint loop does not run (${a.perSec.toFixed(1)} updates/s)`);
  }
}

async function exec(env: SessionsEnv, script: string): Promise<void> {
  const s = SessionSocket.open(env.controller.apiUrl, env.controller.adminToken, VM, { start: { kind: 'exec', command: ['sh', '-c', script] } });
  s.eof();
  const o = await s.outcome;
  if (o.kind !== 'exit' || o.code !== 0) throw new Error(`exec ${script}: ${JSON.stringify(o)}`);
}

const fmt = (n: number, d = 1) => n.toFixed(d);
const loadStart = os.loadavg();
const started = new Date();
const env = await startSessionsEnv({ id: 239 });
try {
  await env.createVm(VM);
  const sock = findVncSocket(path.join(env.tmp, 'q'));
  console.log(`VM ${VM} running (TCG, 1 vCPU); QEMU VNC at ${sock}; rounds=${ROUNDS} seconds=${SECONDS} frames=${FRAMES} keys=${KEYS}`);
  console.log(`machine: ${os.cpus().length} CPUs, Node ${process.version}, load ${loadStart.map((l) => l.toFixed(2)).join(' ')}`);

  // A clean prompt on a black screen for the key runs (typed into the root shell on tty1).
  const setup = await open(env, sock, 'direct');
  await setup.rfb.type("printf '\\033[0m\\033[2J\\033[H'\n");
  await setup.rfb.update(false);

  const r: Record<Path, { open: number[]; full: number[]; fullMib: number[]; inc: number[]; incBytes: number[]; keys: number[] }> = {
    direct: { open: [], full: [], fullMib: [], inc: [], incBytes: [], keys: [] },
    session: { open: [], full: [], fullMib: [], inc: [], incBytes: [], keys: [] },
  };
  for (let round = 1; round <= ROUNDS; round++) {
    for (const via of ['direct', 'session'] as const) {
      const c = await open(env, sock, via);
      r[via].open.push(c.ms);
      const f = await fullFrames(c.rfb, FRAMES);
      r[via].full.push(f.perSec);
      r[via].fullMib.push(f.mibPerSec);
      r[via].keys.push(...(await keyLatency(c.rfb, KEYS)));
      await c.close();
      console.log(`round ${round} ${via}: open ${fmt(c.ms)} ms, full ${fmt(f.perSec)}/s (${fmt(f.mibPerSec)} MiB/s), key p50 ${fmt(percentile(r[via].keys, 50))} ms`);
    }
    // The repaint loop: a counter rewritten in the top-left corner as fast as the guest can, until
    // /tmp/stop-spin exists (created by exec, which runs as the unprivileged guest user).
    await exec(env, 'rm -f /tmp/stop-spin');
    await startSpin(setup.rfb);
    for (const via of ['direct', 'session'] as const) {
      const c = await open(env, sock, via);
      const inc = await incremental(c.rfb, SECONDS);
      r[via].inc.push(inc.perSec);
      r[via].incBytes.push(inc.avgBytes);
      await c.close();
      console.log(`round ${round} ${via}: incremental ${fmt(inc.perSec)} updates/s (avg ${fmt(inc.avgBytes / 1024)} KiB)`);
    }
    await exec(env, 'touch /tmp/stop-spin');
    await new Promise((res) => setTimeout(res, 500));
    await setup.rfb.type("\nprintf '\\033[0m\\033[2J\\033[H'\n");
  }
  await setup.close();
  const loadEnd = os.loadavg();

  const med = (xs: number[]) => percentile(xs, 50);
  const row = (what: string, d: number, s: number, unit: string, higherIsBetter: boolean, digits = 1) => [
    what,
    `${fmt(s, digits)} ${unit}`,
    `${fmt(d, digits)} ${unit}`,
    higherIsBetter ? `${fmt((s / d) * 100, 0)} % of direct` : `${s - d >= 0 ? '+' : ''}${fmt(s - d, digits)} ${unit}`,
  ];
  const table = markdownTable(
    ['measurement', 'through the session', 'direct (Unix socket)', 'session vs direct'],
    [
      row(`open → ServerInit, median of ${ROUNDS}`, med(r.direct.open), med(r.session.open), 'ms', false),
      row(`full 720x400 frames (1.15 MB Raw), round trips/s, median of ${ROUNDS}×${FRAMES}`, med(r.direct.full), med(r.session.full), '/s', true),
      row('  the same as bandwidth', med(r.direct.fullMib), med(r.session.fullMib), 'MiB/s', true),
      row(`incremental updates/s while the guest repaints, median of ${ROUNDS}×${SECONDS} s`, med(r.direct.inc), med(r.session.inc), '/s', true),
      row(`key → echo on screen, p50 (${r.direct.keys.length} keys each)`, percentile(r.direct.keys, 50), percentile(r.session.keys, 50), 'ms', false),
      row('key → echo on screen, p95', percentile(r.direct.keys, 95), percentile(r.session.keys, 95), 'ms', false),
      row('key → echo on screen, max', percentile(r.direct.keys, 100), percentile(r.session.keys, 100), 'ms', false),
    ],
  );
  console.log(`\n${started.toISOString().slice(0, 16)}Z–${new Date().toISOString().slice(11, 16)}Z, load average ${loadStart.map((l) => l.toFixed(2)).join(' ')} at the start, ${loadEnd.map((l) => l.toFixed(2)).join(' ')} at the end\n`);
  console.log(table);
  console.log(`\nincremental update size: direct avg ${fmt(med(r.direct.incBytes) / 1024)} KiB, session avg ${fmt(med(r.session.incBytes) / 1024)} KiB`);
} finally {
  await env.destroy();
}
