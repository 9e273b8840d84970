// The `utilmeta_supervisor` row and the ops rows tied to it, written the way UtilMeta's Django
// code writes them (schema.md §3-§4), so Python services sharing the ops database see exactly
// what they would have written themselves:
// * every column in INSERTs, with the app defaults; `created_time` = now (aware UTC);
// * JSON sent as `'…'::jsonb` text produced by Python-compatible dumps; None → SQL NULL;
// * int8 ids handled as strings; cascades emulated in one transaction (no DB ON DELETE rules);
// * both ops schema states: 2.8 (migration 0005: operation_timeout / aggregate_settings /
//   task_settings, AlertType) and 2.9 (0006: default_timeout / report_settings / last_heartbeat,
//   AlertLog with service / node_id / supervisor_id).
//
// Sources: `py:utilmeta/ops/spv/connect.py` (save_supervisor, update_service_supervisor),
// `py:utilmeta/ops/spv/resources.py` (save_resources, update_supervisor_service, sync),
// `py:utilmeta/ops/models.py` (Supervisor.filter, supervisor_related_models / key models).

import type postgres from 'postgres';
import type { Logger } from 'pino';
import { dumpsJs } from '../pyjson/index.ts';
import { textProblem } from '../core/text.ts';
import { decodeKeyText, type ResourceData, type ResourcesData, type SupervisorData } from './client.ts';

type Sql = postgres.Sql<Record<string, unknown>> | postgres.TransactionSql<Record<string, unknown>>;
// postgres.js' own Sql type, whatever its type parameter.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnySql = postgres.Sql<any>;

export type OpsSchemaVersion = '2.8' | '2.9';

export const MIGRATION_0006 = '0006_rename_data_alertlog_details_and_more';

/** A `utilmeta_supervisor` row, normalized to the 2.9 column names on both schema states. */
export interface SupervisorRow {
  id: string;
  service: string;
  node_id: string | null;
  ident: string | null;
  backup_urls: string[];
  base_url: string;
  local: boolean;
  public_key: string | null;
  init_key: string | null;
  created_time: Date;
  ops_api: string;
  url: string | null;
  /** numeric(8,3) as text; `operation_timeout` at 2.8. */
  default_timeout: string | null;
  heartbeat_interval: number | null;
  latency: number | null;
  settings: unknown;
  connected: boolean;
  disabled: boolean;
  alert_settings: unknown;
  /** `aggregate_settings` at 2.8. */
  report_settings: unknown;
  data: unknown;
  resources_etag: string | null;
  /** Always null at 2.8 (no such column). */
  last_heartbeat: Date | null;
  /** Only at 2.8. */
  task_settings?: unknown;
}

export interface SaveSupervisorResult {
  ok: boolean;
  /** 200 on success (also when the row already had a node id), else 400 / 404 / 409. */
  status: number;
  message: string;
  row: SupervisorRow | null;
  /** False when the row was returned unchanged (it already had a node id). */
  updated: boolean;
}

export interface CascadeResult {
  deleted: boolean;
  accessTokens: number;
  alertLogs: number;
  serviceLogsDetached: number;
  aggregationLogsDetached: number;
}

export interface SaveResourcesResult {
  updated: number;
  adopted: number;
  created: number;
  softDeleted: number;
  relinked: number;
}

const COLUMNS_29 =
  'id, service, node_id, ident, backup_urls, base_url, local, public_key, init_key, created_time, ops_api, url, ' +
  'default_timeout, heartbeat_interval, latency, settings, connected, disabled, alert_settings, report_settings, data, ' +
  'resources_etag, last_heartbeat';
const COLUMNS_28 =
  'id, service, node_id, ident, backup_urls, base_url, local, public_key, init_key, created_time, ops_api, url, ' +
  'operation_timeout AS default_timeout, heartbeat_interval, latency, settings, connected, disabled, alert_settings, ' +
  'aggregate_settings AS report_settings, data, resources_etag, NULL::timestamptz AS last_heartbeat, task_settings';

/** `supervisor_related_models` (table, has a supervisor FK) per schema state (models.py:1076-1089; 2.8.1 :1047-1059). */
const RELATED: Record<OpsSchemaVersion, ReadonlyArray<readonly [string, boolean]>> = {
  '2.9': [
    ['utilmeta_resource', false],
    ['utilmeta_alert_log', true],
    ['utilmeta_service_log', true],
    ['utilmeta_request_log', false],
    ['utilmeta_version_log', false],
    ['utilmeta_aggregation_log', true],
  ],
  '2.8': [
    ['utilmeta_resource', false],
    ['utilmeta_alert_type', false],
    ['utilmeta_service_log', true],
    ['utilmeta_request_log', false],
    ['utilmeta_version_log', false],
    ['utilmeta_aggregation_log', true],
  ],
};

/** JSON for a jsonb column; None/undefined → SQL NULL (schema.md §3.6). */
function jsonText(v: unknown): string | null {
  return v === undefined || v === null ? null : dumpsJs(v);
}

/** Node public keys are stored as JWK JSON: Python services' decode_token cannot read base64 (spec §4.4). */
function normalizePublicKey(pk: string | null | undefined): string | null {
  if (pk === null || pk === undefined || pk === '') return null;
  try {
    return decodeKeyText(pk);
  } catch {
    return pk;
  }
}

function isPlainObject(v: unknown): boolean {
  return (typeof v === 'object' && v !== null && !Array.isArray(v)) || v instanceof Map;
}

/** Detects the ops schema state from the supervisor table's columns (what our queries depend on). */
export async function detectOpsSchema(sql: AnySql): Promise<OpsSchemaVersion> {
  const cols = await sql<{ column_name: string }[]>`
    SELECT column_name FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = 'utilmeta_supervisor'`;
  const names = new Set(cols.map((c) => c.column_name));
  if (names.has('report_settings')) return '2.9';
  if (names.has('aggregate_settings')) return '2.8';
  throw new Error('ops database has no utilmeta_supervisor table (or an unknown layout): run the ops migrations first');
}

/** True when the migration ledger records ops 0006 (the 2.9 state). Informational; detection uses the columns. */
export async function ledgerHas0006(sql: AnySql): Promise<boolean> {
  const rows = await sql`
    SELECT 1 FROM django_migrations WHERE app = 'ops' AND name = ${MIGRATION_0006} LIMIT 1`.catch(() => []);
  return rows.length > 0;
}

export interface SupervisorRepositoryOptions {
  /** Skip detection (tests, or when the caller already knows). */
  schema?: OpsSchemaVersion;
  now?: () => Date;
  log?: Logger;
}

/** init_key is a platform key (base64 of a JWK, a few hundred characters); anything far longer is not one. */
export const MAX_INIT_KEY_LENGTH = 4096;
/** public_key is a JWK (JSON or base64): same order of size as init_key. */
const MAX_PUBLIC_KEY_LENGTH = 8192;

/**
 * What utype's SupervisorData schema would reject before save_supervisor runs,
 * plus what PostgreSQL would refuse mid-transaction (U+0000): the message names
 * the field, or null when `data` can be saved. Runs before any SQL.
 */
export function supervisorDataProblem(data: SupervisorData): string | null {
  const d = data as unknown as Record<string, unknown>;
  const text = (name: string, max: number, opts: { required?: boolean; nullable?: boolean } = {}): string | null => {
    const v = d[name];
    if (v === undefined || v === null) return opts.required ? `SupervisorData.${name} is required` : null;
    if (opts.required && v === '') return `SupervisorData.${name} is required`;
    const p = textProblem(v, max);
    return p ? `SupervisorData.${name} ${p}` : null;
  };
  const problem =
    text('init_key', MAX_INIT_KEY_LENGTH, { required: true }) ??
    text('node_id', 40, { required: true }) ??
    text('ops_api', 200, { required: true }) ??
    text('ident', 20) ??
    text('url', 200) ??
    text('base_url', 200) ??
    text('public_key', MAX_PUBLIC_KEY_LENGTH);
  if (problem) return problem;
  const backup = data.backup_urls ?? [];
  if (!Array.isArray(backup) || backup.some((u) => typeof u !== 'string')) return 'SupervisorData.backup_urls must be a list of strings';
  for (const u of backup as string[]) {
    const p = textProblem(u, 200);
    if (p) return `SupervisorData.backup_urls entry ${p}`;
  }
  return null;
}

export class SupervisorRepository {
  private schemaP: Promise<OpsSchemaVersion> | undefined;
  private readonly now: () => Date;
  private readonly log?: Logger;

  constructor(
    readonly sql: AnySql,
    opts: SupervisorRepositoryOptions = {},
  ) {
    if (opts.schema) this.schemaP = Promise.resolve(opts.schema);
    this.now = opts.now ?? (() => new Date());
    this.log = opts.log;
  }

  /** The ops schema state, detected once. */
  schema(): Promise<OpsSchemaVersion> {
    if (!this.schemaP) {
      const p = detectOpsSchema(this.sql);
      // A failed detection (DB down, not migrated yet) is retried on the next call.
      p.catch(() => {
        if (this.schemaP === p) this.schemaP = undefined;
      });
      this.schemaP = p;
    }
    return this.schemaP;
  }

  /**
   * The select list for the detected state. Wrapped in an object because a postgres.js fragment
   * is thenable: returning it from an async function would execute it as a statement.
   */
  private async cols(): Promise<{ list: ReturnType<AnySql['unsafe']> }> {
    return { list: this.colsOf(this.sql, await this.schema()) };
  }

  private colsOf(tx: Sql, v: OpsSchemaVersion) {
    return tx.unsafe(v === '2.9' ? COLUMNS_29 : COLUMNS_28);
  }

  // ---- reads ---------------------------------------------------------------------------------

  async getById(id: string): Promise<SupervisorRow | null> {
    const rows = await this.sql<SupervisorRow[]>`SELECT ${(await this.cols()).list} FROM utilmeta_supervisor WHERE id = ${id}`;
    return rows[0] ?? null;
  }

  /** `Supervisor.filter(node_id=…)`: node_id set, not disabled, local or with a public key; ORDER BY id. */
  async filterByNode(nodeId: string): Promise<SupervisorRow[]> {
    return this.sql<SupervisorRow[]>`
      SELECT ${(await this.cols()).list} FROM utilmeta_supervisor
      WHERE node_id IS NOT NULL AND node_id = ${nodeId} AND disabled = false AND (local = true OR public_key IS NOT NULL)
      ORDER BY id`;
  }

  /** `Supervisor.filter(service=…, node_id=…).first()`: the row a resource sync uses (spec §3.6.3 step 1). */
  async findForSync(service: string, nodeId: string): Promise<SupervisorRow | null> {
    const rows = await this.sql<SupervisorRow[]>`
      SELECT ${(await this.cols()).list} FROM utilmeta_supervisor
      WHERE node_id IS NOT NULL AND node_id = ${nodeId} AND service = ${service}
        AND disabled = false AND (local = true OR public_key IS NOT NULL)
      ORDER BY id LIMIT 1`;
    return rows[0] ?? null;
  }

  /** Rows whose key may verify node tokens (§4.2): no `local` test, unlike Supervisor.filter. */
  async tokenSupervisors(nodeId: string): Promise<SupervisorRow[]> {
    return this.sql<SupervisorRow[]>`
      SELECT ${(await this.cols()).list} FROM utilmeta_supervisor
      WHERE node_id = ${nodeId} AND disabled = false AND public_key IS NOT NULL
      ORDER BY id`;
  }

  /** Every row passing Supervisor.filter (for the in-memory cache). */
  async listActive(): Promise<SupervisorRow[]> {
    return this.sql<SupervisorRow[]>`
      SELECT ${(await this.cols()).list} FROM utilmeta_supervisor
      WHERE node_id IS NOT NULL AND disabled = false AND (local = true OR public_key IS NOT NULL)
      ORDER BY id`;
  }

  /** Placeholder rows of a service waiting for the add_node handshake (node_id NULL, init_key set). */
  async findPending(service: string): Promise<SupervisorRow[]> {
    return this.sql<SupervisorRow[]>`
      SELECT ${(await this.cols()).list} FROM utilmeta_supervisor
      WHERE service = ${service} AND node_id IS NULL AND init_key IS NOT NULL
      ORDER BY id`;
  }

  // ---- writes --------------------------------------------------------------------------------

  /** `Supervisor.objects.create(service, base_url, init_key, ops_api)` with every other column at its default. */
  async createPlaceholder(p: { service: string; baseUrl: string; initKey: string; opsApi: string }): Promise<SupervisorRow> {
    const v = await this.schema();
    const now = this.now();
    const cols = this.colsOf(this.sql, v);
    const rows =
      v === '2.9'
        ? await this.sql<SupervisorRow[]>`
            INSERT INTO utilmeta_supervisor (service, node_id, ident, backup_urls, base_url, local, public_key, init_key,
              created_time, ops_api, url, default_timeout, heartbeat_interval, last_heartbeat, latency, connected, disabled,
              alert_settings, report_settings, settings, data, resources_etag)
            VALUES (${p.service}, NULL, NULL, '[]'::jsonb, ${p.baseUrl}, false, NULL, ${p.initKey},
              ${now}, ${p.opsApi}, NULL, NULL, NULL, NULL, NULL, false, false,
              '{}'::jsonb, '{}'::jsonb, '{}'::jsonb, '{}'::jsonb, NULL)
            RETURNING ${cols}`
        : await this.sql<SupervisorRow[]>`
            INSERT INTO utilmeta_supervisor (service, node_id, ident, backup_urls, base_url, local, public_key, init_key,
              created_time, ops_api, url, operation_timeout, heartbeat_interval, latency, connected, disabled,
              alert_settings, aggregate_settings, task_settings, settings, data, resources_etag)
            VALUES (${p.service}, NULL, NULL, '[]'::jsonb, ${p.baseUrl}, false, NULL, ${p.initKey},
              ${now}, ${p.opsApi}, NULL, NULL, NULL, NULL, false, false,
              '{}'::jsonb, '{}'::jsonb, '{}'::jsonb, '{}'::jsonb, '{}'::jsonb, NULL)
            RETURNING ${cols}`;
    return rows[0];
  }

  /**
   * UtilMeta's save_supervisor (spec §3.6.1 step 6), as a typed result instead of exceptions.
   * `rowId` restricts the match to one placeholder row (against the shared-init_key collision of
   * spec §6.18). Runs in one transaction with the matched row locked, so two concurrent callbacks
   * cannot both bind it.
   */
  async saveSupervisor(data: SupervisorData, opts: { rowId?: string } = {}): Promise<SaveSupervisorResult> {
    if (!data || (data.init_key as unknown) === undefined || data.init_key === null || data.init_key === '') {
      return { ok: false, status: 400, message: 'Missing init_key for supervisor to be saved', row: null, updated: false };
    }
    const problem = supervisorDataProblem(data);
    if (problem) return bad(problem);
    const backup = data.backup_urls ?? [];

    const v = await this.schema();
    return (await this.sql.begin(async (tx) => {
      const cols = this.colsOf(tx, v);
      const found = opts.rowId
        ? await tx<SupervisorRow[]>`
            SELECT ${cols} FROM utilmeta_supervisor WHERE init_key = ${data.init_key!} AND id = ${opts.rowId} FOR UPDATE`
        : await tx<SupervisorRow[]>`
            SELECT ${cols} FROM utilmeta_supervisor WHERE init_key = ${data.init_key!} ORDER BY id LIMIT 1 FOR UPDATE`;
      const row = found[0];
      if (!row || row.disabled) return { ok: false, status: 404, message: 'Supervisor not found or disabled', row: null, updated: false };
      if (row.node_id) return { ok: true, status: 200, message: 'already connected', row, updated: false };
      if (row.base_url !== data.base_url) return { ok: false, status: 409, message: 'Supervisor base_url conflicted', row, updated: false };
      const dup = await tx`
        SELECT 1 FROM utilmeta_supervisor WHERE base_url = ${row.base_url} AND node_id = ${data.node_id} LIMIT 1`;
      if (dup.length) {
        return { ok: false, status: 409, message: `Supervisor[${data.node_id}] at ${row.base_url} already exists`, row, updated: false };
      }
      const [saved] = await tx<SupervisorRow[]>`
        UPDATE utilmeta_supervisor SET
          ident = ${data.ident ?? null},
          node_id = ${data.node_id},
          public_key = ${normalizePublicKey(data.public_key)},
          backup_urls = ${dumpsJs(backup)}::text::jsonb,
          ops_api = ${data.ops_api},
          connected = true,
          url = ${data.url ?? null},
          local = ${data.local === true},
          init_key = NULL
        WHERE id = ${row.id}
        RETURNING ${cols}`;
      return { ok: true, status: 200, message: 'saved', row: saved, updated: true };
    })) as SaveSupervisorResult;

    function bad(message: string): SaveSupervisorResult {
      return { ok: false, status: 400, message, row: null, updated: false };
    }
  }

  /**
   * `Supervisor.delete()` with Django's emulated cascade (schema.md §3.3), in one transaction:
   * access tokens (CASCADE) and, at 2.9, alert logs (CASCADE) are deleted after their SET NULL
   * dependants are detached; service/aggregation logs get supervisor_id = NULL.
   */
  async deleteWithCascade(id: string): Promise<CascadeResult> {
    const v = await this.schema();
    return (await this.sql.begin(async (tx) => {
      // Locking the row makes concurrent inserts referencing it (FK KEY SHARE checks) wait for us.
      const [sup] = await tx`SELECT id FROM utilmeta_supervisor WHERE id = ${id} FOR UPDATE`;
      if (!sup) return { deleted: false, accessTokens: 0, alertLogs: 0, serviceLogsDetached: 0, aggregationLogsDetached: 0 };
      const tokens = (await tx<{ id: string }[]>`SELECT id FROM utilmeta_access_token WHERE issuer_id = ${id}`).map((r) => r.id);
      const alerts = v === '2.9' ? (await tx<{ id: string }[]>`SELECT id FROM utilmeta_alert_log WHERE supervisor_id = ${id}`).map((r) => r.id) : [];
      if (tokens.length) {
        await tx`UPDATE utilmeta_service_log SET access_token_id = NULL WHERE access_token_id = ANY(${tx.array(tokens, 20)})`;
      }
      if (alerts.length) {
        for (const t of ['utilmeta_service_log', 'utilmeta_request_log', 'utilmeta_query_log']) {
          await tx`UPDATE ${tx(t)} SET alert_id = NULL WHERE alert_id = ANY(${tx.array(alerts, 20)})`;
        }
      }
      const sl = await tx`UPDATE utilmeta_service_log SET supervisor_id = NULL WHERE supervisor_id = ${id}`;
      const al = await tx`UPDATE utilmeta_aggregation_log SET supervisor_id = NULL WHERE supervisor_id = ${id}`;
      if (tokens.length) await tx`DELETE FROM utilmeta_access_token WHERE id = ANY(${tx.array(tokens, 20)})`;
      if (alerts.length) await tx`DELETE FROM utilmeta_alert_log WHERE id = ANY(${tx.array(alerts, 20)})`;
      await tx`DELETE FROM utilmeta_supervisor WHERE id = ${id}`;
      return { deleted: true, accessTokens: tokens.length, alertLogs: alerts.length, serviceLogsDetached: sl.count, aggregationLogsDetached: al.count };
    })) as CascadeResult;
  }

  /**
   * update_service_supervisor (spec §3.6.1 step 8): rows of `service` without a node get
   * `node_id`, and the supervisor FK where the model has one. Returns rows updated per table.
   */
  async attachOrphans(service: string, nodeId: string, supervisorId: string | null): Promise<Record<string, number>> {
    if (!service || !nodeId) return {};
    const v = await this.schema();
    return (await this.sql.begin(async (tx) => {
      const out: Record<string, number> = {};
      for (const [table, hasFk] of RELATED[v]) {
        const r =
          hasFk && supervisorId !== null
            ? await tx`UPDATE ${tx(table)} SET node_id = ${nodeId}, supervisor_id = ${supervisorId} WHERE service = ${service} AND node_id IS NULL`
            : await tx`UPDATE ${tx(table)} SET node_id = ${nodeId} WHERE service = ${service} AND node_id IS NULL`;
        out[table] = r.count;
      }
      return out;
    })) as Record<string, number>;
  }

  /**
   * A node's service was renamed: rename its supervisor row(s), then update_supervisor_service
   * over the related models. Django's `.exclude(service=new)` also matches NULL services
   * (server resources), hence IS DISTINCT FROM.
   */
  async propagateRename(nodeId: string, newService: string): Promise<Record<string, number>> {
    if (!newService || !nodeId) return {};
    const v = await this.schema();
    return (await this.sql.begin(async (tx) => {
      const out: Record<string, number> = {};
      const s = await tx`UPDATE utilmeta_supervisor SET service = ${newService} WHERE node_id = ${nodeId} AND service <> ${newService}`;
      out.utilmeta_supervisor = s.count;
      for (const [table] of RELATED[v]) {
        const a = await tx`UPDATE ${tx(table)} SET service = ${newService} WHERE node_id = ${nodeId} AND service IS DISTINCT FROM ${newService}`;
        const b = await tx`UPDATE ${tx(table)} SET node_id = ${nodeId} WHERE service = ${newService} AND node_id IS NULL`;
        out[table] = a.count + b.count;
      }
      return out;
    })) as Record<string, number>;
  }

  /**
   * Stores what a 200 answer to POST /resources says about the supervisor, for both shapes
   * (spec §3.3): ≤2.8.1 `{url, resources, resources_etag}` → resources_etag and url when set;
   * 2.9 `{resources, supervisor: {...}}` → every key sent, when supervisor.node_id is this row's
   * (report_settings goes to aggregate_settings on a 2.8 schema). Returns the updated row.
   */
  async applySyncResult(row: SupervisorRow, result: ResourcesData | null | undefined): Promise<SupervisorRow> {
    if (!result || typeof result !== 'object') return row;
    const v = await this.schema();
    const sql = this.sql;
    const sets: ReturnType<AnySql>[] = [];
    const r = result as unknown as Record<string, unknown>;
    const spv = r.supervisor;
    if (spv && typeof spv === 'object' && !Array.isArray(spv)) {
      const s = spv as Record<string, unknown>;
      if (s.node_id !== row.node_id) {
        this.log?.warn({ rowNode: row.node_id, resultNode: s.node_id }, 'resources result names another node; supervisor fields not applied');
        return row;
      }
      if ('url' in s) sets.push(sql`url = ${typeof s.url === 'string' ? s.url : null}`);
      if ('resources_etag' in s) sets.push(sql`resources_etag = ${typeof s.resources_etag === 'string' ? s.resources_etag : null}`);
      if ('heartbeat_interval' in s) {
        const hi = s.heartbeat_interval == null ? null : Number(s.heartbeat_interval);
        sets.push(sql`heartbeat_interval = ${hi !== null && Number.isInteger(hi) && hi >= 0 ? hi : null}`);
      }
      // NOT NULL jsonb columns: a null (or non-object) value is ignored rather than violating the constraint.
      if (isPlainObject(s.settings)) sets.push(sql`settings = ${dumpsJs(s.settings)}::text::jsonb`);
      if (isPlainObject(s.alert_settings)) sets.push(sql`alert_settings = ${dumpsJs(s.alert_settings)}::text::jsonb`);
      if (isPlainObject(s.report_settings)) {
        const col = v === '2.9' ? 'report_settings' : 'aggregate_settings';
        sets.push(sql`${sql(col)} = ${dumpsJs(s.report_settings)}::text::jsonb`);
      }
    } else {
      if (typeof r.resources_etag === 'string' && r.resources_etag) sets.push(sql`resources_etag = ${r.resources_etag}`);
      if (typeof r.url === 'string' && r.url && r.url !== row.url) sets.push(sql`url = ${r.url}`);
    }
    if (!sets.length) return row;
    const joined = sets.reduce((acc, f) => sql`${acc}, ${f}`);
    const [updated] = await sql<SupervisorRow[]>`UPDATE utilmeta_supervisor SET ${joined} WHERE id = ${row.id} RETURNING ${this.colsOf(sql, v)}`;
    return updated ?? row;
  }

  /**
   * UtilMeta's save_resources (spec §3.6.3 step 4; `py:utilmeta/ops/spv/resources.py`), in one
   * transaction: upsert by remote_id among this node's rows; else adopt a local row with no
   * remote_id and the same type/ident (service, or NULL for servers; node or NULL); else insert.
   * Then soft-delete this node's rows missing from the list and re-link server_id through the
   * server's remote_id.
   */
  async saveResources(nodeId: string, service: string, resources: ResourceData[]): Promise<SaveResourcesResult> {
    if (!Array.isArray(resources)) throw new TypeError('resources must be a list of ResourceData');
    for (const [i, r] of resources.entries()) {
      for (const k of ['remote_id', 'type', 'ident', 'route'] as const) {
        if (typeof r?.[k] !== 'string') throw new TypeError(`resources[${i}].${k} must be a string`);
      }
    }
    const now = this.now();
    return (await this.sql.begin(async (tx) => {
      const out: SaveResourcesResult = { updated: 0, adopted: 0, created: 0, softDeleted: 0, relinked: 0 };
      const remoteMap = new Map<string, string>();
      for (const row of await tx<{ id: string; remote_id: string | null }[]>`
        SELECT id, remote_id FROM utilmeta_resource WHERE node_id = ${nodeId} ORDER BY id`) {
        if (row.remote_id !== null) remoteMap.set(row.remote_id, row.id);
      }
      const remotePks: string[] = [];
      const remoteServers = new Map<string, string>();
      for (const res of resources) {
        if (res.server_id) remoteServers.set(res.remote_id, String(res.server_id));
        remotePks.push(res.remote_id);
        const ref = typeof res.ref === 'string' ? res.ref : null;
        const data = jsonText(res.data) ?? '{}';
        const existing = remoteMap.get(res.remote_id);
        if (existing !== undefined) {
          await tx`
            UPDATE utilmeta_resource SET server_id = NULL, ident = ${res.ident}, route = ${res.route}, deleted_time = NULL,
              updated_time = ${now}, node_id = ${nodeId}, service = ${service}, remote_id = ${res.remote_id}, ref = ${ref},
              data = ${data}::text::jsonb
            WHERE id = ${existing}`;
          out.updated++;
          continue;
        }
        const local = res.type === 'server'
          ? await tx<{ id: string }[]>`
              SELECT id FROM utilmeta_resource
              WHERE (node_id IS NULL OR node_id = ${nodeId}) AND (service = ${service} OR service IS NULL)
                AND type = ${res.type} AND remote_id IS NULL AND ident = ${res.ident}
              ORDER BY id LIMIT 1`
          : await tx<{ id: string }[]>`
              SELECT id FROM utilmeta_resource
              WHERE (node_id IS NULL OR node_id = ${nodeId}) AND service = ${service}
                AND type = ${res.type} AND remote_id IS NULL AND ident = ${res.ident}
              ORDER BY id LIMIT 1`;
        if (local.length) {
          // The local row's data (written by the service) is kept and the platform's keys laid
          // over it: dict.update, which is what UtilMeta intends here.
          await tx`
            UPDATE utilmeta_resource SET server_id = NULL, ident = ${res.ident}, route = ${res.route}, deleted_time = NULL,
              updated_time = ${now}, node_id = ${nodeId}, service = ${service}, remote_id = ${res.remote_id}, ref = ${ref},
              data = CASE WHEN jsonb_typeof(data) = 'object' AND jsonb_typeof(${data}::text::jsonb) = 'object'
                          THEN data || ${data}::text::jsonb ELSE ${data}::text::jsonb END
            WHERE id = ${local[0].id}`;
          remoteMap.set(res.remote_id, local[0].id);
          out.adopted++;
          continue;
        }
        const created = await tx<{ id: string }[]>`
          INSERT INTO utilmeta_resource (service, node_id, type, ident, route, remote_id, created_time, data, deprecated,
            server_id, deleted_time, ref, updated_time)
          VALUES (${service}, ${nodeId}, ${res.type}, ${res.ident}, ${res.route}, ${res.remote_id}, ${now}, ${data}::text::jsonb,
            false, NULL, NULL, ${ref}, NULL)
          ON CONFLICT DO NOTHING
          RETURNING id`;
        if (created.length) {
          remoteMap.set(res.remote_id, created[0].id);
          out.created++;
        }
      }
      // Django's exclude(remote_id__in=…) also matches NULL remote ids. Rows already soft-deleted
      // keep their original deletion time.
      const del = await tx`
        UPDATE utilmeta_resource SET deleted_time = ${now}
        WHERE node_id = ${nodeId} AND deleted_time IS NULL
          AND (remote_id IS NULL OR NOT (remote_id = ANY(${tx.array(remotePks, 25)})))`;
      out.softDeleted = del.count;
      for (const [remoteId, serverRemoteId] of remoteServers) {
        const [server] = await tx<{ id: string }[]>`
          SELECT id FROM utilmeta_resource
          WHERE deleted_time IS NULL AND (node_id IS NULL OR node_id = ${nodeId}) AND type = 'server' AND remote_id = ${serverRemoteId}
          ORDER BY id LIMIT 1`;
        if (!server) continue;
        const r = await tx`
          UPDATE utilmeta_resource SET server_id = ${server.id}
          WHERE deleted_time IS NULL AND remote_id = ${remoteId} AND node_id = ${nodeId}`;
        out.relinked += r.count;
      }
      return out;
    })) as SaveResourcesResult;
  }
}
