import { chmod, mkdir, mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createKeyAndCsr } from '@fleet/pki';
import { describe, expect, it } from 'vitest';
import { renewalSchedule } from '../enrollment/certificate-renewal.ts';
import { checkCertificateValidity, checkCredentials, checkDataDir, loadEnrollment } from './enrollment.ts';
import { enrolledDataDir } from './test-fixtures.test-helper.ts';

const DAY = 86_400_000;

describe('enrollment checks', () => {
  it('a fresh enrollment passes: private data dir, files present, key matches cert, certificate valid for its lifetime', async () => {
    const { dataDir } = await enrolledDataDir({ validDays: 365 });
    try {
      expect((await checkDataDir(dataDir)).status).toBe('ok');
      const loaded = await loadEnrollment(dataDir);
      const creds = checkCredentials(dataDir, loaded);
      expect(creds).toMatchObject({ status: 'ok' });
      expect(creds.detail).toContain('worker "mac-01"');
      const validity = checkCertificateValidity(dataDir, loaded);
      expect(validity.status).toBe('ok');
      expect(validity.detail).toMatch(/expires in 36[45] day/);
    } finally {
      await rm(path.dirname(dataDir), { recursive: true, force: true });
    }
  });

  it('a missing data dir and an empty one fail with the enroll command', async () => {
    const parent = await mkdtemp(path.join(tmpdir(), 'fleet-doctor-'));
    try {
      const missing = path.join(parent, 'nope');
      const r = await checkDataDir(missing);
      expect(r.status).toBe('fail');
      expect(r.fix).toBe(`fleet-worker enroll --controller HOST:PORT --token <bootstrap token> --data-dir ${missing}`);
      await mkdir(missing, { mode: 0o755 });
      await chmod(missing, 0o755);
      const open = await checkDataDir(missing);
      // Listable by others: the fix keeps traversal (a qemu worker's VM users need it), nothing more.
      expect(open).toMatchObject({ status: 'warn', fix: `chmod 711 ${missing}` });
      await chmod(missing, 0o711);
      expect(await checkDataDir(missing)).toMatchObject({ status: 'ok', detail: expect.stringContaining('traverse only') });
      await chmod(missing, 0o770);
      expect(await checkDataDir(missing)).toMatchObject({ status: 'warn', fix: `chmod 700 ${missing}` });
      await chmod(missing, 0o755);
      const creds = checkCredentials(missing, await loadEnrollment(missing));
      expect(creds.status).toBe('fail');
      expect(creds.detail).toContain('not enrolled');
      expect(creds.fix).toContain('fleet-worker enroll --controller HOST:PORT');
      expect(checkCertificateValidity(missing, await loadEnrollment(missing)).status).toBe('skip');
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it('a missing ca.pem fails naming the file and the re-enroll command with the stored controller', async () => {
    const { dataDir } = await enrolledDataDir({ controller: 'ctl.example.com:7443' });
    try {
      await unlink(path.join(dataDir, 'ca.pem'));
      const r = checkCredentials(dataDir, await loadEnrollment(dataDir));
      expect(r.status).toBe('fail');
      expect(r.detail).toContain('ca.pem is missing');
      expect(r.fix).toBe(`fleet-worker enroll --force --controller ctl.example.com:7443 --token <bootstrap token> --data-dir ${dataDir}`);
    } finally {
      await rm(path.dirname(dataDir), { recursive: true, force: true });
    }
  });

  it('a key readable by others is a warning with the chmod to run', async () => {
    const { dataDir } = await enrolledDataDir();
    try {
      const key = path.join(dataDir, 'key.pem');
      await chmod(key, 0o644);
      const r = checkCredentials(dataDir, await loadEnrollment(dataDir));
      expect(r.status).toBe('warn');
      expect(r.detail).toContain('accessible by other users (mode 644)');
      expect(r.fix).toBe(`chmod 600 ${key}`);
    } finally {
      await rm(path.dirname(dataDir), { recursive: true, force: true });
    }
  });

  it('a certificate that is not for the stored key fails', async () => {
    const { dataDir } = await enrolledDataDir();
    try {
      const other = await createKeyAndCsr({ commonName: 'other' });
      await writeFile(path.join(dataDir, 'key.pem'), other.keyPem, { mode: 0o600 });
      const r = checkCredentials(dataDir, await loadEnrollment(dataDir));
      expect(r.status).toBe('fail');
      expect(r.detail).toContain('does not match');
      expect(r.fix).toContain('fleet-worker enroll --force --controller 127.0.0.1:1');
    } finally {
      await rm(path.dirname(dataDir), { recursive: true, force: true });
    }
  });

  it('soon-expiring (renewal overdue) is a warning; expired is a failure with the re-enroll command', async () => {
    const { dataDir, credentials } = await enrolledDataDir({ validDays: 10 });
    try {
      const loaded = await loadEnrollment(dataDir);
      const { notAfter } = renewalSchedule(credentials.certPem);
      // 10-day certificate, renewal due at a third of the lifetime left: fresh it is fine.
      expect(checkCertificateValidity(dataDir, loaded).status).toBe('ok');
      const soon = checkCertificateValidity(dataDir, loaded, new Date(notAfter.getTime() - 2 * DAY - 60_000));
      expect(soon.status).toBe('warn');
      expect(soon.detail).toContain('expires in 2 day(s)');
      expect(soon.fix).toBe('renewal is failing: check the worker log / connectivity to the controller');
      const expired = checkCertificateValidity(dataDir, loaded, new Date(notAfter.getTime() + DAY));
      expect(expired.status).toBe('fail');
      expect(expired.detail).toContain(`expired on ${notAfter.toISOString()}`);
      expect(expired.fix).toContain('fleet-worker enroll --force');
    } finally {
      await rm(path.dirname(dataDir), { recursive: true, force: true });
    }
  });
});
