// Session benchmark (issue 5), all in one run against ONE real QEMU VM (TCG) in a network
// namespace (test/support/sessions-env.ts: controller on the host, worker + VM in the
// namespace, every session byte over the worker's gRPC connection):
//
//  1. latency of `exec VM true` with a warm pooled SSH connection, p50/p99 over N runs
//     (in-process WebSocket client, as the CLI's library) versus OpenSSH from the worker's
//     namespace over a warm ControlMaster connection (the same "connection reuse" idea);
//     plus the full `fleet exec VM true` CLI process for reference (node start-up included);
//  2. throughput of a stream VM -> client: through exec vs direct ssh; through port-forward
//     vs a direct TCP connection from the worker's namespace.
//
//   pnpm exec tsx bench/sessions.ts [--runs 200] [--mib 1024] [--cli-runs 10]
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { SessionSocket } from '../apps/cli/src/commands/session-socket.ts';
import { FLEET_CLI, sessionsPrerequisites, startSessionsEnv, type SessionsEnv } from '../test/support/sessions-env.ts';
import { REPO_ROOT } from '../test/support/fleet-processes.ts';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '200' }, mib: { type: 'string', default: '1024' }, 'cli-runs': { type: 'string', default: '10' } } });
const RUNS = Number(values.runs);
const MIB = Number(values.mib);
const CLI_RUNS = Number(values['cli-runs']);
const BYTES = MIB * 1024 * 1024;
const VM = 'bench-vm';

const why = sessionsPrerequisites();
if (why) {
  console.error(`cannot run: ${why}`);
  process.exit(2);
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const ms = (n: number) => `${n.toFixed(1)} ms`;
const rate = (bytes: number, msTaken: number) => `${(bytes / 1024 / 1024 / (msTaken / 1000)).toFixed(1)} MiB/s`;

async function execOnce(env: SessionsEnv, command: string[], sink?: (n: number) => void): Promise<number> {
  const s = SessionSocket.open(env.controller.apiUrl, env.controller.adminToken, VM, { start: { kind: 'exec', command } });
  if (sink) s.on('stdout', (d) => sink(d.length));
  s.eof();
  const o = await s.outcome;
  if (o.kind !== 'exit' || o.code !== 0) throw new Error(`exec failed: ${JSON.stringify(o)}`);
  return 0;
}

function timeSync(f: () => void): number {
  const t = performance.now();
  f();
  return performance.now() - t;
}

const env = await startSessionsEnv({ id: 240 });
try {
  const { ip } = await env.createVm(VM);
  console.log(`VM ${VM} running at ${ip} (TCG); runs=${RUNS}, stream=${MIB} MiB`);

  // Credentials for the direct baselines (what the fleet itself uses).
  const dir = path.join(env.tmp, 'bench-ssh');
  const cfg = execFileSync(process.execPath, [FLEET_CLI, '--url', env.controller.apiUrl, '--token', env.controller.adminToken, 'ssh-config', '--dir', dir, VM], { cwd: REPO_ROOT, encoding: 'utf8' });
  const keyFile = /IdentityFile (\S+)/.exec(cfg)![1]!;
  const sshBase = ['-i', keyFile, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', `ControlPath=${dir}/cm`, '-o', 'Ciphers=chacha20-poly1305@openssh.com'];
  execFileSync('ip', env.inNs(['ssh', ...sshBase, '-o', 'ControlMaster=yes', '-o', 'ControlPersist=600', '-fN', `fleet@${ip}`]).slice(1));

  // ---- 1. latency
  for (let i = 0; i < 5; i++) await execOnce(env, ['true']); // warm the pool
  const fleetLat: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    await execOnce(env, ['true']);
    fleetLat.push(performance.now() - t);
  }
  const sshLat: number[] = [];
  for (let i = 0; i < RUNS; i++) sshLat.push(timeSync(() => execFileSync('ip', env.inNs(['ssh', ...sshBase, `fleet@${ip}`, 'true']).slice(1))));
  const cliLat: number[] = [];
  for (let i = 0; i < CLI_RUNS; i++) {
    cliLat.push(timeSync(() => execFileSync(process.execPath, [FLEET_CLI, '--url', env.controller.apiUrl, '--token', env.controller.adminToken, 'exec', '-n', VM, '--', 'true'], { cwd: REPO_ROOT })));
  }
  console.log('\nexec VM true (warm connection)');
  console.log(`  fleet exec (WebSocket client, in process)   p50 ${ms(pct(fleetLat, 50))}  p99 ${ms(pct(fleetLat, 99))}`);
  console.log(`  direct ssh, ControlMaster (worker netns)    p50 ${ms(pct(sshLat, 50))}  p99 ${ms(pct(sshLat, 99))}`);
  console.log(`  overhead p50: ${ms(pct(fleetLat, 50) - pct(sshLat, 50))}`);
  console.log(`  fleet exec CLI process (node start-up incl.) p50 ${ms(pct(cliLat, 50))} over ${CLI_RUNS} runs`);

  // ---- 2. throughput VM -> client
  const gen = ['head', '-c', String(BYTES), '/dev/zero'];
  let got = 0;
  let t = performance.now();
  await execOnce(env, gen, (n) => (got += n));
  const execMs = performance.now() - t;
  if (got !== BYTES) throw new Error(`exec stream: got ${got} of ${BYTES}`);
  const sshMs = timeSync(() => execFileSync('sh', ['-c', `ip netns exec ${env.ns} ssh ${sshBase.join(' ')} -o ControlPath=none fleet@${ip} 'head -c ${BYTES} /dev/zero' | wc -c > /dev/null`]));

  // port-forward: busybox nc in the guest serves the bytes once per connection.
  const serve = async () => {
    await execOnce(env, ['sh', '-c', `setsid nc -l -p 9000 -e head -c ${BYTES} /dev/zero </dev/null >/dev/null 2>&1 & sleep 0.3`]);
  };
  await serve();
  got = 0;
  t = performance.now();
  await new Promise<void>((resolve, reject) => {
    const s = SessionSocket.open(env.controller.apiUrl, env.controller.adminToken, VM, { start: { kind: 'port-forward', port: 9000 } });
    s.on('stdout', (d) => (got += d.length));
    void s.outcome.then(() => resolve(), reject);
  });
  const pfMs = performance.now() - t;
  if (got !== BYTES) throw new Error(`port-forward stream: got ${got} of ${BYTES}`);
  await serve();
  const probe = path.join(env.tmp, 'tcp-read.mjs');
  writeFileSync(probe, `import net from 'node:net'; let n = 0; const t = performance.now(); net.connect(9000, ${JSON.stringify(ip)}).on('data', (d) => (n += d.length)).on('close', () => console.log(n, performance.now() - t));`);
  const [tcpBytes, tcpMs] = execFileSync('ip', env.inNs([process.execPath, probe]).slice(1), { encoding: 'utf8' }).trim().split(' ').map(Number) as [number, number];
  if (tcpBytes !== BYTES) throw new Error(`direct TCP: got ${tcpBytes} of ${BYTES}`);

  console.log(`\nstream ${MIB} MiB VM -> client`);
  console.log(`  exec:         fleet ${rate(BYTES, execMs)}  direct ssh ${rate(BYTES, sshMs)}  -> ${((sshMs / execMs) * 100).toFixed(0)}% of direct`);
  console.log(`  port-forward: fleet ${rate(BYTES, pfMs)}  direct TCP ${rate(BYTES, tcpMs)}  -> ${((tcpMs / pfMs) * 100).toFixed(0)}% of direct`);
} finally {
  await env.destroy();
}
