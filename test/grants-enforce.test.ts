// Grants on the request path, two nodes on one database (NOTIFY and Redis), on
// both listeners: an app's SigV4-signed discovery call passes only with a live
// grant, carries its end (and, once a cancellation is scheduled, Sunset and the
// state), an owner's cancel on node 1 is refused on node 2, and a grant whose
// end passes is refused on both nodes without waiting for the sweeper.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { insertInstanceResource, registrationBody } from './support/ops.ts';
import { startUpstream, type TestUpstream } from './support/upstream.ts';
import { sendSigned, type ClientResponse } from './support/sigv4-clients.ts';
import { seedWorld, settle, v1, inMs, DAY, type World } from './support/grants-fixture.ts';
import { generateMasterKey } from '../src/access/crypto.ts';
import { CLI_CALLER } from '../src/access/credentials.ts';
import { decide } from '../src/access/decide.ts';

const MASTER = generateMasterKey('k1');
const REDIS = 'redis://127.0.0.1:6379';

for (const server of LISTENERS) {
  describe(`grant enforcement on two nodes (${server} listener)`, () => {
    let dbs: TestDatabases;
    let n1: TestNode;
    let n2: TestNode;
    let up: TestUpstream;
    let w: World;
    let app: string;
    let key: { accessKeyId: string; secretAccessKey: string };

    const call = (node: TestNode, path: string): Promise<ClientResponse> => sendSigned('aws4', {
      baseUrl: node.origin, method: 'GET', path: `/api/proxy${path}`,
      headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'orders' },
      accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey, service: 'utilmeta', region: 'pri',
    });
    const state = (r: ClientResponse) => (r.status === 200 ? 'allow' : (JSON.parse(r.body) as { state: string }).state);
    const act = (token: string, apiId: string, applyType: string, time?: string) => v1(n1, 'POST', `/${w.projectId}/service/apis/authorize/action`, {
      token, body: { api_id: apiId, app_id: app, apply_type: applyType, ...(time ? { time } : {}) },
    });

    before(async () => {
      dbs = freshDatabases();
      const env = { UTILMETA_PROXY_AUTHZ_MASTER_KEYS: MASTER, UTILMETA_PROXY_REDIS_URL: REDIS };
      n1 = await startTestNode(server, dbs, env);
      n2 = await startTestNode(server, dbs, env);
      up = await startUpstream();
      const res = await insertInstanceResource(n1.db.ops, { service: 'orders', address: up.address });
      const r = await request(`${n1.origin}/api/registry`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(registrationBody({ name: 'orders', address: up.address, instanceId: res.id })) });
      assert.equal(r.statusCode, 200, await r.body.text());
      await n2.registry.refresh();
      const [svc] = await n1.db.registry<{ id: string }[]>`SELECT id FROM utilmeta_service WHERE name = 'orders'`;
      w = await seedWorld(n1, { serviceId: svc!.id, serviceName: 'orders', templates: [['GET', '/hello'], ['GET', '/items/{id}'], ['GET', '/short']] });
      const a = await v1(n1, 'POST', `/${w.projectId}/service/apps`, { token: w.alice.token, body: { name: 'caller' } });
      assert.equal(a.status, 201);
      app = a.json.id;
      key = await n1.access.credentials.createKey(CLI_CALLER, { ownerType: 'APP', ownerId: app });
      await settle([n1, n2]);
    });
    after(async () => {
      await n1?.close();
      await n2?.close();
      await up?.close();
      await dbs?.drop();
    });

    it('no grant: refused on both nodes; a pending application: grant_pending', async () => {
      for (const n of [n1, n2]) assert.equal(state(await call(n, '/hello')), 'grant_required');
      assert.equal((await act(w.alice.token, w.apis['GET /items/{id}']!, 'APPLY_TYPE_APPLY', inMs(DAY))).status, 204);
      await settle([n1, n2]);
      for (const n of [n1, n2]) assert.equal(state(await call(n, '/items/7')), 'grant_pending');
      assert.equal(up.seen.length, 0, 'nothing reached the upstream');
    });

    it('a live grant passes on both nodes with X-UtilMeta-Grant-End; a scheduled cancellation adds Sunset and the state', async () => {
      const end = new Date(Date.now() + 30 * DAY);
      assert.equal((await act(w.bob.token, w.apis['GET /hello']!, 'APPLY_TYPE_AUTHORIZE', end.toISOString())).status, 204);
      await settle([n1, n2]);
      for (const n of [n1, n2]) {
        const r = await call(n, '/hello');
        assert.equal(r.status, 200, r.body);
        assert.equal(r.headers['x-utilmeta-grant-end'], end.toISOString());
        assert.equal(r.headers['sunset'], undefined, 'no Sunset while the end is far and nothing is scheduled');
        assert.equal(r.headers['x-utilmeta-grant-state'], undefined);
      }
      const seen = up.seen.at(-1)!;
      const h = new Map(seen.headers);
      assert.equal(h.get('x-utilmeta-caller-type'), 'app');
      assert.equal(h.get('x-utilmeta-caller-id'), app);
      assert.equal(h.get('authorization'), undefined, 'the consumed signature is not forwarded');
      const before = Date.now();
      assert.equal((await act(w.bob.token, w.apis['GET /hello']!, 'APPLY_TYPE_API_CANCEL_AUTHORIZE')).status, 204);
      await settle([n1, n2]);
      const [g] = await n1.db.registry<{ cancel_at: Date }[]>`SELECT cancel_at FROM authz_grant WHERE api_id = ${w.apis['GET /hello']!} AND state = 'CANCEL_SCHEDULED'`;
      assert.ok(g!.cancel_at.getTime() >= before + 2 * DAY - 1000, 'the default notice is two days');
      for (const n of [n1, n2]) {
        const r = await call(n, '/hello');
        assert.equal(r.status, 200, 'the app keeps working until then');
        assert.equal(r.headers['sunset'], g!.cancel_at.toUTCString());
        assert.equal(r.headers['x-utilmeta-grant-state'], 'CANCEL_SCHEDULED');
        assert.equal(r.headers['x-utilmeta-grant-end'], g!.cancel_at.toISOString());
      }
    });

    it("the owner's cancel on node 1 is refused on node 2", async () => {
      assert.equal((await act(w.alice.token, w.apis['GET /hello']!, 'APPLY_TYPE_APP_CANCEL_AUTHORIZE')).status, 204);
      const deadline = Date.now() + 5000;
      let last = '';
      while (Date.now() < deadline) {
        last = state(await call(n2, '/hello'));
        if (last !== 'allow') break;
        await sleep(2);
      }
      assert.equal(last, 'grant_cancelled');
      assert.equal(state(await call(n1, '/hello')), 'grant_cancelled');
    });

    it('a grant whose end passes is refused on both nodes at that instant, decided against the PostgreSQL-corrected clock', async () => {
      const api = w.apis['GET /short']!;
      const end = Date.now() + 4000;
      assert.equal((await act(w.bob.token, api, 'APPLY_TYPE_AUTHORIZE', new Date(end).toISOString())).status, 204);
      await settle([n1, n2]);
      for (const n of [n1, n2]) {
        const r = await call(n, '/short');
        assert.equal(r.status, 200, r.body);
        assert.ok(r.headers['sunset'], 'an end less than 7 days away is announced');
      }
      // The decision itself: allowed one millisecond before the end, refused at it (no sweeper involved).
      for (const n of [n1, n2]) {
        const s = n.access.view.current.state;
        const principal = { kind: 'app' as const, appId: s.appIds.get(app)!, via: 'sigv4' as const, accessKeyId: key.accessKeyId };
        const req = { serviceId: w.serviceId, serviceName: 'orders', method: 'GET', rawPath: '/short' };
        assert.equal(decide(s, req, principal, end - 1).result, 'ALLOW');
        const d = decide(s, req, principal, end);
        assert.equal(d.result, 'DENY');
        assert.equal(d.result === 'DENY' && d.state, 'grant_expired');
      }
      const wait = end - n1.access.view.now();
      if (wait > 0) await sleep(wait + 1);
      const [a, b] = await Promise.all([call(n1, '/short'), call(n2, '/short')]);
      assert.equal(state(a), 'grant_expired');
      assert.equal(state(b), 'grant_expired');
    });

    it('the grants surface takes user SigV4 keys, answers SigV4 failures and app keys in the AWS shape', async () => {
      const userKey = await n1.access.credentials.createKey(CLI_CALLER, { ownerType: 'USER', ownerId: w.bob.id });
      await settle([n1, n2]);
      const signed = (k: { accessKeyId: string; secretAccessKey: string }, headers: Record<string, string> = {}) => sendSigned('aws4', {
        baseUrl: n2.origin, method: 'GET', path: `/v1/${w.projectId}/service/apps`, headers, accessKeyId: k.accessKeyId, secretAccessKey: k.secretAccessKey, service: 'utilmeta', region: 'pri',
      });
      const ok = await signed(userKey);
      assert.equal(ok.status, 200, ok.body);
      assert.equal(typeof JSON.parse(ok.body).total, 'number');
      const bad = await signed({ ...userKey, secretAccessKey: 'x'.repeat(40) });
      assert.equal(bad.status, 403);
      assert.equal(JSON.parse(bad.body).__type, 'SignatureDoesNotMatch');
      const appKey = await signed(key);
      assert.equal(appKey.status, 403);
      assert.deepEqual([JSON.parse(appKey.body).__type, JSON.parse(appKey.body).state], ['AccessDenied', 'app_key_not_allowed']);
      const two = await signed(userKey, { 'x-auth-token': w.bob.token });
      assert.equal(two.status, 400, 'two credentials at once');
    });

    it('a disabled app is refused everywhere from the payload', async () => {
      assert.equal((await act(w.bob.token, w.apis['GET /hello']!, 'APPLY_TYPE_AUTHORIZE', inMs(10 * DAY))).status, 204);
      await settle([n1, n2]);
      assert.equal((await call(n2, '/hello')).status, 200);
      assert.equal((await v1(n1, 'PUT', `/${w.projectId}/service/apps/${app}`, { token: w.alice.token, body: { status: 'DISABLED' } })).status, 200);
      await settle([n1, n2]);
      for (const n of [n1, n2]) assert.equal(state(await call(n, '/hello')), 'principal_disabled');
    });
  });
}
