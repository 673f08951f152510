// Plain-`node` entry point of the IPSW installer (see install-main.ts): registers tsx, then runs it.
import { register } from 'tsx/esm/api';

register();
await import('./install-main.ts');
