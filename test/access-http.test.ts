// The access plane's management surfaces over HTTP, on both listeners, against a
// real node on real PostgreSQL: the directory (/minibase/portal/openapi/v1) and
// its error paths, access keys over SigV4 (create, use, disable, rotate with
// grace), bearer tokens (password grant, revoke), the login limit, app keys
// refused, and the database going away (503).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { call } from './support/http.ts';
import { sendSigned, jsonOf, type ClientResponse } from './support/sigv4-clients.ts';
import { authzBootstrap, type BootstrapResult } from '../src/access/cli.ts';
import { effectiveMasterKeys } from '../src/access/index.ts';
import { CLI_CALLER } from '../src/access/credentials.ts';

const DIR = '/minibase/portal/openapi/v1';
const MASTER = `k1:${randomBytes(32).toString('base64')}`;

for (const server of LISTENERS) {
  describe(`access plane over HTTP (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let boot: BootstrapResult;
    let key: { id: string; secret: string };

    const signed = (k: { id: string; secret: string }, method: string, path: string, opts: { query?: Array<[string, string]>; body?: unknown; raw?: string } = {}): Promise<ClientResponse> =>
      sendSigned('aws4', {
        baseUrl: node.origin, method, path, query: opts.query,
        headers: opts.body !== undefined || opts.raw !== undefined ? { 'content-type': 'application/json' } : {},
        body: opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)),
        accessKeyId: k.id, secretAccessKey: k.secret, service: 'minibasebe', region: 'pri',
      });
    const bearer = (token: string, method: string, path: string, body?: unknown) =>
      call(`${node.origin}${path}`, {
        method, body: body === undefined ? undefined : JSON.stringify(body),
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      });
    const eventCount = async () => Number((await node.db.registry<{ n: string }[]>`SELECT count(*) AS n FROM authz_event`)[0]!.n);

    before(async () => {
      dbs = freshDatabases();
      node = await startTestNode(server, dbs, { UTILMETA_PROXY_AUTHZ_MASTER_KEYS: MASTER });
      boot = await authzBootstrap(node.access.store, effectiveMasterKeys(node.config), { account: 'admin' });
      key = { id: boot.accessKeyId!, secret: boot.secretAccessKey! };
      await node.access.view.view.refresh();
    });
    after(async () => {
      await node?.close();
      await dbs?.drop();
    });

    it('directory: GET /orgs signed with SigV4 (minibasebe/pri) answers the seed envelope', async () => {
      const r = await signed(key, 'GET', `${DIR}/orgs`);
      assert.equal(r.status, 200, r.body);
      const j = jsonOf(r);
      assert.equal(j.code, 200);
      assert.equal(j.message, 'success');
      assert.ok(j.data.some((o: { id: number; name: string }) => o.id === boot.orgId && o.name === 'default'), r.body);
    });

    it('directory: create users, search with a query, patch, unknown ids', async () => {
      let r = await signed(key, 'POST', `${DIR}/users`, { body: [{ account: 'alice', username: 'Alice', password: 'correct horse 1' }, { account: 'bob', username: 'Bob', password: 'correct horse 2' }] });
      assert.equal(r.status, 200, r.body);
      r = await signed(key, 'GET', `${DIR}/users`, { query: [['account', 'alice']] });
      assert.equal(r.status, 200, r.body);
      const found = jsonOf(r).data;
      const list = Array.isArray(found) ? found : found.rows ?? found.users ?? found;
      assert.ok(JSON.stringify(list).includes('"account":"alice"'), r.body);
      r = await signed(key, 'PATCH', `${DIR}/users/account_alice`, { body: { username: 'Alice B' } });
      assert.equal(r.status, 200, r.body);
      r = await signed(key, 'PATCH', `${DIR}/users/account_nobody`, { body: { username: 'x' } });
      assert.equal(r.status, 404, r.body);
      assert.equal(jsonOf(r).code, 404);
      assert.equal(jsonOf(r).message, 'USER_NOT_FOUND');
      assert.equal(jsonOf(r).data.field, 'user_id');
    });

    it('directory: every bad input answers the envelope, names the field and writes nothing', async () => {
      const before = await eventCount();
      const cases: Array<{ what: string; method: string; path: string; query?: Array<[string, string]>; body?: unknown; raw?: string; status: number; message: string; field?: string }> = [
        { what: 'malformed JSON', method: 'POST', path: '/orgs', raw: '{"name": ', status: 400, message: 'PARAM_INVALID', field: 'body' },
        { what: 'wrong type', method: 'POST', path: '/orgs', body: { name: 42 }, status: 400, message: 'PARAM_INVALID', field: 'name' },
        { what: 'unknown enum', method: 'GET', path: `/orgs/${boot.orgId}/roles`, query: [['include_subjects', 'maybe']], status: 400, message: 'PARAM_INVALID', field: 'include_subjects' },
        { what: 'out-of-range paging', method: 'GET', path: '/users', query: [['page', '0']], status: 400, message: 'PARAM_INVALID', field: 'page' },
        { what: 'page size too large', method: 'GET', path: '/users', query: [['page_size', '100000']], status: 400, message: 'PARAM_INVALID', field: 'page_size' },
        { what: 'unknown org', method: 'POST', path: '/orgs/999999/users', body: { accounts: ['alice'] }, status: 404, message: 'ORG_NOT_FOUND', field: 'org_id' },
        { what: 'both user_ids and accounts', method: 'POST', path: `/orgs/${boot.orgId}/users`, body: { accounts: ['alice'], user_ids: [1] }, status: 400, message: 'PARAM_INVALID' },
        { what: 'short password in a batch', method: 'POST', path: '/users', body: [{ account: 'carol', username: 'C', password: 'short' }], status: 400, message: 'PARAM_INVALID' },
        { what: 'oversized body', method: 'POST', path: '/users', raw: JSON.stringify([{ account: 'dave', username: 'x'.repeat(1024 * 1024), password: 'long enough pw' }]), status: 413, message: 'PARAM_INVALID', field: 'body' },
      ];
      for (const c of cases) {
        const r = await signed(key, c.method, `${DIR}${c.path}`, { query: c.query, body: c.body, raw: c.raw });
        const j = jsonOf(r);
        assert.equal(r.status, c.status, `${c.what}: ${r.body.slice(0, 300)}`);
        assert.equal(j?.code, c.status, c.what);
        assert.equal(j?.message, c.message, `${c.what}: ${r.body.slice(0, 300)}`);
        assert.equal(typeof j?.data?.detail, 'string', c.what);
        if (c.field) assert.ok(String(j.data.field ?? '').includes(c.field) || j.data.detail.includes(c.field), `${c.what} names ${c.field}: ${r.body.slice(0, 300)}`);
      }
      assert.equal(await eventCount(), before, 'no event was written');
      const [carol] = await node.db.registry`SELECT 1 FROM authz_user WHERE account IN ('carol', 'dave')`;
      assert.equal(carol, undefined, 'no half-written user');
    });

    it('directory: unknown path 404, wrong method 405 with Allow, no credential 401', async () => {
      let r = await signed(key, 'GET', `${DIR}/nowhere`);
      assert.equal(r.status, 404);
      assert.equal(jsonOf(r).code, 404);
      assert.equal(jsonOf(r).message, 'NOT_FOUND');
      r = await signed(key, 'PUT', `${DIR}/orgs`, { body: {} });
      assert.equal(r.status, 405);
      assert.deepEqual(r.headers.allow.split(', ').sort(), ['GET', 'POST']);
      const u = await call(`${node.origin}${DIR}/orgs`);
      assert.equal(u.status, 401);
      assert.equal(u.json.code, 401);
      assert.equal(u.json.message, 'UNAUTHORIZED');
    });

    it('directory: a bad signature answers in the AWS error shape', async () => {
      const r = await signed({ id: key.id, secret: key.secret.replace(/.$/, (c) => (c === 'a' ? 'b' : 'a')) }, 'GET', `${DIR}/orgs`);
      assert.equal(r.status, 403, r.body);
      assert.equal(jsonOf(r).__type, 'SignatureDoesNotMatch');
      assert.equal(jsonOf(r).state, 'signature_mismatch');
    });

    it('directory: application/json;charset=utf8 is accepted; the bearer token works too', async () => {
      const r = await call(`${node.origin}${DIR}/orgs`, {
        method: 'POST', body: JSON.stringify({ name: `org-${server}` }),
        headers: { authorization: `Bearer ${boot.token}`, 'content-type': 'application/json;charset=utf8' },
      });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.code, 200);
    });

    it('access keys: create → use at once → disable → refused → enable → rotate with grace → both work until the grace ends', async () => {
      let r = await bearer(boot.token, 'POST', '/api/v1/access-keys', { ownerType: 'USER', ownerId: boot.userId, description: 'ci' });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.code, 'OK');
      const k1 = { id: r.json.data.accessKeyId as string, secret: r.json.data.secretAccessKey as string };
      assert.match(k1.id, /^UMAK[A-Z2-7]{16}$/);
      assert.equal(r.json.data.status, 'Active');
      const first = await signed(k1, 'GET', `${DIR}/orgs`);
      assert.equal(first.status, 200, `the new key works on the next request: ${first.body}`);

      r = await bearer(boot.token, 'GET', `/api/v1/access-keys/${k1.id}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.data.secretAccessKey, undefined, 'the secret is shown once');

      r = await bearer(boot.token, 'PATCH', `/api/v1/access-keys/${k1.id}`, { status: 'Inactive' });
      assert.equal(r.status, 200, r.text);
      const refused = await signed(k1, 'GET', `${DIR}/orgs`);
      assert.equal(refused.status, 403, refused.body);
      assert.equal(jsonOf(refused).state, 'key_disabled', refused.body);

      r = await bearer(boot.token, 'PATCH', `/api/v1/access-keys/${k1.id}`, { status: 'Active' });
      assert.equal(r.status, 200, r.text);
      assert.equal((await signed(k1, 'GET', `${DIR}/orgs`)).status, 200);

      // The bootstrap key plus k1 are two active keys: rotating needs room for the new one.
      r = await bearer(boot.token, 'POST', `/api/v1/access-keys/${k1.id}/rotate`, { graceSeconds: 2 });
      assert.equal(r.status, 409, r.text);
      assert.equal(r.json.code, 'KEY_LIMIT');
      r = await bearer(boot.token, 'PATCH', `/api/v1/access-keys/${key.id}`, { status: 'Inactive' });
      assert.equal(r.status, 200, r.text);
      r = await bearer(boot.token, 'POST', `/api/v1/access-keys/${k1.id}/rotate`, { graceSeconds: 2 });
      assert.equal(r.status, 200, r.text);
      const k2 = { id: r.json.data.accessKeyId as string, secret: r.json.data.secretAccessKey as string };
      assert.equal(r.json.data.previous.accessKeyId, k1.id);
      assert.equal((await signed(k2, 'GET', `${DIR}/orgs`)).status, 200, 'the new key works');
      assert.equal((await signed(k1, 'GET', `${DIR}/orgs`)).status, 200, 'the old key works during the grace');
      const graceEnd = Date.parse(r.json.data.previous.expiresDate);
      await new Promise((res) => setTimeout(res, Math.max(0, graceEnd - Date.now()) + 200));
      const late = await signed(k1, 'GET', `${DIR}/orgs`);
      assert.equal(late.status, 403, late.body);
      assert.match(jsonOf(late).state, /key_expired|key_disabled/);
      assert.equal((await signed(k2, 'GET', `${DIR}/orgs`)).status, 200);

      r = await bearer(boot.token, 'GET', `/api/v1/access-keys?ownerType=USER&ownerId=${boot.userId}&pageSize=10`);
      assert.equal(r.status, 200, r.text);
      assert.ok(r.json.data.items.some((k: { accessKeyId: string }) => k.accessKeyId === k2.id));
      r = await bearer(boot.token, 'GET', '/api/v1/access-keys?pageSize=1000');
      assert.equal(r.status, 400);
      assert.equal(r.json.code, 'PARAM_INVALID');
      assert.equal(r.json.ext.field, 'pageSize');

      r = await bearer(boot.token, 'DELETE', `/api/v1/access-keys/${k2.id}`);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json.data, { accessKeyId: k2.id });
      assert.equal((await signed(k2, 'GET', `${DIR}/orgs`)).status, 403);
      r = await bearer(boot.token, 'GET', `/api/v1/access-keys/${k2.id}`);
      assert.equal(r.status, 404);
      assert.equal(r.json.code, 'KEY_NOT_FOUND');
    });

    it('tokens: password grant → bearer on management → personal tokens → revoke → 401', async () => {
      const form = (fields: Record<string, string>) => call(`${node.origin}/api/v1/oauth/token`, {
        method: 'POST', body: new URLSearchParams(fields).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      let r = await form({ grant_type: 'password', username: 'alice', password: 'correct horse 1' });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.token_type, 'Bearer');
      assert.equal(r.json.expires_in, 43200);
      assert.equal(r.json.code, undefined, 'no envelope');
      const tok = r.json.access_token as string;
      assert.match(tok, /^umt_[\w-]{43}$/);
      r = await call(`${node.origin}${DIR}/orgs`, { headers: { 'x-auth-token': tok } });
      assert.equal(r.status, 200, r.text);

      // JSON is accepted too
      r = await call(`${node.origin}/api/v1/oauth/token`, { method: 'POST', body: JSON.stringify({ grant_type: 'password', username: 'alice', password: 'wrong password' }), headers: { 'content-type': 'application/json' } });
      assert.equal(r.status, 400);
      assert.equal(r.json.error, 'invalid_grant');
      r = await form({ grant_type: 'client_credentials' });
      assert.equal(r.status, 400);
      assert.equal(r.json.error, 'unsupported_grant_type');

      r = await bearer(tok, 'POST', '/api/v1/users/current/tokens', { name: 'ci', expiresInDays: 2 });
      assert.equal(r.status, 200, r.text);
      const personal = r.json.data as { id: number; token: string };
      assert.equal((await bearer(personal.token, 'GET', '/api/v1/users/current/tokens')).status, 200);
      r = await bearer(tok, 'GET', `/api/v1/users/${boot.userId}/tokens`);
      assert.equal(r.status, 403, 'another user\'s tokens need an admin');
      assert.equal(r.json.code, 'FORBIDDEN');
      r = await bearer(tok, 'POST', '/api/v1/users/current/tokens', { name: 'x', expiresInDays: 400 });
      assert.equal(r.status, 400);
      assert.equal(r.json.ext.field, 'expiresInDays');
      r = await bearer(tok, 'DELETE', `/api/v1/users/current/tokens/${personal.id}`);
      assert.equal(r.status, 200, r.text);
      r = await bearer(personal.token, 'GET', '/api/v1/users/current/tokens');
      assert.equal(r.status, 401);
      assert.equal(r.json.code, 'UNAUTHORIZED');
      assert.match(String(r.headers['www-authenticate']), /^Bearer realm="utilmeta-proxy"/);

      r = await call(`${node.origin}/api/v1/oauth/revoke`, { method: 'POST', body: `token=${tok}`, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      assert.equal(r.status, 200);
      assert.deepEqual(r.json, {});
      r = await call(`${node.origin}${DIR}/orgs`, { headers: { authorization: `Bearer ${tok}` } });
      assert.equal(r.status, 401, r.text);
      r = await call(`${node.origin}/api/v1/oauth/revoke`, { method: 'POST', body: 'token=umt_nonsense', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      assert.equal(r.status, 200, 'revoking an unknown token is not an error');
    });

    it('login limit: the 11th failure within the window answers 429 with Retry-After', async () => {
      const bad = () => call(`${node.origin}/api/v1/oauth/token`, {
        method: 'POST', body: 'grant_type=password&username=bob&password=nope-nope', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      for (let i = 0; i < 10; i++) assert.equal((await bad()).status, 400);
      const r = await bad();
      assert.equal(r.status, 429, r.text);
      assert.equal(r.json.error, 'too_many_requests');
      assert.ok(Number(r.headers['retry-after']) > 0);
      // even the right password waits
      const ok = await call(`${node.origin}/api/v1/oauth/token`, {
        method: 'POST', body: 'grant_type=password&username=bob&password=correct%20horse%202', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      assert.equal(ok.status, 429);
    });

    it('an app key on a management surface → 403 app_key_not_allowed', async () => {
      const sql = node.db.registry;
      const [p] = await sql<{ id: string }[]>`INSERT INTO authz_project (org_id, name, resource_key, creator_id, is_permanent) VALUES (${boot.orgId}, ${'p-' + server}, ${'rk-' + server + randomBytes(4).toString('hex')}, ${boot.userId}, true) RETURNING id`;
      const appId = randomBytes(16).toString('hex');
      await sql`INSERT INTO authz_app (app_id, project_id, name, owner_user_id) VALUES (${appId}, ${p!.id}, 'app', ${boot.userId})`;
      const k = await node.access.credentials.createKey(CLI_CALLER, { ownerType: 'APP', ownerId: appId });
      await node.access.view.view.refresh();
      const r = await signed({ id: k.accessKeyId, secret: k.secretAccessKey }, 'GET', `${DIR}/orgs`);
      assert.equal(r.status, 403, r.body);
      assert.equal(jsonOf(r).state, 'app_key_not_allowed', r.body);
    });

    it('unknown /api/v1 path 404 and wrong method 405 in the seed-001 envelope', async () => {
      let r = await bearer(boot.token, 'GET', '/api/v1/nowhere');
      assert.equal(r.status, 404);
      assert.equal(r.json.code, 'NOT_FOUND');
      r = await bearer(boot.token, 'PUT', '/api/v1/access-keys');
      assert.equal(r.status, 405);
      assert.deepEqual(String(r.headers.allow).split(', ').sort(), ['GET', 'POST']);
      r = await call(`${node.origin}/api/v1/access-keys`, { method: 'POST', body: '{"ownerType":', headers: { authorization: `Bearer ${boot.token}`, 'content-type': 'application/json' } });
      assert.equal(r.status, 400);
      assert.equal(r.json.code, 'PARAM_INVALID');
      assert.equal(r.json.ext.field, 'body');
    });

    it('the database gone: management answers 503 DB_UNAVAILABLE in each envelope', async () => {
      await node.db.registry.end({ timeout: 0 });
      const r = await call(`${node.origin}${DIR}/orgs`, { headers: { authorization: `Bearer ${boot.token}` } });
      assert.equal(r.status, 503, r.text);
      assert.deepEqual([r.json.code, r.json.message], [503, 'DB_UNAVAILABLE']);
      const v = await bearer(boot.token, 'GET', '/api/v1/access-keys');
      assert.equal(v.status, 503, v.text);
      assert.equal(v.json.code, 'DB_UNAVAILABLE');
    });
  });
}

describe('no master key (node listener)', () => {
  let dbs: TestDatabases;
  let node: TestNode;
  let boot: BootstrapResult;
  before(async () => {
    dbs = freshDatabases();
    node = await startTestNode('node', dbs);
    boot = await authzBootstrap(node.access.store, effectiveMasterKeys(node.config), { account: 'admin' });
    await node.access.view.view.refresh();
  });
  after(async () => {
    await node?.close();
    await dbs?.drop();
  });

  it('key endpoints answer 503 MASTER_KEY_MISSING; bearer tokens and the directory still work', async () => {
    assert.equal(boot.accessKeyId, null);
    const H = { authorization: `Bearer ${boot.token}`, 'content-type': 'application/json' };
    const r = await call(`${node.origin}/api/v1/access-keys`, { method: 'POST', headers: H, body: JSON.stringify({ ownerType: 'USER', ownerId: boot.userId }) });
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json.code, 'MASTER_KEY_MISSING');
    const d = await call(`${node.origin}${DIR}/orgs`, { headers: H });
    assert.equal(d.status, 200, d.text);
  });
});
