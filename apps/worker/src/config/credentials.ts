// The worker's credential store: its enrollment record and mTLS material in the data dir.
//
//   worker.json  {workerId, name, controller: "host:port", machineId, enrolledAt}   0644
//   key.pem      private key (never leaves the machine)                            0600
//   cert.pem     client certificate signed by the controller CA                    0644
//   ca.pem       the controller CA: the only CA this worker trusts                 0644
//
// Writes are atomic per file (temp file + rename) and worker.json is written last, so a
// half-finished enrollment never looks like a complete one. A renewed key and certificate
// are written as key.next.pem + cert.next.pem first and then renamed, key before cert; a
// crash between the two renames is completed by the next load(), so key.pem and cert.pem
// never stay a mismatched pair.
import { chmod, mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { dataDirLayout } from './paths.ts';

export interface WorkerIdentity {
  workerId: string;
  name: string;
  /** Controller gRPC address, host:port. */
  controller: string;
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
    let parsed: Partial<WorkerIdentity>;
    try {
      parsed = JSON.parse(text) as Partial<WorkerIdentity>;
    } catch {
      throw new CredentialError(`${this.paths.workerJson} is not valid JSON; re-enroll with \`fleet-worker enroll --force ...\``);
    }
    for (const field of ['workerId', 'name', 'controller', 'machineId'] as const) {
      if (typeof parsed[field] !== 'string' || parsed[field] === '') {
        throw new CredentialError(`${this.paths.workerJson} lacks "${field}"; re-enroll with \`fleet-worker enroll --force ...\``);
      }
    }
    return {
      workerId: parsed.workerId!,
      name: parsed.name!,
      controller: parsed.controller!,
      machineId: parsed.machineId!,
      enrolledAt: typeof parsed.enrolledAt === 'string' ? parsed.enrolledAt : '',
    };
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
    await atomicWrite(this.paths.workerJson, `${JSON.stringify(credentials.identity, null, 2)}\n`, 0o644);
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
