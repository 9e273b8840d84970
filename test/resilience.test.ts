// Traffic resilience on the request path, end to end on both listeners: health
// filtering and per-attempt reporting, ejection shared by two nodes through
// Redis, active probes in the registry listing, drains (POST …/drain and
// DELETE), and failover of non-idempotent requests only when never sent.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { Redis } from 'ioredis';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { insertInstanceResource, registrationBody } from './support/ops.ts';
import { startUpstream, deadPort, type TestUpstream } from './support/upstream.ts';

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

async function register(node: TestNode, name: string, address: string): Promise<string> {
  const res = await insertInstanceResource(node.db.ops, { service: name, address, remoteId: null });
  const r = await request(`${node.origin}/api/registry`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(registrationBody({ name, address, instanceId: res.id })),
  });
  const json = (await r.body.json()) as { id: string };
  assert.equal(r.statusCode, 200, JSON.stringify(json));
  return String(json.id);
}

function call(node: TestNode, svc: string, path = '/echo', opts: { method?: string; body?: string; headers?: Record<string, string> } = {}) {
  return request(`${node.origin}/api/proxy${path}`, {
    method: (opts.method ?? 'GET') as 'GET',
    headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': svc, ...opts.headers },
    body: opts.body,
  });
}

/** Polls a condition: state, not time, is asserted. */
async function until(what: string, cond: () => boolean | Promise<boolean>, limitMs = 10_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`never happened: ${what}`);
    await sleep(20);
  }
}

type Listing = { services: Array<{ name: string; instances: Array<{ id: string | number; address: string; health?: { state: string; since: string | null; reason: string | null } }> }> };

async function listing(node: TestNode, svc: string): Promise<Listing['services'][number]['instances']> {
  const r = await request(`${node.origin}/api/registry?service=${svc}`);
  const j = (await r.body.json()) as Listing;
  assert.equal(r.statusCode, 200);
  return j.services[0]?.instances ?? [];
}

async function dropRedisKeys(dbs: TestDatabases): Promise<void> {
  const r = new Redis(REDIS_URL, { lazyConnect: true });
  r.on('error', () => {});
  await r.connect();
  const keys = await r.keys(`utilmeta-proxy:health:${dbs.registryName}*`);
  if (keys.length) await r.del(...keys);
  r.disconnect();
}

for (const server of LISTENERS) {
  describe(`resilience: ejection shared by two nodes (${server} listener)`, () => {
    let dbs: TestDatabases;
    let a: TestNode;
    let b: TestNode;
    const ups: TestUpstream[] = [];
    const env = { UTILMETA_PROXY_REDIS_URL: REDIS_URL, UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '0', UTILMETA_PROXY_LOG_LEVEL: 'warn' };

    before(async () => {
      dbs = freshDatabases();
      a = await startTestNode(server, dbs, env);
      b = await startTestNode(server, dbs, env, { migrate: false });
      for (const host of ['127.0.0.1', '127.0.0.2', '127.0.0.3']) ups.push(await startUpstream(undefined, host));
    });
    after(async () => {
      await a?.close();
      await b?.close();
      for (const u of ups) await u.close().catch(() => {});
      if (dbs) await dropRedisKeys(dbs);
      await dbs?.drop();
    });

    it('a killed instance of three costs at most one failed attempt per node, and the listing shows it ejected', async () => {
      const ids: string[] = [];
      for (const u of ups) ids.push(await register(a, 'trio', u.address));
      await b.registry.refresh();
      await until('both nodes see three instances', () => a.registry.snapshot.service('trio')?.instances.length === 3 && b.registry.snapshot.service('trio')?.instances.length === 3);
      const victim = ups[1];
      await victim.close();
      const failed = new Map<TestNode, number>([[a, 0], [b, 0]]);
      // Both nodes under load at once, each a sequential stream: every attempt
      // starts after the previous one ended, so none is caught in flight.
      await Promise.all([a, b].map(async (node) => {
        for (let i = 0; i < 40; i++) {
          const r = await call(node, 'trio');
          assert.equal(r.statusCode, 200, 'every GET ends on a live instance');
          assert.notEqual(r.headers['x-utilmeta-proxy-destination-base-url'], `${victim.url}/api`);
          failed.set(node, failed.get(node)! + Number(r.headers['x-utilmeta-proxy-retries'] ?? 0));
          await r.body.dump();
        }
      }));
      assert.ok(failed.get(a)! <= 1, `node a paid ${failed.get(a)} failed attempts`);
      assert.ok(failed.get(b)! <= 1, `node b paid ${failed.get(b)} failed attempts`);
      for (const node of [a, b]) {
        await until('the victim is ejected on both nodes', () => node.health.health.isEjected(ids[1]));
        const inst = (await listing(node, 'trio')).find((i) => String(i.id) === ids[1]);
        assert.equal(inst?.health?.state, 'ejected');
        assert.match(String(inst?.health?.reason), /refused|unreach/);
        const other = (await listing(node, 'trio')).find((i) => String(i.id) === ids[0]);
        assert.equal(other?.health?.state, 'healthy');
      }
    });

    it('POST …/drain stops new requests to the instance on every node while in-flight ones finish', async () => {
      let release: () => void = () => {};
      const gate = new Promise<void>((r) => (release = r));
      const slow = await startUpstream(async (_req, res) => {
        await gate;
        res.end('slow done');
      }, '127.0.0.4');
      const fast = await startUpstream(undefined, '127.0.0.5');
      ups.push(slow, fast);
      const slowId = await register(a, 'drainy', slow.address);
      await register(a, 'drainy', fast.address);
      await until('node b sees both', () => b.registry.snapshot.service('drainy')?.instances.length === 2);
      // One request in flight on the slow instance (from node b).
      let inflight: Promise<{ status: number; body: string }> | null = null;
      for (let i = 0; i < 40 && !inflight; i++) {
        const seen = slow.seen.length;
        const p = call(b, 'drainy', '/slow').then(async (r) => ({ status: r.statusCode, body: await r.body.text() }));
        await until('the request reached an upstream', () => slow.seen.length > seen || fast.seen.some((s) => s.url === '/api/slow'), 5000).catch(() => {});
        if (slow.seen.length > seen) inflight = p;
        else await p;
        fast.seen.length = 0;
      }
      assert.ok(inflight, 'a request landed on the slow instance');
      const r = await request(`${a.origin}/api/registry/${slowId}/drain`, { method: 'POST' });
      const j = (await r.body.json()) as { instance: string; shared: boolean; health: { state: string } };
      assert.equal(r.statusCode, 200, JSON.stringify(j));
      assert.equal(j.instance, slowId);
      assert.equal(j.shared, true);
      assert.equal(j.health.state, 'draining');
      await until('node b applied the drain', () => b.health.health.isDraining(slowId));
      const before = slow.seen.length;
      for (const node of [a, b]) {
        for (let i = 0; i < 10; i++) {
          const x = await call(node, 'drainy');
          assert.equal(x.statusCode, 200);
          assert.equal(x.headers['x-utilmeta-proxy-destination-base-url'], `${fast.url}/api`);
          await x.body.dump();
        }
      }
      assert.equal(slow.seen.length, before, 'no new request reached the drained instance');
      release();
      const done = await inflight!;
      assert.deepEqual(done, { status: 200, body: 'slow done' }, 'the in-flight request finished');
      assert.equal((await listing(b, 'drainy')).find((i) => String(i.id) === slowId)?.health?.state, 'draining');
      // Undrain puts it back.
      const u = await request(`${b.origin}/api/registry/${slowId}/drain`, { method: 'DELETE' });
      assert.equal(u.statusCode, 200);
      await u.body.dump();
      await until('node a applied the undrain', () => !a.health.health.isDraining(slowId));
    });

    it('a drain of an unknown instance is a 404, a bad id a 400', async () => {
      const r = await request(`${a.origin}/api/registry/999999/drain`, { method: 'POST' });
      assert.equal(r.statusCode, 404);
      assert.match(await r.body.text(), /999999/);
      const bad = await request(`${a.origin}/api/registry/%zz/drain`, { method: 'POST' });
      assert.equal(bad.statusCode, 400);
      await bad.body.dump();
    });

    it('DELETE drains first: the other node stops sending at once', async () => {
      const one = await startUpstream(undefined, '127.0.0.6');
      const two = await startUpstream(undefined, '127.0.0.7');
      ups.push(one, two);
      const id = await register(a, 'deleted', one.address);
      await register(a, 'deleted', two.address);
      await until('node b sees both', () => b.registry.snapshot.service('deleted')?.instances.length === 2);
      const r = await request(`${a.origin}/api/registry/${id}`, { method: 'DELETE' });
      assert.equal(r.statusCode, 200);
      await r.body.dump();
      const seen = one.seen.length;
      for (let i = 0; i < 10; i++) {
        const x = await call(b, 'deleted');
        assert.equal(x.statusCode, 200);
        await x.body.dump();
      }
      assert.equal(one.seen.length, seen, 'the deleted instance got nothing new from node b');
    });
  });

  describe(`resilience: probes, safe retries (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    const ups: TestUpstream[] = [];

    before(async () => {
      dbs = freshDatabases();
      node = await startTestNode(server, dbs, {
        UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '100', UTILMETA_PROXY_HEALTH_PROBE_TIMEOUT: '500',
        UTILMETA_PROXY_HEALTH_UNHEALTHY_AFTER: '0', UTILMETA_PROXY_LOG_LEVEL: 'warn',
      });
    });
    after(async () => {
      await node?.close();
      for (const u of ups) await u.close().catch(() => {});
      await dbs?.drop();
    });

    it('probes take a dead instance out (listed unhealthy) and readmit it when it answers again', async () => {
      let down = false;
      const flappy = await startUpstream((_req, res) => {
        res.statusCode = down ? 503 : 200;
        res.end(down ? 'down' : 'up');
      }, '127.0.0.8');
      ups.push(flappy);
      const id = await register(node, 'probed', flappy.address);
      await until('probed and healthy', async () => (await listing(node, 'probed'))[0]?.health?.state === 'healthy' && (node.health.checker?.probesTotal ?? 0) > 0);
      down = true;
      await until('probes mark it unhealthy', async () => (await listing(node, 'probed'))[0]?.health?.state === 'unhealthy');
      assert.equal(node.health.health.isAvailable(id), false);
      down = false;
      await until('probes readmit it', async () => (await listing(node, 'probed'))[0]?.health?.state === 'healthy');
      assert.equal(node.health.health.isAvailable(id), true);
    });

    it('a POST fails over when the first instance refused the connection, and is sent exactly once', async () => {
      const good = await startUpstream(undefined, '127.0.0.9');
      ups.push(good);
      const dead = await deadPort();
      await register(node, 'posty', `127.0.0.10:${dead}`);
      await register(node, 'posty', good.address);
      let retried = 0;
      for (let i = 0; i < 6; i++) {
        const r = await call(node, 'posty', '/create', { method: 'POST', body: `n=${i}`, headers: { 'content-type': 'text/plain' } });
        assert.equal(r.statusCode, 200);
        retried += Number(r.headers['x-utilmeta-proxy-retries'] ?? 0);
        await r.body.dump();
      }
      assert.deepEqual(good.seen.filter((s) => s.method === 'POST').map((s) => s.body.toString()), ['n=0', 'n=1', 'n=2', 'n=3', 'n=4', 'n=5']);
      assert.ok(retried <= 1, `the refusing instance is ejected after its first refusal (retried ${retried}; ${JSON.stringify(await listing(node, 'posty'))})`);
    });

    it('Idempotency-Key: the same POST replays the stored answer, a different body or a bad key is refused', async () => {
      let n = 0;
      const counter = await startUpstream((req, res) => {
        if (req.method !== 'POST') return res.end('probe');
        n++;
        res.statusCode = 201;
        res.setHeader('content-type', 'text/plain');
        res.end(`created #${n}`);
      }, '127.0.0.13');
      ups.push(counter);
      await register(node, 'idem', counter.address);
      const post = (key: string, body: string) => call(node, 'idem', '/orders', { method: 'POST', body, headers: { 'idempotency-key': key, 'content-type': 'text/plain' } });
      const first = await post('order-1', 'x=1');
      assert.equal(first.statusCode, 201);
      assert.equal(await first.body.text(), 'created #1');
      const again = await post('order-1', 'x=1');
      assert.equal(again.statusCode, 201);
      assert.equal(again.headers['idempotency-replayed'], 'true');
      assert.equal(await again.body.text(), 'created #1');
      assert.equal(n, 1, 'the side effect ran once');
      const other = await post('order-1', 'x=2');
      assert.equal(other.statusCode, 409);
      assert.match(await other.body.text(), /Idempotency-Key/);
      const bad = await post('bad key with spaces', 'x=1');
      assert.equal(bad.statusCode, 400);
      assert.match(await bad.body.text(), /Idempotency-Key/);
      const second = await post('order-2', 'x=1');
      assert.equal(await second.body.text(), 'created #2');
      assert.equal(n, 2);
    });

    it('a POST answered 503 is relayed, never sent to a second instance', async () => {
      const hits: string[] = [];
      // Probes GET these too: only POSTs are counted.
      const bad = await startUpstream((req, res) => { if (req.method === 'POST') hits.push('bad'); res.statusCode = 503; res.end('busy'); }, '127.0.0.11');
      const ok = await startUpstream((req, res) => { if (req.method === 'POST') hits.push('ok'); res.end('ok'); }, '127.0.0.12');
      ups.push(bad, ok);
      await register(node, 'once', bad.address);
      await register(node, 'once', ok.address);
      for (let i = 0; i < 8; i++) {
        hits.length = 0;
        const r = await call(node, 'once', '/x', { method: 'POST', body: 'b', headers: { 'content-type': 'text/plain' } });
        await r.body.dump();
        assert.equal(hits.length, 1, 'exactly one upstream saw the POST');
        assert.equal(r.statusCode, hits[0] === 'bad' ? 503 : 200);
      }
    });
  });
}
