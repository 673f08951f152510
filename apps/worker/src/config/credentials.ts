// The worker's credential store: its enrollment record and mTLS material in the data dir.
//
//   worker.json  {workerId, name, controller: "host:port", controllers: ["host:port", ...],
//                 machineId, enrolledAt}                                          0644
//   key.pem      private key (never leaves the machine)                            0600
//   cert.pem     client certificate signed by the controller CA                    0644
//   ca.pem       the controller CA: the only CA this worker trusts                 0644
//
// Writes are atomic per file (temp file + rename) and worker.json is written last, so a
// half-finished enrollment never looks like a complete one. A renewed key and certificate
// are written as key.next.pem + cert.next.pem first and then renamed, key before cert; a
// crash between the two renames is completed by the next load(), so key.pem and cert.pem
// never stay a mismatched pair.
//
// `controllers` (issue 13) lists every controller the worker knows, `controller` first; the list is
// replaced by what each controller announces in Welcome. A worker.json written before the list
// existed has only `controller` and loads as a list of one; older workers ignore the list.
import { chmod, mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { normalizeHostPort, sanitizeControllerAddresses, uniqueAddresses } from './address.ts';
import { dataDirLayout } from './paths.ts';

export interface WorkerIdentity {
  workerId: string;
  name: string;
  /** Controller gRPC address, host:port: the first of `controllers` (what older workers read). */
  controller: string;
  /** Every controller address known, host:port, `controller` first; tried in order by the link. */
  controllers: string[];
  machineId: string;
  /** ISO 8601. */
  enrolledAt: string;
}

export interface StoredCredentials {
  identity: WorkerIdentity;
  keyPem: string;
  certPem: string;
  caPem: string;
}

export class CredentialError extends Error {
  override readonly name = 'CredentialError';
}

/** The data dir holds no (complete) enrollment. */
export class NotEnrolledError extends CredentialError {}

export class CredentialStore {
  readonly paths: ReturnType<typeof dataDirLayout>;

  constructor(readonly dataDir: string) {
    this.paths = dataDirLayout(dataDir);
  }

  /** The enrollment record, or undefined when this data dir was never enrolled. */
  async readIdentity(): Promise<WorkerIdentity | undefined> {
    let text: string;
    try {
      text = await readFile(this.paths.workerJson, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      throw new CredentialError(`${this.paths.workerJson} is not valid JSON; re-enroll with \`fleet-worker enroll --force ...\``);
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      throw new CredentialError(`${this.paths.workerJson} does not hold a JSON object; re-enroll with \`fleet-worker enroll --force ...\``);
    }
    const parsed = raw as Record<string, unknown>;
    for (const field of ['workerId', 'name', 'controller', 'machineId'] as const) {
      if (typeof parsed[field] !== 'string' || parsed[field] === '') {
        throw new CredentialError(`${this.paths.workerJson} lacks "${field}"; re-enroll with \`fleet-worker enroll --force ...\``);
      }
    }
    const controller = parsed.controller as string;
    return {
      workerId: parsed.workerId as string,
      name: parsed.name as string,
      controller,
      controllers: storedControllerList(controller, parsed.controllers),
      machineId: parsed.machineId as string,
      enrolledAt: typeof parsed.enrolledAt === 'string' ? parsed.enrolledAt : '',
    };
  }

  /** Rewrites worker.json alone (atomically): a new controller list, the rest unchanged. */
  async saveIdentity(identity: WorkerIdentity): Promise<void> {
    await atomicWrite(this.paths.workerJson, serializeIdentity(identity), 0o644);
  }

  /** Everything needed to connect. Throws NotEnrolledError with the command to run. */
  async load(): Promise<StoredCredentials> {
    const identity = await this.readIdentity();
    if (!identity) {
      throw new NotEnrolledError(
        `this worker is not enrolled (no ${this.paths.workerJson}): run \`fleet-worker enroll --controller HOST:PORT --token <bootstrap token>${this.#dataDirHint()}\` first`,
      );
    }
    await this.#completeRenewal();
    // Read in a fixed order so the first missing file is always the one reported.
    const keyPem = await this.#readPem(this.paths.key);
    const certPem = await this.#readPem(this.paths.cert);
    const caPem = await this.#readPem(this.paths.ca);
    return { identity, keyPem, certPem, caPem };
  }

  /** Problems worth a warning (e.g. a private key readable by others). */
  async audit(): Promise<string[]> {
    const warnings: string[] = [];
    try {
      // The data dir may be traversable (0711: a qemu worker's VM users reach their run dirs by
      // name) but never listable or writable by others.
      const { mode } = await stat(this.dataDir);
      if ((mode & 0o066) !== 0) {
        warnings.push(`${this.dataDir} is accessible by other users (mode ${(mode & 0o777).toString(8)}); run chmod 711 on it`);
      }
    } catch {
      // load() reports a missing data dir.
    }
    try {
      const { mode } = await stat(this.paths.key);
      if ((mode & 0o077) !== 0) {
        warnings.push(`${this.paths.key} is accessible by other users (mode ${(mode & 0o777).toString(8)}); run chmod 600 on it`);
      }
    } catch {
      // load() reports missing files.
    }
    return warnings;
  }

  async save(credentials: StoredCredentials): Promise<void> {
    await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
    await atomicWrite(this.paths.key, credentials.keyPem, 0o600);
    await atomicWrite(this.paths.cert, credentials.certPem, 0o644);
    await atomicWrite(this.paths.ca, credentials.caPem, 0o644);
    await atomicWrite(this.paths.workerJson, serializeIdentity(credentials.identity), 0o644);
  }

  /** Replaces key.pem and cert.pem with a renewed pair (crash-safe, see the header). */
  async saveRenewed(keyPem: string, certPem: string): Promise<void> {
    const next = renewalPaths(this.paths);
    await atomicWrite(next.key, keyPem, 0o600);
    await atomicWrite(next.cert, certPem, 0o644);
    await this.#completeRenewal();
  }

  /** Finishes a renewal that was written but not (fully) moved into place. */
  async #completeRenewal(): Promise<void> {
    const next = renewalPaths(this.paths);
    const hasKey = await exists(next.key);
    const hasCert = await exists(next.cert);
    if (hasKey && !hasCert) {
      // The crash came before the certificate was written: the controller's answer is lost.
      await unlink(next.key);
      return;
    }
    if (hasKey) await rename(next.key, this.paths.key);
    if (hasCert) await rename(next.cert, this.paths.cert);
  }

  async #readPem(path: string): Promise<string> {
    try {
      return await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new NotEnrolledError(`${path} is missing: the enrollment is incomplete; re-enroll with \`fleet-worker enroll --force ...${this.#dataDirHint()}\``);
      }
      throw error;
    }
  }

  #dataDirHint(): string {
    return ` --data-dir ${this.dataDir}`;
  }
}

/** worker.json's text: `controller` is always the list's first entry. */
function serializeIdentity(identity: WorkerIdentity): string {
  const controllers = uniqueAddresses([identity.controller, ...identity.controllers]);
  const { workerId, name, controller, machineId, enrolledAt } = identity;
  return `${JSON.stringify({ workerId, name, controller, controllers, machineId, enrolledAt }, null, 2)}\n`;
}

/**
 * The stored list, `controller` first. A file without a list (written before issue 13) gives
 * `[controller]`; entries that are not HOST:PORT are dropped (the file may have been edited).
 * `controller` itself is kept as written: `run` reports a malformed one with the fix.
 */
function storedControllerList(controller: string, list: unknown): string[] {
  let primary = controller;
  try {
    primary = normalizeHostPort(controller);
  } catch {
    // reported when the worker dials it
  }
  const { valid } = sanitizeControllerAddresses(Array.isArray(list) ? list : []);
  return uniqueAddresses([primary, ...valid]);
}

export async function atomicWrite(path: string, content: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  try {
    await writeFile(tmp, content, { mode, flag: 'wx' });
    await chmod(tmp, mode); // umask may have narrowed it; never widen beyond `mode`
    await rename(tmp, path);
  } catch (error) {
    await unlink(tmp).catch(() => {});
    throw error;
  }
}

function renewalPaths(paths: { key: string; cert: string }): { key: string; cert: string } {
  return { key: paths.key.replace(/\.pem$/, '.next.pem'), cert: paths.cert.replace(/\.pem$/, '.next.pem') };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}
