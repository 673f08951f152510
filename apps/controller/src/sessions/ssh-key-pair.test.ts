// The key pairs the controller gives VMs must be what OpenSSH tools and ssh2 (the worker's
// session client) read: the same layout as ssh2's own generator, a private key whose public
// half is the public line, and signatures that verify.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import ssh2 from 'ssh2';
import { generateEd25519KeyPair } from './ssh-key-pair.ts';

const { parseKey, generateKeyPairSync } = ssh2.utils;

/**
 * ssh2's own private key text, from a pair ssh2 can read: about one pair in 256 of its ed25519
 * generator has a public key whose leading zero byte it strips (mscdex/ssh2 issues 1390, 1513), so
 * its layout is not the reference then.
 */
function ssh2PrivateKey(): string {
  for (let i = 0; i < 64; i++) {
    const pair = generateKeyPairSync('ed25519', {});
    if (!(parseKey(pair.private) instanceof Error)) return pair.private;
  }
  throw new Error('ssh2 made no readable ed25519 key pair in 64 tries');
}

function parsed(text: string): ssh2.ParsedKey {
  const k = parseKey(text);
  if (k instanceof Error) throw k;
  return Array.isArray(k) ? k[0]! : k;
}

describe('generateEd25519KeyPair', () => {
  it('writes a pair ssh2 reads, whose halves match and whose signatures verify', () => {
    const pair = generateEd25519KeyPair('fleet-vm-web-1');
    const priv = parsed(pair.privateKey);
    const pub = parsed(pair.publicKey);
    expect(priv.type).toBe('ssh-ed25519');
    expect(priv.comment).toBe('fleet-vm-web-1');
    expect(pub.comment).toBe('fleet-vm-web-1');
    expect(priv.isPrivateKey()).toBe(true);
    expect(priv.getPublicSSH().equals(pub.getPublicSSH())).toBe(true);
    expect(pair.publicKey).toBe(`ssh-ed25519 ${pub.getPublicSSH().toString('base64')} fleet-vm-web-1`);
    const data = Buffer.from('session challenge');
    const sig = priv.sign(data);
    expect(sig).toBeInstanceOf(Buffer);
    expect(pub.verify(data, sig as Buffer)).toBe(true);
    expect(pub.verify(Buffer.from('something else'), sig as Buffer)).toBe(false);
  });

  it('has the layout of ssh-keygen’s unencrypted keys (PROTOCOL.key), for any comment length', () => {
    for (const comment of ['', 'x', 'fleet-vm-a-rather-long-name-with-ünïcode', 'c'.repeat(200)]) {
      const ours = generateEd25519KeyPair(comment);
      const lines = ours.privateKey.trimEnd().split('\n');
      expect(lines[0]).toBe('-----BEGIN OPENSSH PRIVATE KEY-----');
      expect(lines.at(-1)).toBe('-----END OPENSSH PRIVATE KEY-----');
      expect(ours.privateKey.endsWith('\n')).toBe(true);
      expect(lines.slice(1, -2).every((l) => l.length === 64)).toBe(true);
      const body = Buffer.from(lines.slice(1, -1).join(''), 'base64');
      // The header up to the public key bytes is what ssh2 (and ssh-keygen) write.
      const theirs = ssh2PrivateKey().trimEnd().split('\n');
      expect(body.subarray(0, 62)).toEqual(Buffer.from(theirs.slice(1, -1).join(''), 'base64').subarray(0, 62));
      // The private section: two equal check integers, type, public, seed + public, comment, padding 1, 2, 3 … to 8 bytes.
      const commentBytes = Buffer.byteLength(comment);
      const unpadded = 8 + 15 + 36 + 68 + 4 + commentBytes;
      const padded = Math.ceil(unpadded / 8) * 8;
      expect(body.length).toBe(98 + padded);
      const section = body.subarray(98);
      expect(section.readUInt32BE(0)).toBe(section.readUInt32BE(4));
      expect(section.subarray(unpadded)).toEqual(Buffer.from(Array.from({ length: padded - unpadded }, (_, i) => i + 1)));
      expect(parsed(ours.privateKey).comment).toBe(comment);
      expect(ours.publicKey.split(' ')).toHaveLength(comment ? 3 : 2);
    }
  });

  const sshKeygen = (() => {
    try {
      execFileSync('ssh-keygen', ['-?'], { stdio: 'ignore' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    }
    return 'ssh-keygen';
  })();
  if (!sshKeygen) console.warn('ssh-key-pair.test.ts: ssh-keygen is not installed (apt-get install openssh-client): skipping its case');

  it.skipIf(!sshKeygen)('is read by OpenSSH: ssh-keygen -y derives the same public line', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'fleet-keypair-'));
    try {
      const pair = generateEd25519KeyPair('fleet-vm-web-1');
      writeFileSync(path.join(dir, 'id'), pair.privateKey, { mode: 0o600 });
      expect(execFileSync('ssh-keygen', ['-y', '-f', path.join(dir, 'id')], { encoding: 'utf8' }).trim()).toBe(pair.publicKey);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('never deadlocks the process under frequent garbage collection (a Node 20 hazard of exporting a fresh key as JWK)', () => {
    // The loop that hung the old form within seconds: keys made back to back in a small young generation.
    const script = `
      import { generateEd25519KeyPair } from ${JSON.stringify(new URL('./ssh-key-pair.ts', import.meta.url).href)};
      const end = Date.now() + 4000; let n = 0; const junk = [];
      while (Date.now() < end) { generateEd25519KeyPair('k'); junk.push({ s: 'x'.repeat(64) }); if (junk.length > 1000) junk.length = 0; n++; }
      console.log(n);`;
    const out = execFileSync(process.execPath, ['--max-semi-space-size=1', '--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(Number(out.trim())).toBeGreaterThan(1000);
  }, 40_000);

  it('makes a new key every time', () => {
    const keys = new Set(Array.from({ length: 20 }, () => generateEd25519KeyPair('k').publicKey));
    expect(keys.size).toBe(20);
  });
});
