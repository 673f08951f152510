#!/usr/bin/env node
// `fleet`, the operator CLI: TypeScript run through tsx (no build step).
import { register } from 'tsx/esm/api';
register();
await import('../src/main.ts');
