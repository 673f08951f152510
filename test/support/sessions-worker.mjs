// Launcher: registers tsx in this process, then runs the TypeScript worker entry.
import { register } from 'tsx/esm/api';

register();
await import('./sessions-worker.ts');
