// The ops-DB repository (src/platform/supervisors.ts) and AccessToken bookkeeping
// (src/platform/tokens-store.ts) against real PostgreSQL, on BOTH ops schema states:
// 2.9 (schema.sql Part A = migration 0006) and 2.8 (Part A + Part C = 0005).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { parse } from '../src/pyjson/index.ts';
import { detectOpsSchema, ledgerHas0006, supervisorDataProblem, MAX_INIT_KEY_LENGTH, SupervisorRepository, type OpsSchemaVersion, type SupervisorRow } from '../src/platform/supervisors.ts';
import type { SupervisorData } from '../src/platform/client.ts';
import { AccessTokenStore } from '../src/platform/tokens-store.ts';

const PG_HOST = process.env.TEST_PG_HOST ?? '127.0.0.1';
const PG_PORT = Number(process.env.TEST_PG_PORT ?? 5432);
const PG_USER = process.env.TEST_PG_USER ?? 'postgres';
const SCHEMA_SQL = fileURLToPath(new URL('../../shared/spec/schema.sql', import.meta.url));

function connect(database: string): postgres.Sql {
  return postgres({ host: PG_HOST, port: PG_PORT, user: PG_USER, database, max: 4, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
}

/** A scratch ops database at the given state, built from the spec DDL with psql. */
async function scratchOps(version: OpsSchemaVersion): Promise<{ name: string; sql: postgres.Sql; drop(): Promise<void> }> {
  const name = `umtest_${randomBytes(5).toString('hex')}`;
  const admin = connect('postgres');
  await admin.unsafe(`CREATE DATABASE "${name}"`);
  await admin.end();
  const psql = `psql -X -q -v ON_ERROR_STOP=1 -h '${PG_HOST}' -p ${PG_PORT} -U '${PG_USER}' -d '${name}'`;
  const partA = `sed -n '/@@PART-A-BEGIN@@/,/@@PART-A-END@@/p' '${SCHEMA_SQL}'`;
  // Part C is commented out with lines consisting of /* and */ only.
  const partC = `sed -n '/@@PART-C-BEGIN@@/,/@@PART-C-END@@/p' '${SCHEMA_SQL}' | grep -v -x -e '/\\*' -e '\\*/'`;
  execFileSync('sh', ['-c', `${partA} | ${psql}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (version === '2.8') execFileSync('sh', ['-c', `${partC} | ${psql}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  const sql = connect(name);
  return {
    name,
    sql,
    async drop() {
      await sql.end();
      const a = connect('postgres');
      try {
        await a`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${name} AND pid <> pg_backend_pid()`;
        await a.unsafe(`DROP DATABASE IF EXISTS "${name}"`);
      } finally {
        await a.end();
      }
    },
  };
}

const uid = () => randomBytes(4).toString('hex');
const SPV = 'https://api.utilmeta.com/spv';

async function insertResource(
  sql: postgres.Sql,
  r: { service?: string | null; node_id?: string | null; type: string; ident: string; remote_id?: string | null; data?: string; deleted?: boolean },
): Promise<string> {
  const [row] = await sql<{ id: string }[]>`
    INSERT INTO utilmeta_resource (service, node_id, type, ident, route, remote_id, created_time, data, deprecated, server_id, deleted_time, ref, updated_time)
    VALUES (${r.service ?? null}, ${r.node_id ?? null}, ${r.type}, ${r.ident}, ${`${r.type}/${r.ident}`}, ${r.remote_id ?? null}, now(),
      ${r.data ?? '{}'}::text::jsonb, false, NULL, ${r.deleted ? new Date(Date.now() - 3600_000) : null}, NULL, NULL)
    RETURNING id`;
  return row.id;
}

async function insertServiceLog(sql: postgres.Sql, v: OpsSchemaVersion, p: { service: string; node_id?: string | null; supervisor_id?: string | null; access_token_id?: string | null; alert_id?: string | null }): Promise<string> {
  const [row] = await sql<{ id: string }[]>`
    INSERT INTO utilmeta_service_log (in_traffic, out_traffic, public, service, node_id, level, "time", ip, trace, messages, volatile,
      supervisor_id, access_token_id, alert_id)
    VALUES (0, 0, true, ${p.service}, ${p.node_id ?? null}, 'INFO', now(), '10.0.0.1', '[]', '[]', true,
      ${p.supervisor_id ?? null}, ${p.access_token_id ?? null}, ${p.alert_id ?? null})
    RETURNING id`;
  void v;
  return row.id;
}

async function insertRequestLog(sql: postgres.Sql, v: OpsSchemaVersion, p: { service: string; node_id?: string | null; alert_id?: string | null }): Promise<string> {
  const [row] =
    v === '2.9'
      ? await sql<{ id: string }[]>`
          INSERT INTO utilmeta_request_log (in_traffic, out_traffic, public, service, node_id, "time", timeout_error, server_error, client_error, alert_id)
          VALUES (0, 0, true, ${p.service}, ${p.node_id ?? null}, now(), false, false, false, ${p.alert_id ?? null}) RETURNING id`
      : await sql<{ id: string }[]>`
          INSERT INTO utilmeta_request_log (in_traffic, out_traffic, public, service, node_id, "time", timeout_error, server_error, client_error, ssl_error, dns_error, alert_id)
          VALUES (0, 0, true, ${p.service}, ${p.node_id ?? null}, now(), false, false, false, false, false, ${p.alert_id ?? null}) RETURNING id`;
  return row.id;
}

async function insertAggregationLog(sql: postgres.Sql, p: { service: string; node_id?: string | null; supervisor_id?: string | null }): Promise<string> {
  const [row] = await sql<{ id: string }[]>`
    INSERT INTO utilmeta_aggregation_log (service, node_id, data, layer, from_time, to_time, date, created_time, reported_time, error, remote_id, supervisor_id)
    VALUES (${p.service}, ${p.node_id ?? null}, '{}', 0, now(), now(), NULL, now(), NULL, NULL, NULL, ${p.supervisor_id ?? null}) RETURNING id`;
  return row.id;
}

async function insertVersionLog(sql: postgres.Sql, p: { service: string; node_id?: string | null; instance_id: string }): Promise<string> {
  const [row] = await sql<{ id: string }[]>`
    INSERT INTO utilmeta_version_log (service, node_id, "time", down_time, success, restart_data, version, remote_id, instance_id)
    VALUES (${p.service}, ${p.node_id ?? null}, now(), NULL, NULL, '{}', '1.0.0', NULL, ${p.instance_id}) RETURNING id`;
  return row.id;
}

async function insertAlertLog29(sql: postgres.Sql, p: { service: string; node_id?: string | null; supervisor_id?: string | null }): Promise<string> {
  const [row] = await sql<{ id: string }[]>`
    INSERT INTO utilmeta_alert_log ("time", latest_time, count, description, message, service, node_id, severity, supervisor_id, triggered_values)
    VALUES (now(), now(), 1, '', '', ${p.service}, ${p.node_id ?? null}, 1, ${p.supervisor_id ?? null}, '{}') RETURNING id`;
  return row.id;
}

async function insertAlertType28(sql: postgres.Sql, p: { service: string; node_id?: string | null }): Promise<string> {
  const [row] = await sql<{ id: string }[]>`
    INSERT INTO utilmeta_alert_type (service, node_id, category, level, settings_id, threshold, subcategory, name, target, ident, compress_window, min_times, created_time, resource_id)
    VALUES (${p.service}, ${p.node_id ?? null}, 'cat', 'warn', NULL, NULL, 'sub', 'n', 't', ${'ident-' + uid()}, NULL, 1, now(), NULL) RETURNING id`;
  return row.id;
}

/** A connected supervisor row (placeholder + save), the normal way rows come to exist. */
async function connectedSupervisor(repo: SupervisorRepository, service: string, opts: { local?: boolean; publicKey?: string | null } = {}): Promise<SupervisorRow> {
  const initKey = `{"kty":"RSA","n":"${uid()}","e":"AQAB"}`;
  await repo.createPlaceholder({ service, baseUrl: SPV, initKey, opsApi: 'http://10.0.0.5:8000/api/ops' });
  const res = await repo.saveSupervisor({
    node_id: `node-${uid()}`,
    ops_api: 'http://10.0.0.5:8000/api/ops',
    base_url: SPV,
    init_key: initKey,
    public_key: opts.publicKey === undefined ? '{"kty":"RSA","n":"pub","e":"AQAB"}' : opts.publicKey,
    local: opts.local ?? false,
    ident: 'spv',
    url: 'https://ops.utilmeta.com/node/x',
    backup_urls: [],
  });
  assert.equal(res.ok, true, res.message);
  return res.row!;
}

describe('SupervisorData checks (before any SQL)', () => {
  const ok: SupervisorData = { node_id: 'n-1', ops_api: 'http://127.0.0.1:1/ops', init_key: 'k', backup_urls: [] };
  const with_ = (extra: Record<string, unknown>) => ({ ...ok, ...extra }) as unknown as SupervisorData;

  it('accepts well-formed data', () => {
    assert.equal(supervisorDataProblem(ok), null);
    assert.equal(supervisorDataProblem(with_({ init_key: 'k'.repeat(MAX_INIT_KEY_LENGTH), url: null, ident: null })), null);
  });

  it('names init_key when it is not a bounded string without control characters', () => {
    for (const v of [true, 7, 1.5, ['k'], { k: 1 }, Infinity]) {
      assert.equal(supervisorDataProblem(with_({ init_key: v })), 'SupervisorData.init_key must be a string', String(v));
    }
    assert.equal(supervisorDataProblem(with_({ init_key: 'k'.repeat(MAX_INIT_KEY_LENGTH + 1) })), `SupervisorData.init_key is longer than ${MAX_INIT_KEY_LENGTH} characters`);
    for (const v of ['a\u0000b', 'a\nb', 'a\u007fb', '\tk']) {
      assert.equal(supervisorDataProblem(with_({ init_key: v })), 'SupervisorData.init_key contains control characters', JSON.stringify(v));
    }
  });

  it('names the other string fields the same way', () => {
    assert.equal(supervisorDataProblem(with_({ node_id: 'a\u0000b' })), 'SupervisorData.node_id contains control characters');
    assert.equal(supervisorDataProblem(with_({ url: {} })), 'SupervisorData.url must be a string');
    assert.equal(supervisorDataProblem(with_({ public_key: 5 })), 'SupervisorData.public_key must be a string');
    assert.equal(supervisorDataProblem(with_({ ident: 'x'.repeat(21) })), 'SupervisorData.ident is longer than 20 characters');
    assert.equal(supervisorDataProblem(with_({ backup_urls: ['ok', 'a\rb'] })), 'SupervisorData.backup_urls entry contains control characters');
    assert.equal(supervisorDataProblem(with_({ node_id: '' })), 'SupervisorData.node_id is required');
  });

  it('saveSupervisor answers 400 without touching the database', async () => {
    // Any query would call the tagged-template function: make it fail loudly.
    const noSql = new Proxy(() => undefined, { apply: () => assert.fail('SQL issued'), get: () => assert.fail('SQL issued') });
    const repo = new SupervisorRepository(noSql as never, { schema: '2.9' });
    for (const init_key of [true, 7, 'a\u0000b', 'k'.repeat(10_000)]) {
      const r = await repo.saveSupervisor(with_({ init_key }));
      assert.equal(r.ok, false);
      assert.equal(r.status, 400);
      assert.match(r.message, /^SupervisorData\.init_key /);
    }
  });
});

for (const version of ['2.9', '2.8'] as const) {
  describe(`ops schema ${version}`, () => {
    let db: Awaited<ReturnType<typeof scratchOps>>;
    let sql: postgres.Sql;
    let repo: SupervisorRepository;

    before(async () => {
      db = await scratchOps(version);
      sql = db.sql;
      repo = new SupervisorRepository(sql);
    });
    after(async () => {
      await db?.drop();
    });

    it('detects the schema state from the columns, consistent with the migration ledger', async () => {
      assert.equal(await detectOpsSchema(sql), version);
      assert.equal(await repo.schema(), version);
      assert.equal(await ledgerHas0006(sql), version === '2.9');
    });

    it('creates a placeholder row with every column at the Django defaults', async () => {
      const before = Date.now();
      const row = await repo.createPlaceholder({ service: 'demo', baseUrl: SPV, initKey: '{"k":1}', opsApi: 'http://10.0.0.5:8000/api/ops' });
      assert.match(row.id, /^\d+$/);
      const [raw] = await sql`SELECT *, jsonb_typeof(backup_urls) AS bt, jsonb_typeof(settings) AS st FROM utilmeta_supervisor WHERE id = ${row.id}`;
      assert.equal(raw.service, 'demo');
      assert.equal(raw.base_url, SPV);
      assert.equal(raw.init_key, '{"k":1}');
      assert.equal(raw.ops_api, 'http://10.0.0.5:8000/api/ops');
      for (const k of ['node_id', 'ident', 'public_key', 'url', 'heartbeat_interval', 'latency', 'resources_etag']) assert.equal(raw[k], null, k);
      assert.deepEqual(raw.backup_urls, []);
      assert.equal(raw.bt, 'array');
      assert.equal(raw.st, 'object');
      for (const k of ['settings', 'alert_settings', 'data']) assert.deepEqual(raw[k], {}, k);
      assert.equal(raw.local, false);
      assert.equal(raw.connected, false);
      assert.equal(raw.disabled, false);
      assert.ok(raw.created_time instanceof Date && Math.abs(raw.created_time.getTime() - before) < 60_000);
      if (version === '2.9') {
        assert.deepEqual(raw.report_settings, {});
        assert.equal(raw.default_timeout, null);
        assert.equal(raw.last_heartbeat, null);
        assert.ok(!('task_settings' in raw));
      } else {
        assert.deepEqual(raw.aggregate_settings, {});
        assert.deepEqual(raw.task_settings, {});
        assert.equal(raw.operation_timeout, null);
        assert.ok(!('report_settings' in raw));
      }
      // normalized row view
      assert.deepEqual(row.report_settings, {});
      assert.equal(row.last_heartbeat, null);
      assert.deepEqual((await repo.findPending('demo')).map((r) => r.id), [row.id]);
    });

    describe('saveSupervisor', () => {
      const data = (initKey: string, extra: Record<string, unknown> = {}) => ({
        node_id: `node-${uid()}`,
        url: 'https://ops.utilmeta.com/node/1',
        public_key: '{"alg":"RSA-OAEP-256","e":"AQAB","kid":"k","kty":"RSA","n":"abc"}',
        ops_api: 'http://10.0.0.5:8000/api/ops/',
        ident: 'spv-1',
        base_url: SPV,
        backup_urls: ['https://backup.utilmeta.com/spv'],
        init_key: initKey,
        local: false,
        ...extra,
      });

      it('400 without init_key', async () => {
        const r = await repo.saveSupervisor({ ...data(''), init_key: null });
        assert.deepEqual([r.ok, r.status, r.message], [false, 400, 'Missing init_key for supervisor to be saved']);
      });

      it('404 when no row has the init_key, or the row is disabled', async () => {
        const r = await repo.saveSupervisor(data(`missing-${uid()}`));
        assert.deepEqual([r.ok, r.status, r.message], [false, 404, 'Supervisor not found or disabled']);
        const key = `k-${uid()}`;
        const p = await repo.createPlaceholder({ service: 'svc', baseUrl: SPV, initKey: key, opsApi: 'http://x/api/ops' });
        await sql`UPDATE utilmeta_supervisor SET disabled = true WHERE id = ${p.id}`;
        const r2 = await repo.saveSupervisor(data(key));
        assert.equal(r2.status, 404);
        const [after] = await sql`SELECT node_id, init_key FROM utilmeta_supervisor WHERE id = ${p.id}`;
        assert.deepEqual({ ...after }, { node_id: null, init_key: key });
      });

      it('returns a row that already has a node id unchanged', async () => {
        const key = `k-${uid()}`;
        const p = await repo.createPlaceholder({ service: 'svc', baseUrl: SPV, initKey: key, opsApi: 'http://x/api/ops' });
        await sql`UPDATE utilmeta_supervisor SET node_id = 'node-existing' WHERE id = ${p.id}`;
        const r = await repo.saveSupervisor(data(key, { base_url: 'https://elsewhere.utilmeta.com' }));
        assert.equal(r.ok, true);
        assert.equal(r.status, 200);
        assert.equal(r.updated, false);
        assert.equal(r.row!.node_id, 'node-existing');
        assert.equal(r.row!.init_key, key);
        assert.equal(r.row!.connected, false);
      });

      it('409 on a base_url mismatch', async () => {
        const key = `k-${uid()}`;
        const p = await repo.createPlaceholder({ service: 'svc', baseUrl: SPV, initKey: key, opsApi: 'http://x/api/ops' });
        const r = await repo.saveSupervisor(data(key, { base_url: SPV + '/' }));
        assert.deepEqual([r.ok, r.status, r.message], [false, 409, 'Supervisor base_url conflicted']);
        assert.equal((await repo.getById(p.id))!.node_id, null);
      });

      it('409 when another row already has (base_url, node_id)', async () => {
        const existing = await connectedSupervisor(repo, 'other');
        const key = `k-${uid()}`;
        const p = await repo.createPlaceholder({ service: 'svc', baseUrl: SPV, initKey: key, opsApi: 'http://x/api/ops' });
        const r = await repo.saveSupervisor(data(key, { node_id: existing.node_id }));
        assert.equal(r.status, 409);
        assert.equal(r.message, `Supervisor[${existing.node_id}] at ${SPV} already exists`);
        assert.equal((await repo.getById(p.id))!.init_key, key);
      });

      it('saves: node columns written, connected, init_key cleared; base64 public keys stored as JSON', async () => {
        const key = `k-${uid()}`;
        const p = await repo.createPlaceholder({ service: 'svc', baseUrl: SPV, initKey: key, opsApi: 'http://x/api/ops' });
        const pub = '{"alg":"RSA-OAEP-256","e":"AQAB","kid":"k","kty":"RSA","n":"abc"}';
        const d = data(key, { public_key: Buffer.from(pub).toString('base64') });
        const r = await repo.saveSupervisor(d);
        assert.equal(r.ok, true, r.message);
        assert.equal(r.updated, true);
        const [raw] = await sql`SELECT * FROM utilmeta_supervisor WHERE id = ${p.id}`;
        assert.equal(raw.node_id, d.node_id);
        assert.equal(raw.ident, 'spv-1');
        assert.equal(raw.public_key, pub);
        assert.deepEqual(raw.backup_urls, ['https://backup.utilmeta.com/spv']);
        assert.equal(raw.ops_api, 'http://10.0.0.5:8000/api/ops/');
        assert.equal(raw.url, 'https://ops.utilmeta.com/node/1');
        assert.equal(raw.connected, true);
        assert.equal(raw.local, false);
        assert.equal(raw.init_key, null);
        assert.equal(raw.service, 'svc');
        // the init_key is spent: a replay finds nothing
        assert.equal((await repo.saveSupervisor(d)).status, 404);
        // and the row is now visible through Supervisor.filter
        assert.deepEqual((await repo.filterByNode(d.node_id)).map((x) => x.id), [p.id]);
      });

      it('rowId binds the named placeholder when two share an init_key (spec §6.18)', async () => {
        const key = `shared-${uid()}`;
        const a = await repo.createPlaceholder({ service: 'svc-a', baseUrl: SPV, initKey: key, opsApi: 'http://a/api/ops' });
        const b = await repo.createPlaceholder({ service: 'svc-b', baseUrl: SPV, initKey: key, opsApi: 'http://b/api/ops' });
        const d = data(key);
        const r = await repo.saveSupervisor(d, { rowId: b.id });
        assert.equal(r.ok, true, r.message);
        assert.equal(r.row!.id, b.id);
        assert.equal((await repo.getById(a.id))!.node_id, null);
        assert.equal((await repo.getById(a.id))!.init_key, key);
        // without rowId the first row (ORDER BY id) is the one taken, like filter(...).first()
        const r2 = await repo.saveSupervisor(data(key));
        assert.equal(r2.row!.id, a.id);
      });
    });

    it('filters like Supervisor.filter / the token branch / pending', async () => {
      const svc = `f-${uid()}`;
      const normal = await connectedSupervisor(repo, svc);
      const local = await connectedSupervisor(repo, svc, { local: true, publicKey: null });
      const nokey = await connectedSupervisor(repo, svc, { publicKey: null });
      const disabled = await connectedSupervisor(repo, svc);
      await sql`UPDATE utilmeta_supervisor SET disabled = true WHERE id = ${disabled.id}`;
      // share one node id to see the ORDER BY id and each filter's predicate
      const node = `n-${uid()}`;
      await sql`UPDATE utilmeta_supervisor SET node_id = ${node} WHERE id IN ${sql([normal.id, local.id, nokey.id, disabled.id])}`;
      assert.deepEqual((await repo.filterByNode(node)).map((r) => r.id), [normal.id, local.id]);
      assert.deepEqual((await repo.tokenSupervisors(node)).map((r) => r.id), [normal.id]);
      const active = (await repo.listActive()).map((r) => r.id);
      assert.ok(active.includes(normal.id) && active.includes(local.id));
      assert.ok(!active.includes(nokey.id) && !active.includes(disabled.id));
      assert.equal((await repo.findForSync(svc, node))!.id, normal.id);
      assert.equal(await repo.findForSync('other-service', node), null);
      assert.equal((await repo.findPending(svc)).length, 0);
    });

    it('deleteWithCascade deletes tokens (and alert logs at 2.9) and nulls every dependant', async () => {
      const svc = `c-${uid()}`;
      const s = await connectedSupervisor(repo, svc);
      const keep = await connectedSupervisor(repo, svc);
      const tokens = new AccessTokenStore(sql);
      assert.equal((await tokens.recordUse(s.id, { jti: `t-${uid()}`, iat: 1, exp: 2 }, '10.0.0.1')).ok, true);
      const [tok] = await sql<{ id: string }[]>`SELECT id FROM utilmeta_access_token WHERE issuer_id = ${s.id}`;
      const keepJti = `t-${uid()}`;
      await tokens.recordUse(keep.id, { jti: keepJti }, null);
      let alertId: string | null = null;
      let reqLog: string | null = null;
      let queryLog: string | null = null;
      if (version === '2.9') {
        alertId = await insertAlertLog29(sql, { service: svc, node_id: s.node_id, supervisor_id: s.id });
        reqLog = await insertRequestLog(sql, version, { service: svc, alert_id: alertId });
        const dbRes = await insertResource(sql, { type: 'database', ident: `db-${uid()}` });
        const [q] = await sql<{ id: string }[]>`
          INSERT INTO utilmeta_query_log ("time", query, duration, message, operation, tables, context_type, context_id, alert_id, database_id, worker_id, model_id, details)
          VALUES (now(), 'select 1', NULL, '', NULL, '[]', NULL, NULL, ${alertId}, ${dbRes}, NULL, NULL, NULL) RETURNING id`;
        queryLog = q.id;
      }
      const log = await insertServiceLog(sql, version, { service: svc, supervisor_id: s.id, access_token_id: tok.id, alert_id: alertId });
      const agg = await insertAggregationLog(sql, { service: svc, supervisor_id: s.id });
      const aggKeep = await insertAggregationLog(sql, { service: svc, supervisor_id: keep.id });

      const r = await repo.deleteWithCascade(s.id);
      assert.deepEqual(r, {
        deleted: true,
        accessTokens: 1,
        alertLogs: version === '2.9' ? 1 : 0,
        serviceLogsDetached: 1,
        aggregationLogsDetached: 1,
      });
      assert.equal(await repo.getById(s.id), null);
      assert.equal((await sql`SELECT 1 FROM utilmeta_access_token WHERE issuer_id = ${s.id}`).length, 0);
      const [sl] = await sql`SELECT supervisor_id, access_token_id, alert_id FROM utilmeta_service_log WHERE id = ${log}`;
      assert.deepEqual({ ...sl }, { supervisor_id: null, access_token_id: null, alert_id: null });
      assert.equal((await sql`SELECT supervisor_id FROM utilmeta_aggregation_log WHERE id = ${agg}`)[0].supervisor_id, null);
      if (version === '2.9') {
        assert.equal((await sql`SELECT 1 FROM utilmeta_alert_log WHERE id = ${alertId}`).length, 0);
        assert.equal((await sql`SELECT alert_id FROM utilmeta_request_log WHERE id = ${reqLog}`)[0].alert_id, null);
        assert.equal((await sql`SELECT alert_id FROM utilmeta_query_log WHERE id = ${queryLog}`)[0].alert_id, null);
      }
      // the other supervisor's rows are untouched
      assert.ok(await repo.getById(keep.id));
      assert.equal((await sql`SELECT 1 FROM utilmeta_access_token WHERE token_id = ${keepJti}`).length, 1);
      assert.equal((await sql`SELECT supervisor_id FROM utilmeta_aggregation_log WHERE id = ${aggKeep}`)[0].supervisor_id, keep.id);
      // deleting again is a no-op
      assert.equal((await repo.deleteWithCascade(s.id)).deleted, false);
    });

    it('attachOrphans sets node_id (and the supervisor FK) on the service rows without a node', async () => {
      const svc = `o-${uid()}`;
      const s = await connectedSupervisor(repo, svc);
      const node = s.node_id!;
      const inst = await insertResource(sql, { service: svc, type: 'instance', ident: `10.0.0.9:${uid()}` });
      const server = await insertResource(sql, { service: null, type: 'server', ident: `mac-${uid()}` });
      const foreign = await insertResource(sql, { service: 'someone-else', type: 'instance', ident: `x-${uid()}` });
      const owned = await insertResource(sql, { service: svc, node_id: 'other-node', type: 'instance', ident: `y-${uid()}` });
      const sl = await insertServiceLog(sql, version, { service: svc });
      const rl = await insertRequestLog(sql, version, { service: svc });
      const vl = await insertVersionLog(sql, { service: svc, instance_id: inst });
      const ag = await insertAggregationLog(sql, { service: svc });
      const extra = version === '2.9' ? await insertAlertLog29(sql, { service: svc }) : await insertAlertType28(sql, { service: svc });

      const counts = await repo.attachOrphans(svc, node, s.id);
      assert.equal(counts.utilmeta_resource, 1);
      assert.equal(counts[version === '2.9' ? 'utilmeta_alert_log' : 'utilmeta_alert_type'], 1);
      assert.equal(counts.utilmeta_service_log, 1);

      const nodeOf = async (table: string, id: string) => (await sql`SELECT node_id FROM ${sql(table)} WHERE id = ${id}`)[0].node_id;
      assert.equal(await nodeOf('utilmeta_resource', inst), node);
      assert.equal(await nodeOf('utilmeta_resource', server), null);
      assert.equal(await nodeOf('utilmeta_resource', foreign), null);
      assert.equal(await nodeOf('utilmeta_resource', owned), 'other-node');
      assert.equal(await nodeOf('utilmeta_service_log', sl), node);
      assert.equal(await nodeOf('utilmeta_request_log', rl), node);
      assert.equal(await nodeOf('utilmeta_version_log', vl), node);
      assert.equal(await nodeOf('utilmeta_aggregation_log', ag), node);
      assert.equal((await sql`SELECT supervisor_id FROM utilmeta_service_log WHERE id = ${sl}`)[0].supervisor_id, s.id);
      assert.equal((await sql`SELECT supervisor_id FROM utilmeta_aggregation_log WHERE id = ${ag}`)[0].supervisor_id, s.id);
      if (version === '2.9') {
        const [a] = await sql`SELECT node_id, supervisor_id FROM utilmeta_alert_log WHERE id = ${extra}`;
        assert.deepEqual({ ...a }, { node_id: node, supervisor_id: s.id });
      } else {
        assert.equal(await nodeOf('utilmeta_alert_type', extra), node);
      }
    });

    it('propagateRename renames the supervisor and related rows (incl. NULL-service servers, like Django exclude)', async () => {
      const oldName = `old-${uid()}`;
      const newName = `new-${uid()}`;
      const s = await connectedSupervisor(repo, oldName);
      const node = s.node_id!;
      const inst = await insertResource(sql, { service: oldName, node_id: node, type: 'instance', ident: `i-${uid()}` });
      const server = await insertResource(sql, { service: null, node_id: node, type: 'server', ident: `mac-${uid()}` });
      const other = await insertResource(sql, { service: oldName, node_id: 'other-node', type: 'instance', ident: `j-${uid()}` });
      const sl = await insertServiceLog(sql, version, { service: oldName, node_id: node });
      const orphan = await insertServiceLog(sql, version, { service: newName });

      const counts = await repo.propagateRename(node, newName);
      assert.equal(counts.utilmeta_supervisor, 1);
      assert.equal((await repo.getById(s.id))!.service, newName);
      const svcOf = async (id: string) => (await sql`SELECT service FROM utilmeta_resource WHERE id = ${id}`)[0].service;
      assert.equal(await svcOf(inst), newName);
      assert.equal(await svcOf(server), newName);
      assert.equal(await svcOf(other), oldName);
      assert.equal((await sql`SELECT service FROM utilmeta_service_log WHERE id = ${sl}`)[0].service, newName);
      assert.equal((await sql`SELECT node_id FROM utilmeta_service_log WHERE id = ${orphan}`)[0].node_id, node);
    });

    it('applySyncResult stores the ≤2.8.1 result shape (etag, url)', async () => {
      const s = await connectedSupervisor(repo, `s-${uid()}`);
      const row = await repo.applySyncResult(s, { url: 'https://ops.utilmeta.com/new', resources: [], resources_etag: 'EtAg123' });
      assert.equal(row.resources_etag, 'EtAg123');
      assert.equal(row.url, 'https://ops.utilmeta.com/new');
      const [raw] = await sql`SELECT resources_etag, url FROM utilmeta_supervisor WHERE id = ${s.id}`;
      assert.deepEqual({ ...raw }, { resources_etag: 'EtAg123', url: 'https://ops.utilmeta.com/new' });
      // falsy values leave the columns alone
      const same = await repo.applySyncResult(row, { url: null, resources: [], resources_etag: '' });
      assert.equal(same.resources_etag, 'EtAg123');
    });

    it('applySyncResult stores the 2.9 shape, mapping report_settings by schema state', async () => {
      const s = await connectedSupervisor(repo, `s-${uid()}`);
      // settings given as a parsed PyValue (Map) must land as a JSON object
      const settings = parse('{"retention": 7, "ratio": 1.50}');
      const row = await repo.applySyncResult(s, {
        resources: [],
        supervisor: {
          node_id: s.node_id!,
          url: 'https://ops.utilmeta.com/n29',
          resources_etag: 'E29',
          heartbeat_interval: 60,
          settings,
          alert_settings: { cpu: { threshold: 90 } },
          report_settings: { hourly: true },
        },
      });
      assert.equal(row.resources_etag, 'E29');
      assert.equal(row.url, 'https://ops.utilmeta.com/n29');
      assert.equal(row.heartbeat_interval, 60);
      assert.deepEqual(row.settings, { retention: 7, ratio: 1.5 });
      assert.deepEqual(row.alert_settings, { cpu: { threshold: 90 } });
      assert.deepEqual(row.report_settings, { hourly: true });
      const col = version === '2.9' ? 'report_settings' : 'aggregate_settings';
      assert.deepEqual((await sql`SELECT ${sql(col)} AS v FROM utilmeta_supervisor WHERE id = ${s.id}`)[0].v, { hourly: true });
      // a result for another node is ignored
      const untouched = await repo.applySyncResult(row, { resources: [], supervisor: { node_id: 'someone-else', resources_etag: 'X' } });
      assert.equal(untouched.resources_etag, 'E29');
      assert.equal((await repo.getById(s.id))!.resources_etag, 'E29');
    });

    it('saveResources upserts by remote_id, adopts local rows, soft-deletes the rest and re-links servers', async () => {
      const svc = `r-${uid()}`;
      const s = await connectedSupervisor(repo, svc);
      const node = s.node_id!;
      const mac = `mac-${uid()}`;
      const addr = `10.0.0.5:${8000 + Math.floor(Math.random() * 1000)}`;
      const r1 = await insertResource(sql, { service: svc, node_id: node, type: 'table', ident: 't1', remote_id: 'R1', data: '{"a": 1}', deleted: true });
      const r2 = await insertResource(sql, { service: svc, node_id: null, type: 'instance', ident: addr, data: '{"version": "1.0"}' });
      const r3 = await insertResource(sql, { service: null, node_id: null, type: 'server', ident: mac });
      const r4 = await insertResource(sql, { service: svc, node_id: node, type: 'endpoint', ident: 'gone', remote_id: 'GONE' });
      const r5 = await insertResource(sql, { service: svc, node_id: node, type: 'endpoint', ident: 'never-synced' });
      const r6 = await insertResource(sql, { service: 'x', node_id: 'other-node', type: 'endpoint', ident: 'elsewhere', remote_id: 'GONE2' });

      const out = await repo.saveResources(node, svc, [
        { remote_id: 'R1', type: 'table', ident: 't1b', route: `table/${node}/t1b`, data: { b: 2 } },
        { remote_id: 'SRV', type: 'server', ident: mac, route: `server/${mac}`, data: {} },
        { remote_id: 'INST', server_id: 'SRV', type: 'instance', ident: addr, route: `instance/${node}/${addr}`, data: { remote: true } },
        { remote_id: 'NEW', type: 'endpoint', ident: 'GET /x', route: `endpoint/${node}/GET /x`, ref: 'mod.fn', data: {} },
      ]);
      assert.deepEqual(out, { updated: 1, adopted: 2, created: 1, softDeleted: 2, relinked: 1 });

      const get = async (id: string) => (await sql`SELECT * FROM utilmeta_resource WHERE id = ${id}`)[0];
      const a = await get(r1);
      assert.deepEqual([a.ident, a.route, a.deleted_time, a.service, a.node_id, a.type], ['t1b', `table/${node}/t1b`, null, svc, node, 'table']);
      assert.deepEqual(a.data, { b: 2 });
      assert.ok(a.updated_time instanceof Date);
      const srv = await get(r3);
      assert.deepEqual([srv.remote_id, srv.node_id, srv.service, srv.deleted_time], ['SRV', node, svc, null]);
      const inst = await get(r2);
      assert.deepEqual([inst.remote_id, inst.node_id, inst.server_id], ['INST', node, r3]);
      assert.deepEqual(inst.data, { version: '1.0', remote: true });
      const [created] = await sql`SELECT * FROM utilmeta_resource WHERE remote_id = 'NEW'`;
      assert.equal(created.service, svc);
      assert.equal(created.node_id, node);
      assert.equal(created.ref, 'mod.fn');
      assert.equal(created.deprecated, false);
      assert.equal(created.updated_time, null);
      assert.equal(created.deleted_time, null);
      assert.equal(created.server_id, null);
      assert.ok(created.created_time instanceof Date);
      assert.deepEqual(created.data, {});
      assert.ok((await get(r4)).deleted_time instanceof Date);
      assert.ok((await get(r5)).deleted_time instanceof Date);
      assert.equal((await get(r6)).deleted_time, null);

      // a second identical sync changes nothing structurally and resurrects nothing deleted
      const again = await repo.saveResources(node, svc, [{ remote_id: 'R1', type: 'table', ident: 't1b', route: 'r', data: {} }]);
      assert.deepEqual(again, { updated: 1, adopted: 0, created: 0, softDeleted: 3, relinked: 0 });
      assert.ok((await get(r2)).deleted_time instanceof Date);
    });

    describe('AccessToken bookkeeping', () => {
      it('records a first use with every column, then counts further uses', async () => {
        const s = await connectedSupervisor(repo, `t-${uid()}`);
        const store = new AccessTokenStore(sql);
        const jti = `jti-${uid()}`;
        const iat = 1_700_000_000;
        const r = await store.recordUse(s.id, { jti, iat, exp: iat + 300, sub: 'user-1', scope: 'api.view log.view:42' }, '10.1.2.3');
        assert.deepEqual(r, { ok: true, tokenId: jti, created: true });
        const [row] = await sql`SELECT *, jsonb_typeof(scope) AS st FROM utilmeta_access_token WHERE token_id = ${jti}`;
        assert.equal(row.issuer_id, s.id);
        assert.equal(row.issued_at.getTime(), iat * 1000);
        assert.equal(row.expiry_time.getTime(), (iat + 300) * 1000);
        assert.equal(row.subject, 'user-1');
        assert.equal(row.ip, '10.1.2.3');
        assert.equal(row.st, 'array');
        assert.deepEqual(row.scope, ['api.view', 'log.view']);
        assert.equal(row.used_times, 1);
        assert.equal(row.revoked, false);
        assert.ok(row.last_activity instanceof Date);
        const later = new Date(Date.now() + 5000);
        const store2 = new AccessTokenStore(sql, { now: () => later });
        assert.equal((await store2.recordUse(s.id, { jti }, '10.1.2.3')).ok, true);
        const [row2] = await sql`SELECT used_times, last_activity FROM utilmeta_access_token WHERE token_id = ${jti}`;
        assert.equal(row2.used_times, 2);
        assert.equal(row2.last_activity.getTime(), later.getTime());
      });

      it('a token without iat (or with a bad ip) is stored with NULLs instead of failing', async () => {
        const s = await connectedSupervisor(repo, `t-${uid()}`);
        const jti = `jti-${uid()}`;
        const r = await new AccessTokenStore(sql).recordUse(s.id, { jti, exp: 1_800_000_000 }, 'not-an-ip');
        assert.equal(r.ok, true);
        const [row] = await sql`SELECT issued_at, ip, scope, subject FROM utilmeta_access_token WHERE token_id = ${jti}`;
        assert.deepEqual({ ...row }, { issued_at: null, ip: null, scope: [], subject: null });
      });

      it('refuses a jti already recorded under another issuer', async () => {
        const a = await connectedSupervisor(repo, `t-${uid()}`);
        const b = await connectedSupervisor(repo, `t-${uid()}`);
        const store = new AccessTokenStore(sql);
        const jti = `jti-${uid()}`;
        assert.equal((await store.recordUse(a.id, { jti, iat: 1 }, null)).ok, true);
        assert.deepEqual(await store.recordUse(b.id, { jti, iat: 1 }, null), {
          ok: false,
          status: 400,
          state: 'token_expired',
          message: 'Invalid token: id duplicated',
        });
      });

      it('revoke: counts pre-existing rows, pre-revokes unknown ids for a day, then uses are refused', async () => {
        const s = await connectedSupervisor(repo, `t-${uid()}`);
        const other = await connectedSupervisor(repo, `t-${uid()}`);
        const store = new AccessTokenStore(sql);
        const seen = `seen-${uid()}`;
        const unseen = `unseen-${uid()}`;
        const foreign = `foreign-${uid()}`;
        await store.recordUse(s.id, { jti: seen, iat: 1 }, null);
        await store.recordUse(other.id, { jti: foreign, iat: 1 }, null);
        const t0 = Date.now();
        assert.equal(await store.revoke(s.id, [seen, unseen, unseen, foreign]), 1);
        const rows = await sql`SELECT token_id, issuer_id, revoked, used_times, expiry_time FROM utilmeta_access_token WHERE token_id IN ${sql([seen, unseen, foreign])}`;
        const by = Object.fromEntries(rows.map((r) => [r.token_id, r]));
        assert.equal(by[seen].revoked, true);
        assert.equal(by[unseen].revoked, true);
        assert.equal(by[unseen].issuer_id, s.id);
        assert.equal(by[unseen].used_times, 0);
        const day = by[unseen].expiry_time.getTime() - t0;
        assert.ok(day > 86_000_000 && day < 86_500_000, `expiry ${day} ms from now`);
        assert.equal(by[foreign].revoked, false, "another issuer's token is not touched");
        for (const jti of [seen, unseen]) {
          assert.deepEqual(await store.recordUse(s.id, { jti, iat: 1 }, null), {
            ok: false,
            status: 400,
            state: 'token_expired',
            message: 'Invalid token: revoked',
          });
        }
      });
    });
  });
}
