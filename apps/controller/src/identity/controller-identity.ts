// The controller's TLS identity: its own CA (which signs worker client
// certificates) and the gRPC server certificate. Generated on first start and
// kept in the data dir, or taken from operator-provided PEM files.
import { mkdir, readFile, writeFile, chmod } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
// Without @peculiar/x509: the rest of @fleet/pki is imported only to make a certificate (issue 20).
import { certificateFingerprint } from '@fleet/pki/basics';
import type { KeyAndCert } from '@fleet/pki';

export interface ControllerIdentity {
  /** The controller's own CA: signs worker client certificates. */
  ca: KeyAndCert;
  server: KeyAndCert;
  /** The CA that signed the server certificate (the controller's own CA unless the operator brought one). */
  serverCaPem: string;
  /** SHA-256 of serverCaPem: what bootstrap tokens carry and workers pin. */
  caFingerprint: string;
}

export const SERVER_NAME = 'fleet-controller';

async function writeSecret(file: string, content: string): Promise<void> {
  await writeFile(file, content, { mode: 0o600 });
  await chmod(file, 0o600);
}

export async function loadOrCreateIdentity(opts: {
  dataDir: string;
  extraNames: string[];
  certFile?: string;
  keyFile?: string;
  caFile?: string;
}): Promise<ControllerIdentity> {
  const dir = path.join(opts.dataDir, 'pki');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caCert = path.join(dir, 'ca.pem');
  const caKey = path.join(dir, 'ca-key.pem');
  let ca: KeyAndCert;
  if (existsSync(caCert) && existsSync(caKey)) {
    ca = { certPem: await readFile(caCert, 'utf8'), keyPem: await readFile(caKey, 'utf8') };
  } else {
    const { createCertificateAuthority } = await import('@fleet/pki');
    ca = await createCertificateAuthority({ commonName: `Fleet controller CA (${os.hostname()})` });
    await writeSecret(caKey, ca.keyPem);
    await writeFile(caCert, ca.certPem);
  }

  let server: KeyAndCert;
  let serverCaPem = ca.certPem;
  if (opts.certFile && opts.keyFile) {
    // Operator-provided server certificate; workers pin the CA that signed it
    // (--tls-ca). Worker client certificates are still signed by our own CA.
    server = { certPem: await readFile(opts.certFile, 'utf8'), keyPem: await readFile(opts.keyFile, 'utf8') };
    if (!opts.caFile) throw new Error('--tls-cert needs --tls-ca: the CA workers pin must be known');
    serverCaPem = await readFile(opts.caFile, 'utf8');
  } else {
    const serverCert = path.join(dir, 'server.pem');
    const serverKey = path.join(dir, 'server-key.pem');
    const namesFile = path.join(dir, 'server-names.json');
    const names = JSON.stringify([...opts.extraNames].sort());
    const namesMatch = existsSync(namesFile) && (await readFile(namesFile, 'utf8')) === names;
    // Re-issued when its names changed or it expires within 30 days (workers trust the CA, not
    // this certificate, so a new one is transparent to them).
    if (existsSync(serverCert) && existsSync(serverKey) && namesMatch && !expiresSoon(await readFile(serverCert, 'utf8'))) {
      server = { certPem: await readFile(serverCert, 'utf8'), keyPem: await readFile(serverKey, 'utf8') };
    } else {
      const ipAddresses = ['127.0.0.1', '::1', ...opts.extraNames.filter(isIpLiteral)];
      // The host name is added only when it is a valid DNS name (some machines have odd ones).
      const host = os.hostname().toLowerCase();
      const hostNames = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/.test(host) ? [host] : [];
      const dnsNames = [SERVER_NAME, 'localhost', ...hostNames, ...opts.extraNames.filter((n) => !isIpLiteral(n))];
      const { issueServerCertificate } = await import('@fleet/pki');
      server = await issueServerCertificate(ca, { commonName: SERVER_NAME, dnsNames, ipAddresses });
      await writeSecret(serverKey, server.keyPem);
      await writeFile(serverCert, server.certPem);
      await writeFile(namesFile, names);
    }
  }
  return { ca, server, serverCaPem, caFingerprint: certificateFingerprint(serverCaPem) };
}

function isIpLiteral(name: string): boolean {
  return /^[0-9.]+$/.test(name) || name.includes(':');
}

const RENEW_SERVER_CERT_BEFORE_MS = 30 * 86_400_000;

function expiresSoon(certPem: string): boolean {
  try {
    return new Date(new X509Certificate(certPem).validTo).getTime() - Date.now() < RENEW_SERVER_CERT_BEFORE_MS;
  } catch {
    return true; // unreadable: issue a new one
  }
}
