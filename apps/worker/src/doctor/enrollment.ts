// Enrollment checks: the data dir, the credential files (via the worker's own CredentialStore)
// and the client certificate's validity (via the renewal schedule the worker itself uses).
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { CredentialError, CredentialStore, type StoredCredentials } from '../config/credentials.ts';
import { renewalSchedule } from '../enrollment/certificate-renewal.ts';
import { fail, ok, warn, type Finding } from './check.ts';

/** Under this many days left the renewal (which starts at a third of the lifetime) is presumed failing. */
export const EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 86_400_000;

export function reenrollCommand(dataDir: string, controller?: string): string {
  return `fleet-worker enroll --force --controller ${controller ?? 'HOST:PORT'} --token <bootstrap token> --data-dir ${dataDir}`;
}

export async function checkDataDir(dataDir: string): Promise<Finding> {
  let info;
  try {
    info = await stat(dataDir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return fail(`${dataDir} does not exist: this host is not enrolled`, `fleet-worker enroll --controller HOST:PORT --token <bootstrap token> --data-dir ${dataDir}`);
    return fail(`cannot stat ${dataDir}: ${code ?? (error as Error).message}`, `check the permissions of ${dataDir} (run doctor as the user that runs the worker)`);
  }
  if (!info.isDirectory()) return fail(`${dataDir} is not a directory`, `move it away and enroll again: ${reenrollCommand(dataDir)}`);
  const mode = info.mode & 0o777;
  // Traverse-only (0711) is what a qemu worker with VM users needs (issue 14): nothing listable.
  if ((mode & 0o066) !== 0) return warn(`${dataDir} is accessible by other users (mode ${mode.toString(8)})`, `chmod ${mode & 0o001 ? 711 : 700} ${dataDir}`);
  return ok(`${dataDir} (mode ${mode.toString(8)}${mode === 0o711 ? ': traverse only, for VM users' : ''})`);
}

export type LoadedEnrollment = { ok: true; credentials: StoredCredentials; warnings: string[] } | { ok: false; message: string; controller?: string };

/** Reads the enrollment the way `fleet-worker run` does (CredentialStore.load + audit). */
export async function loadEnrollment(dataDir: string): Promise<LoadedEnrollment> {
  const store = new CredentialStore(dataDir);
  try {
    const credentials = await store.load();
    return { ok: true, credentials, warnings: await store.audit() };
  } catch (error) {
    if (error instanceof CredentialError) {
      const identity = await store.readIdentity().catch(() => undefined);
      return { ok: false, message: error.message, ...(identity ? { controller: identity.controllers.join(',') } : {}) };
    }
    return { ok: false, message: `cannot read the credentials in ${dataDir}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}` };
  }
}

/** Files present, key private to its owner, certificate made for that key. */
export function checkCredentials(dataDir: string, loaded: LoadedEnrollment): Finding {
  if (!loaded.ok) {
    const fresh = loaded.message.includes('not enrolled');
    const command = fresh ? `fleet-worker enroll --controller HOST:PORT --token <bootstrap token> --data-dir ${dataDir}` : reenrollCommand(dataDir, loaded.controller);
    return fail(loaded.message, command);
  }
  const { identity, keyPem, certPem } = loaded.credentials;
  let matches: boolean;
  try {
    matches = new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem));
  } catch (error) {
    return fail(`key.pem or cert.pem is unreadable: ${(error as Error).message}`, reenrollCommand(dataDir, identity.controllers.join(',')));
  }
  if (!matches) return fail('cert.pem was not issued for key.pem (the pair does not match)', reenrollCommand(dataDir, identity.controllers.join(',')));
  const summary = `worker "${identity.name}" (${identity.workerId}), ${identity.controllers.length > 1 ? `controllers ${identity.controllers.join(', ')}` : `controller ${identity.controller}`}`;
  if (loaded.warnings.length > 0) {
    // audit() words its own remedy ("run chmod 600 on it"); turn it into the command.
    const chmod = loaded.warnings.map((w) => /^(\S+) is accessible.*run (chmod \d+) on it/.exec(w)).find((m) => m !== null);
    return warn(`${summary}; ${loaded.warnings.join('; ')}`, chmod ? `${chmod[2]} ${chmod[1]}` : loaded.warnings.join('; '));
  }
  return ok(`${summary}; key.pem matches cert.pem`);
}

/** The client certificate's remaining validity. */
export function checkCertificateValidity(dataDir: string, loaded: LoadedEnrollment, now: Date = new Date()): Finding {
  if (!loaded.ok) return { status: 'skip', detail: 'no readable enrollment' };
  const { certPem, identity } = loaded.credentials;
  let schedule;
  try {
    schedule = renewalSchedule(certPem);
  } catch (error) {
    return fail(`cert.pem is not a certificate: ${(error as Error).message}`, reenrollCommand(dataDir, identity.controllers.join(',')));
  }
  const { notBefore, notAfter, renewAt } = schedule;
  if (notAfter.getTime() <= now.getTime()) {
    return fail(`the client certificate expired on ${notAfter.toISOString()}`, reenrollCommand(dataDir, identity.controllers.join(',')));
  }
  if (notBefore.getTime() > now.getTime()) {
    return fail(`the client certificate is not valid before ${notBefore.toISOString()}; this host's clock is behind`, 'fix the system clock (e.g. enable NTP: timedatectl set-ntp true / sntp -sS time.apple.com)');
  }
  const days = Math.floor((notAfter.getTime() - now.getTime()) / DAY_MS);
  const when = `expires in ${days} day(s) (${notAfter.toISOString().slice(0, 10)})`;
  if (days < EXPIRY_WARNING_DAYS && now.getTime() >= renewAt.getTime()) {
    return warn(`the client certificate ${when}; automatic renewal was due on ${renewAt.toISOString().slice(0, 10)}`, 'renewal is failing: check the worker log / connectivity to the controller');
  }
  return ok(`client certificate ${when}; automatic renewal from ${renewAt.toISOString().slice(0, 10)}`);
}
