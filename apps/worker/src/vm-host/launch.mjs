// Entry point for spawning the VM host process with plain `node` (no build step in this
// workspace): registers tsx, then runs main.ts with the same argv.
import { register } from 'tsx/esm/api';

register();
await import('./main.ts');
