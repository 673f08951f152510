// Reading a VM's SSH password for `fleet vm create|update`. Never from argv: an argument
// shows up in `ps` and in shell history, so only stdin or a file.
import { readFile } from 'node:fs/promises';
import { UsageError } from '../errors.ts';
import type { Runtime } from '../runtime.ts';

export interface PasswordOptions {
  passwordStdin?: boolean;
  passwordFile?: string;
}

const MAX = 256;

/** One trailing newline (as `echo` or an editor leaves it) is not part of the password. */
function stripNewline(text: string): string {
  return text.replace(/\r?\n$/, '');
}

export function validatePassword(password: string, source: string): string {
  if (password.length === 0) throw new UsageError(`${source}: the password is empty`);
  if (password.length > MAX) throw new UsageError(`${source}: the password is longer than ${MAX} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(password)) throw new UsageError(`${source}: the password contains a control character (only its one trailing newline is removed)`);
  return password;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of stream) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    bytes += b.length;
    if (bytes > 64 * 1024) throw new UsageError('--password-stdin: more than 64 KiB on stdin; pipe only the password');
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The password the flags ask for, or undefined when neither flag was given. */
export async function readPassword(rt: Runtime, o: PasswordOptions): Promise<string | undefined> {
  if (o.passwordStdin && o.passwordFile !== undefined) throw new UsageError('--password-stdin and --password-file cannot be used together');
  if (o.passwordStdin) {
    const stdin = rt.io.stdin;
    if (!stdin) throw new UsageError('--password-stdin: no standard input to read');
    return validatePassword(stripNewline(await readAll(stdin)), '--password-stdin');
  }
  if (o.passwordFile !== undefined) {
    let text: string;
    try {
      text = await readFile(o.passwordFile, 'utf8');
    } catch (error) {
      throw new UsageError(`--password-file: cannot read ${o.passwordFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
    return validatePassword(stripNewline(text), '--password-file');
  }
  return undefined;
}
