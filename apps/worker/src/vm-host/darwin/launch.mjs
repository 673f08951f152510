// Plain-`node` entry point of the macOS VM host process (no build step): registers tsx, then
// runs main.ts with the same argv. Spawned on the worker's ad-hoc-signed node copy.
import { register } from 'tsx/esm/api';

register();
await import('./main.ts');
