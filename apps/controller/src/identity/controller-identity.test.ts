// The controller's TLS identity on disk: created once, reused, and the server certificate
// re-issued from the same CA when it is about to expire.
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { issueServerCertificate } from '@fleet/pki';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadOrCreateIdentity } from './controller-identity.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'fleet-identity-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const daysLeft = (pem: string) => (new Date(new X509Certificate(pem).validTo).getTime() - Date.now()) / 86_400_000;

describe('controller identity', () => {
  it('is created once and reused on the next start', async () => {
    const first = await loadOrCreateIdentity({ dataDir: dir, extraNames: [] });
    const second = await loadOrCreateIdentity({ dataDir: dir, extraNames: [] });
    expect(second.server.certPem).toBe(first.server.certPem);
    expect(second.caFingerprint).toBe(first.caFingerprint);
  });

  it('re-issues a server certificate that expires within 30 days, from the same CA', async () => {
    const first = await loadOrCreateIdentity({ dataDir: dir, extraNames: [] });
    const shortLived = await issueServerCertificate(first.ca, { commonName: 'fleet-controller', dnsNames: ['fleet-controller'], ipAddresses: [], validDays: 10 });
    await writeFile(path.join(dir, 'pki', 'server.pem'), shortLived.certPem);
    await writeFile(path.join(dir, 'pki', 'server-key.pem'), shortLived.keyPem);
    const next = await loadOrCreateIdentity({ dataDir: dir, extraNames: [] });
    expect(next.server.certPem).not.toBe(shortLived.certPem);
    expect(daysLeft(next.server.certPem)).toBeGreaterThan(800);
    expect(next.caFingerprint).toBe(first.caFingerprint); // workers keep trusting it
    expect(new X509Certificate(next.server.certPem).checkIssued(new X509Certificate(first.ca.certPem))).toBe(true);
    expect(await readFile(path.join(dir, 'pki', 'server.pem'), 'utf8')).toBe(next.server.certPem);
  });
});
