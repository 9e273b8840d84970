// WebSocket proxying through /api/proxy, on both listeners, against a real `ws`
// upstream: echo, subprotocols, close codes both ways, failover before the
// upgrade, relayed refusals, backpressure with byte counts, bad handshakes, no
// leaked sockets, the platform types with their JWTs, the access plane (refusal
// and revocation of an open socket), and SIGTERM (1001 to the client).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import net from 'node:net';
import { request } from 'undici';
import postgres from 'postgres';
import WebSocket, { WebSocketServer } from 'ws';
import type { IncomingMessage } from 'node:http';
import { freshDatabases, startTestNode, LISTENERS, PG_HOST, PG_PORT, PG_USER, type TestDatabases, type TestNode } from './support/env.ts';
import { insertInstanceResource, registrationBody } from './support/ops.ts';
import { deadPort } from './support/upstream.ts';
import { startWsUpstream, type WsUpstream } from './support/ws-upstream.ts';
import { until } from './support/http.ts';
import { CLI_ARGS } from './support/cli.ts';
import { PlatformSim } from './support/platform-sim.ts';
import { FakeService } from './support/fake-service.ts';
import { buildWorld, OPENAPI, registerService, startAuthzNode, v1, type World } from './support/services-auth.ts';

const D = (service: string) => ({ 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': service });

async function register(node: TestNode, name: string, address: string): Promise<void> {
  const res = await insertInstanceResource(node.db.ops, { service: name, address });
  const r = await request(`${node.origin}/api/registry`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify(registrationBody({ name, address, instanceId: res.id })),
  });
  assert.equal(r.statusCode, 200, await r.body.text());
}

interface Opened {
  ws: WebSocket;
  res: IncomingMessage;
  messages: Array<{ data: Buffer; binary: boolean }>;
  closed: Promise<{ code: number; reason: string }>;
  next(): Promise<{ data: Buffer; binary: boolean }>;
}

/** Opens a client WebSocket to `url`; rejects with the HTTP answer when there is no upgrade. */
function open(url: string, headers: Record<string, string>, protocols: string[] = []): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { headers, perMessageDeflate: false });
    const messages: Opened['messages'] = [];
    const waiting: Array<(m: { data: Buffer; binary: boolean }) => void> = [];
    let read = 0;
    ws.on('message', (data, binary) => {
      const m = { data: data as Buffer, binary };
      messages.push(m);
      waiting.shift()?.(m);
    });
    const closed = new Promise<{ code: number; reason: string }>((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
    let res: IncomingMessage;
    ws.once('upgrade', (r) => (res = r));
    ws.once('open', () => resolve({
      ws, res, messages, closed,
      next: () => (read < messages.length ? Promise.resolve(messages[read++]) : new Promise((r) => waiting.push((m) => { read++; r(m); }))),
    }));
    ws.once('unexpected-response', (_req, r) => {
      let body = '';
      r.on('data', (c) => (body += c));
      r.on('end', () => reject(Object.assign(new Error(`HTTP ${r.statusCode}`), { status: r.statusCode, headers: r.headers, body })));
    });
    ws.on('error', (err) => reject(err));
  });
}

async function refused(p: Promise<Opened>): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  try {
    const o = await p;
    o.ws.terminate();
  } catch (err) {
    const e = err as { status?: number; headers?: Record<string, string>; body?: string };
    if (e.status !== undefined) return { status: e.status, headers: e.headers!, body: e.body! };
    throw err;
  }
  throw new Error('the handshake was accepted');
}

/** One raw handshake over TCP: the status line, headers and body of the answer. */
function rawHandshake(port: number, lines: string[]): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    s.on('data', (d) => (buf += d.toString('latin1')));
    const done = () => {
      const i = buf.indexOf('\r\n\r\n');
      resolve({ status: Number(buf.split(' ')[1]), head: buf.slice(0, i), body: buf.slice(i + 4) });
    };
    s.on('close', done);
    s.on('error', reject);
    s.setTimeout(5000, () => s.destroy());
    s.write(`GET /api/proxy/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n${lines.join('\r\n')}\r\n\r\n`);
  });
}

for (const server of LISTENERS) {
  describe(`WebSocket proxying, discovery (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let up: WsUpstream;
    let up2: WsUpstream;
    let url: (path: string) => string;

    before(async () => {
      dbs = freshDatabases();
      // The shortest idle timeout: a client that vanishes while the proxy holds it paused is found by the idle ping.
      node = await startTestNode(server, dbs, { UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '0', UTILMETA_PROXY_WS_MAX_BUFFER: '1048576', UTILMETA_PROXY_WS_IDLE_TIMEOUT: '8' });
      url = (path) => `${node.origin.replace('http', 'ws')}/api/proxy${path}`;
      up = await startWsUpstream();
      up2 = await startWsUpstream();
      await register(node, 'chat', up.address);
      await register(node, 'gone', `127.0.0.1:${await deadPort()}`);
      // `failover`: a dead instance that is always ranked first (it weighs 100×, and the highest score goes first).
      const dead = `127.0.0.1:${await deadPort()}`;
      await register(node, 'failover', dead);
      await register(node, 'failover', up2.address);
      await node.db.registry`UPDATE utilmeta_instance SET weight = 100 WHERE address = ${dead}`;
      await node.registry.refresh();
    });
    after(async () => {
      await node?.close();
      await up?.close();
      await up2?.close();
      await dbs?.drop();
    });

    it('relays text and binary both ways, with the HTTP request headers and the proxy headers on the 101', async () => {
      const c = await open(url('/echo?x=1'), { ...D('chat'), 'x-request-id': 'ws-req-1', 'x-custom': 'kept', 'x-utilmeta-secret-thing': 'dropped' });
      c.ws.send('héllo');
      const t = await c.next();
      assert.equal(t.binary, false);
      assert.equal(t.data.toString(), 'héllo');
      const bin = Buffer.from([0, 1, 2, 255, 254]);
      c.ws.send(bin);
      const b = await c.next();
      assert.equal(b.binary, true);
      assert.deepEqual(b.data, bin);
      const big = Buffer.alloc(300 * 1024, 9);
      c.ws.send(big);
      assert.deepEqual((await c.next()).data, big);
      assert.equal(c.res.headers['x-request-id'], 'ws-req-1');
      assert.equal(c.res.headers['x-utilmeta-proxy-destination-base-url'], `http://${up.address}/api`);
      const hs = up.handshakes.at(-1)!;
      assert.equal(hs.url, '/api/echo?x=1');
      assert.equal(hs.headers.host, up.address, 'the upstream gets its own Host');
      assert.equal(hs.headers['x-custom'], 'kept');
      assert.equal(hs.headers['x-forwarded-for'], '127.0.0.1');
      assert.equal(hs.headers['x-utilmeta-proxy-type'], undefined);
      assert.equal(hs.headers['x-utilmeta-secret-thing'], undefined);
      assert.equal(hs.headers['x-request-id'], 'ws-req-1');
      c.ws.close(1000, 'done');
      assert.deepEqual(await c.closed, { code: 1000, reason: 'done' });
    });

    it('negotiates the subprotocol the upstream chooses', async () => {
      const c = await open(url('/p'), D('chat'), ['first', 'second']);
      assert.equal(c.ws.protocol, 'second', 'the upstream picks the last offer; the proxy answers with its choice');
      assert.equal(up.handshakes.at(-1)!.protocol, 'second');
      assert.deepEqual(up.handshakes.at(-1)!.headers['sec-websocket-protocol']?.split(/\s*,\s*/), ['first', 'second'], 'every offer reaches the upstream');
      c.ws.close();
      await c.closed;
      const none = await open(url('/p'), D('chat'));
      assert.equal(none.ws.protocol, '');
      none.ws.close();
      await none.closed;
    });

    it('relays the client\'s close code and reason to the upstream', async () => {
      const c = await open(url('/c'), D('chat'));
      const n = up.closes.length;
      c.ws.close(4001, 'client done');
      const got = await c.closed;
      assert.equal(got.code, 4001, 'the upstream echoed the close code back through the proxy');
      await until('the upstream close', () => up.closes.length > n);
      assert.deepEqual(up.closes[n], { code: 4001, reason: 'client done' });
    });

    it('relays the upstream\'s close code and reason to the client; a dropped upstream is 1011', async () => {
      const c = await open(url('/c'), D('chat'));
      c.ws.send('close:4002:upstream says bye');
      assert.deepEqual(await c.closed, { code: 4002, reason: 'upstream says bye' });
      const d = await open(url('/c'), D('chat'));
      d.ws.send('bye'); // the upstream drops the TCP connection without a close frame
      assert.equal((await d.closed).code, 1011);
      const e = await open(url('/c'), D('chat'));
      const n = up.closes.length;
      e.ws.terminate(); // the client vanishes: the upstream gets 1001
      await until('the upstream close', () => up.closes.length > n);
      assert.equal(up.closes[n].code, 1001);
    });

    it('a message over WS_MAX_MESSAGE ends the session with 1009, either way', async () => {
      const c = await open(url('/big'), D('chat'));
      const n = up.closes.length;
      c.ws.send(Buffer.alloc(1024 * 1024 + 1));
      const closed = await c.closed;
      // This uWS build drops such a client without a close frame.
      assert.equal(closed.code, server === 'uws' ? 1006 : 1009);
      await until('the upstream close', () => up.closes.length > n);
      assert.equal(up.closes[n].code, 1001, 'the upstream learns the client went away');
      const d = await open(url('/big'), D('chat'));
      d.ws.send(Buffer.alloc(600 * 1024)); // within the limit: echoed
      assert.equal((await d.next()).data.length, 600 * 1024);
      up.sendAll(Buffer.alloc(1024 * 1024 + 1)); // the upstream sends one over the limit
      assert.deepEqual(await d.closed, { code: 1009, reason: 'upstream message too big' });
    });

    it('an upstream that answers first is relayed (messages are not lost before the client is accepted)', async () => {
      const c = await open(url('/greet'), D('chat'));
      assert.equal((await c.next()).data.toString(), 'hello');
      c.ws.close();
      await c.closed;
    });

    it('an unreachable upstream is a 502 JSON error before any upgrade', async () => {
      const r = await refused(open(url('/c'), D('gone')));
      assert.equal(r.status, 502);
      assert.equal(r.headers['content-type'], 'application/json');
      const body = JSON.parse(r.body);
      assert.equal(body.state, 'upstream_refused');
      assert.match(body.error, /refused the connection/);
    });

    it('fails over to the next instance when the connect fails', async () => {
      const c = await open(url('/f'), D('failover'));
      assert.equal(c.res.headers['x-utilmeta-proxy-retries'], '1');
      assert.equal(c.res.headers['x-utilmeta-proxy-destination-base-url'], `http://${up2.address}/api`);
      c.ws.send('via failover');
      assert.equal((await c.next()).data.toString(), 'via failover');
      c.ws.close();
      await c.closed;
    });

    it('an upstream that refuses the upgrade has its status and body relayed', async () => {
      const r = await refused(open(url('/refuse'), D('chat')));
      assert.equal(r.status, 403);
      assert.deepEqual(JSON.parse(r.body), { error: 'refused by the upstream' });
      assert.equal(r.headers['x-upstream'], 'yes');
      assert.ok(r.headers['x-utilmeta-proxy-destination-base-url']);
    });

    it('the unknown service, the forward type and a missing service name are 4xx JSON before any upgrade', async () => {
      assert.equal((await refused(open(url('/c'), D('nope')))).status, 404);
      const fwd = await refused(open(url('/c'), { 'x-utilmeta-proxy-type': 'forward', 'x-utilmeta-node-id': 'n1' }));
      assert.equal(fwd.status, 400);
      assert.match(JSON.parse(fwd.body).error, /WebSocket/);
      assert.equal((await refused(open(url('/c'), { 'x-utilmeta-proxy-type': 'discovery' }))).status, 400);
    });

    it('bad handshakes get 400, or 426 with Sec-WebSocket-Version: 13, never 101 or 5xx', async () => {
      const base = ['X-UtilMeta-Proxy-Type: discovery', 'X-UtilMeta-Service-Name: chat', 'Upgrade: websocket', 'Connection: Upgrade'];
      const key = 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==';
      const cases: Array<[string[], number, RegExp]> = [
        [[...base, 'Sec-WebSocket-Key: abc', 'Sec-WebSocket-Version: 13'], 400, /base64 of 16 bytes/],
        [[...base, 'Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!!', 'Sec-WebSocket-Version: 13'], 400, /base64 of 16 bytes/],
        [[...base, 'Sec-WebSocket-Version: 13'], 400, /missing Sec-WebSocket-Key/],
        [[...base, key, 'Sec-WebSocket-Version: 8'], 426, /version 13/],
        [[...base, key], 426, /version 13/],
        [[...base, key, 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Protocol: a b'], 400, /Sec-WebSocket-Protocol/],
        [['X-UtilMeta-Proxy-Type: discovery', 'X-UtilMeta-Service-Name: chat', 'Upgrade: websocket', key, 'Sec-WebSocket-Version: 13'], 400, /Connection: Upgrade/],
      ];
      for (const [lines, status, message] of cases) {
        const r = await rawHandshake(node.listener.port, lines);
        assert.equal(r.status, status, `${lines.join(' | ')}: ${r.head}`);
        assert.match(JSON.parse(r.body).error, message);
        if (status === 426) assert.match(r.head, /sec-websocket-version: 13/i);
      }
    });

    it('a slow client does not make the proxy buffer without bound (upstream → client backpressure)', async () => {
      up.flooded = 0;
      const c = await open(url('/flood?mb=64'), D('chat'));
      // The client stops reading: its kernel buffers fill, then the proxy's, then the proxy pauses the upstream.
      c.ws.pause();
      let last = -1;
      await until('the flood to stall', async () => {
        await new Promise((r) => setTimeout(r, 300));
        const stalled = up.flooded === last;
        last = up.flooded;
        return stalled;
      });
      const stalledAt = up.flooded;
      const received = c.messages.reduce((n, m) => n + m.data.length, 0);
      console.log(`# ${server}: upstream stalled after ${(stalledAt / 1048576).toFixed(1)} MiB of 64 MiB with the client paused (client had read ${received} bytes)`);
      assert.ok(stalledAt < 40 * 1024 * 1024, `the upstream could push ${stalledAt} bytes into a paused client`);
      c.ws.resume();
      await until('every flooded byte at the client', () => c.messages.reduce((n, m) => n + m.data.length, 0) === 64 * 1024 * 1024, 30_000);
      c.ws.close();
      await c.closed;
    });

    it('a slow upstream: node:http stops reading the client, uWS closes with 1013 past WS_MAX_BUFFER', async () => {
      const c = await open(url('/deaf'), D('chat'));
      const chunk = Buffer.alloc(64 * 1024, 1);
      for (let i = 0; i < 320; i++) c.ws.send(chunk); // 20 MiB towards an upstream that reads nothing
      if (server === 'uws') {
        // This uWS build cannot stop reading a client: past WS_MAX_BUFFER (1 MiB here) the session ends.
        const closed = await c.closed;
        assert.equal(closed.code, 1013);
        assert.equal(closed.reason, 'upstream too slow');
        // The proxy ends its upstream side too (after the close grace, the deaf upstream never answering).
        await until('the proxy to drop the upstream side', () => node.proxy.webSockets.size === 0, 10_000);
        for (const d of up.deaf) d.terminate();
        return;
      }
      let last = -1;
      await until('the client to stall', async () => {
        await new Promise((r) => setTimeout(r, 300));
        const stalled = c.ws.bufferedAmount === last;
        last = c.ws.bufferedAmount;
        return stalled;
      });
      console.log(`# ${server}: the client still holds ${(c.ws.bufferedAmount / 1048576).toFixed(1)} MiB of 20 MiB; the proxy stopped reading it`);
      assert.ok(c.ws.bufferedAmount > 4 * 1024 * 1024, `the proxy kept reading the client: ${c.ws.bufferedAmount} bytes left at the client`);
      assert.equal(c.ws.readyState, WebSocket.OPEN, 'the session stays open');
      c.ws.terminate();
      await c.closed;
      await until('the proxy to notice the paused client is gone and drop the upstream side', () => node.proxy.webSockets.size === 0, 20_000);
      for (const d of up.deaf) d.terminate();
    });

    it('idle timeouts: a client that stops answering pings and an upstream that does are each dropped, and the other side told', async () => {
      // WS_IDLE_TIMEOUT is 8 s in this suite; uWS checks on a 4 s tick.
      const silentClient = await open(url('/idle-a'), D('chat'));
      const n = up.closes.length;
      silentClient.ws.pause(); // reads nothing, so never answers the proxy's pings
      const deafUpstream = await open(url('/deaf'), D('chat')); // this client answers pings; its upstream never does
      const upstreamGone = await deafUpstream.closed;
      assert.deepEqual(upstreamGone, { code: 1011, reason: 'upstream connection lost' });
      await until('the silent client dropped and its upstream told', () => up.closes.length > n, 20_000);
      assert.equal(up.closes[n].code, 1001);
      const idle = await until('the idle record', () => node.logs.lines.find((l) => l.msg === 'proxied' && (l.websocket as { closedBy?: string } | undefined)?.closedBy === 'idle'));
      assert.equal(idle.status, 101);
      silentClient.ws.terminate();
      for (const d of up.deaf) d.terminate();
    });

    it('negotiates no extension: an offered permessage-deflate is not accepted', async () => {
      const ws = new WebSocket(url('/ext'), { headers: D('chat'), perMessageDeflate: true });
      const opened = new Promise((r) => ws.once('open', r)); // emitted in the same tick as 'upgrade'
      const res = await new Promise<IncomingMessage>((resolve, reject) => {
        ws.once('upgrade', resolve);
        ws.once('error', reject);
      });
      assert.equal(res.headers['sec-websocket-extensions'], undefined);
      assert.equal(up.handshakes.at(-1)!.headers['sec-websocket-extensions'], undefined, 'nothing offered upstream either');
      await opened;
      ws.close();
      await new Promise((r) => ws.once('close', r));
    });

    it('leaves no socket behind: every session closed on both sides, nothing in flight', async () => {
      await until('no open WebSocket at the proxy', () => node.listener.webSockets === 0 && node.proxy.webSockets.size === 0 && node.listener.inFlight === 0);
      await until('no open socket at the upstreams', () => up.open === 0 && up2.open === 0);
    });

    it('logs one record per session and counts sessions in the metrics', async () => {
      const c = await open(url('/log'), { ...D('chat'), 'x-request-id': 'ws-log-1' });
      assert.equal((await node.metrics.text()).match(/utilmeta_proxy_websocket_sessions_open (\d+)/)?.[1], '1');
      c.ws.send('a');
      await c.next();
      c.ws.close(1000);
      await c.closed;
      const rec = await until('the session record', () => node.logs.lines.find((l) => l.msg === 'proxied' && l.requestId === 'ws-log-1'));
      assert.equal(rec.status, 101);
      assert.deepEqual(rec.websocket, { closedBy: 'client', clientCode: 1000, upstreamCode: 1000, messagesIn: 1, messagesOut: 1, bytesIn: 1, bytesOut: 1 });
      const text = await node.metrics.text();
      assert.match(text, /utilmeta_proxy_websocket_sessions_closed_total\{type="discovery",reason="client"\} [1-9]/);
      assert.match(text, /utilmeta_proxy_websocket_sessions_closed_total\{type="discovery",reason="upstream"\} [1-9]/);
    });

    it('once a shutdown has closed the sessions, a handshake on a connection still open is a 503', async () => {
      node.proxy.webSockets.closeAll(1001, 'server shutting down', 'shutdown');
      const r = await refused(open(url('/late'), D('chat')));
      assert.equal(r.status, 503);
      assert.match(JSON.parse(r.body).error, /shutting down/);
    });
  });
}

for (const server of LISTENERS) {
  describe(`WebSocket and the access plane (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let up: WsUpstream;
    let w: World;
    let sid: number;
    let url: string;

    before(async () => {
      dbs = freshDatabases();
      node = await startAuthzNode(server, dbs, { UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '0' });
      up = await startWsUpstream();
      w = await buildWorld(node);
      sid = (await registerService(node, 'orders', up.address, { resources: { openapi: OPENAPI } })).serviceId;
      let r = await v1(node, w.boot.token, 'POST', `/services/${sid}/auth`, { authObjectType: 'USER', authObjectId: Number(w.users.alice.id), permissions: ['VIEW'] });
      assert.equal(r.status, 200, r.text);
      r = await v1(node, w.boot.token, 'PATCH', `/services/${sid}/auth/enabled?enabled=true`);
      assert.equal(r.status, 200, r.text);
      url = `${node.origin.replace('http', 'ws')}/api/proxy/stream`;
    });
    after(async () => {
      await node?.close();
      await up?.close();
      await dbs?.drop();
    });

    it('an ENFORCE service refuses a handshake without a credential or a permission, before any upgrade', async () => {
      const n = up.handshakes.length;
      const anon = await refused(open(url, D('orders')));
      assert.equal(anon.status, 401);
      const erin = await refused(open(url, { ...D('orders'), authorization: `Bearer ${w.users.erin.token}` }));
      assert.equal(erin.status, 403);
      assert.equal(JSON.parse(erin.body).state, 'permission_denied');
      assert.equal(up.handshakes.length, n, 'nothing reached the upstream');
    });

    it('removing the permission closes an open socket with 1008 on both sides', async () => {
      const c = await open(url, { ...D('orders'), authorization: `Bearer ${w.users.alice.token}` });
      c.ws.send('allowed');
      assert.equal((await c.next()).data.toString(), 'allowed');
      const hs = up.handshakes.at(-1)!;
      assert.equal(hs.headers.authorization, undefined, 'the umt_ token never reaches the upstream');
      assert.equal(hs.headers['x-utilmeta-caller-type'], 'user', 'the caller identity headers reach the upstream');
      const n = up.closes.length;
      const authId = (await node.db.registry<{ id: string }[]>`SELECT id::text FROM authz_service_auth WHERE user_id = ${w.users.alice.id}`)[0]!.id;
      const d = await v1(node, w.boot.token, 'DELETE', `/services/auth/${authId}`);
      assert.equal(d.status, 200, d.text);
      const closed = await c.closed;
      assert.equal(closed.code, 1008);
      assert.equal(closed.reason, 'authorization ended');
      await until('the upstream close', () => up.closes.length > n);
      assert.equal(up.closes[n].code, 1008);
      const rec = await until('the session record', () => node.logs.lines.find((l) => l.msg === 'proxied' && (l.websocket as { closedBy?: string } | undefined)?.closedBy === 'revoked'));
      assert.equal(rec.status, 101);
      assert.equal((await refused(open(url, { ...D('orders'), authorization: `Bearer ${w.users.alice.token}` }))).status, 403, 'a new handshake is refused');
    });
  });
}

for (const server of LISTENERS) {
  describe(`WebSocket in the platform types (${server} listener)`, () => {
    let sim: PlatformSim;
    let dbs: TestDatabases;
    let node: TestNode;
    let svc: FakeService;
    let serviceNode: string;
    let wss: WebSocketServer;
    const seen: string[] = [];

    before(async () => {
      sim = await PlatformSim.start({ clusterId: 'cluster-1', callbackMode: 'direct' });
      dbs = freshDatabases();
      const port = await deadPort();
      const baseUrl = `http://127.0.0.1:${port}/api`;
      sim.proxyBaseUrl = baseUrl;
      node = await startTestNode(server, dbs, {
        UTILMETA_PROXY_BIND_PORT: String(port), UTILMETA_PROXY_BASE_URL: baseUrl, UTILMETA_PROXY_SUPERVISOR_BASE_URL: sim.baseUrl,
        UTILMETA_PROXY_SUPERVISOR_CLUSTER_ID: 'cluster-1', UTILMETA_PROXY_SUPERVISOR_CLUSTER_KEY: sim.clusterPublicKey, UTILMETA_PROXY_LOAD_TIMEOUT: '1',
        UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '0',
      }, { platform: { clientOptions: { retries: 1, timeoutMs: 5000, retryTiming: { minTimeoutMs: 20, maxTimeoutMs: 50 } }, retry: { minTimeout: 50, maxTimeout: 200 } } });
      await until('the self-connect', () => node.platform.state().connected);
      svc = await FakeService.start({ name: 'orders', proxyBaseUrl: baseUrl, opsDatabase: dbs.opsName });
      wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
      svc.httpServer.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => {
        seen.push(req.url ?? '');
        ws.on('message', (d, b) => ws.send(d, { binary: b }));
      }));
      const r = await svc.register();
      assert.equal(r.status, 200, r.text);
      serviceNode = r.json.node_id;
      assert.ok(serviceNode);
    });
    after(async () => {
      wss?.close();
      await svc?.close();
      await node?.close();
      await sim?.close();
      await dbs?.drop();
    });

    it('supervisor and operations need a valid platform JWT, then reach base_url and ops_api', async () => {
      const url = `${node.origin.replace('http', 'ws')}/api/proxy/live`;
      const none = await refused(open(url, { 'x-utilmeta-proxy-type': 'supervisor', 'x-utilmeta-node-id': serviceNode }));
      assert.equal(none.status, 407);
      assert.equal(JSON.parse(none.body).state, 'token_required');
      const bad = await refused(open(url, { 'x-utilmeta-proxy-type': 'supervisor', 'x-utilmeta-node-id': serviceNode, authorization: 'Bearer not.a.jwt' }));
      assert.equal(bad.status, 400);
      assert.equal(seen.length, 0, 'nothing reached the service');

      const s = await open(url, { 'x-utilmeta-proxy-type': 'supervisor', 'x-utilmeta-node-id': serviceNode, authorization: `Bearer ${await sim.nodeToken(serviceNode)}` });
      s.ws.send('to base_url');
      assert.equal((await s.next()).data.toString(), 'to base_url');
      assert.equal(seen.at(-1), '/api/live');
      s.ws.close();
      await s.closed;

      const o = await open(url, { 'x-utilmeta-proxy-type': 'operations', 'x-utilmeta-node-id': serviceNode, authorization: `Bearer ${await sim.nodeToken(serviceNode)}` });
      o.ws.send(Buffer.from([1, 2]));
      assert.deepEqual((await o.next()).data, Buffer.from([1, 2]));
      assert.equal(seen.at(-1), '/api/ops/live');
      o.ws.close();
      await o.closed;
    });
  });
}

for (const server of LISTENERS) {
  describe(`WebSocket and SIGTERM (${server} listener)`, () => {
    let dbs: TestDatabases;
    let up: WsUpstream;
    before(async () => {
      dbs = freshDatabases();
      up = await startWsUpstream();
    });
    after(async () => {
      await up?.close();
      await dbs?.drop();
    });

    it('SIGTERM closes open WebSockets with 1001 on both sides, and the node exits 0', async () => {
      const child = spawn(process.execPath, [...CLI_ARGS, 'start'], {
        env: {
          PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp',
          UTILMETA_PROXY_SERVER: server, UTILMETA_PROXY_BIND_HOST: '127.0.0.1', UTILMETA_PROXY_BIND_PORT: '0',
          UTILMETA_PROXY_BASE_URL: 'http://127.0.0.1:8888/api', UTILMETA_PROXY_LOG_LEVEL: 'info',
          UTILMETA_PROXY_DB_HOST: PG_HOST, UTILMETA_PROXY_DB_PORT: String(PG_PORT), UTILMETA_PROXY_DB_USER: PG_USER,
          UTILMETA_PROXY_DB_NAME: dbs.registryName, UTILMETA_PROXY_OPS_DB_NAME: dbs.opsName, UTILMETA_PROXY_DB_POOL_SIZE: '2',
          UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '0',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const lines: Array<Record<string, unknown>> = [];
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      const origin = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout }).on('line', (line) => {
          try {
            const j = JSON.parse(line) as Record<string, unknown>;
            lines.push(j);
            if (j.msg === 'utilmeta-proxy listening') resolve(String(j.address));
          } catch {
            /* not JSON */
          }
        });
        child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
      });
      try {
        const ops = postgres({ host: PG_HOST, port: PG_PORT, user: PG_USER, database: dbs.opsName, max: 1, onnotice: () => {} });
        const res = await insertInstanceResource(ops, { service: 'chat', address: up.address });
        await ops.end();
        const reg = await request(`${origin}/api/registry`, {
          method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify(registrationBody({ name: 'chat', address: up.address, instanceId: res.id })),
        });
        assert.equal(reg.statusCode, 200, await reg.body.text());
        const url = `${origin.replace('http', 'ws')}/api/proxy/live`;
        const a = await open(url, D('chat'));
        const b = await open(url, D('chat'));
        a.ws.send('ping');
        assert.equal((await a.next()).data.toString(), 'ping');
        const n = up.closes.length;
        child.kill('SIGTERM');
        for (const c of [a, b]) {
          const closed = await c.closed;
          assert.equal(closed.code, 1001);
          assert.equal(closed.reason, 'server shutting down');
        }
        assert.equal(await exited, 0, stderr);
        await until('the upstream closes', () => up.closes.length >= n + 2);
        assert.deepEqual(up.closes.slice(n).map((c) => c.code), [1001, 1001]);
        const draining = lines.find((l) => l.msg === 'draining: no new connections; waiting for requests in flight');
        assert.equal(draining?.webSockets, 2);
        assert.equal(lines.find((l) => l.msg === 'stopped')?.drained, true);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    });
  });
}
