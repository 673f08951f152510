// One scratch PostgreSQL server for a test suite: started before its first test, stopped after its
// last (after the suite's own afterAll hooks, which vitest runs newest first). Call it inside the
// describe block (or at the top of a file) whose tests need the server.
import { afterAll, beforeAll } from 'vitest';
import { startScratchPostgres, type ScratchPostgres, type ScratchPostgresOptions } from '../pg-scratch.ts';

/** The suite's server; its members may be used from the suite's hooks and tests on. */
export function scratchPostgresForSuite(opts: ScratchPostgresOptions = {}): ScratchPostgres {
  let server: ScratchPostgres | undefined;
  beforeAll(async () => {
    server = await startScratchPostgres(opts);
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
  });
  const current = (): ScratchPostgres => {
    if (!server) throw new Error('the scratch PostgreSQL server is not started yet: use it from a hook or a test of the suite');
    return server;
  };
  return {
    get url() {
      return current().url;
    },
    get port() {
      return current().port;
    },
    urlFor: (database) => current().urlFor(database),
    urlOn: (host, database) => current().urlOn(host, database),
    createDatabase: (name) => current().createDatabase(name),
    stop: () => current().stop(),
  };
}
