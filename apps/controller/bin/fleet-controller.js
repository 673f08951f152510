#!/usr/bin/env node
// `fleet-controller`: the bundle setup builds (dist/fleet-controller.mjs) when it is up to date with the sources,
// else src/main.ts through tsx (FLEET_DEV=1 forces that; scripts/bin-launch.cjs).
// `run` starts node once more with settings that only count at process start (relaunch.cjs:
// V8's young generation, glibc malloc's arenas) unless the operator set them; this process then
// forwards signals to the controller and exits as it did. Other commands run in this process.
// CommonJS (bin/package.json): it starts faster than an ES module.
'use strict';
const path = require('node:path');
const { launch } = require('../../../scripts/bin-launch.cjs');
const { relaunch } = require('./relaunch.cjs');

if (!relaunch(__filename, process.argv.slice(2))) launch(path.join(__dirname, '../dist'), path.join(__dirname, '../src/main.ts'));
