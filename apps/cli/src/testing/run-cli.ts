// Runs the CLI in-process (the same run() the `fleet` binary calls) with
// captured stdout/stderr, for command-level tests.
import { run } from '../cli.ts';
import type { Io } from '../io.ts';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The clock tests pin: 2025-01-01T01:00:00Z. */
export const NOW = Date.parse('2025-01-01T01:00:00.000Z');

export async function runCli(
  args: string[],
  opts: { env?: Record<string, string | undefined>; tty?: boolean; stderrTty?: boolean; signal?: AbortSignal; stdin?: Io['stdin']; onStdout?: (chunk: string) => void } = {},
): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const code = await run(args, {
    stdout: {
      write: (s: string) => {
        stdout += s;
        opts.onStdout?.(s);
        return true;
      },
      isTTY: opts.tty ?? false,
    },
    stderr: { write: (s: string) => (stderr += s), isTTY: opts.stderrTty ?? false, columns: 100 },
    env: opts.env ?? {},
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.stdin ? { stdin: opts.stdin } : {}),
    now: () => NOW,
    homedir: '/nonexistent-home',
  });
  return { code, stdout, stderr };
}
