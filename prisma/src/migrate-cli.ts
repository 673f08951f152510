// `pnpm --filter @fleet/db migrate <command> <database-url>`: the operator's
// migration commands, offline (no Prisma CLI or engine binary needed).
//
//   deploy  <url>                     apply pending migrations (what the controller does at start)
//   status  <url>                     show pending / unknown / failed / edited migrations
//   resolve <url> --rolled-back <name>  a failed migration was undone by hand: retry it next time
//   resolve <url> --applied <name>      a failed migration was completed by hand: record it as applied
//
// <url> is file:<path> (relative to the current directory; note that pnpm --filter runs
// in prisma/) or postgresql://user:pass@host:port/db.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { migrateDatabase, MigrationError, migrationStatus, resolveMigration, type DbLogger } from './migrate.ts';

const USAGE = `usage: pnpm --filter @fleet/db migrate deploy <url>
       pnpm --filter @fleet/db migrate status <url>
       pnpm --filter @fleet/db migrate resolve <url> (--rolled-back | --applied) <migration>
<url>: file:/absolute/path/fleet.db or postgresql://user:pass@host:port/db`;

const logger: DbLogger = {
  info: (m) => console.log(m),
  warn: (m) => console.warn(m),
};

async function main(argv: string[]): Promise<number> {
  const [command, url, ...rest] = argv;
  if (!command || !url) {
    console.error(USAGE);
    return 2;
  }
  switch (command) {
    case 'deploy': {
      const { applied } = await migrateDatabase(url, { logger });
      console.log(applied.length ? `applied ${applied.length} migration(s)` : 'database is up to date');
      return 0;
    }
    case 'status': {
      const s = await migrationStatus(url);
      console.log(`${s.known.length} migration(s) checked in, ${s.known.length - s.pending.length} applied`);
      const list = (label: string, names: string[]): void => {
        if (names.length) console.log(`${label}:\n${names.map((n) => `  ${n}`).join('\n')}`);
      };
      list('pending', s.pending);
      list('unknown to this build (applied by a newer Fleet?)', s.unknown);
      list('FAILED (needs `resolve`)', s.failed);
      list('edited after being applied', s.edited);
      return s.unknown.length || s.failed.length || s.edited.length ? 1 : 0;
    }
    case 'resolve': {
      const [flag, name] = rest;
      if ((flag !== '--rolled-back' && flag !== '--applied') || !name) {
        console.error(USAGE);
        return 2;
      }
      await resolveMigration(url, name, flag === '--applied' ? 'applied' : 'rolled-back');
      console.log(`marked ${name} ${flag.slice(2)}`);
      return 0;
    }
    default:
      console.error(USAGE);
      return 2;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err instanceof MigrationError ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
