// Health sharing across "nodes" through the real Redis, probes against real
// HTTP upstreams on loopback. Each node is an instance of the classes with its
// own Redis connections; every test uses its own key prefix.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { DomainError } from '../src/core/errors.ts';
import {
  ActiveHealthChecker, IdempotencyStore, InstanceHealth, PgAdvisoryLeader, RedisLeaderLock, SoloLeader, outcomeOf, requestFingerprint, type ProbeTarget, type StoredResponse,
} from '../src/health/index.ts';

const REDIS_HOST = process.env.TEST_REDIS_HOST ?? '127.0.0.1';
const REDIS_PORT = Number(process.env.TEST_REDIS_PORT ?? 6379);
const clients: Redis[] = [];
const prefixes: string[] = [];

async function redis(port = REDIS_PORT): Promise<Redis> {
  const r = new Redis({ host: REDIS_HOST, port, lazyConnect: true, maxRetriesPerRequest: 2, retryStrategy: () => 20 });
  r.on('error', () => {}); // outage tests cut connections on purpose; state is asserted, not logs
  await r.connect();
  clients.push(r);
  return r;
}

function prefix(): string {
  const p = `umtest:health:${randomBytes(5).toString('hex')}:`;
  prefixes.push(p);
  return p;
}

after(async () => {
  const r = await redis();
  for (const p of prefixes) {
    const keys = await r.keys(`${p}*`);
    if (keys.length) await r.del(...keys);
  }
  await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
});

/** Polls a condition (state, not time, is what tests assert): fails after `limitMs`. */
async function until(what: string, cond: () => boolean | Promise<boolean>, limitMs = 10_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`never happened: ${what}`);
    await sleep(10);
  }
}

async function node(p: string, sizes: Map<string, number>, opts: Partial<ConstructorParameters<typeof InstanceHealth>[0]> = {}): Promise<InstanceHealth> {
  const h = new InstanceHealth({
    serviceSize: (id) => sizes.get(id) ?? 0,
    redis: { client: await redis(), subscriber: await redis(), prefix: p },
    outlier: { consecutiveFailures: 2, baseEjectionMs: 60_000, maxEjectionMs: 300_000 },
    ...opts,
  });
  await h.start();
  return h;
}

/** An HTTP upstream on loopback that can be stopped and restarted on the same port. */
class Upstream {
  server: http.Server | null = null;
  port = 0;
  hits = 0;
  constructor(private handler: http.RequestListener = (_req, res) => res.end('ok')) {}
  async start(): Promise<this> {
    const s = http.createServer((req, res) => {
      this.hits++;
      this.handler(req, res);
    });
    s.keepAliveTimeout = 100;
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (s.address() as AddressInfo).port;
    this.server = s;
    return this;
  }
  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
  target(id: string, serviceId: string): ProbeTarget {
    return { id, serviceId, baseUrl: `http://127.0.0.1:${this.port}/api`, opsApi: `http://127.0.0.1:${this.port}/ops` };
  }
}

describe('passive ejection and drain shared through Redis', () => {
  it('an ejection on one node is seen by another, and by a node that starts later', async () => {
    const p = prefix();
    const sizes = new Map([['svc', 3]]);
    const a = await node(p, sizes);
    const seen: string[] = [];
    const b = await node(p, sizes, { onEvent: (e) => seen.push(`${e.type}:${e.source}`) });
    try {
      const inst = { id: '101', serviceId: 'svc' };
      assert.equal(a.report(inst, 'failure'), null);
      assert.equal(b.isEjected('101'), false);
      const e = a.report(inst, 'failure', 'HTTP 503');
      assert.ok(e, 'second failure ejects on node a');
      await until('node b sees the ejection', () => b.isEjected('101'));
      assert.equal(b.healthOf('101').state, 'ejected');
      assert.match(b.healthOf('101').reason!, /HTTP 503/);
      assert.deepEqual(b.metrics().ejectionsTotal, [{ serviceId: 'svc', instanceId: '101', source: 'remote', count: 1 }]);
      assert.deepEqual(b.filter([{ id: '100' }, { id: '101' }, { id: '102' }]).map((i) => i.id), ['100', '102']);
      // The max-percent cap counts the cluster's ejections: node b may not eject a second of three.
      b.report({ id: '102', serviceId: 'svc' }, 'unreached');
      b.report({ id: '102', serviceId: 'svc' }, 'unreached');
      assert.equal(b.isEjected('102'), false);

      const c = await node(p, sizes);
      try {
        assert.equal(c.isEjected('101'), true, 'a node starting later learns current ejections from the hash');
        await a.lift('101');
        await until('node b sees the recovery', () => !b.isEjected('101'));
        await until('node c sees the recovery', () => !c.isEjected('101'));
        assert.equal(b.healthOf('101').state, 'healthy');
        assert.deepEqual(seen, ['ejected:remote', 'lifted:remote']);
      } finally {
        await c.stop();
      }
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('a drain on one node stops new requests on every node; undrain readmits', async () => {
    const p = prefix();
    const sizes = new Map([['svc', 2]]);
    const a = await node(p, sizes);
    const b = await node(p, sizes);
    try {
      await a.drain('7');
      assert.equal(a.isDraining('7'), true);
      await until('node b sees the drain', () => b.isDraining('7'));
      assert.deepEqual(b.filter([{ id: '7' }, { id: '8' }]).map((i) => i.id), ['8']);
      assert.equal(b.healthOf('7').state, 'draining');
      const late = await node(p, sizes);
      assert.equal(late.isDraining('7'), true);
      await late.stop();
      await b.undrain('7');
      await until('node a sees the undrain', () => !a.isDraining('7'));
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('re-reads the shared state when its subscriber reconnects', async () => {
    const p = prefix();
    const sizes = new Map([['svc', 3]]);
    const sub = await redis();
    const a = new InstanceHealth({ serviceSize: (id) => sizes.get(id) ?? 0, redis: { client: await redis(), subscriber: sub, prefix: p } });
    await a.start();
    const b = await node(p, sizes);
    try {
      // Cut a's subscription, let b eject while a is deaf, then reconnect a.
      sub.disconnect();
      b.report({ id: '5', serviceId: 'svc' }, 'unreached');
      assert.equal(b.isEjected('5'), true);
      await sleep(50);
      await sub.connect();
      await until('node a catches up after reconnecting', () => a.isEjected('5'));
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});

describe('active health through a leader', () => {
  it('probes eject a dead upstream on every node and readmit it when it comes back', async () => {
    const p = prefix();
    const sizes = new Map([['svc', 3]]);
    const alive = await new Upstream((req, res) => {
      res.statusCode = req.url === '/ops' ? 401 : 404; // any answer below 500 is alive
      res.end();
    }).start();
    const flaky = await new Upstream().start();
    const broken = await new Upstream((_req, res) => { res.statusCode = 500; res.end(); }).start();
    const targets = [alive.target('1', 'svc'), flaky.target('2', 'svc'), broken.target('3', 'svc')];
    const a = await node(p, sizes);
    const b = await node(p, sizes);
    const leaderRedis = await redis();
    const checker = new ActiveHealthChecker({
      health: a, leader: new RedisLeaderLock(leaderRedis, { key: `${p}leader`, nodeId: a.nodeId, ttlMs: 1000 }),
      targets: () => targets, intervalMs: 30, timeoutMs: 3000, unhealthyThreshold: 2, healthyThreshold: 2, downLeaseMs: 10_000,
    });
    try {
      await checker.start();
      await until('the broken (500) instance is out on node b', () => !b.isAvailable('3'));
      assert.equal(b.isAvailable('1'), true);
      assert.equal(b.isAvailable('2'), true);
      await flaky.stop();
      await until('the dead instance is out on node a', () => !a.isAvailable('2'));
      await until('the dead instance is out on node b', () => !b.isAvailable('2'));
      assert.equal(b.healthOf('2').state, 'ejected');
      assert.match(b.healthOf('2').reason!, /failed probes/);
      assert.equal(b.isAvailable('1'), true, 'the live instance answering 401/404 stays in');
      assert.deepEqual(b.filter(targets).map((t) => t.id), ['1']);
      await flaky.start();
      await until('the restarted instance is readmitted on node b', () => b.isAvailable('2'));
      await until('… and on node a', () => a.isAvailable('2'));
      assert.equal(b.isAvailable('3'), false);
      assert.ok(checker.probesTotal > 0 && checker.probeFailuresTotal > 0);
    } finally {
      await checker.stop();
      await a.stop();
      await b.stop();
      await alive.stop();
      await flaky.stop();
      await broken.stop();
    }
  });

  it('without Redis a node probes alone; a hanging upstream is taken out with a timeout reason', async () => {
    const hanging = await new Upstream(() => { /* accepts, never answers */ }).start();
    const h = new InstanceHealth({ serviceSize: () => 2 });
    const checker = new ActiveHealthChecker({
      health: h, leader: new SoloLeader(), targets: () => [hanging.target('h1', 'svc')],
      intervalMs: 20, timeoutMs: 100, unhealthyThreshold: 2, healthyThreshold: 1, downLeaseMs: 10_000,
    });
    try {
      await checker.start();
      assert.equal(checker.isLeader, true);
      await until('the hanging instance is out', () => !h.isAvailable('h1'));
      assert.match(h.healthOf('h1').reason!, /timed out after 100 ms/);
    } finally {
      await checker.stop();
      await hanging.stop();
    }
  });

  it('reports an instance down longer than the configured time as unhealthy', async () => {
    const p = prefix();
    const sizes = new Map([['svc', 2]]);
    const dead = await new Upstream().start();
    const targets = [dead.target('9', 'svc')];
    await dead.stop();
    const a = await node(p, sizes, { unhealthyAfterMs: 150 });
    const b = await node(p, sizes, { unhealthyAfterMs: 150 });
    const checker = new ActiveHealthChecker({
      health: a, leader: new RedisLeaderLock(await redis(), { key: `${p}leader`, nodeId: a.nodeId, ttlMs: 1000 }),
      targets: () => targets, intervalMs: 20, timeoutMs: 300, unhealthyThreshold: 2, healthyThreshold: 1,
    });
    try {
      await checker.start();
      await until('out of rotation on b', () => !b.isAvailable('9'));
      await until('reported unhealthy on b', () => b.healthOf('9').state === 'unhealthy');
      const r = b.healthOf('9');
      assert.ok(r.since !== null && Date.now() - r.since >= 150);
      assert.match(r.reason!, /failed probes/);
    } finally {
      await checker.stop();
      await a.stop();
      await b.stop();
    }
  });

  it('one leader at a time; a dead leader is replaced and the new one keeps the verdicts', async () => {
    const p = prefix();
    const sizes = new Map([['svc', 2]]);
    const dead = await new Upstream().start();
    const targets = [dead.target('11', 'svc')];
    await dead.stop();
    const a = await node(p, sizes);
    const b = await node(p, sizes);
    const lockA = new RedisLeaderLock(await redis(), { key: `${p}leader`, nodeId: a.nodeId, ttlMs: 900 });
    const lockB = new RedisLeaderLock(await redis(), { key: `${p}leader`, nodeId: b.nodeId, ttlMs: 900 });
    const opts = { targets: () => targets, intervalMs: 20, timeoutMs: 300, unhealthyThreshold: 2, healthyThreshold: 2 };
    const ca = new ActiveHealthChecker({ health: a, leader: lockA, ...opts });
    const cb = new ActiveHealthChecker({ health: b, leader: lockB, ...opts });
    let both = 0;
    const watch = setInterval(() => { if (lockA.isLeader && lockB.isLeader) both++; }, 5);
    try {
      await ca.start();
      await cb.start();
      assert.equal(lockA.isLeader, true, 'the first to start leads');
      assert.equal(lockB.isLeader, false);
      await until('probes take the dead instance out', () => !b.isAvailable('11'));
      assert.equal(cb.probesTotal, 0, 'the follower never probes');
      // The leader "crashes": it stops renewing without releasing the lock.
      lockA.abandon();
      const probesBefore = ca.probesTotal;
      await until('node b takes over', () => lockB.isLeader);
      await until('the new leader probes', () => cb.probesTotal > 0);
      assert.ok(ca.probesTotal - probesBefore <= 1, 'the old leader stopped probing (one probe may have been in flight)');
      const s = b.probeState('11');
      assert.ok(s && !s.up, 'the new leader resumed from the shared down state');
      await until('the verdict stays renewed by the new leader on node a', async () => {
        const st = a.probeState('11');
        return st !== undefined && st.validUntil > Date.now() + 20 && cb.probesTotal > 3;
      });
      assert.equal(a.isAvailable('11'), false);
      // A clean stop releases at once: a becomes leader again on its next round.
      await ca.stop();
      await cb.stop();
      assert.equal(lockB.isLeader, false);
      await lockA.start();
      assert.equal(lockA.isLeader, true);
      await lockA.stop();
      assert.equal(both, 0, 'never two leaders at once');
    } finally {
      clearInterval(watch);
      await ca.stop();
      await cb.stop();
      await a.stop();
      await b.stop();
    }
  });
});

describe('idempotency keys across nodes', () => {
  it('a race between two nodes executes the request once and every client gets the same response', async () => {
    const p = prefix();
    let executions = 0;
    const upstream = await new Upstream((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        executions++;
        // Slow enough for the duplicates to arrive while the first is in flight.
        setTimeout(() => {
          res.setHeader('content-type', 'application/json');
          res.statusCode = 201;
          res.end(JSON.stringify({ order: executions, echo: body }));
        }, 50);
      });
    }).start();
    const nodes = [new IdempotencyStore({ redis: await redis(), prefix: p }), new IdempotencyStore({ redis: await redis(), prefix: p })];
    const body = Buffer.from('{"item":"book"}');
    const fp = requestFingerprint('POST', '/orders', body);
    let inProgress = 0;

    // What a node does for one client request carrying the key.
    async function handle(store: IdempotencyStore): Promise<StoredResponse> {
      for (;;) {
        const r = await store.begin('orders|client-1', 'key-42', fp);
        if (r.state === 'completed') return r.response;
        if (r.state === 'mismatch') throw new Error('unexpected mismatch');
        if (r.state === 'in_progress') {
          inProgress++;
          await sleep(10); // the client's retry
          continue;
        }
        const res = await fetch(`http://127.0.0.1:${upstream.port}/orders`, { method: 'POST', body });
        const stored = { status: res.status, headers: [['content-type', res.headers.get('content-type')!]] as Array<[string, string]>, body: Buffer.from(await res.arrayBuffer()) };
        assert.equal(await store.complete(r.lease, stored), true);
        return { ...stored, bodyOmitted: false };
      }
    }

    try {
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => handle(nodes[i % 2])));
      assert.equal(executions, 1, 'the upstream ran the request once');
      assert.ok(inProgress > 0, 'duplicates saw the in-progress marker');
      for (const r of results) {
        assert.equal(r.status, 201);
        assert.deepEqual(JSON.parse(r.body!.toString()), { order: 1, echo: '{"item":"book"}' });
      }
      const other = await nodes[1].begin('orders|client-1', 'key-42', requestFingerprint('POST', '/orders', Buffer.from('{}')));
      assert.equal(other.state, 'mismatch');
    } finally {
      await upstream.stop();
    }
  });

  it('a released key may run again; an expired in-flight marker cannot be completed', async () => {
    const p = prefix();
    const a = new IdempotencyStore({ redis: await redis(), prefix: p, inflightTtlMs: 1000 });
    const b = new IdempotencyStore({ redis: await redis(), prefix: p, inflightTtlMs: 1000 });
    const r1 = await a.begin('s', 'k', 'fp');
    assert.equal(r1.state, 'acquired');
    assert.equal((await b.begin('s', 'k', 'fp')).state, 'in_progress');
    if (r1.state === 'acquired') assert.equal(await a.release(r1.lease), true);
    const r2 = await b.begin('s', 'k', 'fp');
    assert.equal(r2.state, 'acquired');
    await until('the in-flight marker expires', async () => (await a.begin('s', 'k', 'fp')).state !== 'in_progress');
    // a's begin above re-acquired the key; b's lease is stale now.
    if (r2.state === 'acquired') assert.equal(await b.complete(r2.lease, { status: 200, headers: [], body: null }), false);
  });
});

/** A TCP relay to the real Redis that can be cut and restored: a Redis outage without stopping the shared server. */
class RedisRelay {
  private server: net.Server | null = null;
  private sockets = new Set<net.Socket>();
  port = 0;
  async start(): Promise<this> {
    const server = net.createServer((client) => {
      const upstream = net.connect(REDIS_PORT, REDIS_HOST);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', () => resolve()));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
    return this;
  }
  /** Connections stay open but nothing passes: a hung Redis. */
  freeze(): void {
    for (const sock of this.sockets) sock.pause();
  }
  thaw(): void {
    for (const sock of this.sockets) sock.resume();
  }
  async cut(): Promise<void> {
    const s = this.server;
    this.server = null;
    for (const sock of this.sockets) sock.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

describe('Redis outage: node-local decisions, then catch-up', () => {
  it('health writes made during the outage reach the cluster when Redis returns, and the node learns what it missed', async () => {
    const p = prefix();
    const sizes = new Map([['svc', 4]]);
    const relay = await new RedisRelay().start();
    const a = new InstanceHealth({
      serviceSize: (id) => sizes.get(id) ?? 0,
      redis: { client: await redis(relay.port), subscriber: await redis(relay.port), prefix: p },
    });
    await a.start();
    const b = await node(p, sizes);
    try {
      await relay.cut();
      await until('node a notices the outage', () => !a.sync!.connected);
      // Alone, node a still ejects and drains for itself.
      assert.ok(a.report({ id: '1', serviceId: 'svc' }, 'unreached'));
      assert.equal(a.isEjected('1'), true);
      const d = await a.drain('2');
      assert.equal(d.shared, false);
      assert.equal(a.isDraining('2'), true);
      assert.ok(a.sync!.pendingWrites >= 2);
      // Meanwhile node b, still connected, ejects another instance.
      assert.ok(b.report({ id: '3', serviceId: 'svc' }, 'unreached'));
      assert.equal(b.isEjected('1'), false);
      await relay.start();
      await until('node b learns the ejection made during the outage', () => b.isEjected('1'));
      await until('node b learns the drain made during the outage', () => b.isDraining('2'));
      await until('node a learns what it missed', () => a.isEjected('3'));
      assert.equal(a.sync!.pendingWrites, 0);
    } finally {
      await a.stop();
      await b.stop();
      await relay.cut();
    }
  });

  it('the prober works alone while Redis is unreachable and rejoins the election after', async () => {
    const p = prefix();
    const relay = await new RedisRelay().start();
    const lockA = new RedisLeaderLock(await redis(relay.port), { key: `${p}leader`, nodeId: 'a', ttlMs: 900 });
    const lockB = new RedisLeaderLock(await redis(), { key: `${p}leader`, nodeId: 'b', ttlMs: 900 });
    try {
      await lockB.start();
      await lockA.start();
      assert.equal(lockB.mode, 'leader');
      assert.equal(lockA.mode, 'follower');
      await relay.cut();
      await until('node a works alone', () => lockA.mode === 'solo');
      assert.equal(lockA.isLeader, true);
      assert.equal(lockB.mode, 'leader', 'the connected node keeps the lock');
      await relay.start();
      await until('node a follows again', () => lockA.mode === 'follower');
    } finally {
      await lockA.stop();
      await lockB.stop();
      await relay.cut();
    }
  });

  it('idempotency keys fall back to node-local storage and return to Redis', async () => {
    const p = prefix();
    const relay = await new RedisRelay().start();
    const client = await redis(relay.port);
    const store = new IdempotencyStore({ redis: client, prefix: p, timeoutMs: 1000 });
    try {
      await relay.cut();
      await until('the client notices the outage', () => client.status !== 'ready');
      const r = await store.begin('s', 'k-outage', 'fp');
      assert.ok(r.state === 'acquired' && r.lease.backend === 'local');
      assert.equal((await store.begin('s', 'k-outage', 'fp')).state, 'in_progress', 'duplicates on this node are still caught');
      if (r.state === 'acquired') assert.equal(await store.complete(r.lease, { status: 200, headers: [], body: Buffer.from('x') }), true);
      assert.ok(store.localFallbacks >= 2);
      await relay.start();
      await until('the client reconnects', () => client.status === 'ready');
      const again = await store.begin('s', 'k-after', 'fp');
      assert.ok(again.state === 'acquired' && again.lease.backend === 'redis');
      // A connected Redis that hangs is not bypassed: the claim may have landed there.
      relay.freeze();
      await assert.rejects(store.begin('s', 'k-hung', 'fp'), (e: unknown) => e instanceof DomainError && e.kind === 'unavailable' && e.code === 'IDEMPOTENCY_STORE_UNAVAILABLE');
      relay.thaw();
    } finally {
      await relay.cut();
    }
  });
});

describe('killing one of three instances under traffic', () => {
  it('costs each node at most one failed attempt before the instance is ejected everywhere', async (t) => {
    const { Agent, request } = await import('undici');
    const p = prefix();
    const sizes = new Map([['svc', 3]]);
    const ups = await Promise.all([0, 1, 2].map(() => new Upstream().start()));
    const instances = ups.map((u, i) => ({ id: `i${i}`, serviceId: 'svc', url: `http://127.0.0.1:${u.port}/` }));
    const nodes = [await node(p, sizes, { outlier: { consecutiveFailures: 5 } }), await node(p, sizes, { outlier: { consecutiveFailures: 5 } })];
    // Attempts started after the kill completed and failed (what ejection should bound),
    // and attempts that were already in flight when the instance died (no health check can save those).
    const failed = [0, 0];
    const caught = [0, 0];
    const answered = [0, 0];
    let killed = false;
    let dead = false;

    // A node's request loop: round-robin over the filtered candidates, failing over on errors.
    async function traffic(k: number): Promise<void> {
      const h = nodes[k];
      const agent = new Agent({ keepAliveTimeout: 50 });
      try {
        for (let i = 0; i < 60; i++) {
          if (i === 20 && k === 0 && !killed) {
            killed = true;
            await ups[1].stop();
            dead = true;
          }
          const list = h.filter(instances);
          const start = i % list.length;
          const order = [...list.slice(start), ...list.slice(0, start)];
          for (const inst of order) {
            const afterKill = dead;
            try {
              const res = await request(inst.url, { dispatcher: agent, headersTimeout: 2000 });
              await res.body.dump();
              h.report(inst, outcomeOf(res.statusCode));
              answered[k]++;
              break;
            } catch (err) {
              const code = (err as { code?: string }).code;
              if (afterKill) failed[k]++;
              else caught[k]++;
              h.report(inst, outcomeOf(null, { kind: code === 'ECONNREFUSED' ? 'refused' : 'reset', unreached: code === 'ECONNREFUSED' }), code);
            }
          }
          await sleep(2);
        }
      } finally {
        await agent.close();
      }
    }

    try {
      await Promise.all([traffic(0), traffic(1)]);
      assert.equal(answered[0] + answered[1], 120, 'every request was answered by a live instance');
      assert.ok(failed[0] <= 1 && failed[1] <= 1, `failed attempts per node after the kill: ${failed.join(', ')}`);
      assert.ok(failed[0] + failed[1] + caught[0] + caught[1] >= 1, 'the kill was noticed by at least one attempt');
      await until('ejected on both nodes', () => nodes.every((h) => h.isEjected('i1')));
      t.diagnostic(`failed attempts started after the kill: node a ${failed[0]}, node b ${failed[1]}; in flight at the kill: ${caught[0]}, ${caught[1]}`);
      assert.deepEqual(nodes[1].filter(instances).map((i) => i.id), ['i0', 'i2']);
    } finally {
      for (const h of nodes) await h.stop();
      for (const u of ups) await u.stop();
    }
  });
});

describe('hostile or foreign data in Redis', () => {
  it('malformed messages and hash entries are skipped without crashing a node', async () => {
    const p = prefix();
    const sizes = new Map([['svc', 3]]);
    const r = await redis();
    await r.hset(`${p}ejected`, 'x1', 'not json', 'x2', JSON.stringify({ instanceId: 'x2' }), 'x3', JSON.stringify(null));
    await r.hset(`${p}drain`, 'd1', JSON.stringify({ instanceId: 'd1', since: 'yesterday', until: 'never' }));
    await r.hset(`${p}probe`, 'p1', JSON.stringify([1, 2]));
    const a = await node(p, sizes);
    const b = await node(p, sizes);
    try {
      for (const id of ['x1', 'x2', 'x3', 'd1', 'p1']) assert.equal(a.isAvailable(id), true, id);
      await until('the malformed entries were removed', async () => (await r.hlen(`${p}ejected`)) === 0 && (await r.hlen(`${p}drain`)) === 0);
      const junk = ['', 'null', '42', '{"t":"eject","n":"z"}', '{"t":"eject","n":"z","e":{"instanceId":"q"}}', '{"t":"drain","n":"z","d":null}',
        '{"t":"probe","n":"z","p":{"instanceId":"q","up":"yes"}}', '{"t":"lift","n":"z","id":5}', '{"t":"nope","n":"z"}', '\u0000\u00ff'];
      for (const j of junk) await r.publish(`${p}events`, j);
      // A valid message after the junk still applies: the subscriber survived.
      assert.ok(b.report({ id: 'ok', serviceId: 'svc' }, 'unreached'));
      await until('node a still applies valid messages', () => a.isEjected('ok'));
      assert.equal(a.isAvailable('q'), true);
      // Foreign data under an idempotency key is neither executed over nor replayed.
      const store = new IdempotencyStore({ redis: r, prefix: p });
      const { createHash } = await import('node:crypto');
      const k = p + createHash('sha256').update('s').update('\0').update('k').digest('base64url');
      await r.set(k, JSON.stringify({ s: 'd', f: 'fp', st: 'two hundred' }));
      assert.equal((await store.begin('s', 'k', 'fp')).state, 'in_progress');
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});

describe('leader by PostgreSQL advisory lock', () => {
  it('one session leads; when it dies another takes over, and a clean stop hands over', async () => {
    const { PG_HOST, PG_PORT, PG_USER, adminSql } = await import('./support/env.ts');
    const { default: postgres } = await import('postgres');
    const key = BigInt(1_000_000 + Math.floor(Math.random() * 1_000_000_000));
    const single = () => postgres({ host: PG_HOST, port: PG_PORT, user: PG_USER, database: 'postgres', max: 1, onnotice: () => {} });
    const sqlA = single();
    const sqlB = single();
    const admin = adminSql();
    const a = new PgAdvisoryLeader(sqlA, { lockKey: key, roundMs: 50 });
    const b = new PgAdvisoryLeader(sqlB, { lockKey: key, roundMs: 50 });
    const holder = async () => {
      const rows = await admin<{ pid: number }[]>`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = ${Number(key)} AND objsubid = 1`;
      return rows.map((r) => r.pid);
    };
    try {
      await a.start();
      await b.start();
      assert.equal(a.isLeader, true);
      assert.equal(b.isLeader, false);
      const [pidA] = await holder();
      assert.ok(pidA, 'the lock is held by a session');
      // The leader's session dies (a crashed node, a restarted connection).
      await admin`SELECT pg_terminate_backend(${pidA})`;
      // Another session takes the lock: b's, or a's own reconnected one when its
      // next round comes first (both are a live node leading; the dead session is not).
      await until('a new session holds the lock', async () => {
        const pids = await holder();
        return pids.length === 1 && pids[0] !== pidA;
      });
      await until('exactly one node leads', () => a.isLeader !== b.isLeader);
      // A clean stop of the leader releases at once, and the other takes over.
      const [leader, other] = a.isLeader ? [a, b] : [b, a];
      await leader.stop();
      await until('the other node leads', () => other.isLeader);
      assert.throws(() => new PgAdvisoryLeader(sqlA, { lockKey: 2n ** 64n }), (e: unknown) => e instanceof DomainError && e.field === 'lockKey');
      assert.throws(() => new PgAdvisoryLeader(admin, { lockKey: 1n }), (e: unknown) => e instanceof DomainError && e.field === 'sql');
    } finally {
      await a.stop();
      await b.stop();
      await Promise.all([sqlA.end(), sqlB.end(), admin.end()]);
    }
  });
});
