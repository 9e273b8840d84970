// The directory domain (orgs, users, departments, roles, projects, SSO) on real
// PostgreSQL, driven through its route table the way the HTTP layer will; plus
// pure tests of the route matcher and the input parsing.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { DomainError } from '../src/core/errors.ts';
import {
  DIRECTORY_ROUTES, matchDirectoryRoute, runDirectoryOp, parseDirectoryInput, parseBody, parseQuery, parseUserRef, parseDeptRef,
  type DirectoryCaller, type DirectoryDeps,
} from '../src/access/directory.ts';
import { AuthzStore } from '../src/access/store.ts';
import { verifyPassword } from '../src/access/crypto.ts';
import { migratedAuthzDb, type AuthzDb } from './support/authz.ts';

// ---------------------------------------------------------------- pure: routes and input

function domainErr(code: string, field?: string) {
  return (err: unknown) => {
    assert.ok(err instanceof DomainError, `expected a DomainError, got ${String(err)}`);
    assert.equal(err.code, code, `code (${err.message})`);
    if (field !== undefined) assert.equal(err.field, field, `field (${err.message})`);
    return true;
  };
}

describe('route table and matcher', () => {
  test('every (method, path) is listed once and every op but notImplemented is distinct', () => {
    const keys = DIRECTORY_ROUTES.map((r) => `${r.method} ${r.path}`);
    assert.equal(new Set(keys).size, keys.length);
    const ops = DIRECTORY_ROUTES.filter((r) => r.op !== 'notImplemented').map((r) => r.op);
    assert.equal(new Set(ops).size, ops.length);
    assert.equal(DIRECTORY_ROUTES.filter((r) => r.op === 'notImplemented').length, 3);
    for (const r of DIRECTORY_ROUTES) {
      if (r.method === 'GET') assert.equal(r.needs, 'read', `${r.method} ${r.path}`);
      else assert.notEqual(r.needs, 'read', `${r.method} ${r.path}`);
    }
  });

  test('literal segments beat parameters, params are extracted and decoded', () => {
    const sso = matchDirectoryRoute('POST', '/users/sso');
    assert.ok(sso && 'route' in sso);
    assert.equal(sso.route.op, 'bindSso');
    const root = matchDirectoryRoute('GET', '/orgs/3/departments/root');
    assert.ok(root && 'route' in root);
    assert.equal(root.route.op, 'getRootDepartment');
    const users = matchDirectoryRoute('get', '/orgs/3/departments/origin_id_a%2Fb/users');
    assert.ok(users && 'route' in users);
    assert.deepEqual(users.params, { org_id: '3', department_id: 'origin_id_a/b' });
    const del = matchDirectoryRoute('DELETE', '/orgs/1/roles/2/subjects/users/account_bob');
    assert.ok(del && 'route' in del);
    assert.equal(del.route.op, 'removeRoleSubject');
    assert.equal(del.params.user_id, 'account_bob');
  });

  test('wrong method lists the allowed ones; unknown path is null', () => {
    assert.deepEqual(matchDirectoryRoute('PUT', '/orgs'), { allowed: ['GET', 'POST'] });
    assert.equal(matchDirectoryRoute('GET', '/nope'), null);
    assert.equal(matchDirectoryRoute('GET', '/orgs/1/users/2/3'), null);
  });
});

describe('input parsing', () => {
  test('path refs: ids, account_ and origin_id_ forms; junk is PARAM_INVALID naming the field', () => {
    assert.deepEqual(parseUserRef('17'), { id: 17 });
    assert.deepEqual(parseUserRef('account_a.b@c'), { account: 'a.b@c' });
    assert.deepEqual(parseDeptRef('origin_id_x-1'), { originId: 'x-1' });
    assert.throws(() => parseUserRef('-3'), domainErr('PARAM_INVALID', 'user_id'));
    assert.throws(() => parseUserRef('account_'), domainErr('PARAM_INVALID', 'user_id'));
    assert.throws(() => parseDeptRef('root'), domainErr('PARAM_INVALID', 'department_id'));
  });

  test('queries: booleans as 0/1/true/false, id lists, paging bounds, enums', () => {
    const q = parseQuery('userSearch', new URLSearchParams('fuzzy=1&user_ids=3,4&with_sso=true&is_superuser=0&page=2&page_size=5&product=x'));
    assert.deepEqual(
      { fuzzy: q.fuzzy, ids: q.user_ids, sso: q.with_sso, su: q.is_superuser, page: q.page, size: q.page_size },
      { fuzzy: true, ids: [3, 4], sso: true, su: false, page: 2, size: 5 },
    );
    assert.throws(() => parseQuery('userSearch', { fuzzy: '2' }), domainErr('PARAM_INVALID', 'fuzzy'));
    assert.throws(() => parseQuery('userSearch', { user_ids: '1,x' }), domainErr('PARAM_INVALID', 'user_ids[1]'));
    assert.throws(() => parseQuery('userSearch', { sso_type: 'ldap' }), domainErr('PARAM_INVALID', 'sso_type'));
    assert.throws(() => parseQuery('paging', { page: '0' }), domainErr('PARAM_INVALID', 'page'));
    assert.throws(() => parseQuery('paging', { page_size: '1001' }), domainErr('PARAM_INVALID', 'page_size'));
    assert.throws(() => parseQuery('userDelete', { handover_user_id: '1', handover_user_account: 'a' }), domainErr('PARAM_INVALID', 'handover_user_account'));
  });

  test('parseDirectoryInput checks every op without running it', () => {
    assert.deepEqual(parseDirectoryInput('removeOrgUser', { params: { org_id: '4', user_id: 'account_bob' } }), [4, { account: 'bob' }]);
    assert.deepEqual(parseDirectoryInput('listUserRoles', { params: { user_id: '9' }, query: { with_perms: '0' } }), [null, { id: 9 }, { with_perms: false }]);
    assert.throws(() => parseDirectoryInput('listOrgUsers', { params: { org_id: 'x' } }), domainErr('PARAM_INVALID', 'org_id'));
    assert.throws(() => parseDirectoryInput('patchRole', { params: { org_id: '1', role_id: '2' }, body: { child_ids: 'x' } }), domainErr('PARAM_INVALID', 'child_ids'));
    assert.throws(() => parseDirectoryInput('notImplemented', {}), domainErr('NOT_IMPLEMENTED'));
    const bad = { params: { org_id: 'x', user_id: '!', role_id: 'x', project_id: 'x', department_id: 'x' }, body: 'nope', query: {} };
    for (const r of DIRECTORY_ROUTES) {
      if (r.op === 'notImplemented') continue;
      if (r.op === 'listOrgs' || r.op === 'listProjects' || r.op === 'searchUsers') {
        assert.ok(Array.isArray(parseDirectoryInput(r.op, bad)), r.op); // no path parameters or body to get wrong
        continue;
      }
      // every other op rejects bad ids or a body of the wrong type with PARAM_INVALID, never a crash
      assert.throws(() => parseDirectoryInput(r.op, bad), domainErr('PARAM_INVALID'), r.op);
    }
  });

  test('bodies: wrong types and rule breaks name the field', () => {
    assert.throws(() => parseBody('createUsers', [{ account: 'a1', username: 'A', password: 'short' }]), domainErr('PARAM_INVALID', '[0].password'));
    assert.throws(() => parseBody('createUsers', { account: 'a1' }), domainErr('PARAM_INVALID'));
    assert.throws(() => parseBody('createUsers', [{ account: '-bad', username: 'A', password: 'longenough' }]), domainErr('PARAM_INVALID', '[0].account'));
    assert.throws(() => parseBody('addOrgUsers', { user_ids: [1], accounts: ['a'] }), domainErr('PARAM_INVALID', 'accounts'));
    assert.throws(() => parseBody('addOrgUsers', {}), domainErr('PARAM_INVALID', 'user_ids'));
    assert.throws(() => parseBody('patchUser', { status: 2 }), domainErr('PARAM_INVALID', 'status'));
    assert.throws(() => parseBody('patchUser', { cp_action_type: 'merge' }), domainErr('PARAM_INVALID', 'cp_action_type'));
    assert.throws(() => parseBody('createRole', { name: 'r', management_permissions: ['root'] }), domainErr('PARAM_INVALID', 'management_permissions[0]'));
    assert.throws(() => parseBody('createRole', { name: 'r', subjects: [{ type: 'user' }] }), domainErr('PARAM_INVALID', 'subjects[0].id'));
    assert.throws(() => parseBody('createProject', { name: 'p', is_permanent: 'no' }), domainErr('PARAM_INVALID', 'is_permanent'));
    assert.throws(() => parseBody('createProject', { name: 'p', is_permanent: false, started_at: '2022-02-30' }), domainErr('PARAM_INVALID', 'started_at'));
    assert.throws(() => parseBody('bindSso', { users: [{ user_id: 1, account: 'a', sso_type: 'lark', sso_user_id: 'x' }] }), domainErr('PARAM_INVALID', 'users[0].user_id'));
    assert.throws(() => parseBody('createOrg', undefined), domainErr('PARAM_INVALID', 'body'));
  });
});

// ---------------------------------------------------------------- PostgreSQL

let t: AuthzDb;
let deps: DirectoryDeps;
let admin: DirectoryCaller;
let adminId: number;
const committed: string[] = [];

before(async () => {
  t = await migratedAuthzDb();
  const store = new AuthzStore(t.sql);
  store.onCommit((events) => committed.push(...events.map((e) => e.action)));
  deps = { sql: t.sql, store };
  const [u] = await t.sql<{ id: string }[]>`INSERT INTO authz_user (account, username, is_superuser) VALUES ('root-admin', 'Root', true) RETURNING id`;
  adminId = Number(u!.id);
  admin = { userId: adminId, account: 'root-admin', isSuperuser: true, managementPermissions: [], credential: 'cli', requestId: 'req-1' };
});
after(async () => {
  await t?.close();
});

const reader = (userId: number): DirectoryCaller => ({ userId, isSuperuser: false, managementPermissions: [] });

/** Calls an operation by method and path, like the HTTP layer would. */
async function call(caller: DirectoryCaller, method: string, path: string, opts: { query?: Record<string, string>; body?: unknown } = {}): Promise<any> {
  const m = matchDirectoryRoute(method, path);
  assert.ok(m && 'route' in m, `no route for ${method} ${path}`);
  return runDirectoryOp(deps, caller, m.route, { params: m.params, query: opts.query, body: opts.body });
}

async function seq(): Promise<number> {
  const [r] = await t.sql<{ seq: string }[]>`SELECT seq FROM authz_state`;
  return Number(r!.seq);
}
async function eventsAfter(s: number): Promise<{ action: string; target_type: string; target_id: string; effect: any; actor_id: string | null; request_id: string | null }[]> {
  return t.sql`SELECT action, target_type, target_id, effect, actor_id, request_id FROM authz_event WHERE seq > ${s} ORDER BY seq` as any;
}

/** Asserts the call fails with `code` and that nothing was written (no event). */
async function failsClean(run: () => Promise<unknown>, code: string, field?: string): Promise<DomainError> {
  const s = await seq();
  let caught: unknown;
  await assert.rejects(run(), (err) => {
    caught = err;
    return domainErr(code, field)(err);
  });
  assert.equal(await seq(), s, 'a failed operation writes no event');
  return caught as DomainError;
}

let counter = 0;
const uniq = (p: string) => `${p}${++counter}`;

async function newOrg(): Promise<{ id: number; name: string; rootId: number }> {
  const name = uniq('org-');
  assert.equal(await call(admin, 'POST', '/orgs', { body: { name } }), null);
  const orgs = await call(admin, 'GET', '/orgs');
  const org = orgs.find((o: any) => o.name === name);
  const root = await call(admin, 'GET', `/orgs/${org.id}/departments/root`);
  return { id: org.id, name, rootId: root.id };
}

async function newUsers(n: number, extra: Record<string, unknown> = {}): Promise<any[]> {
  const body = Array.from({ length: n }, () => {
    const a = uniq('user');
    return { account: a, username: a.toUpperCase(), password: 'password-1', ...extra };
  });
  return call(admin, 'POST', '/users', { body });
}

describe('orgs', () => {
  test('create makes the org and its root department, with one org.create event', async () => {
    const s = await seq();
    const org = await newOrg();
    const root = await call(admin, 'GET', `/orgs/${org.id}/departments/root`, { query: { with_children: 'true' } });
    assert.equal(root.name, org.name);
    assert.equal(root.super_id, null);
    assert.equal(root.org_id, org.id);
    assert.deepEqual(root.children, []);
    const ev = await eventsAfter(s);
    assert.deepEqual(ev.map((e) => e.action), ['org.create']);
    assert.deepEqual(ev[0]!.effect, { org_id: org.id });
    assert.equal(ev[0]!.actor_id, String(adminId));
    assert.equal(ev[0]!.request_id, 'req-1');
    assert.ok(committed.includes('org.create'), 'store listeners saw the commit');
    const listed = (await call(admin, 'GET', '/orgs')).find((o: any) => o.id === org.id);
    assert.equal(listed.creator_id, adminId);
    assert.equal(listed.creator.account, 'root-admin');
    assert.equal(listed.users_count, 0);
    assert.match(listed.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/);
  });

  test('a duplicate name is ORG_EXISTS and writes nothing', async () => {
    const org = await newOrg();
    await failsClean(() => call(admin, 'POST', '/orgs', { body: { name: org.name } }), 'ORG_EXISTS', 'name');
  });

  test('writes need directory_manage; reads do not', async () => {
    const [u] = await newUsers(1);
    await failsClean(() => call(reader(u.id), 'POST', '/orgs', { body: { name: uniq('x') } }), 'FORBIDDEN');
    assert.ok(Array.isArray(await call(reader(u.id), 'GET', '/orgs')));
    const manager: DirectoryCaller = { userId: u.id, isSuperuser: false, managementPermissions: ['directory_manage'] };
    assert.equal(await call(manager, 'POST', '/orgs', { body: { name: uniq('mgr-org') } }), null);
  });
});

describe('users', () => {
  test('batch create returns seed-shaped users, hashes passwords with scrypt, one user.create event each', async () => {
    const s = await seq();
    const a = uniq('bob');
    const out = await call(admin, 'POST', '/users', {
      body: [
        { account: a, username: 'Bob', password: 'password-1', email: 'b@example.com', custom_property: { a: '1' } },
        { account: `${a}x`, username: 'Bob X', password: 'password-2', status: 0 },
      ],
    });
    assert.equal(out.length, 2);
    assert.deepEqual(Object.keys(out[1]).sort(), ['account', 'avatar_url', 'created_at', 'current_org_id', 'email', 'id', 'is_superuser', 'last_login', 'mobile_number', 'status', 'updated_at', 'username'].sort());
    assert.equal(out[0].email, 'b@example.com');
    assert.deepEqual(out[0].custom_property, { a: '1' });
    assert.equal(out[1].status, 0);
    assert.equal(out[0].last_login, null);
    const [row] = await t.sql`SELECT password_hash FROM authz_user WHERE id = ${out[0].id}`;
    assert.match(row!.password_hash, /^scrypt\$/);
    assert.equal(await verifyPassword('password-1', row!.password_hash), true);
    assert.equal(await verifyPassword('password-2', row!.password_hash), false);
    assert.ok(!String(row!.password_hash).includes('password-1'));
    const ev = await eventsAfter(s);
    assert.deepEqual(ev.map((e) => [e.action, e.effect.user_id]), [['user.create', out[0].id], ['user.create', out[1].id]]);
  });

  test('all or nothing: one existing account (any case) → ACCOUNT_EXISTS with data.accounts, nothing written', async () => {
    const [u] = await newUsers(1);
    const fresh = uniq('fresh');
    const err = await failsClean(
      () => call(admin, 'POST', '/users', { body: [{ account: fresh, username: 'F', password: 'password-1' }, { account: u.account.toUpperCase(), username: 'D', password: 'password-1' }] }),
      'ACCOUNT_EXISTS',
    );
    assert.deepEqual(err.data, { accounts: [u.account] });
    assert.equal(err.kind, 'conflict');
    assert.equal((await t.sql`SELECT 1 FROM authz_user WHERE account = ${fresh}`).length, 0);
    // a repeat inside the same batch counts too
    const rep = uniq('rep');
    await failsClean(() => call(admin, 'POST', '/users', { body: [{ account: rep, username: 'R', password: 'password-1' }, { account: rep, username: 'R', password: 'password-1' }] }), 'ACCOUNT_EXISTS');
  });

  test('search: exact and fuzzy, ids, superuser, paging; contacts only for managers', async () => {
    const tag = uniq('srch');
    const made = await call(admin, 'POST', '/users', {
      body: [
        { account: `${tag}-alpha`, username: 'Alpha One', password: 'password-1', email: 'a@example.com', mobile_number: '123', custom_property: { k: 'v' } },
        { account: `${tag}-beta`, username: 'Beta', password: 'password-1' },
      ],
    });
    const exact = await call(admin, 'GET', '/users', { query: { account: `${tag}-ALPHA` } });
    assert.deepEqual(exact.map((u: any) => u.id), [made[0].id]);
    const none = await call(admin, 'GET', '/users', { query: { account: tag } });
    assert.equal(none.length, 0);
    const fuzzy = await call(admin, 'GET', '/users', { query: { account: tag, fuzzy: '1' } });
    assert.deepEqual(fuzzy.map((u: any) => u.id), made.map((u: any) => u.id));
    const byName = await call(admin, 'GET', '/users', { query: { username: 'alpha', fuzzy: '1', user_ids: `${made[0].id},${made[1].id}` } });
    assert.deepEqual(byName.map((u: any) => u.id), [made[0].id]);
    const supers = await call(admin, 'GET', '/users', { query: { is_superuser: '1' } });
    assert.ok(supers.every((u: any) => u.is_superuser) && supers.some((u: any) => u.id === adminId));
    const page2 = await call(admin, 'GET', '/users', { query: { account: tag, fuzzy: '1', page: '2', page_size: '1' } });
    assert.deepEqual(page2.map((u: any) => u.id), [made[1].id]);
    const asAdmin = await call(admin, 'GET', '/users', { query: { user_ids: String(made[0].id), with_custom_property: '1' } });
    assert.equal(asAdmin[0].email, 'a@example.com');
    assert.deepEqual(asAdmin[0].custom_property, { k: 'v' });
    const asReader = await call(reader(made[1].id), 'GET', '/users', { query: { user_ids: String(made[0].id), with_custom_property: '1' } });
    assert.equal(asReader[0].email, null);
    assert.equal(asReader[0].mobile_number, null);
    assert.equal(asReader[0].custom_property, null);
    assert.equal(asReader[0].account, `${tag}-alpha`);
  });

  test('patch by id or account_: fields, status 0 effect, custom_property add vs overwrite', async () => {
    const [u] = await newUsers(1, { custom_property: { a: '1', b: ['2'] } });
    let s = await seq();
    const p1 = await call(admin, 'PATCH', `/users/account_${u.account}`, { body: { username: 'Renamed', custom_property: { c: 3 }, cp_action_type: 'add' } });
    assert.equal(p1.username, 'Renamed');
    assert.deepEqual(p1.custom_property, { a: '1', b: ['2'], c: 3 });
    const p2 = await call(admin, 'PATCH', `/users/${u.id}`, { body: { custom_property: { z: 1 } } });
    assert.deepEqual(p2.custom_property, { z: 1 });
    s = await seq();
    const p3 = await call(admin, 'PATCH', `/users/${u.id}`, { body: { status: 0 } });
    assert.equal(p3.status, 0);
    const ev = await eventsAfter(s);
    assert.deepEqual(ev.map((e) => [e.action, e.effect]), [['user.update', { user_id: u.id, status: 0 }]]);
    await failsClean(() => call(admin, 'PATCH', '/users/account_nobody-here', { body: { username: 'x' } }), 'USER_NOT_FOUND', 'user_id');
  });

  test('a password change revokes SESSION tokens (not PERSONAL) with a token.revoke event', async () => {
    const [u] = await newUsers(1);
    const mk = async (kind: string, via: string, n: number) => {
      const [r] = await t.sql<{ id: string }[]>`INSERT INTO authz_token (token_sha256, token_hint, user_id, kind, issued_via, expires_at)
        VALUES (${Buffer.alloc(32, n)}, 'umt_abcdefgh', ${u.id}, ${kind}, ${via}, now() + interval '1 hour') RETURNING id`;
      return Number(r!.id);
    };
    const session = await mk('SESSION', 'password', counter + 1);
    const personal = await mk('PERSONAL', 'personal', counter + 101);
    const s = await seq();
    await call(admin, 'PATCH', `/users/${u.id}`, { body: { password: 'a-new-password' } });
    const [h] = await t.sql`SELECT password_hash FROM authz_user WHERE id = ${u.id}`;
    assert.equal(await verifyPassword('a-new-password', h!.password_hash), true);
    const rows = await t.sql<{ id: string; revoked: boolean }[]>`SELECT id, revoked_at IS NOT NULL AS revoked FROM authz_token WHERE user_id = ${u.id} ORDER BY id`;
    assert.deepEqual(rows.map((r) => [Number(r.id), r.revoked]), [[session, true], [personal, false]]);
    const ev = await eventsAfter(s);
    assert.deepEqual(ev.map((e) => e.action), ['user.update', 'token.revoke']);
    assert.deepEqual(ev[1]!.effect, { token_ids: [session] });
    await failsClean(() => call(admin, 'PATCH', `/users/${u.id}`, { body: { password: 'short' } }), 'PARAM_INVALID', 'password');
  });
});

describe('org membership', () => {
  test('add by ids or accounts; the first org sets current_org_id; list with and without paging', async () => {
    const org1 = await newOrg();
    const org2 = await newOrg();
    const [a, b, c] = await newUsers(3);
    const s = await seq();
    assert.equal(await call(admin, 'POST', `/orgs/${org1.id}/users`, { body: { user_ids: [a.id, b.id] } }), null);
    assert.deepEqual((await eventsAfter(s)).map((e) => [e.action, e.effect]), [
      ['org.user.add', { user_id: a.id, org_id: org1.id }],
      ['org.user.add', { user_id: b.id, org_id: org1.id }],
    ]);
    await call(admin, 'POST', `/orgs/${org1.id}/users`, { body: { accounts: [c.account] } });
    await call(admin, 'POST', `/orgs/${org2.id}/users`, { body: { user_ids: [a.id] } });
    const all = await call(admin, 'GET', `/orgs/${org1.id}/users`);
    assert.deepEqual(all.map((u: any) => u.id), [a.id, b.id, c.id]);
    assert.equal(all[0].current_org_id, org1.id, 'the second org does not move current_org_id');
    const page = await call(admin, 'GET', `/orgs/${org1.id}/users`, { query: { page: '2', page_size: '2' } });
    assert.deepEqual(page.map((u: any) => u.id), [c.id]);
    // re-adding members changes nothing and writes no event
    const s2 = await seq();
    await call(admin, 'POST', `/orgs/${org1.id}/users`, { body: { user_ids: [a.id] } });
    assert.equal(await seq(), s2);
    await failsClean(() => call(admin, 'POST', `/orgs/${org1.id}/users`, { body: { user_ids: [a.id], accounts: [b.account] } }), 'PARAM_INVALID', 'accounts');
    await failsClean(() => call(admin, 'POST', `/orgs/${org1.id}/users`, { body: { user_ids: [a.id, 987654321] } }), 'USER_NOT_FOUND', 'user_ids');
    await failsClean(() => call(admin, 'POST', '/orgs/987654321/users', { body: { user_ids: [a.id] } }), 'ORG_NOT_FOUND', 'org_id');
    await assert.rejects(call(admin, 'GET', '/orgs/987654321/users'), domainErr('ORG_NOT_FOUND'));
  });

  test('removal cascades to the org’s department and role memberships (tightening effect)', async () => {
    const org = await newOrg();
    const other = await newOrg();
    const [u] = await newUsers(1);
    await call(admin, 'POST', `/orgs/${org.id}/users`, { body: { user_ids: [u.id] } });
    await call(admin, 'POST', `/orgs/${other.id}/users`, { body: { user_ids: [u.id] } });
    await call(admin, 'POST', `/orgs/${org.id}/departments/${org.rootId}/users`, { body: { ids: [u.id] } });
    const role = await call(admin, 'POST', `/orgs/${org.id}/roles`, { body: { name: 'r', subjects: [{ type: 'user', id: u.id }] } });
    await call(admin, 'POST', `/orgs/${other.id}/departments/${other.rootId}/users`, { body: { accounts: [u.account] } });
    const s = await seq();
    assert.equal(await call(admin, 'DELETE', `/orgs/${org.id}/users/account_${u.account}`), null);
    const ev = await eventsAfter(s);
    assert.deepEqual(ev.map((e) => [e.action, e.effect]), [['org.user.remove', { user_id: u.id, org_id: org.id }]]);
    assert.equal((await t.sql`SELECT 1 FROM authz_department_user WHERE org_id = ${org.id} AND user_id = ${u.id}`).length, 0);
    assert.equal((await t.sql`SELECT 1 FROM authz_role_user WHERE role_id = ${role.id}`).length, 0);
    assert.equal((await t.sql`SELECT 1 FROM authz_department_user WHERE org_id = ${other.id} AND user_id = ${u.id}`).length, 1, 'other orgs untouched');
    const [me] = await call(admin, 'GET', '/users', { query: { user_ids: String(u.id) } });
    assert.equal(me.current_org_id, other.id, 'current org falls back to a remaining org');
    await failsClean(() => call(admin, 'DELETE', `/orgs/${org.id}/users/${u.id}`), 'USER_NOT_IN_ORG');
  });
});

describe('departments', () => {
  test('create, search, tree, patch (incl. origin_id_ refs and cycles), users, delete rules', async () => {
    const org = await newOrg();
    const [a, b, outsider] = await newUsers(3);
    await call(admin, 'POST', `/orgs/${org.id}/users`, { body: { user_ids: [a.id, b.id] } });
    let s = await seq();
    const eng = await call(admin, 'POST', `/orgs/${org.id}/departments`, { body: { name: 'Engineering', origin_id: 'eng' } });
    assert.deepEqual(eng, { id: eng.id, origin_id: 'eng', super_id: org.rootId, name: 'Engineering', order: 0, org_id: org.id, perm_inherit: 'to_super' });
    const web = await call(admin, 'POST', `/orgs/${org.id}/departments`, { body: { name: 'Web', super_id: eng.id, perm_inherit: 'to_children' } });
    assert.deepEqual((await eventsAfter(s)).map((e) => [e.action, e.effect]), [
      ['dept.create', { department_id: eng.id, org_id: org.id }],
      ['dept.create', { department_id: web.id, org_id: org.id }],
    ]);
    await failsClean(() => call(admin, 'POST', `/orgs/${org.id}/departments`, { body: { name: 'Dup', origin_id: 'eng' } }), 'DEPARTMENT_EXISTS', 'origin_id');
    await failsClean(() => call(admin, 'POST', `/orgs/${org.id}/departments`, { body: { name: 'X', super_id: 987654321 } }), 'DEPARTMENT_NOT_FOUND', 'super_id');

    const tree = await call(admin, 'GET', `/orgs/${org.id}/departments/root`, { query: { with_children: '1', recursively: '1', with_users: '1', with_roles: '1', with_perms: '1' } });
    assert.equal(tree.children[0].id, eng.id);
    assert.equal(tree.children[0].children[0].id, web.id);
    assert.deepEqual(tree.roles, []);
    assert.deepEqual(tree.permissions, []);
    const shallow = await call(admin, 'GET', `/orgs/${org.id}/departments/root`, { query: { with_children: 'true' } });
    assert.deepEqual(shallow.children[0].children, [], 'without recursively only direct children are expanded');

    const svc = await newService();
    await t.sql`INSERT INTO authz_service_auth (service_id, auth_object_type, department_id, perm_mask) VALUES (${svc}, 'DEPT', ${eng.id}, ${1 | 2 | 16})`;
    const withPerms = await call(admin, 'GET', `/orgs/${org.id}/departments`, { query: { department_ids: String(eng.id), with_perms: 'true' } });
    assert.deepEqual(withPerms[0].permissions, [{ res_key: `utilmeta_service_${svc}`, actions: ['ADD', 'VIEW', 'TEST'] }]);
    const found = await call(admin, 'GET', `/orgs/${org.id}/departments`, { query: { q: 'ENGIN' } });
    assert.deepEqual(found.map((d: any) => d.id), [eng.id]);
    const byOrigin = await call(admin, 'GET', `/orgs/${org.id}/departments`, { query: { origin_ids: 'eng', department_ids: `${eng.id},${web.id}` } });
    assert.deepEqual(byOrigin.map((d: any) => d.id), [eng.id]);

    // cycles: moving eng under its own child, or the root anywhere
    await failsClean(() => call(admin, 'PATCH', `/orgs/${org.id}/departments/origin_id_eng`, { body: { super_id: web.id } }), 'DEPARTMENT_CYCLE', 'super_id');
    await failsClean(() => call(admin, 'PATCH', `/orgs/${org.id}/departments/${eng.id}`, { body: { super_id: eng.id } }), 'DEPARTMENT_CYCLE', 'super_id');
    await failsClean(() => call(admin, 'PATCH', `/orgs/${org.id}/departments/${org.rootId}`, { body: { super_id: web.id } }), 'DEPARTMENT_CYCLE');
    await failsClean(() => call(admin, 'PATCH', `/orgs/${org.id}/departments/${web.id}`, { body: { super_id: null } }), 'PARAM_INVALID', 'super_id');
    s = await seq();
    const moved = await call(admin, 'PATCH', `/orgs/${org.id}/departments/${web.id}`, { body: { super_id: org.rootId, name: 'Web2', perm_inherit: 'to_super' } });
    assert.equal(moved.super_id, org.rootId);
    assert.equal(moved.name, 'Web2');
    assert.deepEqual((await eventsAfter(s)).map((e) => [e.action, e.effect]), [['dept.update', { department_id: web.id, org_id: org.id, super_id: org.rootId, perm_inherit: 'to_super' }]]);
    await call(admin, 'PATCH', `/orgs/${org.id}/departments/${web.id}`, { body: { super_id: eng.id } });

    // users
    await failsClean(
      () => call(admin, 'POST', `/orgs/${org.id}/departments/${web.id}/users`, { body: { accounts: [a.account, outsider.account] } }),
      'USER_NOT_IN_ORG',
      'accounts',
    );
    assert.equal((await t.sql`SELECT 1 FROM authz_department_user WHERE department_id = ${web.id}`).length, 0, 'all or nothing');
    s = await seq();
    await call(admin, 'POST', `/orgs/${org.id}/departments/${web.id}/users`, { body: { accounts: [a.account], ids: [b.id] } });
    await call(admin, 'POST', `/orgs/${org.id}/departments/origin_id_eng/users`, { body: { ids: [b.id] } });
    assert.deepEqual((await eventsAfter(s)).map((e) => [e.action, e.effect.user_id, e.effect.department_id]), [
      ['dept.user.add', a.id, web.id],
      ['dept.user.add', b.id, web.id],
      ['dept.user.add', b.id, eng.id],
    ]);
    const engOnly = await call(admin, 'GET', `/orgs/${org.id}/departments/origin_id_eng/users`);
    assert.deepEqual({ total: engOnly.total, ids: engOnly.users.map((u: any) => u.id) }, { total: 1, ids: [b.id] });
    const withKids = await call(admin, 'GET', `/orgs/${org.id}/departments/${eng.id}/users`, { query: { with_children: '1', with_departments: '1', page: '1', page_size: '1' } });
    assert.equal(withKids.total, 2);
    assert.deepEqual(withKids.users.map((u: any) => u.id), [a.id]);
    assert.deepEqual(withKids.users[0].departments.map((d: any) => d.id), [web.id]);
    assert.equal(withKids.users[0].email !== undefined, true);
    const bDepts = await call(admin, 'GET', `/orgs/${org.id}/users/account_${b.account}/departments`);
    assert.deepEqual(bDepts.map((d: any) => d.id).sort(), [eng.id, web.id].sort());

    s = await seq();
    await call(admin, 'DELETE', `/orgs/${org.id}/departments/${web.id}/users`, { body: { ids: [a.id] } });
    assert.deepEqual((await eventsAfter(s)).map((e) => [e.action, e.effect]), [['dept.user.remove', { user_id: a.id, org_id: org.id, department_id: web.id }]]);

    // delete rules
    await failsClean(() => call(admin, 'DELETE', `/orgs/${org.id}/departments/${eng.id}`), 'DEPARTMENT_HAS_CHILDREN');
    await failsClean(() => call(admin, 'DELETE', `/orgs/${org.id}/departments/${org.rootId}`), 'ROOT_DEPARTMENT');
    await failsClean(() => call(admin, 'DELETE', `/orgs/${org.id}/departments/987654321`), 'DEPARTMENT_NOT_FOUND', 'department_id');
    s = await seq();
    await call(admin, 'DELETE', `/orgs/${org.id}/departments/${web.id}`);
    const ev = await eventsAfter(s);
    assert.deepEqual(ev.map((e) => [e.action, e.effect]), [['dept.delete', { department_id: web.id, org_id: org.id, user_ids: [b.id] }]]);
    assert.equal((await t.sql`SELECT 1 FROM authz_department WHERE id = ${web.id}`).length, 0);
  });

  test('a department in another org is not found through this org', async () => {
    const o1 = await newOrg();
    const o2 = await newOrg();
    await failsClean(() => call(admin, 'POST', `/orgs/${o1.id}/departments`, { body: { name: 'x', super_id: o2.rootId } }), 'DEPARTMENT_NOT_FOUND', 'super_id');
  });
});

async function newService(): Promise<number> {
  const [s] = await t.sql<{ id: string }[]>`INSERT INTO utilmeta_service (name, public, created_time, data) VALUES (${uniq('svc-')}, false, now(), '{}') RETURNING id`;
  return Number(s!.id);
}

describe('roles', () => {
  test('create, list shapes, with_perms, user_group refused, members must be in the org', async () => {
    const org = await newOrg();
    const [a, b, outsider] = await newUsers(3);
    await call(admin, 'POST', `/orgs/${org.id}/users`, { body: { user_ids: [a.id, b.id] } });
    const base = await call(admin, 'POST', `/orgs/${org.id}/roles`, { body: { name: 'base' } });
    const project = await call(admin, 'POST', `/orgs/${org.id}/projects`, { body: { name: 'p', is_permanent: true } });
    const s = await seq();
    const role = await call(admin, 'POST', `/orgs/${org.id}/roles`, {
      body: {
        name: 'ops', description: 'Ops', is_all_projects: false, management_permissions: ['project_manage', 'project_manage'], product_names: ['DataFinder'],
        project_ids: [project.id], child_ids: [base.id], subjects: [{ type: 'user', id: a.id }, { type: 'user', account: b.account }],
      },
    });
    assert.equal(role.name, 'ops');
    assert.deepEqual(role.management_permissions, ['project_manage']);
    assert.deepEqual(role.product_names, ['DataFinder']);
    assert.deepEqual(role.project_ids, [project.id]);
    assert.deepEqual(role.child_ids, [base.id]);
    assert.deepEqual(role.children, [{ id: base.id, name: 'base', description: '' }]);
    assert.deepEqual(role.org, { id: org.id, name: org.name, creator: { origin_id: String(adminId), subject_type: 0, name: 'root-admin' } });
    assert.deepEqual(role.subjects.map((x: any) => [x.type, x.data.id, x.data.account]), [['user', a.id, a.account], ['user', b.id, b.account]]);
    assert.deepEqual((await eventsAfter(s)).map((e) => [e.action, e.effect]), [['role.create', { role_id: role.id, org_id: org.id, user_ids: [a.id, b.id], child_ids: [base.id] }]]);

    const svc = await newService();
    await t.sql`INSERT INTO authz_service_auth (service_id, auth_object_type, role_id, perm_mask) VALUES (${svc}, 'GROUP', ${role.id}, ${2 | 256})`;
    const listed = await call(admin, 'GET', `/orgs/${org.id}/roles`, { query: { role_ids: String(role.id) } });
    assert.equal(listed.length, 1);
    assert.deepEqual(listed[0].permissions, [{ res_key: `utilmeta_service_${svc}`, actions: ['VIEW', 'EXPORT'] }]);
    const bare = await call(admin, 'GET', `/orgs/${org.id}/roles`, { query: { include_subjects: 'false', with_perms: '0' } });
    assert.equal(bare.length, 2);
    assert.equal(bare[0].subjects, null);
    assert.equal(bare[0].permissions, null);
    assert.equal(bare.find((x: any) => x.id === base.id).is_child, true);

    await failsClean(() => call(admin, 'POST', `/orgs/${org.id}/roles`, { body: { name: 'g', subjects: [{ type: 'user_group', id: 1 }] } }), 'USER_GROUP_NOT_SUPPORTED', 'subjects[0].type');
    await failsClean(() => call(admin, 'POST', `/orgs/${org.id}/roles`, { body: { name: 'o', subjects: [{ type: 'user', id: outsider.id }] } }), 'USER_NOT_IN_ORG', 'subjects[0].id');
    await failsClean(() => call(admin, 'POST', `/orgs/${org.id}/roles`, { body: { name: 'ops' } }), 'ROLE_EXISTS', 'name');
    const other = await newOrg();
    const foreign = await call(admin, 'POST', `/orgs/${other.id}/roles`, { body: { name: 'foreign' } });
    await failsClean(() => call(admin, 'POST', `/orgs/${org.id}/roles`, { body: { name: 'c', child_ids: [foreign.id] } }), 'ROLE_NOT_FOUND', 'child_ids');

    // the user's roles, in the org and across orgs
    const mine = await call(admin, 'GET', `/orgs/${org.id}/users/${a.id}/roles`, { query: { with_perms: 'false' } });
    assert.deepEqual(mine.map((x: any) => x.id), [role.id]);
    const everywhere = await call(admin, 'GET', `/users/account_${a.account}/roles`);
    assert.deepEqual(everywhere.map((x: any) => x.id), [role.id]);
  });

  test('patch: subjects replace the members, child_ids in the org, cycles refused; add and remove subjects', async () => {
    const org = await newOrg();
    const [a, b, c] = await newUsers(3);
    await call(admin, 'POST', `/orgs/${org.id}/users`, { body: { user_ids: [a.id, b.id, c.id] } });
    const r1 = await call(admin, 'POST', `/orgs/${org.id}/roles`, { body: { name: 'r1', subjects: [{ type: 'user', id: a.id }, { type: 'user', id: b.id }] } });
    const r2 = await call(admin, 'POST', `/orgs/${org.id}/roles`, { body: { name: 'r2', child_ids: [r1.id] } });
    const r3 = await call(admin, 'POST', `/orgs/${org.id}/roles`, { body: { name: 'r3', child_ids: [r2.id] } });
    await failsClean(() => call(admin, 'PATCH', `/orgs/${org.id}/roles/${r1.id}`, { body: { child_ids: [r3.id] } }), 'ROLE_CYCLE', 'child_ids');
    await failsClean(() => call(admin, 'PATCH', `/orgs/${org.id}/roles/${r1.id}`, { body: { child_ids: [r1.id] } }), 'ROLE_CYCLE', 'child_ids');
    await failsClean(() => call(admin, 'PATCH', `/orgs/${org.id}/roles/987654321`, { body: { name: 'x' } }), 'ROLE_NOT_FOUND', 'role_id');

    let s = await seq();
    assert.equal(await call(admin, 'PATCH', `/orgs/${org.id}/roles/${r1.id}`, { body: { subjects: [{ type: 'user', id: b.id }, { type: 'user', account: c.account }], description: 'new' } }), null);
    const members = await t.sql<{ user_id: string }[]>`SELECT user_id FROM authz_role_user WHERE role_id = ${r1.id} ORDER BY user_id`;
    assert.deepEqual(members.map((m) => Number(m.user_id)), [b.id, c.id]);
    let ev = await eventsAfter(s);
    assert.deepEqual(ev.map((e) => e.action), ['role.update', 'role.subject.remove']);
    assert.deepEqual(ev[0]!.effect.removed_user_ids, [a.id]);
    assert.deepEqual(ev[1]!.effect, { user_id: a.id, org_id: org.id, role_id: r1.id });
    const [after] = await call(admin, 'GET', `/orgs/${org.id}/roles`, { query: { role_ids: String(r1.id) } });
    assert.equal(after.description, 'new');

    // r3 stops inheriting r2 and inherits r1 directly (no cycle)
    await call(admin, 'PATCH', `/orgs/${org.id}/roles/${r3.id}`, { body: { child_ids: [r1.id] } });
    const [r3After] = await call(admin, 'GET', `/orgs/${org.id}/roles`, { query: { role_ids: String(r3.id) } });
    assert.deepEqual(r3After.child_ids, [r1.id]);

    s = await seq();
    await call(admin, 'POST', `/orgs/${org.id}/roles/${r2.id}/subjects`, { body: { subjects: [{ type: 'user', account: a.account }] } });
    await failsClean(() => call(admin, 'POST', `/orgs/${org.id}/roles/${r2.id}/subjects`, { body: { subjects: [{ type: 'user_group', id: 5 }] } }), 'USER_GROUP_NOT_SUPPORTED');
    await call(admin, 'DELETE', `/orgs/${org.id}/roles/${r2.id}/subjects/users/account_${a.account}`);
    ev = await eventsAfter(s);
    assert.deepEqual(ev.map((e) => [e.action, e.effect]), [
      ['role.subject.add', { user_id: a.id, org_id: org.id, role_id: r2.id }],
      ['role.subject.remove', { user_id: a.id, org_id: org.id, role_id: r2.id }],
    ]);
  });
});

describe('projects', () => {
  test('create, get, patch, list per org and global, delete; dates are inclusive days', async () => {
    const org = await newOrg();
    const s = await seq();
    const p = await call(admin, 'POST', `/orgs/${org.id}/projects`, {
      body: { name: 'Proj', description: 'd', extra: { event_usage: { limit: 1000 } }, product: 'tester', is_permanent: false, started_at: '2022-04-19', expired_at: '2022-04-19' },
    });
    assert.match(p.resource_key, new RegExp(`^utilmeta_proxy_org_${org.id}_project_[0-9a-f-]{36}$`));
    assert.deepEqual(
      { org: p.org_id, s: p.started_at, e: p.expired_at, perm: p.is_permanent, creator: p.creator_id, extra: p.extra, cls: p.is_classified },
      { org: org.id, s: '2022-04-19', e: '2022-04-19', perm: false, creator: adminId, extra: { event_usage: { limit: 1000 } }, cls: false },
    );
    assert.equal(p.creator.account, 'root-admin');
    assert.deepEqual((await eventsAfter(s)).map((e) => [e.action, e.effect]), [['project.create', { project_id: p.id, org_id: org.id }]]);
    assert.deepEqual(await call(admin, 'GET', `/projects/${p.id}`), p);

    await failsClean(() => call(admin, 'POST', `/orgs/${org.id}/projects`, { body: { name: 'x', is_permanent: false, started_at: '2022-01-01' } }), 'PARAM_INVALID', 'expired_at');
    await failsClean(() => call(admin, 'POST', `/orgs/${org.id}/projects`, { body: { name: 'x', is_permanent: false, started_at: '2022-01-02', expired_at: '2022-01-01' } }), 'PARAM_INVALID', 'expired_at');
    await failsClean(() => call(admin, 'POST', `/orgs/${org.id}/projects`, { body: { name: 'Proj', is_permanent: true } }), 'PROJECT_EXISTS', 'name');

    const s2 = await seq();
    const patched = await call(admin, 'PATCH', `/projects/${p.id}`, { body: { expired_at: '2022-05-01', description: 'd2' } });
    assert.equal(patched.expired_at, '2022-05-01');
    assert.equal(patched.description, 'd2');
    assert.equal(patched.name, 'Proj');
    assert.deepEqual((await eventsAfter(s2)).map((e) => [e.action, e.effect]), [
      ['project.update', { project_id: p.id, org_id: org.id, is_permanent: false, started_at: '2022-04-19', expired_at: '2022-05-01' }],
    ]);
    await failsClean(() => call(admin, 'PATCH', `/projects/${p.id}`, { body: { started_at: null } }), 'PARAM_INVALID', 'started_at');
    const perm = await call(admin, 'PATCH', `/projects/${p.id}`, { body: { is_permanent: true, started_at: null, expired_at: null } });
    assert.deepEqual([perm.is_permanent, perm.started_at, perm.expired_at], [true, null, null]);

    const other = await newOrg();
    const q = await call(admin, 'POST', `/orgs/${other.id}/projects`, { body: { name: 'Other', is_permanent: true } });
    assert.deepEqual((await call(admin, 'GET', `/orgs/${org.id}/projects`)).map((x: any) => x.id), [p.id]);
    const global = (await call(admin, 'GET', '/projects')).map((x: any) => x.id);
    assert.ok(global.includes(p.id) && global.includes(q.id));
    await assert.rejects(call(admin, 'GET', '/projects/987654321'), domainErr('PROJECT_NOT_FOUND', 'project_id'));

    await failsClean(() => call(admin, 'DELETE', `/orgs/${other.id}/projects/${p.id}`), 'PROJECT_NOT_FOUND');
    const s3 = await seq();
    assert.equal(await call(admin, 'DELETE', `/orgs/${org.id}/projects/${p.id}`), null);
    assert.deepEqual((await eventsAfter(s3)).map((e) => e.action), ['project.delete']);
  });

  test('a project with apps cannot be deleted; project_manage may write projects but not the directory', async () => {
    const org = await newOrg();
    const [u] = await newUsers(1);
    const pm: DirectoryCaller = { userId: u.id, isSuperuser: false, managementPermissions: ['project_manage'] };
    const p = await call(pm, 'POST', `/orgs/${org.id}/projects`, { body: { name: 'Apps', is_permanent: true } });
    assert.equal(p.creator_id, u.id);
    await failsClean(() => call(pm, 'POST', `/orgs/${org.id}/departments`, { body: { name: 'no' } }), 'FORBIDDEN');
    await failsClean(() => call(reader(u.id), 'PATCH', `/projects/${p.id}`, { body: { name: 'no' } }), 'FORBIDDEN');
    await t.sql`INSERT INTO authz_app (app_id, project_id, name, owner_user_id) VALUES (${'a'.repeat(32)}, ${p.id}, 'app', ${u.id})`;
    const err = await failsClean(() => call(pm, 'DELETE', `/orgs/${org.id}/projects/${p.id}`), 'PROJECT_HAS_APPS');
    assert.deepEqual(err.data, { app_ids: ['a'.repeat(32)] });
    await t.sql`DELETE FROM authz_app WHERE project_id = ${p.id}`;
  });
});

describe('SSO bindings', () => {
  test('bind by id or account (utilmeta type allowed); duplicates → 409 and nothing written', async () => {
    const [a, b] = await newUsers(2);
    const s = await seq();
    const sub = uniq('platform-sub-');
    assert.equal(await call(admin, 'POST', '/users/sso', { body: { users: [{ user_id: a.id, sso_type: 'utilmeta', sso_user_id: sub }, { account: b.account, sso_type: 'lark', sso_user_id: 'L1' }] } }), null);
    assert.deepEqual((await eventsAfter(s)).map((e) => [e.action, e.effect]), [
      ['user.sso.add', { user_id: a.id, sso_type: 'utilmeta' }],
      ['user.sso.add', { user_id: b.id, sso_type: 'lark' }],
    ]);
    const found = await call(admin, 'GET', '/users', { query: { sso_type: 'utilmeta', sso_user_id: sub, with_sso: '1' } });
    assert.deepEqual(found.map((u: any) => u.id), [a.id]);
    assert.deepEqual(found[0].ssos.map((x: any) => [x.user_id, x.sso_type, x.sso_user_id]), [[a.id, 'utilmeta', sub]]);
    const fresh = uniq('W');
    await failsClean(
      () => call(admin, 'POST', '/users/sso', { body: { users: [{ user_id: b.id, sso_type: 'wecom', sso_user_id: fresh }, { user_id: b.id, sso_type: 'utilmeta', sso_user_id: sub }] } }),
      'SSO_EXISTS',
      'users[1].sso_user_id',
    );
    assert.equal((await t.sql`SELECT 1 FROM authz_user_sso WHERE sso_user_id = ${fresh}`).length, 0);
    await failsClean(() => call(admin, 'POST', '/users/sso', { body: { users: [{ account: 'no-such-user', sso_type: 'lark', sso_user_id: 'x' }] } }), 'USER_NOT_FOUND', 'users[0].account');
  });
});

describe('user deletion', () => {
  test('an app owner needs a handover; with one, apps/projects move, credentials go, requests are withdrawn', async () => {
    const org = await newOrg();
    const [owner, heir] = await newUsers(2);
    const p = await call(admin, 'POST', `/orgs/${org.id}/projects`, { body: { name: 'P', is_permanent: true } });
    await t.sql`UPDATE authz_project SET creator_id = ${owner.id} WHERE id = ${p.id}`;
    const appId = 'b'.repeat(32);
    const [app] = await t.sql<{ id: string }[]>`INSERT INTO authz_app (app_id, project_id, name, owner_user_id) VALUES (${appId}, ${p.id}, 'app', ${owner.id}) RETURNING id`;
    const svc = await newService();
    const apiId = 'c'.repeat(32);
    await t.sql`INSERT INTO authz_api (api_id, service_id, method, path_template, route_key, source) VALUES (${apiId}, ${svc}, 'GET', '/items', '/items', 'manual')`;
    const [grant] = await t.sql<{ id: string }[]>`INSERT INTO authz_grant (app_id, api_id, state) VALUES (${app!.id}, ${apiId}, 'PENDING') RETURNING id`;
    await t.sql`INSERT INTO authz_grant_request (grant_id, kind, requested_end_at, applicant_user_id, applicant_account)
      VALUES (${grant!.id}, 'APPLY', now() + interval '1 day', ${owner.id}, ${owner.account})`;
    await t.sql`INSERT INTO authz_token (token_sha256, token_hint, user_id, kind, issued_via, expires_at)
      VALUES (${Buffer.alloc(32, 77)}, 'umt_zzzzzzzz', ${owner.id}, 'PERSONAL', 'personal', now() + interval '1 day')`;
    await t.sql`INSERT INTO authz_service_auth (service_id, auth_object_type, user_id, perm_mask) VALUES (${svc}, 'USER', ${owner.id}, 2)`;
    const akid = `UMAK${'Q'.repeat(16)}`;
    await t.sql`INSERT INTO authz_access_key (access_key_id, owner_user_id, secret_ciphertext, secret_nonce, master_key_id)
      VALUES (${akid}, ${owner.id}, ${Buffer.alloc(56)}, ${Buffer.alloc(12)}, 'mk1')`;

    const err = await failsClean(() => call(admin, 'DELETE', `/users/${owner.id}`), 'HANDOVER_REQUIRED');
    assert.deepEqual(err.data, { app_ids: [appId] });
    assert.equal(err.kind, 'conflict');
    await failsClean(() => call(admin, 'DELETE', `/users/${owner.id}`, { query: { handover_user_account: 'nobody-at-all' } }), 'USER_NOT_FOUND', 'handover_user_account');
    await failsClean(() => call(admin, 'DELETE', `/users/${owner.id}`, { query: { handover_user_id: String(owner.id) } }), 'PARAM_INVALID', 'handover_user_id');

    const s = await seq();
    assert.equal(await call(admin, 'DELETE', `/users/account_${owner.account}`, { query: { handover_user_id: String(heir.id) } }), null);
    const ev = await eventsAfter(s);
    assert.deepEqual(ev.map((e) => e.action), ['grant.withdraw', 'user.delete']);
    assert.deepEqual(ev[1]!.effect, { user_id: owner.id });
    assert.equal(ev[0]!.effect.grant_id, Number(grant!.id));
    assert.equal((await t.sql`SELECT 1 FROM authz_user WHERE id = ${owner.id}`).length, 0);
    const [appRow] = await t.sql`SELECT owner_user_id FROM authz_app WHERE id = ${app!.id}`;
    assert.equal(Number(appRow!.owner_user_id), heir.id);
    const [projRow] = await t.sql`SELECT creator_id FROM authz_project WHERE id = ${p.id}`;
    assert.equal(Number(projRow!.creator_id), heir.id);
    const [req] = await t.sql`SELECT status FROM authz_grant_request WHERE grant_id = ${grant!.id}`;
    assert.equal(req!.status, 'WITHDRAWN');
    const [g] = await t.sql`SELECT state, closed_by FROM authz_grant WHERE id = ${grant!.id}`;
    assert.deepEqual([g!.state, g!.closed_by], ['WITHDRAWN', 'APP']);
    assert.equal((await t.sql`SELECT 1 FROM authz_service_auth WHERE service_id = ${svc}`).length, 0);
    assert.equal((await t.sql`SELECT 1 FROM authz_token WHERE token_hint = 'umt_zzzzzzzz'`).length, 0);
    assert.equal((await t.sql`SELECT 1 FROM authz_access_key WHERE access_key_id = ${akid}`).length, 0);
    await failsClean(() => call(admin, 'DELETE', `/users/${owner.id}`), 'USER_NOT_FOUND', 'user_id');
  });

  test('a user without apps is deleted without a handover', async () => {
    const [u] = await newUsers(1);
    await call(admin, 'DELETE', `/users/${u.id}`);
    assert.equal((await call(admin, 'GET', '/users', { query: { user_ids: String(u.id) } })).length, 0);
  });
});

test('directory_manage is no path to admin: superusers and authz_manage roles need an admin', async () => {
  const org = await newOrg();
  const [m, victim] = await newUsers(2);
  await call(admin, 'POST', `/orgs/${org.id}/users`, { body: { user_ids: [m.id, victim.id] } });
  const manager: DirectoryCaller = { userId: m.id, isSuperuser: false, managementPermissions: ['directory_manage'] };
  await failsClean(() => call(manager, 'PATCH', `/users/${adminId}`, { body: { password: 'taken-over!' } }), 'FORBIDDEN', 'user_id');
  await failsClean(() => call(manager, 'DELETE', `/users/${adminId}`), 'FORBIDDEN');
  await failsClean(() => call(manager, 'POST', `/orgs/${org.id}/roles`, { body: { name: 'admins', management_permissions: ['authz_manage'] } }), 'FORBIDDEN', 'management_permissions');
  const plain = await call(manager, 'POST', `/orgs/${org.id}/roles`, { body: { name: 'plain', management_permissions: ['directory_manage'] } });
  await failsClean(() => call(manager, 'PATCH', `/orgs/${org.id}/roles/${plain.id}`, { body: { management_permissions: ['authz_manage'] } }), 'FORBIDDEN');
  const admins = await call(admin, 'POST', `/orgs/${org.id}/roles`, { body: { name: 'admins', management_permissions: ['authz_manage'] } });
  await failsClean(() => call(manager, 'POST', `/orgs/${org.id}/roles/${admins.id}/subjects`, { body: { subjects: [{ type: 'user', id: m.id }] } }), 'FORBIDDEN');
  const authzAdmin: DirectoryCaller = { userId: victim.id, isSuperuser: false, managementPermissions: ['directory_manage', 'authz_manage'] };
  await call(authzAdmin, 'POST', `/orgs/${org.id}/roles/${admins.id}/subjects`, { body: { subjects: [{ type: 'user', id: m.id }] } });
  await call(manager, 'PATCH', `/users/${victim.id}`, { body: { username: 'ok for a non-superuser' } });
});

test('concurrent batch creates of one account: exactly one wins, the other is ACCOUNT_EXISTS', async () => {
  const acct = uniq('race');
  const results = await Promise.allSettled(
    [1, 2, 3].map(() => call(admin, 'POST', '/users', { body: [{ account: acct, username: 'R', password: 'password-1' }] })),
  );
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
  for (const r of results) if (r.status === 'rejected') domainErr('ACCOUNT_EXISTS')(r.reason);
  const [n] = await t.sql`SELECT count(*)::int AS n FROM authz_event WHERE action = 'user.create' AND after->>'account' = ${acct}`;
  assert.equal(n!.n, 1);
});

test('extra/{product} endpoints answer NOT_IMPLEMENTED', async () => {
  for (const method of ['GET', 'PATCH', 'DELETE']) {
    await assert.rejects(call(admin, method, '/users/1/extra/datarangers', { body: {} }), (err: unknown) => {
      assert.ok(err instanceof DomainError);
      assert.equal(err.kind, 'not_implemented');
      assert.equal(err.code, 'NOT_IMPLEMENTED');
      return true;
    });
  }
});
