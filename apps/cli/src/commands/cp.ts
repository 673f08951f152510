// `fleet cp SRC DST` (one side VM:PATH): copies a file or a directory either way as a
// tar stream through an exec session, then checks every regular file's SHA-256 on both
// sides, and every symbolic link's target (links are copied as links, never followed). Like `cp -r`: an existing directory DST receives SRC inside it, otherwise SRC is
// copied AS DST. The copy lands in a temporary directory next to DST and is moved into
// place only once the stream completed, so a failed copy leaves nothing half-written.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { lstat, mkdtemp, readdir, readlink, rename, rm } from 'node:fs/promises';
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

/** What a symbolic link is recorded as in a sums map: its target, never what it points to. */
const SYMLINK = 'symlink:';

/**
 * Shell for the VM: lists every symbolic link under "$1"... as two lines, `@symlink PATH`
 * and its target (what parseSums reads beside sha256sum's lines).
 */
const remoteLinks = (where: string) => `find ${where} -type l | while IFS= read -r l; do printf '@symlink %s\n%s\n' "$l" "$(readlink "$l")"; done`;

/**
 * SHA-256 of every regular file under root (or root itself), and the target of every symbolic
 * link (as `symlink:TARGET`; links are not followed, as tar does not follow them), keyed by path
 * relative to root's parent.
 */
export async function localSums(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const base = path.basename(root);
  const walk = async (abs: string, rel: string): Promise<void> => {
    const st = await lstat(abs);
    if (st.isSymbolicLink()) {
      out.set(rel, SYMLINK + (await readlink(abs)));
    } else if (st.isDirectory()) {
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

/**
 * Parses `sha256sum` output ("<hex>  <path>") and remoteLinks' records (`@symlink PATH`, then
 * the target) into a map, renaming the first path component to `base`.
 */
export function parseSums(text: string, base: string): Map<string, string> {
  const out = new Map<string, string>();
  const rename = (p: string) => {
    const parts = p.split('/');
    parts[0] = base;
    return parts.join('/');
  };
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith('@symlink ')) {
      out.set(rename(line.slice('@symlink '.length)), SYMLINK + (lines[++i] ?? ''));
      continue;
    }
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (!m) continue;
    out.set(rename(m[2]!), m[1]!);
  }
  return out;
}

export function compareSums(expected: Map<string, string>, actual: Map<string, string>): string[] {
  const problems: string[] = [];
  for (const [f, h] of expected) {
    const a = actual.get(f);
    const link = h.startsWith(SYMLINK);
    if (a === undefined) problems.push(`${f}: missing at the destination`);
    else if (link && !a.startsWith(SYMLINK)) problems.push(`${f}: a symbolic link here, not one at the destination`);
    else if (link && a !== h) problems.push(`${f}: symbolic link to ${JSON.stringify(h.slice(SYMLINK.length))}, at the destination to ${JSON.stringify(a.slice(SYMLINK.length))}`);
    else if (!link && a.startsWith(SYMLINK)) problems.push(`${f}: a symbolic link at the destination, a file here`);
    else if (a !== h) problems.push(`${f}: checksum mismatch`);
  }
  return problems;
}

/** "3 file(s)" or "3 file(s) and 1 symbolic link(s)". */
export function describeCopied(sums: Map<string, string>): string {
  let links = 0;
  for (const v of sums.values()) if (v.startsWith(SYMLINK)) links++;
  return `${sums.size - links} file(s)${links ? ` and ${links} symbolic link(s)` : ''}`;
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
    remoteLinks('"$(basename "$final")"'),
  ].join('\n');
  const tar = tarProcess(['-C', path.dirname(path.resolve(src)), '-cf', '-', base]);
  tar.child.stdin!.end();
  const [r] = await Promise.all([execStream(url, token, dst.vm!, script, tar.child.stdout!, null), tar.done]);
  failOn(r.outcome, `copy to ${dst.vm}:${dst.path}`, r.stderr);
  const problems = compareSums(sums, parseSums(r.stdout, base));
  if (problems.length) throw new CliError(`copy to ${dst.vm}:${dst.path} is corrupt:\n  ${problems.join('\n  ')}`, ExitCode.ERROR);
  rt.note(`copied ${describeCopied(sums)} to ${dst.vm}:${dst.path}, SHA-256 verified`);
}

async function download(rt: Runtime, url: string, token: string | null, src: Endpoint, dst: string): Promise<void> {
  const s = shellQuote(src.path);
  const sumsRun = await execStream(url, token, src.vm!, `set -e; cd "$(dirname ${s})"; test -e "$(basename ${s})" || test -L "$(basename ${s})"; find "$(basename ${s})" -type f -exec sha256sum {} +; ${remoteLinks(`"$(basename ${s})"`)}`, null, null);
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
    rt.note(`copied ${describeCopied(expected)} from ${src.vm}:${src.path} to ${final}, SHA-256 verified`);
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
