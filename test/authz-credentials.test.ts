// Credentials domain on real PostgreSQL and Redis: access keys, user tokens,
// token exchange and login rate limiting.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { Redis } from 'ioredis';
import { DomainError } from '../src/core/errors.ts';
import { ACCESS_KEY_ID_RE, decryptSecret, generateMasterKey, hashPassword, parseMasterKeys, SECRET_RE, TOKEN_RE, tokenSha256 } from '../src/access/crypto.ts';
import { Credentials, CREDENTIALS_DEFAULTS, isAdmin, type Caller } from '../src/access/credentials.ts';
import { loginKey, MemoryLoginLimiter, RedisLoginLimiter } from '../src/access/login-limit.ts';
import { AuthzStore, type CommittedEvent } from '../src/access/store.ts';
import { insertUser, migratedAuthzDb, type AuthzDb } from './support/authz.ts';

let t: AuthzDb;
let store: AuthzStore;
let creds: Credentials;
const committed: CommittedEvent[] = [];
const keys = parseMasterKeys(generateMasterKey('k1'));
let alice: Caller;
let bob: Caller;
let admin: Caller;
let aliceId: string;
let bobId: string;
let appPublic: string;

const caller = (id: string, isAdm = false): Caller => ({ userId: id, admin: isAdm, actor: { type: 'USER', id, ip: '127.0.0.1' } });

before(async () => {
  t = await migratedAuthzDb();
  store = new AuthzStore(t.sql);
  store.onCommit((evs) => committed.push(...evs));
  creds = new Credentials(store, { masterKeys: keys, ...CREDENTIALS_DEFAULTS });
  aliceId = await insertUser(t.sql, 'alice', { password_hash: await hashPassword('alice-password') });
  bobId = await insertUser(t.sql, 'bob');
  const adminId = await insertUser(t.sql, 'root', { is_superuser: true });
  alice = caller(aliceId);
  bob = caller(bobId);
  admin = caller(adminId, await isAdmin(t.sql, adminId));
  const [org] = await t.sql<{ id: string }[]>`INSERT INTO authz_org (name) VALUES ('o') RETURNING id`;
  const [proj] = await t.sql<{ id: string }[]>`INSERT INTO authz_project (org_id, name, resource_key, is_permanent) VALUES (${org!.id}, 'p', 'rk', true) RETURNING id`;
  appPublic = randomBytes(16).toString('hex');
  await t.sql`INSERT INTO authz_app (app_id, project_id, name, owner_user_id) VALUES (${appPublic}, ${proj!.id}, 'a', ${aliceId})`;
});
after(async () => {
  await t?.close();
});

const isErr = (kind: string, code?: string, field?: string) => (e: unknown) => {
  assert.ok(e instanceof DomainError, String(e));
  assert.equal(e.kind, kind, e.message);
  if (code) assert.equal(e.code, code, e.message);
  if (field) assert.equal(e.field, field, e.message);
  return true;
};

const lastEvents = (n: number) => committed.slice(-n);

describe('access keys', () => {
  test('isAdmin: superusers and authz_manage role members', async () => {
    assert.equal(admin.admin, true);
    assert.equal(await isAdmin(t.sql, aliceId), false);
  });

  test('create: secret once, encrypted at rest under the master key, event key.create without the secret', async () => {
    const k = await creds.createKey(alice, { ownerType: 'USER', ownerId: Number(aliceId), description: 'laptop' });
    assert.match(k.accessKeyId, ACCESS_KEY_ID_RE);
    assert.match(k.secretAccessKey, SECRET_RE);
    assert.equal(k.status, 'Active');
    assert.equal(k.ownerType, 'USER');
    assert.equal(k.ownerId, Number(aliceId));
    assert.equal(k.expiresDate, null);
    const [row] = await t.sql<{ secret_ciphertext: Buffer; secret_nonce: Buffer; master_key_id: string }[]>`
      SELECT secret_ciphertext, secret_nonce, master_key_id FROM authz_access_key WHERE access_key_id = ${k.accessKeyId}`;
    assert.equal(decryptSecret(keys, k.accessKeyId, { ciphertext: row!.secret_ciphertext, nonce: row!.secret_nonce, kid: row!.master_key_id }), k.secretAccessKey);
    const [ev] = lastEvents(1);
    assert.equal(ev!.action, 'key.create');
    assert.deepEqual(ev!.effect, { ak: k.accessKeyId });
    const stored = await t.sql`SELECT count(*)::int AS n FROM authz_event WHERE (coalesce(after::text, '') || coalesce(before::text, '') || effect::text) LIKE ${'%' + k.secretAccessKey + '%'}`;
    assert.equal(stored[0]!.n, 0, 'the secret never reaches the audit log');
    const got = await creds.getKey(alice, k.accessKeyId);
    assert.equal((got as unknown as Record<string, unknown>)['secretAccessKey'], undefined);
    assert.equal(got.description, 'laptop');
  });

  test('at most 2 active keys (KEY_LIMIT), and nothing half-written when refused', async () => {
    await creds.createKey(alice, { ownerType: 'USER', ownerId: aliceId });
    const before = await t.sql`SELECT count(*)::int AS n FROM authz_access_key`;
    await assert.rejects(creds.createKey(alice, { ownerType: 'USER', ownerId: aliceId }), isErr('conflict', 'KEY_LIMIT'));
    const afterRows = await t.sql`SELECT count(*)::int AS n FROM authz_access_key`;
    assert.equal(afterRows[0]!.n, before[0]!.n);
  });

  test('owners and admins only; app keys for the app owner; bad input names the field', async () => {
    await assert.rejects(creds.createKey(bob, { ownerType: 'USER', ownerId: aliceId }), isErr('forbidden', 'FORBIDDEN'));
    await assert.rejects(creds.createKey(bob, { ownerType: 'APP', ownerId: appPublic }), isErr('forbidden', 'FORBIDDEN'));
    const ak = await creds.createKey(alice, { ownerType: 'APP', ownerId: appPublic });
    assert.equal(ak.ownerType, 'APP');
    assert.equal(ak.ownerId, appPublic);
    const bk = await creds.createKey(admin, { ownerType: 'USER', ownerId: bobId });
    assert.equal(bk.ownerId, Number(bobId));
    await assert.rejects(creds.createKey(admin, { ownerType: 'GROUP', ownerId: 1 }), isErr('invalid', 'PARAM_INVALID', 'ownerType'));
    await assert.rejects(creds.createKey(admin, { ownerType: 'USER', ownerId: 'x' }), isErr('invalid', 'PARAM_INVALID', 'ownerId'));
    await assert.rejects(creds.createKey(admin, { ownerType: 'USER', ownerId: 999999 }), isErr('not_found', 'USER_NOT_FOUND', 'ownerId'));
    await assert.rejects(creds.createKey(admin, { ownerType: 'APP', ownerId: 'f'.repeat(32) }), isErr('not_found', undefined, 'ownerId'));
    await assert.rejects(creds.createKey(admin, { ownerType: 'USER', ownerId: bobId, description: 5 }), isErr('invalid', 'PARAM_INVALID', 'description'));
    await assert.rejects(creds.getKey(bob, ak.accessKeyId), isErr('not_found', 'KEY_NOT_FOUND'));
    await assert.rejects(creds.getKey(admin, 'nope'), isErr('not_found', 'KEY_NOT_FOUND'));
  });

  test('no master key → unavailable MASTER_KEY_MISSING', async () => {
    const noKey = new Credentials(store, { masterKeys: null, ...CREDENTIALS_DEFAULTS });
    await assert.rejects(noKey.createKey(admin, { ownerType: 'USER', ownerId: bobId }), isErr('unavailable', 'MASTER_KEY_MISSING'));
  });

  test('list: non-admins see only their own and their apps’ keys; filters and paging are checked', async () => {
    const mine = await creds.listKeys(alice);
    assert.ok(mine.total >= 3);
    assert.ok(mine.items.every((k) => k.ownerId === Number(aliceId) || k.ownerId === appPublic));
    const bobs = await creds.listKeys(bob);
    assert.ok(bobs.items.every((k) => k.ownerId === Number(bobId)));
    const all = await creds.listKeys(admin, { pageSize: 2 });
    assert.equal(all.items.length, 2);
    assert.ok(all.total > mine.total);
    const apps = await creds.listKeys(admin, { ownerType: 'APP', ownerId: appPublic });
    assert.equal(apps.total, 1);
    const page2 = await creds.listKeys(admin, { pageSize: 2, pageNo: 2 });
    assert.notDeepEqual(page2.items.map((k) => k.accessKeyId), all.items.map((k) => k.accessKeyId));
    await assert.rejects(creds.listKeys(admin, { pageSize: 0 }), isErr('invalid', 'PARAM_INVALID', 'pageSize'));
    await assert.rejects(creds.listKeys(admin, { pageNo: 'x' }), isErr('invalid', 'PARAM_INVALID', 'pageNo'));
    await assert.rejects(creds.listKeys(admin, { status: 'On' }), isErr('invalid', 'PARAM_INVALID', 'status'));
    await assert.rejects(creds.listKeys(admin, { ownerId: 3 }), isErr('invalid', 'PARAM_INVALID', 'ownerType'));
  });

  test('patch: Inactive is a key.status event with the key in its effect; reactivation respects the limit', async () => {
    const { items } = await creds.listKeys(alice, { ownerType: 'USER', ownerId: aliceId, status: 'Active' });
    assert.equal(items.length, 2);
    const k = items[0]!;
    const off = await creds.patchKey(alice, k.accessKeyId, { status: 'Inactive', description: 'off' });
    assert.equal(off.status, 'Inactive');
    assert.equal(off.description, 'off');
    const [ev] = lastEvents(1);
    assert.equal(ev!.action, 'key.status');
    assert.deepEqual(ev!.effect, { ak: k.accessKeyId, status: 'Inactive' });
    await creds.createKey(alice, { ownerType: 'USER', ownerId: aliceId });
    await assert.rejects(creds.patchKey(alice, k.accessKeyId, { status: 'Active' }), isErr('conflict', 'KEY_LIMIT'));
    await assert.rejects(creds.patchKey(alice, k.accessKeyId, { status: 'active' }), isErr('invalid', 'PARAM_INVALID', 'status'));
    await assert.rejects(creds.patchKey(alice, k.accessKeyId, {}), isErr('invalid', 'PARAM_INVALID'));
    await assert.rejects(creds.patchKey(bob, k.accessKeyId, { status: 'Inactive' }), isErr('not_found', 'KEY_NOT_FOUND'));
  });

  test('rotate: a new key with its secret, the old one valid until now + grace; refused at the limit; delete revokes', async () => {
    const bk = await creds.listKeys(bob);
    assert.equal(bk.total, 1);
    const old = bk.items[0]!;
    await assert.rejects(creds.rotateKey(bob, old.accessKeyId, { graceSeconds: 604801 }), isErr('invalid', 'PARAM_INVALID', 'graceSeconds'));
    const t0 = Date.now();
    const r = await creds.rotateKey(bob, old.accessKeyId, { graceSeconds: 3600 });
    assert.match(r.secretAccessKey, SECRET_RE);
    assert.notEqual(r.accessKeyId, old.accessKeyId);
    assert.equal(r.ownerId, Number(bobId));
    assert.equal(r.previous.accessKeyId, old.accessKeyId);
    const exp = Date.parse(r.previous.expiresDate);
    assert.ok(exp > t0 + 3590e3 && exp < Date.now() + 3610e3, r.previous.expiresDate);
    const oldNow = await creds.getKey(bob, old.accessKeyId);
    assert.equal(oldNow.expiresDate, r.previous.expiresDate);
    assert.equal(oldNow.rotatedTo, r.accessKeyId);
    const [c, rot] = lastEvents(2);
    assert.equal(c!.action, 'key.create');
    assert.equal(rot!.action, 'key.rotate');
    assert.deepEqual(rot!.effect, { ak: old.accessKeyId, expires_at: r.previous.expiresDate, rotated_to: r.accessKeyId });
    await assert.rejects(creds.rotateKey(bob, old.accessKeyId), isErr('conflict', 'CONFLICT'));
    // Two usable keys now (the old one is in its grace): another rotation has no room.
    const before = await t.sql`SELECT count(*)::int AS n FROM authz_access_key`;
    await assert.rejects(creds.rotateKey(bob, r.accessKeyId), isErr('conflict', 'KEY_LIMIT'));
    assert.deepEqual((await t.sql`SELECT count(*)::int AS n FROM authz_access_key`)[0], before[0]);
    assert.equal((await creds.getKey(bob, r.accessKeyId)).rotatedTo, null, 'the refused rotation left no trace');
    // Delete: immediate, and an event naming the key.
    assert.deepEqual(await creds.deleteKey(bob, old.accessKeyId), { accessKeyId: old.accessKeyId });
    const [del] = lastEvents(1);
    assert.equal(del!.action, 'key.delete');
    assert.deepEqual(del!.effect, { ak: old.accessKeyId });
    await assert.rejects(creds.getKey(bob, old.accessKeyId), isErr('not_found', 'KEY_NOT_FOUND'));
    await assert.rejects(creds.deleteKey(bob, old.accessKeyId), isErr('not_found', 'KEY_NOT_FOUND'));
    // Grace 0 frees the slot at once.
    const again = await creds.rotateKey(bob, r.accessKeyId, { graceSeconds: 0 });
    assert.ok(Date.parse(again.previous.expiresDate) <= Date.now());
    await creds.createKey(bob, { ownerType: 'USER', ownerId: bobId });
  });
});

describe('tokens', () => {
  test('password grant: a SESSION token stored only as its hash, with a token.issue event', async () => {
    const a = await creds.passwordGrant({ username: 'ALICE', password: 'alice-password' }, { ip: '127.0.0.1' });
    assert.match(a.access_token, TOKEN_RE);
    assert.equal(a.token_type, 'Bearer');
    assert.equal(a.expires_in, 43200);
    const [row] = await t.sql<{ id: string; kind: string; issued_via: string; secs: number }[]>`
      SELECT id, kind, issued_via, extract(epoch FROM expires_at - created_at)::int AS secs FROM authz_token WHERE token_sha256 = ${tokenSha256(a.access_token)}`;
    assert.deepEqual({ ...row, id: undefined }, { id: undefined, kind: 'SESSION', issued_via: 'password', secs: 43200 });
    const [ev] = lastEvents(1);
    assert.equal(ev!.action, 'token.issue');
    assert.deepEqual(ev!.effect, { token_id: Number(row!.id), user_id: Number(aliceId) });
    const leaked = await t.sql`SELECT count(*)::int AS n FROM authz_event WHERE coalesce(after::text, '') LIKE ${'%' + a.access_token.slice(4) + '%'}`;
    assert.equal(leaked[0]!.n, 0);
  });

  test('password grant: wrong password, unknown account and disabled user are indistinguishable', async () => {
    const msgs: string[] = [];
    const catchMsg = async (p: Promise<unknown>) => {
      await assert.rejects(p, (e: unknown) => {
        assert.ok(e instanceof DomainError && e.kind === 'invalid' && e.code === 'invalid_grant', String(e));
        msgs.push(e.message);
        return true;
      });
    };
    await catchMsg(creds.passwordGrant({ username: 'alice', password: 'nope-nope' }, { ip: '127.0.0.2' }));
    await catchMsg(creds.passwordGrant({ username: 'nobody', password: 'nope-nope' }, { ip: '127.0.0.2' }));
    const off = await insertUser(t.sql, 'disabled', { status: 0, password_hash: await hashPassword('right-password') });
    assert.ok(off);
    await catchMsg(creds.passwordGrant({ username: 'disabled', password: 'right-password' }, { ip: '127.0.0.2' }));
    assert.equal(new Set(msgs).size, 1);
    await assert.rejects(creds.passwordGrant({ username: 'alice' }), isErr('invalid', 'invalid_grant', 'password'));
    await assert.rejects(creds.passwordGrant({ username: 7, password: 'x' }), isErr('invalid', 'invalid_grant', 'username'));
  });

  test('login rate limit: the 11th attempt in the window is refused with retryAfter, per (account, IP)', async () => {
    const limited = new Credentials(store, { masterKeys: keys, ...CREDENTIALS_DEFAULTS }, { limiter: new MemoryLoginLimiter() });
    for (let i = 0; i < 10; i++) {
      await assert.rejects(limited.passwordGrant({ username: 'alice', password: 'wrong' }, { ip: '127.0.0.9' }), isErr('invalid', 'invalid_grant'));
    }
    await assert.rejects(limited.passwordGrant({ username: 'alice', password: 'alice-password' }, { ip: '127.0.0.9' }), (e: unknown) => {
      assert.ok(e instanceof DomainError && e.kind === 'too_many', String(e));
      assert.ok(e.retryAfter! > 0 && e.retryAfter! <= 900, String(e.retryAfter));
      return true;
    });
    // Another IP (or account) is unaffected.
    const ok = await limited.passwordGrant({ username: 'alice', password: 'alice-password' }, { ip: '127.0.0.10' });
    assert.match(ok.access_token, TOKEN_RE);
  });

  test('personal tokens: 1–366 days, listed without the token, owner or admin only, deleted = revoked', async () => {
    await assert.rejects(creds.createPersonalToken(alice, 'current', { name: 'ci', expiresInDays: 0 }), isErr('invalid', 'PARAM_INVALID', 'expiresInDays'));
    await assert.rejects(creds.createPersonalToken(alice, 'current', { name: 'ci', expiresInDays: 367 }), isErr('invalid', 'PARAM_INVALID', 'expiresInDays'));
    await assert.rejects(creds.createPersonalToken(alice, 'current', { name: 'ci' }), isErr('invalid', 'PARAM_INVALID', 'expiresInDays'));
    await assert.rejects(creds.createPersonalToken(bob, aliceId, { name: 'x', expiresInDays: 1 }), isErr('forbidden', 'FORBIDDEN'));
    const p = await creds.createPersonalToken(alice, 'current', { name: 'ci', expiresInDays: 366 });
    assert.match(p.token, TOKEN_RE);
    assert.ok(Math.abs(Date.parse(p.expiresDate) - (Date.now() + 366 * 86400e3)) < 60e3);
    const byAdmin = await creds.createPersonalToken(admin, aliceId, { name: 'by admin', expiresInDays: 1 });
    const list = await creds.listPersonalTokens(alice, 'current');
    assert.deepEqual(list.map((x) => x.id).sort(), [p.id, byAdmin.id].sort());
    assert.ok(list.every((x) => !JSON.stringify(x).includes(p.token.slice(12))), 'only the hint is listed');
    assert.equal(list.find((x) => x.id === p.id)!.hint, p.token.slice(0, 12));
    await assert.rejects(creds.listPersonalTokens(bob, aliceId), isErr('forbidden', 'FORBIDDEN'));
    assert.deepEqual(await creds.deletePersonalToken(alice, aliceId, p.id), { id: p.id });
    const [ev] = lastEvents(1);
    assert.equal(ev!.action, 'token.revoke');
    assert.deepEqual(ev!.effect, { token_ids: [p.id] });
    await assert.rejects(creds.deletePersonalToken(alice, aliceId, p.id), isErr('not_found', 'TOKEN_NOT_FOUND'));
    assert.deepEqual((await creds.listPersonalTokens(alice, 'current')).map((x) => x.id), [byAdmin.id]);
  });

  test('revoke by token (RFC 7009): holding it is enough; unknown or malformed tokens are not errors', async () => {
    const a = await creds.passwordGrant({ username: 'alice', password: 'alice-password' }, { ip: '127.0.0.1' });
    const n0 = committed.length;
    await creds.revokeToken(a.access_token, { ip: '127.0.0.1' });
    assert.equal(committed.length, n0 + 1);
    const [ev] = lastEvents(1);
    assert.equal(ev!.action, 'token.revoke');
    const [row] = await t.sql<{ id: string; revoked: boolean }[]>`SELECT id, revoked_at IS NOT NULL AS revoked FROM authz_token WHERE token_sha256 = ${tokenSha256(a.access_token)}`;
    assert.equal(row!.revoked, true);
    assert.deepEqual(ev!.effect, { token_ids: [Number(row!.id)] });
    await creds.revokeToken(a.access_token); // already revoked
    await creds.revokeToken(`umt_${'A'.repeat(43)}`); // unknown
    await creds.revokeToken('garbage');
    await creds.revokeToken(undefined);
    assert.equal(committed.length, n0 + 1, 'no event for a no-op revoke');
  });

  test('token exchange: sub mapped through the utilmeta SSO binding, expiry capped by the JWT, revoked jti refused', async () => {
    await t.sql`INSERT INTO authz_user_sso (user_id, sso_type, sso_user_id) VALUES (${aliceId}, 'utilmeta', 'platform-user-42')`;
    const exp = Math.floor(Date.now() / 1000) + 600;
    const verify = async (jwt: string) => {
      if (jwt !== 'good.jwt.sig' && jwt !== 'other.jwt.sig') throw new Error('signature verification failed');
      return { sub: jwt === 'good.jwt.sig' ? 'platform-user-42' : 'stranger', jti: jwt === 'good.jwt.sig' ? 'jti-1' : 'jti-2', exp };
    };
    const type = 'urn:ietf:params:oauth:token-type:jwt';
    const r = await creds.tokenExchange({ subject_token: 'good.jwt.sig', subject_token_type: type }, verify);
    assert.match(r.access_token, TOKEN_RE);
    assert.equal(r.issued_token_type, 'urn:ietf:params:oauth:token-type:access_token');
    assert.ok(r.expires_in > 500 && r.expires_in <= 600, String(r.expires_in));
    const [row] = await t.sql`SELECT user_id, parent_jti, issued_via FROM authz_token WHERE token_sha256 = ${tokenSha256(r.access_token)}`;
    assert.deepEqual({ ...row }, { user_id: aliceId, parent_jti: 'jti-1', issued_via: 'token_exchange' });
    await assert.rejects(creds.tokenExchange({ subject_token: 'bad.jwt.sig', subject_token_type: type }, verify), (e: unknown) => {
      assert.ok(e instanceof DomainError && e.code === 'invalid_grant' && /signature verification failed/.test(e.message), String(e));
      return true;
    });
    await assert.rejects(creds.tokenExchange({ subject_token: 'other.jwt.sig', subject_token_type: type }, verify), isErr('invalid', 'invalid_grant'));
    await assert.rejects(creds.tokenExchange({ subject_token: 'good.jwt.sig', subject_token_type: 'jwt' }, verify), isErr('invalid', 'invalid_grant', 'subject_token_type'));
    await assert.rejects(creds.tokenExchange({ subject_token_type: type }, verify), isErr('invalid', 'invalid_grant', 'subject_token'));
    await t.sql`INSERT INTO authz_revoked_jti (jti, expires_at) VALUES ('jti-1', now() + interval '1 hour')`;
    await assert.rejects(creds.tokenExchange({ subject_token: 'good.jwt.sig', subject_token_type: type }, verify), (e: unknown) => {
      assert.ok(e instanceof DomainError && e.code === 'invalid_grant' && /revoked/.test(e.message), String(e));
      return true;
    });
    // A short-lived JWT caps the token.
    const short = await creds.tokenExchange({ subject_token: 'x', subject_token_type: type }, async () => ({ sub: 'platform-user-42', jti: 'jti-3', exp: Math.floor(Date.now() / 1000) + 30 }));
    assert.ok(short.expires_in <= 30, String(short.expires_in));
  });

  test('a lost database is unavailable / DB_UNAVAILABLE', async () => {
    const dead = postgres({ host: '127.0.0.1', port: 1, database: 'x', connect_timeout: 2, max: 1, onnotice: () => {} });
    try {
      const c = new Credentials(new AuthzStore(dead), { masterKeys: keys, ...CREDENTIALS_DEFAULTS });
      await assert.rejects(c.createKey(admin, { ownerType: 'USER', ownerId: 1 }), isErr('unavailable', 'DB_UNAVAILABLE'));
      await assert.rejects(c.passwordGrant({ username: 'alice', password: 'x' }), isErr('unavailable', 'DB_UNAVAILABLE'));
    } finally {
      await dead.end({ timeout: 1 });
    }
  });
});

describe('login limiters', () => {
  test('memory: window and retryAfter follow the clock; reset forgets', async () => {
    let now = 1_000_000;
    const m = new MemoryLoginLimiter({ max: 3, windowMs: 60_000, now: () => now });
    const k = loginKey('Alice', '127.0.0.1');
    assert.equal(k, loginKey('alice', '127.0.0.1'), 'accounts are case-insensitive');
    assert.notEqual(k, loginKey('alice', '127.0.0.2'));
    for (let i = 0; i < 3; i++) {
      assert.equal(await m.blockedFor(k), 0);
      await m.fail(k);
    }
    assert.equal(await m.blockedFor(k), 60);
    now += 45_000;
    assert.equal(await m.blockedFor(k), 15);
    now += 15_000;
    assert.equal(await m.blockedFor(k), 0, 'the window ended');
    await m.fail(k);
    await m.reset(k);
    assert.equal(await m.blockedFor(k), 0);
  });

  test('redis: shared by every node, INCR+PEXPIRE window; falls back to memory while Redis is down', async () => {
    const r1 = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true, maxRetriesPerRequest: 1 });
    const r2 = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true, maxRetriesPerRequest: 1 });
    await r1.connect();
    await r2.connect();
    const prefix = `umtest:login:${randomBytes(4).toString('hex')}:`;
    try {
      const node1 = new RedisLoginLimiter(r1, { prefix, max: 10, windowMs: 900_000 });
      const node2 = new RedisLoginLimiter(r2, { prefix, max: 10, windowMs: 900_000 });
      const k = loginKey('alice', '127.0.0.1');
      for (let i = 0; i < 5; i++) await node1.fail(k);
      for (let i = 0; i < 5; i++) await node2.fail(k);
      const wait = await node1.blockedFor(k);
      assert.ok(wait > 890 && wait <= 900, String(wait));
      assert.ok((await node2.blockedFor(k)) > 0, 'the other node sees the same counter');
      assert.equal(await r1.get(prefix + k), '10');
      const ttl = await r1.pttl(prefix + k);
      assert.ok(ttl > 0 && ttl <= 900_000, String(ttl));
      await node2.reset(k);
      assert.equal(await node1.blockedFor(k), 0);
      // Down: a client that is not connected uses the memory fallback and never waits.
      const down = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true });
      const viaMemory = new RedisLoginLimiter(down, { prefix, max: 2 });
      await viaMemory.fail(k);
      await viaMemory.fail(k);
      assert.ok((await viaMemory.blockedFor(k)) > 0);
      assert.equal(await r1.get(prefix + k), null, 'nothing reached Redis');
      down.disconnect();
    } finally {
      const left = await r1.keys(`${prefix}*`);
      if (left.length) await r1.del(...left);
      r1.disconnect();
      r2.disconnect();
    }
  });
});
