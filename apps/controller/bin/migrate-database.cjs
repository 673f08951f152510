// The controller's migration child (issue 20: memory): `fleet-controller run` migrates the
// database in a short-lived process started through this file (migrateDatabaseInChild in
// @fleet/db, prisma/src/migrate-process.ts), so that Prisma's schema engine, which cannot be
// released once loaded, never stays in the controller. It runs the bundled entry
// (dist/migrate-database.mjs, built with the controller by scripts/build.mjs) when the bundle is
// up to date with the sources, else prisma/src/migrate-child.ts through tsx (FLEET_DEV=1 forces
// that): the same rule as the bins (scripts/bin-launch.cjs). Not a command of its own: without
// the IPC channel of its parent it refuses to run.
'use strict';
const path = require('node:path');
const { launch } = require('../../../scripts/bin-launch.cjs');

launch(path.join(__dirname, '../dist'), path.join(__dirname, '../../../prisma/src/migrate-child.ts'), 'migrate-database.mjs');
