// V8 flags the controller sets on itself at start (issue 20: controller memory).
//
// WebAssembly:
//
// Prisma's query compiler (3.3 MB) and schema engine (5.4 MB, migrations) are WebAssembly.
// V8 compiles wasm with its baseline compiler (Liftoff) and then recompiles hot functions
// with TurboFan on background threads. Those TurboFan compilations cost the controller
// ~95 MiB of RSS (malloc arenas of the compile threads, which glibc keeps, plus the
// optimised code), 276 → 181 MiB idle, while queries are not measurably slower without
// them (bench/controller-memory.ts; a findMany/upsert micro-benchmark: 139–153 vs
// 125–133 µs and 227–234 vs 230–234 µs per query): a query's time is the SQLite round
// trip and the JS around it, not the compiler's wasm. So the controller runs wasm on
// Liftoff code only.
//
// Old-generation growth: after a major GC V8 lets the heap grow by a factor it picks from
// the GC and allocation speeds, up to 4× the live size for a fast-allocating program. The
// controller allocates fast (every query, status report and list response is short-lived
// garbage) while what it keeps is small: with 1,000 workers and 10,000 VMs ~100 MiB live in a
// 380 MiB heap, 632 MiB RSS. --heap-growing-percent=50 lets the heap grow 1.5× past the live
// size instead. Measured (bench/controller-memory.ts, same workload, whole run):
//
//   growth          RSS settled (peak)   GC pauses (major GCs)   controller CPU
//   V8's default    632 MiB (632)         7.4 s (18)              95 s
//   50 % (this)     397 MiB (454)        13.4 s (93)             114 s
//   20 %            369 MiB (431)        24.6 s (207)            141 s
//
// (Those three under a load average of ~4; 50 % again on a quiet machine: 390 MiB (461), 7.1 s
// (81), 94 s.) 50 % keeps most of the saving for about a third of 20 %'s extra GC time: a
// deliberate trade of CPU (GC work, partly on V8's helper thread) for memory, not free.
//
// Baseline code: V8 compiles a function that has run a little (Sparkplug) to machine code
// kept beside its bytecode, and by default never drops either once that code exists, however
// long the function stays unused. The controller runs much code only at start or in bursts
// (route and plugin set-up, the .proto parse, x509/ASN.1 for each enrollment); with
// --flush-baseline-code V8 drops baseline code and bytecode of a function unused for some
// major GCs (--bytecode-old-age, 5), as it already does for bytecode alone, and compiles it
// again if it is called. With 1,000 workers and 10,000 VMs: JS code and bytecode 12 → 8 MiB
// at every stage after the workers connected (bench/controller-memory.ts; BENCHMARKS.md,
// "Memory", sixth pass).
//
// Not here: the young generation (up to 2 × 16 MiB semi-spaces, 32 MiB resident from start-up
// on) and glibc malloc's settings. V8 sizes the one and glibc reads the other when the process
// starts, so only the command line and the environment can change them: `fleet-controller run`
// starts node once more with --max-semi-space-size=2 and malloc settings unless the operator
// chose them (apps/controller/bin/relaunch.cjs; BENCHMARKS.md, "Memory (issue 20)").
//
// The flags here only concern what V8 does after they are set (the controller compiles no wasm
// before; the growing factor and what to flush are read at every GC), and they are set through
// v8.setFlagsFromString so that they hold however the program was started (with the launcher,
// with FLEET_CONTROLLER_RELAUNCH=0, or through tsx).
import v8 from 'node:v8';

/** Flags that choose wasm tiering; one given on the command line or in NODE_OPTIONS wins. */
const WASM_TIERING = /^--(no-)?(liftoff|liftoff-only|wasm-tier-up|wasm-dynamic-tiering|wasm-lazy-compilation)(=|$)/;
/** Flags that choose how the old generation grows. */
const HEAP_GROWTH = /^--(heap-growing-percent|memory-reducer|optimize-for-size|predictable-gc-schedule)(=|$)/;

/** Flags that choose what V8 flushes of unused functions, or whether there is baseline code at all. */
const CODE_FLUSHING = /^--(flush-baseline-code|flush-bytecode|bytecode-old-age|sparkplug|always-sparkplug|stress-flush-code)(=|$)/;

/** The flags to set, given the process's own (an operator's choice is kept). */
export function controllerV8Flags(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  const given = [...execArgv, ...(nodeOptions ?? '').split(/\s+/)].map((f) => f.replace(/^--no-/, '--').replaceAll('_', '-'));
  const flags: string[] = [];
  if (!given.some((f) => WASM_TIERING.test(f))) flags.push('--liftoff-only');
  if (!given.some((f) => HEAP_GROWTH.test(f))) flags.push('--heap-growing-percent=50');
  if (!given.some((f) => CODE_FLUSHING.test(f))) flags.push('--flush-baseline-code');
  return flags;
}

/** Sets them; call before anything compiles WebAssembly. */
export function applyControllerV8Flags(): string[] {
  const flags = controllerV8Flags(process.execArgv, process.env.NODE_OPTIONS);
  for (const f of flags) v8.setFlagsFromString(f);
  return flags;
}
