// /api/proxy in discovery mode against real upstreams, on both listeners.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { request } from 'undici';
import { freshDatabases, startTestNode, LISTENERS, adminSql, type TestDatabases, type TestNode } from './support/env.ts';
import { insertInstanceResource, registrationBody } from './support/ops.ts';
import { startUpstream, deadPort, echo, type TestUpstream } from './support/upstream.ts';

type Echo = { method: string; url: string; headers: Array<[string, string]>; body: string };

async function register(node: TestNode, name: string, address: string, version = '1.2.3', basePath = '/api', remoteId: string | null = null) {
  const res = await insertInstanceResource(node.db.ops, { service: name, address, remoteId });
  const r = await request(`${node.origin}/api/registry`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(registrationBody({ name, address, instanceId: res.id, version, basePath })),
  });
  const json = (await r.body.json()) as Record<string, unknown>;
  assert.equal(r.statusCode, 200, JSON.stringify(json));
  return json;
}

function call(node: TestNode, path: string, headers: Record<string, string | string[]>, opts: { method?: string; body?: string | Buffer } = {}) {
  return request(`${node.origin}/api/proxy${path}`, { method: (opts.method ?? 'GET') as 'GET', headers, body: opts.body });
}

const fixture = (p: string) => JSON.parse(readFileSync(new URL(`../../shared/fixtures/original-proxy-e2e/${p}`, import.meta.url), 'utf8'));

for (const server of LISTENERS) {
  describe(`discovery proxy (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let up: TestUpstream;
    let up2: TestUpstream;
    const D = { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'demo' };

    before(async () => {
      dbs = freshDatabases();
      node = await startTestNode(server, dbs);
      up = await startUpstream((req, res, body) => {
        if (req.url?.startsWith('/api/hello')) {
          res.setHeader('content-type', 'text/plain; charset=utf-8');
          return res.end('world');
        }
        if (req.url?.startsWith('/api/timing')) {
          res.setHeader('server-timing', 'db;dur=3');
          return res.end('ok');
        }
        if (req.url?.startsWith('/api/cookies')) {
          res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; Path=/']);
          return res.end('ok');
        }
        if (req.url?.startsWith('/api/gzip')) {
          res.setHeader('content-encoding', 'gzip');
          res.setHeader('content-type', 'text/plain');
          return res.end(gzipSync('compressed body'));
        }
        if (req.url?.startsWith('/api/big')) {
          const n = Number(new URL(req.url, 'http://x').searchParams.get('n'));
          const chunk = Buffer.alloc(65536, 'x');
          let sent = 0;
          res.setHeader('content-type', 'application/octet-stream');
          const write = () => {
            while (sent < n) {
              sent += chunk.length;
              if (!res.write(chunk)) return void res.once('drain', write);
            }
            res.end();
          };
          return write();
        }
        if (req.url?.startsWith('/api/sha')) {
          return res.end(createHash('sha256').update(body).digest('hex'));
        }
        if (req.url?.startsWith('/api/cors')) {
          res.setHeader('access-control-allow-origin', 'https://own.example');
          return res.end('own cors');
        }
        if (req.url?.startsWith('/api/truncate')) {
          // Head and part of a chunked body, then the upstream dies.
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('partial-'.repeat(1000));
          return void setTimeout(() => res.socket?.destroy(), 50);
        }
        if (req.url?.startsWith('/api/head')) {
          res.setHeader('content-length', '1234');
          res.setHeader('content-type', 'application/json');
          return res.end(req.method === 'HEAD' ? undefined : 'x'.repeat(1234));
        }
        if (req.url?.startsWith('/api/slow')) {
          return void setTimeout(() => res.end('late'), 3000);
        }
        echo(req, res, body);
      });
      up2 = await startUpstream();
      await register(node, 'demo', up.address, '1.2.3', '/api', 'remote-demo-1');
      await register(node, 'v2svc', up2.address, '2.4.1');
    });
    after(async () => {
      await node?.close();
      await up?.close();
      await up2?.close();
      await dbs?.drop();
    });

    it('relays a GET like the original (fixture 004: text body, destination header, server-timing)', async () => {
      const fx = fixture('proxy-traffic/004-GET-api_proxy_hello.json');
      assert.equal(fx.upstream_response.body_text, 'world');
      const r = await call(node, '/hello', D);
      assert.equal(r.statusCode, 200);
      assert.equal(await r.body.text(), fx.upstream_response.body_text);
      assert.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
      assert.equal(r.headers['x-utilmeta-proxy-destination-base-url'], `http://${up.address}/api`);
      assert.equal(r.headers['x-utilmeta-proxy-destination-instance-id'], 'remote-demo-1');
      assert.match(String(r.headers['server-timing']), /^proxy;dur=\d+$/);
      assert.ok(r.headers['x-request-id']);
      assert.match(String(r.headers['access-control-expose-headers']), /x-utilmeta-proxy-destination-base-url/);
    });

    it('passes method, path, raw query (repeated keys, [] suffixes) and trailing slash unchanged', async () => {
      const r = await call(node, '/echo/a%20b/?tag=1&tag=2&ids[]=3&msg=hi', D);
      const e = (await r.body.json()) as Echo;
      assert.equal(r.statusCode, 200);
      assert.equal(e.method, 'GET');
      assert.equal(e.url, '/api/echo/a%20b/?tag=1&tag=2&ids[]=3&msg=hi');
    });

    it('sends clean headers upstream: own Host, no x-utilmeta-*/token aliases/hop-by-hop, X-Forwarded-For, no invented content-type', async () => {
      const r = await call(node, '/echo', {
        ...D,
        'x-utilmeta-accept-version': '1',
        'x-proxy-token': 'secret-cluster-token',
        'proxy-authorization': 'Bearer secret',
        'x-utilmeta-connection-key': 'local-key',
        'x-utilmeta-log-options': 'omit',
        'remote-addr': '10.0.0.1',
        'x-real-ip': '10.0.0.2',
        'x-forwarded-for': '10.0.0.3',
        authorization: 'Bearer user-token',
        cookie: 'sid=1',
        'x-custom': 'kept',
      });
      const e = (await r.body.json()) as Echo;
      const names = e.headers.map(([n]) => n);
      const get = (n: string) => e.headers.find(([k]) => k === n)?.[1];
      assert.equal(get('host'), up.address);
      for (const gone of ['x-utilmeta-proxy-type', 'x-utilmeta-service-name', 'x-utilmeta-accept-version', 'x-proxy-token', 'proxy-authorization', 'x-utilmeta-connection-key', 'remote-addr', 'x-real-ip']) {
        assert.equal(names.includes(gone), false, `${gone} leaked upstream`);
      }
      assert.equal(get('x-utilmeta-log-options'), 'omit');
      assert.equal(get('authorization'), 'Bearer user-token');
      assert.equal(get('cookie'), 'sid=1');
      assert.equal(get('x-custom'), 'kept');
      // No trusted proxies configured: the client's own X-Forwarded-For is not believed.
      assert.equal(get('x-forwarded-for'), '127.0.0.1');
      assert.equal(get('content-type'), undefined, 'the original added application/octet-stream to body-less requests (§6.12)');
    });

    it('tells the upstream which registered instance called (bug 6.1 fixed: matched by host)', async () => {
      // The test client connects from 127.0.0.1, which is the host of the registered instances.
      const r = await call(node, '/echo', D);
      const e = (await r.body.json()) as Echo;
      const get = (n: string) => e.headers.find(([k]) => k === n)?.[1];
      assert.ok(get('x-utilmeta-source-service'), 'source service header set');
      assert.ok(['demo', 'v2svc'].includes(String(get('x-utilmeta-source-service-name'))));
    });

    it('streams a POST body (not idempotent, not buffered) and relays the status', async () => {
      const body = JSON.stringify({ a: 2, b: 3 });
      const r = await call(node, '/add', { ...D, 'content-type': 'application/json' }, { method: 'POST', body });
      const e = (await r.body.json()) as Echo;
      assert.equal(e.method, 'POST');
      assert.equal(e.body, body);
      assert.equal(e.headers.find(([k]) => k === 'content-type')?.[1], 'application/json');
    });

    it('forwards an empty or invalid JSON body with a JSON content type instead of crashing (§6.12)', async () => {
      const r = await call(node, '/echo', { ...D, 'content-type': 'application/json' }, { method: 'POST', body: '{not json' });
      assert.equal(r.statusCode, 200);
      assert.equal(((await r.body.json()) as Echo).body, '{not json');
    });

    it('streams multi-megabyte bodies both ways intact', async () => {
      const payload = randomBytes(5 * 1024 * 1024);
      const r = await call(node, '/sha', D, { method: 'PUT', body: payload });
      assert.equal(await r.body.text(), createHash('sha256').update(payload).digest('hex'));
      const big = await call(node, '/big?n=' + 8 * 1024 * 1024, D);
      let total = 0;
      for await (const c of big.body) total += (c as Buffer).length;
      assert.equal(big.statusCode, 200);
      assert.equal(total, 8 * 1024 * 1024);
    });

    it('relays compressed bodies and their headers untouched (§6.14)', async () => {
      const r = await call(node, '/gzip', { ...D, 'accept-encoding': 'gzip' });
      assert.equal(r.headers['content-encoding'], 'gzip');
      const raw = Buffer.from(await r.body.arrayBuffer());
      assert.deepEqual(raw, gzipSync('compressed body'));
      assert.equal(Number(r.headers['content-length']), raw.length);
    });

    it('keeps repeated set-cookie headers separate', async () => {
      const r = await call(node, '/cookies', D);
      await r.body.dump();
      assert.deepEqual(r.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/']);
    });

    it('appends the upstream server-timing after its own', async () => {
      const r = await call(node, '/timing', D);
      await r.body.dump();
      assert.match(String(r.headers['server-timing']), /^proxy;dur=\d+,db;dur=3$/);
    });

    it('leaves an upstream that answers CORS itself alone', async () => {
      const r = await call(node, '/cors', { ...D, origin: 'https://console.example' });
      await r.body.dump();
      assert.equal(r.headers['access-control-allow-origin'], 'https://own.example');
      const r2 = await call(node, '/echo', { ...D, origin: 'https://console.example' });
      await r2.body.dump();
      assert.equal(r2.headers['access-control-allow-origin'], 'https://console.example');
    });

    it('selects by version with the original ^/~ semantics (fixtures 008, 009)', async () => {
      const ok = await call(node, '/items/5', { ...D, 'x-utilmeta-accept-version': '1.2' });
      assert.equal(ok.statusCode, 200);
      await ok.body.dump();
      const none = await call(node, '/items/5', { ...D, 'x-utilmeta-accept-version': '2' });
      assert.equal(none.statusCode, 503);
      assert.match(((await none.body.json()) as { error: string }).error, /no connected instance of service 'demo' matching version '2'/);
      const V = { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'v2svc' };
      for (const [range, status] of [['^2.3', 200], ['^2.5', 503], ['~2.4.0', 200], ['~2.4.2', 503], ['v2.4.1', 200], ['2.4', 200], ['2.*', 200], ['*', 200]] as const) {
        const r = await call(node, '/echo', { ...V, 'x-accept-version': range });
        assert.equal(r.statusCode, status, `range ${range}`);
        await r.body.dump();
      }
    });

    it('answers 400 (not 500) for a malformed version range and for bad control headers', async () => {
      for (const [h, pattern] of [
        [{ 'x-utilmeta-accept-version': '1.a' }, /'a' is not a number/],
        [{ 'x-utilmeta-request-timeout': 'soon' }, /X-UtilMeta-Request-Timeout/],
        [{ 'x-utilmeta-operation-idempotent': 'maybe' }, /X-UtilMeta-Operation-Idempotent/],
        [{ 'x-utilmeta-proxy-type': 'teleport' }, /unknown X-UtilMeta-Proxy-Type 'teleport'/],
      ] as const) {
        const r = await call(node, '/echo', { ...D, ...h });
        assert.equal(r.statusCode, 400);
        assert.match(((await r.body.json()) as { error: string }).error, pattern);
      }
      const noType = await call(node, '/hello', {});
      assert.equal(noType.statusCode, 400);
      assert.match(((await noType.body.json()) as { error: string }).error, /missing X-UtilMeta-Proxy-Type/);
      const noName = await call(node, '/hello', { 'x-utilmeta-proxy-type': 'discovery' });
      assert.equal(noName.statusCode, 400);
      await noName.body.dump();
    });

    it('404 for an unknown service (fixture 007), with CORS and a JSON error', async () => {
      const r = await call(node, '/hello', { ...D, 'x-utilmeta-service-name': 'nope', origin: 'https://a.example' });
      assert.equal(r.statusCode, 404);
      assert.equal(r.headers['access-control-allow-origin'], 'https://a.example');
      assert.match(((await r.body.json()) as { error: string }).error, /service 'nope' is not registered/);
    });

    it('pins an instance by remote id', async () => {
      const r = await call(node, '/hello', { ...D, 'x-utilmeta-instance-id': 'remote-demo-1' });
      assert.equal(r.statusCode, 200);
      await r.body.dump();
      const miss = await call(node, '/hello', { ...D, 'x-utilmeta-instance-id': 'other' });
      assert.equal(miss.statusCode, 503);
      await miss.body.dump();
    });

    it('answers OPTIONS locally and never proxies it', async () => {
      const before = up.seen.length;
      const r = await call(node, '/echo', { ...D, origin: 'https://a.example' }, { method: 'OPTIONS' });
      await r.body.dump();
      assert.equal(r.statusCode, 200);
      assert.match(String(r.headers['access-control-allow-methods']), /POST/);
      assert.equal(up.seen.length, before);
    });

    it('times out with 504 naming the upstream, bounded by the request timeout header', async () => {
      const r = await call(node, '/slow', { ...D, 'x-utilmeta-request-timeout': '0.3' });
      assert.equal(r.statusCode, 504);
      const j = (await r.body.json()) as { error: string; state: string };
      assert.match(j.error, new RegExp(`upstream http://${up.address}/api did not answer within 0.3s`));
      assert.equal(j.state, 'upstream_timeout');
      assert.equal(r.headers['x-utilmeta-proxy-destination-base-url'], `http://${up.address}/api`);
    });

    it('cuts the client connection when the upstream dies mid-body (no silently short response)', async () => {
      const r = await call(node, '/truncate', D);
      assert.equal(r.statusCode, 200);
      await assert.rejects(r.body.text(), 'the truncated body is an error for the client');
      // The node keeps serving afterwards.
      const ok = await call(node, '/hello', D);
      assert.equal(await ok.body.text(), 'world');
    });

    it('relays HEAD with the upstream content-length and no body', async () => {
      const r = await call(node, '/head', D, { method: 'HEAD' });
      assert.equal(r.statusCode, 200);
      assert.equal(r.headers['content-length'], '1234');
      assert.equal((await r.body.text()).length, 0);
      const again = await call(node, '/hello', D);
      assert.equal(await again.body.text(), 'world', 'the keep-alive connection is still in sync');
    });

    it('rejects a request body over the limit with 413', async () => {
      const big = Buffer.alloc(11 * 1024 * 1024, 1);
      const r = await call(node, '/sha', D, { method: 'POST', body: big }).catch((err) => err);
      // Either the proxy answers 413, or it cuts the upload; both refuse it.
      if ('statusCode' in r) {
        assert.equal(r.statusCode, 413);
        assert.match(((await r.body.json()) as { error: string }).error, /exceeds the limit/);
      } else {
        assert.ok(r instanceof Error);
      }
    });
  });

  describe(`failover (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let good: TestUpstream;
    let bad: TestUpstream;
    before(async () => {
      dbs = freshDatabases();
      node = await startTestNode(server, dbs);
      good = await startUpstream();
      bad = await startUpstream((_req, res) => {
        res.statusCode = 503;
        res.end('{"error": "down"}');
      }, '127.0.0.2');
    });
    after(async () => {
      await node?.close();
      await good?.close();
      await bad?.close();
      await dbs?.drop();
    });

    it('fails over idempotent requests on 503 and on connection refused, and counts retries', async () => {
      await register(node, 'ha', good.address);
      await register(node, 'ha', bad.address);
      const dead = await deadPort();
      await register(node, 'ha', `127.0.0.3:${dead}`);
      const H = { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'ha' };
      let retried = 0;
      for (let i = 0; i < 12; i++) {
        const r = await call(node, '/echo', H);
        assert.equal(r.statusCode, 200, 'every GET ends on the healthy instance');
        assert.equal(r.headers['x-utilmeta-proxy-destination-base-url'], `http://${good.address}/api`);
        if (r.headers['x-utilmeta-proxy-retries']) retried++;
        await r.body.dump();
      }
      assert.ok(retried > 0, 'some requests were ranked onto a failing instance first');
    });

    it('replays a buffered PUT body on failover', async () => {
      const payload = 'x'.repeat(100_000);
      for (let i = 0; i < 6; i++) {
        const r = await call(node, '/echo', { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'ha' }, { method: 'PUT', body: payload });
        assert.equal(r.statusCode, 200);
        assert.equal(((await r.body.json()) as Echo).body, payload);
      }
    });

    it('does not fail over a POST unless it is declared idempotent', async () => {
      const svc = 'solo-bad';
      const solo = await startUpstream((_req, res) => {
        res.statusCode = 503;
        res.end('{"error": "down"}');
      }, '127.0.0.4');
      try {
        await register(node, svc, solo.address);
        const r = await call(node, '/x', { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': svc }, { method: 'POST', body: 'a' });
        assert.equal(r.statusCode, 503, 'the upstream 503 is relayed');
        assert.equal(r.headers['x-utilmeta-proxy-retries'], undefined);
        assert.equal(await r.body.text(), '{"error": "down"}');
      } finally {
        await solo.close();
      }
      // Two instances that both answer 503, so every outcome is certain whatever
      // the ranking drew: a retry shows only as X-UtilMeta-Proxy-Retries. Four
      // failures per instance at most, below the five that would eject one.
      const down = (_req: unknown, res: { statusCode: number; end: (b: string) => void }) => {
        res.statusCode = 503;
        res.end('{"error": "down"}');
      };
      const one = await startUpstream(down, '127.0.0.6');
      const other = await startUpstream(down, '127.0.0.7');
      try {
        await register(node, 'both-bad', one.address);
        await register(node, 'both-bad', other.address);
        const B = { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'both-bad' };
        const declared = await call(node, '/x', { ...B, 'x-utilmeta-operation-idempotent': 'true' }, { method: 'POST', body: 'p' });
        assert.equal(declared.statusCode, 503);
        assert.equal(declared.headers['x-utilmeta-proxy-retries'], '1', 'a POST declared idempotent fails over to the other instance');
        await declared.body.dump();
        for (let i = 0; i < 3; i++) {
          const p = await call(node, '/x', B, { method: 'POST', body: 'p' });
          assert.equal(p.statusCode, 503, 'the first instance\'s 503 is relayed');
          assert.equal(p.headers['x-utilmeta-proxy-retries'], undefined, 'a plain POST is never sent a second time');
          await p.body.dump();
        }
      } finally {
        await one.close();
        await other.close();
      }
      for (let i = 0; i < 6; i++) {
        const p = await call(node, '/echo', { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'ha', 'x-utilmeta-operation-idempotent': 'true' }, { method: 'POST', body: 'p' });
        assert.equal(p.statusCode, 200);
        await p.body.dump();
      }
    });

    it('answers 502 naming the upstream when the only instance is unreachable', async () => {
      const dead = await deadPort();
      await register(node, 'gone', `127.0.0.5:${dead}`);
      const r = await call(node, '/echo', { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'gone' });
      assert.equal(r.statusCode, 502);
      const j = (await r.body.json()) as { error: string; state: string };
      assert.match(j.error, new RegExp(`upstream http://127.0.0.5:${dead}/api refused the connection`));
      assert.equal(j.state, 'upstream_refused');
    });

    it('bounds the connect phase by the request timeout too (504, not the 10 s connect timeout)', async () => {
      // A TCP server that accepts and never speaks TLS: undici stays in its connect phase.
      const net = await import('node:net');
      const sockets = new Set<import('node:net').Socket>();
      const silent = net.createServer((s) => sockets.add(s));
      await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
      const port = (silent.address() as import('node:net').AddressInfo).port;
      try {
        const res = await insertInstanceResource(node.db.ops, { service: 'tls-hang', address: `127.0.0.1:${port}` });
        const body = { ...registrationBody({ name: 'tls-hang', address: `127.0.0.1:${port}`, instanceId: res.id }), base_url: `https://127.0.0.1:${port}/api` };
        const reg = await request(`${node.origin}/api/registry`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        assert.equal(reg.statusCode, 200, await reg.body.text());
        const started = Date.now();
        const r = await call(node, '/x', { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'tls-hang', 'x-utilmeta-request-timeout': '0.5' });
        const j = (await r.body.json()) as { error: string; state: string };
        assert.equal(r.statusCode, 504);
        assert.equal(j.state, 'upstream_timeout');
        assert.match(j.error, /did not answer within 0\.5s/);
        assert.ok(Date.now() - started < 5000, 'answered long before the 10 s connect timeout');
      } finally {
        for (const s of sockets) s.destroy();
        await new Promise<void>((r) => silent.close(() => r()));
      }
    });

    it('keeps proxying known instances while the database is unreachable', async () => {
      const sql = adminSql();
      try {
        await sql.unsafe(`ALTER DATABASE "${dbs.registryName}" ALLOW_CONNECTIONS false`);
        await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${dbs.registryName} AND pid <> pg_backend_pid()`;
        await node.registry.refresh().catch(() => {});
        assert.ok(node.registry.lastError, 'the reload failed');
        const r = await call(node, '/echo', { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'ha' });
        assert.equal(r.statusCode, 200);
        await r.body.dump();
        const ready = await request(`${node.origin}/api/readyz`);
        assert.equal(ready.statusCode, 503);
        await ready.body.dump();
      } finally {
        await sql.unsafe(`ALTER DATABASE "${dbs.registryName}" ALLOW_CONNECTIONS true`);
        await sql.end();
      }
    });
  });
}

for (const server of LISTENERS) {
  describe(`trusted proxies (${server} listener)`, () => {
    it('believes X-Forwarded-For only from a trusted peer, appends the chain, and judges PRIVATE by the real client', async () => {
      const dbs = freshDatabases();
      const node = await startTestNode(server, dbs, { UTILMETA_PROXY_TRUSTED_PROXIES: '127.0.0.1', UTILMETA_PROXY_PRIVATE: 'true' });
      const up = await startUpstream();
      try {
        await register(node, 'tp', up.address);
        const H = { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'tp' };
        // Through a trusted front proxy (the test client on 127.0.0.1) for an internal client:
        const inside = await call(node, '/echo', { ...H, 'x-forwarded-for': '10.1.2.3' });
        assert.equal(inside.statusCode, 200);
        const e = (await inside.body.json()) as Echo;
        assert.equal(e.headers.find(([k]) => k === 'x-forwarded-for')?.[1], '10.1.2.3, 127.0.0.1');
        // …and for a public client: PRIVATE refuses it, naming the address it believed.
        const outside = await call(node, '/echo', { ...H, 'x-forwarded-for': '203.0.113.7' });
        assert.equal(outside.statusCode, 403);
        assert.match(((await outside.body.json()) as { error: string }).error, /203\.0\.113\.7/);
        // Registration is held to the same rule.
        const reg = await request(`${node.origin}/api/registry`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': '203.0.113.7' }, body: '{}' });
        assert.equal(reg.statusCode, 403);
        await reg.body.dump();
      } finally {
        await node.close();
        await up.close();
        await dbs.drop();
      }
    });
  });
}
