// The `fleet` process: real streams and environment, Ctrl-C as an abort signal
// (a second Ctrl-C exits at once), and the exit code from run().
import { run } from './cli.ts';

const interrupt = new AbortController();
process.on('SIGINT', () => {
  if (interrupt.signal.aborted) process.exit(130);
  interrupt.abort();
});
// `fleet vm list | head` closes the pipe early; that is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

// No top-level await: the bundle of this program is CommonJS (loaded with a V8 code cache,
// scripts/bin-launch.cjs), which has none.
void run(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  env: process.env,
  signal: interrupt.signal,
}).then((code) => {
  process.exitCode = code;
});
