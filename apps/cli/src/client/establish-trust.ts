// Deciding, when a context is added, which CA the CLI trusts for an https controller:
// --ca-file (an operator's CA), --ca-fingerprint (the controller's own CA, compared with
// the fingerprint the controller prints), a yes on a terminal (trust on first use), or
// the system's trust store. Without a terminal nothing is trusted implicitly.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import { CliError, ExitCode, UsageError } from '../errors.ts';
import { fetchPresentedChain, fingerprintOfPem, normalizeFingerprint, verifyAgainstCa } from './controller-trust.ts';

export interface TrustFlags {
  caFingerprint?: string | undefined;
  caFile?: string | undefined;
}

export interface TrustPrompt {
  /** True when a person can answer a question. */
  interactive: boolean;
  ask(question: string): Promise<string>;
  note(text: string): void;
}

/** Returns the CA PEM to pin for `url`, or null when none is needed (http, or a system-trusted certificate). */
export async function establishTrust(url: string, flags: TrustFlags, prompt: TrustPrompt): Promise<string | null> {
  if (flags.caFingerprint !== undefined && flags.caFile !== undefined) throw new UsageError('--ca-fingerprint and --ca-file are alternatives: pass one');
  if (!url.startsWith('https:')) {
    if (flags.caFingerprint !== undefined || flags.caFile !== undefined) throw new UsageError(`--ca-fingerprint and --ca-file need an https:// URL (got ${url})`);
    return null;
  }
  if (flags.caFile !== undefined) {
    let pem: string;
    try {
      pem = readFileSync(flags.caFile, 'utf8');
      fingerprintOfPem(pem);
    } catch (err) {
      throw new UsageError(`--ca-file ${flags.caFile}: not a readable PEM certificate (${(err as Error).message})`);
    }
    await verifyAgainstCa(url, pem);
    return pem;
  }
  const want = flags.caFingerprint !== undefined ? normalizeFingerprint(flags.caFingerprint) : null;
  const presented = await fetchPresentedChain(url);
  if (want !== null) {
    if (presented.caFingerprint !== want) {
      throw new CliError(
        `the controller at ${url} presents CA "${presented.caSubject}" with SHA-256 fingerprint ${presented.caFingerprint}, not ${want}: ` +
          'refusing to trust it (check the fingerprint with "fleet-controller ca-fingerprint" on the controller host, and that this is the right controller)',
        ExitCode.AUTH,
      );
    }
    await verifyAgainstCa(url, presented.caPem);
    return presented.caPem;
  }
  if (presented.systemTrusted) return null;
  if (!prompt.interactive) {
    throw new CliError(
      `the controller at ${url} presents a certificate this machine does not trust (CA "${presented.caSubject}"). ` +
        'Pass --ca-fingerprint SHA256 with the fingerprint from "fleet-controller ca-fingerprint --data-dir DIR" on the controller host ' +
        '(it is also in the controller\'s start-up output), or --ca-file PEM for a CA of your own',
      ExitCode.USAGE,
    );
  }
  prompt.note(`The controller at ${url} presents a certificate from CA "${presented.caSubject}"`);
  prompt.note(`  SHA-256 fingerprint: ${presented.caFingerprint}`);
  prompt.note('Compare it with "fleet-controller ca-fingerprint" on the controller host (or its start-up output).');
  const answer = (await prompt.ask('Trust this CA for this context? [y/N] ')).trim().toLowerCase();
  if (answer !== 'y' && answer !== 'yes') throw new CliError('not trusted: nothing saved', ExitCode.AUTH);
  await verifyAgainstCa(url, presented.caPem);
  return presented.caPem;
}

/** A prompt on the given terminal streams (interactive only when stdin is a TTY). */
export function terminalPrompt(stdin: (NodeJS.ReadableStream & { isTTY?: boolean }) | undefined, stderr: { write(text: string): unknown }): TrustPrompt {
  return {
    interactive: stdin?.isTTY === true,
    note: (text) => void stderr.write(text + '\n'),
    async ask(question) {
      if (!stdin) return '';
      stderr.write(question);
      const rl = createInterface({ input: stdin });
      try {
        return await rl.question('');
      } finally {
        rl.close();
      }
    },
  };
}
