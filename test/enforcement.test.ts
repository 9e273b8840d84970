// Per-service authorization enforced on /api/proxy, end to end on both
// listeners: a real registered upstream (a production and a test instance),
// authorizations made through the /api/v1 API, and callers with bearer tokens
// (three carriers) and SigV4 (botocore and aws4, header and presigned).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Client } from 'undici';
import { freshDatabases, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { startUpstream, type TestUpstream } from './support/upstream.ts';
import { sendSigned, type SigV4ClientName } from './support/sigv4-clients.ts';
import { CLI_CALLER } from '../src/access/credentials.ts';
import { apiIdOf } from '../src/access/index.ts';
import { buildWorld, OPENAPI, registerService, startAuthzNode, v1, type World } from './support/services-auth.ts';

type Seen = { which: string; method: string; url: string; headers: Record<string, string | string[] | undefined> };
const D = { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'orders' };

function tagged(which: string) {
  return (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ which, method: req.method, url: req.url, headers: req.headers }));
  };
}

for (const server of LISTENERS) {
  describe(`enforcement on /api/proxy (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let prod: TestUpstream;
    let test: TestUpstream;
    let w: World;
    let sid: number;
    let admin: string;
    let aliceKey: { id: string; secret: string };
    let appKey: { id: string; secret: string };
    let appPublicId: string;

    const proxy = async (path: string, headers: Record<string, string> = {}, method = 'GET') => {
      // A Client with a raw path: a URL parser would resolve %2e%2e before sending.
      const client = new Client(node.origin);
      const r = await client.request({ path: `/api/proxy${path}`, method: method as 'GET', headers: { ...D, ...headers } }).finally(() => {});
      const text = await r.body.text();
      let json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
      try { json = JSON.parse(text); } catch { json = undefined; }
      await client.close();
      return { status: r.statusCode, headers: r.headers, text, json };
    };
    const bearer = (u: keyof World['users']) => ({ authorization: `Bearer ${w.users[u].token}` });
    const signed = (client: SigV4ClientName, key: { id: string; secret: string }, path: string, opts: { presign?: boolean; query?: Array<[string, string]> } = {}) =>
      sendSigned(client, {
        baseUrl: node.origin, method: 'GET', path: `/api/proxy${path}`, query: opts.query, headers: { ...D },
        accessKeyId: key.id, secretAccessKey: key.secret, service: 'utilmeta', region: 'pri', presignExpires: opts.presign ? 300 : undefined,
      });
    const setMode = async (q: string) => {
      const r = await v1(node, admin, 'PATCH', `/services/${sid}/auth/enabled?${q}`);
      assert.equal(r.status, 200, r.text);
    };
    const grant = async (authObjectType: string, authObjectId: string | number, permissions: string[]) => {
      const r = await v1(node, admin, 'POST', `/services/${sid}/auth`, { authObjectType, authObjectId: Number(authObjectId), permissions });
      assert.equal(r.status, 200, r.text);
      return r.json.data.id as number;
    };

    before(async () => {
      dbs = freshDatabases();
      node = await startAuthzNode(server, dbs);
      prod = await startUpstream(tagged('prod'));
      test = await startUpstream(tagged('test'));
      w = await buildWorld(node);
      admin = w.boot.token;
      sid = (await registerService(node, 'orders', prod.address, { resources: { openapi: OPENAPI }, production: true })).serviceId;
      await registerService(node, 'orders', test.address, { resources: { openapi: OPENAPI }, production: false });
      const sql = node.db.registry;
      const [p] = await sql<{ id: string }[]>`INSERT INTO authz_project (org_id, name, resource_key, is_permanent) VALUES (${w.orgId}, 'p', ${'rk-' + randomBytes(4).toString('hex')}, true) RETURNING id::text`;
      appPublicId = randomBytes(16).toString('hex');
      const [app] = await sql<{ id: string }[]>`INSERT INTO authz_app (app_id, project_id, name, owner_user_id) VALUES (${appPublicId}, ${p!.id}, 'reporter', ${w.users.erin.id}) RETURNING id::text`;
      await node.access.view.view.refresh();
      const ak = await node.access.credentials.createKey(CLI_CALLER, { ownerType: 'USER', ownerId: Number(w.users.alice.id) });
      aliceKey = { id: ak.accessKeyId, secret: ak.secretAccessKey };
      const pk = await node.access.credentials.createKey(CLI_CALLER, { ownerType: 'APP', ownerId: appPublicId });
      appKey = { id: pk.accessKeyId, secret: pk.secretAccessKey };
      await grant('USER', w.users.alice.id, ['VIEW']);
      await grant('GROUP', w.roles.sub, ['ADD']); // bob, through team ⊃ sub
      await grant('DEPT', w.depts.root, ['DELETE']); // dave, through child → root (to_super)
      await grant('USER', w.users.carol.id, ['TEST']);
      await grant('APP', app!.id, ['VIEW']);
      await node.access.view.view.refresh();
    });
    after(async () => {
      await node?.close();
      await prod?.close();
      await test?.close();
      await dbs?.drop();
    });

    it('OFF: forwards as before, without a credential; forged identity headers never reach the upstream', async () => {
      const r = await proxy('/items', { 'x-utilmeta-caller-id': '1', 'x-utilmeta-caller-type': 'user' });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.url, '/api/items');
      assert.equal(r.json.headers['x-utilmeta-caller-id'], undefined);
      assert.equal(r.json.headers['x-utilmeta-caller-type'], undefined);
    });

    it('ENFORCE, bearer: 401 without a credential, USER/GROUP/DEPT rules, the three carriers, identity headers, no umt_ upstream', async () => {
      await setMode('enabled=true');
      let r = await proxy('/items');
      assert.equal(r.status, 401, r.text);
      assert.equal(r.json.state, 'authn_required');
      assert.ok(r.headers['www-authenticate']);

      for (const carrier of ['authorization', 'proxy-authorization', 'x-auth-token']) {
        const value = carrier === 'x-auth-token' ? w.users.alice.token : `Bearer ${w.users.alice.token}`;
        r = await proxy('/items/7', { [carrier]: value, 'x-utilmeta-caller-id': '999', 'x-utilmeta-caller-name': 'root' });
        assert.equal(r.status, 200, `${carrier}: ${r.text}`);
        assert.equal(r.json.headers['x-utilmeta-caller-id'], w.users.alice.id, 'the forged id is replaced, not appended');
        assert.equal(r.json.headers['x-utilmeta-caller-name'], 'alice');
        assert.equal(r.json.headers['x-utilmeta-caller-type'], 'user');
        assert.equal(r.json.headers['x-utilmeta-api-id'], apiIdOf(sid, 'GET', '/items/{}'));
        assert.ok(!JSON.stringify(r.json.headers).includes('umt_'), `${carrier}: the token reached the upstream`);
      }
      r = await proxy('/items', bearer('alice'), 'POST');
      assert.equal(r.status, 403);
      assert.equal(r.json.state, 'permission_denied');
      assert.equal(r.json.required, 'ADD');

      r = await proxy('/items', bearer('bob'), 'POST');
      assert.equal(r.status, 200, `GROUP via the role closure: ${r.text}`);
      r = await proxy('/items', bearer('bob'));
      assert.equal(r.status, 403);
      r = await proxy('/items/3', bearer('dave'), 'DELETE');
      assert.equal(r.status, 200, `DEPT via inheritance: ${r.text}`);
      r = await proxy('/items', bearer('erin'));
      assert.equal(r.status, 403);
      assert.equal(r.json.state, 'permission_denied');
      r = await proxy('/items', { authorization: 'Bearer umt_' + 'A'.repeat(43) });
      assert.equal(r.status, 401);
      assert.equal(typeof r.json.state, 'string');
      // the superuser
      r = await proxy('/items', { authorization: `Bearer ${admin}` }, 'PUT');
      assert.equal(r.status, 200);
    });

    it('ENFORCE: TEST routes only to production=false instances; per-API EXPORT override; canonical-path refusals', async () => {
      for (let i = 0; i < 4; i++) {
        const r = await proxy('/items', bearer('carol'), i % 2 ? 'POST' : 'GET');
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.which, 'test');
      }
      const exportId = apiIdOf(sid, 'GET', '/items/export');
      let r = await v1(node, admin, 'PATCH', `/services/${sid}/apis/${exportId}`, { permission: 'EXPORT' });
      assert.equal(r.status, 200, r.text);
      const p = await proxy('/items/export', bearer('alice'));
      assert.equal(p.status, 403);
      assert.equal(p.json.required, 'EXPORT');
      r = await v1(node, admin, 'PATCH', `/services/${sid}/apis/${exportId}`, { permission: null });
      assert.equal(r.status, 200);
      for (const bad of ['/items//x', '/items/%2e%2e/x', '/items/a%2Fb', '/items/%zz']) {
        const d = await proxy(bad, bearer('alice'));
        assert.equal(d.status, 400, bad + ' → upstream saw ' + d.json?.url);
        assert.equal(d.json.state, 'path_not_canonical', bad);
      }
    });

    it('ENFORCE, SigV4: botocore and aws4, header and presigned; the signature never reaches the upstream; app keys', async () => {
      for (const client of ['botocore', 'aws4'] as const) {
        for (const presign of [false, true]) {
          const r = await signed(client, aliceKey, '/items', { presign, query: [['q', 'x y']] });
          assert.equal(r.status, 200, `${client} presign=${presign}: ${r.body}`);
          const j = JSON.parse(r.body);
          assert.equal(j.headers['x-utilmeta-caller-id'], w.users.alice.id);
          assert.equal(j.headers['x-utilmeta-access-key-id'], aliceKey.id);
          assert.equal(j.headers.authorization, undefined);
          assert.ok(!Object.keys(j.headers).some((h) => h.startsWith('x-amz-')), JSON.stringify(j.headers));
          assert.ok(!/X-Amz-/i.test(j.url), j.url);
          assert.match(j.url, /q=x(%20|\+)y/);
        }
      }
      const r = await signed('aws4', appKey, '/items');
      assert.equal(r.status, 200, r.body);
      assert.equal(JSON.parse(r.body).headers['x-utilmeta-caller-type'], 'app');
      assert.equal(JSON.parse(r.body).headers['x-utilmeta-caller-id'], appPublicId);
      const wrong = await signed('aws4', { id: aliceKey.id, secret: 'x'.repeat(40) }, '/items');
      assert.equal(wrong.status, 403);
      assert.match(wrong.body, /SignatureDoesNotMatch/);
    });

    it('AUDIT: a denied request is forwarded unchanged and the proxied line carries authz', async () => {
      await setMode('enabled=true&audit=true');
      const r = await proxy('/items', bearer('erin'));
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.headers['x-utilmeta-caller-id'], undefined);
      const line = [...node.logs.lines].reverse().find((l) => l.msg === 'proxied' && typeof l.authz === 'string');
      assert.ok(line, 'a proxied line with authz');
      assert.equal(line!.authz, 'audit:deny:permission_denied');
      await setMode('enabled=false');
      const off = await proxy('/items');
      assert.equal(off.status, 200);
    });
  });
}
