import { createPrivateKey, createPublicKey, webcrypto, type KeyObject } from 'node:crypto';
import { PkiError } from './errors.ts';
import { derToPem, toArrayBuffer } from './pem.ts';

/**
 * Node's WebCrypto, passed explicitly to every @peculiar/x509 call so this
 * package never depends on (or mutates) x509's global crypto provider.
 * (x509's typings name DOM `Crypto`/`CryptoKey`, which this repo's lib setting
 * does not declare; Node's `webcrypto` types are used instead.)
 */
export const crypto: webcrypto.Crypto = webcrypto;

type SubtleKey = webcrypto.CryptoKey;
export type KeyPair = { privateKey: SubtleKey; publicKey: SubtleKey };

/** Algorithm used for every key this package generates. */
export const EC_KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;

export async function generateEcKeyPair(): Promise<KeyPair> {
  return (await webcrypto.subtle.generateKey(EC_KEY_ALGORITHM, true, ['sign', 'verify'])) as KeyPair;
}

export async function exportPkcs8Pem(key: SubtleKey): Promise<string> {
  return derToPem('PRIVATE KEY', new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', key)));
}

const CURVES: Record<string, { namedCurve: 'P-256' | 'P-384' | 'P-521'; hash: 'SHA-256' | 'SHA-384' | 'SHA-512' }> = {
  prime256v1: { namedCurve: 'P-256', hash: 'SHA-256' },
  secp384r1: { namedCurve: 'P-384', hash: 'SHA-384' },
  secp521r1: { namedCurve: 'P-521', hash: 'SHA-512' },
};

export interface SigningKey {
  key: SubtleKey;
  /** WebCrypto sign parameters, e.g. { name: 'ECDSA', hash: 'SHA-256' }. */
  signingAlgorithm: { name: 'ECDSA'; hash: string };
}

/**
 * Imports a CA private key (PKCS#8 "PRIVATE KEY" or SEC1 "EC PRIVATE KEY" PEM)
 * for signing. Only ECDSA keys are supported (that is all this package creates).
 */
export async function importSigningKey(keyPem: string): Promise<SigningKey> {
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey({ key: keyPem, format: 'pem' });
  } catch (err) {
    throw new PkiError(`cannot read CA private key: ${(err as Error).message}`);
  }
  const curve = keyObject.asymmetricKeyType === 'ec' ? CURVES[keyObject.asymmetricKeyDetails?.namedCurve ?? ''] : undefined;
  if (!curve) {
    throw new PkiError(`unsupported CA key type ${keyObject.asymmetricKeyType ?? 'unknown'} (expected ECDSA P-256/P-384/P-521)`);
  }
  const der = keyObject.export({ format: 'der', type: 'pkcs8' });
  const key = await webcrypto.subtle.importKey('pkcs8', toArrayBuffer(der), { name: 'ECDSA', namedCurve: curve.namedCurve }, false, ['sign']);
  return { key, signingAlgorithm: { name: 'ECDSA', hash: curve.hash } };
}

/** Key type/size check for public keys we are asked to certify (SPKI DER). */
export function describePublicKey(spkiDer: Uint8Array): { type: string; ok: boolean; reason?: string } {
  let keyObject: KeyObject;
  try {
    keyObject = createPublicKey({ key: Buffer.from(spkiDer), format: 'der', type: 'spki' });
  } catch {
    return { type: 'unknown', ok: false, reason: 'unreadable public key' };
  }
  const type = keyObject.asymmetricKeyType ?? 'unknown';
  const details = keyObject.asymmetricKeyDetails ?? {};
  if (type === 'ec') {
    const curve = details.namedCurve ?? '';
    return CURVES[curve] ? { type: `ec/${curve}`, ok: true } : { type: `ec/${curve}`, ok: false, reason: `unsupported EC curve ${curve}` };
  }
  if (type === 'rsa') {
    const bits = details.modulusLength ?? 0;
    return bits >= 2048 ? { type: `rsa/${bits}`, ok: true } : { type: `rsa/${bits}`, ok: false, reason: `RSA key too small (${bits} bits, need >= 2048)` };
  }
  return { type, ok: false, reason: `unsupported key type ${type} (expected ECDSA or RSA)` };
}
