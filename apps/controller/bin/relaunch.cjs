// `fleet-controller run` re-executes itself once with settings that only count when given before
// the process starts (issue 20: controller memory, BENCHMARKS.md "Memory (issue 20)"):
//
//  - V8's young generation (--max-semi-space-size): V8 sizes it when the isolate is created; by
//    default its two semi-spaces grow to 16 MiB each during start-up and stay (32 MiB resident);
//  - glibc malloc's tunables (MALLOC_ARENA_MAX ...): glibc reads them when the process starts.
//
// The program cannot set either on itself, and the bin runs it in its own process
// (scripts/bin-launch.cjs), so this launcher starts node again with them and stays as the parent:
// node 20 has no exec() that would replace it. What the operator chose wins: a setting already
// given on the command line, in NODE_OPTIONS or in the environment is neither added nor changed,
// and when there is nothing left to add (or FLEET_CONTROLLER_RELAUNCH=0, or under --inspect) the
// controller runs in this process as before.
//
// The parent forwards the signals an operator or supervisor sends (SIGTERM, SIGINT, SIGHUP,
// SIGQUIT, SIGUSR1, SIGUSR2) and exits as the controller did (same code, or killed by the same
// signal). A signal sent to the whole process group (Ctrl-C, systemd's KillMode=control-group)
// reaches the controller twice; its shutdown handler takes a repeat within a second for the same
// request (main.ts). If the parent dies without forwarding (kill -9), the controller sees the
// pipe on fd 3 close and kills itself (SIGKILL) at once: `kill -9` of the pid a supervisor knows
// is still a crash, and no orphan keeps the data dir or the ports (the controller's side:
// apps/controller/src/launched.ts).
//
// Plain CommonJS without dependencies, like the bins: this runs on every start.
'use strict';

/** Young generation: 2 × this many MiB at most (V8's default on 64-bit: 16). */
const SEMI_SPACE_MIB = 2;

/** glibc malloc settings, each unless the operator set it (as a variable or in GLIBC_TUNABLES). */
const MALLOC_ENV = [
  // 8 arenas per core by default: the libuv pool's and V8's compile and GC threads each keep an
  // arena of their own, mostly free after start-up.
  { name: 'MALLOC_ARENA_MAX', tunable: 'glibc.malloc.arena_max', value: '2' },
  // Allocations of 16 KiB and more get pages of their own (mmap) instead of a place in the
  // heap, where freed handshake memory around them keeps them resident. Each worker's TLS
  // connection holds such buffers for its whole life and uses only their first pages: Node's
  // buffer for encrypted input (64 KiB, sized by libuv's read) and output (16 KiB), nghttp2's
  // frame buffer (16 KiB). Measured: −60 MiB with 1,000 workers (BENCHMARKS.md "Memory").
  { name: 'MALLOC_MMAP_THRESHOLD_', tunable: 'glibc.malloc.mmap_threshold', value: '16384' },
];

/** Flags that size the young generation; one given by the operator wins. */
const YOUNG_GENERATION = /^--(max-semi-space-size|min-semi-space-size|semi-space-growth-factor|max-heap-size)(=|$)/;

/** The environment variable naming what this launcher added (the controller removes them from its environment). */
const ADDED_ENV = 'FLEET_CONTROLLER_ADDED_ENV';
/** The fd on which the controller sees its launcher go away. */
const PARENT_FD_ENV = 'FLEET_CONTROLLER_PARENT_FD';

/**
 * What to add to a controller's start, given the node flags (execArgv) and environment it was
 * started with: node flags and environment variables, each only where the operator has not chosen.
 * @param {readonly string[]} execArgv
 * @param {Record<string, string | undefined>} env
 * @returns {{ flags: string[], env: Record<string, string> }}
 */
function startupSettings(execArgv, env) {
  const given = [...execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/)].filter(Boolean).map((f) => f.replace(/^--no-/, '--').replaceAll('_', '-'));
  const flags = [];
  if (!given.some((f) => YOUNG_GENERATION.test(f))) flags.push(`--max-semi-space-size=${SEMI_SPACE_MIB}`);
  const tunables = (env.GLIBC_TUNABLES ?? '').split(':').map((t) => t.split('=')[0]);
  const added = {};
  for (const m of MALLOC_ENV) {
    if (env[m.name] !== undefined || tunables.includes(m.tunable)) continue;
    added[m.name] = m.value;
  }
  return { flags, env: added };
}

/**
 * Whether node was asked to start its inspector.
 * @param {readonly string[]} execArgv
 * @param {Record<string, string | undefined>} env
 */
function underInspector(execArgv, env) {
  return [...execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/)].some((f) => /^--inspect(-brk|-wait)?(=|$)/.test(f.replaceAll('_', '-')));
}

/**
 * For `run` only (not --help, --version or the other commands, which start fast and stay small):
 * starts the controller again with what startupSettings adds and returns true (this process then
 * only forwards signals and exits with the child); returns false when it should run here.
 * @param {string} script the bin (process.argv[1])
 * @param {readonly string[]} args the bin's arguments (process.argv.slice(2))
 */
function relaunch(script, args) {
  if (args[0] !== 'run' || process.env.FLEET_CONTROLLER_RELAUNCH === '0') return false;
  // Under the inspector (--inspect, --inspect-brk, ... on the command line or in NODE_OPTIONS) this
  // process already holds the debug port: a child would fail to open it, and the one to debug
  // would be out of reach. Debugging runs in this process, without the settings.
  if (underInspector(process.execArgv, process.env)) return false;
  const add = startupSettings(process.execArgv, process.env);
  if (add.flags.length === 0 && Object.keys(add.env).length === 0) return false;
  const { spawn } = require('node:child_process');
  const env = { ...process.env, ...add.env, [ADDED_ENV]: Object.keys(add.env).join(','), [PARENT_FD_ENV]: '3' };
  // The operator's node flags after ours, so they are read last (and ours are left out above when
  // they name the same setting anyway). The child needs no relaunch: all is set.
  const child = spawn(process.execPath, [...add.flags, ...process.execArgv, script, ...args], { stdio: ['inherit', 'inherit', 'inherit', 'pipe'], env });
  const signals = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];
  const forward = (signal) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  for (const s of signals) process.on(s, forward);
  child.on('error', (err) => {
    process.stderr.write(`fleet-controller: cannot start ${process.execPath}: ${err.message}\n`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    for (const s of signals) process.off(s, forward);
    if (signal) {
      // Die of the same signal, as a supervisor expects (no handler left, so the default applies).
      process.kill(process.pid, signal);
      return;
    }
    process.exit(code ?? 1);
  });
  // Our end of the parent pipe stays open as long as we live; it must not keep us alive by itself.
  child.stdio[3].unref?.();
  return true;
}

module.exports = { startupSettings, underInspector, relaunch, ADDED_ENV, PARENT_FD_ENV };
