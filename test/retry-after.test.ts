// Retry-After on upstream 429/503 and the "origin proved gone" gate, end to end
// on both listeners with real upstream processes on loopback.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { Redis } from 'ioredis';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { insertInstanceResource, registrationBody } from './support/ops.ts';
import { startUpstream, type TestUpstream, type UpstreamHandler } from './support/upstream.ts';

async function register(node: TestNode, name: string, address: string): Promise<string> {
  const res = await insertInstanceResource(node.db.ops, { service: name, address, remoteId: null });
  const r = await request(`${node.origin}/api/registry`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify(registrationBody({ name, address, instanceId: res.id })),
  });
  const json = (await r.body.json()) as { id: string };
  assert.equal(r.statusCode, 200, JSON.stringify(json));
  return String(json.id);
}

function call(node: TestNode, svc: string, opts: { method?: string; body?: string; timeout?: number; signal?: AbortSignal } = {}) {
  const headers: Record<string, string> = { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': svc };
  if (opts.timeout) headers['x-utilmeta-request-timeout'] = String(opts.timeout);
  return request(`${node.origin}/api/proxy/x`, { method: (opts.method ?? 'GET') as 'GET', headers, body: opts.body, signal: opts.signal });
}

/** Answers `status` with `Retry-After: ra` to the first `times` requests, then 200 with the instance's name. */
function limited(name: string, status: number, ra: string, times = 1): UpstreamHandler {
  let n = 0;
  return (_req, res) => {
    if (n++ < times) {
      res.writeHead(status, { 'retry-after': ra, 'content-type': 'text/plain' });
      res.end(`busy ${name}`);
      return;
    }
    res.end(`ok ${name}`);
  };
}

for (const server of LISTENERS) {
  describe(`Retry-After on 429/503 (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    const ups: TestUpstream[] = [];
    const up = async (h: UpstreamHandler, host = '127.0.0.1') => {
      const u = await startUpstream(h, host);
      ups.push(u);
      return u;
    };

    before(async () => {
      dbs = freshDatabases();
      node = await startTestNode(server, dbs, { UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '0', UTILMETA_PROXY_LOG_LEVEL: 'warn' });
    });
    after(async () => {
      await node?.close();
      for (const u of ups) await u.close().catch(() => {});
      await dbs?.drop();
    });

    it('a single instance answering 503 Retry-After: 1 then 200: the request waits and gets the 200', async () => {
      const u = await up(limited('one', 503, '1'));
      await register(node, 'ra-one', u.address);
      const r = await call(node, 'ra-one', { timeout: 10 });
      assert.equal(r.statusCode, 200);
      assert.equal(await r.body.text(), 'ok one');
      assert.equal(r.headers['x-utilmeta-proxy-retries'], '1');
      assert.equal(u.seen.length, 2, 'the same instance got the retry');
    });

    it('an idempotent PUT with a body to a single instance is replayed after the wait', async () => {
      const u = await up(limited('put', 503, '1'));
      await register(node, 'ra-put', u.address);
      const r = await call(node, 'ra-put', { method: 'PUT', body: 'payload', timeout: 10 });
      assert.equal(r.statusCode, 200);
      await r.body.dump();
      assert.deepEqual(u.seen.map((s) => s.body.toString()), ['payload', 'payload']);
    });

    it('a Retry-After beyond the request timeout: the 503 is relayed unchanged, no wait, no retry', async () => {
      const u = await up(limited('long', 503, '5'));
      await register(node, 'ra-long', u.address);
      const r = await call(node, 'ra-long', { timeout: 2 });
      assert.equal(r.statusCode, 503);
      assert.equal(r.headers['retry-after'], '5');
      assert.equal(await r.body.text(), 'busy long');
      assert.equal(u.seen.length, 1);
    });

    it('a non-idempotent POST is never waited for: its 503 is relayed', async () => {
      const u = await up(limited('post', 503, '1'));
      await register(node, 'ra-post', u.address);
      const r = await call(node, 'ra-post', { method: 'POST', body: 'x', timeout: 10 });
      assert.equal(r.statusCode, 503);
      assert.equal(r.headers['retry-after'], '1');
      await r.body.dump();
      assert.equal(u.seen.length, 1);
    });

    it('503 Retry-After from one of two instances: the other answers now, and the first is held out of rotation', async () => {
      const busy = await up(limited('busy', 503, '30', 100), '127.0.0.2');
      const fine = await up((_q, res) => res.end('ok fine'), '127.0.0.3');
      const busyId = await register(node, 'ra-two', busy.address);
      await register(node, 'ra-two', fine.address);
      // Until the busy one has been tried once (candidate order is randomised).
      for (let i = 0; i < 40 && busy.seen.length === 0; i++) {
        const r = await call(node, 'ra-two', { timeout: 10 });
        assert.equal(r.statusCode, 200);
        assert.equal(await r.body.text(), 'ok fine');
      }
      assert.equal(busy.seen.length, 1);
      const h = node.health.health.healthOf(busyId);
      assert.equal(h.state, 'ejected');
      assert.match(String(h.reason), /Retry-After/);
      for (let i = 0; i < 10; i++) {
        const r = await call(node, 'ra-two', { timeout: 10 });
        assert.equal(r.statusCode, 200);
        assert.equal(r.headers['x-utilmeta-proxy-retries'], undefined, 'no attempt goes to the held instance');
        await r.body.dump();
      }
      assert.equal(busy.seen.length, 1);
    });

    it('429 Retry-After speaks for the caller: the same instance is retried after the wait, never another', async () => {
      const x = await up(limited('x', 429, '1'), '127.0.0.4');
      const y = await up(limited('y', 429, '1'), '127.0.0.5');
      await register(node, 'ra-429', x.address);
      await register(node, 'ra-429', y.address);
      const r = await call(node, 'ra-429', { timeout: 10 });
      assert.equal(r.statusCode, 200);
      const body = await r.body.text();
      const [first, other] = body === 'ok x' ? [x, y] : [y, x];
      assert.equal(first.seen.length, 2, body);
      assert.equal(other.seen.length, 0);
    });

    it('a client that goes away during the wait: no retry is sent', async () => {
      const u = await up(limited('gone', 503, '2'));
      await register(node, 'ra-abort', u.address);
      const ac = new AbortController();
      const p = call(node, 'ra-abort', { timeout: 10, signal: ac.signal }).then(() => 'answered', () => 'aborted');
      while (u.seen.length === 0) await sleep(10);
      ac.abort();
      assert.equal(await p, 'aborted');
      // Past the Retry-After: the retry would have arrived by now.
      await sleep(2500);
      assert.equal(u.seen.length, 1);
    });
  });

  describe(`an origin proved gone (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let rst: net.Server;
    let connections = 0;

    before(async () => {
      dbs = freshDatabases();
      node = await startTestNode(server, dbs, { UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '0', UTILMETA_PROXY_LOG_LEVEL: 'warn' });
      // Accepts, then resets before sending a byte: what a process that died with
      // connections in its accept queue looks like.
      rst = net.createServer((s) => {
        connections++;
        s.resetAndDestroy();
      });
      await new Promise<void>((r) => rst.listen(0, '127.0.0.6', r));
    });
    after(async () => {
      await node?.close();
      rst?.close();
      await dbs?.drop();
    });

    it('a reset before any byte on a fresh connection: the next request skips the origin without connecting', async () => {
      await register(node, 'rst', `127.0.0.6:${(rst.address() as AddressInfo).port}`);
      const r1 = await call(node, 'rst', { timeout: 5 });
      assert.equal(r1.statusCode, 502);
      assert.equal(((await r1.body.json()) as { state: string }).state, 'upstream_reset');
      assert.equal(connections, 1);
      // The only instance (never ejected: the last one stays), but not connected to again.
      const r2 = await call(node, 'rst', { timeout: 5 });
      assert.equal(r2.statusCode, 502);
      const j2 = (await r2.body.json()) as { state: string; error: string };
      assert.equal(j2.state, 'upstream_skipped', j2.error);
      assert.equal(connections, 1);
    });

    it('such a reset ejects the instance at once (one attempt), and the request fails over', async () => {
      let resets = 0;
      const rst2 = net.createServer((s) => {
        resets++;
        s.resetAndDestroy();
      });
      await new Promise<void>((r) => rst2.listen(0, '127.0.0.7', r));
      const good = await startUpstream((_q, res) => res.end('ok'), '127.0.0.8');
      try {
        const id = await register(node, 'rst-pair', `127.0.0.7:${(rst2.address() as AddressInfo).port}`);
        await register(node, 'rst-pair', good.address);
        for (let i = 0; i < 40 && resets === 0; i++) {
          const r = await call(node, 'rst-pair', { timeout: 5 });
          assert.equal(r.statusCode, 200, 'an idempotent GET fails over');
          await r.body.dump();
        }
        assert.equal(resets, 1);
        const h = node.health.health.healthOf(id);
        assert.equal(h.state, 'ejected', 'one attempt was enough');
        assert.match(String(h.reason), /reset the connection/);
      } finally {
        rst2.close();
        await good.close();
      }
    });
  });
}

describe('a 503 Retry-After hold reaches the other nodes through Redis', () => {
  const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
  let dbs: TestDatabases;
  let a: TestNode;
  let b: TestNode;
  const ups: TestUpstream[] = [];
  const env = { UTILMETA_PROXY_REDIS_URL: REDIS_URL, UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '0', UTILMETA_PROXY_LOG_LEVEL: 'warn' };

  before(async () => {
    dbs = freshDatabases();
    a = await startTestNode('uws', dbs, env);
    b = await startTestNode('uws', dbs, env, { migrate: false });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    for (const u of ups) await u.close().catch(() => {});
    if (dbs) {
      const r = new Redis(REDIS_URL, { lazyConnect: true });
      r.on('error', () => {});
      await r.connect();
      const keys = await r.keys(`utilmeta-proxy:health:${dbs.registryName}*`);
      if (keys.length) await r.del(...keys);
      r.disconnect();
    }
    await dbs?.drop();
  });

  it('the other node holds the instance out of rotation too, without having asked it', async () => {
    const busy = await startUpstream(limited('busy', 503, '30', 100), '127.0.0.2');
    const fine = await startUpstream((_q, res) => res.end('ok fine'), '127.0.0.3');
    ups.push(busy, fine);
    const busyId = await register(a, 'ra-shared', busy.address);
    await register(a, 'ra-shared', fine.address);
    await b.registry.refresh();
    for (let i = 0; i < 40 && busy.seen.length === 0; i++) {
      const r = await call(a, 'ra-shared', { timeout: 10 });
      assert.equal(r.statusCode, 200);
      await r.body.dump();
    }
    assert.equal(busy.seen.length, 1);
    const end = Date.now() + 5000;
    while (b.health.health.healthOf(busyId).state !== 'ejected' && Date.now() < end) await sleep(20);
    const h = b.health.health.healthOf(busyId);
    assert.equal(h.state, 'ejected');
    assert.match(String(h.reason), /Retry-After/);
    for (let i = 0; i < 10; i++) {
      const r = await call(b, 'ra-shared', { timeout: 10 });
      assert.equal(r.statusCode, 200);
      await r.body.dump();
    }
    assert.equal(busy.seen.length, 1, 'node b never sent it a request');
  });
});
