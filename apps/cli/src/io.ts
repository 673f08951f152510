// What a CLI run talks to. `main.ts` passes the real process streams; tests pass
// buffers, an environment of their own and an AbortSignal standing in for Ctrl-C.

export interface OutStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  /** A terminal's width (progress bars are cut to it). */
  columns?: number;
}

export interface Io {
  stdout: OutStream;
  stderr: OutStream;
  /** Used for confirmation prompts; absent or not a TTY means "cannot ask". */
  stdin?: NodeJS.ReadableStream & { isTTY?: boolean };
  env: Record<string, string | undefined>;
  /** Aborted when the user interrupts (Ctrl-C). */
  signal?: AbortSignal;
  /** Home directory for the default config path (tests override it). */
  homedir?: string;
  /** Clock for ages (tests pin it). */
  now?: () => number;
}

/** Colours only when stdout is a terminal and NO_COLOR is unset or empty. */
export function colorEnabled(io: Io): boolean {
  const noColor = io.env.NO_COLOR;
  if (noColor !== undefined && noColor !== '') return false;
  if (io.env.TERM === 'dumb') return false;
  return io.stdout.isTTY === true;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
