// A fresh, migrated registry database for access-plane tests (real PostgreSQL).
import type postgres from 'postgres';
import { DB_DEFAULTS, migrate, openDatabase, type Database, type DbConfig } from '../../src/db/index.ts';
import { freshDatabases, PG_HOST, PG_PORT, PG_USER, testLogger, type TestDatabases } from './env.ts';

export interface AuthzDb {
  db: Database;
  sql: postgres.Sql;
  cfg: DbConfig;
  dbs: TestDatabases;
  close(): Promise<void>;
}

export async function migratedAuthzDb(): Promise<AuthzDb> {
  const dbs = freshDatabases();
  const cfg: DbConfig = { ...DB_DEFAULTS, host: PG_HOST, port: PG_PORT, user: PG_USER, registryName: dbs.registryName, opsName: dbs.opsName, poolSize: 6 };
  const log = testLogger(undefined, 'warn');
  const db = await openDatabase(cfg, log);
  await migrate(cfg, db, log);
  return {
    db,
    sql: db.registry,
    cfg,
    dbs,
    async close() {
      await db.close();
      await dbs.drop();
    },
  };
}

/** Inserts a user directly (bypassing the domain) and returns its id. */
export async function insertUser(sql: postgres.Sql, account: string, extra: { status?: number; password_hash?: string | null; is_superuser?: boolean } = {}): Promise<string> {
  const [r] = await sql<{ id: string }[]>`
    INSERT INTO authz_user (account, username, status, password_hash, is_superuser)
    VALUES (${account}, ${account}, ${extra.status ?? 1}, ${extra.password_hash ?? null}, ${extra.is_superuser ?? false})
    RETURNING id`;
  return r!.id;
}
