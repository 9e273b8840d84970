// Metrics scraped over HTTP, request ids, and log redaction, on both listeners.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { insertInstanceResource, registrationBody } from './support/ops.ts';
import { startUpstream, deadPort, type TestUpstream } from './support/upstream.ts';
import { SECRET_NAMES, redact } from '../src/observability/log.ts';
import { generateRsaKeyPair } from './support/platform-sim.ts';

function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[4]);
  }
  return undefined;
}

for (const server of LISTENERS) {
  describe(`observability (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let up: TestUpstream;
    let clusterKey: string;
    before(async () => {
      dbs = freshDatabases();
      clusterKey = (await generateRsaKeyPair('obs-cluster')).publicKey;
      // A platform link pointing at nothing: the self-connect fails and logs, with the key in play.
      const dead = await deadPort();
      node = await startTestNode(server, dbs, {
        UTILMETA_PROXY_METRICS_PORT: '0',
        UTILMETA_PROXY_LOG_LEVEL: 'debug',
        UTILMETA_PROXY_SUPERVISOR_BASE_URL: `http://127.0.0.1:${dead}/spv`,
        UTILMETA_PROXY_SUPERVISOR_CLUSTER_ID: 'obs-cluster',
        UTILMETA_PROXY_SUPERVISOR_CLUSTER_KEY: Buffer.from(clusterKey).toString('base64'),
        UTILMETA_PROXY_LOAD_TIMEOUT: '0',
      }, { platform: { retry: { minTimeout: 50, maxTimeout: 100 }, clientOptions: { retries: 0, timeoutMs: 500 } } });
      up = await startUpstream();
      const res = await insertInstanceResource(node.db.ops, { service: 'obs', address: up.address, remoteId: 'obs-1' });
      const r = await request(`${node.origin}/api/registry`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(registrationBody({ name: 'obs', address: up.address, instanceId: res.id })) });
      // The platform is unreachable: the registration is kept, the connect fails with a 502.
      assert.equal(r.statusCode, 502);
      assert.match(((await r.body.json()) as { error: string }).error, /is registered, but connecting it to the platform failed/);
    });
    after(async () => {
      await node?.close();
      await up?.close();
      await dbs?.drop();
    });

    it('serves Prometheus metrics on its own listener, reflecting the traffic', async () => {
      const D = { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'obs' };
      for (let i = 0; i < 5; i++) await (await request(`${node.origin}/api/proxy/echo`, { headers: D })).body.dump();
      await (await request(`${node.origin}/api/proxy/echo`, { headers: { ...D, 'x-utilmeta-service-name': 'nope' } })).body.dump();
      await (await request(`${node.origin}/api/proxy/ops`, { headers: { 'x-utilmeta-proxy-type': 'operations', 'x-utilmeta-node-id': 'n1' } })).body.dump();
      const port = node.metricsServer!.port;
      assert.notEqual(port, node.listener.port);
      const r = await request(`http://127.0.0.1:${port}/metrics`);
      assert.equal(r.statusCode, 200);
      assert.match(String(r.headers['content-type']), /text\/plain/);
      const text = await r.body.text();
      assert.ok((metricValue(text, 'utilmeta_proxy_requests_total', { type: 'discovery', method: 'GET', status: '200' }) ?? 0) >= 5);
      assert.equal(metricValue(text, 'utilmeta_proxy_requests_total', { type: 'discovery', method: 'GET', status: '404' }), 1);
      assert.equal(metricValue(text, 'utilmeta_proxy_token_rejections_total', { reason: 'token_required' }), 1);
      assert.ok((metricValue(text, 'utilmeta_proxy_upstream_duration_seconds_count', { type: 'discovery' }) ?? 0) >= 5);
      assert.equal(metricValue(text, 'utilmeta_proxy_registry_instances'), 1);
      assert.equal(metricValue(text, 'utilmeta_proxy_service_instances', { service: 'obs' }), 1);
      assert.equal(metricValue(text, 'utilmeta_proxy_platform_connected'), 0);
      assert.equal(metricValue(text, 'utilmeta_proxy_database_up'), 1);
      assert.ok((metricValue(text, 'utilmeta_proxy_process_resident_memory_bytes') ?? 0) > 10_000_000);
      const nf = await request(`http://127.0.0.1:${port}/other`);
      assert.equal(nf.statusCode, 404);
      await nf.body.dump();
    });

    it('counts upstream errors by kind', async () => {
      const dead = await deadPort();
      const res = await insertInstanceResource(node.db.ops, { service: 'obs-dead', address: `127.0.0.9:${dead}` });
      const reg = await request(`${node.origin}/api/registry`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(registrationBody({ name: 'obs-dead', address: `127.0.0.9:${dead}`, instanceId: res.id })) });
      await reg.body.dump();
      const r = await request(`${node.origin}/api/proxy/x`, { headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'obs-dead' } });
      assert.equal(r.statusCode, 502);
      await r.body.dump();
      const text = await (await request(`http://127.0.0.1:${node.metricsServer!.port}/metrics`)).body.text();
      assert.ok((metricValue(text, 'utilmeta_proxy_upstream_errors_total', { kind: 'refused' }) ?? 0) >= 1);
    });

    it('propagates or creates x-request-id and logs one line per proxied request with it', async () => {
      const given = await request(`${node.origin}/api/proxy/echo`, { headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'obs', 'x-request-id': 'req-abc-123' } });
      assert.equal(given.headers['x-request-id'], 'req-abc-123');
      const seen = (await given.body.json()) as { headers: Array<[string, string]> };
      assert.ok(seen.headers.some(([k, v]) => k === 'x-request-id' && v === 'req-abc-123'), 'the upstream gets the same id');
      const made = await request(`${node.origin}/api/proxy/echo`, { headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'obs' } });
      await made.body.dump();
      // A made id is a per-process prefix and a counter: unique, and cheap to make.
      assert.match(String(made.headers['x-request-id']), /^[0-9a-f]{8}(\.\d+)?-[0-9a-z]+$/);
      const again = await request(`${node.origin}/api/proxy/echo`, { headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'obs' } });
      await again.body.dump();
      assert.notEqual(again.headers['x-request-id'], made.headers['x-request-id']);
      const line = node.logs.lines.find((l) => l.msg === 'proxied' && l.requestId === 'req-abc-123');
      assert.ok(line, 'a proxied line carries the request id');
      assert.equal(line.status, 200);
      assert.equal(line.type, 'discovery');
      assert.equal(line.service, 'obs');
      assert.equal(line.instance, 'obs-1');
      assert.equal(typeof line.durationMs, 'number');
      assert.equal(line.retries, 0);
    });

    it('redacts every secret name wherever logs reach, and never logs the cluster key', async () => {
      const headers: Record<string, string> = { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'obs' };
      const values: string[] = [];
      // uWebSockets.js closes the connection on header names with '_' (see the README), so the
      // underscore names go through node:http only; redact() covers them for bodies below.
      const names = ['password', 'secret', 'dsn', 'sessionid', 'pwd', 'passphrase', 'cookie', 'authorization', 'proxy-authorization', 'x-proxy-token', 'x-cluster-key'];
      if (server === 'node') names.push('x-api_token', 'x-api_key');
      for (const [i, name] of names.entries()) {
        const v = `SECRETVALUE${i}x${Math.random().toString(36).slice(2)}`;
        headers[name] = v;
        values.push(v);
      }
      const r = await request(`${node.origin}/api/proxy/echo?x=1`, { headers });
      await r.body.dump();
      // Give the async log destination and the failing self-connect a moment to write.
      await new Promise((res) => setTimeout(res, 200));
      const text = node.logs.text();
      assert.ok(node.logs.lines.some((l) => l.msg === 'request'), 'headers were logged at debug');
      for (const v of values) assert.equal(text.includes(v), false, `secret value leaked: ${v.slice(0, 14)}…`);
      assert.match(text, /\[redacted\]/);
      const keyN = JSON.parse(clusterKey).n as string;
      assert.equal(text.includes(keyN.slice(0, 40)), false, 'cluster key material in the logs');
      assert.ok(node.logs.lines.some((l) => /connecting this node to the platform failed/.test(String(l.msg))), 'the self-connect failure was logged');
      for (const s of ['password', 'secret', 'dsn', 'sessionid', 'pwd', 'passphrase', 'cookie', 'authorization', '_token', '_key']) assert.ok(SECRET_NAMES.includes(s));
    });
  });
}

describe('redaction', () => {
  it('redacts fields named like any UtilMeta secret name, at any depth, and header pairs', () => {
    const input = {
      user: 'alice',
      password: 'p1', db_password: 'p2', client_secret: 's', sentry_dsn: 'd', sessionid: 'x', pwd: 'y', passphrase: 'z',
      cookie: 'c', Authorization: 'Bearer t', access_token: 't2', api_key: 'k', nested: { deep: [{ refresh_token: 'r', note: 'ok' }] },
      headers: [['x-node-key', '{"n":"abc"}'], ['x-cluster-key', '{"n":"def"}'], ['accept', '*/*']],
    };
    const out = redact(input) as Record<string, any>;
    const text = JSON.stringify(out);
    for (const v of ['p1', 'p2', '"s"', '"d"', '"x"', '"y"', '"z"', '"c"', 'Bearer t', 't2', '"k"', '"r"', 'abc', 'def']) assert.equal(text.includes(v), false, v);
    assert.equal(out.user, 'alice');
    assert.equal(out.nested.deep[0].note, 'ok');
    assert.deepEqual(out.headers[2], ['accept', '*/*']);
    assert.equal(out.password, '[redacted]');
  });
});

describe('header names with underscores', () => {
  for (const server of LISTENERS) {
    it(`${server}: ${server === 'uws' ? 'uWebSockets.js refuses them (documented limitation)' : 'node:http accepts them'}`, async () => {
      const dbs = freshDatabases();
      const node = await startTestNode(server, dbs, { UTILMETA_PROXY_LOG_LEVEL: 'warn' });
      try {
        const r = await request(`${node.origin}/api/`, { headers: { REMOTE_ADDR: '10.0.0.1' } }).then(
          async (x) => ({ status: x.statusCode, body: await x.body.text() }),
          (err: Error) => ({ status: 0, body: err.message }),
        );
        if (server === 'uws') assert.equal(r.status, 0, 'the connection is closed');
        else assert.equal(r.status, 200);
      } finally {
        await node.close();
        await dbs.drop();
      }
    });
  }
});
