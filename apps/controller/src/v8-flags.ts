// V8 flags the controller sets on itself at start (issue 20: controller memory).
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
// The flag only concerns WebAssembly compiled after it is set (the controller compiles
// none before), and is set through v8.setFlagsFromString because the bin runs the program
// in its own process (scripts/bin-launch.cjs): there is no command line to add it to.
import v8 from 'node:v8';

/** Flags that choose wasm tiering; one given on the command line or in NODE_OPTIONS wins. */
const WASM_TIERING = /^--(no-)?(liftoff|liftoff-only|wasm-tier-up|wasm-dynamic-tiering|wasm-lazy-compilation)(=|$)/;

/** The flags to set, given the process's own (an operator's choice is kept). */
export function controllerV8Flags(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  const given = [...execArgv, ...(nodeOptions ?? '').split(/\s+/)].map((f) => f.replaceAll('_', '-'));
  return given.some((f) => WASM_TIERING.test(f)) ? [] : ['--liftoff-only'];
}

/** Sets them; call before anything compiles WebAssembly. */
export function applyControllerV8Flags(): string[] {
  const flags = controllerV8Flags(process.execArgv, process.env.NODE_OPTIONS);
  for (const f of flags) v8.setFlagsFromString(f);
  return flags;
}
