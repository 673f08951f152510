// Plain-`node` entry point of the VM agent (no build step): registers tsx, then runs
// agent-main.ts with the same argv. Started by launchd in the VM user's GUI session on the
// worker's signed node copy.
import { register } from 'tsx/esm/api';

register();
await import('./agent-main.ts');
