#!/usr/bin/env node
// `fleet-worker`: the bundle setup builds (dist/fleet-worker.mjs) when it is up to date with the sources,
// else src/main.ts through tsx (FLEET_DEV=1 forces that; scripts/bin-launch.cjs).
// Either way the program runs in this process, so signals sent to it reach the worker.
// CommonJS (bin/package.json): it starts faster than an ES module.
'use strict';
const path = require('node:path');
const { launch } = require('../../../scripts/bin-launch.cjs');

launch(path.join(__dirname, '../dist'), path.join(__dirname, '../src/main.ts'));
