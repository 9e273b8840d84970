// SupervisorClient (src/platform/client.ts) against the platform simulator, and the supervisor
// URL trust check (src/platform/trust.ts). Header names/order and body shapes are compared with
// what the original Python proxy sent (shared/fixtures/original-proxy-e2e/supervisor/*.json).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { PlatformSim, type RecordedRequest } from './support/platform-sim.ts';
import {
  decodeKeyText,
  RawJson,
  SupervisorClient,
  SupervisorError,
  supervisorUrl,
  type ResourcesData28,
  type ResourcesData29,
  type SupervisorClientOptions,
  type SupervisorData,
} from '../src/platform/client.ts';
import { checkSupervisorUrl, isTrustedSupervisorUrl, UntrustedSupervisorError } from '../src/platform/trust.ts';
import { dumps, dumpsJs, parse } from '../src/pyjson/index.ts';
import { keyEntry } from '../src/tokens/keys.ts';

const DEV = { production: false, trustedHosts: [] as string[] };
const FAST = { minTimeoutMs: 1, maxTimeoutMs: 5, factor: 2, randomize: true };

interface Fixture {
  headers: Array<[string, string]>;
  body_text: string;
  body_decrypted?: { protected: Record<string, string> };
}
const fixture = (name: string) =>
  JSON.parse(readFileSync(new URL(`../../shared/fixtures/original-proxy-e2e/supervisor/${name}`, import.meta.url), 'utf8')) as Fixture;

/** Protocol header names as sent (X-* and content-type), in wire order. */
const protocolHeaderNames = (pairs: Array<[string, string]>) => pairs.map(([n]) => n).filter((n) => /^x-/i.test(n) || n.toLowerCase() === 'content-type');

function assertFlattenedJwe(rec: RecordedRequest, fx: Fixture): void {
  // Same member set and order as jwcrypto's compact sorted-key output, and a compact body.
  const ours = JSON.parse(rec.bodyText) as Record<string, string>;
  const theirs = JSON.parse(fx.body_text) as Record<string, string>;
  assert.deepEqual(Object.keys(ours), Object.keys(theirs));
  assert.equal(rec.bodyText, JSON.stringify(ours));
  assert.deepEqual(Object.keys(rec.jweHeader!), Object.keys(fx.body_decrypted!.protected));
  assert.equal(rec.jweHeader!.alg, 'RSA-OAEP-256');
  assert.equal(rec.jweHeader!.enc, 'A256CBC-HS512');
  assert.equal(rec.jweHeader!.typ, 'JWE');
}

function logSink(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

describe('trust check (check_supervisor)', () => {
  it('accepts utilmeta.com and its subdomains over https, in production too', () => {
    const prod = { production: true, trustedHosts: [] };
    for (const u of ['https://utilmeta.com/spv', 'https://api.utilmeta.com/spv', 'wss://a.b.UTILMETA.com.', 'https://api.utilmeta.com:8443/x']) {
      assert.doesNotThrow(() => checkSupervisorUrl(u, prod), u);
    }
  });

  it('rejects look-alike hosts, with the URL and the reason in the message', () => {
    for (const u of ['https://evilutilmeta.com/spv', 'https://utilmeta.com.evil.org/spv', 'https://utilmeta.co/spv']) {
      assert.throws(
        () => checkSupervisorUrl(u, DEV),
        (e: unknown) => e instanceof UntrustedSupervisorError && e.message.includes(JSON.stringify(u)) && /neither one of nor a subdomain/.test(e.message),
        u,
      );
    }
  });

  it('production requires https/wss and drops the loopback hosts', () => {
    const prod = { production: true, trustedHosts: [] };
    assert.throws(() => checkSupervisorUrl('http://api.utilmeta.com/spv', prod), /scheme "http" is not allowed in production/);
    assert.throws(() => checkSupervisorUrl('https://127.0.0.1/spv', prod), /neither one of nor a subdomain/);
    assert.doesNotThrow(() => checkSupervisorUrl('http://127.0.0.1:9000/spv', DEV));
    assert.doesNotThrow(() => checkSupervisorUrl('http://localhost:9000/spv', DEV));
    assert.throws(() => checkSupervisorUrl('ftp://utilmeta.com/spv', DEV), /scheme "ftp"/);
    assert.throws(() => checkSupervisorUrl('not a url', DEV), /not an absolute URL/);
  });

  it('UTILMETA_PROXY_TRUSTED_HOSTS entries (and their subdomains) are trusted', () => {
    const p = { production: true, trustedHosts: ['corp.example', ' .Other.Example ', 'https://third.example:8443/path', 'host4.example:9000'] };
    for (const u of ['https://corp.example/spv', 'https://spv.corp.example', 'https://other.example', 'https://third.example', 'https://a.host4.example']) {
      assert.equal(isTrustedSupervisorUrl(u, p), true, u);
    }
    assert.equal(isTrustedSupervisorUrl('https://xcorp.example', p), false);
    assert.equal(isTrustedSupervisorUrl('https://example', p), false);
  });
});

describe('SupervisorClient', () => {
  let sim: PlatformSim;
  let node: SupervisorData;
  const nodeClient = (extra: Partial<SupervisorClientOptions> = {}) =>
    new SupervisorClient({
      baseUrl: sim.baseUrl,
      trust: DEV,
      clusterId: sim.clusterId,
      nodeId: node.node_id,
      nodeKey: node.public_key!,
      retryTiming: FAST,
      ...extra,
    });

  before(async () => {
    sim = await PlatformSim.start({ callbackMode: 'none', resourcesShape: '2.8', etagOf: (b) => `etag-${b.length}` });
  });
  after(async () => {
    await sim?.close();
  });

  it('url_join semantics: "/" is the base itself', () => {
    assert.equal(supervisorUrl('https://api.utilmeta.com/spv/', '/'), 'https://api.utilmeta.com/spv');
    assert.equal(supervisorUrl('https://api.utilmeta.com/spv', '/resources'), 'https://api.utilmeta.com/spv/resources');
    assert.equal(supervisorUrl('https://api.utilmeta.com/spv', '/alert/recovery'), 'https://api.utilmeta.com/spv/alert/recovery');
  });

  it('addNode: cluster headers like the original proxy, JWE body = the exact Python json.dumps bytes', async () => {
    // A PyValue keeps key order and number lexemes; non-ASCII stays unescaped (ensure_ascii=False).
    const meta = parse(
      '{"ops_api": "http://10.0.0.5:8000/api/ops", "name": "orders", "base_url": "http://10.0.0.5:8000/api", ' +
        '"title": "Orders ✓ 订单", "description": "", "version": "1.0.0", "spec_version": "0.4.0", "production": false, ' +
        '"language": "python", "language_version": "3.11.2", "utilmeta_version": "2.9.0", "weight": 1.0}',
    );
    // base64 on input, decoded JSON on the wire
    const client = new SupervisorClient({
      baseUrl: sim.baseUrl + '/',
      trust: DEV,
      clusterKey: Buffer.from(sim.clusterPublicKey).toString('base64'),
      clusterId: sim.clusterId,
      retryTiming: FAST,
    });
    const res = await client.addNode(meta);
    assert.equal(res.status, 200);
    assert.equal(res.ok, true);
    assert.ok(res.result && res.result.node_id.startsWith('snode-'));
    node = res.result!;

    const rec = sim.requestsTo('/', 'POST').at(-1)!;
    assert.equal(rec.url, '/spv', 'POST to the base URL itself, no trailing slash');
    const fx = fixture('001-POST-root.json');
    assert.deepEqual(protocolHeaderNames(rec.rawHeaders), protocolHeaderNames(fx.headers));
    assert.equal(rec.headers['x-cluster-key'], sim.clusterPublicKey);
    assert.equal(rec.headers['x-cluster-id'], sim.clusterId);
    assert.equal(rec.headers['content-type'], 'application/json');
    assert.equal(rec.decryptedWith, 'cluster');
    assert.equal(rec.decryptedText, dumps(meta));
    assert.match(rec.decryptedText!, /"title": "Orders ✓ 订单", .*"weight": 1\.0\}$/);
    assertFlattenedJwe(rec, fx);
    assert.equal(rec.jweHeader!.kid, await keyEntry(sim.clusterPublicKey).thumbprint());
  });

  it('uploadResources: node headers like the original proxy sync, verbatim body, 200 (2.8 shape) then 304', async () => {
    const client = nodeClient();
    // odd-but-valid formatting and a float lexeme must survive byte for byte (spec §6.21)
    const text = '{"metadata": {"name": "orders", "ops_api": "http://10.0.0.5:8000/api/ops"},  "instances": [{"address": "10.0.0.5:8000", "server": {"ip": "10.0.0.5"}}], "tables": [], "x": 1.50}';
    const res = await client.uploadResources(text);
    assert.equal(res.status, 200);
    assert.equal(res.notModified, false);
    const result = res.result as ResourcesData28;
    assert.equal(result.resources_etag, `etag-${Buffer.byteLength(text)}`);
    assert.deepEqual(result.resources.map((r) => r.type), ['server', 'instance']);

    const rec = sim.requestsTo('/resources', 'POST').at(-1)!;
    const fx = fixture('005-POST-resources.json');
    assert.deepEqual(protocolHeaderNames(rec.rawHeaders), protocolHeaderNames(fx.headers));
    assert.equal(rec.headers['x-node-id'], node.node_id);
    assert.equal(rec.headers['x-node-key'], node.public_key);
    assert.equal(rec.decryptedWith, `node:${node.node_id}`);
    assert.equal(rec.decryptedText, text);
    assertFlattenedJwe(rec, fx);

    const again = await client.uploadResources(new RawJson(text));
    assert.equal(again.status, 304);
    assert.equal(again.ok, true);
    assert.equal(again.notModified, true);
    assert.equal(again.result, null);
    assert.equal(sim.requestsTo('/resources').at(-1)!.status, 304);
  });

  it('uploadResources: the 2.9 result shape comes through', async () => {
    sim.resourcesShape = '2.9';
    try {
      const res = await nodeClient().uploadResources({ metadata: { name: 'orders' }, tables: [], n: Date.now() });
      const r = res.result as ResourcesData29;
      assert.equal(r.supervisor.node_id, node.node_id);
      assert.equal(r.supervisor.heartbeat_interval, 60);
      assert.ok(Array.isArray(r.resources));
    } finally {
      sim.resourcesShape = '2.8';
    }
  });

  it('getInfo / getSupervisors: GET without body or content-type', async () => {
    const client = nodeClient();
    const info = await client.getInfo();
    assert.equal(info.result.utilmeta, '0.4.0');
    assert.equal(info.result.supervisor, sim.ident);
    assert.equal(info.state, 1);
    const list = await client.getSupervisors();
    assert.deepEqual(list.result, [{ base_url: sim.baseUrl, ident: sim.ident }]);
    assert.equal(list.count, 1);
    for (const rec of [sim.requestsTo('/', 'GET').at(-1)!, sim.requestsTo('/list', 'GET').at(-1)!]) {
      assert.equal(rec.body.length, 0);
      assert.equal(rec.headers['content-type'], undefined);
      assert.equal(rec.headers['x-node-id'], node.node_id);
    }
  });

  it('report / batch report / alert / recovery: encrypted to the node key, exact dumps bytes', async () => {
    const client = nodeClient();
    const report = { time: '2026-11-22T14:00:00Z', layer: 0, interval: 3600, utcoffset: 0, service: { requests: 10, avg_time: 12.5 } };
    const batch = [report, { ...report, layer: 1, interval: 86400 }];
    const alert = { time: 1795359147.25, latest_time: 1795359147.25, settings_name: 'cpu', severity: 2, count: 1, details: { cpu: 99.5 } };
    const recovery = { id: 'alert-1', alert_id: 3, message: 'ok', recovered_time: 1795359200.0, latest_time: 1795359199.5, count: 2, details: {} };

    const r1 = await client.reportAnalytics(report);
    assert.match(r1.result.id, /^report-/);
    const r2 = await client.batchReportAnalytics(batch);
    assert.equal(r2.result.length, 2);
    const r3 = await client.alertIncident(alert);
    assert.equal(r3.result.status, 'open');
    const r4 = await client.recoverIncident(recovery);
    assert.equal(r4.result.status, 'recovered');

    for (const [path, body] of [['/report', report], ['/report/batch', batch], ['/alert', alert], ['/alert/recovery', recovery]] as const) {
      const rec = sim.requestsTo(path, 'POST').at(-1)!;
      assert.equal(rec.decryptedWith, `node:${node.node_id}`, path);
      assert.equal(rec.decryptedText, dumpsJs(body), path);
    }
    // A parsed PyValue keeps Python's float lexemes (1795359200.0 stays a float, unlike a JS number).
    const pyRecovery = parse('{"id": null, "alert_id": 3, "recovered_time": 1795359200.0, "count": 2}');
    await client.recoverIncident(pyRecovery);
    assert.equal(sim.requestsTo('/alert/recovery').at(-1)!.decryptedText, '{"id": null, "alert_id": 3, "recovered_time": 1795359200.0, "count": 2}');
  });

  it('heartbeat: POST with no body', async () => {
    const res = await nodeClient().heartbeat();
    assert.equal(res.status, 200);
    assert.equal(res.result, null);
    const rec = sim.requestsTo('/heartbeat', 'POST').at(-1)!;
    assert.equal(rec.body.length, 0);
    assert.equal(rec.jweHeader, null);
    assert.equal(rec.headers['content-type'], undefined);
  });

  it('retries 5xx with backoff, then succeeds', async () => {
    const { log, lines } = logSink();
    const before = sim.requestsTo('/report').length;
    sim.failNext(2, { path: '/report', status: 503, msg: 'platform busy' });
    const res = await nodeClient({ log }).reportAnalytics({ layer: 0 });
    assert.equal(res.status, 200);
    assert.equal(sim.requestsTo('/report').length - before, 3);
    // every failure is logged with the platform's msg
    const logged = lines.filter((l) => l.platformMsg === 'platform busy');
    assert.equal(logged.length, 2);
    assert.equal(logged[0].status, 503);
    assert.match(String(logged[0].msg), /platform busy/);
  });

  it('gives up after the configured retries with a SupervisorError carrying the platform msg', async () => {
    const before = sim.requestsTo('/report').length;
    sim.failNext(10, { path: '/report', status: 500, msg: 'kaput', state: 'server_error' });
    try {
      await assert.rejects(nodeClient({ retries: 2 }).reportAnalytics({ layer: 0 }), (e: unknown) => {
        assert.ok(e instanceof SupervisorError);
        assert.equal(e.status, 500);
        assert.equal(e.platformMsg, 'kaput');
        assert.equal(e.state, 'server_error');
        assert.match(e.message, /status 500: kaput/);
        return true;
      });
      assert.equal(sim.requestsTo('/report').length - before, 3);
    } finally {
      sim.clearFaults();
    }
  });

  it('never retries a 4xx', async () => {
    const before = sim.requestsTo('/alert').length;
    sim.failNext(1, { path: '/alert', status: 400, msg: 'bad alert', state: 'invalid_body' });
    await assert.rejects(nodeClient().alertIncident({ settings_name: 'x' }), (e: unknown) => e instanceof SupervisorError && e.status === 400 && /bad alert/.test(e.message));
    assert.equal(sim.requestsTo('/alert').length - before, 1);
  });

  it('addNode is not repeated after a 5xx (a second add_node would create a second node)', async () => {
    const before = sim.requestsTo('/', 'POST').length;
    sim.failNext(1, { path: '/', method: 'POST', status: 502, msg: 'gateway' });
    const client = new SupervisorClient({ baseUrl: sim.baseUrl, trust: DEV, clusterKey: sim.clusterPublicKey, clusterId: sim.clusterId, retryTiming: FAST });
    await assert.rejects(client.addNode({ name: 'x', ops_api: 'http://10.0.0.9/api/ops', base_url: 'http://10.0.0.9/api' }), /status 502: gateway/);
    assert.equal(sim.requestsTo('/', 'POST').length - before, 1);
  });

  it('a hanging platform times out; the retry then succeeds', async () => {
    sim.hangNext(1, { path: '/heartbeat' });
    const t0 = Date.now();
    await assert.rejects(nodeClient({ timeoutMs: 300, retries: 0 }).heartbeat(), (e: unknown) => {
      assert.ok(e instanceof SupervisorError);
      assert.equal(e.timedOut, true);
      assert.equal(e.status, undefined);
      assert.match(e.message, /timed out after 300 ms/);
      return true;
    });
    assert.ok(Date.now() - t0 < 5000);
    sim.hangNext(1, { path: '/heartbeat' });
    const res = await nodeClient({ timeoutMs: 300, retries: 1 }).heartbeat();
    assert.equal(res.status, 200);
  });

  it('connection refused is a retried network error that ends in a SupervisorError', async () => {
    const dead = http.createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', () => r()));
    const port = (dead.address() as AddressInfo).port;
    await new Promise<void>((r) => dead.close(() => r()));
    const { log, lines } = logSink();
    const client = new SupervisorClient({ baseUrl: `http://127.0.0.1:${port}/spv`, trust: DEV, retries: 2, retryTiming: FAST, log });
    await assert.rejects(client.getInfo(), (e: unknown) => e instanceof SupervisorError && e.delivered === false && /ECONNREFUSED/.test(e.message));
    assert.equal(lines.filter((l) => l.msg === 'supervisor request failed').length, 3);
  });

  it('deleteNode: result is the node id; node_not_exists surfaces as the error state', async () => {
    const add = new SupervisorClient({ baseUrl: sim.baseUrl, trust: DEV, clusterKey: sim.clusterPublicKey, clusterId: sim.clusterId, retryTiming: FAST });
    const created = (await add.addNode({ name: 'doomed', ops_api: 'http://10.0.0.7/api/ops', base_url: 'http://10.0.0.7/api' })).result!;
    const del = new SupervisorClient({
      baseUrl: sim.baseUrl,
      trust: DEV,
      accessKey: sim.clusterPublicKey,
      nodeId: created.node_id,
      nodeKey: created.public_key!,
      retryTiming: FAST,
    });
    const res = await del.deleteNode();
    assert.equal(res.result, created.node_id);
    const rec = sim.requestsTo('/', 'DELETE').at(-1)!;
    assert.deepEqual(protocolHeaderNames(rec.rawHeaders), ['X-Access-Key', 'X-Node-ID', 'X-Node-Key']);
    assert.equal(rec.body.length, 0);
    const before = sim.requestsTo('/', 'DELETE').length;
    await assert.rejects(del.deleteNode(), (e: unknown) => e instanceof SupervisorError && e.status === 404 && e.state === 'node_not_exists');
    assert.equal(sim.requestsTo('/', 'DELETE').length - before, 1);
  });

  it('follows redirects, keeping method and encrypted body on 307', async () => {
    const hop = http.createServer((req, res) => {
      res.writeHead(307, { location: sim.origin + (req.url ?? '/') });
      res.end();
    });
    await new Promise<void>((r) => hop.listen(0, '127.0.0.1', () => r()));
    try {
      const port = (hop.address() as AddressInfo).port;
      const client = nodeClient({ baseUrl: `http://127.0.0.1:${port}/spv` });
      const info = await client.getInfo();
      assert.equal(info.result.utilmeta, '0.4.0');
      const res = await client.reportAnalytics({ layer: 1 });
      assert.equal(res.status, 200);
      const rec = sim.requestsTo('/report', 'POST').at(-1)!;
      assert.equal(rec.decryptedText, '{"layer": 1}');
      assert.equal(rec.headers['x-node-id'], node.node_id);
    } finally {
      hop.closeAllConnections();
      await new Promise<void>((r) => hop.close(() => r()));
    }
  });

  it('refuses an untrusted URL before sending anything', () => {
    const before = sim.requests.length;
    assert.throws(() => new SupervisorClient({ baseUrl: sim.baseUrl, trust: { production: true, trustedHosts: [] } }), UntrustedSupervisorError);
    assert.throws(() => new SupervisorClient({ baseUrl: 'https://evilutilmeta.com/spv', trust: DEV }), UntrustedSupervisorError);
    assert.equal(sim.requests.length, before);
  });

  it('without any key a body is plain JSON (as UtilMeta does), and the platform error is surfaced', async () => {
    const client = new SupervisorClient({ baseUrl: sim.baseUrl, trust: DEV, nodeId: node.node_id, retryTiming: FAST });
    await assert.rejects(client.reportAnalytics({ layer: 0, note: 'ü' }), (e: unknown) => e instanceof SupervisorError && e.status === 400 && /JWE/.test(e.platformMsg ?? ''));
    const rec = sim.requestsTo('/report').at(-1)!;
    assert.equal(rec.bodyText, '{"layer": 0, "note": "ü"}');
  });

  it('an unusable key fails as a SupervisorError before anything is sent', async () => {
    const before = sim.requests.length;
    const client = nodeClient({ nodeKey: '{"kty":"RSA","n":"AQAB","e":"AQAB"}' });
    await assert.rejects(client.reportAnalytics({ layer: 0 }), (e: unknown) => e instanceof SupervisorError && e.delivered === false && /invalid platform key/.test(e.message));
    assert.equal(sim.requests.length, before);
  });

  it('decodeKeyText keeps JSON and decodes base64, rejecting garbage', () => {
    assert.equal(decodeKeyText(sim.clusterPublicKey), sim.clusterPublicKey);
    assert.equal(decodeKeyText(Buffer.from(sim.clusterPublicKey).toString('base64')), sim.clusterPublicKey);
    assert.throws(() => decodeKeyText('%%%'));
  });
});
