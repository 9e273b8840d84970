// recordRevokedJtis on a real database: rows with the right expiry (given, per
// jti, or one day by the database clock), `jti.revoke` events small enough for
// NOTIFY, tokens exchanged from a revoked jti revoked in the same transaction,
// and bad input refused before anything is written.
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { DomainError } from '../src/core/errors.ts';
import { AuthzStore } from '../src/access/store.ts';
import { issueToken } from '../src/access/credentials.ts';
import { recordRevokedJtis } from '../src/access/revocation.ts';
import { migratedAuthzDb, insertUser, type AuthzDb } from './support/authz.ts';

let t: AuthzDb;
let store: AuthzStore;
before(async () => {
  t = await migratedAuthzDb();
  store = new AuthzStore(t.sql);
});
after(async () => {
  await t?.close();
});

const events = (action: string) => t.sql<{ effect: { jtis: string[]; exp: number } }[]>`SELECT effect FROM authz_event WHERE action = ${action} ORDER BY seq`;

test('a given exp is kept; an unknown one is one day from now; duplicates count once', async () => {
  const exp = Math.floor(Date.now() / 1000) + 600;
  const r = await recordRevokedJtis(store, ['a1', 'a1', 'a2'], { exp, nodeId: 'node-x' });
  assert.deepEqual(r.jtis, ['a1', 'a2']);
  const rows = await t.sql<{ jti: string; node_id: string; e: number }[]>`SELECT jti, node_id, extract(epoch FROM expires_at)::float8 AS e FROM authz_revoked_jti WHERE jti IN ('a1','a2') ORDER BY jti`;
  assert.deepEqual(rows.map((x) => [x.jti, x.node_id, Number(x.e)]), [['a1', 'node-x', exp], ['a2', 'node-x', exp]]);
  const ev = (await events('jti.revoke')).at(-1)!;
  assert.deepEqual(ev.effect, { jtis: ['a1', 'a2'], exp });

  await recordRevokedJtis(store, ['b1'], {});
  const [b] = await t.sql<{ days: number }[]>`SELECT extract(epoch FROM expires_at - now())::float8 / 86400 AS days FROM authz_revoked_jti WHERE jti = 'b1'`;
  assert.ok(Math.abs(Number(b!.days) - 1) < 0.01, `about one day: ${b!.days}`);
});

test('per-jti expiries make one event per expiry; a long list is split into NOTIFY-sized events', async () => {
  const now = Math.floor(Date.now() / 1000);
  await recordRevokedJtis(store, ['c1', 'c2'], { exp: new Map([['c1', now + 100], ['c2', now + 200]]) });
  const last2 = (await events('jti.revoke')).slice(-2).map((e) => e.effect);
  assert.deepEqual(last2, [{ jtis: ['c1'], exp: now + 100 }, { jtis: ['c2'], exp: now + 200 }]);

  const many = Array.from({ length: 300 }, (_, i) => `long-${i}-${'x'.repeat(150)}`);
  const n0 = (await events('jti.revoke')).length;
  await recordRevokedJtis(store, many, { exp: now + 60 });
  const added = (await events('jti.revoke')).slice(n0);
  assert.ok(added.length > 1, 'split');
  assert.deepEqual(added.flatMap((e) => e.effect.jtis), many);
  for (const e of added) assert.ok(JSON.stringify(e.effect).length <= 6000);
});

test('tokens exchanged from a revoked jti are revoked with it', async () => {
  const uid = await insertUser(t.sql, 'exchanger');
  const { result: tok } = await store.write({ type: 'CLI' }, (tx) =>
    issueToken(tx, { id: uid, account: 'exchanger' }, { kind: 'SESSION', via: 'token_exchange', parentJti: 'parent-1', expires: tx.sql`now() + interval '1 hour'` }));
  const r = await recordRevokedJtis(store, ['parent-1']);
  assert.deepEqual(r.tokenIds, [tok.id]);
  const [row] = await t.sql<{ revoked_at: Date | null }[]>`SELECT revoked_at FROM authz_token WHERE id = ${tok.id}`;
  assert.ok(row!.revoked_at);
  const ev = (await events('token.revoke')).at(-1)!;
  assert.deepEqual((ev.effect as unknown as { token_ids: number[] }).token_ids, [Number(tok.id)]);
});

test('bad input names the field and writes nothing', async () => {
  const [{ n: before }] = await t.sql<{ n: string }[]>`SELECT count(*) AS n FROM authz_event`;
  await assert.rejects(recordRevokedJtis(store, ['ok', 42 as unknown as string]), (e: unknown) => e instanceof DomainError && e.field === 'jtis[1]');
  await assert.rejects(recordRevokedJtis(store, ['x'.repeat(201)]), (e: unknown) => e instanceof DomainError && e.field === 'jtis[0]');
  await assert.rejects(recordRevokedJtis(store, ['fine'], { exp: -5 }), (e: unknown) => e instanceof DomainError && e.field === 'exp');
  const [{ n: afterN }] = await t.sql<{ n: string }[]>`SELECT count(*) AS n FROM authz_event`;
  assert.equal(afterN, before);
  assert.deepEqual(await recordRevokedJtis(store, []), { jtis: [], tokenIds: [] });
});
