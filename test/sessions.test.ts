// Long-lived exchanges: the session index (keys, re-check, timer wheel, idle
// connections) and, end to end on both listeners, a streaming response cut when
// its permission is removed, and an idle keep-alive connection whose principal
// lost access (revoked token, deleted authorization, a grant's end): node:http
// closes it at once, uWS (no handle on an idle connection) at its next request,
// which is refused with Connection: close. Other users' connections stay open.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import aws4 from 'aws4';
import { Client, request } from 'undici';
import { CLI_CALLER } from '../src/access/credentials.ts';
import { SessionIndex, keysOfEffect } from '../src/access/sessions.ts';
import { buildDecisionState } from '../src/access/decision-state.ts';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { startUpstream, type TestUpstream } from './support/upstream.ts';
import { call } from './support/http.ts';
import { buildWorld, OPENAPI, registerService, startAuthzNode, v1, type World } from './support/services-auth.ts';
import { insertInstanceResource, registrationBody } from './support/ops.ts';
import { seedWorld, settle, v1 as v1Grants, type World as GrantWorld } from './support/grants-fixture.ts';
import { generateMasterKey } from '../src/access/crypto.ts';

const STATE = buildDecisionState({});

/**
 * How long a test waits for an idle connection to close: below the earliest
 * close for idleness (node:http's 5 s keep-alive timeout, which undici turns
 * into 4 s on its side), so a close seen in time is the proxy's doing.
 */
const IDLE_BOUND = 3500;

/** One keep-alive connection (undici's Client keeps a single socket) that counts its connects and disconnects. */
class Conn {
  readonly client: Client;
  connects = 0;
  disconnects = 0;
  private waiters: Array<() => void> = [];

  constructor(origin: string) {
    this.client = new Client(origin, { pipelining: 1, keepAliveTimeout: 30_000, keepAliveMaxTimeout: 30_000 });
    this.client.on('connect', () => void this.connects++);
    this.client.on('disconnect', () => {
      this.disconnects++;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  async get(headers: Record<string, string>, path = '/api/proxy/items') {
    const r = await this.client.request({ path, method: 'GET', headers });
    const text = await r.body.text();
    return { status: r.statusCode, headers: r.headers, json: r.statusCode >= 400 ? JSON.parse(text) : null };
  }

  /** Resolves true at the next disconnect, false when `ms` pass first (a bound for a failing test, not a measure). */
  nextDisconnect(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      this.waiters.push(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('session index (unit)', () => {
  it('maps tightening effects to keys; credential revocations are unconditional', () => {
    assert.deepEqual(keysOfEffect('key.status', { ak: 'AK1', status: 'Inactive' }), { keys: ['ak:AK1'], unconditional: true });
    assert.deepEqual(keysOfEffect('token.revoke', { token_ids: [1, '2'] }), { keys: ['token:1', 'token:2'], unconditional: true });
    assert.deepEqual(keysOfEffect('auth.delete', { auth_id: '3', service_id: '12', mask: 0 }), { keys: ['service:12'], unconditional: false });
    assert.deepEqual(keysOfEffect('role.subject.remove', { user_id: 5, role_id: 2 }), { keys: ['user:5'], unconditional: false });
    assert.deepEqual(keysOfEffect('grant.expire', { grant_id: 9 }), { keys: ['grant:9'], unconditional: false });
    assert.deepEqual(keysOfEffect('role.update', { role_id: 3, child_ids: [] }), { keys: ['*'], unconditional: false }, 'a role change re-checks every session');
    assert.deepEqual(keysOfEffect('nothing.here', {}), { keys: [], unconditional: false });
  });

  it('closes on a matching effect only when the re-check fails, and unregisters', () => {
    const idx = new SessionIndex();
    const closed: string[] = [];
    let allowed = true;
    idx.register({ keys: ['service:1', 'user:7'], deadline: null, recheck: () => allowed, close: () => closed.push('a') });
    const endB = idx.register({ keys: ['service:1', 'token:4'], deadline: null, recheck: () => true, close: () => closed.push('b') });
    assert.equal(idx.onEffect('auth.delete', { service_id: '1' }, STATE), 0, 'both still allowed');
    allowed = false;
    assert.equal(idx.onEffect('auth.delete', { service_id: '2' }, STATE), 0, 'another service');
    assert.equal(idx.onEffect('auth.delete', { service_id: '1' }, STATE), 1);
    assert.deepEqual(closed, ['a']);
    assert.equal(idx.onEffect('token.revoke', { token_ids: ['4'] }, STATE), 1, 'a revoked token closes without re-check');
    assert.deepEqual(closed, ['a', 'b']);
    endB.end();
    assert.equal(idx.size, 0);
    assert.equal(idx.count, 0);
  });

  it('an idle connection keeps its registration: an effect closes the connection, release() drops it', () => {
    const idx = new SessionIndex();
    const events: string[] = [];
    const conn = { close: () => events.push('conn closed') };
    const s = idx.register({ keys: ['token:1'], deadline: null, recheck: () => true, close: () => events.push('exchange cut') });
    s.idle(conn);
    assert.equal(idx.count, 1, 'still registered while the connection is idle');
    assert.equal(idx.onEffect('token.revoke', { token_ids: ['1'] }, STATE), 1);
    assert.deepEqual(events, ['conn closed'], 'the connection is closed, not the ended exchange');
    assert.equal(idx.count, 0);
    const t = idx.register({ keys: ['token:2'], deadline: null, recheck: () => true, close: () => events.push('cut') });
    t.idle(conn);
    t.release(); // the next request on the connection, or its close
    assert.equal(idx.count, 0);
    assert.equal(idx.onEffect('token.revoke', { token_ids: ['2'] }, STATE), 0, 'nothing left to close');
    assert.deepEqual(events, ['conn closed']);
  });

  it('closes a session at its deadline (timer wheel)', async () => {
    let now = 1_000_000;
    const keepAlive = setTimeout(() => {}, 10_000); // the wheel's own timer is unref'd
    const idx = new SessionIndex(() => now);
    const done = new Promise<string>((resolve) => idx.register({ keys: ['user:1'], deadline: now + 150, recheck: () => true, close: resolve }));
    now += 1000; // the clock has passed the deadline before the timer fires
    assert.equal(await done, 'authorization ended: deadline');
    assert.equal(idx.size, 0);
    idx.stop();
    clearTimeout(keepAlive);
  });
});

for (const server of LISTENERS) {
  describe(`a stream is cut when its permission is removed (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let up: TestUpstream;
    let w: World;
    let sid: number;

    before(async () => {
      dbs = freshDatabases();
      node = await startAuthzNode(server, dbs);
      up = await startUpstream((req, res) => {
        if (!req.url?.startsWith('/api/stream')) return void res.end('ok');
        // 200 chunks, 50 ms apart: 10 s unless something cuts it.
        res.writeHead(200, { 'content-type': 'text/plain' });
        let n = 0;
        const t = setInterval(() => {
          if (res.destroyed) return clearInterval(t);
          res.write(`chunk ${n++}\n`);
          if (n === 200) {
            clearInterval(t);
            res.end('END\n');
          }
        }, 50);
        res.on('close', () => clearInterval(t));
      });
      w = await buildWorld(node);
      sid = (await registerService(node, 'orders', up.address, { resources: { openapi: OPENAPI } })).serviceId;
      let r = await v1(node, w.boot.token, 'POST', `/services/${sid}/auth`, { authObjectType: 'USER', authObjectId: Number(w.users.alice.id), permissions: ['VIEW'] });
      assert.equal(r.status, 200, r.text);
      r = await v1(node, w.boot.token, 'PATCH', `/services/${sid}/auth/enabled?enabled=true`);
      assert.equal(r.status, 200, r.text);
    });
    after(async () => {
      await node?.close();
      await up?.close();
      await dbs?.drop();
    });

    const proxied = (token: string, service = 'orders') => ({ 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': service, authorization: `Bearer ${token}` });

    it('an idle keep-alive connection whose token is revoked is closed; another user\'s idle connection stays open and keeps working', async () => {
      const addErin = await v1(node, w.boot.token, 'POST', `/services/${sid}/auth`, { authObjectType: 'USER', authObjectId: Number(w.users.erin.id), permissions: ['VIEW'] });
      assert.equal(addErin.status, 200, addErin.text);
      const t = await node.access.credentials.createPersonalToken(CLI_CALLER, Number(w.users.alice.id), { name: 'keep-alive', expiresInDays: 1 });
      const a = new Conn(node.origin);
      const b = new Conn(node.origin);
      try {
        assert.equal((await a.get(proxied(t.token))).status, 200);
        assert.equal((await b.get(proxied(w.users.erin.token))).status, 200);
        const closed = a.nextDisconnect(IDLE_BOUND);
        const revokedAt = performance.now();
        await node.access.credentials.revokeToken(t.token);
        if (server === 'node') {
          // node:http: the idle socket is destroyed; the client sees the close without sending anything.
          assert.ok(await closed, 'the idle connection of the revoked token was closed');
          console.log(`# ${server}: idle connection closed ${(performance.now() - revokedAt).toFixed(1)} ms after the revoke committed`);
          assert.equal(a.disconnects, 1);
          const r = await a.get(proxied(t.token));
          assert.equal(r.status, 401);
          assert.equal(r.json.state, 'token_revoked');
          assert.equal(a.connects, 2, 'the refused request came on a new connection');
        } else {
          // uWS: the idle connection cannot be reached; its next request is refused and closes it.
          assert.equal(a.disconnects, 0);
          const r = await a.get(proxied(t.token));
          assert.equal(r.status, 401);
          assert.equal(r.json.state, 'token_revoked');
          assert.equal(r.headers.connection, 'close');
          assert.ok(await closed, 'the connection closed after the refusal');
          assert.equal(a.connects, 1, 'the refusal came on the idle connection');
        }
        // The other user's idle connection was not touched by the revocation.
        assert.equal(b.disconnects, 0);
        assert.equal((await b.get(proxied(w.users.erin.token))).status, 200);
        assert.equal(b.connects, 1, 'the other connection stayed open');
      } finally {
        await a.close();
        await b.close();
      }
    });

    it('an idle keep-alive connection of a user whose authorization is deleted is closed; one whose principal did not change is untouched', async () => {
      const [erinAuth] = await node.db.registry<{ id: string }[]>`SELECT id::text FROM authz_service_auth WHERE user_id = ${w.users.erin.id}`;
      assert.ok(erinAuth, 'erin holds VIEW from the previous test');
      const e = new Conn(node.origin);
      const a = new Conn(node.origin);
      try {
        assert.equal((await e.get(proxied(w.users.erin.token))).status, 200);
        assert.equal((await a.get(proxied(w.users.alice.token))).status, 200);
        const closed = e.nextDisconnect(IDLE_BOUND);
        const del = await v1(node, w.boot.token, 'DELETE', `/services/auth/${erinAuth.id}`);
        assert.equal(del.status, 200, del.text);
        if (server === 'node') {
          assert.ok(await closed, 'the idle connection of the user whose authorization ended was closed');
          const r = await e.get(proxied(w.users.erin.token));
          assert.equal(r.status, 403);
          assert.equal(r.json.state, 'permission_denied');
          assert.equal(e.connects, 2);
        } else {
          const r = await e.get(proxied(w.users.erin.token));
          assert.equal(r.status, 403);
          assert.equal(r.json.state, 'permission_denied');
          assert.equal(r.headers.connection, 'close');
          assert.ok(await closed, 'the connection closed after the refusal');
          assert.equal(e.connects, 1);
        }
        // alice's idle connection was re-checked against the same change and kept.
        assert.equal(a.disconnects, 0);
        assert.equal((await a.get(proxied(w.users.alice.token))).status, 200);
        assert.equal(a.connects, 1);
      } finally {
        await e.close();
        await a.close();
      }
    });

    it('idle connections are registered once each, replaced by their next request, and dropped when they close (no leak); authorization OFF registers nothing', async () => {
      const idx = node.access.sessions;
      await waitFor(() => idx.count === 0, 'no session left from the previous tests');
      const plain = await startUpstream();
      await registerService(node, 'plain', plain.address);
      const conns = [new Conn(node.origin), new Conn(node.origin), new Conn(node.origin)];
      try {
        for (let round = 0; round < 20; round++) {
          const rs = await Promise.all(conns.map((c) => c.get(proxied(w.users.alice.token))));
          for (const r of rs) assert.equal(r.status, 200);
          // node:http: one idle registration per open connection; uWS cannot watch idle connections, so none.
          assert.equal(idx.count, server === 'node' ? conns.length : 0, `round ${round}`);
        }
        for (const c of conns) assert.equal(c.connects, 1);
        // A request to a service with authorization OFF replaces the registration and makes none.
        assert.equal((await conns[0]!.get(proxied(w.users.alice.token, 'plain'))).status, 200);
        assert.equal(idx.count, server === 'node' ? conns.length - 1 : 0);
      } finally {
        for (const c of conns) await c.close();
        await plain.close();
      }
      await waitFor(() => idx.count === 0, 'every registration is dropped once the connections closed');
    });

    it('a stream allowed through a child role is cut when the role stops inheriting it (a change applied by re-reading rows)', async () => {
      // bob is a subject of `team`, which inherits `sub`; `sub` holds VIEW.
      const add = await v1(node, w.boot.token, 'POST', `/services/${sid}/auth`, { authObjectType: 'GROUP', authObjectId: Number(w.roles.sub), permissions: ['VIEW'] });
      assert.equal(add.status, 200, add.text);
      const r = await request(`${node.origin}/api/proxy/stream`, {
        headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'orders', authorization: `Bearer ${w.users.bob.token}` },
      });
      assert.equal(r.statusCode, 200);
      let text = '';
      let failed = false;
      let patched = false;
      try {
        for await (const chunk of r.body) {
          text += chunk.toString();
          if (!patched && text.includes('chunk 2')) {
            patched = true;
            const p = await call(`${node.origin}/minibase/portal/openapi/v1/orgs/${w.orgId}/roles/${w.roles.team}`, {
              method: 'PATCH', headers: { authorization: `Bearer ${w.boot.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ child_ids: [] }),
            });
            assert.equal(p.status, 200, p.text);
          }
        }
      } catch {
        failed = true;
      }
      assert.ok(patched, 'the stream started');
      assert.ok(!text.includes('END'), `the stream ran to its end: ${text.length} bytes`);
      assert.ok(failed, 'the client saw a truncated body');
      const del = await v1(node, w.boot.token, 'DELETE', `/services/auth/${add.json.data.id}`);
      assert.equal(del.status, 200, del.text);
    });

    it('deleting the authorization mid-stream truncates the response', async () => {
      const r = await request(`${node.origin}/api/proxy/stream`, {
        headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'orders', authorization: `Bearer ${w.users.alice.token}` },
      });
      assert.equal(r.statusCode, 200);
      let text = '';
      let failed = false;
      let deleted = false;
      try {
        for await (const chunk of r.body) {
          text += chunk.toString();
          if (!deleted && text.includes('chunk 2')) {
            deleted = true;
            const authId = (await node.db.registry<{ id: string }[]>`SELECT id::text FROM authz_service_auth WHERE user_id = ${w.users.alice.id}`)[0]!.id;
            const d = await v1(node, w.boot.token, 'DELETE', `/services/auth/${authId}`);
            assert.equal(d.status, 200, d.text);
          }
        }
      } catch {
        failed = true;
      }
      assert.ok(deleted, 'the stream started');
      assert.ok(!text.includes('END'), `the stream ran to its end: ${text.length} bytes`);
      assert.ok(failed, 'the client saw a truncated body (an error), not a clean end');
      // a new request is refused
      const again = await request(`${node.origin}/api/proxy/stream`, {
        headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'orders', authorization: `Bearer ${w.users.alice.token}` },
      });
      await again.body.text();
      assert.equal(again.statusCode, 403);
    });
  });
}

for (const server of LISTENERS) {
  describe(`a grant's end reaches an idle keep-alive connection (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let up: TestUpstream;
    let w: GrantWorld;
    let app: string;
    let key: { accessKeyId: string; secretAccessKey: string };

    before(async () => {
      dbs = freshDatabases();
      node = await startTestNode(server, dbs, { UTILMETA_PROXY_AUTHZ_MASTER_KEYS: generateMasterKey('k1') });
      up = await startUpstream();
      const res = await insertInstanceResource(node.db.ops, { service: 'orders', address: up.address });
      const r = await request(`${node.origin}/api/registry`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(registrationBody({ name: 'orders', address: up.address, instanceId: res.id })) });
      assert.equal(r.statusCode, 200, await r.body.text());
      const [svc] = await node.db.registry<{ id: string }[]>`SELECT id FROM utilmeta_service WHERE name = 'orders'`;
      w = await seedWorld(node, { serviceId: svc!.id, serviceName: 'orders', templates: [['GET', '/short']] });
      const a = await v1Grants(node, 'POST', `/${w.projectId}/service/apps`, { token: w.alice.token, body: { name: 'caller' } });
      assert.equal(a.status, 201);
      app = a.json.id;
      key = await node.access.credentials.createKey(CLI_CALLER, { ownerType: 'APP', ownerId: app });
    });
    after(async () => {
      await node?.close();
      await up?.close();
      await dbs?.drop();
    });

    it('the idle connection of an app whose grant ends is closed at the end (node:http) or at its next request (uWS)', async () => {
      const end = Date.now() + 2000;
      const g = await v1Grants(node, 'POST', `/${w.projectId}/service/apis/authorize/action`, {
        token: w.bob.token, body: { api_id: w.apis['GET /short']!, app_id: app, apply_type: 'APPLY_TYPE_AUTHORIZE', time: new Date(end).toISOString() },
      });
      assert.equal(g.status, 204);
      await settle([node]);
      const c = new Conn(node.origin);
      const host = new URL(node.origin).host;
      const signed = () => {
        const o = aws4.sign(
          { host, method: 'GET', path: '/api/proxy/short', headers: { Host: host, 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'orders' }, service: 'utilmeta', region: 'pri' },
          key,
        ) as { headers: Record<string, string> };
        return o.headers;
      };
      try {
        const ok = await c.get(signed(), '/api/proxy/short');
        assert.equal(ok.status, 200);
        const closed = c.nextDisconnect(Math.min(end - Date.now() + 1000, IDLE_BOUND));
        if (server === 'node') {
          assert.ok(await closed, 'the idle connection was closed when the grant ended');
          console.log(`# ${server}: idle connection closed ${Date.now() - end} ms after the grant end (wall clock)`);
          assert.ok(node.access.view.now() >= end - 1, 'not before the end (decision clock)');
        } else {
          const wait = end - node.access.view.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait + 1));
          assert.equal(c.disconnects, 0, 'uWS cannot reach the idle connection');
          const r = await c.get(signed(), '/api/proxy/short');
          assert.equal(r.status, 403);
          assert.equal(r.json.state, 'grant_expired');
          assert.equal(r.headers.connection, 'close');
          assert.ok(await closed, 'the connection closed after the refusal');
          assert.equal(c.connects, 1);
        }
      } finally {
        await c.close();
      }
    });
  });
}
