// Database access for the proxy: two postgres.js pools (registry = schema.sql
// Part B, ops = Part A) on a PostgreSQL server, or one pool on an embedded PGlite.
import postgres from 'postgres';
import type { Logger } from 'pino';
import { createClient, DbError, errorCode, targetLabel, wrapDbError, type DbTarget } from './client.ts';
import type { EmbeddedServer } from './embedded.ts';
import { detectAuthz, detectOps, detectRegistry, migrateAuthz, migrateOps, migrateRegistry, MIGRATE_LOCK_KEY, type AuthzState, type OpsState, type RegistryState } from './migrate.ts';

export { DbError } from './client.ts';
export { domainErrorOfDb } from './errors.ts';
export type { AuthzState, OpsState, RegistryState } from './migrate.ts';

export interface DbConfig {
  /** null → embedded PGlite */
  host: string | null;
  port: number;
  user: string;
  password: string;
  ssl: boolean;
  /** database for Part B (registry) */
  registryName: string;
  /** database for Part A (ops, shared with Python services) */
  opsName: string;
  /** max connections per postgres.js pool (server mode) */
  poolSize: number;
  /** embedded data directory */
  dataDir: string;
  /** ops schema state to create for a NEW ops database (2.9 = migration 0006, 2.8 = 0005) */
  opsSchema: '2.9' | '2.8';
}

export const DB_DEFAULTS: DbConfig = {
  host: null,
  port: 5432,
  user: 'postgres',
  password: '',
  ssl: false,
  registryName: 'utilmeta_proxy',
  opsName: 'utilmeta_proxy_ops',
  poolSize: 10,
  dataDir: './data',
  opsSchema: '2.9',
};

export interface Database {
  /** Part B tables */
  readonly registry: postgres.Sql;
  /** Part A tables (the same client as registry in embedded mode or when both names are equal) */
  readonly ops: postgres.Sql;
  readonly embedded: boolean;
  /** For logs; never contains the password. */
  readonly describe: string;
  close(): Promise<void>;
}

interface Internals {
  registryTarget: DbTarget;
  opsTarget: DbTarget;
}
const internals = new WeakMap<Database, Internals>();

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

export async function openDatabase(cfg: DbConfig, log: Logger): Promise<Database> {
  return cfg.host === null ? openEmbedded(cfg, log) : openServer(cfg, cfg.host, log);
}

async function openServer(cfg: DbConfig, host: string, log: Logger): Promise<Database> {
  const base = { host, port: cfg.port, user: cfg.user };
  const registryTarget: DbTarget = { ...base, database: cfg.registryName };
  const opsTarget: DbTarget = { ...base, database: cfg.opsName };
  const shared = cfg.registryName === cfg.opsName;
  const opts = { password: cfg.password, ssl: cfg.ssl, max: cfg.poolSize };
  const registry = createClient({ ...registryTarget, ...opts }, log);
  const ops = shared ? registry : createClient({ ...opsTarget, ...opts }, log);
  const end = async () => {
    await registry.end({ timeout: 5 });
    if (ops !== registry) await ops.end({ timeout: 5 });
  };
  // Fail fast with a clear line when the server is unreachable; a missing database
  // is fine here because migrate creates it.
  for (const [client, target] of [[registry, registryTarget], [ops, opsTarget]] as const) {
    try {
      await client`select 1`;
    } catch (err) {
      if (errorCode(err) === '3D000') {
        log.info(`database "${target.database}" does not exist yet on ${hostPort(host, cfg.port)}; migrate will create it`);
        continue;
      }
      await end().catch(() => {});
      throw wrapDbError(err, target, 'cannot connect');
    }
  }
  const names = shared ? cfg.registryName : `{${cfg.registryName},${cfg.opsName}}`;
  let closed: Promise<void> | undefined;
  const db: Database = {
    registry,
    ops,
    embedded: false,
    describe: `postgres://${encodeURIComponent(cfg.user)}@${hostPort(host, cfg.port)}/${names}`,
    close: () => (closed ??= end()),
  };
  internals.set(db, { registryTarget, opsTarget });
  return db;
}

async function openEmbedded(cfg: DbConfig, log: Logger): Promise<Database> {
  log.warn(
    { dataDir: cfg.dataDir },
    `using the embedded PGlite database in ${cfg.dataDir}: a single-node development default; ` +
      'configure a PostgreSQL host for production, for several proxy nodes, or to share the ops database with services',
  );
  // PGlite has one backend; pglite-socket multiplexes connections message by message,
  // so two client connections interleave their Parse/Bind/Execute and can receive each
  // other's rows (verified with 0.2.17). One pooled connection avoids that; PGlite
  // executes one statement at a time anyway. maxConnections leaves room for reconnects.
  // Loaded only here: PGlite's WASM adds ~40 MiB to a process that uses PostgreSQL.
  const { startEmbedded } = await import('./embedded.ts');
  const emb: EmbeddedServer = await startEmbedded(cfg.dataDir, Math.max(cfg.poolSize, 1) + 2, log);
  const target: DbTarget = { host: emb.host, port: emb.port, user: 'postgres', database: 'postgres', embeddedDir: cfg.dataDir };
  const client = createClient({ ...target, password: '', ssl: false, max: 1 }, log);
  try {
    await client`select 1`;
  } catch (err) {
    await client.end({ timeout: 1 }).catch(() => {});
    await emb.stop().catch(() => {});
    throw wrapDbError(err, target, 'cannot connect');
  }
  log.info({ startMs: emb.startMs, port: emb.port }, 'embedded PGlite ready');
  let closed: Promise<void> | undefined;
  const db: Database = {
    registry: client,
    ops: client,
    embedded: true,
    describe: `embedded PGlite at ${cfg.dataDir} (${hostPort(emb.host, emb.port)})`,
    close: () =>
      (closed ??= (async () => {
        await client.end({ timeout: 5 });
        await emb.stop();
      })()),
  };
  internals.set(db, { registryTarget: target, opsTarget: target });
  return db;
}

function inner(db: Database): Internals {
  const i = internals.get(db);
  if (!i) throw new Error('db: not a Database returned by openDatabase()');
  return i;
}

export interface MigrationStatus {
  registry: RegistryState;
  ops: OpsState;
  /** the access-plane tables (authz/0001_initial) in the registry database */
  authz: AuthzState;
  /** all three are migrated to a state this proxy recognises */
  current: boolean;
  /** one line per 'foreign' finding */
  problems: string[];
}

/** Reads the ledgers; changes nothing. A database that does not exist counts as 'missing'. */
export async function migrationStatus(db: Database): Promise<MigrationStatus> {
  const { registryTarget, opsTarget } = inner(db);
  const ops = await detectOrMissing(db.ops, opsTarget, detectOps);
  const registry = await detectOrMissing(db.registry, registryTarget, detectRegistry);
  const authz = await detectOrMissing(db.registry, registryTarget, detectAuthz);
  const problems: string[] = [];
  if (ops.state === 'foreign') problems.push(foreignMessage('ops', opsTarget, ops.problem));
  if (registry.state === 'foreign') problems.push(foreignMessage('registry', registryTarget, registry.problem));
  if (authz.state === 'foreign') problems.push(foreignMessage('authz', registryTarget, authz.problem));
  return {
    registry: registry.state,
    ops: ops.state,
    authz: authz.state,
    current: registry.state === 'current' && authz.state === 'current' && (ops.state === '2.9' || ops.state === '2.8'),
    problems,
  };
}

async function detectOrMissing<S extends string>(
  sql: postgres.Sql,
  target: DbTarget,
  detect: (sql: postgres.Sql) => Promise<{ state: S; problem: string }>,
): Promise<{ state: S | 'missing'; problem: string; absent: boolean }> {
  try {
    return { ...(await detect(sql)), absent: false };
  } catch (err) {
    if (errorCode(err) === '3D000') return { state: 'missing', problem: '', absent: true };
    throw wrapDbError(err, target, 'cannot read the migration state');
  }
}

function foreignMessage(kind: 'ops' | 'registry' | 'authz', target: DbTarget, problem: string): string {
  const fix =
    kind === 'ops'
      ? 'restore the django_migrations rows of schema.md §2 to match the tables, or point the ops database setting at an empty database'
      : kind === 'authz'
        ? "restore the ('authz','0001_initial') ledger row, or drop the partial authz_* tables"
        : "restore the ('service','0001_initial') ledger row, or point the registry database setting at an empty database";
  return `${kind === 'authz' ? 'registry (access plane)' : kind} database, ${targetLabel(target)}: ${problem}; refusing to create or alter anything — ${fix}`;
}

export interface MigrationReport {
  /** databases created on the server (never in embedded mode) */
  createdDatabases: string[];
  registry: 'created' | 'present';
  ops: 'created' | 'present';
  /** the access-plane tables in the registry database */
  authz: 'created' | 'present';
  /** the ops state after migrate (an existing database keeps its state, whatever cfg.opsSchema says) */
  opsState: '2.9' | '2.8';
}

/**
 * Creates what is missing: the databases (server mode), then Part A (+C) on ops and
 * Part B on registry, each in one transaction under a cluster-wide advisory lock so
 * several nodes may run it at once. Never alters a database whose ledger says it is
 * migrated; throws a one-line DbError (touching nothing) for one it does not recognise.
 */
export async function migrate(cfg: DbConfig, db: Database, log: Logger): Promise<MigrationReport> {
  const { registryTarget, opsTarget } = inner(db);
  // Look before creating anything, so a foreign database stops us with nothing changed.
  const opsFound = await detectOrMissing(db.ops, opsTarget, detectOps);
  if (opsFound.state === 'foreign') throw new DbError(foreignMessage('ops', opsTarget, opsFound.problem), 'EFOREIGN');
  const regFound = await detectOrMissing(db.registry, registryTarget, detectRegistry);
  if (regFound.state === 'foreign') throw new DbError(foreignMessage('registry', registryTarget, regFound.problem), 'EFOREIGN');
  if (!regFound.absent) {
    const authzFound = await detectOrMissing(db.registry, registryTarget, detectAuthz);
    if (authzFound.state === 'foreign') throw new DbError(foreignMessage('authz', registryTarget, authzFound.problem), 'EFOREIGN');
  }

  const createdDatabases: string[] = [];
  const absent = [...new Set([...(regFound.absent ? [registryTarget.database] : []), ...(opsFound.absent ? [opsTarget.database] : [])])];
  if (absent.length > 0 && !db.embedded && cfg.host !== null) {
    createdDatabases.push(...(await createDatabases(cfg, cfg.host, absent, log)));
  }

  let ops;
  try {
    ops = await migrateOps(db.ops, cfg.opsSchema);
  } catch (err) {
    throw wrapDbError(err, opsTarget, 'ops migration failed');
  }
  if (ops.state !== '2.9' && ops.state !== '2.8') {
    // Changed under us between the first look and the lock (another writer).
    throw new DbError(foreignMessage('ops', opsTarget, ops.problem || `ops state is ${ops.state}`), 'EFOREIGN');
  }
  const opsState = ops.state;
  if (ops.created) {
    log.info({ database: opsTarget.database, opsState }, `created the ops tables (utilmeta ${opsState === '2.9' ? '2.9, migration 0006' : '≤ 2.8.1, migration 0005'})`);
  } else if (opsState !== cfg.opsSchema) {
    log.warn(
      { database: opsTarget.database, found: opsState, configured: cfg.opsSchema },
      `the ops database is already at the utilmeta ${opsState} state; leaving it as is (the configured ${cfg.opsSchema} applies only to new databases)`,
    );
  }

  let reg;
  try {
    reg = await migrateRegistry(db.registry, opsState);
  } catch (err) {
    throw wrapDbError(err, registryTarget, 'registry migration failed');
  }
  if (reg.state !== 'current') throw new DbError(foreignMessage('registry', registryTarget, reg.problem), 'EFOREIGN');
  if (reg.created) log.info({ database: registryTarget.database }, 'created the registry tables');

  let authz;
  try {
    authz = await migrateAuthz(db.registry);
  } catch (err) {
    throw wrapDbError(err, registryTarget, 'access-plane (authz) migration failed');
  }
  if (authz.state !== 'current') throw new DbError(foreignMessage('authz', registryTarget, authz.problem), 'EFOREIGN');
  if (authz.created) log.info({ database: registryTarget.database }, 'created the access-plane (authz) tables');

  return {
    createdDatabases,
    registry: reg.created ? 'created' : 'present',
    ops: ops.created ? 'created' : 'present',
    authz: authz.created ? 'created' : 'present',
    opsState,
  };
}

/**
 * CREATE DATABASE cannot run in a transaction, so nodes serialise on a session
 * advisory lock in the maintenance database and re-check; "already exists" from a
 * racing node outside the lock is tolerated too.
 */
async function createDatabases(cfg: DbConfig, host: string, names: string[], log: Logger): Promise<string[]> {
  const created: string[] = [];
  let lastErr: unknown;
  for (const maintenance of ['postgres', 'template1']) {
    const target: DbTarget = { host, port: cfg.port, user: cfg.user, database: maintenance };
    const sql = createClient({ ...target, password: cfg.password, ssl: cfg.ssl, max: 1 }, log);
    try {
      const conn = await sql.reserve();
      try {
        await conn`select pg_advisory_lock(${MIGRATE_LOCK_KEY}::bigint)`;
        try {
          for (const name of names) {
            const [row] = await conn<{ n: number }[]>`select count(*)::int as n from pg_database where datname = ${name}`;
            if (row!.n > 0) continue;
            try {
              await conn.unsafe(`CREATE DATABASE ${quoteIdent(name)}`);
              created.push(name);
              log.info({ database: name, host: hostPort(host, cfg.port) }, 'created database');
            } catch (err) {
              // 42P04 duplicate_database; 23505 when two CREATEs race on pg_database's index.
              const code = errorCode(err);
              if (code === '42P04' || code === '23505') continue;
              const e = wrapDbError(err, { ...target, database: name }, `cannot create database "${name}"`);
              if (code === '42501') e.message += `; create it as an administrator (CREATE DATABASE ${quoteIdent(name)} OWNER ${quoteIdent(cfg.user)}) or grant CREATEDB`;
              throw e;
            }
          }
        } finally {
          await conn`select pg_advisory_unlock(${MIGRATE_LOCK_KEY}::bigint)`.catch(() => {});
        }
      } finally {
        conn.release();
      }
      return created;
    } catch (err) {
      lastErr = err;
      if (errorCode(err) !== '3D000') break; // only a missing maintenance db is worth retrying
    } finally {
      await sql.end({ timeout: 5 });
    }
  }
  throw lastErr instanceof DbError ? lastErr : wrapDbError(lastErr, { host, port: cfg.port, user: cfg.user, database: 'postgres' }, 'cannot create databases');
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
