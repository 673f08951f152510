import { PkiError } from './errors.ts';

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

export interface PemBlock {
  label: string;
  der: Uint8Array;
}

/** Every PEM block in `text`, in order. Text outside the blocks is ignored. */
export function pemBlocks(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    const body = (m[2] ?? '').replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length === 0 || body.length % 4 !== 0) {
      throw new PkiError(`invalid PEM: the ${m[1]} block is not valid base64`);
    }
    out.push({ label: m[1] ?? '', der: new Uint8Array(Buffer.from(body, 'base64')) });
  }
  return out;
}

/** DER of the first block labelled `label`; throws PkiError if there is none. */
export function firstPemBlock(text: string, label: string): Uint8Array {
  if (typeof text !== 'string') throw new PkiError(`expected a PEM string containing a ${label}`);
  const block = pemBlocks(text).find((b) => b.label === label);
  if (!block) throw new PkiError(`no "${label}" PEM block found`);
  return block.der;
}

export function derToPem(label: string, der: Uint8Array | ArrayBuffer): string {
  const b64 = Buffer.from(der instanceof ArrayBuffer ? new Uint8Array(der) : der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Copies into a fresh ArrayBuffer (WebCrypto and @peculiar/x509 want exact buffers). */
export function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return copy.buffer;
}
