// migrateDatabase({ inChildProcess }) (migrate-process.ts, migrate-child.ts): the same result,
// errors and log lines as in this process, on SQLite and PostgreSQL, while this process never
// loads the schema engine. Nothing in this file migrates in-process: the last test checks that.
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { schemaEngineLoaded } from './engine.ts';
import { migrateDatabase, MigrationError, type DbLogger, type MigrateChildOptions } from './migrate.ts';
import { deserializeError, isMigrateReply, serializeError } from './migrate-process.ts';
import { findPostgresBin } from './pg-scratch.ts';
import { scratchPostgresForSuite } from './testing/scratch-postgres.ts';
import { withMigrationLock } from './migration-lock.ts';
import { LAYOUT } from './providers.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'fleet-migrate-child-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const freshUrl = (): string => `file:${path.join(tmp, `db-${++n}`, 'fleet.db')}`;
const checkedIn = (dir: string): string[] =>
  readdirSync(dir)
    .filter((d) => /^\d{14}_/.test(d))
    .sort();

function copyOfMigrations(): string {
  const dir = path.join(tmp, `migrations-${++n}`);
  cpSync(LAYOUT.sqlite.migrationsDir, dir, { recursive: true });
  return dir;
}

const inChild = (extra: MigrateChildOptions = {}) => ({ inChildProcess: extra });
const failure = (p: Promise<unknown>): Promise<unknown> => p.then(() => undefined, (e: unknown) => e);

function recordingLogger(): DbLogger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, info: (m) => lines.push(`info ${m}`), warn: (m) => lines.push(`warn ${m}`), debug: (m) => lines.push(`debug ${m}`) };
}

/** The bundled child's launcher, as the controller starts it (bundle when fresh, else tsx). */
const CONTROLLER_ENTRY = fileURLToPath(new URL('../../apps/controller/bin/migrate-database.cjs', import.meta.url));

describe('migrateDatabase in a child process (SQLite)', () => {
  it('migrates a fresh database, forwards the log lines, and is a no-op the second time', async () => {
    const url = freshUrl();
    const log = recordingLogger();
    let pid: number | undefined;
    const r = await migrateDatabase(url, { logger: log, ...inChild({ onSpawn: (p) => (pid = p) }) });
    const all = checkedIn(LAYOUT.sqlite.migrationsDir);
    expect(r.applied).toEqual(all);
    expect(pid).toBeGreaterThan(0);
    expect(pid).not.toBe(process.pid);
    // The lines migrateDatabase writes, in its order, at their levels.
    const applied = log.lines.filter((l) => l.startsWith('info '));
    expect(applied).toEqual(all.map((name) => `info @fleet/db: applied migration ${name} to sqlite database ${url}`));
    const applying = log.lines.findIndex((l) => /^debug @fleet\/db: applying \d+ migration\(s\)/.test(l));
    expect(applying).toBeGreaterThanOrEqual(0);
    expect(applying).toBeLessThan(log.lines.indexOf(applied[0]!));
    // The schema engine's own lines come through too (forwardEngineLog: debug unless WARN/ERROR).
    expect(log.lines.some((l) => l.startsWith('debug @fleet/db: schema engine: '))).toBe(true);

    const db = new Database(url.slice('file:'.length), { readonly: true });
    try {
      const rows = db.prepare('SELECT migration_name, finished_at FROM _prisma_migrations ORDER BY started_at').all() as { migration_name: string; finished_at: unknown }[];
      expect(rows.map((x) => x.migration_name)).toEqual(all);
      expect(rows.every((x) => x.finished_at !== null)).toBe(true);
    } finally {
      db.close();
    }
    expect((await migrateDatabase(url, inChild())).applied).toEqual([]);
  });

  it('through the controller bin launcher too, errors included', async () => {
    const url = freshUrl();
    expect((await migrateDatabase(url, inChild({ entry: CONTROLLER_ENTRY }))).applied).toEqual(checkedIn(LAYOUT.sqlite.migrationsDir));
    expect((await migrateDatabase(url, inChild({ entry: pathToFileURL(CONTROLLER_ENTRY) }))).applied).toEqual([]);
    const dir = copyOfMigrations();
    const first = checkedIn(dir)[0]!;
    const file = path.join(dir, first, 'migration.sql');
    writeFileSync(file, readFileSync(file, 'utf8') + '\n-- edited\n');
    const err = await failure(migrateDatabase(url, { migrationsDir: dir, ...inChild({ entry: CONTROLLER_ENTRY }) }));
    expect(err).toBeInstanceOf(MigrationError);
    expect(err).toMatchObject({ code: 'EDITED_MIGRATION', migrations: [first] });
    expect((err as Error).message).toContain(`sqlite database ${url}: migration(s) ${first} were applied from a different migration.sql`);
  });

  it('hands back a MigrationError with its code, migrations and message', async () => {
    const url = freshUrl();
    const dir = copyOfMigrations();
    await migrateDatabase(url, { migrationsDir: dir, ...inChild() });
    const bad = '29990101000000_broken';
    mkdirSync(path.join(dir, bad));
    writeFileSync(path.join(dir, bad, 'migration.sql'), 'ALTER TABLE "NoSuchTable" ADD COLUMN "x" TEXT;\n');

    const first = await failure(migrateDatabase(url, { migrationsDir: dir, ...inChild() }));
    expect(first).toBeInstanceOf(MigrationError);
    expect(first).toMatchObject({ name: 'MigrationError', code: 'APPLY_FAILED', migrations: [bad] });
    expect((first as MigrationError).message).toContain(`migrating sqlite database ${url} failed in migration ${bad}`);
    expect((first as MigrationError).message).toContain('NoSuchTable');
    expect((first as MigrationError).message).toContain('refuses to start until an operator repairs the database');

    const second = await failure(migrateDatabase(url, { migrationsDir: dir, ...inChild() }));
    expect(second).toBeInstanceOf(MigrationError);
    expect(second).toMatchObject({ code: 'FAILED_MIGRATION', migrations: [bad] });
    expect((second as MigrationError).message).toMatch(/has failed migration\(s\) 29990101000000_broken recorded in _prisma_migrations/);
  });

  it('refuses an edited migration and one it does not know, as in-process', async () => {
    const url = freshUrl();
    const dir = copyOfMigrations();
    const names = checkedIn(dir);
    await migrateDatabase(url, { migrationsDir: dir, ...inChild() });
    const file = path.join(dir, names[0]!, 'migration.sql');
    writeFileSync(file, readFileSync(file, 'utf8') + '\n-- edited\n');
    await expect(migrateDatabase(url, { migrationsDir: dir, ...inChild() })).rejects.toMatchObject({
      name: 'MigrationError',
      code: 'EDITED_MIGRATION',
      migrations: [names[0]],
    });

    const url2 = freshUrl();
    await migrateDatabase(url2, inChild());
    const db = new Database(url2.slice('file:'.length));
    db.prepare(
      `INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, logs, started_at, applied_steps_count)
       VALUES ('x', 'abc', CURRENT_TIMESTAMP, '29991231000000_from_the_future', NULL, CURRENT_TIMESTAMP, 1)`,
    ).run();
    db.close();
    const err = await failure(migrateDatabase(url2, inChild()));
    expect(err).toBeInstanceOf(MigrationError);
    expect(err).toMatchObject({ code: 'UNKNOWN_MIGRATION', migrations: ['29991231000000_from_the_future'] });
    expect((err as Error).message).toMatch(/29991231000000_from_the_future.*does not know/);
  });

  it('passes on other errors by name and message', async () => {
    const err = await failure(migrateDatabase('mysql://x', inChild()));
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(MigrationError);
    expect((err as Error).message).toMatch(/unsupported database URL/);
    await expect(migrateDatabase('file::memory:', inChild())).rejects.toThrow(/in-memory/);
  });

  it('reports a child that dies before answering as SETUP_FAILED, with what it wrote', async () => {
    const dying = path.join(tmp, 'dying.mjs');
    writeFileSync(dying, "process.stderr.write('out of luck\\n'); process.exit(3);\n");
    const err = await failure(migrateDatabase(freshUrl(), inChild({ entry: dying, execArgv: [] })));
    expect(err).toBeInstanceOf(MigrationError);
    expect(err).toMatchObject({ code: 'SETUP_FAILED', migrations: [] });
    expect((err as Error).message).toMatch(/migrating sqlite database file:.*: the migration process \(.*dying\.mjs\) exited with code 3 before it answered:\nout of luck/);

    const missing = await failure(migrateDatabase(freshUrl(), inChild({ entry: path.join(tmp, 'no-such-file.mjs'), execArgv: [] })));
    expect(missing).toMatchObject({ code: 'SETUP_FAILED' });
    expect((missing as Error).message).toMatch(/exited with code 1 before it answered:[\s\S]*no-such-file\.mjs/);
  });

  it('the child stops when its parent dies mid-migration (it never migrates on without the lock)', async () => {
    // A "database" that accepts connections and never answers: the child stays in its migration.
    const held: net.Socket[] = [];
    const blackhole = net.createServer((s) => held.push(s));
    await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', r));
    const port = (blackhole.address() as net.AddressInfo).port;
    const parent = path.join(tmp, 'parent.mjs');
    const childEntry = fileURLToPath(new URL('./migrate-child.ts', import.meta.url));
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    writeFileSync(
      parent,
      `import { fork } from 'node:child_process';
       const c = fork(${JSON.stringify(childEntry)}, [], { execArgv: ['--import', ${JSON.stringify(tsx)}], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
       c.once('spawn', () => {
         c.send({ kind: 'migrate', url: 'postgresql://fleet:secret@127.0.0.1:${port}/fleet' });
         console.log('child ' + c.pid);
       });
       setInterval(() => {}, 1000);\n`,
    );
    const p = spawn(process.execPath, [parent], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const childPid = await new Promise<number>((resolve, reject) => {
        let out = '';
        p.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /child (\d+)/.exec(out);
          if (m) resolve(Number(m[1]));
        });
        p.once('exit', () => reject(new Error(`parent exited: ${out}`)));
      });
      // The child is connecting to the "database" (it would wait there for ever)...
      const deadline = Date.now() + 10_000;
      while (held.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(held.length).toBeGreaterThan(0);
      expect(alive(childPid)).toBe(true);
      // ... when its parent is killed outright.
      p.kill('SIGKILL');
      const end = Date.now() + 10_000;
      while (alive(childPid) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      expect(alive(childPid)).toBe(false);
    } finally {
      p.kill('SIGKILL');
      for (const s of held) s.destroy();
      blackhole.close();
    }
  }, 30_000);
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('the pipe between parent and child', () => {
  it('carries a MigrationError and its cause unchanged', () => {
    const cause = new Error('P3018: relation "x" does not exist');
    const original = new MigrationError('APPLY_FAILED', ['a', 'b'], 'migrating x failed', { cause });
    const wire = JSON.parse(JSON.stringify({ kind: 'failed', error: serializeError(original) })) as unknown;
    expect(isMigrateReply(wire)).toBe(true);
    if (!isMigrateReply(wire) || wire.kind !== 'failed') throw new Error('unreachable');
    const back = deserializeError(wire.error);
    expect(back).toBeInstanceOf(MigrationError);
    expect(back).toMatchObject({ name: 'MigrationError', code: 'APPLY_FAILED', migrations: ['a', 'b'], message: 'migrating x failed', stack: original.stack });
    expect((back.cause as Error).message).toBe(cause.message);
  });

  it('rejects what is not a reply', () => {
    expect(isMigrateReply({ kind: 'done', applied: [1] })).toBe(false);
    expect(isMigrateReply({ kind: 'log', level: 'trace', message: 'x' })).toBe(false);
    expect(isMigrateReply({ kind: 'failed', error: { name: 'MigrationError', message: 'x', code: 'NOPE' } })).toBe(false);
    expect(isMigrateReply(null)).toBe(false);
    expect(isMigrateReply({ kind: 'done', applied: ['a'] })).toBe(true);
  });
});

const havePostgres = findPostgresBin() !== undefined;
if (!havePostgres) console.warn('migrate-process.test.ts: PostgreSQL is not installed: skipping its part');

describe.skipIf(!havePostgres)('migrateDatabase in a child process (PostgreSQL)', () => {
  const pg = scratchPostgresForSuite();

  it('migrates under the migration lock held by this process, once', async () => {
    const url = await pg.createDatabase('fleet_child_1');
    const all = checkedIn(LAYOUT.postgresql.migrationsDir);
    // Two at once, as two controllers starting together: one applies everything, the other nothing.
    const results = await Promise.all([0, 1].map(() => withMigrationLock(url, () => migrateDatabase(url, inChild()))));
    expect(results.map((r) => r.applied).sort((a, b) => b.length - a.length)).toEqual([all, []]);
  });

  it('hands back UNKNOWN_MIGRATION with a redacted URL', async () => {
    const url = await pg.createDatabase('fleet_child_2');
    await migrateDatabase(url, inChild());
    const { default: pgLib } = await import('pg');
    const c = new pgLib.Client({ connectionString: url });
    await c.connect();
    await c.query(
      `INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, started_at, applied_steps_count)
       VALUES ('x', 'abc', now(), '29991231000000_from_the_future', now(), 1)`,
    );
    await c.end();
    const err = await failure(migrateDatabase(url, inChild()));
    expect(err).toBeInstanceOf(MigrationError);
    expect(err).toMatchObject({ code: 'UNKNOWN_MIGRATION', migrations: ['29991231000000_from_the_future'] });
    const password = new URL(url).password;
    if (password) expect((err as Error).message).not.toContain(password);
  });
});

describe('this process', () => {
  // Last (vitest runs a file's tests in order): everything above migrated only in children.
  it('never loaded the schema engine', () => {
    expect(schemaEngineLoaded()).toBe(false);
  });
});
