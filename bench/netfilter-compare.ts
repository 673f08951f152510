/**
 * The filter's decision rate now against an earlier version, in one run on one machine: checks
 * out BASELINE_REF (default: the parent of the first commit of issue 11) into a temporary git
 * worktree and runs bench/netfilter.ts against each version, alternating, ROUNDS times (default 2).
 * Prints M decisions/s per mix (best of the rounds) and the change.
 *
 *   pnpm exec tsx bench/netfilter-compare.ts [BASELINE_REF] [ROUNDS]
 *   NETFILTER_BENCH_FRAMES=5000000 pnpm exec tsx bench/netfilter-compare.ts bebebcc 3
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ref = process.argv[2] ?? 'bebebcc';
const rounds = Number(process.argv[3] ?? 2);
const dir = mkdtempSync(path.join(os.tmpdir(), 'fleet-nf-base-'));

interface Row {
  name: string;
  mfps: number;
}

function run(impl: string): Row[] {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench/netfilter.ts')], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, NETFILTER_BENCH_JSON: '1', NETFILTER_BENCH_IMPL: impl },
    maxBuffer: 16 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`bench/netfilter.ts failed (${impl}): ${r.stderr}`);
  const line = r.stdout.split('\n').find((l) => l.startsWith('JSON '));
  if (!line) throw new Error(`no JSON line in the output:\n${r.stdout}`);
  return JSON.parse(line.slice(5)) as Row[];
}

try {
  const sha = execFileSync('git', ['rev-parse', '--short', ref], { cwd: ROOT, encoding: 'utf8' }).trim();
  execFileSync('git', ['worktree', 'add', '--detach', dir, sha], { cwd: ROOT, stdio: 'ignore' });
  const baseImpl = path.join(dir, 'packages/netfilter/src/index.ts');
  const best = { base: new Map<string, number>(), now: new Map<string, number>() };
  for (let i = 0; i < rounds; i++) {
    // Both through a dynamic import of a path, so the two runs share one harness.
    for (const [which, impl] of [['base', baseImpl], ['now', path.join(ROOT, 'packages/netfilter/src/index.ts')]] as const) {
      for (const row of run(impl)) best[which].set(row.name, Math.max(best[which].get(row.name) ?? 0, row.mfps));
      console.error(`round ${i + 1}/${rounds}: ${which} done`);
    }
  }
  const w = Math.max(...[...best.now.keys()].map((k) => k.length));
  console.log(`netfilter decision rate, M decisions/s (best of ${rounds} rounds each, alternating), baseline ${ref} (${sha}) vs this checkout`);
  console.log(`${'mix'.padEnd(w)}  baseline      now   change`);
  let worst = Infinity;
  for (const [name, now] of best.now) {
    const base = best.base.get(name);
    if (base === undefined) continue;
    const change = (now / base - 1) * 100;
    worst = Math.min(worst, change);
    console.log(`${name.padEnd(w)}  ${base.toFixed(2).padStart(8)}  ${now.toFixed(2).padStart(7)}  ${(change >= 0 ? '+' : '') + change.toFixed(1)} %`);
  }
  console.log(`largest drop: ${worst.toFixed(1)} % (goal: no mix more than 10 % slower)`);
} finally {
  try {
    execFileSync('git', ['worktree', 'remove', '--force', dir], { cwd: ROOT, stdio: 'ignore' });
  } catch {
    rmSync(dir, { recursive: true, force: true });
  }
}
