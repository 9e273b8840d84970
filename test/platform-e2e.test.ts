// The "Add Cluster" story end to end, on both listeners: real PostgreSQL, the platform simulator
// (test/support/platform-sim.ts), a proxy node started through the runtime, and a UtilMeta-like
// service (test/support/fake-service.ts) sharing the proxy's ops database.
//
//   (a) the proxy connects itself as node `utilmeta-proxy` (spec §1.6, §3.6.1);
//   (b) a service registers and is connected in-proxy, the callback going through the proxy (§3.6.2);
//   (c) the platform reaches the service's OperationsAPI / base URL through the proxy (§1.5.4 b, §3.8);
//   (d) the service's forward traffic reaches the platform (§1.5.4 c, §2.5);
//   (e) resource re-sync on change only (§3.4, §3.6.3);
//   (f) token revocation on the proxy's own OperationsAPI (§4.3).
// Then failure paths on one listener: platform down at start, platform 500 during a service's
// connect, bad tokens (never 500), and untrusted supervisor URLs in forward mode (§3.1).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { startUpstream, deadPort, type TestUpstream } from './support/upstream.ts';
import { PlatformSim, generateRsaKeyPair, signJwt, type RecordedRequest } from './support/platform-sim.ts';
import { FakeService, FORWARD_FIXTURE } from './support/fake-service.ts';
import type { StartOptions } from '../src/runtime/index.ts';
import type { ListenerKind } from '../src/http/types.ts';
import { call, until } from './support/http.ts';

const CLUSTER = 'cluster-1';
const PROXY_NODE = 'utilmeta-proxy';

/** Short platform retries so failure paths resolve quickly (no timing is asserted). */
const FAST: StartOptions = {
  platform: {
    clientOptions: { retries: 1, timeoutMs: 5000, retryTiming: { minTimeoutMs: 20, maxTimeoutMs: 50 } },
    retry: { minTimeout: 50, maxTimeout: 200 },
  },
};




const header = (rec: RecordedRequest, name: string) => rec.rawHeaders.find(([n]) => n === name)?.[1];

interface Cluster {
  sim: PlatformSim;
  dbs: TestDatabases;
  node: TestNode;
  /** The proxy's BASE_URL (…/api). */
  baseUrl: string;
  close(): Promise<void>;
}

/**
 * Simulator + proxy with SUPERVISOR_* set. The proxy's BASE_URL is its real address. The
 * simulator calls the proxy's own (public) ops_api directly; `beforeStart` can inject faults.
 */
async function startCluster(server: ListenerKind, beforeStart?: (sim: PlatformSim) => void): Promise<Cluster> {
  const sim = await PlatformSim.start({ clusterId: CLUSTER, callbackMode: 'direct' });
  const dbs = freshDatabases();
  const port = await deadPort();
  const baseUrl = `http://127.0.0.1:${port}/api`;
  sim.proxyBaseUrl = baseUrl;
  beforeStart?.(sim);
  let node: TestNode;
  try {
    node = await startTestNode(server, dbs, {
      UTILMETA_PROXY_BIND_PORT: String(port),
      UTILMETA_PROXY_BASE_URL: baseUrl,
      UTILMETA_PROXY_SUPERVISOR_BASE_URL: sim.baseUrl,
      UTILMETA_PROXY_SUPERVISOR_CLUSTER_ID: CLUSTER,
      UTILMETA_PROXY_SUPERVISOR_CLUSTER_KEY: sim.clusterPublicKey,
      UTILMETA_PROXY_LOAD_TIMEOUT: '1',
    }, FAST);
  } catch (err) {
    await sim.close();
    await dbs.drop();
    throw err;
  }
  return {
    sim, dbs, node, baseUrl,
    async close() {
      await node.close();
      await sim.close();
      await dbs.drop();
    },
  };
}

async function supervisorRows(node: TestNode, service: string) {
  return node.db.ops<{ id: string; node_id: string | null; public_key: string | null; init_key: string | null; connected: boolean; ops_api: string; base_url: string; url: string | null; resources_etag: string | null }[]>`
    SELECT id::text AS id, node_id, public_key, init_key, connected, ops_api, base_url, url, resources_etag
    FROM utilmeta_supervisor WHERE service = ${service} ORDER BY id`;
}

async function serviceNodeId(node: TestNode, name: string): Promise<string | null | undefined> {
  const [row] = await node.db.registry<{ node_id: string | null }[]>`SELECT node_id FROM utilmeta_service WHERE name = ${name}`;
  return row?.node_id;
}

for (const server of LISTENERS) {
  describe(`Add Cluster end to end (${server} listener)`, () => {
    let c: Cluster;
    let svc: FakeService;
    let proxyNode: string;
    let serviceNode: string;
    const P = (path: string) => `${c.node.origin}/api/proxy${path}`;

    before(async () => {
      c = await startCluster(server);
      svc = await FakeService.start({ name: 'orders', proxyBaseUrl: c.baseUrl, opsDatabase: c.dbs.opsName });
    });
    after(async () => {
      await svc?.close();
      await c?.close();
    });

    it('(a) the proxy connects itself as node utilmeta-proxy in the background', async () => {
      const state = await until('the self-connect', () => (c.node.platform.state().connected ? c.node.platform.state() : null));
      proxyNode = state.node_id!;
      assert.ok(proxyNode);
      assert.equal(state.error, null);

      // add_node: cluster headers, body a JWE for the cluster key decrypting to NodeMetadata
      const addNode = c.sim.requestsTo('/', 'POST');
      assert.equal(addNode.length, 1);
      const add = addNode[0];
      assert.equal(header(add, 'X-Cluster-Key'), c.sim.clusterPublicKey);
      assert.equal(header(add, 'X-Cluster-Id'), CLUSTER);
      assert.equal(add.decryptedWith, 'cluster');
      assert.equal(add.jweHeader?.alg, 'RSA-OAEP-256');
      assert.equal(add.jweHeader?.enc, 'A256CBC-HS512');
      const meta = add.decryptedJson as Record<string, unknown>;
      assert.equal(meta.name, PROXY_NODE);
      assert.equal(meta.ops_api, `${c.baseUrl}/ops`);
      assert.equal(meta.base_url, c.baseUrl);
      assert.equal(meta.spec_version, '0.4.0');

      // the callback reached {BASE_URL}/ops (POST /) and the node saved itself
      const cb = c.sim.callbacks.filter((x) => x.nodeId === proxyNode);
      assert.equal(cb.length, 1);
      assert.equal(cb[0].url, `${c.baseUrl}/ops`);
      assert.equal(cb[0].status, 200);
      assert.equal(cb[0].ok, true, JSON.stringify(cb[0].response));
      assert.equal(add.status, 200);
      assert.equal((add.response as { result: unknown }).result, null, 'the platform reached the node, so add_node answered null');

      // ops DB row: node id + key, init_key cleared
      const rows = await supervisorRows(c.node, PROXY_NODE);
      assert.equal(rows.length, 1);
      assert.equal(rows[0].node_id, proxyNode);
      assert.equal(rows[0].public_key, c.sim.node(proxyNode).keys.publicKey);
      assert.equal(rows[0].init_key, null);
      assert.equal(rows[0].connected, true);
      assert.equal(rows[0].ops_api, `${c.baseUrl}/ops`);
      assert.equal(rows[0].base_url, c.sim.baseUrl);

      // own resources uploaded with the node headers, encrypted to the node key
      const up = await until('the own resources upload', () => c.sim.requestsTo('/resources', 'POST').find((r) => r.headers['x-node-id'] === proxyNode));
      assert.equal(header(up, 'X-Node-ID'), proxyNode);
      assert.equal(header(up, 'X-Node-Key'), c.sim.node(proxyNode).keys.publicKey);
      assert.equal(header(up, 'X-Cluster-Id'), CLUSTER);
      assert.equal(up.decryptedWith, `node:${proxyNode}`);
      assert.equal((up.decryptedJson as { metadata: { name: string } }).metadata.name, PROXY_NODE);
      assert.ok((up.decryptedJson as { openapi?: unknown }).openapi, 'the upload carries the OpenAPI document');
      assert.equal(up.status, 200);
      // the platform's answer was applied (2.8 shape: url + resources_etag)
      const [synced] = await until('the etag of the own node', async () => {
        const r = await supervisorRows(c.node, PROXY_NODE);
        return r[0]?.resources_etag ? r : null;
      });
      assert.equal(synced.url, c.sim.node(proxyNode).url);

      // readyz shows what `utilmeta-proxy check` needs: ready and platform connected
      const ready = await call(`${c.node.origin}/api/readyz`);
      assert.equal(ready.status, 200, ready.text);
      assert.equal(ready.json.platform.configured, true);
      assert.equal(ready.json.platform.connected, true);
      assert.equal(ready.json.platform.node_id, proxyNode);
      assert.equal(ready.json.platform.url, c.sim.node(proxyNode).url);
      assert.equal(ready.json.platform.error, null);

      // From here on the platform calls cluster services back through the proxy (§3.6.2 step 3).
      c.sim.callbackMode = 'auto';
    });

    it('(b) a registering service is connected in-proxy; the callback goes through the proxy', async () => {
      const cb0 = c.sim.callbacks.length;
      const r = await svc.register();
      assert.equal(r.status, 200, r.text);
      serviceNode = r.json.node_id;
      assert.ok(serviceNode, 'registration answers with the new node id');
      assert.equal(svc.nodeId, serviceNode);
      const simNode = c.sim.node(serviceNode);
      assert.equal(simNode.name, 'orders');
      assert.equal(simNode.opsApi, svc.opsApi, "add_node carried the service's own metadata");
      assert.equal(simNode.via, 'cluster');

      // Service.node_id in the registry
      assert.equal(await serviceNodeId(c.node, 'orders'), serviceNode);

      // the shared supervisor row, saved by the SERVICE's save_supervisor via the callback
      const rows = await supervisorRows(c.node, 'orders');
      assert.equal(rows.length, 1, 'exactly one row: no placeholder left');
      assert.equal(rows[0].node_id, serviceNode);
      assert.equal(rows[0].public_key, simNode.keys.publicKey);
      assert.equal(rows[0].init_key, null);
      assert.equal(rows[0].ops_api, svc.opsApi);
      assert.equal((await svc.supervisor())?.node_id, serviceNode, 'the service finds its Supervisor row (Supervisor.current)');
      const [pending] = await c.node.db.ops<{ n: number }[]>`SELECT count(*)::int AS n FROM utilmeta_supervisor WHERE node_id IS NULL`;
      assert.equal(pending.n, 0);

      // orphans attached: the instance resource row and the version log have the node id
      const [inst] = await c.node.db.ops<{ node_id: string | null; remote_id: string | null }[]>`
        SELECT node_id, remote_id FROM utilmeta_resource WHERE id = ${svc.instanceId!}`;
      assert.equal(inst.node_id, serviceNode);
      const [vlog] = await c.node.db.ops<{ node_id: string | null }[]>`SELECT node_id FROM utilmeta_version_log WHERE id = ${svc.versionLogId!}`;
      assert.equal(vlog.node_id, serviceNode, 'the version log written before the connect was attached');

      // the callback went THROUGH the proxy with a cluster token, and arrived at the service
      const cbs = c.sim.callbacks.slice(cb0);
      assert.equal(cbs.length, 1);
      assert.equal(cbs[0].mode, 'proxy');
      assert.equal(cbs[0].url, `${c.baseUrl}/proxy`);
      assert.match(cbs[0].headers['proxy-authorization'], /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
      assert.equal(cbs[0].headers['x-utilmeta-proxy-type'], 'operations');
      assert.equal(cbs[0].status, 200);
      assert.equal(cbs[0].ok, true, JSON.stringify(cbs[0].response));
      const got = svc.seenAt('/api/ops', 'POST');
      assert.equal(got.length, 1);
      assert.equal(got[0].headers['x-node-id'], serviceNode);
      assert.equal(got[0].headers['x-utilmeta-node-id'], serviceNode);
      assert.equal(got[0].headers['proxy-authorization'], undefined, 'the cluster token is not relayed to the service');
      assert.equal(got[0].status, 200);

      // resources uploaded for the new node; the platform's remote ids reach the registration answer
      const up = c.sim.requestsTo('/resources', 'POST').filter((x) => x.headers['x-node-id'] === serviceNode);
      assert.equal(up.length, 1);
      assert.equal(up[0].decryptedWith, `node:${serviceNode}`);
      assert.deepEqual((up[0].decryptedJson as { metadata: unknown }).metadata, svc.metadata());
      assert.ok(inst.remote_id, 'the instance resource got its platform remote id');
      assert.equal(r.json.remote_id, inst.remote_id);
    });

    it('(c) the platform calls the OperationsAPI and the base URL through the proxy', async () => {
      const token = await c.sim.nodeToken(serviceNode, { scope: 'api.view' });
      const n = svc.seen.length;
      const r = await call(P('/openapi'), {
        headers: { 'x-utilmeta-proxy-type': 'operations', 'x-utilmeta-node-id': serviceNode, authorization: `Bearer ${token}` },
      });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.state, 1);
      assert.equal(r.json.result.info.title, svc.title);
      assert.equal(r.headers['x-utilmeta-proxy-destination-base-url'], svc.opsApi);
      const seen = svc.seen.slice(n);
      assert.equal(seen.length, 1);
      assert.equal(seen[0].path, '/api/ops/openapi');
      assert.equal(seen[0].headers.authorization, `Bearer ${token}`);
      assert.equal(seen[0].headers['x-node-id'], serviceNode);
      assert.equal(seen[0].status, 200);

      // ?node= instead of the header
      const r2 = await call(P(`/token/scope?node=${encodeURIComponent(serviceNode)}`), {
        headers: { 'x-utilmeta-proxy-type': 'operations', authorization: `Bearer ${await c.sim.nodeToken(serviceNode, { scope: 'api.view log.view' })}` },
      });
      assert.equal(r2.status, 200, r2.text);
      assert.deepEqual(r2.json.result, ['api.view', 'log.view']);
      assert.equal(svc.seen.at(-1)!.query.get('node'), serviceNode);

      // the service enforces scopes (and the proxy relays its 403 envelope)
      const r3 = await call(P('/openapi'), {
        headers: { 'x-utilmeta-proxy-type': 'operations', 'x-utilmeta-node-id': serviceNode, authorization: `Bearer ${await c.sim.nodeToken(serviceNode, { scope: 'log.view' })}` },
      });
      assert.equal(r3.status, 403);
      assert.equal(r3.json.state, 'insufficient_scope');

      // the service's token bookkeeping recorded the use
      const [tok] = await c.node.db.ops<{ used_times: number }[]>`
        SELECT used_times FROM utilmeta_access_token WHERE token_id = ${JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).jti}`;
      assert.equal(tok.used_times, 1);

      // supervisor type → the instance base_url
      const r4 = await call(P('/hello'), {
        headers: { 'x-utilmeta-proxy-type': 'supervisor', 'x-utilmeta-node-id': serviceNode, authorization: `Bearer ${await c.sim.nodeToken(serviceNode)}` },
      });
      assert.equal(r4.status, 200, r4.text);
      assert.equal(r4.text, 'world');
      assert.equal(r4.headers['x-utilmeta-proxy-destination-base-url'], svc.baseUrl);
      assert.equal(svc.seen.at(-1)!.path, '/api/hello');
    });

    it('(d) the service\'s forward traffic reaches the platform', async () => {
      const [inst] = await c.node.db.registry<{ remote_id: string | null }[]>`SELECT remote_id FROM utilmeta_instance WHERE address = ${svc.address}`;
      assert.ok(inst.remote_id, 'the registered instance has its platform remote id');
      const n = c.sim.requestsTo('/heartbeat', 'POST').length;
      const r = await svc.forward('/heartbeat');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.state, 1);
      const hb = c.sim.requestsTo('/heartbeat', 'POST').slice(n);
      assert.equal(hb.length, 1);
      const h = hb[0].headers;
      assert.equal(h['x-cluster-id'], CLUSTER);
      assert.equal(h['x-node-id'], serviceNode);
      assert.equal(h['x-node-key'], c.sim.node(serviceNode).keys.publicKey);
      assert.equal(h['x-source-instance-id'], inst.remote_id);
      assert.equal(h['x-utilmeta-proxy-type'], undefined, 'the proxy type header is consumed');
      // what the service sent matches the captured 2.9 request (names and order)
      const sentNames = Object.keys(svc.forwarded.at(-1)!.headers);
      const fixtureNames = FORWARD_FIXTURE.headers.map(([k]) => k).filter((k) => !['Host', 'Content-Length', 'Connection'].includes(k));
      assert.deepEqual(sentNames, fixtureNames);
      assert.equal(h['user-agent'], FORWARD_FIXTURE.headers.find(([k]) => k === 'User-Agent')![1]);
    });

    it('(e) changed resources are uploaded once; unchanged or null resources upload nothing', async () => {
      const uploads = () => c.sim.requestsTo('/resources', 'POST').filter((x) => x.headers['x-node-id'] === serviceNode);
      const n0 = uploads().length;
      // right after the connect: the same document again
      let r = await svc.register();
      assert.equal(r.status, 200, r.text);
      assert.equal(uploads().length, n0, 'the document the connect uploaded is not uploaded again');

      svc.extraPaths['/items/{id}'] = { get: { operationId: 'item', responses: {} } };
      r = await svc.register();
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.node_id, serviceNode);
      const later = uploads();
      assert.equal(later.length, n0 + 1);
      assert.ok(((later.at(-1)!.decryptedJson as { openapi: { paths: Record<string, unknown> } }).openapi.paths)['/items/{id}']);
      assert.equal(later.at(-1)!.status, 200);

      r = await svc.register();
      assert.equal(r.status, 200, r.text);
      r = await svc.register({ resources: null });
      assert.equal(r.status, 200, r.text);
      assert.equal(uploads().length, n0 + 1);
      assert.equal(c.sim.requestsTo('/', 'POST').length, 2, 'no second add_node for a connected service');
    });

    it('(f) a token revoked through the proxy\'s own OperationsAPI is refused', async () => {
      const ops = `${c.node.origin}/api/ops`;
      const H = (t: string) => ({ 'x-node-id': proxyNode, authorization: `Bearer ${t}`, 'content-type': 'application/json' });
      const jti = `e2e-${server}-used`;
      const used = await c.sim.nodeToken(proxyNode, { jti, scope: 'api.view' });
      let r = await call(`${ops}/token/scope`, { headers: H(used) });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json.result, ['api.view']);

      const revoker = await c.sim.nodeToken(proxyNode, { scope: 'token.revoke' });
      const unseen = `e2e-${server}-unseen`;
      r = await call(`${ops}/token/revoke`, { method: 'POST', headers: H(revoker), body: JSON.stringify([jti, unseen]) });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.result, 1, 'one of the two ids existed before');

      r = await call(`${ops}/token/scope`, { headers: H(used) });
      assert.equal(r.status, 400);
      assert.equal(r.json.state, 'token_expired');
      r = await call(`${ops}/token/scope`, { headers: H(await c.sim.nodeToken(proxyNode, { jti: unseen })) });
      assert.equal(r.status, 400, 'a pre-revoked id is refused on first use');
      assert.equal(r.json.state, 'token_expired');

      // revoking needs the token.revoke scope
      r = await call(`${ops}/token/revoke`, { method: 'POST', headers: H(await c.sim.nodeToken(proxyNode, { scope: 'api.view' })), body: '["x"]' });
      assert.equal(r.status, 403);
      assert.equal(r.json.state, 'insufficient_scope');
    });
  });
}

describe('platform link failure paths (node listener)', () => {
  let c: Cluster;
  let svc: FakeService;
  let svcNode: string;
  let trap: TestUpstream;
  const P = (path: string) => `${c.node.origin}/api/proxy${path}`;

  before(async () => {
    // The platform answers 500 to every add_node until the test clears the fault.
    c = await startCluster('node', (sim) => sim.failNext(Number.POSITIVE_INFINITY, { path: '/', method: 'POST', status: 500, msg: 'platform is down' }));
    svc = await FakeService.start({ name: 'billing', proxyBaseUrl: c.baseUrl, opsDatabase: c.dbs.opsName });
    // An "attacker" endpoint on an untrusted host (127.0.0.2 is loopback but not a trusted host).
    trap = await startUpstream(undefined, '127.0.0.2');
  });
  after(async () => {
    await trap?.close();
    await svc?.close();
    await c?.close();
  });

  it('platform down at start: readyz says not connected with the error; it connects once the platform recovers', async () => {
    const failing = await until('failed self-connect attempts', () => {
      const s = c.node.platform.state();
      return s.attempts >= 2 && s.error ? s : null;
    });
    assert.equal(failing.connected, false);
    const ready = await call(`${c.node.origin}/api/readyz`);
    assert.equal(ready.status, 200, 'the node serves while the platform is away');
    assert.equal(ready.json.platform.configured, true);
    assert.equal(ready.json.platform.connected, false);
    assert.match(ready.json.platform.error, /platform is down/);
    assert.match(ready.json.platform.error, /500/);
    assert.ok(c.sim.requestsTo('/', 'POST').every((r) => r.injected === 'fail'));

    c.sim.clearFaults();
    const ok = await until('the self-connect after recovery', () => (c.node.platform.state().connected ? c.node.platform.state() : null));
    assert.ok(ok.node_id);
    assert.equal(ok.error, null);
    const rows = await supervisorRows(c.node, PROXY_NODE);
    assert.equal(rows.length, 1, 'failed attempts left no placeholder rows');
    assert.equal(rows[0].node_id, ok.node_id);
    const ready2 = await call(`${c.node.origin}/api/readyz`);
    assert.equal(ready2.json.platform.connected, true);
    c.sim.callbackMode = 'auto';
  });

  it('platform 500 during a service connect: 502 with a message, no placeholder left; the next registration connects', async () => {
    c.sim.failNext(1, { path: '/', method: 'POST', status: 500, msg: 'platform exploded' });
    const r = await svc.register();
    assert.equal(r.status, 502, r.text);
    assert.match(r.json.error, /platform exploded/);
    assert.equal(r.json.state, 'connect_failed');
    assert.equal(svc.nodeId, null);
    assert.equal((await supervisorRows(c.node, 'billing')).length, 0, 'the placeholder row was removed');
    assert.equal(await serviceNodeId(c.node, 'billing'), null, 'the service is registered without a node');

    const r2 = await svc.register();
    assert.equal(r2.status, 200, r2.text);
    svcNode = r2.json.node_id;
    assert.ok(svcNode);
    assert.equal(await serviceNodeId(c.node, 'billing'), svcNode);
    const rows = await supervisorRows(c.node, 'billing');
    assert.equal(rows.length, 1);
    assert.equal(rows[0].node_id, svcNode);
  });

  it('bad proxy and node tokens get 4xx with a state, never 500, and never reach the service', async () => {
    const now = Math.floor(Date.now() / 1000);
    const other = await generateRsaKeyPair('not-the-cluster');
    const OPS = { 'x-utilmeta-proxy-type': 'operations', 'x-utilmeta-cluster-id': CLUSTER, 'x-utilmeta-node-id': svcNode };
    const n = svc.seen.length;
    const cases: Array<{ name: string; headers: Record<string, string>; status: number; state: string }> = [
      { name: 'expired proxy token', headers: { ...OPS, 'proxy-authorization': `Bearer ${await c.sim.proxyToken(svcNode, { iat: now - 7200, exp: now - 3600 })}` }, status: 400, state: 'token_expired' },
      {
        name: 'forged proxy token (another key)',
        headers: { ...OPS, 'proxy-authorization': `Bearer ${await signJwt({ iss: c.sim.origin, aud: CLUSTER, nid: svcNode, iat: now, exp: now + 300, jti: 'forged' }, other.privateKey)}` },
        status: 401,
        state: 'token_invalid',
      },
      { name: 'wrong audience', headers: { ...OPS, 'proxy-authorization': `Bearer ${await c.sim.proxyToken(svcNode, { aud: 'cluster-2' })}` }, status: 409, state: 'audience_mismatch' },
      { name: 'wrong cluster header', headers: { ...OPS, 'x-utilmeta-cluster-id': 'cluster-2', 'proxy-authorization': `Bearer ${await c.sim.proxyToken(svcNode)}` }, status: 403, state: 'cluster_mismatch' },
      { name: 'proxy token for another node', headers: { ...OPS, 'proxy-authorization': `Bearer ${await c.sim.proxyToken('someone-else')}` }, status: 409, state: 'node_id_mismatch' },
      { name: 'garbage proxy token', headers: { ...OPS, 'proxy-authorization': 'Bearer not.a.jwt' }, status: 400, state: 'token_invalid' },
      { name: 'node token with a wrong nid', headers: { ...OPS, authorization: `Bearer ${await c.sim.nodeToken(svcNode, { nid: 'someone-else' })}` }, status: 409, state: 'node_id_mismatch' },
      { name: 'expired node token', headers: { ...OPS, authorization: `Bearer ${await c.sim.nodeToken(svcNode, { iat: now - 7200, exp: now - 3600 })}` }, status: 400, state: 'token_expired' },
      { name: 'no Authorization and no Proxy-Authorization', headers: { ...OPS }, status: 407, state: 'token_required' },
    ];
    for (const k of cases) {
      const r = await call(P('/'), { headers: k.headers });
      assert.equal(r.status, k.status, `${k.name}: ${r.text}`);
      assert.equal(r.json.state, k.state, k.name);
      assert.equal(typeof r.json.error, 'string', k.name);
      if (k.status === 407) assert.equal(r.headers['proxy-authenticate'], 'Bearer');
    }
    assert.equal(svc.seen.length, n, 'no refused request reached the service');

    // control: a valid cluster token for the connected node does reach its OperationsAPI
    const ok = await call(P('/'), { headers: { ...OPS, 'proxy-authorization': `Bearer ${await c.sim.proxyToken(svcNode)}` } });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.result.service, 'billing');
    assert.equal(svc.seen.length, n + 1);
  });

  /** A connected-looking supervisor row with the given URLs (what a tampered ops DB could hold). */
  async function insertSupervisor(nodeId: string, baseUrl: string, backupUrls: string[]): Promise<void> {
    const key = await generateRsaKeyPair(nodeId);
    const row = await c.node.platform.repo.createPlaceholder({ service: 'tampered', baseUrl, initKey: `init-${nodeId}`, opsApi: 'http://10.9.9.9:8000/api/ops' });
    await c.node.db.ops`
      UPDATE utilmeta_supervisor SET node_id = ${nodeId}, public_key = ${key.publicKey}, init_key = NULL, connected = true,
        backup_urls = ${JSON.stringify(backupUrls)}::text::jsonb
      WHERE id = ${row.id}`;
  }

  it('forward never sends to an untrusted backup URL; a trusted backup is used when the base URL is untrusted', async () => {
    const dead = await deadPort();
    const trapUrl = `${trap.url}/spv`;
    const F = (nodeId: string) => ({ 'x-utilmeta-proxy-type': 'forward', 'x-node-id': nodeId, 'content-type': 'application/json' });

    // base_url trusted but down; backups untrusted → not tried, the error names the base URL
    await insertSupervisor('tampered-a', `http://127.0.0.1:${dead}/spv`, ['http://evil.example.com/spv', trapUrl]);
    const a = await call(P('/heartbeat'), { method: 'POST', headers: F('tampered-a'), body: '' });
    assert.equal(a.status, 502, a.text);
    assert.equal(a.json.state, 'upstream_refused');
    assert.equal(a.headers['x-utilmeta-proxy-destination-base-url'], `http://127.0.0.1:${dead}/spv`);
    assert.equal(a.headers['x-utilmeta-proxy-retries'], undefined, 'no other candidate was tried');

    // every URL untrusted → refused without any request
    await insertSupervisor('tampered-c', 'http://evil.example.com/spv', [trapUrl]);
    const cc = await call(P('/heartbeat'), { method: 'POST', headers: F('tampered-c') });
    assert.equal(cc.status, 502, cc.text);
    assert.equal(cc.json.state, 'untrusted_supervisor');

    // base_url untrusted, a backup is the platform → reaches the platform via the backup
    const n = c.sim.requestsTo('/heartbeat', 'POST').length;
    await insertSupervisor('tampered-b', trapUrl, [c.sim.baseUrl]);
    const b = await call(P('/heartbeat'), { method: 'POST', headers: F('tampered-b') });
    const hb = c.sim.requestsTo('/heartbeat', 'POST').slice(n);
    assert.equal(hb.length, 1, b.text);
    assert.equal(hb[0].headers['x-node-id'], 'tampered-b');
    assert.equal(hb[0].headers['x-cluster-id'], CLUSTER);
    assert.equal(b.headers['x-utilmeta-proxy-destination-base-url'], c.sim.baseUrl);
    assert.equal(b.status, 404, 'the platform does not know this node (relayed)');
    assert.equal(b.json.state, 'node_not_exists');

    assert.equal(trap.seen.length, 0, 'the untrusted host never received a request');
  });
});
