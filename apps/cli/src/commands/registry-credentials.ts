// Registry passwords (and tokens) for `fleet registry login` and `fleet image push --bundle`:
// read from stdin with --password-stdin, or asked for without echo when stdin is a terminal.
// Never from an argument: ps and shell history would show it.
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { InterruptedError, UsageError } from '../errors.ts';
import type { Io } from '../io.ts';

/** Registry tokens can be long (cloud registries hand out JWTs of a few KiB); the API takes 4096. */
const MAX_PASSWORD = 4096;
const MAX_STDIN = 64 * 1024;

export interface CredentialOptions {
  username?: string;
  passwordStdin?: boolean;
  /** Only ever set by the hidden --password option, which is refused. */
  password?: string;
}

/** `--password VALUE` exists only to be refused with the reason and the alternative. */
export function refusedPasswordOption(): Option {
  return new Option('--password <password>', 'not accepted: use --password-stdin').hideHelp();
}

export function addCredentialOptions(cmd: Command, what: string): Command {
  return cmd
    .option('--username <user>', `user name for ${what}`)
    .option('--password-stdin', 'read the password (or token) from stdin; without it, it is asked for when stdin is a terminal')
    .addOption(refusedPasswordOption());
}

function checkPassword(password: string, source: string): string {
  if (password.length === 0) throw new UsageError(`${source}: the password is empty`);
  if (password.length > MAX_PASSWORD) throw new UsageError(`${source}: the password is longer than ${MAX_PASSWORD} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(password)) throw new UsageError(`${source}: the password contains a control character (only its trailing newline is removed)`);
  return password;
}

async function readAllStdin(stdin: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of stdin) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    bytes += b.length;
    if (bytes > MAX_STDIN) throw new UsageError('--password-stdin: more than 64 KiB on stdin; pipe only the password');
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

type TtyStdin = NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };

/**
 * Asks on stderr and reads one line from a terminal without echoing it (raw mode: Enter ends,
 * Backspace deletes, Ctrl-C interrupts, Ctrl-U clears).
 */
export async function promptHidden(io: Io, question: string): Promise<string> {
  const stdin = io.stdin as TtyStdin | undefined;
  if (!stdin) throw new UsageError('no standard input to read the password from');
  io.stderr.write(question);
  const raw = typeof stdin.setRawMode === 'function';
  if (raw) stdin.setRawMode!(true);
  try {
    return await new Promise<string>((resolve, reject) => {
      let text = '';
      const finish = (fn: () => void) => {
        stdin.removeListener('data', onData);
        stdin.removeListener('end', onEnd);
        io.signal?.removeEventListener('abort', onAbort);
        stdin.pause();
        fn();
      };
      const onData = (chunk: Buffer | string) => {
        for (const ch of typeof chunk === 'string' ? chunk : chunk.toString('utf8')) {
          if (ch === '\r' || ch === '\n') return finish(() => resolve(text));
          if (ch === '\u0003') return finish(() => reject(new InterruptedError()));
          if (ch === '\u0004') {
            if (text === '') return finish(() => resolve(text));
            continue;
          }
          if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1);
          else if (ch === '\u0015') text = '';
          else text += ch;
        }
      };
      const onEnd = () => finish(() => resolve(text));
      const onAbort = () => finish(() => reject(new InterruptedError()));
      stdin.on('data', onData);
      stdin.once('end', onEnd);
      io.signal?.addEventListener('abort', onAbort, { once: true });
      stdin.resume();
    });
  } finally {
    if (raw) stdin.setRawMode!(false);
    io.stderr.write('\n');
  }
}

/**
 * The credentials the flags ask for: none (anonymous), or a user name and its password from
 * stdin (--password-stdin) or from a prompt on a terminal. `context` names the registry in the prompt.
 */
export async function readRegistryCredentials(io: Io, o: CredentialOptions, context: string): Promise<{ username: string; password: string } | null> {
  if (o.password !== undefined) {
    throw new UsageError('--password is not accepted: a password in an argument shows in ps and in shell history; pipe it with --password-stdin (printf %s "$PW" | fleet … --password-stdin)');
  }
  const username = o.username?.trim();
  if (o.username !== undefined && !username) throw new UsageError('invalid --username "": must not be empty');
  if (o.passwordStdin) {
    if (!username) throw new UsageError('--password-stdin needs --username: registries take a user name with the password or token');
    if (!io.stdin) throw new UsageError('--password-stdin: no standard input to read');
    return { username, password: checkPassword((await readAllStdin(io.stdin)).replace(/\r?\n$/, ''), '--password-stdin') };
  }
  if (!username) return null;
  if (io.stdin?.isTTY !== true) {
    throw new UsageError(`a password is needed for user "${username}": give it on stdin with --password-stdin (stdin is not a terminal to ask on; passwords are never taken from an argument)`);
  }
  return { username, password: checkPassword(await promptHidden(io, `Password for ${username}@${context}: `), 'password') };
}

/** `--ca-file F`: a PEM bundle of the CA(s) that sign the registry's certificate. */
export async function readCaFile(file: string): Promise<string> {
  let pem: string;
  try {
    pem = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--ca-file: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new UsageError(`--ca-file: ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  if (pem.length > 256 * 1024) throw new UsageError(`--ca-file: ${file} is larger than 256 KiB`);
  return pem;
}

/**
 * A registry host as image references spell it: `ghcr.io`, `127.0.0.1:5000`, `[::1]:5000`.
 * A URL is refused with the host it contains.
 */
export function validateRegistryHost(input: string): string {
  const host = input.trim();
  const url = /^[a-z][a-z0-9+.-]*:\/\/([^/]+)/i.exec(host);
  if (url) throw new UsageError(`invalid registry "${input}": give the host as image references spell it, without a scheme: ${url[1]}`);
  const ok = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/.test(host);
  if (!ok || host.length > 253) throw new UsageError(`invalid registry "${input}": expected host[:port], e.g. ghcr.io or 127.0.0.1:5000`);
  const port = /:(\d+)$/.exec(host.replace(/^\[[^\]]*\]/, ''));
  if (port && (Number(port[1]) < 1 || Number(port[1]) > 65535)) throw new UsageError(`invalid registry "${input}": the port must be 1..65535`);
  return host.toLowerCase();
}
