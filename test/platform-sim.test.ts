// Exercises the platform simulator itself (test/support/platform-sim.ts): add_node with real JWE
// bodies and the OperationsAPI callback (direct and through a fake proxy), resources 200/304 in
// both result shapes, the other supervisor routes, fault injection and token minting.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { PlatformSim, generateRsaKeyPair, type SupervisorData } from './support/platform-sim.ts';
import { encryptBody, readJweHeader } from '../src/platform/jwe.ts';
import { verifyToken, parseScope } from '../src/tokens/jwt.ts';
import { keyEntry } from '../src/tokens/keys.ts';

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A tiny HTTP server standing in for an OperationsAPI (or for the proxy in front of one). */
async function startServer(answer: (seen: Seen) => { status: number; body: unknown }): Promise<{ url: string; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const s: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
    seen.push(s);
    const { status, body } = answer(s);
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** OperationsAPI `POST /` answer: echoes node_id like utilmeta's (§3.6.1 step 6). */
const opsAnswer = (s: Seen) => {
  const data = JSON.parse(s.body || '{}') as Partial<SupervisorData>;
  return { status: 200, body: { result: { node_id: data.node_id, utilmeta: '0.4.0', service: 'orders', timestamp: Date.now(), requires: [] }, msg: '', state: 1, count: 0 } };
};

// Python json.dumps style, as a service or the proxy would send it.
const metadata = (opsApi: string, name = 'orders') =>
  `{"ops_api": "${opsApi}", "name": "${name}", "base_url": "http://10.0.0.5:8000/api", "title": null, "description": "", "version": "1.0.0", "spec_version": "0.4.0", "production": false, "language": "python", "language_version": "3.11.2", "utilmeta_version": "2.9.0"}`;

interface Envelope<T = unknown> {
  result: T;
  msg: string;
  state: unknown;
  count: number;
}

async function call(url: string, init: { method?: string; headers?: Record<string, string>; body?: string; signal?: AbortSignal } = {}) {
  const r = await fetch(url, { method: init.method ?? 'GET', headers: init.headers, body: init.body, signal: init.signal });
  const text = await r.text();
  return { status: r.status, text, json: (text ? JSON.parse(text) : undefined) as Envelope<any> };
}

let sim: PlatformSim;
let ops: Awaited<ReturnType<typeof startServer>>;

before(async () => {
  sim = await PlatformSim.start({ clusterId: 'cluster-1' });
  ops = await startServer(opsAnswer);
});
after(async () => {
  await sim.close();
  await ops.close();
});

/** add_node with the cluster key; returns the response. */
async function addNode(opsApi: string, opts: { key?: string; clusterId?: string; name?: string; body?: string } = {}) {
  const key = opts.key ?? sim.clusterPublicKey;
  const body = opts.body ?? (await encryptBody(metadata(opsApi, opts.name), key));
  return call(sim.baseUrl, {
    method: 'POST',
    headers: { 'X-Cluster-Key': key, 'X-Cluster-Id': opts.clusterId ?? sim.clusterId, 'content-type': 'application/json' },
    body,
  });
}

/** A node created without a callback (answer carries SupervisorData). */
async function newNode(name = 'orders'): Promise<SupervisorData> {
  const prev = sim.callbackMode;
  sim.callbackMode = 'none';
  try {
    const r = await addNode('http://10.0.0.5:8000/api/ops', { name });
    assert.equal(r.status, 200);
    return r.json.result as SupervisorData;
  } finally {
    sim.callbackMode = prev;
  }
}

test('simulator keys: sorted-key RSA JWK JSON with alg/kid, base URL under /spv', async () => {
  const pub = JSON.parse(sim.clusterPublicKey) as Record<string, string>;
  assert.deepEqual(Object.keys(pub), ['alg', 'e', 'kid', 'kty', 'n']);
  assert.equal(pub.alg, 'RSA-OAEP-256');
  assert.equal(pub.kty, 'RSA');
  assert.equal(Buffer.from(pub.n, 'base64url').length, 256);
  const priv = JSON.parse(sim.clusterPrivateKey) as Record<string, string>;
  assert.deepEqual(Object.keys(priv), ['alg', 'd', 'dp', 'dq', 'e', 'kid', 'kty', 'n', 'p', 'q', 'qi']);
  assert.match(sim.baseUrl, /^http:\/\/127\.0\.0\.1:\d+\/spv$/);
  assert.ok(sim.baseUrl.startsWith(sim.origin + '/'));
});

test('add_node (cluster key) decrypts the body and calls back the OperationsAPI directly; result null', async () => {
  const before = ops.seen.length;
  const meta = metadata(`${ops.url}/api/ops`);
  const body = await encryptBody(meta, sim.clusterPublicKey);
  const r = await addNode(`${ops.url}/api/ops`, { body });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.result, null);
  assert.equal(r.json.state, 1);

  const rec = sim.requests.at(-1)!;
  assert.equal(rec.method, 'POST');
  assert.equal(rec.path, '/');
  assert.equal(rec.bodyText, body);
  assert.equal(rec.decryptedText, meta, 'recorded plaintext is byte-exact');
  assert.equal(rec.decryptedWith, 'cluster');
  assert.equal(rec.jweHeader?.kid, await keyEntry(sim.clusterPublicKey).thumbprint());
  assert.equal(rec.headers['x-cluster-id'], 'cluster-1');
  assert.ok(rec.rawHeaders.some(([n]) => n === 'X-Cluster-Key'), 'raw header casing kept');

  assert.equal(ops.seen.length, before + 1);
  const cb = ops.seen.at(-1)!;
  assert.equal(cb.method, 'POST');
  assert.equal(cb.url, '/api/ops', 'POST {ops_api}/ is ops_api itself');
  const data = JSON.parse(cb.body) as SupervisorData;
  assert.equal(cb.headers['x-node-id'], data.node_id);
  assert.equal(data.init_key, sim.clusterPublicKey, 'init_key is the key text received');
  assert.equal(data.base_url, sim.baseUrl);
  assert.equal(data.ops_api, `${ops.url}/api/ops`);
  assert.equal(data.ident, 'sim-spv');
  assert.deepEqual(data.backup_urls, []);
  assert.equal(data.local, false);
  const nodePub = JSON.parse(data.public_key!) as Record<string, string>;
  assert.equal(nodePub.kid, data.node_id);
  assert.equal(nodePub.d, undefined, 'only the public half is handed out');

  const node = sim.node(data.node_id);
  assert.equal(node.name, 'orders');
  assert.equal(node.via, 'cluster');
  const last = sim.callbacks.at(-1)!;
  assert.equal(last.mode, 'direct');
  assert.equal(last.ok, true);
});

test('add_node answers with SupervisorData when the OperationsAPI is unreachable or does not echo the node id', async () => {
  const dead = await startServer(() => ({ status: 200, body: {} }));
  const deadUrl = `${dead.url}/api/ops`;
  await dead.close();
  const r = await addNode(deadUrl);
  assert.equal(r.status, 200);
  const data = r.json.result as SupervisorData;
  assert.match(data.node_id, /^snode-/);
  assert.equal(data.init_key, sim.clusterPublicKey);
  assert.equal(data.ops_api, deadUrl);
  assert.ok(sim.callbacks.at(-1)!.error, 'connection error recorded');

  // A 200 that is not the save_supervisor answer (e.g. redirected to GET /) is not success.
  const wrong = await startServer(() => ({ status: 200, body: { result: { utilmeta: '0.4.0' }, msg: '', state: 1 } }));
  try {
    const r2 = await addNode(`${wrong.url}/api/ops`);
    assert.notEqual(r2.json.result, null);
    assert.equal(sim.callbacks.at(-1)!.ok, false);
    assert.equal(wrong.seen.length, 1);
  } finally {
    await wrong.close();
  }
});

test('cluster node callback goes through the proxy with a verifiable Proxy-Authorization', async () => {
  const proxy = await startServer(opsAnswer);
  sim.proxyBaseUrl = `${proxy.url}/api`;
  try {
    const r = await addNode('http://10.9.9.9:8000/api/ops', { name: 'billing' });
    assert.equal(r.status, 200);
    assert.equal(r.json.result, null, 'callback through the proxy succeeded');
    assert.equal(proxy.seen.length, 1);
    const s = proxy.seen[0];
    assert.equal(s.method, 'POST');
    assert.equal(s.url, '/api/proxy');
    assert.equal(s.headers['x-utilmeta-proxy-type'], 'operations');
    assert.equal(s.headers['x-utilmeta-cluster-id'], 'cluster-1');
    assert.equal(s.headers['x-utilmeta-service-name'], 'billing');
    const data = JSON.parse(s.body) as SupervisorData;
    assert.equal(s.headers['x-utilmeta-node-id'], data.node_id);
    assert.equal(data.init_key, sim.clusterPublicKey);
    const auth = String(s.headers['proxy-authorization']);
    assert.match(auth, /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
    const v = await verifyToken(auth, { key: sim.clusterPublicKey, nodeId: data.node_id, issuerBase: sim.baseUrl, audience: 'cluster-1', requireJti: true });
    assert.ok(v.ok, JSON.stringify(v));
    assert.equal(v.claims.iss, sim.origin);
    assert.ok(typeof v.claims.iat === 'number' && v.claims.exp > v.claims.iat);
    assert.equal(sim.callbacks.at(-1)!.mode, 'proxy');
  } finally {
    sim.proxyBaseUrl = undefined;
    await proxy.close();
  }
});

test('add_node with an access key (direct connect)', async () => {
  const access = await sim.createAccessKey();
  const meta = metadata(`${ops.url}/api/ops`, 'solo');
  const r = await call(sim.baseUrl, {
    method: 'POST',
    headers: { 'X-Access-Key': access, 'content-type': 'application/json' },
    body: await encryptBody(meta, access),
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.result, null);
  const data = JSON.parse(ops.seen.at(-1)!.body) as SupervisorData;
  assert.equal(data.init_key, access);
  assert.equal(sim.node(data.node_id).via, 'access');
  assert.equal(sim.node(data.node_id).clusterId, null);
  assert.equal(sim.requests.at(-1)!.decryptedWith, 'access:1');
});

test('add_node refuses wrong keys, wrong cluster id, bodies not encrypted to the key, bad metadata', async () => {
  const stranger = await generateRsaKeyPair('stranger');
  assert.equal((await addNode('http://x/api/ops', { key: stranger.publicKey })).status, 403);
  const wrongId = await addNode('http://x/api/ops', { clusterId: 'cluster-2' });
  assert.equal(wrongId.status, 403);
  assert.match(wrongId.json.msg, /cluster id/);
  const toStranger = await addNode('http://x/api/ops', { body: await encryptBody(metadata('http://x/api/ops'), stranger.publicKey) });
  assert.equal(toStranger.status, 400);
  assert.match(sim.requests.at(-1)!.decryptError ?? '', /no key with kid/);
  assert.equal((await addNode('http://x/api/ops', { body: metadata('http://x/api/ops') })).status, 400, 'plain JSON is refused');
  const noOps = await addNode('', { body: await encryptBody('{"name": "x", "base_url": "http://x"}', sim.clusterPublicKey) });
  assert.equal(noOps.status, 422);
  assert.match(noOps.json.msg, /ops_api/);
  const noKey = await call(sim.baseUrl, { method: 'POST', body: '{}' });
  assert.equal(noKey.status, 401);
  assert.deepEqual(Object.keys(noKey.json), ['result', 'msg', 'state', 'count']);
});

test('resources: 200 (2.8 shape), 304 for identical bytes, 200 again on change, 2.9 shape', async () => {
  const data = await newNode('inventory');
  const headers = { 'X-Node-ID': data.node_id, 'X-Node-Key': data.public_key!, 'X-Cluster-Id': 'cluster-1', 'content-type': 'application/json' };
  const resources =
    '{"metadata": {"name": "inventory"}, "instances": [{"server": {"ip": "10.0.0.5"}, "address": "10.0.0.5:8000", "port": 8000}], ' +
    '"tables": [{"ident": "app.item", "ref": "app.models.Item"}], "databases": [{"alias": "default"}], "caches": [{"alias": "redis"}]}';
  const upload = async (text: string) => call(`${sim.baseUrl}/resources`, { method: 'POST', headers, body: await encryptBody(text, data.public_key!) });

  const r1 = await upload(resources);
  assert.equal(r1.status, 200, r1.text);
  const res1 = r1.json.result as { url: string; resources: Array<Record<string, unknown>>; resources_etag: string };
  assert.deepEqual(Object.keys(res1).sort(), ['resources', 'resources_etag', 'url']);
  assert.equal(res1.url, sim.node(data.node_id).url);
  assert.equal(res1.resources_etag, createHash('sha256').update(resources).digest('hex'));
  assert.deepEqual(res1.resources.map((r) => `${r.type}:${r.ident}`), ['server:10.0.0.5', 'instance:10.0.0.5:8000', 'table:app.item', 'database:default', 'cache:redis']);
  const server = res1.resources[0];
  assert.equal(res1.resources[1].server_id, server.remote_id);
  assert.equal(sim.requests.at(-1)!.decryptedWith, `node:${data.node_id}`);

  // Same plaintext, fresh encryption (different ciphertext): 304 with no body.
  const r2 = await upload(resources);
  assert.equal(r2.status, 304);
  assert.equal(r2.text, '');
  assert.notEqual(sim.requests.at(-1)!.bodyText, sim.requests.at(-2)!.bodyText);

  const changed = resources.replace('"redis"', '"memcache"');
  sim.resourcesShape = '2.9';
  try {
    const r3 = await upload(changed);
    assert.equal(r3.status, 200);
    const res3 = r3.json.result as { resources: unknown[]; supervisor: Record<string, unknown> };
    assert.deepEqual(Object.keys(res3), ['resources', 'supervisor']);
    assert.deepEqual(Object.keys(res3.supervisor).sort(), ['alert_settings', 'heartbeat_interval', 'node_id', 'report_settings', 'resources_etag', 'settings', 'url']);
    assert.equal(res3.supervisor.node_id, data.node_id);
    assert.equal(res3.supervisor.resources_etag, createHash('sha256').update(changed).digest('hex'));
    assert.equal(res3.supervisor.heartbeat_interval, 60);
    assert.equal(res3.resources.length, 5);
    assert.equal((await upload(changed)).status, 304);
  } finally {
    sim.resourcesShape = '2.8';
  }
});

test('resources: custom etag function, wrong key, unknown node, key mismatch', async () => {
  const data = await newNode('etags');
  const headers = { 'X-Node-ID': data.node_id, 'content-type': 'application/json' };
  sim.etagOf = (b) => `len-${b.length}`;
  try {
    const r = await call(`${sim.baseUrl}/resources`, { method: 'POST', headers, body: await encryptBody('{"a": 1}', data.public_key!) });
    assert.equal(r.json.result.resources_etag, 'len-8');
  } finally {
    sim.etagOf = (b) => createHash('sha256').update(b).digest('hex');
  }
  const toCluster = await call(`${sim.baseUrl}/resources`, { method: 'POST', headers, body: await encryptBody('{"a": 2}', sim.clusterPublicKey) });
  assert.equal(toCluster.status, 400);
  assert.match(toCluster.json.msg, /node key/);
  const unknown = await call(`${sim.baseUrl}/resources`, { method: 'POST', headers: { 'X-Node-ID': 'nope' }, body: '{}' });
  assert.equal(unknown.status, 404);
  assert.equal(unknown.json.state, 'node_not_exists');
  const other = await generateRsaKeyPair('other');
  const mismatch = await call(`${sim.baseUrl}/resources`, {
    method: 'POST',
    headers: { ...headers, 'X-Node-Key': other.publicKey },
    body: await encryptBody('{"a": 3}', data.public_key!),
  });
  assert.equal(mismatch.status, 403);
});

test('info, list, report, batch, alert, recovery, heartbeat, delete', async () => {
  const info = await call(sim.baseUrl);
  assert.equal(info.status, 200);
  assert.equal(info.json.result.utilmeta, '0.4.0');
  assert.equal(info.json.result.supervisor, 'sim-spv');
  assert.equal(typeof info.json.result.timestamp, 'number');
  const list = await call(`${sim.baseUrl}/list`);
  assert.deepEqual(list.json.result, [{ base_url: sim.baseUrl, ident: 'sim-spv' }]);

  const data = await newNode('reports');
  const h = { 'X-Node-ID': data.node_id, 'X-Node-Key': data.public_key!, 'content-type': 'application/json' };
  const enc = (t: string) => encryptBody(t, data.public_key!);
  const rep = await call(`${sim.baseUrl}/report`, { method: 'POST', headers: h, body: await enc('{"time": "2026-01-01T00:00:00Z", "layer": 0}') });
  assert.equal(rep.status, 200);
  assert.match(rep.json.result.id, /^report-/);
  assert.deepEqual(sim.requests.at(-1)!.decryptedJson, { time: '2026-01-01T00:00:00Z', layer: 0 });
  const batch = await call(`${sim.baseUrl}/report/batch`, { method: 'POST', headers: h, body: await enc('[{"layer": 0}, {"layer": 1}]') });
  assert.equal(batch.json.result.length, 2);
  assert.equal((await call(`${sim.baseUrl}/report/batch`, { method: 'POST', headers: h, body: await enc('{}') })).status, 422);
  const alert = await call(`${sim.baseUrl}/alert`, { method: 'POST', headers: h, body: await enc('{"settings_name": "cpu", "time": 1.5}') });
  assert.equal(alert.json.result.status, 'open');
  const rec = await call(`${sim.baseUrl}/alert/recovery`, { method: 'POST', headers: h, body: await enc(`{"id": "${alert.json.result.id}", "recovered_time": 9.5}`) });
  assert.deepEqual(rec.json.result, { id: alert.json.result.id, status: 'recovered', recovered_time: 9.5 });
  const hb = await call(`${sim.baseUrl}/heartbeat`, { method: 'POST', headers: { 'X-Node-ID': data.node_id } });
  assert.equal(hb.status, 200);
  assert.equal(hb.json.result, null);
  assert.equal((await call(`${sim.baseUrl}/heartbeat`, { method: 'POST', headers: { 'X-Node-ID': data.node_id, 'X-Cluster-Id': 'cluster-9' } })).status, 403);

  const del = () => call(sim.baseUrl, { method: 'DELETE', headers: { 'X-Cluster-Key': sim.clusterPublicKey, 'X-Node-ID': data.node_id, 'X-Node-Key': data.public_key! } });
  const d1 = await del();
  assert.equal(d1.status, 200);
  assert.equal(d1.json.result, data.node_id);
  const d2 = await del();
  assert.equal(d2.status, 404);
  assert.equal(d2.json.state, 'node_not_exists');
  assert.equal((await call(`${sim.baseUrl}/heartbeat`, { method: 'POST', headers: { 'X-Node-ID': data.node_id } })).status, 404);
  const stranger = await generateRsaKeyPair('s');
  assert.equal((await call(sim.baseUrl, { method: 'DELETE', headers: { 'X-Access-Key': stranger.publicKey, 'X-Node-ID': 'x' } })).status, 403);

  assert.equal((await call(`${sim.baseUrl}/nope`)).status, 404);
  assert.equal((await call(`${sim.origin}/elsewhere`)).status, 404);
});

test('fault injection: fail next N, fail a path, hang', async () => {
  sim.failNext(2, { msg: 'platform down' });
  for (let i = 0; i < 2; i++) {
    const r = await call(`${sim.baseUrl}/list`);
    assert.equal(r.status, 500);
    assert.equal(r.json.msg, 'platform down');
    assert.equal(sim.requests.at(-1)!.injected, 'fail');
  }
  assert.equal((await call(`${sim.baseUrl}/list`)).status, 200, 'only the next 2 fail');

  sim.failNext(1, { path: '/resources', status: 503, msg: 'busy' });
  assert.equal((await call(`${sim.baseUrl}/list`)).status, 200, 'other paths unaffected');
  const r = await call(`${sim.baseUrl}/resources`, { method: 'POST', headers: { 'X-Node-ID': 'x' }, body: '{}' });
  assert.equal(r.status, 503);
  assert.equal(r.json.msg, 'busy');
  assert.equal((await call(`${sim.baseUrl}/resources`, { method: 'POST', headers: { 'X-Node-ID': 'x' }, body: '{}' })).status, 404, 'fault consumed');

  sim.hangNext(1, { path: '/list' });
  const started = Date.now();
  await assert.rejects(call(`${sim.baseUrl}/list`, { signal: AbortSignal.timeout(300) }), /aborted|timeout/i);
  assert.ok(Date.now() - started >= 250);
  const hung = sim.requestsTo('/list').at(-1)!;
  assert.equal(hung.injected, 'hang');
  assert.equal(hung.status, null);
  assert.equal((await call(`${sim.baseUrl}/list`)).status, 200, 'hang consumed');

  sim.failNext(Infinity, { path: '/heartbeat' });
  sim.clearFaults();
  assert.notEqual((await call(`${sim.baseUrl}/heartbeat`, { method: 'POST' })).status, 500);
});

test('minted tokens verify with verifyToken; overrides change the verdict', async () => {
  const data = await newNode('tokens');
  const id = data.node_id;
  const proxyOpts = { key: sim.clusterPublicKey, nodeId: id, issuerBase: sim.baseUrl, audience: sim.clusterId, requireJti: true };
  const pt = await verifyToken(await sim.proxyToken(id), proxyOpts);
  assert.ok(pt.ok, JSON.stringify(pt));
  assert.equal(pt.claims.aud, 'cluster-1');
  const ps = await verifyToken(await sim.proxyToken(id, {}, { alg: 'PS256' }), proxyOpts);
  assert.ok(ps.ok && ps.header.alg === 'PS256');
  const noExp = await verifyToken(await sim.proxyToken(id, { exp: undefined }), proxyOpts);
  assert.ok(!noExp.ok && noExp.status === 422);
  const otherAud = await verifyToken(await sim.proxyToken(id, { aud: 'cluster-2' }), proxyOpts);
  assert.ok(!otherAud.ok && otherAud.state === 'audience_mismatch');
  // A proxy token does not verify as a node token (different key).
  const nodeOpts = { key: data.public_key!, nodeId: id, issuerBase: sim.baseUrl, requireJti: true };
  const cross = await verifyToken(await sim.proxyToken(id), nodeOpts);
  assert.ok(!cross.ok && cross.status === 401);

  const nt = await verifyToken(await sim.nodeToken(id, { scope: 'api.view log.view', jti: 'j-1' }), { ...nodeOpts, audience: 'http://10.0.0.5:8000/api/ops' });
  assert.ok(nt.ok, JSON.stringify(nt));
  assert.equal(nt.claims.jti, 'j-1');
  assert.deepEqual(parseScope(nt.claims.scope).scopes, ['api.view', 'log.view']);
  assert.equal(nt.claims.sub, 'sim-user');
  const expired = await verifyToken(await sim.nodeToken(id, { exp: Math.floor(Date.now() / 1000) - 120 }), nodeOpts);
  assert.ok(!expired.ok && expired.state === 'token_expired');
  await assert.rejects(sim.nodeToken('snode-unknown'), /unknown node/);
  assert.equal(readJweHeader(await encryptBody('x', data.public_key!))?.kid, await keyEntry(data.public_key!).thumbprint());
});
