// The child side of migrate-process.ts: a process that runs migrateDatabase once and exits, so
// that the schema engine's WebAssembly instance (which cannot be released) dies with it instead
// of staying in the long-lived controller. Started by migrateDatabaseInChild with an IPC
// channel: it receives one MigrateRequest, forwards migrateDatabase's log lines, answers with
// the applied migrations or the error, and exits.
//
// Bundled as apps/controller/dist/migrate-database.mjs (scripts/build.mjs; run through
// apps/controller/bin/migrate-database.cjs), or run through tsx from the sources.
import v8 from 'node:v8';
import { migrateDatabase, type DbLogger } from './migrate.ts';
import { isMigrateRequest, serializeError, type MigrateReply } from './migrate-process.ts';

// Baseline (Liftoff) wasm code only, as in the controller (apps/controller/src/v8-flags.ts):
// TurboFan recompiling the engine's hot functions on background threads costs memory and CPU
// that a run of a second or two never gets back. Nothing has compiled wasm yet here.
v8.setFlagsFromString('--liftoff-only');

if (typeof process.send !== 'function') {
  process.stderr.write('migrate-child: start me through migrateDatabaseInChild (@fleet/db), with an IPC channel\n');
  process.exit(2);
}

let answered = false;

function send(m: MigrateReply): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected) return resolve();
    process.send!(m, undefined, {}, () => resolve());
  });
}

// The parent gone (killed, crashed) before we answered: stop at once. It held the migration lock
// for us; migrating on without it could race another controller that takes the lock now.
process.once('disconnect', () => {
  if (!answered) process.exit(1);
});

process.once('message', (m: unknown) => {
  void (async () => {
    if (!isMigrateRequest(m)) {
      answered = true;
      await send({ kind: 'failed', error: { name: 'Error', message: 'migrate-child: unexpected request' } });
      process.exit(2);
    }
    // Log lines in the order migrateDatabase writes them; the answer goes after them on the same pipe.
    const logger: DbLogger = {
      info: (message) => void send({ kind: 'log', level: 'info', message }),
      warn: (message) => void send({ kind: 'log', level: 'warn', message }),
      debug: (message) => void send({ kind: 'log', level: 'debug', message }),
    };
    let reply: MigrateReply;
    try {
      const { applied } = await migrateDatabase(m.url, { logger, ...(m.migrationsDir !== undefined && { migrationsDir: m.migrationsDir }) });
      reply = { kind: 'done', applied };
    } catch (err) {
      reply = { kind: 'failed', error: serializeError(err) };
    }
    answered = true;
    await send(reply);
    process.exit(0);
  })();
});
