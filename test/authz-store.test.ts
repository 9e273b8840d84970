// The write protocol on real PostgreSQL: events with seq, rollback on error,
// error mapping to DomainError.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import postgres from 'postgres';
import { DomainError } from '../src/core/errors.ts';
import { AuthzStore, effectSize, mapDbError, MAX_EFFECT_BYTES, writeAuthz } from '../src/access/store.ts';
import { insertUser, migratedAuthzDb, type AuthzDb } from './support/authz.ts';

let t: AuthzDb;
before(async () => {
  t = await migratedAuthzDb();
});
after(async () => {
  await t?.close();
});

async function curSeq(): Promise<string> {
  const [r] = await t.sql<{ seq: string }[]>`SELECT seq FROM authz_state`;
  return r!.seq;
}

const cli = { type: 'CLI' as const, credential: 'cli', ip: '127.0.0.1', requestId: 'r-1' };

test('a write commits its rows and events and returns them in seq order', async () => {
  const s0 = await curSeq();
  const out = await writeAuthz(t.sql, { ...cli, id: 7, name: 'ops' }, async (tx) => {
    const [u] = await tx.sql<{ id: string }[]>`INSERT INTO authz_user (account, username) VALUES ('store-a', 'A') RETURNING id`;
    tx.event({ action: 'user.create', targetType: 'user', targetId: u!.id, effect: { user_id: Number(u!.id) }, after: { account: 'store-a' } });
    tx.event({ action: 'org.user.add', targetType: 'user', targetId: u!.id, effect: { user_id: Number(u!.id), org_id: 1 } });
    assert.equal(tx.lockedSeq, Number(s0));
    return u!.id;
  });
  assert.equal(out.events.length, 2);
  assert.deepEqual(out.events.map((e) => e.seq), [Number(s0) + 1, Number(s0) + 2]);
  assert.deepEqual(out.events.map((e) => e.action), ['user.create', 'org.user.add']);
  assert.equal(out.events[0]!.atMs, out.events[0]!.at.getTime());
  assert.deepEqual(out.events[0]!.effect, { user_id: Number(out.result) });
  const rows = await t.sql`SELECT actor_type, actor_id, actor_name, credential, host(client_ip) AS ip, request_id, target_id, after FROM authz_event WHERE seq = ${out.events[0]!.seq}`;
  assert.deepEqual({ ...rows[0] }, { actor_type: 'CLI', actor_id: '7', actor_name: 'ops', credential: 'cli', ip: '127.0.0.1', request_id: 'r-1', target_id: out.result, after: { account: 'store-a' } });
});

test('a throw rolls back rows and events: no half-written row, no seq consumed', async () => {
  const s0 = await curSeq();
  await assert.rejects(
    writeAuthz(t.sql, cli, async (tx) => {
      await tx.sql`INSERT INTO authz_user (account, username) VALUES ('store-b', 'B')`;
      tx.event({ action: 'user.create', targetType: 'user', targetId: 'x' });
      await tx.sql`INSERT INTO authz_user (account, username) VALUES ('STORE-B', 'B2')`; // case-insensitive duplicate
    }),
    (err: unknown) => err instanceof DomainError && err.kind === 'conflict' && err.code === 'ACCOUNT_EXISTS' && err.field === 'account',
  );
  assert.equal((await t.sql`SELECT 1 FROM authz_user WHERE lower(account) = 'store-b'`).length, 0);
  assert.equal(await curSeq(), s0);
});

test('a transaction without an event is refused (and rolled back)', async () => {
  await assert.rejects(writeAuthz(t.sql, cli, async (tx) => void (await tx.sql`INSERT INTO authz_user (account, username) VALUES ('store-c', 'C')`)), /queued no authz_event/);
  assert.equal((await t.sql`SELECT 1 FROM authz_user WHERE account = 'store-c'`).length, 0);
});

test('constraint errors map to DomainErrors naming the rule and field; overrides win', async () => {
  const bad = (fn: (sql: postgres.TransactionSql) => Promise<unknown>, opts = {}) =>
    writeAuthz(t.sql, cli, async (tx) => {
      await fn(tx.sql);
      tx.event({ action: 'x', targetType: 'x', targetId: 'x' });
    }, opts).then(() => assert.fail('expected a refusal'), (e: unknown) => e as DomainError);
  let e = await bad((s) => s`INSERT INTO authz_user (account, username) VALUES ('-bad', 'x')`);
  assert.ok(e instanceof DomainError);
  assert.equal(e.kind, 'invalid');
  assert.equal(e.field, 'account');
  e = await bad((s) => s`INSERT INTO authz_org_user (org_id, user_id) VALUES (999999, 999999)`);
  assert.equal(e.kind, 'invalid');
  assert.match(e.message, /does not exist/);
  e = await bad((s) => s`INSERT INTO authz_user (account, username) VALUES (${'a'.repeat(70)}, 'x')`);
  assert.equal(e.kind, 'invalid');
  e = await bad((s) => s`INSERT INTO authz_user (account, username) VALUES (null, 'x')`);
  assert.equal(e.kind, 'invalid');
  assert.equal(e.field, 'account');
  const uid = await insertUser(t.sql, 'store-d');
  e = await bad((s) => s`INSERT INTO authz_user (account, username) VALUES ('Store-D', 'x')`, {
    errors: { authz_user_account_ci: new DomainError('conflict', 'mine', { code: 'MINE' }) },
  });
  assert.equal(e.code, 'MINE');
  // still referenced → conflict
  await t.sql`INSERT INTO authz_org (name) VALUES ('store-org')`;
  const [org] = await t.sql<{ id: string }[]>`SELECT id FROM authz_org WHERE name = 'store-org'`;
  await t.sql`INSERT INTO authz_project (org_id, name, resource_key, is_permanent) VALUES (${org!.id}, 'p', 'rk-store', true)`;
  e = await bad((s) => s`DELETE FROM authz_org WHERE id = ${org!.id}`);
  assert.equal(e.kind, 'conflict');
  assert.ok(uid);
});

test('connection errors become unavailable / DB_UNAVAILABLE', async () => {
  const dead = postgres({ host: '127.0.0.1', port: 1, database: 'x', connect_timeout: 2, max: 1, onnotice: () => {} });
  try {
    await assert.rejects(
      writeAuthz(dead, cli, async () => {}),
      (err: unknown) => err instanceof DomainError && err.kind === 'unavailable' && err.code === 'DB_UNAVAILABLE',
    );
  } finally {
    await dead.end({ timeout: 1 });
  }
  const m = mapDbError(Object.assign(new Error('x'), { code: 'CONNECTION_CLOSED' }));
  assert.ok(m instanceof DomainError && m.kind === 'unavailable');
  const plain = new TypeError('bug');
  assert.equal(mapDbError(plain), plain, 'programming errors are not disguised');
});

test('an oversized effect becomes {reload: true}; AuthzStore tells its listeners', async () => {
  const store = new AuthzStore(t.sql);
  const seen: number[] = [];
  const off = store.onCommit((evs) => seen.push(...evs.map((e) => e.seq)));
  const big = { ids: Array.from({ length: 2000 }, (_, i) => i) };
  assert.ok(effectSize(big) > MAX_EFFECT_BYTES);
  const out = await store.write(cli, async (tx) => tx.event({ action: 'bulk', targetType: 'x', targetId: 1, effect: big }));
  assert.deepEqual(out.events[0]!.effect, { reload: true });
  assert.deepEqual(seen, [out.events[0]!.seq]);
  off();
  await store.write(cli, async (tx) => tx.event({ action: 'x', targetType: 'x', targetId: 1 }));
  assert.equal(seen.length, 1);
});

test('effectSize never underestimates the jsonb text size', async () => {
  for (const v of [{ a: 1, b: [1, 2, 3], c: { d: 'x:y,z' } }, { s: 'é'.repeat(50) }, {}]) {
    const [r] = await t.sql<{ n: number }[]>`SELECT octet_length(${t.sql.json(v)}::jsonb::text)::int AS n`;
    assert.ok(effectSize(v) >= r!.n, JSON.stringify(v));
  }
});
