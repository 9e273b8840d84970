// supervisor_policy=TEST_PERMISSION end to end, on both listeners: the platform simulator
// connects a service (a production instance) through the proxy, a second, non-production
// instance registers, and `supervisor` requests carry the platform's node JWT whose `sub` is
// SSO-bound to local users. With the service in ENFORCE and the policy on, a user holding only
// TEST reaches only the non-production instance, and is refused 403 test_instances_only when
// there is none; a user holding the method's permission reaches any instance; a user without
// either, and an unbound platform user, are refused before any upstream sees the request.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { call, until } from './support/http.ts';
import { deadPort, startUpstream, type TestUpstream } from './support/upstream.ts';
import { PlatformSim } from './support/platform-sim.ts';
import { FakeService } from './support/fake-service.ts';
import { registerService, v1 } from './support/services-auth.ts';
import { authzBootstrap, type BootstrapResult } from '../src/access/cli.ts';
import { effectiveMasterKeys } from '../src/access/index.ts';

const DIR = '/minibase/portal/openapi/v1';
const MASTER = `k1:${randomBytes(32).toString('base64')}`;

for (const server of LISTENERS) {
  describe(`supervisor policy TEST_PERMISSION through the platform (${server} listener)`, () => {
    let sim: PlatformSim;
    let dbs: TestDatabases;
    let node: TestNode;
    let prod: FakeService; // connected through the proxy, production=true
    let test: TestUpstream; // a second instance of the same service, production=false
    let boot: BootstrapResult;
    let serviceNode: string;
    let sid: number;

    before(async () => {
      sim = await PlatformSim.start({ clusterId: 'cluster-1', callbackMode: 'direct' });
      dbs = freshDatabases();
      const port = await deadPort();
      const baseUrl = `http://127.0.0.1:${port}/api`;
      sim.proxyBaseUrl = baseUrl;
      node = await startTestNode(server, dbs, {
        UTILMETA_PROXY_BIND_PORT: String(port),
        UTILMETA_PROXY_BASE_URL: baseUrl,
        UTILMETA_PROXY_SUPERVISOR_BASE_URL: sim.baseUrl,
        UTILMETA_PROXY_SUPERVISOR_CLUSTER_ID: 'cluster-1',
        UTILMETA_PROXY_SUPERVISOR_CLUSTER_KEY: sim.clusterPublicKey,
        UTILMETA_PROXY_LOAD_TIMEOUT: '1',
        UTILMETA_PROXY_AUTHZ_MASTER_KEYS: MASTER,
        UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '0',
      }, {
        platform: {
          clientOptions: { retries: 1, timeoutMs: 5000, retryTiming: { minTimeoutMs: 20, maxTimeoutMs: 50 } },
          retry: { minTimeout: 50, maxTimeout: 200 },
        },
      });
      boot = await authzBootstrap(node.access.store, effectiveMasterKeys(node.config), { account: 'admin' });
      await until('the self-connect', () => node.platform.state().connected || undefined);
      sim.callbackMode = 'auto';
      prod = await FakeService.start({ name: 'orders', proxyBaseUrl: baseUrl, opsDatabase: dbs.opsName, production: true });
      const r = await prod.register();
      assert.equal(r.status, 200, r.text);
      serviceNode = r.json.node_id;
      assert.ok(serviceNode, 'the service was connected to the platform through the proxy');
      test = await startUpstream();
      sid = (await registerService(node, 'orders', test.address, { production: false })).serviceId;

      // Users bound to platform users: tess holds TEST, vic VIEW, nora nothing.
      const H = { authorization: `Bearer ${boot.token}`, 'content-type': 'application/json' };
      const accounts = ['tess', 'vic', 'nora'];
      let res = await call(`${node.origin}${DIR}/users`, { method: 'POST', headers: H, body: JSON.stringify(accounts.map((a) => ({ account: a, username: a, password: 'long enough password' }))) });
      assert.equal(res.status, 200, res.text);
      res = await call(`${node.origin}${DIR}/users/sso`, { method: 'POST', headers: H, body: JSON.stringify({ users: accounts.map((a) => ({ account: a, sso_type: 'utilmeta', sso_user_id: `platform-${a}` })) }) });
      assert.equal(res.status, 200, res.text);
      const ids = new Map((await node.db.registry<{ id: string; account: string }[]>`SELECT id::text, account FROM authz_user`).map((u) => [u.account, Number(u.id)]));
      for (const [account, permissions] of [['tess', ['TEST']], ['vic', ['VIEW']]] as const) {
        res = await v1(node, boot.token, 'POST', `/services/${sid}/auth`, { authObjectType: 'USER', authObjectId: ids.get(account), permissions });
        assert.equal(res.status, 200, res.text);
      }
      res = await v1(node, boot.token, 'PATCH', `/services/${sid}/auth/settings`, { supervisorPolicy: 'TEST_PERMISSION' });
      assert.equal(res.status, 200, res.text);
      res = await v1(node, boot.token, 'PATCH', `/services/${sid}/auth/enabled?enabled=true`);
      assert.equal(res.status, 200, res.text);
    });
    after(async () => {
      await prod?.close();
      await test?.close();
      await node?.close();
      await sim?.close();
      await dbs?.drop();
    });

    const supervisor = async (sub: string, method = 'GET') => call(`${node.origin}/api/proxy/hello`, {
      method,
      headers: { 'x-utilmeta-proxy-type': 'supervisor', 'x-utilmeta-node-id': serviceNode, authorization: `Bearer ${await sim.nodeToken(serviceNode, { sub })}` },
    });
    const hits = () => ({ prod: prod.seenAt('/api/hello').length, test: test.seen.filter((s) => s.url.startsWith('/api/hello')).length });

    it('TEST alone reaches only the non-production instance, for any method', async () => {
      const before = hits();
      for (let i = 0; i < 8; i++) {
        const r = await supervisor('platform-tess', i % 2 ? 'DELETE' : 'GET');
        assert.equal(r.status, 200, r.text);
        assert.equal(r.headers['x-utilmeta-proxy-destination-base-url'], `http://${test.address}/api`);
      }
      const after = hits();
      assert.equal(after.test - before.test, 8, 'every request went to the production=false instance');
      assert.equal(after.prod, before.prod, 'the production instance saw none');
    });

    it('the method permission reaches any instance; neither permission, or an unbound platform user, is refused before any upstream', async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 20 && seen.size < 2; i++) {
        const r = await supervisor('platform-vic');
        assert.equal(r.status, 200, r.text);
        seen.add(String(r.headers['x-utilmeta-proxy-destination-base-url']));
      }
      assert.ok(seen.has(prod.baseUrl), `VIEW reached the production instance too (${[...seen].join(', ')})`);
      const before = hits();
      let r = await supervisor('platform-vic', 'POST');
      assert.equal(r.status, 403, r.text);
      assert.equal(r.json.state, 'permission_denied');
      assert.equal(r.json.required, 'ADD');
      r = await supervisor('platform-nora');
      assert.equal(r.status, 403, r.text);
      assert.equal(r.json.state, 'permission_denied');
      r = await supervisor('platform-nobody');
      assert.equal(r.status, 403, r.text);
      assert.equal(r.json.state, 'platform_user_unmapped');
      assert.deepEqual(hits(), before, 'no upstream saw a refused request');
    });

    it('with no non-production instance left, TEST alone answers 403 test_instances_only; the PLATFORM policy restores the platform\'s authority', async () => {
      let r = await call(`${node.origin}/api/registry/${test.address}`, { method: 'DELETE' });
      assert.equal(r.status, 200, r.text);
      await until('the test instance is gone', async () => {
        const x = await supervisor('platform-tess');
        return x.status === 403 ? x : undefined;
      });
      const before = hits();
      r = await supervisor('platform-tess');
      assert.equal(r.status, 403, r.text);
      assert.equal(r.json.state, 'test_instances_only');
      assert.equal(r.json.service, 'orders');
      assert.deepEqual(hits(), before, 'the production instance was not used instead');
      // vic still reaches the production one.
      r = await supervisor('platform-vic');
      assert.equal(r.status, 200, r.text);
      // Back to PLATFORM: the platform's JWT alone decides, whoever the sub is.
      r = await v1(node, boot.token, 'PATCH', `/services/${sid}/auth/settings`, { supervisorPolicy: 'PLATFORM' });
      assert.equal(r.status, 200, r.text);
      r = await supervisor('platform-nora');
      assert.equal(r.status, 200, r.text);
      r = await supervisor('platform-nobody');
      assert.equal(r.status, 200, r.text);
    });
  });
}
