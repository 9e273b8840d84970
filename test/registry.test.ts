// POST/GET/DELETE /api/registry against the real PostgreSQL, on both listeners.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request } from 'undici';
import { freshDatabases, startTestNode, LISTENERS, adminSql, type TestDatabases, type TestNode } from './support/env.ts';
import { insertInstanceResource, registrationBody } from './support/ops.ts';
import { etag, parse, get } from '../src/pyjson/index.ts';

const fixture = (name: string) =>
  JSON.parse(readFileSync(new URL(`../../shared/fixtures/service-startup/${name}`, import.meta.url), 'utf8')) as { body_text: string; headers: [string, string][] };

/** The keys utilmeta's RegistryInstanceSchema requires (spec §1.4 "Client requirements"), plus created_time for ≤2.8.1. */
const CLIENT_KEYS = ['id', 'service_id', 'node_id', 'address', 'base_url', 'ops_api', 'resource_id', 'server_id', 'remote_id', 'cwd', 'weight',
  'connected', 'public', 'version', 'asynchronous', 'production', 'language', 'language_version', 'utilmeta_version', 'backend',
  'backend_version', 'deprecated', 'resources_etag', 'created_time'];

let portSeq = 20000 + Math.floor(Math.random() * 20000);
const nextAddress = () => `127.0.0.1:${portSeq++}`;

async function post(node: TestNode, body: string | object, headers: Record<string, string> = {}) {
  const r = await request(`${node.origin}/api/registry`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: r.statusCode, headers: r.headers, json: (await r.body.json()) as Record<string, any> };
}

for (const server of LISTENERS) {
  describe(`registry API (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    before(async () => {
      dbs = freshDatabases();
      node = await startTestNode(server, dbs);
    });
    after(async () => {
      await node?.close();
      await dbs?.drop();
    });

    for (const [label, file] of [['2.8.1', 'utilmeta-2.8.1-registry-request.json'], ['2.9', 'utilmeta-2.9-registry-request.json']] as const) {
      it(`registers the captured utilmeta ${label} startup request byte for byte`, async () => {
        // Fresh ops ids per case: rewrite the fixture's address (and so its resource row) only.
        const fx = fixture(file);
        const address = nextAddress();
        const text = fx.body_text.replaceAll('127.0.0.1:8000', address);
        const doc = parse(text);
        const res = await insertInstanceResource(node.db.ops, { service: 'harness-demo-' + label, address });
        const body = text.replace('"name": "harness-demo"', `"name": "harness-demo-${label}"`).replace('"instance_id": "2"', `"instance_id": "${res.id}"`);
        const r = await post(node, body);
        assert.equal(r.status, 200, JSON.stringify(r.json));
        for (const k of CLIENT_KEYS) assert.ok(k in r.json, `response lacks ${k}`);
        assert.equal(typeof r.json.id, 'number');
        assert.equal(typeof r.json.service_id, 'string');
        assert.equal(r.json.resource_id, res.id);
        assert.equal(r.json.server_id, res.serverId);
        assert.equal(r.json.node_id, null);
        assert.equal(r.json.address, address);
        assert.equal(r.json.base_url, `http://${address}/api`);
        assert.equal(typeof r.json.language_version, 'string');
        assert.match(r.json.created_time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
        assert.equal('resources' in r.json, false);
        // The etag is UtilMeta's digest of Python's json.dumps of the received resources.
        const resources = get(parse(body), 'resources');
        assert.ok(resources !== undefined && resources !== null);
        assert.equal(r.json.resources_etag, etag(resources));
        assert.ok(doc);
        const [row] = await node.db.registry`SELECT resources_etag, resources->'metadata'->>'name' AS meta_name, host(host) AS host, port, version_major, version_minor, version_patch FROM utilmeta_instance WHERE id = ${r.json.id}`;
        assert.equal(row.resources_etag, r.json.resources_etag, 'stored as a JSON string in a jsonb column');
        assert.equal(row.meta_name, 'harness-demo');
        assert.equal(row.host, '127.0.0.1');
        assert.deepEqual([row.version_major, row.version_minor, row.version_patch], [1, 2, 3]);
      });
    }

    it('re-registration updates the same instance; resources: null keeps the stored etag', async () => {
      const address = nextAddress();
      const res = await insertInstanceResource(node.db.ops, { service: 'orders', address, remoteId: 'r-1' });
      const first = await post(node, registrationBody({ name: 'orders', address, instanceId: res.id, resources: { metadata: { name: 'orders' } } }));
      assert.equal(first.status, 200);
      const second = await post(node, registrationBody({ name: 'orders', address, instanceId: res.id, version: '1.3.0' }));
      assert.equal(second.status, 200);
      assert.equal(second.json.id, first.json.id);
      assert.equal(second.json.version, '1.3.0');
      assert.equal(second.json.version_minor, 3);
      assert.equal(second.json.remote_id, 'r-1');
      assert.equal(second.json.resources_etag, first.json.resources_etag);
      const [{ n }] = await node.db.registry`SELECT count(*)::int AS n FROM utilmeta_instance WHERE address = ${address}`;
      assert.equal(n, 1);
    });

    it('renames a service when it registers under a new name and keeps finding it by the old one', async () => {
      const address = nextAddress();
      // A renamed UtilMeta service keeps its node id and address and writes a new instance row.
      const res = await insertInstanceResource(node.db.ops, { service: 'billing', address, nodeId: 'node-billing' });
      const first = await post(node, registrationBody({ name: 'billing', address, instanceId: res.id }));
      assert.equal(first.status, 200);
      assert.equal(first.json.node_id, 'node-billing', 'a new service takes the node id of its ops row');
      await node.db.ops`UPDATE utilmeta_resource SET deleted_time = now() WHERE id = ${res.id}`;
      const res2 = await insertInstanceResource(node.db.ops, { service: 'billing-v2', address, nodeId: 'node-billing' });
      const r = await post(node, registrationBody({ name: 'billing-v2', address, instanceId: res2.id }));
      assert.equal(r.status, 200, JSON.stringify(r.json));
      const services = await node.db.registry`SELECT s.name, array_agg(r.name ORDER BY r.id) AS names FROM utilmeta_service s JOIN utilmeta_service_name_record r ON r.service_id = s.id WHERE s.id = ${r.json.service_id} GROUP BY s.name`;
      assert.equal(services[0].name, 'billing-v2');
      assert.deepEqual(services[0].names, ['billing', 'billing-v2']);
      assert.equal(r.json.service_id, first.json.service_id);
      assert.equal(r.json.resource_id, res2.id);
      assert.equal(node.registry.snapshot.service('billing')?.name, 'billing-v2');
      // Registering under an old name again renames it back (the original's name-record path).
      const res3 = await insertInstanceResource(node.db.ops, { service: 'billing', address, nodeId: 'node-billing' });
      await node.db.ops`UPDATE utilmeta_resource SET deleted_time = now() WHERE id = ${res2.id}`;
      const back = await post(node, registrationBody({ name: 'billing', address, instanceId: res3.id }));
      assert.equal(back.status, 200);
      assert.equal(back.json.service_id, first.json.service_id);
      assert.equal(node.registry.snapshot.service('billing-v2')?.name, 'billing');
    });

    it('rejects a registration whose instance row is missing from the ops database, writing nothing', async () => {
      const address = nextAddress();
      const r = await post(node, registrationBody({ name: 'ghost', address, instanceId: '999999' }));
      assert.equal(r.status, 400);
      assert.match(r.json.error, /instance\(id=999999, address=.*\) .*not found in operations database/);
      const rows = await node.db.registry`SELECT 1 FROM utilmeta_service WHERE name = 'ghost'`;
      assert.equal(rows.length, 0);
    });

    it('validates the body with messages naming the field', async () => {
      const address = nextAddress();
      const cases: Array<[string | object, RegExp]> = [
        ['{"name": ', /not valid JSON/],
        ['[]', /must be a JSON object/],
        [{ ...registrationBody({ name: 'x', address, instanceId: '1' }), name: undefined }, /'name' is required/],
        [{ ...registrationBody({ name: 'x', address, instanceId: '1' }), instance_id: 'abc' }, /'instance_id' must be the integer id/],
        [{ ...registrationBody({ name: 'x', address, instanceId: '1' }), address: 'no port/path' }, /'address'/],
        [{ ...registrationBody({ name: 'x', address, instanceId: '1' }), ops_api: 'http://10.9.9.9:1/api/ops' }, /'ops_api' netloc '10.9.9.9:1' is inconsistent/],
        [{ ...registrationBody({ name: 'x', address, instanceId: '1' }), base_url: 'http://10.9.9.9:1/api' }, /'base_url' netloc '10.9.9.9:1'/],
        [{ ...registrationBody({ name: 'x', address, instanceId: '1' }), version: 5 }, /'version' must be a string/],
        [{ ...registrationBody({ name: 'x'.repeat(61), address, instanceId: '1' }) }, /'name' is longer than 60/],
        [{ ...registrationBody({ name: 'x', address, instanceId: '1' }), resources: [1] }, /'resources' must be an object/],
      ];
      for (const [body, pattern] of cases) {
        const r = await post(node, body);
        assert.equal(r.status, 400, `${JSON.stringify(body).slice(0, 80)} → ${r.status}`);
        assert.match(r.json.error, pattern);
        assert.equal(Object.keys(r.json).includes('stack'), false);
      }
    });

    it('accepts aliases (service_name, resource_id) and relative ops_api / base_url paths', async () => {
      const address = nextAddress();
      const res = await insertInstanceResource(node.db.ops, { service: 'alias-svc', address });
      const body: Record<string, unknown> = registrationBody({ name: 'alias-svc', address, instanceId: res.id });
      delete body.name;
      delete body.instance_id;
      body.service_name = 'alias-svc';
      body.resource_id = Number(res.id);
      body.ops_api = '/api/ops';
      body.base_url = '/api';
      const r = await post(node, body);
      assert.equal(r.status, 200, JSON.stringify(r.json));
      assert.equal(r.json.ops_api, `http://${address}/api/ops`);
      assert.equal(r.json.base_url, `http://${address}/api`);
      assert.equal(r.json.resource_id, res.id);
    });

    it('refuses an address held by another service with 409 and leaves both rows intact', async () => {
      const address = nextAddress();
      const a = await insertInstanceResource(node.db.ops, { service: 'svc-a', address });
      assert.equal((await post(node, registrationBody({ name: 'svc-a', address, instanceId: a.id }))).status, 200);
      const b = await insertInstanceResource(node.db.ops, { service: 'svc-b', address });
      const r = await post(node, registrationBody({ name: 'svc-b', address, instanceId: b.id }));
      assert.equal(r.status, 409);
      assert.match(r.json.error, /already registered by service 'svc-a'/);
      // Transactional: the svc-b service row created inside the failed transaction is gone too.
      assert.equal((await node.db.registry`SELECT 1 FROM utilmeta_service WHERE name = 'svc-b'`).length, 0);
    });

    it('lists and deregisters instances; the cache follows', async () => {
      const address = nextAddress();
      const res = await insertInstanceResource(node.db.ops, { service: 'listed', address });
      const reg = await post(node, registrationBody({ name: 'listed', address, instanceId: res.id }));
      const list = await request(`${node.origin}/api/registry?service=listed`);
      const body = (await list.body.json()) as { services: Array<{ name: string; instances: Array<{ address: string }> }> };
      assert.equal(list.statusCode, 200);
      assert.equal(body.services.length, 1);
      assert.equal(body.services[0].instances[0].address, address);
      assert.equal(node.registry.snapshot.service('listed')?.instances.length, 1);
      const del = await request(`${node.origin}/api/registry/${reg.json.id}`, { method: 'DELETE' });
      assert.equal(del.statusCode, 200);
      await del.body.dump();
      assert.equal(node.registry.snapshot.service('listed')?.instances.length, 0);
      const again = await request(`${node.origin}/api/registry/${reg.json.id}`, { method: 'DELETE' });
      assert.equal(again.statusCode, 404);
      assert.match(((await again.body.json()) as { error: string }).error, /no registered instance/);
    });

    it('answers ping, health, readiness, 404 and 405 as JSON', async () => {
      const ping = await request(`${node.origin}/api/`);
      assert.deepEqual(await ping.body.json(), { utilmeta: '0.4.0', type: 'proxy', registry_url: '/registry', proxy_url: '/proxy' });
      const ready = await request(`${node.origin}/api/readyz`);
      const rj = (await ready.body.json()) as { status: string };
      assert.equal(ready.statusCode, 200);
      assert.equal(rj.status, 'ready');
      const nf = await request(`${node.origin}/api/nothing`);
      assert.equal(nf.statusCode, 404);
      assert.match(((await nf.body.json()) as { error: string }).error, /no route for GET \/api\/nothing/);
      const na = await request(`${node.origin}/api/registry`, { method: 'PUT', body: '{}' });
      assert.equal(na.statusCode, 405);
      assert.equal(na.headers.allow, 'GET, POST');
      await na.body.dump();
    });

    it('answers a CORS preflight locally, echoing the origin (fixture 018)', async () => {
      const r = await request(`${node.origin}/api/registry`, { method: 'OPTIONS', headers: { origin: 'https://ops.utilmeta.com', 'access-control-request-method': 'POST' } });
      assert.equal(r.statusCode, 200);
      assert.equal(r.headers['access-control-allow-origin'], 'https://ops.utilmeta.com');
      assert.equal(r.headers['access-control-allow-credentials'], 'true');
      assert.match(String(r.headers['access-control-allow-headers']), /x-utilmeta-proxy-type.*authorization/);
      assert.equal(r.headers['access-control-max-age'], '86400');
      await r.body.dump();
    });
  });
}

describe('registry cache across nodes', () => {
  it('a registration on one node reaches the other node through NOTIFY', async () => {
    const dbs = freshDatabases();
    const a = await startTestNode('node', dbs);
    const b = await startTestNode('uws', dbs, { UTILMETA_PROXY_REGISTRY_REFRESH: '3600' });
    try {
      const address = nextAddress();
      const res = await insertInstanceResource(a.db.ops, { service: 'shared', address });
      const gen = b.registry.generation;
      const r = await post(a, registrationBody({ name: 'shared', address, instanceId: res.id }));
      assert.equal(r.status, 200);
      const deadline = Date.now() + 5000;
      while (b.registry.generation === gen && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(b.registry.snapshot.service('shared')?.instances[0]?.address, address);
    } finally {
      await a.close();
      await b.close();
      await dbs.drop();
    }
  });

  it('concurrent first registrations of one service create one service row', async () => {
    const dbs = freshDatabases();
    const node = await startTestNode('node', dbs);
    try {
      const addrs = [nextAddress(), nextAddress(), nextAddress(), nextAddress()];
      const rows = await Promise.all(addrs.map((address) => insertInstanceResource(node.db.ops, { service: 'burst', address })));
      const results = await Promise.all(addrs.map((address, i) => post(node, registrationBody({ name: 'burst', address, instanceId: rows[i].id }))));
      assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200]);
      const sql = adminSql(dbs.registryName);
      const [{ n }] = await sql`SELECT count(*)::int AS n FROM utilmeta_service WHERE name = 'burst'`;
      await sql.end();
      assert.equal(n, 1);
      assert.equal(new Set(results.map((r) => r.json.service_id)).size, 1);
    } finally {
      await node.close();
      await dbs.drop();
    }
  });
});
