// src/db against the local PostgreSQL (127.0.0.1:5432, user postgres, trust) and
// an embedded PGlite in a temp dir. Every server test uses fresh umtest_* databases
// and drops them afterwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import pino from 'pino';
import { DB_DEFAULTS, DbError, migrate, migrationStatus, openDatabase, type Database, type DbConfig } from '../src/db/index.ts';

const PGHOST = process.env['UMTEST_PGHOST'] ?? '127.0.0.1';
const PGPORT = Number(process.env['UMTEST_PGPORT'] ?? 5432);
// The contract lives beside the repository (CI clones it next to shared/).
const SPEC = process.env['UTILMETA_SCHEMA_SQL'] ?? new URL('../../shared/spec/schema.sql', import.meta.url).pathname;
const SQL_DIR = new URL('../src/db/sql/', import.meta.url);

// ---------------------------------------------------------------- helpers

type LogLine = { level: number; msg: string; [k: string]: unknown };
function captureLogger() {
  const lines: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  return { log, lines };
}

const uniq = () => `umtest_${randomBytes(5).toString('hex')}`;

const admin = () => postgres({ host: PGHOST, port: PGPORT, user: 'postgres', database: 'postgres', max: 2, onnotice: () => {} });
const connect = (database: string) => postgres({ host: PGHOST, port: PGPORT, user: 'postgres', database, max: 2, onnotice: () => {} });

async function dbExists(name: string): Promise<boolean> {
  const a = admin();
  try {
    const [r] = await a<{ n: number }[]>`select count(*)::int as n from pg_database where datname = ${name}`;
    return r!.n === 1;
  } finally {
    await a.end();
  }
}

async function createDb(name: string): Promise<void> {
  const a = admin();
  try {
    await a.unsafe(`create database "${name}"`);
  } finally {
    await a.end();
  }
}

/** Drops databases after a test (terminating their connections first). */
function dropAfter(t: { after: (fn: () => Promise<void>) => void }, ...names: string[]): void {
  t.after(async () => {
    const a = admin();
    try {
      for (const n of names) {
        await a`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${n} and pid <> pg_backend_pid()`;
        await a.unsafe(`drop database if exists "${n}"`);
      }
    } finally {
      await a.end();
    }
  });
}

function specText(): string {
  return readFileSync(SPEC, 'utf8');
}

/** A part of schema.sql between its markers, as psql would run it (with BEGIN/COMMIT). */
function specPart(letter: 'A' | 'B' | 'C'): string {
  const lines = specText().split('\n');
  const from = lines.indexOf(`-- @@PART-${letter}-BEGIN@@`);
  const to = lines.indexOf(`-- @@PART-${letter}-END@@`);
  assert.ok(from >= 0 && to > from, `markers of part ${letter} in ${SPEC}`);
  let part = lines.slice(from, to + 1);
  if (letter === 'C') part = part.filter((l) => l !== '/*' && l !== '*/'); // Part C ships commented out
  return part.join('\n') + '\n';
}

function psql(database: string, sqlText: string): void {
  execFileSync('psql', ['-h', PGHOST, '-p', String(PGPORT), '-U', 'postgres', '-d', database, '-X', '-q', '-v', 'ON_ERROR_STOP=1'], {
    input: sqlText,
    env: { ...process.env, PGOPTIONS: '-c client_min_messages=warning' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** Builds a reference database from schema.sql parts with psql. */
async function reference(t: { after: (fn: () => Promise<void>) => void }, parts: Array<'A' | 'B' | 'C'>): Promise<string> {
  const name = uniq() + '_ref';
  await createDb(name);
  dropAfter(t, name);
  for (const p of parts) psql(name, specPart(p));
  return name;
}

interface Catalog {
  relations: unknown[];
  columns: unknown[];
  constraints: unknown[];
  indexes: unknown[];
}

async function catalog(database: string): Promise<Catalog> {
  const sql = connect(database);
  try {
    const relations = await sql`
      select relname, relkind from pg_class where relnamespace = 'public'::regnamespace and relname not like 'authz%' order by relname`;
    const columns = await sql`
      select table_name, column_name, ordinal_position, data_type, udt_name, character_maximum_length,
             numeric_precision, numeric_scale, is_nullable, column_default, is_identity, identity_generation
      from information_schema.columns where table_schema = 'public' and table_name not like 'authz%' order by table_name, ordinal_position`;
    const constraints = await sql`
      select conrelid::regclass::text as tbl, conname, contype, pg_get_constraintdef(oid) as def,
             condeferrable, condeferred
      from pg_constraint where connamespace = 'public'::regnamespace and conrelid::regclass::text not like 'authz%' order by tbl, conname`;
    const indexes = await sql`
      select tablename, indexname, indexdef from pg_indexes where schemaname = 'public' and tablename not like 'authz%' order by tablename, indexname`;
    const plain = (rows: readonly object[]) => rows.map((r) => ({ ...r }));
    return { relations: plain(relations), columns: plain(columns), constraints: plain(constraints), indexes: plain(indexes) };
  } finally {
    await sql.end();
  }
}

async function ledger(sqlOrDb: string | postgres.Sql): Promise<string[]> {
  const sql = typeof sqlOrDb === 'string' ? connect(sqlOrDb) : sqlOrDb;
  try {
    // The access-plane ledger row has its own tests (authz-schema.test.ts); schema.sql knows nothing of it.
    const rows = await sql<{ app: string; name: string }[]>`select app, name from django_migrations where app <> 'authz' order by id`;
    return rows.map((r) => `${r.app}.${r.name}`);
  } finally {
    if (typeof sqlOrDb === 'string') await sql.end();
  }
}

async function ledgerFull(database: string): Promise<unknown[]> {
  const sql = connect(database);
  try {
    return (await sql`select id, app, name, applied from django_migrations where app <> 'authz' order by id`).map((r) => ({ ...r }));
  } finally {
    await sql.end();
  }
}

async function supervisorColumns(sql: postgres.Sql): Promise<string[]> {
  const rows = await sql<{ column_name: string }[]>`
    select column_name from information_schema.columns
    where table_schema = current_schema() and table_name = 'utilmeta_supervisor'`;
  return rows.map((r) => r.column_name);
}

const OPS_29 = [
  'contenttypes.0001_initial',
  'contenttypes.0002_remove_content_type_name',
  'ops.0001_initial',
  'ops.0002_servicelog_access_token_servicelog_endpoint_ident_and_more',
  'ops.0003_aggregationlog',
  'ops.0004_alter_accesstoken_subject_alter_accesstoken_token_id_and_more',
  'ops.0005_remove_resource_deleted_querylog_model_and_more',
  'ops.0006_rename_data_alertlog_details_and_more',
];
const OPS_28 = OPS_29.slice(0, 7);
const REG_29 = [...OPS_29, 'service.0001_initial'];
const REG_28 = [...OPS_28, 'service.0001_initial'];

function serverCfg(base: string, over: Partial<DbConfig> = {}): DbConfig {
  return { ...DB_DEFAULTS, host: PGHOST, port: PGPORT, registryName: base, opsName: `${base}_ops`, poolSize: 4, ...over };
}

async function withDb<T>(cfg: DbConfig, log: pino.Logger, fn: (db: Database) => Promise<T>): Promise<T> {
  const db = await openDatabase(cfg, log);
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

const specAvailable = existsSync(SPEC);
// A missing spec is a failure, not a skip: these tests compare our DDL with it.
if (!specAvailable) throw new Error(`spec not found at ${SPEC} (set UTILMETA_SCHEMA_SQL)`);
const needSpec = {};

// ---------------------------------------------------------------- tests

test('src/db/sql files are schema.sql parts A/B/C verbatim (without BEGIN/COMMIT, C uncommented)', needSpec, () => {
  const strip = (s: string) => s.split('\n').filter((l) => l !== 'BEGIN;' && l !== 'COMMIT;').join('\n');
  for (const [letter, file] of [['A', 'part_a_ops.sql'], ['B', 'part_b_registry.sql'], ['C', 'part_c_ops_0005.sql']] as const) {
    const ours = readFileSync(new URL(file, SQL_DIR), 'utf8');
    assert.equal(ours, strip(specPart(letter)), `${file} differs from schema.sql part ${letter}`);
    assert.doesNotMatch(ours, /^(BEGIN|COMMIT);$/m);
  }
});

test('migrate creates both databases; catalog and ledger equal schema.sql (2.9)', needSpec, async (t) => {
  const base = uniq();
  dropAfter(t, base, `${base}_ops`);
  const cfg = serverCfg(base);
  const { log } = captureLogger();
  await withDb(cfg, log, async (db) => {
    assert.equal(db.embedded, false);
    assert.equal(db.describe, `postgres://postgres@${PGHOST}:${PGPORT}/{${base},${base}_ops}`);
    assert.deepEqual(await migrationStatus(db), { registry: 'missing', ops: 'missing', authz: 'missing', current: false, problems: [] });

    const report = await migrate(cfg, db, log);
    assert.deepEqual({ ...report, createdDatabases: [...report.createdDatabases].sort() }, {
      createdDatabases: [base, `${base}_ops`].sort(),
      registry: 'created',
      ops: 'created',
      authz: 'created',
      opsState: '2.9',
    });
    assert.deepEqual(await migrationStatus(db), { registry: 'current', ops: '2.9', authz: 'current', current: true, problems: [] });
    // The same clients work once the databases exist (they failed with 3D000 at open).
    assert.deepEqual(await ledger(db.ops), OPS_29);
    assert.deepEqual(await ledger(db.registry), REG_29);
  });

  const refA = await reference(t, ['A']);
  const refB = await reference(t, ['B']);
  const [opsCat, refACat, regCat, refBCat] = await Promise.all([catalog(`${base}_ops`), catalog(refA), catalog(base), catalog(refB)]);
  assert.ok(refACat.columns.length > 300 && refACat.indexes.length > 50, 'reference ops catalog is not trivially empty');
  assert.ok(refBCat.columns.length > 40, 'reference registry catalog is not trivially empty');
  assert.deepEqual(opsCat, refACat);
  assert.deepEqual(regCat, refBCat);
  assert.deepEqual(await ledger(refA), OPS_29);
  assert.deepEqual(await ledger(refB), REG_29);
});

test('opsSchema 2.8 on new databases: Part A + Part C catalog, no 0006 ledger row anywhere', needSpec, async (t) => {
  const base = uniq();
  dropAfter(t, base, `${base}_ops`);
  const cfg = serverCfg(base, { opsSchema: '2.8' });
  const { log } = captureLogger();
  await withDb(cfg, log, async (db) => {
    const report = await migrate(cfg, db, log);
    assert.equal(report.opsState, '2.8');
    assert.equal(report.ops, 'created');
    assert.deepEqual(await ledger(db.ops), OPS_28);
    assert.deepEqual(await ledger(db.registry), REG_28);
    const cols = await supervisorColumns(db.ops);
    for (const c of ['aggregate_settings', 'task_settings', 'operation_timeout']) assert.ok(cols.includes(c), `supervisor has ${c}`);
    for (const c of ['report_settings', 'default_timeout', 'last_heartbeat']) assert.ok(!cols.includes(c), `supervisor lacks ${c}`);
    const st = await migrationStatus(db);
    assert.equal(st.ops, '2.8');
    assert.equal(st.current, true);
  });
  const refAC = await reference(t, ['A', 'C']);
  const [ours, ref] = await Promise.all([catalog(`${base}_ops`), catalog(refAC)]);
  assert.ok(ref.relations.some((r) => (r as { relname: string }).relname === 'utilmeta_alert_type'));
  assert.deepEqual(ours, ref);
});

test('migrate is idempotent: a second run creates and changes nothing', async (t) => {
  const base = uniq();
  dropAfter(t, base, `${base}_ops`);
  const cfg = serverCfg(base);
  const { log } = captureLogger();
  await withDb(cfg, log, (db) => migrate(cfg, db, log));
  const before = await Promise.all([catalog(base), catalog(`${base}_ops`), ledgerFull(base), ledgerFull(`${base}_ops`)]);
  const again = await withDb(cfg, log, (db) => migrate(cfg, db, log));
  assert.deepEqual(again, { createdDatabases: [], registry: 'present', ops: 'present', authz: 'present', opsState: '2.9' });
  const after = await Promise.all([catalog(base), catalog(`${base}_ops`), ledgerFull(base), ledgerFull(`${base}_ops`)]);
  assert.deepEqual(after, before);
  assert.equal((before[2] as unknown[]).length, 9);
});

test('an existing 2.8 ops database is detected and left alone although cfg says 2.9', needSpec, async (t) => {
  const base = uniq();
  dropAfter(t, base, `${base}_ops`);
  await createDb(`${base}_ops`);
  psql(`${base}_ops`, specPart('A') + specPart('C'));
  const before = await Promise.all([catalog(`${base}_ops`), ledgerFull(`${base}_ops`)]);
  const cfg = serverCfg(base, { opsSchema: '2.9' });
  const { log, lines } = captureLogger();
  await withDb(cfg, log, async (db) => {
    assert.deepEqual(await migrationStatus(db), { registry: 'missing', ops: '2.8', authz: 'missing', current: false, problems: [] });
    const report = await migrate(cfg, db, log);
    assert.deepEqual(report, { createdDatabases: [base], registry: 'created', ops: 'present', authz: 'created', opsState: '2.8' });
    // The registry ledger follows the ops state: no 0006 row.
    assert.deepEqual(await ledger(db.registry), REG_28);
  });
  assert.deepEqual(await Promise.all([catalog(`${base}_ops`), ledgerFull(`${base}_ops`)]), before);
  assert.ok(lines.some((l) => l.level === 40 && /already at the utilmeta 2\.8 state/.test(l.msg)), 'warns about the mismatch');
});

test('a foreign ops database (tables, no ledger) gives one clear line and nothing changes', needSpec, async (t) => {
  const base = uniq();
  dropAfter(t, base, `${base}_ops`);
  await createDb(`${base}_ops`);
  psql(`${base}_ops`, specPart('A') + 'DROP TABLE django_migrations;\n');
  const before = await catalog(`${base}_ops`);
  const cfg = serverCfg(base);
  const { log } = captureLogger();
  await withDb(cfg, log, async (db) => {
    const st = await migrationStatus(db);
    assert.equal(st.ops, 'foreign');
    assert.equal(st.current, false);
    assert.equal(st.problems.length, 1);
    await assert.rejects(migrate(cfg, db, log), (err: unknown) => {
      assert.ok(err instanceof DbError);
      assert.doesNotMatch(err.message, /\n/);
      assert.match(err.message, new RegExp(`${PGHOST.replace(/\./g, '\\.')}:${PGPORT}`));
      assert.match(err.message, new RegExp(`"${base}_ops"`));
      assert.match(err.message, /utilmeta_\w+.*no \('ops', …\) rows in django_migrations/);
      assert.match(err.message, /refusing/);
      return true;
    });
  });
  assert.deepEqual(await catalog(`${base}_ops`), before);
  assert.equal(await dbExists(base), false, 'the registry database was not created either');
});

test('an ops ledger that stops before 0005 is foreign too', needSpec, async (t) => {
  const base = uniq();
  dropAfter(t, base, `${base}_ops`);
  await createDb(`${base}_ops`);
  psql(`${base}_ops`, specPart('A') + "DELETE FROM django_migrations WHERE app = 'ops' AND name >= '0004';\n");
  const before = await ledgerFull(`${base}_ops`);
  const cfg = serverCfg(base);
  const { log } = captureLogger();
  await withDb(cfg, log, async (db) => {
    await assert.rejects(migrate(cfg, db, log), /ops ledger is incomplete \(missing 0004_.*0005_/);
  });
  assert.deepEqual(await ledgerFull(`${base}_ops`), before);
});

test('a foreign registry database is refused before anything is created', async (t) => {
  const base = uniq();
  dropAfter(t, base, `${base}_ops`);
  await createDb(base);
  const s = connect(base);
  await s`create table utilmeta_service (id bigint primary key, name text)`;
  await s.end();
  const cfg = serverCfg(base);
  const { log } = captureLogger();
  await withDb(cfg, log, async (db) => {
    assert.equal((await migrationStatus(db)).registry, 'foreign');
    await assert.rejects(migrate(cfg, db, log), (err: unknown) => {
      assert.ok(err instanceof DbError);
      assert.match(err.message, new RegExp(`^registry database, PostgreSQL at .*"${base}".*utilmeta_service.*service', '0001_initial'`));
      assert.doesNotMatch(err.message, /\n/);
      return true;
    });
  });
  assert.equal(await dbExists(`${base}_ops`), false);
});

test('three nodes migrating fresh databases at once: all succeed, one set of ledger rows', async (t) => {
  const base = uniq();
  dropAfter(t, base, `${base}_ops`);
  const cfg = serverCfg(base);
  const { log } = captureLogger();
  const dbs = await Promise.all([1, 2, 3].map(() => openDatabase(cfg, log)));
  try {
    const reports = await Promise.all(dbs.map((db) => migrate(cfg, db, log)));
    assert.equal(reports.filter((r) => r.ops === 'created').length, 1);
    assert.equal(reports.filter((r) => r.registry === 'created').length, 1);
    assert.deepEqual(reports.flatMap((r) => r.createdDatabases).sort(), [base, `${base}_ops`].sort());
    assert.ok(reports.every((r) => r.opsState === '2.9'));
    assert.deepEqual(await ledger(`${base}_ops`), OPS_29);
    assert.deepEqual(await ledger(base), REG_29);
  } finally {
    await Promise.all(dbs.map((db) => db.close()));
  }
});

test('an unreachable server is one clear line naming host, port and database', async () => {
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  const { log } = captureLogger();
  await assert.rejects(openDatabase(serverCfg('umtest_nowhere', { host: '127.0.0.1', port }), log), (err: unknown) => {
    assert.ok(err instanceof DbError);
    assert.equal(err.code, 'ECONNREFUSED');
    assert.match(err.message, new RegExp(`^cannot connect: PostgreSQL at 127\\.0\\.0\\.1:${port}, database "umtest_nowhere"`));
    assert.match(err.message, /connection refused/);
    assert.doesNotMatch(err.message, /\n/);
    return true;
  });
});

test('embedded PGlite: migrate, write, close, reopen from the same dir and read it back', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'umtest-pglite-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cfg: DbConfig = { ...DB_DEFAULTS, host: null, dataDir: dir, poolSize: 4 };
  const { log, lines } = captureLogger();

  let t0 = performance.now();
  const db = await openDatabase(cfg, log);
  const firstStart = Math.round(performance.now() - t0);
  let id: string;
  try {
    assert.equal(db.embedded, true);
    assert.equal(db.registry, db.ops);
    assert.match(db.describe, new RegExp(`^embedded PGlite at ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(127\\.0\\.0\\.1:\\d+\\)$`));
    assert.ok(lines.some((l) => l.level === 40 && /single-node development default/.test(l.msg)), 'warns that embedded is dev-only');
    await assert.rejects(openDatabase(cfg, log), /already open in this process/);

    const report = await migrate(cfg, db, log);
    assert.deepEqual(report, { createdDatabases: [], registry: 'created', ops: 'created', authz: 'created', opsState: '2.9' });
    // One database holds both parts: one ledger, no duplicated rows.
    assert.deepEqual(await ledger(db.registry), REG_29);
    assert.deepEqual(await migrationStatus(db), { registry: 'current', ops: '2.9', authz: 'current', current: true, problems: [] });
    const [tz] = await db.registry<{ tz: string }[]>`select current_setting('TimeZone') as tz`;
    assert.equal(tz!.tz, 'UTC');

    const [row] = await db.registry<{ id: string }[]>`
      insert into utilmeta_service (name, node_id, base_url, ops_api, routes, public, created_time, data)
      values ('demo', null, null, null, null, false, ${new Date('2026-01-02T03:04:05.678Z')}, ${db.registry.json({ a: 1 })})
      returning id`;
    id = row!.id;
    assert.equal(typeof id, 'string', 'int8 stays a string');
    // Concurrent distinct statements must each get their own rows back.
    const got = await Promise.all(Array.from({ length: 40 }, (_, i) => db.registry.unsafe(`select $1::int as v, ${i} as k`, [i])));
    got.forEach((r, i) => assert.deepEqual({ ...r[0] }, { v: i, k: i }));
  } finally {
    await db.close();
  }
  assert.equal(existsSync(join(dir, 'utilmeta-proxy.lock')), false, 'lock file removed on close');

  t0 = performance.now();
  const again = await openDatabase(cfg, log);
  const reopen = Math.round(performance.now() - t0);
  try {
    const rows = await again.registry<{ id: string; name: string; created_time: Date; data: unknown }[]>`
      select id, name, created_time, data from utilmeta_service`;
    assert.equal(rows.length, 1);
    assert.deepEqual({ ...rows[0] }, { id, name: 'demo', created_time: new Date('2026-01-02T03:04:05.678Z'), data: { a: 1 } });
    assert.deepEqual(await migrate(cfg, again, log), { createdDatabases: [], registry: 'present', ops: 'present', authz: 'present', opsState: '2.9' });
    assert.deepEqual(await ledger(again.registry), REG_29);
  } finally {
    await again.close();
  }
  t.diagnostic(`embedded open: first (initdb) ${firstStart} ms, reopen ${reopen} ms`);
});

test('embedded PGlite with opsSchema 2.8: one ledger without 0006, 0005-shaped supervisor', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'umtest-pglite-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cfg: DbConfig = { ...DB_DEFAULTS, host: null, dataDir: dir, opsSchema: '2.8' };
  const { log } = captureLogger();
  await withDb(cfg, log, async (db) => {
    assert.deepEqual(await migrate(cfg, db, log), { createdDatabases: [], registry: 'created', ops: 'created', authz: 'created', opsState: '2.8' });
    assert.deepEqual(await ledger(db.registry), REG_28);
    const cols = await supervisorColumns(db.ops);
    assert.ok(cols.includes('aggregate_settings') && cols.includes('task_settings') && !cols.includes('report_settings'));
    assert.deepEqual(await migrationStatus(db), { registry: 'current', ops: '2.8', authz: 'current', current: true, problems: [] });
  });
});
