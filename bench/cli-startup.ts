// Start-up time of the binaries (issue 16): medians of N spawns of each command, run
// round-robin so load changes hit every row alike, against `node -e 0` in the same run.
// Rows "tsx" force the old path (FLEET_DEV=1: TypeScript through tsx at run time); the
// others run the bundles setup builds (scripts/build.mjs). Also `fleet exec VM true` as a
// process vs the same command in process (run() from apps/cli/src/cli.ts), both against
// a fake controller in this process whose session answers at once, so the difference is
// the CLI's own start-up.
//
//   pnpm exec tsx bench/cli-startup.ts [--runs 10] [--clean-env] [--force-bundle]
//
// The bundles are (re)built first (node scripts/build.mjs). --force-bundle runs them with
// FLEET_DEV=0 (no freshness check), for a tree whose sources change during the run; without
// it the bench fails if a bundle went stale meanwhile (the row would have measured tsx).
//
// The children get this process's environment (as a user's shell would give them: note that
// NODE_EXTRA_CA_CERTS alone adds ~35 ms to every Node start, `node -e 0` included); with
// --clean-env only PATH, HOME and the fake controller's FLEET_URL/FLEET_TOKEN.
//
// Goals: CLI start-up within 1.5x of bare node; exec as a process within 100 ms of in process.
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: { runs: { type: 'string', default: '10' }, 'clean-env': { type: 'boolean', default: false }, 'force-bundle': { type: 'boolean', default: false } },
});
const RUNS = Number(values.runs);
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error('--runs must be a positive integer');

const FLEET = path.join(ROOT, 'apps/cli/bin/fleet.js');
const CONTROLLER = path.join(ROOT, 'apps/controller/bin/fleet-controller.js');
const WORKER = path.join(ROOT, 'apps/worker/bin/fleet-worker.js');

// A fake controller: the session WebSocket answers `started` and `exit 0` to any start.
interface FakeSocket {
  once(event: 'message', cb: () => void): void;
  send(data: string): void;
}
const { WebSocketServer } = createRequire(path.join(ROOT, 'apps/cli/package.json'))('ws') as {
  WebSocketServer: new (o: object) => { on(event: 'connection', cb: (ws: FakeSocket) => void): void; close(): void };
};
const server = createServer((_req, res) => res.writeHead(404).end());
const wss = new WebSocketServer({ server, handleProtocols: () => 'fleet.v1' });
wss.on('connection', (ws) => {
  ws.once('message', () => {
    ws.send(JSON.stringify({ type: 'started', sessionId: 's-1' }));
    ws.send(JSON.stringify({ type: 'exit', code: 0 }));
  });
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const FAKE_URL = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const EXEC_ARGS = ['exec', 'bench-vm', '--', 'true'];

interface Row {
  name: string;
  args: string[];
  env?: Record<string, string>;
  samples: number[];
}

const inherited = Object.fromEntries(Object.entries(process.env).filter(([k, v]) => v !== undefined && !k.startsWith('FLEET_') && k !== 'NODE_OPTIONS')) as Record<string, string>;
const baseEnv = { ...(values['clean-env'] ? { PATH: process.env.PATH ?? '' } : inherited), HOME: os.tmpdir(), FLEET_URL: FAKE_URL, FLEET_TOKEN: 't' };
const B = values['force-bundle'] ? { env: { FLEET_DEV: '0' } } : {};
const rows: Row[] = [
  { name: 'node -e 0', args: ['-e', '0'], samples: [] },
  { name: 'fleet version --client', args: [FLEET, 'version', '--client'], samples: [], ...B },
  { name: 'fleet version --client (tsx)', args: [FLEET, 'version', '--client'], env: { FLEET_DEV: '1' }, samples: [] },
  { name: 'fleet --help', args: [FLEET, '--help'], samples: [], ...B },
  { name: 'fleet --help (tsx)', args: [FLEET, '--help'], env: { FLEET_DEV: '1' }, samples: [] },
  { name: 'fleet exec VM true', args: [FLEET, ...EXEC_ARGS], samples: [], ...B },
  { name: 'fleet exec VM true (tsx)', args: [FLEET, ...EXEC_ARGS], env: { FLEET_DEV: '1' }, samples: [] },
  { name: 'fleet-controller --help', args: [CONTROLLER, '--help'], samples: [], ...B },
  { name: 'fleet-controller --help (tsx)', args: [CONTROLLER, '--help'], env: { FLEET_DEV: '1' }, samples: [] },
  { name: 'fleet-worker --help', args: [WORKER, '--help'], samples: [], ...B },
  { name: 'fleet-worker --help (tsx)', args: [WORKER, '--help'], env: { FLEET_DEV: '1' }, samples: [] },
];

function timeSpawn(args: string[], env: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(process.execPath, args, { env: { ...baseEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stdout.resume();
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code !== 0) reject(new Error(`${args.join(' ')} exited ${code}: ${err}`));
      else resolve(ms);
    });
  });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

// The bundles must be fresh, or the "bundle" rows would silently measure tsx.
spawnSync(process.execPath, [path.join(ROOT, 'scripts/build.mjs')], { stdio: 'inherit' });
const { stampFresh } = (await import(path.join(ROOT, 'scripts/build.mjs'))) as { stampFresh: (dir: string) => boolean };
const staleBundles = () => ['cli', 'controller', 'worker'].filter((app) => !stampFresh(path.join(ROOT, 'apps', app, 'dist')));
if (staleBundles().length > 0) throw new Error(`stale bundles after the build: ${staleBundles().join(', ')}`);

// In process: the same exec through run(), after one warm-up (modules loaded once, as in a long-lived process).
const { run } = (await import(path.join(ROOT, 'apps/cli/src/cli.ts'))) as typeof import('../apps/cli/src/cli.ts');
async function execInProcess(): Promise<number> {
  const sink = () => Object.assign(new PassThrough(), { isTTY: false });
  const stdout = sink();
  const stderr = sink();
  stdout.resume();
  stderr.resume();
  const t0 = process.hrtime.bigint();
  const code = await run(EXEC_ARGS, { stdout, stderr, stdin: Object.assign(new PassThrough(), { isTTY: false }), env: { ...baseEnv }, homedir: os.tmpdir() } as never);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (code !== 0) throw new Error(`in-process exec exited ${code}`);
  return ms;
}
await execInProcess();
const inProcess: number[] = [];

const load = os.loadavg()[0]!.toFixed(2);
for (const r of rows) await timeSpawn(r.args, r.env ?? {}); // warm-up: file cache
for (let i = 0; i < RUNS; i++) {
  for (const r of rows) r.samples.push(await timeSpawn(r.args, r.env ?? {}));
  inProcess.push(await execInProcess());
}
const loadAfter = os.loadavg()[0]!.toFixed(2);
const staleAfter = values['force-bundle'] ? [] : staleBundles();

const nodeMs = median(rows[0]!.samples);
const pad = (s: string, n: number) => s.padEnd(n);
console.log(`cli-startup: node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), load ${load} → ${loadAfter}, ${RUNS} runs each (median, min-max), ${values['clean-env'] ? 'clean environment' : `inherited environment${process.env.NODE_EXTRA_CA_CERTS ? ' (NODE_EXTRA_CA_CERTS set)' : ''}`}`);
console.log(`${pad('command', 32)} ${pad('median', 9)} ${pad('min-max', 15)} ${pad('vs node', 8)} goal`);
for (const r of rows) {
  const m = median(r.samples);
  const ratio = m / nodeMs;
  const isGoalRow = r.name.startsWith('fleet ') && !r.name.includes('exec') && !r.name.includes('(tsx)');
  const goal = r === rows[0] ? '' : isGoalRow ? (ratio <= 1.5 ? 'met (≤ 1.5×)' : 'NOT met (> 1.5×)') : '';
  console.log(`${pad(r.name, 32)} ${pad(`${m.toFixed(0)} ms`, 9)} ${pad(`${Math.min(...r.samples).toFixed(0)}-${Math.max(...r.samples).toFixed(0)} ms`, 15)} ${pad(`${ratio.toFixed(2)}×`, 8)} ${goal}`);
}
const inMs = median(inProcess);
const execMs = median(rows.find((r) => r.name === 'fleet exec VM true')!.samples);
console.log(`${pad('exec in process (run())', 32)} ${pad(`${inMs.toFixed(1)} ms`, 9)} ${pad(`${Math.min(...inProcess).toFixed(1)}-${Math.max(...inProcess).toFixed(1)} ms`, 15)}`);
console.log(`exec as a process − in process: ${(execMs - inMs).toFixed(0)} ms (goal ≤ 100 ms: ${execMs - inMs <= 100 ? 'met' : 'NOT met'})`);

if (staleAfter.length > 0) {
  console.log(`INVALID: sources of ${staleAfter.join(', ')} changed during the run, so those rows may have measured tsx; rerun (or use --force-bundle)`);
  process.exitCode = 1;
}
wss.close();
server.close();
