// The PostgreSQL driver (pg) and Prisma's adapter for it, imported at the first PostgreSQL
// connection rather than when @fleet/db is loaded: a controller on SQLite never loads them
// (−1.6 MiB of heap at idle, issue 20: controller memory; BENCHMARKS.md "Memory", morning pass).
import type PgModule from 'pg';
import type { PrismaPg as PrismaPgClass } from '@prisma/adapter-pg';
import type { SqlDriverAdapter, SqlMigrationAwareDriverAdapterFactory } from '@prisma/driver-adapter-utils';

export type Pg = typeof PgModule;

let pgModule: Promise<Pg> | undefined;
let adapterModule: Promise<typeof PrismaPgClass> | undefined;

/** The `pg` package (its CommonJS exports: Client, Pool, ...). */
export function loadPg(): Promise<Pg> {
  pgModule ??= import('pg').then((m) => m.default);
  return pgModule;
}

/** @prisma/adapter-pg's PrismaPg. */
export function loadPrismaPg(): Promise<typeof PrismaPgClass> {
  adapterModule ??= import('@prisma/adapter-pg').then((m) => m.PrismaPg);
  return adapterModule;
}

/**
 * A PostgreSQL adapter factory whose PrismaPg is made at the first connection (`make`, once):
 * the same factory from then on, so a pool it creates is created as PrismaPg would.
 */
export class LazyPgAdapterFactory implements SqlMigrationAwareDriverAdapterFactory {
  readonly provider = 'postgres' as const;
  readonly adapterName = '@prisma/adapter-pg';
  #made: Promise<SqlMigrationAwareDriverAdapterFactory> | undefined;

  constructor(private readonly make: () => Promise<SqlMigrationAwareDriverAdapterFactory>) {}

  #factory(): Promise<SqlMigrationAwareDriverAdapterFactory> {
    this.#made ??= this.make();
    return this.#made;
  }

  async connect(): Promise<SqlDriverAdapter> {
    return (await this.#factory()).connect();
  }

  async connectToShadowDb(): Promise<SqlDriverAdapter> {
    return (await this.#factory()).connectToShadowDb();
  }
}
