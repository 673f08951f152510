// Entry point for spawning the VM host process with plain `node`: the prebuilt bundle
// (apps/worker/dist/vm-host.mjs, made by scripts/build.mjs with the worker's) when it is up to
// date with the sources, else main.ts through tsx (FLEET_DEV=1 forces that), the same rule as
// the bins (scripts/bin-launch.cjs). Either way with the same argv. Under tsx every VM host
// process also carried tsx and esbuild: ~60 MiB more RSS per VM (bench/worker-memory.ts).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const { launch } = createRequire(import.meta.url)('../../../../scripts/bin-launch.cjs');
await launch(fileURLToPath(new URL('../../dist', import.meta.url)), fileURLToPath(new URL('./main.ts', import.meta.url)), 'vm-host.mjs');
