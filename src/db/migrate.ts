// Schema creation and detection. Python services decide whether to create tables
// only from django_migrations rows (schema.md §2), so the ledger is the contract:
// we create the schema.sql DDL for missing databases and never alter one whose
// ledger says it is migrated.
import { readFileSync } from 'node:fs';
import type postgres from 'postgres';

export const OPS_0006 = '0006_rename_data_alertlog_details_and_more';

/** Ops migrations known to this proxy, in order (utilmeta-py ops/migrations). */
export const OPS_MIGRATIONS = [
  '0001_initial',
  '0002_servicelog_access_token_servicelog_endpoint_ident_and_more',
  '0003_aggregationlog',
  '0004_alter_accesstoken_subject_alter_accesstoken_token_id_and_more',
  '0005_remove_resource_deleted_querylog_model_and_more',
  OPS_0006,
] as const;

export const SERVICE_MIGRATIONS = ['0001_initial'] as const;

/** Access-plane migrations (ledger app 'authz'), applied to the registry database. */
export const AUTHZ_MIGRATIONS = ['0001_initial'] as const;

/** Tables authz/0001_initial creates (all in the registry database). */
export const AUTHZ_TABLES = [
  'authz_state', 'authz_org', 'authz_user', 'authz_org_user', 'authz_user_sso', 'authz_department',
  'authz_department_user', 'authz_role', 'authz_role_child', 'authz_role_user', 'authz_project',
  'authz_role_project', 'authz_app', 'authz_service', 'authz_api', 'authz_service_auth', 'authz_grant',
  'authz_grant_request', 'authz_access_key', 'authz_token', 'authz_revoked_jti', 'authz_event',
];

/** Tables Part A (or A + C) creates; any of them without ledger rows means "foreign". */
export const OPS_TABLES = [
  'utilmeta_supervisor', 'utilmeta_access_token', 'utilmeta_resource', 'utilmeta_worker',
  'utilmeta_worker_monitor', 'utilmeta_version_log', 'utilmeta_alert_log', 'utilmeta_service_log',
  'utilmeta_server_monitor', 'utilmeta_request_log', 'utilmeta_query_log', 'utilmeta_instance_monitor',
  'utilmeta_database_monitor', 'utilmeta_database_connection', 'utilmeta_cache_monitor',
  'utilmeta_aggregation_log', 'utilmeta_alert_type',
];
export const REGISTRY_TABLES = ['utilmeta_service', 'utilmeta_service_name_record', 'utilmeta_instance', 'django_content_type'];

/** pg_advisory_xact_lock key shared by all proxy nodes ("umproxy1" as int8). */
export const MIGRATE_LOCK_KEY = '8461542911697778993';

const sqlFile = (name: string) => readFileSync(new URL(`./sql/${name}`, import.meta.url), 'utf8');
let sqlCache: { a: string; b: string; c: string } | undefined;
let authzCache: string | undefined;
/** authz/0001_initial: DDL, triggers and its own ledger row. */
export function authzSql(): string {
  return (authzCache ??= sqlFile('authz_0001.sql'));
}
/** schema.sql Part A / B / C (C uncommented), verbatim minus their BEGIN/COMMIT. */
export function schemaSql(): { a: string; b: string; c: string } {
  sqlCache ??= { a: sqlFile('part_a_ops.sql'), b: sqlFile('part_b_registry.sql'), c: sqlFile('part_c_ops_0005.sql') };
  return sqlCache;
}

export type OpsState = '2.9' | '2.8' | 'missing' | 'foreign';
export type RegistryState = 'current' | 'missing' | 'foreign';
export type AuthzState = 'current' | 'missing' | 'foreign';
export interface Detected<S> {
  state: S;
  /** Why a state is 'foreign' (empty otherwise). */
  problem: string;
}

type Q = postgres.Sql | postgres.TransactionSql;

async function ledgerNames(sql: Q, app: string): Promise<string[] | null> {
  // Django finds django_migrations through search_path, so do we.
  const [t] = await sql<{ ok: boolean }[]>`select to_regclass('django_migrations') is not null as ok`;
  if (!t!.ok) return null;
  const rows = await sql<{ name: string }[]>`select name from django_migrations where app = ${app} order by id`;
  return rows.map((r) => r.name);
}

async function visibleTables(sql: Q, names: string[]): Promise<string[]> {
  const rows = await sql<{ relname: string }[]>`
    select c.relname from pg_catalog.pg_class c
    where c.relkind in ('r', 'p') and c.relname = any(${names}) and pg_catalog.pg_table_is_visible(c.oid)
    order by c.relname`;
  return rows.map((r) => r.relname);
}

async function columnsOf(sql: Q, table: string): Promise<Set<string>> {
  const rows = await sql<{ attname: string }[]>`
    select a.attname from pg_catalog.pg_attribute a
    where a.attrelid = to_regclass(${table}) and a.attnum > 0 and not a.attisdropped`;
  return new Set(rows.map((r) => r.attname));
}

const list = (xs: string[], n = 4) => (xs.length > n ? `${xs.slice(0, n).join(', ')}, … (${xs.length})` : xs.join(', '));

export async function detectOps(sql: Q): Promise<Detected<OpsState>> {
  const names = (await ledgerNames(sql, 'ops')) ?? [];
  const tables = await visibleTables(sql, OPS_TABLES);
  if (names.length === 0) {
    if (tables.length === 0) return { state: 'missing', problem: '' };
    return { state: 'foreign', problem: `has ops tables (${list(tables)}) but no ('ops', …) rows in django_migrations` };
  }
  const unknown = names.filter((n) => !(OPS_MIGRATIONS as readonly string[]).includes(n));
  if (unknown.length > 0) {
    return { state: 'foreign', problem: `its django_migrations has ops migrations this proxy does not know (${list(unknown)}), i.e. a newer utilmeta migrated it` };
  }
  const has = new Set(names);
  const through5 = OPS_MIGRATIONS.slice(0, 5).every((n) => has.has(n));
  if (!through5) {
    const missing = OPS_MIGRATIONS.slice(0, 5).filter((n) => !has.has(n));
    return { state: 'foreign', problem: `its ops ledger is incomplete (missing ${list(missing)}); an older or interrupted utilmeta migration` };
  }
  const state = has.has(OPS_0006) ? '2.9' : '2.8';
  // Cheap sanity check that the recorded state is really the schema (a 0006 row on a
  // 0005-shaped schema breaks 2.9 services at query time, schema.md §2).
  const cols = await columnsOf(sql, 'utilmeta_supervisor');
  const want = state === '2.9' ? 'report_settings' : 'aggregate_settings';
  if (!tables.includes('utilmeta_resource') || !cols.has(want)) {
    return { state: 'foreign', problem: `its ledger says ops ${state === '2.9' ? '0006' : '0005'} but utilmeta_supervisor.${want} or utilmeta_resource is missing` };
  }
  return { state, problem: '' };
}

export async function detectRegistry(sql: Q): Promise<Detected<RegistryState>> {
  const names = (await ledgerNames(sql, 'service')) ?? [];
  const tables = await visibleTables(sql, REGISTRY_TABLES);
  if (names.length === 0) {
    if (tables.length === 0) return { state: 'missing', problem: '' };
    return { state: 'foreign', problem: `has registry tables (${list(tables)}) but no ('service', '0001_initial') row in django_migrations` };
  }
  const unknown = names.filter((n) => !(SERVICE_MIGRATIONS as readonly string[]).includes(n));
  if (unknown.length > 0) {
    return { state: 'foreign', problem: `its django_migrations has service migrations this proxy does not know (${list(unknown)})` };
  }
  const need = REGISTRY_TABLES.slice(0, 3).filter((t) => !tables.includes(t));
  if (!names.includes('0001_initial') || need.length > 0) {
    return { state: 'foreign', problem: `its ledger records service migrations but tables are missing (${list(need)})` };
  }
  return { state: 'current', problem: '' };
}

/**
 * Part A (+ Part C for 2.8) on a locked transaction; creates only when missing.
 * Returns what it found (or created).
 */
export async function migrateOps(sql: postgres.Sql, want: '2.9' | '2.8'): Promise<{ created: boolean; state: OpsState; problem: string }> {
  return sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${MIGRATE_LOCK_KEY}::bigint)`;
    const found = await detectOps(tx);
    if (found.state !== 'missing') return { created: false, ...found };
    const { a, c } = schemaSql();
    await tx.unsafe(a);
    if (want === '2.8') await tx.unsafe(c); // also deletes the 0006 ledger row
    return { created: true, state: want, problem: '' };
  });
}

/**
 * Part B on a locked transaction. The ops rows of its ledger must agree with the
 * ops state: at 2.8 it must not claim 0006 (and in a shared database the ops rows
 * are the ops ledger itself, which Part B's NOT EXISTS insert leaves alone).
 */
export async function migrateRegistry(sql: postgres.Sql, opsState: '2.9' | '2.8'): Promise<{ created: boolean; state: RegistryState; problem: string }> {
  return sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${MIGRATE_LOCK_KEY}::bigint)`;
    const found = await detectRegistry(tx);
    if (found.state !== 'missing') return { created: false, ...found };
    const had0006 = ((await ledgerNames(tx, 'ops')) ?? []).includes(OPS_0006);
    await tx.unsafe(schemaSql().b);
    if (opsState === '2.8' && !had0006) {
      await tx`delete from django_migrations where app = 'ops' and name = ${OPS_0006}`;
    }
    return { created: true, state: 'current', problem: '' };
  });
}

export async function detectAuthz(sql: Q): Promise<Detected<AuthzState>> {
  const names = (await ledgerNames(sql, 'authz')) ?? [];
  const tables = await visibleTables(sql, AUTHZ_TABLES);
  if (names.length === 0) {
    if (tables.length === 0) return { state: 'missing', problem: '' };
    return { state: 'foreign', problem: `has access-plane tables (${list(tables)}) but no ('authz', '0001_initial') row in django_migrations` };
  }
  const unknown = names.filter((n) => !(AUTHZ_MIGRATIONS as readonly string[]).includes(n));
  if (unknown.length > 0) {
    return { state: 'foreign', problem: `its django_migrations has authz migrations this proxy does not know (${list(unknown)}), i.e. a newer proxy migrated it` };
  }
  const need = AUTHZ_TABLES.filter((t) => !tables.includes(t));
  if (need.length > 0) {
    return { state: 'foreign', problem: `its ledger records authz migrations but tables are missing (${list(need)})` };
  }
  return { state: 'current', problem: '' };
}

/**
 * authz/0001_initial on a locked transaction, after the registry tables (it
 * references utilmeta_service); creates only when missing.
 */
export async function migrateAuthz(sql: postgres.Sql): Promise<{ created: boolean; state: AuthzState; problem: string }> {
  return sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${MIGRATE_LOCK_KEY}::bigint)`;
    const found = await detectAuthz(tx);
    if (found.state !== 'missing') return { created: false, ...found };
    await tx.unsafe(authzSql());
    return { created: true, state: 'current', problem: '' };
  });
}
