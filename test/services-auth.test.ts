// The Services Authorization API (/api/v1) end to end on both listeners against
// real PostgreSQL: the catalog built from a registration's OpenAPI, every
// endpoint with its caller rules and error paths, the envelope and status
// mapping, and the audit events each write leaves.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { freshDatabases, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { startUpstream, type TestUpstream } from './support/upstream.ts';
import { apiIdOf } from '../src/access/index.ts';
import { catalogDiff } from '../src/access/catalog-sync.ts';
import { buildWorld, OPENAPI, registerService, startAuthzNode, v1, type World } from './support/services-auth.ts';

describe('catalog diff (pure)', () => {
  it('upserts new and changed openapi rows, keeps manual rows, deprecates absent ones, revives returning ones', () => {
    const live = [
      { apiId: 'a', serviceId: '1', method: 'GET' as const, pathTemplate: '/a', routeKey: '/a', operationId: 'x', summary: '' },
      { apiId: 'b', serviceId: '1', method: 'GET' as const, pathTemplate: '/b', routeKey: '/b', operationId: null, summary: 'new' },
      { apiId: 'm', serviceId: '1', method: 'GET' as const, pathTemplate: '/m', routeKey: '/m', operationId: null, summary: 'doc' },
      { apiId: 'n', serviceId: '1', method: 'GET' as const, pathTemplate: '/n', routeKey: '/n', operationId: null, summary: '' },
    ];
    const stored = [
      { api_id: 'a', source: 'openapi' as const, path_template: '/a', operation_id: 'x', summary: '', deprecated_at: null },
      { api_id: 'b', source: 'openapi' as const, path_template: '/b', operation_id: null, summary: 'old', deprecated_at: null },
      { api_id: 'm', source: 'manual' as const, path_template: '/m', operation_id: null, summary: 'mine', deprecated_at: null },
      { api_id: 'gone', source: 'openapi' as const, path_template: '/g', operation_id: null, summary: '', deprecated_at: null },
      { api_id: 'gone-manual', source: 'manual' as const, path_template: '/gm', operation_id: null, summary: '', deprecated_at: null },
      { api_id: 'n', source: 'openapi' as const, path_template: '/n', operation_id: null, summary: '', deprecated_at: new Date() },
    ];
    const d = catalogDiff(stored, live);
    assert.deepEqual(d.upsert.map((a) => a.apiId), ['b']);
    assert.deepEqual(d.deprecate, ['gone']);
    assert.deepEqual(d.revive, ['n']);
  });
});

for (const server of LISTENERS) {
  describe(`services authorization API (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let up: TestUpstream;
    let w: World;
    let sid: number;
    let admin: string;
    let ordersResource: string;
    const events = async (action: string) => node.db.registry<{ n: string }[]>`SELECT count(*)::text AS n FROM authz_event WHERE action = ${action}`.then((r) => Number(r[0]!.n));

    before(async () => {
      dbs = freshDatabases();
      node = await startAuthzNode(server, dbs);
      up = await startUpstream();
      w = await buildWorld(node);
      admin = w.boot.token;
      const reg = await registerService(node, 'orders', up.address, { resources: { openapi: OPENAPI } });
      sid = reg.serviceId;
      ordersResource = reg.resourceId;
    });
    after(async () => {
      await node?.close();
      await up?.close();
      await dbs?.drop();
    });

    it('registration builds the catalog; a junk OpenAPI never fails a registration; a vanished API is deprecated and revives', async () => {
      const rows = await node.db.registry<{ api_id: string; method: string; path_template: string; source: string }[]>`SELECT api_id, method, path_template, source FROM authz_api WHERE service_id = ${sid} ORDER BY path_template, method`;
      assert.equal(rows.length, 7);
      assert.ok(rows.some((r) => r.method === 'GET' && r.path_template === '/items/{id}' && r.api_id === apiIdOf(sid, 'GET', '/items/{}')));
      assert.ok(await events('api.upsert') >= 1);

      // The same document again: no new event (only last_seen moves).
      const before = await events('api.upsert');
      const again = await registerService(node, 'orders', up.address, { resources: { openapi: OPENAPI }, instanceId: ordersResource });
      assert.equal(again.serviceId, sid);
      assert.equal(await events('api.upsert'), before);

      // Junk: the registration still answers 200 (registerService asserts it).
      const junk = await registerService(node, 'junk', '127.0.0.1:10001', { resources: { openapi: 'not json {' } });
      const [n] = await node.db.registry<{ n: string }[]>`SELECT count(*)::text AS n FROM authz_api WHERE service_id = ${junk.serviceId}`;
      assert.equal(n!.n, '0');

      // A second service whose document loses an API, then regains it.
      const doc = { paths: { '/a': { get: {} }, '/b': { get: {} } } };
      const s2 = await registerService(node, 'shrinking', '127.0.0.1:10002', { resources: { openapi: doc } });
      await node.db.registry`UPDATE utilmeta_instance SET resources = ${node.db.registry.json({ openapi: { paths: { '/a': { get: {} } } } })} WHERE service_id = ${s2.serviceId}`;
      const { syncCatalog } = await import('../src/access/catalog-sync.ts');
      const quiet = { warn() {}, info() {} };
      let r = await syncCatalog(node.access.store, quiet as never, { serviceId: s2.serviceId, resources: {} });
      assert.deepEqual(r?.deprecated, [apiIdOf(s2.serviceId, 'GET', '/b')]);
      const [dep] = await node.db.registry<{ deprecated_at: Date | null }[]>`SELECT deprecated_at FROM authz_api WHERE api_id = ${apiIdOf(s2.serviceId, 'GET', '/b')}`;
      assert.ok(dep!.deprecated_at instanceof Date);
      await node.db.registry`UPDATE utilmeta_instance SET resources = ${node.db.registry.json({ openapi: doc })} WHERE service_id = ${s2.serviceId}`;
      r = await syncCatalog(node.access.store, quiet as never, { serviceId: s2.serviceId, resources: {} });
      assert.deepEqual(r?.revived, [apiIdOf(s2.serviceId, 'GET', '/b')]);
      assert.equal(await events('api.deprecate'), 1);
    });

    it('POST /services/{id}/auth: GRANT adds; envelope; AUTH_EXISTS; bad input names the field; 404s', async () => {
      let r = await v1(node, admin, 'POST', `/services/${sid}/auth`, { authObjectType: 'USER', authObjectId: Number(w.users.alice.id), permissions: ['GRANT', 'VIEW', 'VIEW'] });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.code, 'OK');
      assert.equal(r.json.msg, '');
      assert.match(r.json.datetime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.ok(r.json.ext.requestId);
      assert.deepEqual(r.json.data.permissions, ['VIEW', 'GRANT']);
      assert.equal(r.json.data.serviceName, 'orders');
      assert.equal(r.json.data.authObjectName, 'alice');
      assert.equal(r.json.data.createdBy, 'admin');

      r = await v1(node, admin, 'POST', `/services/${sid}/auth`, { authObjectType: 'USER', authObjectId: Number(w.users.alice.id), permissions: ['VIEW'] });
      assert.equal(r.status, 409);
      assert.equal(r.json.code, 'AUTH_EXISTS');

      const before = await events('auth.add');
      const cases: Array<[unknown, number, string, string?]> = [
        [{ authObjectType: 'ROBOT', authObjectId: 1, permissions: ['VIEW'] }, 400, 'PARAM_INVALID', 'authObjectType'],
        [{ authObjectType: 'USER', authObjectId: 'x', permissions: ['VIEW'] }, 400, 'PARAM_INVALID', 'authObjectId'],
        [{ authObjectType: 'USER', authObjectId: 1, permissions: [] }, 400, 'PARAM_INVALID', 'permissions'],
        [{ authObjectType: 'USER', authObjectId: 1, permissions: ['view'] }, 400, 'PARAM_INVALID', 'permissions[0]'],
        [{ authObjectType: 'APP', authObjectId: 1, permissions: ['VIEW', 'GRANT'] }, 400, 'PARAM_INVALID', 'permissions'],
        [{ authObjectType: 'USER', authObjectId: 999999, permissions: ['VIEW'] }, 404, 'AUTH_OBJECT_NOT_FOUND', 'authObjectId'],
      ];
      for (const [body, status, code, field] of cases) {
        r = await v1(node, admin, 'POST', `/services/${sid}/auth`, body);
        assert.equal(r.status, status, `${JSON.stringify(body)} → ${r.text}`);
        assert.equal(r.json.code, code);
        if (field) assert.equal(r.json.ext.field, field);
      }
      r = await v1(node, admin, 'POST', `/services/999999/auth`, { authObjectType: 'USER', authObjectId: 1, permissions: ['VIEW'] });
      assert.equal(r.status, 404);
      assert.equal(r.json.code, 'SERVICE_NOT_FOUND');
      r = await v1(node, null, 'POST', `/services/${sid}/auth`, { authObjectType: 'USER', authObjectId: 1, permissions: ['VIEW'] });
      assert.equal(r.status, 401);
      assert.equal(r.json.code, 'UNAUTHORIZED');
      assert.equal(r.headers['www-authenticate'], 'Bearer realm="utilmeta-proxy"');
      assert.equal(await events('auth.add'), before, 'no failed add wrote an event');
    });

    it('caller rules: GRANT holder adds; SHARE only a subset without management bits and never to apps; nobody else', async () => {
      // alice holds GRANT (previous test): she can authorize bob's role.
      let r = await v1(node, w.users.alice.token, 'POST', `/services/${sid}/auth`, { authObjectType: 'USER', authObjectId: Number(w.users.carol.id), permissions: ['SHARE', 'VIEW', 'ADD'] });
      assert.equal(r.status, 200, r.text);
      await node.access.view.view.refresh();
      // carol (SHARE + VIEW + ADD) may pass on VIEW…
      r = await v1(node, w.users.carol.token, 'POST', `/services/${sid}/auth`, { authObjectType: 'DEPT', authObjectId: Number(w.depts.root), permissions: ['VIEW'] });
      assert.equal(r.status, 200, r.text);
      // …but not DELETE (not hers), not SHARE, and not to an app
      for (const perms of [['DELETE'], ['VIEW', 'SHARE']]) {
        r = await v1(node, w.users.carol.token, 'POST', `/services/${sid}/auth`, { authObjectType: 'USER', authObjectId: Number(w.users.erin.id), permissions: perms });
        assert.equal(r.status, 403, r.text);
        assert.equal(r.json.code, 'FORBIDDEN');
      }
      // SHARE cannot replace or delete
      const authId = r.json.data?.id ?? (await node.db.registry<{ id: string }[]>`SELECT id::text FROM authz_service_auth WHERE department_id = ${w.depts.root}`)[0]!.id;
      r = await v1(node, w.users.carol.token, 'PUT', `/services/auth/${authId}`, { permissions: ['VIEW', 'ADD'] });
      assert.equal(r.status, 403);
      r = await v1(node, w.users.carol.token, 'DELETE', `/services/auth/${authId}`);
      assert.equal(r.status, 403);
      // erin has nothing
      r = await v1(node, w.users.erin.token, 'POST', `/services/${sid}/auth`, { authObjectType: 'USER', authObjectId: Number(w.users.erin.id), permissions: ['VIEW'] });
      assert.equal(r.status, 403);
    });

    it('PUT and DELETE /services/auth/{id}: replace the whole set, delete; tightening effects in the events; 404 AUTH_NOT_FOUND', async () => {
      let r = await v1(node, admin, 'POST', `/services/${sid}/auth`, { authObjectType: 'GROUP', authObjectId: Number(w.roles.team), permissions: ['VIEW', 'ADD'] });
      assert.equal(r.status, 200, r.text);
      const id = r.json.data.id as number;
      r = await v1(node, w.users.alice.token, 'PUT', `/services/auth/${id}`, { permissions: ['EXPORT'] });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json.data.permissions, ['EXPORT']);
      assert.equal(r.json.data.updatedBy, 'alice');
      const [ev] = await node.db.registry<{ effect: Record<string, unknown> }[]>`SELECT effect FROM authz_event WHERE action = 'auth.replace' ORDER BY seq DESC LIMIT 1`;
      assert.deepEqual(ev!.effect, { auth_id: String(id), service_id: String(sid), mask: 256 });
      r = await v1(node, admin, 'PUT', `/services/auth/${id}`, { permissions: ['NOPE'] });
      assert.equal(r.status, 400);
      assert.equal(r.json.ext.field, 'permissions[0]');
      r = await v1(node, admin, 'DELETE', `/services/auth/${id}`);
      assert.equal(r.status, 200);
      assert.deepEqual(r.json.data, { id });
      r = await v1(node, admin, 'DELETE', `/services/auth/${id}`);
      assert.equal(r.status, 404);
      assert.equal(r.json.code, 'AUTH_NOT_FOUND');
      r = await v1(node, admin, 'PUT', `/services/auth/${id}`, { permissions: ['VIEW'] });
      assert.equal(r.json.code, 'AUTH_NOT_FOUND');
    });

    it('PATCH enabled / apis enabled / settings: modes, ext.warning, status object, 400 on a bad flag', async () => {
      const fresh = (await registerService(node, 'empty', '127.0.0.1:10003')).serviceId;
      let r = await v1(node, admin, 'PATCH', `/services/${fresh}/auth/enabled?enabled=true`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.data.authMode, 'ENFORCE');
      assert.equal(r.json.data.authEnabled, true);
      assert.equal(r.json.ext.warning, 'no authorizations: every non-admin caller is now denied');
      r = await v1(node, admin, 'PATCH', `/services/${fresh}/auth/enabled?enabled=true&audit=true`);
      assert.equal(r.json.data.authMode, 'AUDIT');
      r = await v1(node, admin, 'PATCH', `/services/${fresh}/auth/enabled?enabled=false`);
      assert.equal(r.json.data.authMode, 'OFF');
      assert.equal(r.json.ext.warning, undefined);
      const [ev] = await node.db.registry<{ effect: Record<string, unknown> }[]>`SELECT effect FROM authz_event WHERE action = 'service.auth.mode' ORDER BY seq DESC LIMIT 1`;
      assert.deepEqual(ev!.effect, { service_id: String(fresh), mode: 'OFF' });
      for (const q of ['', '?enabled=yes']) {
        r = await v1(node, admin, 'PATCH', `/services/${fresh}/auth/enabled${q}`);
        assert.equal(r.status, 400, q);
        assert.equal(r.json.ext.field, 'enabled');
      }
      r = await v1(node, w.users.erin.token, 'PATCH', `/services/${sid}/auth/enabled?enabled=true`);
      assert.equal(r.status, 403);
      r = await v1(node, admin, 'PATCH', `/services/424242/auth/enabled?enabled=true`);
      assert.equal(r.status, 404);
      r = await v1(node, admin, 'PATCH', `/services/${fresh}/apis/auth/enabled?enabled=true`);
      assert.equal(r.status, 200);
      assert.equal(r.json.data.apisAuthEnabled, true);
      r = await v1(node, admin, 'PATCH', `/services/${fresh}/auth/settings`, { supervisorPolicy: 'TEST_PERMISSION' });
      assert.equal(r.json.data.supervisorPolicy, 'TEST_PERMISSION');
      r = await v1(node, admin, 'PATCH', `/services/${fresh}/auth/settings`, { supervisorPolicy: 'ANY' });
      assert.equal(r.status, 400);
      assert.equal(r.json.ext.field, 'supervisorPolicy');
      r = await v1(node, admin, 'GET', `/services/${sid}/auth/status`);
      assert.equal(r.status, 200);
      assert.equal(r.json.data.serviceName, 'orders');
      assert.equal(r.json.data.apiCount, 7);
      assert.ok(r.json.data.authorizationCount >= 2);
      r = await v1(node, w.users.erin.token, 'GET', `/services/${sid}/auth/status`);
      assert.equal(r.status, 403);
    });

    it('user queries: sources through role closure and department inheritance, admin flag, check, current', async () => {
      // sub is a child of team, so bob (in team) inherits sub's authorization; dave's child dept inherits root's.
      let r = await v1(node, admin, 'POST', `/services/${sid}/auth`, { authObjectType: 'GROUP', authObjectId: Number(w.roles.sub), permissions: ['DELETE'] });
      assert.equal(r.status, 200, r.text);
      await node.access.view.view.refresh();
      r = await v1(node, w.users.bob.token, 'GET', `/services/${sid}/user/auth/current?admin=false`);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json.data.permissions, ['DELETE']);
      assert.equal(r.json.data.sources[0].authObjectType, 'GROUP');
      assert.equal(r.json.data.sources[0].authObjectName, 'sub');
      r = await v1(node, admin, 'GET', `/services/${sid}/user/${w.users.dave.id}/auth?admin=false`);
      assert.deepEqual(r.json.data.permissions, ['VIEW']);
      assert.equal(r.json.data.sources[0].authObjectType, 'DEPT');
      r = await v1(node, admin, 'GET', `/services/${sid}/user/${w.boot.userId}/auth?admin=true`);
      assert.equal(r.json.data.admin, true);
      assert.equal(r.json.data.permissions.length, 9);
      r = await v1(node, admin, 'GET', `/services/${sid}/user/${w.users.bob.id}/auth/DELETE/check`);
      assert.deepEqual(r.json.data, { permission: 'DELETE', granted: true, viaAdmin: false });
      r = await v1(node, admin, 'GET', `/services/${sid}/user/${w.boot.userId}/auth/EXPORT/check`);
      assert.deepEqual(r.json.data, { permission: 'EXPORT', granted: true, viaAdmin: true });
      r = await v1(node, admin, 'GET', `/services/${sid}/user/${w.users.erin.id}/auth/VIEW/check`);
      assert.equal(r.json.data.granted, false);
      // errors
      r = await v1(node, admin, 'GET', `/services/${sid}/user/${w.users.bob.id}/auth`);
      assert.equal(r.status, 400);
      assert.equal(r.json.ext.field, 'admin');
      r = await v1(node, admin, 'GET', `/services/${sid}/user/${w.users.bob.id}/auth/FLY/check`);
      assert.equal(r.status, 400);
      r = await v1(node, admin, 'GET', `/services/${sid}/user/999999/auth?admin=false`);
      assert.equal(r.json.code, 'USER_NOT_FOUND');
      r = await v1(node, w.users.erin.token, 'GET', `/services/${sid}/user/${w.users.bob.id}/auth?admin=false`);
      assert.equal(r.status, 403);
      r = await v1(node, w.users.erin.token, 'GET', `/services/${sid}/user/${w.users.erin.id}/auth?admin=false`);
      assert.equal(r.status, 200, 'self is always allowed');
    });

    it('GET /services/auth: required params, filters, paging, BASIC vs DETAIL, caller rule', async () => {
      let r = await v1(node, admin, 'GET', `/services/auth?serviceId=${sid}&authObjectType=USER&infoScope=DETAIL&orderBy=id&orderSort=DESC`);
      assert.equal(r.status, 200, r.text);
      assert.ok(r.json.data.total >= 2);
      assert.equal(r.json.data.pageNo, 1);
      assert.ok(r.json.data.list[0].id > r.json.data.list[1].id);
      assert.ok('serviceName' in r.json.data.list[0]);
      r = await v1(node, admin, 'GET', `/services/auth?serviceId=${sid}&authObjectType=USER&filters[0].key=permissions&filters[0].op=EQUAL&filters[0].value=SHARE`);
      assert.equal(r.json.data.total, 1);
      assert.deepEqual(Object.keys(r.json.data.list[0]).sort(), ['authObjectId', 'authObjectType', 'id', 'permissions', 'serviceId']);
      r = await v1(node, admin, 'GET', `/services/auth?serviceId=${sid}&authObjectType=USER&filters[3].key=authObjectName&filters[3].op=MATCH&filters[3].value=LIC`);
      assert.equal(r.json.data.total, 1);
      r = await v1(node, admin, 'GET', `/services/auth?serviceId=${sid}&authObjectType=USER&pageSize=1&pageNo=2`);
      assert.equal(r.json.data.list.length, 1);
      for (const q of [`authObjectType=USER`, `serviceId=${sid}&authObjectType=USER&filters[0].key=nope&filters[0].op=EQUAL&filters[0].value=1`, `serviceId=${sid}&authObjectType=USER&pageSize=5000`]) {
        r = await v1(node, admin, 'GET', `/services/auth?${q}`);
        assert.equal(r.status, 400, q);
        assert.equal(r.json.code, 'PARAM_INVALID');
      }
      r = await v1(node, w.users.bob.token, 'GET', `/services/auth?serviceId=${sid}&authObjectType=USER`);
      assert.equal(r.status, 403);
      r = await v1(node, w.users.carol.token, 'GET', `/services/auth?serviceId=${sid}&authObjectType=USER`);
      assert.equal(r.status, 200, 'SHARE may list');
    });

    it('extensions: services, APIs (list, manual add, per-API settings), audit events', async () => {
      let r = await v1(node, w.users.erin.token, 'GET', `/services?name=ord`);
      assert.equal(r.status, 200);
      assert.equal(r.json.data.total, 1);
      assert.equal(r.json.data.list[0].id, sid);
      assert.equal(r.json.data.list[0].instanceCount, 1);
      r = await v1(node, admin, 'GET', `/services/${sid}/apis?pageSize=100`);
      assert.equal(r.status, 200);
      assert.equal(r.json.data.total, 7);
      const exp = r.json.data.list.find((a: { path: string }) => a.path === '/items/export');
      assert.equal(exp.effectivePermission, 'VIEW');
      r = await v1(node, w.users.erin.token, 'GET', `/services/${sid}/apis`);
      assert.equal(r.status, 403);
      // alice holds GRANT, not RELEASE
      r = await v1(node, w.users.alice.token, 'PATCH', `/services/${sid}/apis/${exp.apiId}`, { permission: 'EXPORT' });
      assert.equal(r.status, 403);
      r = await v1(node, admin, 'PATCH', `/services/${sid}/apis/${exp.apiId}`, { permission: 'EXPORT' });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.data.effectivePermission, 'EXPORT');
      const [ev] = await node.db.registry<{ effect: Record<string, unknown> }[]>`SELECT effect FROM authz_event WHERE action = 'api.update' ORDER BY seq DESC LIMIT 1`;
      assert.deepEqual(ev!.effect, { api_id: exp.apiId, permission: 'EXPORT', auth_enabled: true });
      r = await v1(node, admin, 'PATCH', `/services/${sid}/apis/${exp.apiId}`, { permission: 'TEST' });
      assert.equal(r.status, 400);
      r = await v1(node, admin, 'PATCH', `/services/${sid}/apis/${'0'.repeat(32)}`, { authEnabled: false });
      assert.equal(r.json.code, 'API_NOT_FOUND');
      r = await v1(node, admin, 'POST', `/services/${sid}/apis`, { method: 'POST', path: '/manual/{x}', summary: 'hand-made' });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.data.source, 'manual');
      assert.equal(r.json.data.apiId, apiIdOf(sid, 'POST', '/manual/{}'));
      r = await v1(node, admin, 'POST', `/services/${sid}/apis`, { method: 'POST', path: '/manual/{y}' });
      assert.equal(r.status, 409);
      assert.equal(r.json.code, 'CONFLICT');
      r = await v1(node, admin, 'POST', `/services/${sid}/apis`, { method: 'POST', path: 'nope' });
      assert.equal(r.json.ext.field, 'path');
      // audit: admin sees everything; alice (GRANT on orders) only orders' events; erin nothing
      r = await v1(node, admin, 'GET', `/audit-events?filters[0].key=action&filters[0].op=EQUAL&filters[0].value=auth.add&pageSize=100`);
      assert.equal(r.status, 200, r.text);
      assert.ok(r.json.data.total >= 4);
      assert.ok(r.json.data.list.every((e: { action: string }) => e.action === 'auth.add'));
      r = await v1(node, w.users.alice.token, 'GET', `/audit-events?pageSize=1000`);
      assert.equal(r.status, 200);
      assert.ok(r.json.data.list.length > 0);
      assert.ok(r.json.data.list.every((e: { serviceId: number }) => e.serviceId === sid));
      r = await v1(node, w.users.erin.token, 'GET', `/audit-events`);
      assert.equal(r.status, 403);
      r = await v1(node, admin, 'GET', `/audit-events?filters[0].key=seq&filters[0].op=MATCH&filters[0].value=1`);
      assert.equal(r.status, 400);
      assert.equal(r.json.ext.field, 'filters[0].op');
    });
  });
}
