// authz/0001_initial on real PostgreSQL (and one smoke run on the embedded
// PGlite): the migration is idempotent and ledgered, and every trigger and
// constraint refuses what it must and allows what it must.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { DB_DEFAULTS, migrate, migrationStatus, openDatabase, type DbConfig } from '../src/db/index.ts';
import { AUTHZ_TABLES } from '../src/db/migrate.ts';
import { writeAuthz } from '../src/access/store.ts';
import { DomainError } from '../src/core/errors.ts';
import { adminSql, testLogger } from './support/env.ts';
import { insertUser, migratedAuthzDb, type AuthzDb } from './support/authz.ts';

let t: AuthzDb;
before(async () => {
  t = await migratedAuthzDb();
  await setupFixtures();
});
after(async () => {
  await t?.close();
});

/** Resolves to the refusal (SQLSTATE 23514 unless told otherwise); fails if the statement succeeds. */
async function refused(p: Promise<unknown>, constraint?: string | RegExp, code = '23514'): Promise<postgres.PostgresError> {
  try {
    await p;
  } catch (err) {
    const e = err as postgres.PostgresError;
    assert.equal(e.code, code, `expected SQLSTATE ${code}, got ${e.code}: ${e.message}`);
    if (constraint instanceof RegExp) assert.match(e.constraint_name ?? '', constraint, e.message);
    else if (constraint) assert.equal(e.constraint_name, constraint, e.message);
    return e;
  }
  assert.fail(`expected a refusal${constraint ? ` (${constraint})` : ''}`);
}

const hex32 = () => randomBytes(16).toString('hex');

// ---------------------------------------------------------------- fixtures
interface Fx {
  serviceId: string;
  orgId: string;
  userId: string;
  projectId: string;
  appId: string;
}
let fx: Fx;

async function newApi(): Promise<string> {
  const id = hex32();
  await t.sql`INSERT INTO authz_api (api_id, service_id, method, path_template, route_key, source)
              VALUES (${id}, ${fx.serviceId}, 'GET', ${'/p/' + id}, ${'/p/' + id}, 'openapi')`;
  return id;
}

async function setupFixtures(): Promise<void> {
  const [svc] = await t.sql<{ id: string }[]>`
    INSERT INTO utilmeta_service (name, public, created_time, data) VALUES ('authz-svc', false, now(), '{}') RETURNING id`;
  const [org] = await t.sql<{ id: string }[]>`INSERT INTO authz_org (name) VALUES ('org1') RETURNING id`;
  const userId = await insertUser(t.sql, 'owner');
  const [proj] = await t.sql<{ id: string }[]>`
    INSERT INTO authz_project (org_id, name, resource_key, is_permanent) VALUES (${org!.id}, 'p1', 'rk1', true) RETURNING id`;
  const [app] = await t.sql<{ id: string }[]>`
    INSERT INTO authz_app (app_id, project_id, name, owner_user_id) VALUES (${hex32()}, ${proj!.id}, 'app1', ${userId}) RETURNING id`;
  fx = { serviceId: svc!.id, orgId: org!.id, userId, projectId: proj!.id, appId: app!.id };
}

// ---------------------------------------------------------------- migration

test('migrate twice is a no-op; one ledger row; every table and trigger exists', async () => {
  const log = testLogger(undefined, 'warn');
  const again = await migrate(t.cfg, t.db, log);
  assert.equal(again.authz, 'present');
  assert.equal(again.registry, 'present');
  const ledger = await t.sql`SELECT name FROM django_migrations WHERE app = 'authz'`;
  assert.deepEqual(ledger.map((r) => r.name), ['0001_initial']);
  const st = await migrationStatus(t.db);
  assert.equal(st.authz, 'current');
  assert.equal(st.current, true);
  const tables = await t.sql<{ relname: string }[]>`SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'authz\_%' ORDER BY relname`;
  assert.deepEqual(tables.map((r) => r.relname), [...AUTHZ_TABLES].sort());
  const triggers = await t.sql<{ tgname: string }[]>`SELECT DISTINCT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE 'authz\_%' ORDER BY tgname`;
  assert.deepEqual(triggers.map((r) => r.tgname), [
    'authz_access_key_guard', 'authz_department_no_cycle', 'authz_event_append_only', 'authz_event_no_truncate', 'authz_event_notify',
    'authz_event_seq', 'authz_grant_guard', 'authz_grant_request_guard', 'authz_role_child_no_cycle',
  ]);
  const [state] = await t.sql`SELECT count(*)::int AS n FROM authz_state`;
  assert.equal(state!.n, 1);
});

test('a registry without the authz migration is not ready, and migrate adds it', async () => {
  const dbName = `umtest_${randomBytes(5).toString('hex')}`;
  const cfg: DbConfig = { ...t.cfg, registryName: dbName, opsName: t.cfg.opsName };
  const log = testLogger(undefined, 'warn');
  const db = await openDatabase(cfg, log);
  try {
    await migrate(cfg, db, log);
    // Back to a registry migrated by a proxy that predates the access plane.
    await db.registry.unsafe(`DROP TABLE ${AUTHZ_TABLES.join(', ')} CASCADE`);
    await db.registry`DELETE FROM django_migrations WHERE app = 'authz'`;
    let st = await migrationStatus(db);
    assert.equal(st.registry, 'current');
    assert.equal(st.authz, 'missing');
    assert.equal(st.current, false);
    const rep = await migrate(cfg, db, log);
    assert.equal(rep.authz, 'created');
    assert.equal(rep.registry, 'present');
    st = await migrationStatus(db);
    assert.equal(st.authz, 'current');
    assert.equal(st.current, true);
    // Tables without their ledger row: refused, nothing touched.
    await db.registry`DELETE FROM django_migrations WHERE app = 'authz'`;
    st = await migrationStatus(db);
    assert.equal(st.authz, 'foreign');
    assert.equal(st.current, false);
    assert.equal(st.problems.length, 1);
    await assert.rejects(migrate(cfg, db, log), /authz/);
  } finally {
    await db.close();
    const a = adminSql();
    await a`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${dbName} AND pid <> pg_backend_pid()`;
    await a.unsafe(`DROP DATABASE IF EXISTS "${dbName}"`);
    await a.end();
  }
});

// ---------------------------------------------------------------- events

async function insertEvent(sql: postgres.Sql | postgres.TransactionSql, action = 'test.event', effect: object = {}): Promise<{ seq: string; at: Date }> {
  const [r] = await sql<{ seq: string; at: Date }[]>`
    INSERT INTO authz_event (actor_type, action, target_type, target_id, effect)
    VALUES ('SYSTEM', ${action}, 'test', '1', ${sql.json(effect as postgres.JSONValue)}) RETURNING seq, at`;
  return r!;
}

describe('authz_event', () => {
  test('append-only: UPDATE, DELETE and TRUNCATE are refused; a row past retention may be deleted', async () => {
    const ev = await insertEvent(t.sql);
    await refused(t.sql`UPDATE authz_event SET action = 'forged' WHERE seq = ${ev.seq}`, 'authz_event_append_only');
    await refused(t.sql`DELETE FROM authz_event WHERE seq = ${ev.seq}`, 'authz_event_append_only');
    await refused(t.sql`TRUNCATE authz_event`, 'authz_event_append_only');
    assert.equal((await t.sql`SELECT 1 FROM authz_event WHERE seq = ${ev.seq} AND action = 'test.event'`).length, 1);
    // An old row (placed with triggers bypassed, as only a superuser can) is the retention job's to delete.
    await t.sql.begin(async (tx) => {
      await tx`SET LOCAL session_replication_role = replica`;
      await tx`INSERT INTO authz_event (seq, at, actor_type, action, target_type, target_id)
               VALUES (-1, now() - interval '400 days', 'SYSTEM', 'old', 'test', '1')`;
    });
    const del = await t.sql`DELETE FROM authz_event WHERE seq = -1`;
    assert.equal(del.count, 1);
  });

  test('seq is gapless and in commit order with concurrent writers, rolled-back ones included', async () => {
    const listener = postgres({ host: '127.0.0.1', port: 5432, user: 'postgres', database: t.dbs.registryName, max: 1, onnotice: () => {} });
    const seen: number[] = [];
    try {
      await listener.listen('utilmeta_proxy_authz', (p) => void seen.push(JSON.parse(p).seq));
      const [{ seq: start }] = (await t.sql<{ seq: string }[]>`SELECT seq FROM authz_state`) as unknown as [{ seq: string }];
      const writers = 24;
      const results = await Promise.allSettled(
        Array.from({ length: writers }, (_, i) =>
          t.sql.begin(async (tx) => {
            // Writers that do not lock authz_state first still get gapless seqs from the trigger.
            await insertEvent(tx, `w${i}`);
            await insertEvent(tx, `w${i}`);
            if (i % 4 === 0) throw new Error('rollback');
          }),
        ),
      );
      const committed = results.filter((r) => r.status === 'fulfilled').length;
      assert.equal(committed, writers - writers / 4);
      const rows = await t.sql<{ seq: string; action: string }[]>`SELECT seq, action FROM authz_event WHERE seq > ${start} ORDER BY seq`;
      const seqs = rows.map((r) => Number(r.seq));
      assert.deepEqual(seqs, Array.from({ length: committed * 2 }, (_, i) => Number(start) + 1 + i), 'no gaps');
      // A transaction's two events are adjacent: the row lock is held to commit.
      for (let i = 0; i < rows.length; i += 2) assert.equal(rows[i]!.action, rows[i + 1]!.action);
      const [{ seq: end }] = (await t.sql<{ seq: string }[]>`SELECT seq FROM authz_state`) as unknown as [{ seq: string }];
      assert.equal(Number(end), seqs[seqs.length - 1]);
      for (let i = 0; i < 200 && seen.length < seqs.length; i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(seen, seqs, 'notifications arrive in seq order (commit order)');
    } finally {
      await listener.end({ timeout: 1 });
    }
  });

  test('NOTIFY carries seq, action, at_ms and effect', async () => {
    const listener = postgres({ host: '127.0.0.1', port: 5432, user: 'postgres', database: t.dbs.registryName, max: 1, onnotice: () => {} });
    try {
      const got: unknown[] = [];
      await listener.listen('utilmeta_proxy_authz', (p) => void got.push(JSON.parse(p)));
      const effect = { ak: 'UMAKAAAAAAAAAAAAAAAA', n: [1, 2] };
      const ev = await insertEvent(t.sql, 'key.status', effect);
      for (let i = 0; i < 200 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(got, [{ seq: Number(ev.seq), action: 'key.status', at_ms: ev.at.getTime(), effect }]);
    } finally {
      await listener.end({ timeout: 1 });
    }
  });

  test('an effect over 6000 bytes is refused by the table', async () => {
    await refused(insertEvent(t.sql, 'big', { s: 'x'.repeat(6100) }), 'authz_event_effect_check');
  });
});

// ---------------------------------------------------------------- grants

type State = 'PENDING' | 'ACTIVE' | 'CANCEL_SCHEDULED' | 'CANCELLED' | 'EXPIRED' | 'REJECTED' | 'WITHDRAWN';
const STATES: State[] = ['PENDING', 'ACTIVE', 'CANCEL_SCHEDULED', 'CANCELLED', 'EXPIRED', 'REJECTED', 'WITHDRAWN'];

/** A grant in `state`, reached through allowed transitions; ACTIVE windows end in the past so EXPIRED is reachable. */
async function grantIn(state: State): Promise<string> {
  const apiId = await newApi();
  const live = state === 'PENDING' || state === 'REJECTED' || state === 'WITHDRAWN' ? 'PENDING' : 'ACTIVE';
  const window = live === 'ACTIVE' ? "now() - interval '2 days', now() - interval '1 hour'" : 'NULL, NULL';
  const [g] = (await t.sql.unsafe(`INSERT INTO authz_grant (app_id, api_id, state, start_at, end_at) VALUES ($1, $2, $3, ${window}) RETURNING id`, [
    fx.appId,
    apiId,
    live,
  ])) as unknown as { id: string }[];
  const id = g!.id;
  if (state !== live) await t.sql.unsafe(`UPDATE authz_grant SET ${TO[state]} WHERE id = $1`, [id]);
  return id;
}

// The columns each target state needs to satisfy the table CHECKs, so a refusal can only come from the trigger's rules.
const TO: Record<State, string> = {
  PENDING: `state = 'PENDING'`,
  ACTIVE: `state = 'ACTIVE', start_at = coalesce(start_at, now() - interval '2 days'), end_at = coalesce(end_at, now() - interval '1 hour'),
           cancel_requested_at = NULL, cancel_at = NULL, cancel_notice = NULL`,
  CANCEL_SCHEDULED: `state = 'CANCEL_SCHEDULED', start_at = coalesce(start_at, now() - interval '2 days'), end_at = coalesce(end_at, now() - interval '1 hour'),
           cancel_requested_at = now(), cancel_notice = interval '2 days', cancel_at = now() + interval '2 days'`,
  CANCELLED: `state = 'CANCELLED', closed_by = 'APP', closed_at = now()`,
  EXPIRED: `state = 'EXPIRED', closed_by = 'SYSTEM', closed_at = now()`,
  REJECTED: `state = 'REJECTED', closed_by = 'API', closed_at = now()`,
  WITHDRAWN: `state = 'WITHDRAWN', closed_by = 'APP', closed_at = now()`,
};

describe('authz_grant', () => {
  test('exactly the transitions T1–T13 are allowed (every state pair tried)', async () => {
    const allowed = new Set([
      'PENDING>PENDING', 'PENDING>ACTIVE', 'PENDING>REJECTED', 'PENDING>WITHDRAWN',
      'ACTIVE>ACTIVE', 'ACTIVE>CANCEL_SCHEDULED', 'ACTIVE>CANCELLED', 'ACTIVE>EXPIRED',
      'CANCEL_SCHEDULED>CANCEL_SCHEDULED', 'CANCEL_SCHEDULED>ACTIVE', 'CANCEL_SCHEDULED>CANCELLED', 'CANCEL_SCHEDULED>EXPIRED',
    ]);
    const got = new Set<string>();
    for (const from of STATES) {
      for (const to of STATES) {
        const id = await grantIn(from);
        try {
          await t.sql.unsafe(`UPDATE authz_grant SET ${TO[to]} WHERE id = $1`, [id]);
          got.add(`${from}>${to}`);
        } catch (err) {
          const e = err as postgres.PostgresError;
          assert.equal(e.code, '23514', `${from}>${to}: ${e.message}`);
          if (from !== to && !['CANCELLED', 'EXPIRED', 'REJECTED', 'WITHDRAWN'].includes(from) && !(to === 'PENDING' || ((to === 'REJECTED' || to === 'WITHDRAWN') && from !== 'PENDING'))) {
            assert.equal(e.constraint_name, 'authz_grant_transition', `${from}>${to}: ${e.message}`);
          }
        }
      }
    }
    assert.deepEqual([...got].sort(), [...allowed].sort());
  });

  test('INSERT only as PENDING or ACTIVE', async () => {
    for (const s of ['CANCELLED', 'EXPIRED', 'REJECTED', 'WITHDRAWN', 'CANCEL_SCHEDULED']) {
      const api = await newApi();
      await refused(
        t.sql.unsafe(
          `INSERT INTO authz_grant (app_id, api_id, state, start_at, end_at, closed_at, closed_by, cancel_requested_at, cancel_at, cancel_notice)
           VALUES ($1, $2, $3, now() - interval '2 days', now() - interval '1 day', now(), 'SYSTEM', now() - interval '3 days', now() - interval '1 day', interval '2 days')`,
          [fx.appId, api, s],
        ),
      );
    }
  });

  test('closing sets closed_at to now() and closed rows never change', async () => {
    const id = await grantIn('PENDING');
    const [r] = await t.sql<{ closed_at: Date; now: Date }[]>`
      UPDATE authz_grant SET state = 'REJECTED', closed_by = 'API', closed_at = '2000-01-01' WHERE id = ${id} RETURNING closed_at, now() AS now`;
    assert.equal(r!.closed_at.getTime(), r!.now.getTime());
    await refused(t.sql`UPDATE authz_grant SET updated_at = now() WHERE id = ${id}`, 'authz_grant_closed');
  });

  test('end_at never decreases nor becomes NULL; start_at, app_id, api_id are immutable; renew moves end later', async () => {
    const api = await newApi();
    const [g] = await t.sql<{ id: string; updated_at: Date }[]>`
      INSERT INTO authz_grant (app_id, api_id, state, start_at, end_at) VALUES (${fx.appId}, ${api}, 'ACTIVE', now(), now() + interval '10 days')
      RETURNING id, updated_at`;
    await refused(t.sql`UPDATE authz_grant SET end_at = end_at - interval '1 second' WHERE id = ${g!.id}`, 'authz_grant_end_at_decrease');
    await refused(t.sql`UPDATE authz_grant SET end_at = NULL WHERE id = ${g!.id}`, 'authz_grant_end_at_decrease');
    await refused(t.sql`UPDATE authz_grant SET start_at = start_at + interval '1 second' WHERE id = ${g!.id}`, 'authz_grant_immutable');
    await refused(t.sql`UPDATE authz_grant SET api_id = ${await newApi()} WHERE id = ${g!.id}`, 'authz_grant_immutable');
    const [r] = await t.sql<{ end_at: Date; updated_at: Date }[]>`
      UPDATE authz_grant SET end_at = end_at + interval '30 days' WHERE id = ${g!.id} RETURNING end_at, updated_at`;
    assert.ok(r!.end_at.getTime() > Date.now() + 30 * 86400e3);
    assert.ok(r!.updated_at.getTime() >= g!.updated_at.getTime());
  });

  test('EXPIRED only once end_at has passed', async () => {
    const api = await newApi();
    const [g] = await t.sql<{ id: string }[]>`
      INSERT INTO authz_grant (app_id, api_id, state, start_at, end_at) VALUES (${fx.appId}, ${api}, 'ACTIVE', now(), now() + interval '1 day') RETURNING id`;
    await refused(t.sql`UPDATE authz_grant SET state = 'EXPIRED', closed_by = 'SYSTEM', closed_at = now() WHERE id = ${g!.id}`, 'authz_grant_expire_early');
  });

  test('reviewer cancellation: notice must be respected and the grant cannot close before cancel_at (the app can)', async () => {
    const api = await newApi();
    const [g] = await t.sql<{ id: string }[]>`
      INSERT INTO authz_grant (app_id, api_id, state, start_at, end_at) VALUES (${fx.appId}, ${api}, 'ACTIVE', now(), now() + interval '30 days') RETURNING id`;
    await refused(
      t.sql`UPDATE authz_grant SET state = 'CANCEL_SCHEDULED', cancel_requested_at = now(), cancel_notice = interval '2 days',
                                   cancel_at = now() + interval '1 day' WHERE id = ${g!.id}`,
      'notice_respected',
    );
    await t.sql`UPDATE authz_grant SET state = 'CANCEL_SCHEDULED', cancel_requested_at = now(), cancel_notice = interval '2 days',
                                       cancel_at = now() + interval '2 days' WHERE id = ${g!.id}`;
    await refused(t.sql`UPDATE authz_grant SET state = 'CANCELLED', closed_by = 'API', closed_at = now() WHERE id = ${g!.id}`, 'cancel_not_early');
    await refused(t.sql`UPDATE authz_grant SET state = 'CANCELLED', closed_by = 'SYSTEM', closed_at = now() WHERE id = ${g!.id}`, 'cancel_not_early');
    await t.sql`UPDATE authz_grant SET state = 'CANCELLED', closed_by = 'APP' WHERE id = ${g!.id}`;
    // T12: the system closes it once cancel_at has passed.
    const api2 = await newApi();
    const [g2] = await t.sql<{ id: string }[]>`
      INSERT INTO authz_grant (app_id, api_id, state, start_at, end_at) VALUES (${fx.appId}, ${api2}, 'ACTIVE', now() - interval '5 days', now() + interval '30 days') RETURNING id`;
    await t.sql`UPDATE authz_grant SET state = 'CANCEL_SCHEDULED', cancel_requested_at = now() - interval '3 days', cancel_notice = interval '2 days',
                                       cancel_at = now() - interval '1 day' WHERE id = ${g2!.id}`;
    await t.sql`UPDATE authz_grant SET state = 'CANCELLED', closed_by = 'SYSTEM' WHERE id = ${g2!.id}`;
  });

  test('one live grant per (app, API)', async () => {
    const api = await newApi();
    await t.sql`INSERT INTO authz_grant (app_id, api_id, state) VALUES (${fx.appId}, ${api}, 'PENDING')`;
    await refused(t.sql`INSERT INTO authz_grant (app_id, api_id, state) VALUES (${fx.appId}, ${api}, 'PENDING')`, 'authz_grant_one_live', '23505');
  });
});

// ---------------------------------------------------------------- grant requests

describe('authz_grant_request', () => {
  test('four-eyes: the applicant cannot approve (any letter case); another reviewer can; decided requests are frozen', async () => {
    const gid = await grantIn('PENDING');
    const [r] = await t.sql<{ id: string }[]>`
      INSERT INTO authz_grant_request (grant_id, kind, requested_end_at, applicant_user_id, applicant_account)
      VALUES (${gid}, 'APPLY', now() + interval '10 days', ${fx.userId}, 'owner') RETURNING id`;
    await refused(
      t.sql`UPDATE authz_grant_request SET status = 'APPROVED', reviewer_account = 'OWNER', approved_end_at = now() + interval '10 days', decided_at = now() WHERE id = ${r!.id}`,
      'authz_grant_request_check4',
    );
    await t.sql`UPDATE authz_grant_request SET status = 'APPROVED', reviewer_account = 'bob', approved_end_at = now() + interval '10 days', decided_at = now() WHERE id = ${r!.id}`;
    await refused(t.sql`UPDATE authz_grant_request SET comment = 'edited' WHERE id = ${r!.id}`, 'authz_grant_request_decided');
    await refused(t.sql`UPDATE authz_grant_request SET status = 'REJECTED' WHERE id = ${r!.id}`, 'authz_grant_request_decided');
    // Deleting the applicant (the foreign key sets the reference to NULL) still works.
    const tmp = await insertUser(t.sql, 'leaver');
    const gid2 = await grantIn('PENDING');
    const [r2] = await t.sql<{ id: string }[]>`
      INSERT INTO authz_grant_request (grant_id, kind, requested_end_at, applicant_user_id, applicant_account)
      VALUES (${gid2}, 'APPLY', now() + interval '10 days', ${tmp}, 'leaver') RETURNING id`;
    await t.sql`UPDATE authz_grant_request SET status = 'REJECTED', reviewer_account = 'bob', decided_at = now() WHERE id = ${r2!.id}`;
    await t.sql`DELETE FROM authz_user WHERE id = ${tmp}`;
    const [after] = await t.sql`SELECT applicant_user_id, applicant_account FROM authz_grant_request WHERE id = ${r2!.id}`;
    assert.deepEqual({ ...after }, { applicant_user_id: null, applicant_account: 'leaver' });
  });

  test('INSERT only as PENDING; APPLY needs a PENDING grant; RENEW needs an ACTIVE grant and a later end', async () => {
    const pending = await grantIn('PENDING');
    await refused(
      t.sql`INSERT INTO authz_grant_request (grant_id, kind, status, requested_end_at, applicant_account, reviewer_account, decided_at)
            VALUES (${pending}, 'APPLY', 'REJECTED', now() + interval '1 day', 'a', 'b', now())`,
      'authz_grant_request_insert_status',
    );
    await refused(
      t.sql`INSERT INTO authz_grant_request (grant_id, kind, requested_end_at, applicant_account) VALUES (${pending}, 'RENEW', now() + interval '1 day', 'a')`,
      'authz_grant_request_renew_state',
    );
    const api = await newApi();
    const [g] = await t.sql<{ id: string }[]>`
      INSERT INTO authz_grant (app_id, api_id, state, start_at, end_at) VALUES (${fx.appId}, ${api}, 'ACTIVE', now(), now() + interval '10 days') RETURNING id`;
    await refused(
      t.sql`INSERT INTO authz_grant_request (grant_id, kind, requested_end_at, applicant_account) VALUES (${g!.id}, 'APPLY', now() + interval '20 days', 'a')`,
      'authz_grant_request_apply_state',
    );
    await refused(
      t.sql`INSERT INTO authz_grant_request (grant_id, kind, requested_end_at, applicant_account)
            SELECT id, 'RENEW', end_at, 'a' FROM authz_grant WHERE id = ${g!.id}`,
      'authz_grant_request_renew_shorter',
    );
    await t.sql`INSERT INTO authz_grant_request (grant_id, kind, requested_end_at, applicant_account) VALUES (${g!.id}, 'RENEW', now() + interval '20 days', 'a')`;
    await refused(
      t.sql`INSERT INTO authz_grant_request (grant_id, kind, requested_end_at, applicant_account) VALUES (${g!.id}, 'RENEW', now() + interval '30 days', 'a')`,
      'authz_grant_request_one_pending',
      '23505',
    );
    const sched = await grantIn('CANCEL_SCHEDULED');
    await refused(
      t.sql`INSERT INTO authz_grant_request (grant_id, kind, requested_end_at, applicant_account) VALUES (${sched}, 'RENEW', now() + interval '30 days', 'a')`,
      'authz_grant_request_renew_state',
    );
  });
});

// ---------------------------------------------------------------- access keys

let akCounter = 0;
function akid(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let n = ++akCounter;
  let s = '';
  for (let i = 0; i < 16; i++) {
    s = alphabet[n % 32] + s;
    n = Math.floor(n / 32);
  }
  return `UMAK${s}`;
}

function insertKey(owner: string, opts: { status?: string; past?: boolean } = {}) {
  const id = akid();
  const q = opts.past
    ? t.sql`INSERT INTO authz_access_key (access_key_id, owner_user_id, status, secret_ciphertext, secret_nonce, master_key_id, created_at, expires_at)
            VALUES (${id}, ${owner}, ${opts.status ?? 'Active'}, ${Buffer.alloc(56)}, ${Buffer.alloc(12)}, 'k1', now() - interval '2 days', now() - interval '1 day')`
    : t.sql`INSERT INTO authz_access_key (access_key_id, owner_user_id, status, secret_ciphertext, secret_nonce, master_key_id)
            VALUES (${id}, ${owner}, ${opts.status ?? 'Active'}, ${Buffer.alloc(56)}, ${Buffer.alloc(12)}, 'k1')`;
  return { id, q };
}

describe('authz_access_key', () => {
  test('at most 2 active, unexpired keys per owner; inactive and expired ones do not count', async () => {
    const u = await insertUser(t.sql, 'keyowner');
    const a = insertKey(u);
    await a.q;
    await insertKey(u).q;
    const third = insertKey(u);
    await refused(third.q, 'authz_access_key_limit');
    const inactive = insertKey(u, { status: 'Inactive' });
    await inactive.q;
    await insertKey(u, { past: true }).q;
    await refused(t.sql`UPDATE authz_access_key SET status = 'Active' WHERE access_key_id = ${inactive.id}`, 'authz_access_key_limit');
    // A key in its rotation grace still counts until it expires; bringing it to now frees the slot.
    await t.sql`UPDATE authz_access_key SET expires_at = now() WHERE access_key_id = ${a.id}`;
    await t.sql`UPDATE authz_access_key SET status = 'Active' WHERE access_key_id = ${inactive.id}`;
    // Another owner is unaffected.
    const other = await insertUser(t.sql, 'keyowner2');
    await insertKey(other).q;
  });

  test('concurrent creations under the write protocol: exactly 2 succeed', async () => {
    const u = await insertUser(t.sql, 'racer');
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, () =>
        writeAuthz(t.sql, { type: 'CLI' }, async (tx) => {
          const k = akid();
          await tx.sql`INSERT INTO authz_access_key (access_key_id, owner_user_id, secret_ciphertext, secret_nonce, master_key_id)
                       VALUES (${k}, ${u}, ${Buffer.alloc(56)}, ${Buffer.alloc(12)}, 'k1')`;
          tx.event({ action: 'key.create', targetType: 'access_key', targetId: k, effect: { ak: k } });
        }),
      ),
    );
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 2);
    for (const r of results) {
      if (r.status === 'rejected') assert.ok(r.reason instanceof DomainError && r.reason.code === 'KEY_LIMIT', String(r.reason));
    }
  });

  test('the owner is immutable; expires_at once set may only decrease', async () => {
    const u = await insertUser(t.sql, 'immut');
    const v = await insertUser(t.sql, 'immut2');
    const k = insertKey(u);
    await k.q;
    await refused(t.sql`UPDATE authz_access_key SET owner_user_id = ${v} WHERE access_key_id = ${k.id}`, 'authz_access_key_owner_immutable');
    await refused(t.sql`UPDATE authz_access_key SET owner_user_id = NULL, owner_app_id = ${fx.appId} WHERE access_key_id = ${k.id}`, 'authz_access_key_owner_immutable');
    await t.sql`UPDATE authz_access_key SET expires_at = now() + interval '1 day' WHERE access_key_id = ${k.id}`;
    await refused(t.sql`UPDATE authz_access_key SET expires_at = now() + interval '2 days' WHERE access_key_id = ${k.id}`, 'authz_access_key_expiry_extend');
    await refused(t.sql`UPDATE authz_access_key SET expires_at = NULL WHERE access_key_id = ${k.id}`, 'authz_access_key_expiry_extend');
    await t.sql`UPDATE authz_access_key SET expires_at = now() + interval '1 hour' WHERE access_key_id = ${k.id}`;
  });
});

// ---------------------------------------------------------------- directory cycles

describe('directory cycles', () => {
  test('a department cannot move under its own descendant (or itself)', async () => {
    const [org] = await t.sql<{ id: string }[]>`INSERT INTO authz_org (name) VALUES ('org-dept') RETURNING id`;
    const [root] = await t.sql<{ id: string }[]>`INSERT INTO authz_department (org_id, name) VALUES (${org!.id}, 'root') RETURNING id`;
    const [a] = await t.sql<{ id: string }[]>`INSERT INTO authz_department (org_id, super_id, name) VALUES (${org!.id}, ${root!.id}, 'a') RETURNING id`;
    const [b] = await t.sql<{ id: string }[]>`INSERT INTO authz_department (org_id, super_id, name) VALUES (${org!.id}, ${a!.id}, 'b') RETURNING id`;
    const [c] = await t.sql<{ id: string }[]>`INSERT INTO authz_department (org_id, super_id, name) VALUES (${org!.id}, ${b!.id}, 'c') RETURNING id`;
    await refused(t.sql`UPDATE authz_department SET super_id = ${c!.id} WHERE id = ${a!.id}`, 'authz_department_no_cycle');
    await refused(t.sql`UPDATE authz_department SET super_id = ${b!.id} WHERE id = ${a!.id}`, 'authz_department_no_cycle');
    await refused(t.sql`UPDATE authz_department SET super_id = ${a!.id} WHERE id = ${root!.id}`, 'authz_department_no_cycle');
    await refused(t.sql`UPDATE authz_department SET super_id = ${a!.id} WHERE id = ${a!.id}`, /authz_department_(no_cycle|check)/);
    await t.sql`UPDATE authz_department SET super_id = ${root!.id} WHERE id = ${c!.id}`;
    await t.sql`UPDATE authz_department SET super_id = ${c!.id} WHERE id = ${b!.id}`; // b now under c, which is no descendant of b
    await refused(t.sql`INSERT INTO authz_department (org_id, name) VALUES (${org!.id}, 'second root')`, 'authz_department_one_root', '23505');
  });

  test('child roles cannot form a cycle; a diamond is fine', async () => {
    const [org] = await t.sql<{ id: string }[]>`INSERT INTO authz_org (name) VALUES ('org-role') RETURNING id`;
    const ids: string[] = [];
    for (const n of ['r1', 'r2', 'r3', 'r4']) {
      const [r] = await t.sql<{ id: string }[]>`INSERT INTO authz_role (org_id, name) VALUES (${org!.id}, ${n}) RETURNING id`;
      ids.push(r!.id);
    }
    const [r1, r2, r3, r4] = ids as [string, string, string, string];
    const edge = (p: string, c: string) => t.sql`INSERT INTO authz_role_child (org_id, role_id, child_id) VALUES (${org!.id}, ${p}, ${c})`;
    await edge(r1, r2);
    await edge(r2, r3);
    await refused(edge(r3, r1), 'authz_role_child_no_cycle');
    await refused(edge(r3, r2), 'authz_role_child_no_cycle');
    await refused(edge(r1, r1), /authz_role_child_(no_cycle|check)/);
    await edge(r1, r3); // diamond: r1 → r2 → r3 and r1 → r3
    await edge(r4, r1);
    await refused(t.sql`UPDATE authz_role_child SET child_id = ${r4} WHERE role_id = ${r2} AND child_id = ${r3}`, 'authz_role_child_no_cycle');
  });
});

// ---------------------------------------------------------------- embedded

test('embedded PGlite: the authz migration runs and its triggers work', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'umtest-authz-pglite-'));
  const cfg: DbConfig = { ...DB_DEFAULTS, host: null, dataDir: dir };
  const log = testLogger(undefined, 'warn');
  const db = await openDatabase(cfg, log);
  try {
    const rep = await migrate(cfg, db, log);
    assert.equal(rep.authz, 'created');
    assert.equal((await migrate(cfg, db, log)).authz, 'present');
    const st = await migrationStatus(db);
    assert.equal(st.authz, 'current');
    assert.equal(st.current, true);
    const out = await writeAuthz(db.registry, { type: 'CLI' }, async (tx) => {
      await tx.sql`INSERT INTO authz_user (account, username) VALUES ('emb', 'emb')`;
      tx.event({ action: 'user.create', targetType: 'user', targetId: 'emb' });
    });
    assert.equal(out.events[0]!.seq, 1);
    await refused(db.registry`DELETE FROM authz_event`, 'authz_event_append_only');
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
