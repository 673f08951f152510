// The node binary VM host processes run on. Virtualization.framework works only in a process whose
// main executable is signed with com.apple.security.virtualization; the official node is not. The
// worker therefore keeps a private copy of its own node, ad-hoc signed with Node's own
// entitlements plus that one (never re-signing the system or Homebrew node), re-made whenever the
// source node changes, and checks the signature before using it.
// Issue 17: the copy lives in a root-owned directory (assertRootOwned: no VM user can swap it), and
// its SHA-256 is pinned when it is signed: every VM agent start checks it (root-owned.ts verifyPinned),
// not only that some valid signature with the entitlement is present.
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, realpath, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { toPlist } from './plist.ts';
import { runCommand, type RunCommand } from './run-command.ts';
import { assertRootOwned, sha256File } from './root-owned.ts';

export const VIRTUALIZATION_ENTITLEMENT = 'com.apple.security.virtualization';

/** Node's own entitlements (nodejs/node tools/osx-entitlements.plist) — kept so JIT etc. still work — plus virtualization. */
export const VM_HOST_ENTITLEMENTS: Readonly<Record<string, boolean>> = {
  'com.apple.security.cs.allow-jit': true,
  'com.apple.security.cs.allow-unsigned-executable-memory': true,
  'com.apple.security.cs.disable-executable-page-protection': true,
  'com.apple.security.cs.allow-dyld-environment-variables': true,
  'com.apple.security.cs.disable-library-validation': true,
  [VIRTUALIZATION_ENTITLEMENT]: true,
};

export function entitlementsPlist(): string {
  return toPlist({ ...VM_HOST_ENTITLEMENTS });
}

export interface SignedNodePaths {
  dir: string;
  node: string;
  entitlements: string;
  stamp: string;
}

export function signedNodePaths(dataDir: string): SignedNodePaths {
  const dir = path.join(dataDir, 'vm-host-node');
  return { dir, node: path.join(dir, 'node'), entitlements: path.join(dir, 'entitlements.plist'), stamp: path.join(dir, 'source.json') };
}

/** argv of the ad-hoc signing step (--force replaces node's own Developer ID signature on the copy). */
export function codesignSignArgs(p: SignedNodePaths): string[] {
  return ['--force', '--sign', '-', '--entitlements', p.entitlements, p.node];
}

/** argv that prints the binary's entitlements as XML. */
export function codesignEntitlementsArgs(binary: string): string[] {
  return ['--display', '--entitlements', '-', '--xml', binary];
}

/** argv of the signature integrity check. */
export function codesignVerifyArgs(binary: string): string[] {
  return ['--verify', '--strict', binary];
}

/** Whether `codesign --display --entitlements - --xml` output grants the virtualization entitlement. */
export function grantsVirtualization(entitlementsOutput: string): boolean {
  const compact = entitlementsOutput.replace(/\s+/g, '');
  return compact.includes(`<key>${VIRTUALIZATION_ENTITLEMENT}</key><true/>`);
}

export function remedyFor(p: SignedNodePaths): string {
  return (
    `Fix: restart the worker (it re-creates ${p.node} at start), or by hand: ` +
    `codesign ${codesignSignArgs(p).join(' ')}   (entitlements file: ${p.entitlements}; needs the Xcode Command Line Tools: xcode-select --install)`
  );
}

export class SignatureError extends Error {
  override readonly name = 'SignatureError';
}

/**
 * Checks that `p.node` carries a valid signature with the virtualization entitlement. Throws a
 * SignatureError whose message says exactly what is wrong and what to run.
 */
export async function checkSignature(p: SignedNodePaths, run: RunCommand = runCommand): Promise<void> {
  const verify = await run('codesign', codesignVerifyArgs(p.node));
  if (verify.code !== 0) {
    throw new SignatureError(`${p.node} has no valid code signature (codesign --verify: ${verify.stderr.trim() || `exit ${verify.code}`}). ${remedyFor(p)}`);
  }
  const ents = await run('codesign', codesignEntitlementsArgs(p.node));
  if (ents.code !== 0 || !grantsVirtualization(ents.stdout)) {
    throw new SignatureError(`${p.node} is not signed with the ${VIRTUALIZATION_ENTITLEMENT} entitlement, so Virtualization.framework will refuse to run VMs. ${remedyFor(p)}`);
  }
}

interface SourceStamp {
  source: string;
  size: number;
  mtimeMs: number;
  entitlements: string;
  /** SHA-256 of the signed copy, pinned when it was made. */
  signedSha256?: string;
}

export interface SignedNode extends SignedNodePaths {
  /** The signed copy's SHA-256, checked before every VM agent start. */
  sha256: string;
}

/**
 * Makes (or re-uses) the signed copy of `sourceNode` (default: this process's node) under
 * `dataDir`, then checks it. Returns the path VM host processes must be spawned with.
 */
export async function prepareSignedNode(dataDir: string, opts: { sourceNode?: string; run?: RunCommand; requireRootOwned?: boolean } = {}): Promise<SignedNode> {
  const run = opts.run ?? runCommand;
  const p = signedNodePaths(dataDir);
  const source = await realpath(opts.sourceNode ?? process.execPath);
  const st = await stat(source);
  const ents = entitlementsPlist();
  const want: SourceStamp = { source, size: st.size, mtimeMs: Math.floor(st.mtimeMs), entitlements: createHash('sha256').update(ents).digest('hex') };
  let have: SourceStamp | undefined;
  try {
    have = JSON.parse(await readFile(p.stamp, 'utf8')) as SourceStamp;
  } catch {
    have = undefined;
  }
  let fresh = have && have.source === want.source && have.size === want.size && have.mtimeMs === want.mtimeMs && have.entitlements === want.entitlements && have.signedSha256 !== undefined;
  // A copy whose content is no longer what was pinned is made again (never trusted).
  if (fresh && have?.signedSha256 !== (await sha256File(p.node).catch(() => ''))) fresh = false;
  if (!fresh) {
    await mkdir(p.dir, { recursive: true, mode: 0o755 });
    await chmod(p.dir, 0o755);
    await writeFile(p.entitlements, ents);
    const tmp = `${p.node}.tmp-${process.pid}`;
    await copyFile(source, tmp);
    await chmod(tmp, 0o755);
    await rename(tmp, p.node);
    const signed = await run('codesign', codesignSignArgs(p));
    if (signed.code !== 0) {
      throw new SignatureError(`ad-hoc signing ${p.node} failed: ${signed.stderr.trim() || `codesign exit ${signed.code}`}. ${remedyFor(p)}`);
    }
    want.signedSha256 = await sha256File(p.node);
    await writeFile(p.stamp, JSON.stringify(want, null, 2) + '\n', { mode: 0o644 });
    have = want;
  }
  // Root runs nothing a VM user could have replaced: the copy and every directory above it are root's.
  if (opts.requireRootOwned ?? (typeof process.getuid === 'function' && process.getuid() === 0)) assertRootOwned(p.node);
  await checkSignature(p, run);
  return { ...p, sha256: have!.signedSha256! };
}
