import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SignatureError, checkSignature, codesignSignArgs, entitlementsPlist, grantsVirtualization, prepareSignedNode, signedNodePaths } from './codesign.ts';
import type { CommandResult, RunCommand } from './run-command.ts';

// What `codesign --display --entitlements - --xml` prints for a correctly signed copy.
const GOOD_XML =
  '<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd"><plist version="1.0"><dict>' +
  '<key>com.apple.security.cs.allow-jit</key><true/><key>com.apple.security.virtualization</key><true/></dict></plist>';
// The official node: Node's entitlements, not virtualization.
const STOCK_XML = '<plist version="1.0"><dict><key>com.apple.security.cs.allow-jit</key><true/></dict></plist>';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'fleet-codesign-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function fakeCodesign(entitlementsOut = GOOD_XML, signCode = 0): { run: RunCommand; calls: string[][] } {
  const calls: string[][] = [];
  const run: RunCommand = async (cmd, args): Promise<CommandResult> => {
    calls.push([cmd, ...args]);
    if (args[0] === '--force') return { code: signCode, stdout: '', stderr: signCode ? 'codesign: failure' : '' };
    if (args[0] === '--display') return { code: 0, stdout: entitlementsOut, stderr: '' };
    return { code: 0, stdout: '', stderr: '' };
  };
  return { run, calls };
}

describe('entitlements', () => {
  it("carries Node's own entitlements plus com.apple.security.virtualization", () => {
    const xml = entitlementsPlist();
    for (const k of ['com.apple.security.cs.allow-jit', 'com.apple.security.cs.allow-unsigned-executable-memory', 'com.apple.security.cs.disable-library-validation', 'com.apple.security.virtualization']) {
      expect(xml).toContain(`<key>${k}</key>\n\t<true/>`);
    }
    expect(xml.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist')).toBe(true);
    expect(grantsVirtualization(GOOD_XML)).toBe(true);
    expect(grantsVirtualization(STOCK_XML)).toBe(false);
    expect(grantsVirtualization('<key>com.apple.security.virtualization</key><false/>')).toBe(false);
  });
});

describe('prepareSignedNode', () => {
  it('copies node privately, signs it ad hoc with the entitlements file, verifies, and re-uses it while the source is unchanged', async () => {
    const src = path.join(dir, 'node-src');
    await writeFile(src, 'NODE-BINARY');
    const { run, calls } = fakeCodesign();
    const p = await prepareSignedNode(path.join(dir, 'data'), { sourceNode: src, run, requireRootOwned: false });
    const { createHash } = await import('node:crypto');
    expect(p).toEqual({ ...signedNodePaths(path.join(dir, 'data')), sha256: createHash('sha256').update('NODE-BINARY').digest('hex') });
    expect(await readFile(p.node, 'utf8')).toBe('NODE-BINARY');
    expect((await stat(p.node)).mode & 0o777).toBe(0o755);
    expect(await readFile(p.entitlements, 'utf8')).toBe(entitlementsPlist());
    expect(calls).toEqual([
      ['codesign', '--force', '--sign', '-', '--entitlements', p.entitlements, p.node],
      ['codesign', '--verify', '--strict', p.node],
      ['codesign', '--display', '--entitlements', '-', '--xml', p.node],
    ]);
    calls.length = 0;
    await prepareSignedNode(path.join(dir, 'data'), { sourceNode: src, run, requireRootOwned: false });
    expect(calls.map((c) => c[1])).toEqual(['--verify', '--display']); // no re-sign
    await writeFile(src, 'NODE-BINARY-v2'); // node upgraded: size changes
    calls.length = 0;
    await prepareSignedNode(path.join(dir, 'data'), { sourceNode: src, run, requireRootOwned: false });
    expect(calls[0]).toEqual(['codesign', ...codesignSignArgs(p)]);
    // Someone swapped the signed copy's content: it no longer matches its pin, so it is made again.
    await writeFile(p.node, 'EVIL');
    calls.length = 0;
    const again = await prepareSignedNode(path.join(dir, 'data'), { sourceNode: src, run, requireRootOwned: false });
    expect(calls[0]).toEqual(['codesign', ...codesignSignArgs(p)]);
    expect(await readFile(p.node, 'utf8')).toBe('NODE-BINARY-v2');
    expect(again.sha256).toBe(createHash('sha256').update('NODE-BINARY-v2').digest('hex'));
  });

  it('fails with the exact remedy when signing fails or the entitlement is missing', async () => {
    const src = path.join(dir, 'node-src');
    await writeFile(src, 'NODE');
    const failing = fakeCodesign(GOOD_XML, 1);
    await expect(prepareSignedNode(path.join(dir, 'd1'), { sourceNode: src, run: failing.run, requireRootOwned: false })).rejects.toThrow(/ad-hoc signing .* failed: codesign: failure/);
    const p = signedNodePaths(path.join(dir, 'd2'));
    const stock = fakeCodesign(STOCK_XML);
    const err = (await checkSignature(p, stock.run).then(() => undefined, (e: unknown) => e as Error))!;
    expect(err).toBeInstanceOf(SignatureError);
    expect(err.message).toBe(
      `${p.node} is not signed with the com.apple.security.virtualization entitlement, so Virtualization.framework will refuse to run VMs. ` +
        `Fix: restart the worker (it re-creates ${p.node} at start), or by hand: codesign --force --sign - --entitlements ${p.entitlements} ${p.node}   ` +
        `(entitlements file: ${p.entitlements}; needs the Xcode Command Line Tools: xcode-select --install)`,
    );
    const unsigned: RunCommand = async (_c, args) => (args[0] === '--verify' ? { code: 1, stdout: '', stderr: 'code object is not signed at all' } : { code: 0, stdout: GOOD_XML, stderr: '' });
    await expect(checkSignature(p, unsigned)).rejects.toThrow(/has no valid code signature \(codesign --verify: code object is not signed at all\)\. Fix:/);
  });
});
