// Two nodes on one registry database (one per listener kind), PostgreSQL NOTIFY
// and Redis pub/sub as the propagation channels: a change written through
// node A's management API takes effect on node B's /api/proxy decisions.
// Each step polls B until the expected status appears or 2 s have passed.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { freshDatabases, type TestDatabases, type TestNode } from './support/env.ts';
import { startUpstream, type TestUpstream } from './support/upstream.ts';
import { call } from './support/http.ts';
import { buildWorld, OPENAPI, registerService, startAuthzNode, v1, type World } from './support/services-auth.ts';

const D = { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'orders' };
const REDIS = { UTILMETA_PROXY_REDIS_URL: 'redis://127.0.0.1:6379' };

/** Polls until `status(node)` equals `want`, at most `ms`; returns the last status seen. */
async function until(ms: number, probe: () => Promise<number>, want: number): Promise<number> {
  const end = Date.now() + ms;
  let last = await probe();
  while (last !== want && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 10));
    last = await probe();
  }
  return last;
}

describe('authorization changes reach the other node', () => {
  let dbs: TestDatabases;
  let a: TestNode;
  let b: TestNode;
  let up: TestUpstream;
  let w: World;
  let sid: number;

  const onB = async (user: keyof World['users']) => {
    const r = await request(`${b.origin}/api/proxy/items`, { headers: { ...D, authorization: `Bearer ${w.users[user].token}` } });
    await r.body.text();
    return r.statusCode;
  };

  before(async () => {
    dbs = freshDatabases();
    a = await startAuthzNode('uws', dbs, REDIS);
    up = await startUpstream();
    w = await buildWorld(a);
    sid = (await registerService(a, 'orders', up.address, { resources: { openapi: OPENAPI } })).serviceId;
    b = await startAuthzNode('node', dbs, REDIS);
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await up?.close();
    await dbs?.drop();
  });

  it('enable, add a GROUP authorization, remove the user from the role, switch to AUDIT: each within 2 s on B', async () => {
    assert.equal(await onB('erin'), 200, 'OFF: forwarded');
    let r = await v1(a, w.boot.token, 'PATCH', `/services/${sid}/auth/enabled?enabled=true`);
    assert.equal(r.status, 200, r.text);
    assert.equal(await until(2000, () => onB('erin'), 403), 403, 'ENFORCE reached B');
    assert.equal(await onB('bob'), 403);

    r = await v1(a, w.boot.token, 'POST', `/services/${sid}/auth`, { authObjectType: 'GROUP', authObjectId: Number(w.roles.team), permissions: ['VIEW'] });
    assert.equal(r.status, 200, r.text);
    assert.equal(await until(2000, () => onB('bob'), 200), 200, 'the GROUP authorization reached B');

    const del = await call(`${a.origin}/minibase/portal/openapi/v1/orgs/${w.orgId}/roles/${w.roles.team}/subjects/users/${w.users.bob.id}`, {
      method: 'DELETE', headers: { authorization: `Bearer ${w.boot.token}` },
    });
    assert.equal(del.status, 200, del.text);
    assert.equal(await until(2000, () => onB('bob'), 403), 403, 'the role removal reached B');

    r = await v1(a, w.boot.token, 'PATCH', `/services/${sid}/auth/enabled?enabled=true&audit=true`);
    assert.equal(r.status, 200, r.text);
    assert.equal(await until(2000, () => onB('erin'), 200), 200, 'AUDIT reached B');
  });
});
