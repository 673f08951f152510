// Entry point of the `fleet-worker` binary (see bin/fleet-worker.js).
import { runCli } from './cli.ts';

await runCli(process.argv);
