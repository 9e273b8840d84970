// The fixture token vectors (fixtures/token-vectors.json, made with jwcrypto + utilmeta 2.9) at
// the proxy: `operations` requests with Proxy-Authorization, for a node whose connect is pending
// (the platform's first callback, spec §3.6.2 step 3, §4.1). Accepted vectors reach the upstream;
// rejected ones get a 4xx JSON error with a state and never reach it. A cluster token for a
// service without a pending placeholder is refused (the §6.17 fix).
//
// SUPERVISOR_BASE_URL is the real platform (the vectors' iss is https://api.utilmeta.com), so the
// proxy's own background self-connect would go out to the Internet: undici's global dispatcher is
// replaced by a MockAgent that answers every https://api.utilmeta.com request with a 503 and lets
// only loopback traffic through.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { MockAgent, getGlobalDispatcher, request, setGlobalDispatcher, type Dispatcher } from 'undici';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { insertInstanceResource, registrationBody } from './support/ops.ts';
import { startUpstream, type TestUpstream } from './support/upstream.ts';
import { serializeJwk, parseJwk } from '../src/tokens/keys.ts';
import { call, until } from './support/http.ts';

interface Vectors {
  cluster_public_jwk: Record<string, unknown>;
  tokens: Record<string, string>;
  'expected_for_node_node-1_cluster_cluster-1_supervisor_https://api.utilmeta.com/spv': Record<string, 'accept' | 'reject'>;
}

const vectors = JSON.parse(readFileSync(new URL('../../shared/fixtures/token-vectors.json', import.meta.url), 'utf8')) as Vectors;
const expected = vectors['expected_for_node_node-1_cluster_cluster-1_supervisor_https://api.utilmeta.com/spv'];
const CLUSTER_KEY = JSON.stringify(vectors.cluster_public_jwk);
const PLATFORM = 'https://api.utilmeta.com/spv';

/** Status and state for each reject vector (spec §4.1 statuses; states of src/tokens/jwt.ts). */
const REJECTS: Record<string, { status: number; state: string }> = {
  expired: { status: 400, state: 'token_expired' },
  no_exp: { status: 422, state: 'token_invalid' },
  wrong_aud: { status: 409, state: 'audience_mismatch' },
  wrong_nid: { status: 409, state: 'node_id_mismatch' },
  issuer_not_prefix: { status: 409, state: 'issuer_mismatch' },
  not_before_future: { status: 400, state: 'token_invalid' },
};



let previous: Dispatcher;
let mock: MockAgent;

before(() => {
  previous = getGlobalDispatcher();
  mock = new MockAgent();
  mock.disableNetConnect();
  mock.enableNetConnect((host: string) => /^127\.0\.0\.1(:\d+)?$/.test(host));
  mock
    .get('https://api.utilmeta.com')
    .intercept({ path: () => true, method: () => true })
    .reply(503, { result: null, msg: 'mock platform: unavailable in tests', state: 'unavailable', count: 0 })
    .persist();
  setGlobalDispatcher(mock);
});
after(async () => {
  setGlobalDispatcher(previous);
  await mock.close();
});

it('the fixture covers every expectation with a token', () => {
  assert.deepEqual(Object.keys(expected).sort(), Object.keys(vectors.tokens).sort());
  for (const [name, verdict] of Object.entries(expected)) {
    if (verdict === 'reject') assert.ok(REJECTS[name], `no expected status for reject vector ${name}`);
  }
});

for (const server of LISTENERS) {
  describe(`token vectors at the proxy (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let up: TestUpstream;
    let up2: TestUpstream;

    async function register(name: string, target: TestUpstream): Promise<void> {
      const res = await insertInstanceResource(node.db.ops, { service: name, address: target.address });
      const r = await call(`${node.origin}/api/registry`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(registrationBody({ name, address: target.address, instanceId: res.id })),
      });
      // The in-proxy connect cannot reach the (mocked) platform: registered, but not connected.
      assert.equal(r.status, 502, r.text);
      assert.equal(r.json.state, 'connect_failed');
      const [svc] = await node.db.registry<{ node_id: string | null }[]>`SELECT node_id FROM utilmeta_service WHERE name = ${name}`;
      assert.ok(svc, `${name} is registered`);
      assert.equal(svc.node_id, null);
    }

    before(async () => {
      dbs = freshDatabases();
      node = await startTestNode(server, dbs, {
        UTILMETA_PROXY_SUPERVISOR_BASE_URL: PLATFORM,
        UTILMETA_PROXY_SUPERVISOR_CLUSTER_ID: 'cluster-1',
        UTILMETA_PROXY_SUPERVISOR_CLUSTER_KEY: CLUSTER_KEY,
        UTILMETA_PROXY_LOAD_TIMEOUT: '0',
      }, {
        // One self-connect attempt now, the next one far beyond this test.
        platform: { clientOptions: { retries: 0, timeoutMs: 5000 }, retry: { minTimeout: 600_000, maxTimeout: 600_000 } },
      });
      // The first self-connect attempt must be over before the placeholder goes in (a connect
      // removes pending rows carrying the cluster key, as leftovers of a crashed connect).
      await until('the failed self-connect attempt', () => {
        const s = node.platform.state();
        return s.attempts >= 1 && s.error !== null;
      });
      assert.equal(node.platform.state().connected, false);
      up = await startUpstream();
      up2 = await startUpstream();
      await register('orders', up);
      await register('billing', up2);
      // The pending placeholder of a connect in progress for `orders` (node_id NULL, init_key = cluster key).
      const row = await node.platform.repo.createPlaceholder({ service: 'orders', baseUrl: PLATFORM, initKey: serializeJwk(parseJwk(CLUSTER_KEY)), opsApi: `http://${up.address}/api/ops` });
      assert.equal(row.node_id, null);
    });
    after(async () => {
      await node?.close();
      await up?.close();
      await up2?.close();
      await dbs?.drop();
    });

    const headers = (token: string, service = 'orders'): Record<string, string> => ({
      'proxy-authorization': `Bearer ${token}`,
      'x-utilmeta-proxy-type': 'operations',
      'x-utilmeta-node-id': 'node-1',
      'x-utilmeta-cluster-id': 'cluster-1',
      'x-utilmeta-service-name': service,
      'content-type': 'application/json',
    });
    const body = JSON.stringify({ node_id: 'node-1', ops_api: 'http://10.0.0.5:8000/api/ops', init_key: '{}' });

    for (const [name, verdict] of Object.entries(expected)) {
      it(`${name}: ${verdict}`, async () => {
        const n = up.seen.length;
        const r = await call(`${node.origin}/api/proxy`, { method: 'POST', headers: headers(vectors.tokens[name]), body });
        if (verdict === 'accept') {
          assert.equal(r.status, 200, r.text);
          assert.equal(up.seen.length, n + 1, 'reached the upstream');
          const seen = up.seen[n];
          const h = Object.fromEntries(seen.headers);
          assert.equal(seen.method, 'POST');
          assert.equal(seen.url, '/api/ops', "relayed to the instance's ops_api");
          assert.equal(seen.body.toString(), body);
          assert.equal(h['x-utilmeta-node-id'], 'node-1');
          assert.equal(h['x-node-id'], 'node-1');
          assert.equal(h['proxy-authorization'], undefined, 'the cluster token is not relayed');
          assert.ok(h['x-forwarded-for']);
          assert.equal(r.headers['x-utilmeta-proxy-destination-base-url'], `http://${up.address}/api/ops`);
        } else {
          const want = REJECTS[name];
          assert.equal(r.status, want.status, r.text);
          assert.match(String(r.headers['content-type']), /^application\/json/);
          assert.equal(typeof r.json.error, 'string');
          assert.equal(r.json.state, want.state);
          assert.equal(up.seen.length, n, 'never reached the upstream');
        }
      });
    }

    it('the x-utilmeta-proxy-token alias with a bare token works like Proxy-Authorization', async () => {
      const n = up.seen.length;
      const { 'proxy-authorization': _drop, ...rest } = headers(vectors.tokens.valid_ps256);
      const r = await call(`${node.origin}/api/proxy`, { method: 'POST', headers: { ...rest, 'x-utilmeta-proxy-token': vectors.tokens.valid_ps256 }, body });
      assert.equal(r.status, 200, r.text);
      assert.equal(up.seen.length, n + 1);
      assert.equal(Object.fromEntries(up.seen[n].headers)['x-utilmeta-proxy-token'], undefined);
      const r2 = await call(`${node.origin}/api/proxy`, { method: 'POST', headers: { ...rest, 'x-utilmeta-proxy-token': vectors.tokens.expired }, body });
      assert.equal(r2.status, 400);
      assert.equal(r2.json.state, 'token_expired');
      assert.equal(up.seen.length, n + 1);
    });

    it('a valid cluster token for a service WITHOUT a pending placeholder is refused (§6.17)', async () => {
      const n = up2.seen.length;
      const r = await call(`${node.origin}/api/proxy`, { method: 'POST', headers: headers(vectors.tokens.valid_rs256, 'billing'), body });
      assert.equal(r.status, 404, r.text);
      assert.equal(r.json.state, 'supervisor_not_found');
      assert.equal(up2.seen.length, n, 'billing never saw the request');
      // and without any service name the first callback cannot be routed
      const { 'x-utilmeta-service-name': _s, ...noName } = headers(vectors.tokens.valid_rs256);
      const r2 = await call(`${node.origin}/api/proxy`, { method: 'POST', headers: noName, body });
      assert.ok(r2.status >= 400 && r2.status < 500, r2.text);
      assert.equal(r2.json.state, 'supervisor_not_found');
    });

    it('the proxy itself never reached the real platform (self-connect answered by the mock)', () => {
      const s = node.platform.state();
      assert.equal(s.connected, false);
      assert.match(String(s.error), /mock platform: unavailable in tests/);
    });
  });
}
