#!/usr/bin/env node
// `fleet`, the operator CLI: the bundle setup builds (dist/fleet.cjs) when it is up to date with the sources,
// else src/main.ts through tsx (FLEET_DEV=1 forces that; scripts/bin-launch.cjs).
// CommonJS (bin/package.json): it starts faster than an ES module.
'use strict';
const path = require('node:path');
const { launch } = require('../../../scripts/bin-launch.cjs');

launch(path.join(__dirname, '../dist'), path.join(__dirname, '../src/main.ts'));
