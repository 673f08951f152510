// The floor under issue 20's creates/s goal: how many durable writes per second this machine's HTTP
// stack can acknowledge, against GET /health on the same server, with the same client and
// concurrency as bench/control-plane.ts. No Fleet code: a bare fastify server (the controller's
// version) with two routes, in a child process:
//
//   GET  /health  {"status":"ok"}                                  (what the controller's health does)
//   POST /create  a JSON body checked against a schema, one row INSERTed, acknowledged after the
//                 COMMIT that made it durable: SQLite in WAL with synchronous=FULL, and every
//                 request that arrived while the last COMMIT ran shares the next one (group commit)
//
// A Fleet create does that and more: the VM's event, the scheduler's placement and its event, a key
// pair for the VM, its access row, the push to the worker, the delivery mark, the worker's report and
// its event: three or more durable writes per VM instead of one. So the share printed here is the most
// creates/health could be on this machine with a create durable before it is acknowledged.
//
//   pnpm exec tsx bench/create-floor.ts [--requests 10000] [--concurrency 32] [--rounds 3] [--warmup 2000]
//
// Each round starts a fresh server and measures health (5,000 requests) then creates (--requests),
// cold, as bench/control-plane.ts does by default; with --warmup N it first sends N of each, unmeasured.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { pool, processCpuMs } from './support/request-load.ts';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '10000' },
    concurrency: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '0' },
    serve: { type: 'string' },
  },
});

type Reply = { code(status: number): { send(body: unknown): unknown } };
type Handler = (req: { body: unknown }, reply: Reply) => Promise<unknown>;
interface HttpServer {
  get(path: string, handler: Handler): void;
  post(path: string, opts: { schema: { body: object } }, handler: Handler): void;
  listen(opts: { host: string; port: number }): Promise<string>;
}
interface SqliteDb {
  pragma(text: string): unknown;
  exec(sql: string): void;
  prepare(sql: string): { run(...params: unknown[]): unknown };
  readonly inTransaction: boolean;
}

/** The server (run as a child: `--serve <dir>`). */
async function serve(dir: string): Promise<void> {
  // The controller's own fastify and the database package's better-sqlite3 (the root has neither,
  // so neither do its types: the little used of them is typed here).
  const Fastify = createRequire(new URL('../apps/controller/package.json', import.meta.url))('fastify') as (opts: { logger: boolean }) => HttpServer;
  const Database = createRequire(new URL('../prisma/package.json', import.meta.url))('better-sqlite3') as new (file: string) => SqliteDb;
  const db = new Database(path.join(dir, 'floor.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec(`CREATE TABLE "Vm" ("id" TEXT PRIMARY KEY, "name" TEXT NOT NULL UNIQUE, "image" TEXT NOT NULL, "cpus" INTEGER NOT NULL,
    "memoryMib" INTEGER NOT NULL, "priority" INTEGER NOT NULL, "state" TEXT NOT NULL, "createdAt" INTEGER NOT NULL)`);
  const insert = db.prepare('INSERT INTO "Vm" ("id", "name", "image", "cpus", "memoryMib", "priority", "state", "createdAt") VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
  const begin = db.prepare('BEGIN');
  const commit = db.prepare('COMMIT');

  type Pending = { row: unknown[]; done: (err?: Error) => void };
  let queue: Pending[] = [];
  let scheduled = false;
  // One COMMIT for every write queued since the last one (the controller's commit cycle does the same).
  const flush = () => {
    scheduled = false;
    const batch = queue;
    queue = [];
    try {
      begin.run();
      for (const p of batch) insert.run(...p.row);
      commit.run();
      for (const p of batch) p.done();
    } catch (err) {
      if (db.inTransaction) db.exec('ROLLBACK');
      for (const p of batch) p.done(err as Error);
    }
  };
  const write = (row: unknown[]) =>
    new Promise<void>((resolve, reject) => {
      queue.push({ row, done: (err) => (err ? reject(err) : resolve()) });
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    });

  const app = Fastify({ logger: false });
  app.get('/health', async () => ({ status: 'ok' }));
  app.post(
    '/create',
    {
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['name', 'image', 'cpus', 'memoryMib'],
          properties: {
            name: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' },
            image: { type: 'string', minLength: 1, maxLength: 512 },
            cpus: { type: 'integer', minimum: 1, maximum: 64 },
            memoryMib: { type: 'integer', minimum: 256, maximum: 1048576 },
            priority: { type: 'integer', minimum: 0, maximum: 1000 },
          },
        },
      },
    },
    async (req, reply) => {
      const b = req.body as { name: string; image: string; cpus: number; memoryMib: number; priority?: number };
      const id = crypto.randomUUID();
      const createdAt = Date.now();
      await write([id, b.name, b.image, b.cpus, b.memoryMib, b.priority ?? 0, 'pending', createdAt]);
      return reply.code(201).send({ id, name: b.name, image: b.image, cpus: b.cpus, memoryMib: b.memoryMib, priority: b.priority ?? 0, state: 'pending', createdAt: new Date(createdAt).toISOString() });
    },
  );
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  console.log(`listening ${address}`);
}

async function round(n: number, width: number, warmup: number, tag: string): Promise<Record<string, string | number>> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-create-floor-'));
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--serve', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const base = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening (\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (code) => reject(new Error(`server exited (${code}) before listening`)));
    });
    const health = async () => void (await fetch(`${base}/health`).then((r) => r.text()));
    const create = (prefix: string) => async (i: number) => {
      const res = await fetch(`${base}/create`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: `${prefix}-${i}`, image: 'synthetic:ok', cpus: 1, memoryMib: 1024, priority: i % 3 }) });
      const text = await res.text();
      if (res.status !== 201) throw new Error(`POST /create → ${res.status} ${text}`);
    };
    if (warmup > 0) {
      await pool(warmup, width, create('warmup'));
      await pool(warmup, width, health);
    }
    const pid = child.pid!;
    const hc0 = await processCpuMs(pid);
    const h0 = performance.now();
    await pool(5000, width, health);
    const healthS = (performance.now() - h0) / 1000;
    const hc1 = await processCpuMs(pid);
    const c0 = performance.now();
    await pool(n, width, create('vm'));
    const createS = (performance.now() - c0) / 1000;
    const cc1 = await processCpuMs(pid);
    const healthPerS = 5000 / healthS;
    const createsPerS = n / createS;
    return {
      round: tag,
      'health req/s': Math.round(healthPerS),
      'durable creates/s': Math.round(createsPerS),
      'creates / health': `${Math.round((100 * createsPerS) / healthPerS)} %`,
      'server CPU µs per health req': Math.round(((hc1 - hc0) * 1000) / 5000),
      'server CPU µs per create': Math.round(((cc1 - hc1) * 1000) / n),
    };
  } finally {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

if (values.serve) {
  await serve(values.serve);
} else {
  const n = Number(values.requests);
  const width = Number(values.concurrency);
  const rounds = Number(values.rounds);
  const warmup = Number(values.warmup);
  for (const [k, v] of [['--requests', n], ['--concurrency', width], ['--rounds', rounds], ['--warmup', warmup]] as const) {
    if (!Number.isInteger(v) || v < (k === '--warmup' ? 0 : 1)) throw new Error(`${k} must be a whole number${k === '--warmup' ? '' : ' above 0'}`);
  }
  console.log(`create floor: ${n} durable creates and 5,000 health requests per round, concurrency ${width}, ${warmup > 0 ? `warm-up ${warmup}` : 'cold'}, ${os.cpus().length} CPUs, Node ${process.version}`);
  console.log(`/proc/loadavg at start: ${(await readFile('/proc/loadavg', 'utf8')).trim()}`);
  const rows = [];
  for (let r = 1; r <= rounds; r++) {
    const row = await round(n, width, warmup, String(r));
    console.log(row);
    rows.push(row);
  }
  console.log(`/proc/loadavg at end: ${(await readFile('/proc/loadavg', 'utf8')).trim()}`);
  const keys = Object.keys(rows[0]!);
  console.log(`| ${keys.join(' | ')} |\n| ${keys.map(() => '---').join(' | ')} |`);
  for (const row of rows) console.log(`| ${keys.map((k) => row[k]).join(' | ')} |`);
}
