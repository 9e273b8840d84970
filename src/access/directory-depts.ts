// Departments: one tree per org with a single root; users must be org members.
import { resolveUsers } from './directory-orgs.ts';
import {
  dirError, directoryWrite, findOrg, findUser, num, pageSlice, userWire, USER_COLUMNS,
  type DeptRef, type DirectoryCaller, type DirectoryDeps, type Paging, type Q, type UserRef, type UserRow,
} from './directory-common.ts';
import { permissionsFor } from './directory-perms.ts';

interface DeptRow {
  id: string;
  org_id: string;
  origin_id: string;
  super_id: string | null;
  name: string;
  order: number;
  perm_inherit: 'to_super' | 'to_children';
}
const DEPT_COLUMNS = 'd.id, d.org_id, d.origin_id, d.super_id, d.name, d."order", d.perm_inherit';

const deptWire = (d: DeptRow) => ({
  id: num(d.id),
  origin_id: d.origin_id,
  super_id: num(d.super_id, true),
  name: d.name,
  order: d.order,
  org_id: num(d.org_id),
  perm_inherit: d.perm_inherit,
});

export async function findDept(q: Q, orgId: number, ref: DeptRef, opts: { lock?: boolean; field?: string } = {}): Promise<DeptRow> {
  const lock = opts.lock ? q`FOR UPDATE` : q``;
  const rows =
    'id' in ref
      ? await q<DeptRow[]>`SELECT ${q.unsafe(DEPT_COLUMNS)} FROM authz_department d WHERE d.org_id = ${orgId} AND d.id = ${ref.id} ${lock}`
      : await q<DeptRow[]>`SELECT ${q.unsafe(DEPT_COLUMNS)} FROM authz_department d WHERE d.org_id = ${orgId} AND d.origin_id = ${ref.originId} ${lock}`;
  if (!rows[0]) {
    const what = 'id' in ref ? `id ${ref.id}` : `origin_id ${JSON.stringify(ref.originId)}`;
    throw dirError('not_found', 'DEPARTMENT_NOT_FOUND', `no department with ${what} in org ${orgId}`, { field: opts.field ?? 'department_id' });
  }
  return rows[0];
}

export interface DeptView {
  with_children?: boolean;
  recursively?: boolean;
  with_users?: boolean;
  with_perms?: boolean;
  with_roles?: boolean;
}

const deptUserWire = (u: UserRow, caller: DirectoryCaller) => {
  const w = userWire(u, caller);
  return {
    id: w.id, account: w.account, username: w.username, status: w.status, is_superuser: w.is_superuser,
    avatar_url: w.avatar_url, email: w.email, mobile_number: w.mobile_number,
  };
};

/** Renders departments with the requested extras; the org's tree is read once. */
async function renderDepts(q: Q, caller: DirectoryCaller, orgId: number, depts: DeptRow[], view: DeptView): Promise<Record<string, unknown>[]> {
  const all = view.with_children
    ? await q<DeptRow[]>`SELECT ${q.unsafe(DEPT_COLUMNS)} FROM authz_department d WHERE d.org_id = ${orgId} ORDER BY d."order", d.id`
    : [];
  const childrenOf = new Map<string, DeptRow[]>();
  for (const d of all) if (d.super_id !== null) childrenOf.set(d.super_id, [...(childrenOf.get(d.super_id) ?? []), d]);
  const render = async (d: DeptRow, depth: number): Promise<Record<string, unknown>> => {
    const out: Record<string, unknown> = deptWire(d);
    if (view.with_children) {
      const kids = childrenOf.get(d.id) ?? [];
      // Direct children only, unless `recursively` asks for the whole subtree.
      out.children = depth === 0 || view.recursively ? await Promise.all(kids.map((k) => render(k, depth + 1))) : [];
    }
    if (view.with_users) {
      const users = await q<UserRow[]>`SELECT ${q.unsafe(USER_COLUMNS)} FROM authz_user u JOIN authz_department_user du ON du.user_id = u.id
        WHERE du.department_id = ${d.id} ORDER BY u.id`;
      out.users = users.map((u) => deptUserWire(u, caller));
    }
    // Role subjects are users only, so a department is never itself in a role.
    if (view.with_roles) out.roles = [];
    if (view.with_perms) out.permissions = await permissionsFor(q, 'department_id', d.id);
    return out;
  };
  return Promise.all(depts.map((d) => render(d, 0)));
}

export async function getRootDepartment(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, view: DeptView): Promise<unknown> {
  const { sql } = deps;
  await findOrg(sql, orgId);
  const [root] = await sql<DeptRow[]>`SELECT ${sql.unsafe(DEPT_COLUMNS)} FROM authz_department d WHERE d.org_id = ${orgId} AND d.super_id IS NULL`;
  if (!root) throw dirError('not_found', 'DEPARTMENT_NOT_FOUND', `org ${orgId} has no root department`, { field: 'org_id' });
  return (await renderDepts(sql, caller, orgId, [root], view))[0];
}

export interface DeptSearch extends DeptView {
  q?: string;
  department_ids?: number[];
  origin_ids?: string[];
}

export async function searchDepartments(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, s: DeptSearch): Promise<unknown[]> {
  const { sql } = deps;
  await findOrg(sql, orgId);
  const rows = await sql<DeptRow[]>`
    SELECT ${sql.unsafe(DEPT_COLUMNS)} FROM authz_department d WHERE d.org_id = ${orgId}
    ${s.q !== undefined ? sql`AND strpos(lower(d.name), lower(${s.q})) > 0` : sql``}
    ${s.department_ids ? sql`AND d.id = ANY(${sql.array(s.department_ids.map(String), 20)})` : sql``}
    ${s.origin_ids ? sql`AND d.origin_id = ANY(${sql.array(s.origin_ids, 25)})` : sql``}
    ORDER BY d."order", d.id`;
  return renderDepts(sql, caller, orgId, rows, s);
}

export interface DeptUsersQuery extends Paging {
  with_children?: boolean;
  with_departments?: boolean;
  q?: string;
}

export async function listDepartmentUsers(
  deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, ref: DeptRef, query: DeptUsersQuery,
): Promise<{ total: number; users: unknown[] }> {
  const { sql } = deps;
  await findOrg(sql, orgId);
  const dept = await findDept(sql, orgId, ref);
  const scope = query.with_children
    ? sql`WITH RECURSIVE sub AS (SELECT id FROM authz_department WHERE id = ${dept.id}
            UNION SELECT c.id FROM authz_department c JOIN sub ON c.super_id = sub.id) SELECT id FROM sub`
    : sql`SELECT ${dept.id}::bigint`;
  const filter = query.q !== undefined
    ? sql`AND (strpos(lower(u.account), lower(${query.q})) > 0 OR strpos(lower(u.username), lower(${query.q})) > 0)`
    : sql``;
  const base = sql`FROM authz_user u WHERE u.id IN (SELECT du.user_id FROM authz_department_user du WHERE du.department_id IN (${scope})) ${filter}`;
  const [{ total }] = (await sql<{ total: string }[]>`SELECT count(*) AS total ${base}`) as unknown as [{ total: string }];
  const { limit, offset } = pageSlice(query);
  const users = await sql<UserRow[]>`SELECT ${sql.unsafe(USER_COLUMNS)} ${base} ORDER BY u.id ${limit === null ? sql`` : sql`LIMIT ${limit} OFFSET ${offset}`}`;
  let deptsOf = new Map<string, DeptRow[]>();
  if (query.with_departments && users.length) {
    const rows = await sql<(DeptRow & { user_id: string })[]>`
      SELECT du.user_id, ${sql.unsafe(DEPT_COLUMNS)} FROM authz_department_user du JOIN authz_department d ON d.id = du.department_id
      WHERE du.org_id = ${orgId} AND du.user_id = ANY(${sql.array(users.map((u) => u.id), 20)}) ORDER BY d.id`;
    deptsOf = new Map();
    for (const r of rows) deptsOf.set(r.user_id, [...(deptsOf.get(r.user_id) ?? []), r]);
  }
  return {
    total: num(total),
    users: users.map((u) => {
      const w: Record<string, unknown> = deptUserWire(u, caller);
      if (query.with_departments) w.departments = (deptsOf.get(u.id) ?? []).map(deptWire);
      return w;
    }),
  };
}

export interface DeptCreate {
  name: string;
  origin_id?: string;
  perm_inherit?: 'to_super' | 'to_children';
  super_id?: number | null;
  order?: number;
}

export async function createDepartment(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, body: DeptCreate): Promise<unknown> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    await findOrg(tx, orgId, { lock: true });
    let superId: string;
    if (body.super_id === undefined || body.super_id === null) {
      const [root] = await tx<{ id: string }[]>`SELECT id FROM authz_department WHERE org_id = ${orgId} AND super_id IS NULL`;
      if (!root) throw dirError('not_found', 'DEPARTMENT_NOT_FOUND', `org ${orgId} has no root department`, { field: 'super_id' });
      superId = root.id;
    } else {
      superId = (await findDept(tx, orgId, { id: body.super_id }, { field: 'super_id' })).id;
    }
    if (body.origin_id !== undefined) {
      const dup = await tx`SELECT 1 FROM authz_department WHERE org_id = ${orgId} AND origin_id = ${body.origin_id}`;
      if (dup.length) throw dirError('conflict', 'DEPARTMENT_EXISTS', `origin_id ${JSON.stringify(body.origin_id)} is taken in org ${orgId}`, { field: 'origin_id' });
    }
    const [row] = await tx<DeptRow[]>`
      INSERT INTO authz_department (org_id, super_id, name, perm_inherit, "order", origin_id)
      VALUES (${orgId}, ${superId}, ${body.name}, ${body.perm_inherit ?? 'to_super'}, ${body.order ?? 0},
              ${body.origin_id ?? tx`DEFAULT`})
      RETURNING id, org_id, origin_id, super_id, name, "order", perm_inherit`;
    const wire = deptWire(row!);
    emit({ action: 'dept.create', targetType: 'department', targetId: row!.id, effect: { department_id: wire.id, org_id: orgId }, after: wire });
    return wire;
  });
}

export interface DeptPatch {
  name?: string;
  perm_inherit?: 'to_super' | 'to_children';
  super_id?: number | null;
  order?: number;
}

export async function patchDepartment(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, ref: DeptRef, patch: DeptPatch): Promise<unknown> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    await findOrg(tx, orgId, { lock: true });
    const before = await findDept(tx, orgId, ref, { lock: true });
    let superId = before.super_id;
    if (patch.super_id !== undefined) {
      if (patch.super_id === null) {
        if (before.super_id !== null) {
          throw dirError('invalid', 'PARAM_INVALID', 'super_id: an org has exactly one root department; give a parent', { field: 'super_id' });
        }
      } else {
        const parent = await findDept(tx, orgId, { id: patch.super_id }, { field: 'super_id' });
        // Walk up from the new parent: reaching this department means a cycle.
        const [hit] = await tx`
          WITH RECURSIVE up AS (SELECT id, super_id FROM authz_department WHERE id = ${parent.id}
            UNION SELECT d.id, d.super_id FROM authz_department d JOIN up ON d.id = up.super_id)
          SELECT 1 FROM up WHERE id = ${before.id}`;
        if (hit) {
          throw dirError('invalid', 'DEPARTMENT_CYCLE', `moving department ${before.id} under ${parent.id} would create a cycle`, { field: 'super_id' });
        }
        superId = parent.id;
      }
    }
    const [row] = await tx<DeptRow[]>`
      UPDATE authz_department SET name = ${patch.name ?? before.name}, perm_inherit = ${patch.perm_inherit ?? before.perm_inherit},
        "order" = ${patch.order ?? before.order}, super_id = ${superId}
      WHERE id = ${before.id} RETURNING id, org_id, origin_id, super_id, name, "order", perm_inherit`;
    const wire = deptWire(row!);
    emit({
      action: 'dept.update',
      targetType: 'department',
      targetId: row!.id,
      // Moving a department or switching inheritance can narrow a user's permissions.
      effect: { department_id: wire.id, org_id: orgId, super_id: wire.super_id, perm_inherit: wire.perm_inherit },
      before: deptWire(before),
      after: wire,
    });
    return wire;
  });
}

export interface UserSet {
  accounts?: string[];
  ids?: number[];
}

export async function addDepartmentUsers(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, ref: DeptRef, body: UserSet): Promise<null> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    await findOrg(tx, orgId, { lock: true });
    const dept = await findDept(tx, orgId, ref, { lock: true });
    const users = await resolveUsers(tx, body.ids, body.accounts);
    const members = await tx<{ user_id: string }[]>`SELECT user_id FROM authz_org_user
      WHERE org_id = ${orgId} AND user_id = ANY(${tx.array(users.map((u) => u.id), 20)})`;
    const inOrg = new Set(members.map((m) => m.user_id));
    const outside = users.filter((u) => !inOrg.has(u.id));
    if (outside.length) {
      throw dirError('invalid', 'USER_NOT_IN_ORG', `not members of org ${orgId}: ${outside.map((u) => u.account).join(', ')}`, {
        field: body.accounts?.length ? 'accounts' : 'ids',
        data: { accounts: outside.map((u) => u.account), ids: outside.map((u) => num(u.id)) },
      });
    }
    for (const u of users) {
      const ins = await tx`INSERT INTO authz_department_user (org_id, department_id, user_id) VALUES (${orgId}, ${dept.id}, ${u.id})
        ON CONFLICT DO NOTHING RETURNING user_id`;
      if (ins.length) {
        emit({ action: 'dept.user.add', targetType: 'user', targetId: u.id, effect: { user_id: num(u.id), org_id: orgId, department_id: num(dept.id) } });
      }
    }
    return null;
  });
}

export async function removeDepartmentUsers(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, ref: DeptRef, body: UserSet): Promise<null> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    await findOrg(tx, orgId, { lock: true });
    const dept = await findDept(tx, orgId, ref, { lock: true });
    const users = await resolveUsers(tx, body.ids, body.accounts);
    for (const u of users) {
      const del = await tx`DELETE FROM authz_department_user WHERE department_id = ${dept.id} AND user_id = ${u.id} RETURNING user_id`;
      if (del.length) {
        emit({ action: 'dept.user.remove', targetType: 'user', targetId: u.id, effect: { user_id: num(u.id), org_id: orgId, department_id: num(dept.id) } });
      }
    }
    return null;
  });
}

export async function deleteDepartment(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, ref: DeptRef): Promise<null> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    await findOrg(tx, orgId, { lock: true });
    const dept = await findDept(tx, orgId, ref, { lock: true });
    if (dept.super_id === null) throw dirError('conflict', 'ROOT_DEPARTMENT', `department ${dept.id} is the root of org ${orgId}`, { field: 'department_id' });
    const kids = await tx`SELECT id FROM authz_department WHERE super_id = ${dept.id} LIMIT 1`;
    if (kids.length) throw dirError('conflict', 'DEPARTMENT_HAS_CHILDREN', `department ${dept.id} has sub-departments`, { field: 'department_id' });
    const users = await tx<{ user_id: string }[]>`SELECT user_id FROM authz_department_user WHERE department_id = ${dept.id}`;
    await tx`DELETE FROM authz_department WHERE id = ${dept.id}`;
    emit({
      action: 'dept.delete',
      targetType: 'department',
      targetId: dept.id,
      effect: { department_id: num(dept.id), org_id: orgId, user_ids: users.map((u) => num(u.user_id)) },
      before: deptWire(dept),
    });
    return null;
  });
}

export async function listUserDepartments(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, ref: UserRef): Promise<unknown[]> {
  void caller;
  const { sql } = deps;
  await findOrg(sql, orgId);
  const user = await findUser(sql, ref);
  const rows = await sql<DeptRow[]>`SELECT ${sql.unsafe(DEPT_COLUMNS)} FROM authz_department d
    JOIN authz_department_user du ON du.department_id = d.id WHERE du.org_id = ${orgId} AND du.user_id = ${user.id} ORDER BY d.id`;
  return rows.map(deptWire);
}
