// An ed25519 key pair in OpenSSH's formats ("openssh-key-v1" private key, "ssh-ed25519 AAAA…"
// public line), as ssh-keygen and ssh2's generateKeyPairSync write them.
//
// Why not ssh2's generateKeyPairSync: it has Node export the new key as DER and parses that
// back, ≈ 170 µs a pair on this machine, against ≈ 58 µs for the key generated with JWK encoding
// (raw bytes) and the OpenSSH encoding below. The controller makes one pair per VM it creates,
// on its main thread (issue 20, BENCHMARKS.md control plane).
//
// The JWK comes from the key generation itself, never from `keyObject.export({ format: 'jwk' })`
// on the new key: on Node 20 that export holds the key's mutex while it allocates, a garbage
// collection then may free the finished key-generation job that shares the mutex, and the main
// thread deadlocks in that job's destructor (seen: a controller hung in KeyGenJob::~KeyGenJob
// under ExportJWKEdKey; reproduced in a loop within 40 s with a 2 MiB young generation, while
// this form ran 679,000 keys in 30 s). ssh-key-pair.test.ts runs the same loop.
// Format: OpenSSH's PROTOCOL.key; unencrypted ("none" cipher, block size 8).
import { generateKeyPairSync } from 'node:crypto';
import { randomBytesPooled } from '../secrets/random-bytes.ts';

const KEY_TYPE = Buffer.from('ssh-ed25519');
const MAGIC = Buffer.from('openssh-key-v1\0');
const NONE = Buffer.from('none');

/** An SSH "string": uint32 length, then the bytes. */
function sshString(bytes: Buffer): Buffer {
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32BE(bytes.length, 0);
  return Buffer.concat([len, bytes]);
}

function uint32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}

export function generateEd25519KeyPair(comment: string): { publicKey: string; privateKey: string } {
  // (@types/node has no overload for JWK encodings here, which Node supports since 15.9.)
  const generate = generateKeyPairSync as unknown as (type: 'ed25519', opts: object) => { privateKey: { d?: unknown; x?: unknown } };
  const { privateKey: jwk } = generate('ed25519', { publicKeyEncoding: { format: 'jwk' }, privateKeyEncoding: { format: 'jwk' } });
  if (typeof jwk.d !== 'string' || typeof jwk.x !== 'string') throw new Error('ed25519 key generation gave no raw key bytes');
  const seed = Buffer.from(jwk.d, 'base64url');
  const pub = Buffer.from(jwk.x, 'base64url');
  if (seed.length !== 32 || pub.length !== 32) throw new Error(`unexpected ed25519 key sizes (${seed.length}, ${pub.length})`);

  const publicBlob = Buffer.concat([sshString(KEY_TYPE), sshString(pub)]);
  const checkInt = randomBytesPooled(4);
  const unpadded = Buffer.concat([checkInt, checkInt, sshString(KEY_TYPE), sshString(pub), sshString(Buffer.concat([seed, pub])), sshString(Buffer.from(comment))]);
  const padding = Buffer.from(Array.from({ length: (8 - (unpadded.length % 8)) % 8 }, (_, i) => i + 1));
  const body = Buffer.concat([
    MAGIC,
    sshString(NONE), // cipher
    sshString(NONE), // kdf
    sshString(Buffer.alloc(0)), // kdf options
    uint32(1), // number of keys
    sshString(publicBlob),
    sshString(Buffer.concat([unpadded, padding])),
  ]);
  seed.fill(0);
  const b64 = body.toString('base64');
  const lines = b64.match(/.{1,64}/g)!.join('\n');
  return {
    publicKey: `ssh-ed25519 ${publicBlob.toString('base64')}${comment ? ` ${comment}` : ''}`,
    privateKey: `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines}\n-----END OPENSSH PRIVATE KEY-----\n`,
  };
}
