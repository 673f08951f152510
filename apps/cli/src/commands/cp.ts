// `fleet cp SRC DST` (one side VM:PATH): copies a file or a directory either way as a
// tar stream through an exec session, then checks every regular file's SHA-256 on both
// sides. Like `cp -r`: an existing directory DST receives SRC inside it, otherwise SRC is
// copied AS DST. The copy lands in a temporary directory next to DST and is moved into
// place only once the stream completed, so a failed copy leaves nothing half-written.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { mkdtemp, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { CliError, ExitCode, UsageError } from '../errors.ts';
import type { Runtime } from '../runtime.ts';
import { validateName } from '../validate.ts';
import { shellQuote } from './shell-quote.ts';
import { exitCodeOf, SessionSocket, type SessionOutcome } from './session-socket.ts';

interface Endpoint {
  vm: string | null;
  path: string;
}

export function parseEndpoint(spec: string): Endpoint {
  const m = /^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?):(.*)$/.exec(spec);
  if (m) {
    if (!m[3]) throw new UsageError(`"${spec}": give a path after the colon (e.g. ${m[1]}:/tmp)`);
    return { vm: m[1]!, path: m[3]! };
  }
  return { vm: null, path: spec };
}

/** SHA-256 of every regular file under root (or root itself), keyed by path relative to root's parent. */
export async function localSums(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const base = path.basename(root);
  const walk = async (abs: string, rel: string): Promise<void> => {
    const st = await stat(abs);
    if (st.isDirectory()) {
      for (const e of await readdir(abs)) await walk(path.join(abs, e), `${rel}/${e}`);
    } else if (st.isFile()) {
      const h = createHash('sha256');
      await new Promise<void>((resolve, reject) => createReadStream(abs).on('data', (d) => h.update(d)).on('end', () => resolve()).on('error', reject));
      out.set(rel, h.digest('hex'));
    }
  };
  await walk(root, base);
  return out;
}

/** Parses `sha256sum` output ("<hex>  <path>") into a map, renaming the first path component to `base`. */
export function parseSums(text: string, base: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (!m) continue;
    const parts = m[2]!.split('/');
    parts[0] = base;
    out.set(parts.join('/'), m[1]!);
  }
  return out;
}

function compareSums(expected: Map<string, string>, actual: Map<string, string>): string[] {
  const problems: string[] = [];
  for (const [f, h] of expected) {
    const a = actual.get(f);
    if (!a) problems.push(`${f}: missing at the destination`);
    else if (a !== h) problems.push(`${f}: checksum mismatch`);
  }
  return problems;
}

/** Runs one exec session; stdin from `input` (or none), stdout to `output` (or collected). */
async function execStream(url: string, token: string | null, vm: string, script: string, input: NodeJS.ReadableStream | null, output: NodeJS.WritableStream | null): Promise<{ outcome: SessionOutcome; stdout: string; stderr: string }> {
  const s = SessionSocket.open(url, token, vm, { start: { kind: 'exec', command: ['sh', '-c', script] } });
  let stdout = '';
  let stderr = '';
  s.on('stdout', (d) => {
    if (!output) stdout += d.toString();
    else if (!output.write(d)) {
      s.pause();
      output.once('drain', () => s.resume());
    }
  });
  s.on('stderr', (d) => (stderr += d.toString()));
  if (input) {
    input.on('data', (d: Buffer) => {
      if (!s.write(d)) {
        input.pause();
        s.once('drain', () => input.resume());
      }
    });
    input.once('end', () => s.eof());
  } else s.eof();
  const outcome = await s.outcome;
  if (output) output.end();
  return { outcome, stdout, stderr };
}

function tarProcess(args: string[]): { child: ReturnType<typeof spawn>; done: Promise<string> } {
  const child = spawn('tar', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<string>((resolve, reject) => {
    child.once('error', (e) => reject(new CliError(`cannot run tar: ${e.message}`, ExitCode.ERROR)));
    child.once('close', (code) => (code === 0 ? resolve(err) : reject(new CliError(`local tar failed (${code}): ${err.trim()}`, ExitCode.ERROR))));
  });
  return { child, done };
}

function failOn(o: SessionOutcome, what: string, stderr: string): void {
  if (o.kind === 'exit' && o.code === 0) return;
  const why = o.kind === 'exit' ? `exit ${o.code}${stderr.trim() ? `: ${stderr.trim().split('\n').slice(-3).join(' / ')}` : ''}` : o.message;
  throw new CliError(`${what} failed: ${why}`, (o.kind === 'exit' ? ExitCode.ERROR : exitCodeOf(o, true)) as ExitCode);
}

async function upload(rt: Runtime, url: string, token: string | null, src: string, dst: Endpoint): Promise<void> {
  if (!existsSync(src)) throw new UsageError(`${src}: no such file or directory`);
  const base = path.basename(path.resolve(src));
  const sums = await localSums(path.resolve(src));
  const d = shellQuote(dst.path);
  const b = shellQuote(base);
  // Extract into a temp dir beside the destination, then move into place and list checksums.
  const script = [
    'set -e',
    `if [ -d ${d} ]; then p=${d}; final=${d}/${b}; else p=$(dirname ${d}); final=${d}; fi`,
    't=$(mktemp -d "$p/.fleet-cp.XXXXXX")',
    'trap \'rm -rf "$t"\' EXIT',
    'tar -x -f - -C "$t"',
    `rm -rf "$final.fleet-old" ; if [ -e "$final" ] && [ ! -d "$final" ]; then mv "$final" "$final.fleet-old"; fi`,
    `mv "$t"/${b} "$final"`,
    'rm -rf "$final.fleet-old"',
    'cd "$(dirname "$final")"',
    'find "$(basename "$final")" -type f -exec sha256sum {} +',
  ].join('\n');
  const tar = tarProcess(['-C', path.dirname(path.resolve(src)), '-cf', '-', base]);
  tar.child.stdin!.end();
  const [r] = await Promise.all([execStream(url, token, dst.vm!, script, tar.child.stdout!, null), tar.done]);
  failOn(r.outcome, `copy to ${dst.vm}:${dst.path}`, r.stderr);
  const problems = compareSums(sums, parseSums(r.stdout, base));
  if (problems.length) throw new CliError(`copy to ${dst.vm}:${dst.path} is corrupt:\n  ${problems.join('\n  ')}`, ExitCode.ERROR);
  rt.note(`copied ${sums.size} file(s) to ${dst.vm}:${dst.path}, SHA-256 verified`);
}

async function download(rt: Runtime, url: string, token: string | null, src: Endpoint, dst: string): Promise<void> {
  const s = shellQuote(src.path);
  const sumsRun = await execStream(url, token, src.vm!, `set -e; cd "$(dirname ${s})"; test -e "$(basename ${s})"; find "$(basename ${s})" -type f -exec sha256sum {} +`, null, null);
  failOn(sumsRun.outcome, `reading ${src.vm}:${src.path}`, sumsRun.stderr);
  const dstAbs = path.resolve(dst);
  const intoDir = existsSync(dstAbs) && statSync(dstAbs).isDirectory();
  const final = intoDir ? path.join(dstAbs, path.basename(src.path)) : dstAbs;
  const tmp = await mkdtemp(path.join(path.dirname(final), '.fleet-cp-'));
  try {
    const tar = tarProcess(['-C', tmp, '-xf', '-']);
    const [r] = await Promise.all([execStream(url, token, src.vm!, `set -e; cd "$(dirname ${s})"; tar -cf - "$(basename ${s})"`, null, tar.child.stdin!), tar.done]);
    failOn(r.outcome, `copy from ${src.vm}:${src.path}`, r.stderr);
    const remoteBase = path.basename(src.path);
    const expected = parseSums(sumsRun.stdout, remoteBase);
    const got = await localSums(path.join(tmp, remoteBase));
    const problems = compareSums(expected, got);
    if (problems.length) throw new CliError(`copy from ${src.vm}:${src.path} is corrupt:\n  ${problems.join('\n  ')}`, ExitCode.ERROR);
    await rm(final, { recursive: true, force: true });
    await rename(path.join(tmp, remoteBase), final);
    rt.note(`copied ${expected.size} file(s) from ${src.vm}:${src.path} to ${final}, SHA-256 verified`);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

export function registerCpCommand(program: Command, rt: Runtime): void {
  program
    .command('cp')
    .description('copy a file or directory to or from a VM (tar through exec, SHA-256 checked)')
    .argument('<src>', 'local path or VM:PATH')
    .argument('<dst>', 'local path or VM:PATH')
    .addHelpText('after', '\nExamples:\n  fleet cp ./build web-1:/srv/app\n  fleet cp web-1:/var/log/app.log .')
    .action(async (srcSpec: string, dstSpec: string, _opts: unknown, cmd: Command) => {
      const src = parseEndpoint(srcSpec);
      const dst = parseEndpoint(dstSpec);
      if ((src.vm === null) === (dst.vm === null)) throw new UsageError('exactly one of SRC and DST must be VM:PATH');
      if (src.vm) validateName(src.vm, 'VM');
      if (dst.vm) validateName(dst.vm, 'VM');
      const target = rt.target(cmd);
      if (!target.url) throw new UsageError('no controller configured: run "fleet login URL --token T", or pass --url / set FLEET_URL');
      if (dst.vm) await upload(rt, target.url, target.token, src.path, dst);
      else await download(rt, target.url, target.token, src, dst.path);
    });
}
