#!/usr/bin/env node
// `fleet-worker`: the bundle setup builds (dist/fleet-worker.mjs) when it is up to date with
// the sources, else src/main.ts through tsx (FLEET_DEV=1 forces that; scripts/bin-launch.mjs).
// Either way the program runs in this process, so signals sent to it reach the worker.
import { launch } from '../../../scripts/bin-launch.mjs';

await launch(new URL('../dist/', import.meta.url), new URL('../src/main.ts', import.meta.url));
