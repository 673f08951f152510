// For Prisma's own CLI (`pnpm --filter @fleet/db exec prisma migrate status`, `prisma studio`)
// on a machine where it can fetch its schema-engine binary. Fleet itself never needs
// the CLI beyond `prisma generate`: migrations are made and applied offline by
// src/new-migration.ts and migrateDatabase() (see README.md).
// SQLite only; for PostgreSQL pass --schema generated/postgresql/schema.prisma and
// set the migrations path to postgresql/migrations.
import { defineConfig } from 'prisma/config';

export default defineConfig({
  schema: 'schema.prisma',
  migrations: { path: 'migrations' },
  // e.g. DATABASE_URL=file:$HOME/.fleet-controller/fleet.db (the controller's default)
  datasource: { url: process.env['DATABASE_URL'] },
});
