// The access plane's pure decision core: permissions, canonical paths, the router, the catalog,
// effective permissions, decide() branch by branch, tightening effects and the list query.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { DomainError } from '../src/core/errors.ts';
import {
  ALL_PERMISSIONS, PERM, PERMISSIONS, maskToNames, namesToMask, parsePermission, permissionForMethod, requiredPermission,
} from '../src/access/permissions.ts';
import { canonicalPath } from '../src/access/canonical-path.ts';
import { ApiRouter } from '../src/access/router.ts';
import { apiIdOf, buildCatalog, deprecationChanges, routeKeyOf, templateProblem } from '../src/access/catalog.ts';
import { departmentClosure, roleClosure } from '../src/access/effective.ts';
import {
  buildDecisionState, effectiveUserMask, isAdmin, userMask, withRows, type DecisionState,
} from '../src/access/decision-state.ts';
import { applyEffect } from '../src/access/tightening.ts';
import {
  appBoundTo, authenticateBearer, decide, principalForAccessKey, testInstancesOnly, type Allow, type Deny, type Principal, type DecisionRequest,
} from '../src/access/decide.ts';
import { buildAuthListSql, parseAuthListQuery } from '../src/access/list-query.ts';
import { APIS, APP2_ID, APP_ID, DAY, NOW, SVC, SVC_NAME, grant, rows, token } from './support/access-fixture.ts';

const throwsInvalid = (fn: () => unknown, field: string) =>
  assert.throws(fn, (e: unknown) => e instanceof DomainError && e.kind === 'invalid' && e.field === field, `expected invalid ${field}`);

describe('permissions', () => {
  test('bits in the stored order: ADD=1 … EXPORT=256', () => {
    assert.deepEqual(PERMISSIONS.map((p) => PERM[p]), [1, 2, 4, 8, 16, 32, 64, 128, 256]);
    assert.equal(ALL_PERMISSIONS, 511);
  });
  test('names render in bit order whatever the input order; duplicates ignored', () => {
    const m = namesToMask(['EXPORT', 'VIEW', 'VIEW', 'ADD']);
    assert.equal(m, PERM.EXPORT | PERM.VIEW | PERM.ADD);
    assert.deepEqual(maskToNames(m), ['ADD', 'VIEW', 'EXPORT']);
    assert.deepEqual(maskToNames(ALL_PERMISSIONS), [...PERMISSIONS]);
  });
  test('unknown, lower-case, empty and non-array inputs are PARAM_INVALID naming the field', () => {
    throwsInvalid(() => namesToMask(['VIEW', 'view']), 'permissions[1]');
    throwsInvalid(() => namesToMask(['VIEW', 7]), 'permissions[1]');
    throwsInvalid(() => namesToMask([]), 'permissions');
    throwsInvalid(() => namesToMask('VIEW'), 'permissions');
    throwsInvalid(() => parsePermission('READ', 'authPermission'), 'authPermission');
    assert.equal(parsePermission('GRANT'), 'GRANT');
  });
  test('required permission by method, and the per-API override', () => {
    assert.deepEqual(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'TRACE', 'get'].map(permissionForMethod), ['VIEW', 'VIEW', 'ADD', 'MODIFY', 'MODIFY', 'DELETE', 'MODIFY', 'VIEW']);
    assert.equal(requiredPermission('POST', 'VIEW'), 'VIEW');
    assert.equal(requiredPermission('GET', 'EXPORT'), 'EXPORT');
    assert.equal(requiredPermission('GET', null), 'VIEW');
  });
});

describe('canonical path', () => {
  const ok = (raw: string) => {
    const r = canonicalPath(raw);
    assert.ok(r.ok, `${raw} should pass`);
    return r.segments;
  };
  const refused = (raw: string, reason: string) => {
    const r = canonicalPath(raw);
    assert.ok(!r.ok, `${raw} should be refused`);
    assert.equal(r.reason, reason, raw);
  };
  test('accepts and decodes canonical paths', () => {
    assert.deepEqual(ok('/'), []);
    assert.deepEqual(ok(''), []);
    assert.deepEqual(ok('/items/7'), ['items', '7']);
    assert.deepEqual(ok('/items/7/'), ['items', '7']);
    assert.deepEqual(ok('/a%20b/caf%C3%A9'), ['a b', 'café']);
    assert.deepEqual(ok('/.well-known/x..y/...'), ['.well-known', 'x..y', '...']);
    assert.deepEqual(ok('/a?x=/../..//'), ['a']);
  });
  test('refuses empty segments except one trailing', () => {
    refused('//', 'empty_segment');
    refused('/a//b', 'empty_segment');
    refused('/a/b//', 'empty_segment');
    refused('//a', 'empty_segment');
  });
  test('refuses dot segments, encoded too', () => {
    for (const p of ['/./a', '/a/..', '/a/../b', '/%2e/a', '/%2E%2e/a', '/.%2E', '/a/%2e%2e/']) refused(p, 'dot_segment');
  });
  test('refuses encoded or back slashes inside a segment', () => {
    for (const p of ['/a%2Fb', '/a%2fb', '/a%5Cb', '/a%5cb', '/a\\b', '/%2F']) refused(p, 'encoded_separator');
  });
  test('refuses invalid percent-encoding and invalid UTF-8', () => {
    for (const p of ['/%zz', '/%4', '/a%', '/%%41']) refused(p, 'bad_percent_encoding');
    for (const p of ['/%C3', '/%C0%AF', '/%ED%A0%80', '/%FF', '/%C3%28', '/\uD800x']) refused(p, 'bad_utf8');
    refused('items', 'not_absolute');
  });
});

describe('router', () => {
  const r = new ApiRouter([
    { apiId: 'list', method: 'GET', routeKey: '/items' },
    { apiId: 'get', method: 'GET', routeKey: '/items/{}' },
    { apiId: 'mine', method: 'GET', routeKey: '/items/mine' },
    { apiId: 'deep-literal', method: 'GET', routeKey: '/a/b/c' },
    { apiId: 'deep-param', method: 'GET', routeKey: '/a/{}/d' },
    { apiId: 'json', method: 'GET', routeKey: '/files/{}.json' },
    { apiId: 'file', method: 'GET', routeKey: '/files/{}' },
    { apiId: 'space', method: 'GET', routeKey: '/files/a b' },
    { apiId: 'root', method: 'GET', routeKey: '/' },
    { apiId: 'head-own', method: 'HEAD', routeKey: '/items/mine' },
    { apiId: 'post-param', method: 'POST', routeKey: '/items/{}' },
  ]);
  const m = (method: string, path: string) => {
    const res = r.match(method, path);
    assert.ok(res.ok, path);
    return res.api?.apiId ?? null;
  };
  test('literal beats parameter, with backtracking', () => {
    assert.equal(m('GET', '/items/mine'), 'mine');
    assert.equal(m('GET', '/items/42'), 'get');
    assert.equal(m('GET', '/a/b/c'), 'deep-literal');
    assert.equal(m('GET', '/a/b/d'), 'deep-param');
    assert.equal(m('POST', '/items/mine'), 'post-param');
  });
  test('mixed segments sit between literals and parameters', () => {
    assert.equal(m('GET', '/files/x.json'), 'json');
    assert.equal(m('GET', '/files/.json'), 'file');
    assert.equal(m('GET', '/files/x.yaml'), 'file');
    assert.equal(m('GET', '/files/a%20b'), 'space');
  });
  test('one trailing slash is ignored, the root matches, misses are null', () => {
    assert.equal(m('GET', '/items/'), 'list');
    assert.equal(m('GET', '/'), 'root');
    assert.equal(m('GET', ''), 'root');
    assert.equal(m('GET', '/nothing'), null);
    assert.equal(m('GET', '/items/1/2'), null);
    assert.equal(m('PUT', '/items/1'), null);
  });
  test('HEAD falls back to GET only without its own API', () => {
    assert.equal(m('HEAD', '/items/7'), 'get');
    assert.equal(m('HEAD', '/items/mine'), 'head-own');
  });
  test('a non-canonical path is refused before matching', () => {
    const res = r.match('GET', '/items/%2e%2e');
    assert.ok(!res.ok);
    assert.equal(res.reason, 'dot_segment');
  });
});

describe('catalog', () => {
  test('route_key and api_id follow the formula', () => {
    assert.equal(routeKeyOf('/items/{item_id}/'), '/items/{}');
    assert.equal(routeKeyOf('/'), '/');
    assert.equal(routeKeyOf('/f/{name}.json'), '/f/{}.json');
    const expected = createHash('sha256').update('12\nGET\n/items/{}').digest('hex').slice(0, 32);
    assert.equal(apiIdOf(12, 'get', '/items/{}'), expected);
    assert.equal(apiIdOf('12', 'GET', routeKeyOf('/items/{id}')), apiIdOf(12n, 'GET', routeKeyOf('/items/{other}')));
  });
  test("templates are relative to base_url using servers[0].url's path", () => {
    const doc = { servers: [{ url: 'http://127.0.0.1:9000/api' }], paths: { '/user': { get: { summary: 'me', operationId: 'me' } }, '/user/{id}': { put: {}, delete: {} } } };
    const { apis, problems } = buildCatalog(5, [{ baseUrl: 'http://127.0.0.1:9000/api', openapi: doc }]);
    assert.deepEqual(problems, []);
    assert.deepEqual(apis.map((a) => `${a.method} ${a.pathTemplate} ${a.routeKey}`), ['GET /user /user', 'PUT /user/{id} /user/{}', 'DELETE /user/{id} /user/{}']);
    assert.equal(apis[0].summary, 'me');
    assert.equal(apis[0].operationId, 'me');
    assert.equal(apis[1].apiId, apiIdOf(5, 'PUT', '/user/{}'));
    // A relative servers URL and a deeper base_url.
    const r2 = buildCatalog(5, [{ baseUrl: 'http://127.0.0.1:9000/api/v2', openapi: { servers: [{ url: '/api' }], paths: { '/v2/items': { get: {} }, '/v2': { get: {} }, '/other': { get: {} } } } }]);
    assert.deepEqual(r2.apis.map((a) => a.pathTemplate), ['/items', '/']);
    assert.equal(r2.problems.length, 1);
    assert.match(r2.problems[0].message, /outside base_url/);
    // No servers: keys are relative already.
    const r3 = buildCatalog(5, [{ baseUrl: 'http://127.0.0.1:9000/api', openapi: JSON.stringify({ paths: { '/x': { post: {} } } }) }]);
    assert.deepEqual(r3.apis.map((a) => `${a.method} ${a.pathTemplate}`), ['POST /x']);
  });
  test('junk documents never throw and are reported', () => {
    const junk: unknown[] = [null, 'not json', 42, [], { paths: [] }, { paths: { '/a': 'x', '/b/{': { get: {} }, '/c/../d': { get: {} }, 'e': { get: {} }, '/f': { get: 'nope', post: {} } } }, { servers: 'x', paths: {} }];
    const { apis, problems } = buildCatalog(1, [...junk.map((openapi) => ({ baseUrl: 'http://127.0.0.1/', openapi })), null as never]);
    assert.deepEqual(apis.map((a) => `${a.method} ${a.pathTemplate}`), ['POST /f']);
    assert.ok(problems.length >= 9, JSON.stringify(problems));
    assert.equal(templateProblem('/a//b'), 'the path has an empty segment (//)');
  });
  test('merging instances dedupes by (method, route_key); deprecation and revival', () => {
    const a = { baseUrl: null, openapi: { paths: { '/items/{id}': { get: { summary: 'first' } } } } };
    const b = { baseUrl: null, openapi: { paths: { '/items/{item}': { get: { summary: 'second' } }, '/new': { get: {} } } } };
    const { apis } = buildCatalog(9, [a, b]);
    assert.deepEqual(apis.map((x) => [x.pathTemplate, x.summary]), [['/items/{id}', 'first'], ['/new', '']]);
    const gone = apiIdOf(9, 'GET', '/old');
    const back = apiIdOf(9, 'GET', '/new');
    const manual = apiIdOf(9, 'POST', '/manual');
    const ch = deprecationChanges([
      { apiId: gone, source: 'openapi', deprecatedAt: null },
      { apiId: back, source: 'openapi', deprecatedAt: '2026-01-01T00:00:00Z' },
      { apiId: manual, source: 'manual', deprecatedAt: null },
      { apiId: apis[0].apiId, source: 'openapi', deprecatedAt: null },
    ], apis);
    assert.deepEqual(ch, { deprecate: [gone], revive: [back] });
  });
});

describe('effective permissions', () => {
  test('role closure follows child_ids, survives cycles, stays in the org', () => {
    const kids = new Map([['a', ['b']], ['b', ['c', 'a']], ['c', ['x']]]);
    const org = new Map([['a', 1], ['b', 1], ['c', 1], ['x', 2]]);
    assert.deepEqual(roleClosure(['a'], (r) => kids.get(r), (r) => org.get(r) === 1).sort(), ['a', 'b', 'c']);
  });
  test('department closure walks up while to_super', () => {
    const d = new Map([['root', { superId: null, toSuper: true }], ['mid', { superId: 'root', toSuper: false }], ['leaf', { superId: 'mid', toSuper: true }], ['loop', { superId: 'loop2', toSuper: true }], ['loop2', { superId: 'loop', toSuper: true }]]);
    assert.deepEqual(departmentClosure(['leaf'], (x) => d.get(x), () => true), ['leaf', 'mid']);
    assert.deepEqual(departmentClosure(['loop'], (x) => d.get(x), () => true).sort(), ['loop', 'loop2']);
    assert.deepEqual(departmentClosure(['leaf'], (x) => d.get(x), () => false), []);
  });
  test('masks per user from the state: USER, GROUP closure, DEPT inheritance, org filter, admin', () => {
    const s = buildDecisionState(rows());
    assert.equal(userMask(s, '1', SVC), PERM.VIEW);
    assert.equal(userMask(s, '2', SVC), PERM.ADD);
    assert.equal(userMask(s, '3', SVC), PERM.DELETE, 'dept 32 inherits 31 (DELETE) but not 30 (EXPORT): 31 is to_children');
    assert.equal(userMask(s, '8', SVC), PERM.VIEW, "hank's role 20 is outside his orgs");
    assert.equal(isAdmin(s, '5'), true);
    assert.equal(isAdmin(s, '6'), true);
    assert.equal(isAdmin(s, '1'), false);
    assert.equal(effectiveUserMask(s, '6', SVC), ALL_PERMISSIONS);
    assert.equal(userMask(s, '1', '999'), 0);
  });
});

const REQ = (method: string, rawPath: string, serviceId = SVC): DecisionRequest => ({ serviceId, serviceName: SVC_NAME, method, rawPath });
const bearer = (s: DecisionState, n: number) => {
  const p = authenticateBearer(s, token(n), NOW);
  assert.notEqual(p.kind, 'failure', `token ${n}`);
  return p as Principal;
};
const asAllow = (d: Allow | Deny) => {
  assert.equal(d.result, 'ALLOW', d.result === 'DENY' ? `${d.state}: ${d.message}` : '');
  return d as Allow;
};
const asDeny = (d: Allow | Deny, status: number, state: string) => {
  assert.equal(d.result, 'DENY');
  assert.equal((d as Deny).status, status);
  assert.equal((d as Deny).state, state);
  return d as Deny;
};

describe('decide: the proxy decision branch by branch', () => {
  const s = buildDecisionState(rows());
  const alice = () => bearer(s, 1);
  const app: Principal = { kind: 'app', appId: '1', via: 'sigv4', accessKeyId: 'UMAKAAAAAAAAAAAAAAA2' };

  test('no state loaded → 503 authz_unavailable', () => {
    asDeny(decide(null, REQ('GET', '/items'), null, NOW), 503, 'authz_unavailable');
  });
  test('service OFF (or without settings) → allowed as today', () => {
    const d = asAllow(decide(s, REQ('GET', '/items', '999'), null, NOW));
    assert.equal(d.mode, 'OFF');
    assert.equal(d.reason, 'off');
    assert.deepEqual(d.upstreamHeaders, {});
  });
  test('stale beyond the maximum → 503 in ENFORCE only', () => {
    asDeny(decide(s, REQ('GET', '/items'), alice(), NOW, { stalenessMs: 301_000, maxStalenessMs: 300_000 }), 503, 'authz_unavailable');
    asAllow(decide(s, REQ('GET', '/items'), alice(), NOW, { stalenessMs: 299_000, maxStalenessMs: 300_000 }));
    asAllow(decide(s, REQ('GET', '/items'), alice(), NOW, { stalenessMs: 1e9, maxStalenessMs: 0 }));
    assert.equal(decide(s, REQ('GET', '/items', '14'), alice(), NOW, { stalenessMs: 1e9, maxStalenessMs: 1 }).audit, true);
  });
  test('non-canonical path → 400 path_not_canonical', () => {
    const d = asDeny(decide(s, REQ('GET', '/items/%2e%2e/admin'), alice(), NOW), 400, 'path_not_canonical');
    assert.equal(d.body.state, 'path_not_canonical');
  });
  test('public API → allowed without a credential; a sent credential that fails still fails', () => {
    const d = asAllow(decide(s, REQ('GET', '/health'), null, NOW));
    assert.equal(d.reason, 'public');
    assert.equal(d.upstreamHeaders['x-utilmeta-api-id'], APIS.health.apiId);
    const withUser = asAllow(decide(s, REQ('GET', '/health'), alice(), NOW));
    assert.equal(withUser.upstreamHeaders['x-utilmeta-caller-name'], 'alice');
    asDeny(decide(s, REQ('GET', '/health'), authenticateBearer(s, token(3), NOW), NOW), 401, 'token_expired');
  });
  test('no credential → 401 authn_required with both challenges', () => {
    const d = asDeny(decide(s, REQ('GET', '/items'), null, NOW), 401, 'authn_required');
    assert.equal(d.headers['www-authenticate'], 'Bearer realm="utilmeta-proxy", AWS4-HMAC-SHA256');
  });
  test('a failed credential answers its own state', () => {
    asDeny(decide(s, REQ('GET', '/items'), authenticateBearer(s, token(2), NOW), NOW), 401, 'token_revoked');
  });
  test('USER disabled → 403 principal_disabled', () => {
    asDeny(decide(s, REQ('GET', '/items'), { kind: 'user', userId: '4', via: 'sigv4', accessKeyId: 'UMAKAAAAAAAAAAAAAAA5' }, NOW), 403, 'principal_disabled');
    asDeny(decide(s, REQ('GET', '/items'), { kind: 'user', userId: '404', via: 'bearer', tokenId: '1' }, NOW), 403, 'principal_disabled');
  });
  test('USER with the required bit → ALLOW with identity headers and the token deadline', () => {
    const d = asAllow(decide(s, REQ('GET', '/items/7'), alice(), NOW));
    assert.equal(d.reason, 'permission');
    assert.equal(d.required, 'VIEW');
    assert.equal(d.api?.apiId, APIS.get.apiId);
    assert.equal(d.deadline, NOW + DAY);
    assert.deepEqual(d.upstreamHeaders, { 'x-utilmeta-caller-type': 'user', 'x-utilmeta-caller-id': '1', 'x-utilmeta-caller-name': 'alice', 'x-utilmeta-api-id': APIS.get.apiId });
    assert.equal(d.testOnly, false);
  });
  test('USER without the bit → 403 permission_denied naming the required permission', () => {
    const d = asDeny(decide(s, REQ('POST', '/items'), alice(), NOW), 403, 'permission_denied');
    assert.equal(d.required, 'ADD');
    assert.equal(d.body.required, 'ADD');
    assert.equal(d.body.api_id, APIS.create.apiId);
    assert.equal(d.body.service, SVC_NAME);
    // The EXPORT override: VIEW does not reach it.
    assert.equal(asDeny(decide(s, REQ('GET', '/items/export'), alice(), NOW), 403, 'permission_denied').required, 'EXPORT');
    // An unregistered path falls back to the method's permission.
    asAllow(decide(s, REQ('GET', '/not/registered'), alice(), NOW));
    asDeny(decide(s, REQ('PATCH', '/not/registered'), alice(), NOW), 403, 'permission_denied');
  });
  test('GROUP and DEPT authorizations reach users; SigV4 users get the key header', () => {
    asAllow(decide(s, REQ('POST', '/items'), bearer(s, 6), NOW));
    const carol: Principal = { kind: 'user', userId: '3', via: 'sigv4', accessKeyId: 'UMAKAAAAAAAAAAAAAAA9' };
    const d = asAllow(decide(s, REQ('DELETE', '/items/3'), carol, NOW));
    assert.equal(d.upstreamHeaders['x-utilmeta-access-key-id'], 'UMAKAAAAAAAAAAAAAAA9');
    asDeny(decide(s, REQ('GET', '/items/export'), carol, NOW), 403, 'permission_denied');
  });
  test('admins pass everything', () => {
    const d = asAllow(decide(s, REQ('DELETE', '/items/3'), { kind: 'user', userId: '6', via: 'bearer', tokenId: 'x' }, NOW));
    assert.equal(d.reason, 'admin');
  });
  test('TEST → ALLOW test-only; no test instance → test_instances_only', () => {
    const req = REQ('DELETE', '/items/3');
    const d = asAllow(decide(s, req, { kind: 'user', userId: '7', via: 'bearer', tokenId: 'x' }, NOW));
    assert.equal(d.testOnly, true);
    assert.equal(d.reason, 'test');
    asDeny(testInstancesOnly(req, d), 403, 'test_instances_only');
  });
  test('APP disabled / project outside its dates', () => {
    asDeny(decide(s, REQ('GET', '/items'), { kind: 'app', appId: '2', via: 'instance' }, NOW), 403, 'project_expired');
    asAllow(decide(s, REQ('GET', '/items'), app, NOW));
    const disabled = applyEffect(s, 'app.update', { app_id: APP_ID, status: 'DISABLED' }).state;
    asDeny(decide(disabled, REQ('GET', '/items'), app, NOW), 403, 'principal_disabled');
    // Project 41 runs 2026-01-01..2026-05-31 inclusive: still valid on its last day.
    asAllow(decide(withRows(s, { serviceAuths: [{ id: 99, serviceId: SVC, authObjectType: 'APP', authObjectId: 2, permMask: PERM.VIEW }] }), REQ('GET', '/items'), { kind: 'app', appId: '2', via: 'instance' }, NOW - 1));
  });
  test('APP without per-API grants uses the APP authorization mask', () => {
    const d = asAllow(decide(s, REQ('GET', '/items/1'), app, NOW));
    assert.equal(d.upstreamHeaders['x-utilmeta-caller-id'], APP_ID);
    assert.equal(d.upstreamHeaders['x-utilmeta-caller-type'], 'app');
    assert.equal(d.deadline, NOW + DAY, 'the key expires in a day');
    asDeny(decide(s, REQ('POST', '/items'), app, NOW), 403, 'permission_denied');
  });
  test('APP with per-API grants: every grant state', () => {
    const R = (m: string, p: string) => REQ(m, p, '13');
    asDeny(decide(s, R('GET', '/nope'), app, NOW), 403, 'api_not_registered');
    asDeny(decide(s, R('GET', '/items'), app, NOW), 403, 'grant_pending');
    const none = asDeny(decide(s, R('GET', '/items/1'), { kind: 'app', appId: '2', via: 'instance' }, NOW - DAY), 403, 'grant_required');
    assert.match(none.message, new RegExp(`app ${APP2_ID} has no active grant for GET /items/\\{id\\} of service 'orders'`));
    const d = asAllow(decide(s, R('GET', '/items/1'), app, NOW));
    assert.equal(d.reason, 'grant');
    assert.equal(d.grant?.id, '1');
    assert.equal(d.deadline, NOW + DAY, 'min(grant end, key expiry)');
    assert.equal(d.clientHeaders['X-UtilMeta-Grant-End'], new Date(NOW + 30 * DAY).toISOString());
    assert.equal(d.clientHeaders['Sunset'], undefined, 'far from its end, no Sunset');
    assert.equal(d.upstreamHeaders['x-utilmeta-grant-id'], '1');
    assert.equal(d.upstreamHeaders['x-utilmeta-grant-end'], new Date(NOW + 30 * DAY).toISOString());
    // Scheduled cancellation: allowed until cancel_at, told in-band.
    const sched = asAllow(decide(s, R('POST', '/items'), app, NOW));
    assert.equal(sched.grant?.effectiveEnd, NOW + 3 * DAY);
    assert.equal(sched.clientHeaders['Sunset'], new Date(NOW + 3 * DAY).toUTCString());
    assert.equal(sched.clientHeaders['X-UtilMeta-Grant-State'], 'CANCEL_SCHEDULED');
    asDeny(decide(s, R('POST', '/items'), app, NOW + 3 * DAY), 403, 'grant_cancelled');
    // Near its end (2 days): Sunset too; the older REJECTED row for the same pair does not shadow it.
    const near = asAllow(decide(s, R('DELETE', '/items/1'), app, NOW));
    assert.equal(near.clientHeaders['Sunset'], new Date(NOW + 2 * DAY).toUTCString());
    assert.equal(near.clientHeaders['X-UtilMeta-Grant-State'], 'ACTIVE');
    // start ≤ now < end, exactly at the edges.
    asAllow(decide(s, R('GET', '/items/1'), app, NOW + 30 * DAY - 1));
    asDeny(decide(s, R('GET', '/items/1'), app, NOW + 30 * DAY), 403, 'grant_expired');
    asDeny(decide(s, R('GET', '/items/1'), app, NOW - DAY - 1), 403, 'grant_required');
  });
  test('AUDIT returns the would-be decision flagged, with nothing added', () => {
    const d = decide(s, REQ('POST', '/items', '14'), bearer(s, 1), NOW);
    assert.equal(d.audit, true);
    asDeny(d, 403, 'permission_denied');
    const a = asAllow(decide(s, REQ('GET', '/x', '14'), bearer(s, 1), NOW));
    assert.equal(a.audit, true);
    assert.deepEqual(a.upstreamHeaders, {});
    asDeny(decide(s, REQ('GET', '/a//b', '14'), null, NOW), 400, 'path_not_canonical');
  });
  test('HEAD uses the GET API', () => {
    assert.equal(asAllow(decide(s, REQ('HEAD', '/items/5'), alice(), NOW)).api?.apiId, APIS.get.apiId);
  });
  test('instance identity finds the bound app', () => {
    const s2 = withRows(s, { apps: [{ id: 3, appId: 'ab'.repeat(16), projectId: 40, name: 'bound', ownerUserId: 1, status: 'ACTIVE', boundServiceId: 77 }] });
    assert.deepEqual(appBoundTo(s2, 77), { kind: 'app', appId: '3', via: 'instance' });
    assert.equal(appBoundTo(s2, 78), null);
    assert.equal(appBoundTo(applyEffect(s2, 'app.delete', { app_id: '3' }).state, 77), null);
    assert.deepEqual(appBoundTo(s2, 77), { kind: 'app', appId: '3', via: 'instance' });
  });
});

describe('credentials from memory', () => {
  const s = buildDecisionState(rows());
  const fail = (p: ReturnType<typeof authenticateBearer>, status: number, state: string) => {
    assert.equal(p.kind, 'failure');
    assert.equal((p as { status: number }).status, status);
    assert.equal((p as { state: string }).state, state);
  };
  test('bearer tokens in the specified order', () => {
    assert.deepEqual(authenticateBearer(s, token(1), NOW), { kind: 'user', userId: '1', via: 'bearer', tokenId: '1' });
    fail(authenticateBearer(s, 'umt_short', NOW), 401, 'token_invalid');
    fail(authenticateBearer(s, token(99), NOW), 401, 'token_invalid');
    fail(authenticateBearer(s, token(2), NOW), 401, 'token_revoked');
    fail(authenticateBearer(s, token(3), NOW), 401, 'token_expired');
    fail(authenticateBearer(s, token(4), NOW), 403, 'principal_disabled');
    const p = authenticateBearer(s, token(3), NOW - 1);
    assert.equal(p.kind, 'user');
    const invalid = authenticateBearer(s, token(99), NOW);
    assert.equal((invalid as { headers: Record<string, string> }).headers['www-authenticate'], 'Bearer realm="utilmeta-proxy", error="invalid_token"');
  });
  test('revoked parent jti kills exchanged tokens', () => {
    assert.equal(authenticateBearer(s, token(5), NOW).kind, 'user');
    const s2 = applyEffect(s, 'jti.revoke', { jtis: ['jti-abc'], exp: Math.floor(NOW / 1000) + 3600 }).state;
    fail(authenticateBearer(s2, token(5), NOW), 401, 'token_revoked');
    assert.equal(authenticateBearer(s, token(5), NOW).kind, 'user', 'the old state is unchanged');
  });
  test('access keys: unknown, disabled, expired, owner disabled, app owner', () => {
    assert.deepEqual(principalForAccessKey(s, 'UMAKAAAAAAAAAAAAAAA1', NOW), { kind: 'user', userId: '1', via: 'sigv4', accessKeyId: 'UMAKAAAAAAAAAAAAAAA1' });
    assert.deepEqual(principalForAccessKey(s, 'UMAKAAAAAAAAAAAAAAA2', NOW), { kind: 'app', appId: '1', via: 'sigv4', accessKeyId: 'UMAKAAAAAAAAAAAAAAA2' });
    fail(principalForAccessKey(s, 'UMAKZZZZZZZZZZZZZZZZ', NOW), 403, 'key_unknown');
    fail(principalForAccessKey(s, 'UMAKAAAAAAAAAAAAAAA3', NOW), 403, 'key_disabled');
    fail(principalForAccessKey(s, 'UMAKAAAAAAAAAAAAAAA4', NOW), 403, 'key_expired');
    fail(principalForAccessKey(s, 'UMAKAAAAAAAAAAAAAAA5', NOW), 403, 'principal_disabled');
  });
});

describe('tightening effects', () => {
  const base = buildDecisionState(rows());
  const apply = (s: DecisionState, action: string, effect: unknown) => {
    const r = applyEffect(s, action, effect, NOW);
    assert.equal(r.outcome, 'applied', action);
    return r.state;
  };
  test('key status / expire / delete', () => {
    const ok = (s: DecisionState) => principalForAccessKey(s, 'UMAKAAAAAAAAAAAAAAA1', NOW);
    assert.equal((ok(apply(base, 'key.status', { ak: 'UMAKAAAAAAAAAAAAAAA1', status: 'Inactive' })) as { state: string }).state, 'key_disabled');
    assert.equal((ok(apply(base, 'key.expire', { ak: 'UMAKAAAAAAAAAAAAAAA1' })) as { state: string }).state, 'key_expired');
    assert.equal((ok(apply(base, 'key.delete', { ak: 'UMAKAAAAAAAAAAAAAAA1' })) as { state: string }).state, 'key_unknown');
    assert.equal(applyEffect(base, 'key.status', { ak: 'UMAKAAAAAAAAAAAAAAA3', status: 'Active' }).outcome, 'not_tightening');
    assert.equal(ok(base).kind, 'user');
  });
  test('token revoke by id', () => {
    const s = apply(base, 'token.revoke', { token_ids: [1, '6'] });
    assert.equal((authenticateBearer(s, token(1), NOW) as { state: string }).state, 'token_revoked');
    assert.equal((authenticateBearer(s, token(6), NOW) as { state: string }).state, 'token_revoked');
  });
  test('user disabled / deleted', () => {
    const dis = apply(base, 'user.update', { user_id: 1, status: 0 });
    assert.equal((authenticateBearer(dis, token(1), NOW) as { state: string }).state, 'principal_disabled');
    assert.equal(applyEffect(base, 'user.update', { user_id: 1, status: 1 }).outcome, 'not_tightening');
    const del = apply(base, 'user.delete', { user_id: '1' });
    assert.equal((authenticateBearer(del, token(1), NOW) as { state: string }).state, 'token_invalid');
  });
  test('membership removals recompute the closure', () => {
    const bob: Principal = { kind: 'user', userId: '2', via: 'bearer', tokenId: '6' };
    asAllow(decide(base, REQ('POST', '/items'), bob, NOW));
    asDeny(decide(apply(base, 'role.subject.remove', { user_id: 2, role_id: 20 }), REQ('POST', '/items'), bob, NOW), 403, 'permission_denied');
    asDeny(decide(apply(base, 'org.user.remove', { user_id: 2, org_id: 100 }), REQ('POST', '/items'), bob, NOW), 403, 'permission_denied');
    const carol: Principal = { kind: 'user', userId: '3', via: 'bearer', tokenId: 'x' };
    asDeny(decide(apply(base, 'dept.user.remove', { user_id: 3, department_id: 32 }), REQ('DELETE', '/items/1'), carol, NOW), 403, 'permission_denied');
    // The admin via role 22 loses admin with the role.
    assert.equal(isAdmin(apply(base, 'role.subject.remove', { user_id: 6, role_id: 22 }), '6'), false);
    asAllow(decide(base, REQ('POST', '/items'), bob, NOW));
    // The writers put the org on role and department removals: it says where, the user stays in the org.
    const oneRole = apply(base, 'role.subject.remove', { user_id: 3, org_id: 100, role_id: 20 });
    assert.ok(oneRole.userOrgs.get('3')?.has('100'), 'still a member of the org');
    asAllow(decide(oneRole, REQ('DELETE', '/items/1'), carol, NOW));
    const oneDept = apply(base, 'dept.user.remove', { user_id: 2, org_id: 100, department_id: 32 });
    assert.ok(oneDept.userOrgs.get('2')?.has('100'), 'still a member of the org');
    asAllow(decide(oneDept, REQ('POST', '/items'), bob, NOW));
  });
  test('auth delete / replace (only the removed bits apply)', () => {
    const alice: Principal = { kind: 'user', userId: '1', via: 'bearer', tokenId: '1' };
    asDeny(decide(apply(base, 'auth.delete', { auth_id: 1, service_id: 12, mask: 2 }), REQ('GET', '/items'), alice, NOW), 403, 'permission_denied');
    const rep = apply(base, 'auth.replace', { auth_id: 1, service_id: 12, mask: PERM.ADD | PERM.VIEW });
    assert.equal(userMask(rep, '1', SVC), PERM.VIEW, 'the added ADD waits for the re-read');
    assert.equal(userMask(apply(base, 'auth.replace', { auth_id: 1, service_id: 12, mask: PERM.ADD }), '1', SVC), 0);
  });
  test('grant closing and scheduling', () => {
    const app: Principal = { kind: 'app', appId: '1', via: 'instance' };
    const R = REQ('GET', '/items/1', '13');
    asDeny(decide(apply(base, 'grant.cancel.app', { grant_id: 1, app_id: 1, api_id: 'x', effective_end: new Date(NOW).toISOString() }), R, app, NOW), 403, 'grant_cancelled');
    asDeny(decide(apply(base, 'grant.expire', { grant_id: 1, app_id: 1, api_id: 'x', effective_end: NOW }), R, app, NOW), 403, 'grant_expired');
    asDeny(decide(apply(base, 'grant.withdraw', { grant_id: 2, app_id: 1, api_id: 'x' }), REQ('GET', '/items', '13'), app, NOW), 403, 'grant_required');
    const sched = apply(base, 'grant.cancel.schedule', { grant_id: 1, cancel_at: NOW + 2 * DAY });
    const d = asAllow(decide(sched, R, app, NOW));
    assert.equal(d.clientHeaders['X-UtilMeta-Grant-State'], 'CANCEL_SCHEDULED');
    asDeny(decide(sched, R, app, NOW + 2 * DAY), 403, 'grant_cancelled');
    asAllow(decide(base, R, app, NOW + 2 * DAY));
  });
  test('app disabled / deleted, service mode, api update', () => {
    const app: Principal = { kind: 'app', appId: '1', via: 'instance' };
    asDeny(decide(apply(base, 'app.update', { app_id: 1, status: 'DISABLED' }), REQ('GET', '/items'), app, NOW), 403, 'principal_disabled');
    asDeny(decide(apply(base, 'app.delete', { app_id: APP_ID }), REQ('GET', '/items'), app, NOW), 403, 'principal_disabled');
    assert.equal(applyEffect(base, 'app.update', { app_id: 1, status: 'ACTIVE' }).outcome, 'not_tightening');
    assert.equal(decide(apply(base, 'service.auth.mode', { service_id: 12, mode: 'OFF' }), REQ('POST', '/items'), null, NOW).result, 'ALLOW');
    asDeny(decide(apply(base, 'service.auth.mode', { service_id: 999, mode: 'ENFORCE' }), REQ('GET', '/x', '999'), null, NOW), 401, 'authn_required');
    const alice: Principal = { kind: 'user', userId: '1', via: 'bearer', tokenId: '1' };
    asDeny(decide(apply(base, 'api.update', { api_id: APIS.get.apiId, permission: 'EXPORT', auth_enabled: true }), REQ('GET', '/items/1'), alice, NOW), 403, 'permission_denied');
    asAllow(decide(apply(base, 'api.update', { api_id: APIS.create.apiId, permission: null, auth_enabled: false }), REQ('POST', '/items'), null, NOW));
  });
  test('reload, loosening and malformed payloads', () => {
    assert.equal(applyEffect(base, 'auth.add', { reload: true }).outcome, 'reload');
    assert.equal(applyEffect(base, 'grant.approve', { grant_id: 1 }).outcome, 'not_tightening');
    throwsInvalid(() => applyEffect(base, 'grant.cancel.schedule', { grant_id: 1, cancel_at: 'soon' }), 'effect.cancel_at');
    throwsInvalid(() => applyEffect(base, 'token.revoke', { token_ids: [{}] }), 'effect.token_ids[0]');
    throwsInvalid(() => applyEffect(base, 'key.delete', {}), 'effect.ak');
    throwsInvalid(() => applyEffect(base, 'service.auth.mode', { service_id: 1, mode: 'ON' }), 'effect.mode');
    throwsInvalid(() => applyEffect(base, 'key.delete', null), 'effect');
  });
  test('loosening re-reads merge with withRows', () => {
    const app: Principal = { kind: 'app', appId: '1', via: 'instance' };
    const R = REQ('GET', '/items', '13');
    asDeny(decide(base, R, app, NOW), 403, 'grant_pending');
    const approved = withRows(base, { grants: [grant(2, apiIdOf('13', 'GET', '/items'), 'ACTIVE', NOW, NOW + DAY)] });
    asAllow(decide(approved, R, app, NOW));
    asDeny(decide(base, R, app, NOW), 403, 'grant_pending');
    const alice: Principal = { kind: 'user', userId: '1', via: 'bearer', tokenId: '1' };
    const more = withRows(base, { serviceAuths: [{ id: 1, serviceId: SVC, authObjectType: 'USER', authObjectId: 1, permMask: PERM.VIEW | PERM.ADD }] });
    asAllow(decide(more, REQ('POST', '/items'), alice, NOW));
    const newApi = withRows(base, { apis: [{ ...APIS.list, apiId: 'f'.repeat(32), method: 'GET', pathTemplate: '/brand/{x}', routeKey: '/brand/{}', permission: 'EXPORT' }] });
    asDeny(decide(newApi, REQ('GET', '/brand/1'), alice, NOW), 403, 'permission_denied');
  });
});

describe('list query (GET /api/v1/services/auth)', () => {
  const base = { serviceId: '12', authObjectType: 'GROUP' };
  test('defaults and required parameters', () => {
    const q = parseAuthListQuery(base);
    assert.deepEqual(q, { serviceId: '12', authObjectType: 'GROUP', authObjectId: null, createdDate: null, pageNo: 1, pageSize: 10, orderBy: 'id', orderSort: 'ASC', infoScope: 'BASIC', filters: [] });
    throwsInvalid(() => parseAuthListQuery({ authObjectType: 'USER' }), 'serviceId');
    throwsInvalid(() => parseAuthListQuery({ serviceId: '1' }), 'authObjectType');
    throwsInvalid(() => parseAuthListQuery({ serviceId: '1', authObjectType: 'user' }), 'authObjectType');
    throwsInvalid(() => parseAuthListQuery({ serviceId: 'x', authObjectType: 'USER' }), 'serviceId');
    throwsInvalid(() => parseAuthListQuery({ serviceId: '99999999999999999999', authObjectType: 'USER' }), 'serviceId');
    throwsInvalid(() => parseAuthListQuery({ serviceId: ['1', '2'], authObjectType: 'USER' }), 'serviceId');
  });
  test('paging, ordering, scope, createdDate', () => {
    const q = parseAuthListQuery(new URLSearchParams({ ...base, pageNo: '100000', pageSize: '2000', orderBy: 'createdDate', orderSort: 'DESC', infoScope: 'DETAIL', createdDate: '2021-01-01T10:00:00+08:00', authObjectId: '5' }));
    assert.equal(q.pageNo, 100000);
    assert.equal(q.pageSize, 2000);
    assert.equal(q.createdDate, '2021-01-01T02:00:00.000Z');
    assert.equal(q.authObjectId, '5');
    for (const [k, v] of [['pageNo', '0'], ['pageNo', '100001'], ['pageSize', '2001'], ['pageSize', '1.5'], ['pageSize', '-1'], ['orderBy', 'name'], ['orderSort', 'asc'], ['infoScope', 'ALL'], ['createdDate', '2021-01-01T10:00:00'], ['createdDate', '2021-02-30T10:00:00Z'], ['authObjectId', '0']]) {
      throwsInvalid(() => parseAuthListQuery({ ...base, [k]: v }), k);
    }
  });
  test('filters: gaps, every key type and op, errors naming filters[i]', () => {
    const q = parseAuthListQuery({
      ...base,
      'filters[0].key': 'id', 'filters[0].op': 'IN', 'filters[0].value': '1,2,3',
      'filters[3].key': 'authObjectName', 'filters[3].op': 'MATCH', 'filters[3].value': '50%_off',
      'filters[19].key': 'createdDate', 'filters[19].op': 'IS_NULL',
      'filters[7].key': 'permissions', 'filters[7].op': 'NOT_IN', 'filters[7].value': 'GRANT,SHARE',
    });
    assert.deepEqual(q.filters.map((f) => [f.index, f.key, f.op, f.values]), [
      [0, 'id', 'IN', ['1', '2', '3']], [3, 'authObjectName', 'MATCH', ['50%_off']], [7, 'permissions', 'NOT_IN', ['GRANT', 'SHARE']], [19, 'createdDate', 'IS_NULL', []],
    ]);
    const bad: Array<[Record<string, string>, string]> = [
      [{ 'filters[3].key': 'nope', 'filters[3].op': 'EQUAL', 'filters[3].value': '1' }, 'filters[3].key'],
      [{ 'filters[3].op': 'EQUAL', 'filters[3].value': '1' }, 'filters[3].key'],
      [{ 'filters[3].key': 'id', 'filters[3].value': '1' }, 'filters[3].op'],
      [{ 'filters[3].key': 'id', 'filters[3].op': 'LIKE', 'filters[3].value': '1' }, 'filters[3].op'],
      [{ 'filters[3].key': 'id', 'filters[3].op': 'MATCH', 'filters[3].value': '1' }, 'filters[3].op'],
      [{ 'filters[3].key': 'createdDate', 'filters[3].op': 'IN', 'filters[3].value': '1' }, 'filters[3].op'],
      [{ 'filters[3].key': 'permissions', 'filters[3].op': 'GREATER_THAN', 'filters[3].value': 'VIEW' }, 'filters[3].op'],
      [{ 'filters[3].key': 'id', 'filters[3].op': 'EQUAL', 'filters[3].value': 'abc' }, 'filters[3].value'],
      [{ 'filters[3].key': 'id', 'filters[3].op': 'EQUAL' }, 'filters[3].value'],
      [{ 'filters[3].key': 'id', 'filters[3].op': 'IN', 'filters[3].value': '1,,2' }, 'filters[3].value'],
      [{ 'filters[3].key': 'updatedDate', 'filters[3].op': 'LESS_THAN', 'filters[3].value': '2021-01-01' }, 'filters[3].value'],
      [{ 'filters[3].key': 'permissions', 'filters[3].op': 'EQUAL', 'filters[3].value': 'view' }, 'filters[3].value'],
      [{ 'filters[20].key': 'id', 'filters[20].op': 'EQUAL', 'filters[20].value': '1' }, 'filters[20].key'],
      [{ 'filters[01].key': 'id' }, 'filters[01].key'],
      [{ 'filters[1].kee': 'id' }, 'filters[1].kee'],
    ];
    for (const [extra, field] of bad) throwsInvalid(() => parseAuthListQuery({ ...base, ...extra }), field);
  });
  test('the SQL builder keeps every value in parameters', () => {
    const q = parseAuthListQuery({
      ...base, authObjectId: '5', createdDate: '2021-01-01T00:00:00Z', pageNo: '3', pageSize: '20', orderBy: 'updatedDate', orderSort: 'DESC',
      'filters[0].key': 'createdBy', 'filters[0].op': 'NOT_IN', 'filters[0].value': "o'brien,x; DROP TABLE y",
      'filters[1].key': 'updatedBy', 'filters[1].op': 'MATCH_END', 'filters[1].value': '\\_%',
      'filters[2].key': 'permissions', 'filters[2].op': 'EQUAL', 'filters[2].value': 'EXPORT',
    });
    const { list, count } = buildAuthListSql(q);
    for (const v of ["o'brien", 'DROP TABLE', 'EXPORT', '2021']) assert.ok(!list.text.includes(v), v);
    assert.deepEqual(list.values, ['12', 'GROUP', '5', '2021-01-01T00:00:00.000Z', "o'brien", 'x; DROP TABLE y', '%\\\\\\_\\%', 256, 20, 40]);
    assert.deepEqual(count.values, list.values.slice(0, -2));
    assert.match(list.text, /ORDER BY a\.updated_at DESC, a\.id DESC\nLIMIT \$9::bigint OFFSET \$10::bigint$/);
    assert.ok(!/LIMIT|ORDER/.test(count.text));
  });
});

describe('layered map (copy-on-write state maps)', () => {
  test('drafts never change what they were drafted from', async () => {
    const { LayeredMap, COMPACT_AT } = await import('../src/access/layered-map.ts');
    const base = new Map([['a', 1], ['b', 2]]);
    const d1 = LayeredMap.draft(base);
    d1.set('c', 3).set('a', 10);
    d1.delete('b');
    assert.deepEqual([...base], [['a', 1], ['b', 2]]);
    assert.deepEqual([...d1].sort(), [['a', 10], ['c', 3]]);
    assert.equal(d1.size, 2);
    assert.equal(d1.has('b'), false);
    const d2 = LayeredMap.draft(d1);
    d2.set('b', 20);
    d2.delete('c');
    assert.deepEqual([...d1].sort(), [['a', 10], ['c', 3]]);
    assert.deepEqual([...d2].sort(), [['a', 10], ['b', 20]]);
    assert.equal(d2.size, 2);
    // Long chains fold into a new base and stay correct.
    let m = LayeredMap.draft(base);
    for (let i = 0; i < COMPACT_AT * 2 + 5; i++) {
      m = LayeredMap.draft(m);
      m.set(`k${i}`, i);
      if (i % 3 === 0) m.delete(`k${i - 1}`);
    }
    assert.equal(m.get('k0'), 0);
    assert.equal(m.get('k2'), undefined);
    assert.equal(m.get('a'), 1);
    assert.equal(m.size, [...m].length);
  });
  test('a long run of tightening events keeps every earlier state intact', () => {
    let s = buildDecisionState(rows());
    const states = [s];
    for (let i = 0; i < 3000; i++) {
      s = applyEffect(s, 'jti.revoke', { jtis: [`j${i}`] }).state;
      if (i === 1500) s = applyEffect(s, 'token.revoke', { token_ids: [1] }).state;
      states.push(s);
    }
    assert.equal(s.revokedJtis.size, 3000);
    assert.equal(states[1000].revokedJtis.size, 1000);
    assert.equal(authenticateBearer(states[1500], token(1), NOW).kind, 'user');
    assert.equal((authenticateBearer(states[1502], token(1), NOW) as { state: string }).state, 'token_revoked');
  });
});

describe('platform authority (supervisor / operations)', () => {
  test('edge jti denylist and the TEST_PERMISSION supervisor policy', async () => {
    const { decideSupervisor, jtiRevoked } = await import('../src/access/platform-policy.ts');
    let s = buildDecisionState(rows());
    assert.equal(jtiRevoked(s, 'j9'), false);
    s = applyEffect(s, 'jti.revoke', { jtis: ['j9'] }).state;
    assert.equal(jtiRevoked(s, 'j9'), true);
    assert.equal(decideSupervisor(s, SVC, 'GET', { sub: 'p-alice', jti: 'j9' }).result, 'DENY');
    // Default PLATFORM policy: the platform's own authority.
    assert.deepEqual(decideSupervisor(s, SVC, 'DELETE', { sub: 'nobody' }), { result: 'ALLOW', userId: null, testOnly: false });
    s = withRows(s, { services: [{ serviceId: SVC, authMode: 'ENFORCE', apisAuthEnabled: false, supervisorPolicy: 'TEST_PERMISSION' }] });
    assert.deepEqual(decideSupervisor(s, SVC, 'GET', { sub: 'p-alice' }), { result: 'ALLOW', userId: '1', testOnly: false });
    // TEST alone (gina): allowed for any method, only towards non-production instances.
    s = withRows(s, { platformSso: [{ userId: 7, ssoUserId: 'p-gina' }] });
    assert.deepEqual(decideSupervisor(s, SVC, 'DELETE', { sub: 'p-gina' }), { result: 'ALLOW', userId: '7', testOnly: true });
    const d = decideSupervisor(s, SVC, 'POST', { sub: 'p-alice' });
    assert.equal(d.result === 'DENY' && d.state, 'permission_denied');
    assert.equal(d.result === 'DENY' && d.required, 'ADD');
    const un = decideSupervisor(s, SVC, 'GET', { sub: 'p-zed' });
    assert.equal(un.result === 'DENY' && un.state, 'platform_user_unmapped');
    const dis = decideSupervisor(s, SVC, 'GET', { sub: 'p-dave' });
    assert.equal(dis.result === 'DENY' && dis.state, 'principal_disabled');
    // In AUDIT the policy is not enforced.
    const audit = applyEffect(s, 'service.auth.mode', { service_id: SVC, mode: 'AUDIT' }).state;
    assert.equal(decideSupervisor(audit, SVC, 'POST', { sub: 'p-alice' }).result, 'ALLOW');
  });
});
