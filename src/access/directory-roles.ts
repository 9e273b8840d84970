// Roles (the GROUP principal): members are users of the role's org; a role
// inherits its child roles; child links stay inside one org and never cycle.
import { permissionsForMany } from './directory-perms.ts';
import {
  dirError, directoryWrite, findOrg, findUser, num,
  type DirectoryCaller, type DirectoryDeps, type Q, type Tx, type UserRef,
} from './directory-common.ts';

export const MANAGEMENT_PERMISSIONS = ['directory_manage', 'authz_manage', 'project_manage'] as const;
export type ManagementPermission = (typeof MANAGEMENT_PERMISSIONS)[number];

export interface RoleSubject {
  type: 'user' | 'user_group';
  id?: number;
  account?: string;
}

export interface RoleInput {
  name?: string;
  description?: string;
  is_all_projects?: boolean;
  management_permissions?: ManagementPermission[];
  product_names?: string[];
  project_ids?: number[];
  child_ids?: number[];
  subjects?: RoleSubject[];
}

interface RoleRow {
  id: string;
  org_id: string;
  name: string;
  description: string;
  is_preset: boolean;
  is_all_projects: boolean;
  management_permissions: string[];
  product_names: string[];
}
const ROLE_COLUMNS = 'r.id, r.org_id, r.name, r.description, r.is_preset, r.is_all_projects, r.management_permissions, r.product_names';

export interface RoleView {
  include_subjects?: boolean;
  with_perms?: boolean;
}

/**
 * Roles carrying authz_manage make their members admins, so only an admin
 * (superuser or authz_manage holder) may create, change or staff them;
 * directory_manage alone must not be a path to admin.
 */
function guardAdminRole(caller: DirectoryCaller, ...permSets: (readonly string[] | undefined)[]): void {
  if (caller.isSuperuser || caller.managementPermissions.includes('authz_manage')) return;
  if (permSets.some((p) => p?.includes('authz_manage'))) {
    throw dirError('forbidden', 'FORBIDDEN', 'roles with authz_manage can only be changed by an admin', { field: 'management_permissions' });
  }
}

async function findRole(q: Q, orgId: number, roleId: number, lock = false): Promise<RoleRow> {
  const [row] = await q<RoleRow[]>`SELECT ${q.unsafe(ROLE_COLUMNS)} FROM authz_role r WHERE r.org_id = ${orgId} AND r.id = ${roleId} ${lock ? q`FOR UPDATE` : q``}`;
  if (!row) throw dirError('not_found', 'ROLE_NOT_FOUND', `no role ${roleId} in org ${orgId}`, { field: 'role_id' });
  return row;
}

/** Renders roles in the role-list shape; subjects and permissions default to included. */
async function renderRoles(q: Q, roles: RoleRow[], view: RoleView): Promise<Record<string, unknown>[]> {
  if (!roles.length) return [];
  const ids = q.array(roles.map((r) => r.id), 20);
  const orgIds = q.array([...new Set(roles.map((r) => r.org_id))], 20);
  const orgs = await q<{ id: string; name: string; creator_id: string | null; creator_name: string | null }[]>`
    SELECT o.id, o.name, o.creator_id, u.account AS creator_name FROM authz_org o LEFT JOIN authz_user u ON u.id = o.creator_id WHERE o.id = ANY(${orgIds})`;
  const children = await q<{ role_id: string; id: string; name: string; description: string }[]>`
    SELECT c.role_id, r.id, r.name, r.description FROM authz_role_child c JOIN authz_role r ON r.id = c.child_id
    WHERE c.role_id = ANY(${ids}) ORDER BY r.id`;
  const parents = await q<{ child_id: string }[]>`SELECT DISTINCT child_id FROM authz_role_child WHERE child_id = ANY(${ids})`;
  const projects = await q<{ role_id: string; project_id: string }[]>`
    SELECT role_id, project_id FROM authz_role_project WHERE role_id = ANY(${ids}) ORDER BY project_id`;
  const members = view.include_subjects === false ? [] : await q<{ role_id: string; id: string; account: string; username: string; avatar_url: string }[]>`
    SELECT ru.role_id, u.id, u.account, u.username, u.avatar_url FROM authz_role_user ru JOIN authz_user u ON u.id = ru.user_id
    WHERE ru.role_id = ANY(${ids}) ORDER BY u.id`;
  const perms = view.with_perms === false ? new Map() : await permissionsForMany(q, 'role_id', roles.map((r) => r.id));
  const isChild = new Set(parents.map((p) => p.child_id));
  const orgById = new Map(orgs.map((o) => [o.id, o]));
  const out: Record<string, unknown>[] = [];
  for (const r of roles) {
    const o = orgById.get(r.org_id)!;
    const kids = children.filter((c) => c.role_id === r.id);
    out.push({
      id: num(r.id),
      name: r.name,
      description: r.description,
      is_preset: r.is_preset,
      is_child: isChild.has(r.id),
      is_all_projects: r.is_all_projects,
      management_permissions: r.management_permissions,
      product_names: r.product_names,
      project_ids: projects.filter((p) => p.role_id === r.id).map((p) => num(p.project_id)),
      child_ids: kids.map((k) => num(k.id)),
      org: { id: num(o.id), name: o.name, creator: { origin_id: o.creator_id ?? '', subject_type: 0, name: o.creator_name ?? '' } },
      children: kids.map((k) => ({ id: num(k.id), name: k.name, description: k.description })),
      subjects: view.include_subjects === false ? null : members.filter((m) => m.role_id === r.id).map((m) => ({
        type: 'user',
        data: { id: num(m.id), name: m.username, account: m.account, username: m.username, avatar_url: m.avatar_url, description: '', subject_count: 0 },
      })),
      permissions: view.with_perms === false ? null : perms.get(r.id) ?? [],
    });
  }
  return out;
}

/** Resolves role subjects to user ids, all members of the org. */
async function subjectUsers(tx: Tx, orgId: number, subjects: RoleSubject[]): Promise<string[]> {
  const ids: string[] = [];
  for (const [i, s] of subjects.entries()) {
    if (s.type === 'user_group') {
      throw dirError('invalid', 'USER_GROUP_NOT_SUPPORTED', `subjects[${i}]: user groups are not supported; use departments or child roles`, { field: `subjects[${i}].type` });
    }
    const ref: UserRef = s.id !== undefined ? { id: s.id } : { account: s.account! };
    const field = `subjects[${i}].${s.id !== undefined ? 'id' : 'account'}`;
    const u = await findUser(tx, ref, { field });
    const member = await tx`SELECT 1 FROM authz_org_user WHERE org_id = ${orgId} AND user_id = ${u.id}`;
    if (!member.length) throw dirError('invalid', 'USER_NOT_IN_ORG', `${field}: user ${u.account} is not a member of org ${orgId}`, { field, data: { accounts: [u.account] } });
    if (!ids.includes(u.id)) ids.push(u.id);
  }
  return ids;
}

async function checkInOrg(tx: Tx, orgId: number, table: 'authz_role' | 'authz_project', ids: number[], field: string): Promise<void> {
  if (!ids.length) return;
  const rows = await tx<{ id: string }[]>`SELECT id FROM ${tx(table)} WHERE org_id = ${orgId} AND id = ANY(${tx.array(ids.map(String), 20)})`;
  const found = new Set(rows.map((r) => num(r.id)));
  const missing = ids.filter((i) => !found.has(i));
  if (missing.length) {
    const code = table === 'authz_role' ? 'ROLE_NOT_FOUND' : 'PROJECT_NOT_FOUND';
    throw dirError('not_found', code, `${field}: ${missing.join(', ')} not found in org ${orgId}`, { field, data: { ids: missing } });
  }
}

/** Would role `roleId` inheriting `childIds` close a loop? (walks down from each child) */
async function wouldCycle(tx: Tx, roleId: string, childIds: number[]): Promise<boolean> {
  if (!childIds.length) return false;
  if (childIds.some((c) => String(c) === roleId)) return true;
  const [hit] = await tx`
    WITH RECURSIVE down AS (SELECT child_id FROM authz_role_child WHERE role_id = ANY(${tx.array(childIds.map(String), 20)})
      UNION SELECT c.child_id FROM authz_role_child c JOIN down ON c.role_id = down.child_id)
    SELECT 1 FROM down WHERE child_id = ${roleId}`;
  return Boolean(hit);
}

async function setChildren(tx: Tx, orgId: number, roleId: string, childIds: number[]): Promise<void> {
  await tx`DELETE FROM authz_role_child WHERE role_id = ${roleId}`;
  for (const c of new Set(childIds)) await tx`INSERT INTO authz_role_child (org_id, role_id, child_id) VALUES (${orgId}, ${roleId}, ${c})`;
}

async function setProjects(tx: Tx, orgId: number, roleId: string, projectIds: number[]): Promise<void> {
  await tx`DELETE FROM authz_role_project WHERE role_id = ${roleId}`;
  for (const p of new Set(projectIds)) await tx`INSERT INTO authz_role_project (org_id, role_id, project_id) VALUES (${orgId}, ${roleId}, ${p})`;
}

async function nameTaken(tx: Tx, orgId: number, name: string, exceptId: string | null): Promise<void> {
  const dup = await tx`SELECT 1 FROM authz_role WHERE org_id = ${orgId} AND name = ${name} AND id IS DISTINCT FROM ${exceptId}`;
  if (dup.length) throw dirError('conflict', 'ROLE_EXISTS', `a role named ${JSON.stringify(name)} already exists in org ${orgId}`, { field: 'name' });
}

export async function createRole(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, body: RoleInput & { name: string }): Promise<unknown> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    guardAdminRole(caller, body.management_permissions);
    await findOrg(tx, orgId, { lock: true });
    await nameTaken(tx, orgId, body.name, null);
    await checkInOrg(tx, orgId, 'authz_role', body.child_ids ?? [], 'child_ids');
    await checkInOrg(tx, orgId, 'authz_project', body.project_ids ?? [], 'project_ids');
    const users = await subjectUsers(tx, orgId, body.subjects ?? []);
    const [role] = await tx<RoleRow[]>`
      INSERT INTO authz_role (org_id, name, description, is_all_projects, management_permissions, product_names)
      VALUES (${orgId}, ${body.name}, ${body.description ?? ''}, ${body.is_all_projects ?? false},
              ${tx.array(body.management_permissions ?? [], 25)}, ${tx.array(body.product_names ?? [], 25)})
      RETURNING id, org_id, name, description, is_preset, is_all_projects, management_permissions, product_names`;
    const roleId = role!.id;
    await setChildren(tx, orgId, roleId, body.child_ids ?? []);
    await setProjects(tx, orgId, roleId, body.project_ids ?? []);
    for (const u of users) await tx`INSERT INTO authz_role_user (org_id, role_id, user_id) VALUES (${orgId}, ${roleId}, ${u})`;
    const [wire] = await renderRoles(tx, [role!], {});
    emit({
      action: 'role.create',
      targetType: 'role',
      targetId: roleId,
      effect: { role_id: num(roleId), org_id: orgId, user_ids: users.map(Number), child_ids: (body.child_ids ?? []).map(Number) },
      after: wire,
    });
    return wire;
  });
}

export interface RoleListQuery extends RoleView {
  role_ids?: number[];
}

export async function listRoles(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, query: RoleListQuery): Promise<unknown[]> {
  void caller;
  const { sql } = deps;
  await findOrg(sql, orgId);
  const roles = await sql<RoleRow[]>`SELECT ${sql.unsafe(ROLE_COLUMNS)} FROM authz_role r WHERE r.org_id = ${orgId}
    ${query.role_ids ? sql`AND r.id = ANY(${sql.array(query.role_ids.map(String), 20)})` : sql``} ORDER BY r.id`;
  return renderRoles(sql, roles, query);
}

/** PATCH: only given fields change; `subjects` replaces the member list, `child_ids` the inherited roles. */
export async function patchRole(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, roleId: number, body: RoleInput): Promise<null> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    await findOrg(tx, orgId, { lock: true });
    const before = await findRole(tx, orgId, roleId, true);
    guardAdminRole(caller, before.management_permissions, body.management_permissions);
    const [beforeWire] = await renderRoles(tx, [before], {});
    if (body.name !== undefined) await nameTaken(tx, orgId, body.name, before.id);
    if (body.child_ids) {
      await checkInOrg(tx, orgId, 'authz_role', body.child_ids, 'child_ids');
      if (await wouldCycle(tx, before.id, body.child_ids)) {
        throw dirError('invalid', 'ROLE_CYCLE', `role ${roleId} cannot inherit ${body.child_ids.join(', ')}: that would create a cycle`, { field: 'child_ids' });
      }
    }
    if (body.project_ids) await checkInOrg(tx, orgId, 'authz_project', body.project_ids, 'project_ids');
    const users = body.subjects ? await subjectUsers(tx, orgId, body.subjects) : null;
    await tx`UPDATE authz_role SET name = ${body.name ?? before.name}, description = ${body.description ?? before.description},
      is_all_projects = ${body.is_all_projects ?? before.is_all_projects},
      management_permissions = ${tx.array(body.management_permissions ?? before.management_permissions, 25)},
      product_names = ${tx.array(body.product_names ?? before.product_names, 25)}
      WHERE id = ${before.id}`;
    if (body.child_ids) await setChildren(tx, orgId, before.id, body.child_ids);
    if (body.project_ids) await setProjects(tx, orgId, before.id, body.project_ids);
    const removed: string[] = [];
    const added: string[] = [];
    if (users) {
      const old = await tx<{ user_id: string }[]>`SELECT user_id FROM authz_role_user WHERE role_id = ${before.id}`;
      for (const o of old) if (!users.includes(o.user_id)) removed.push(o.user_id);
      const had = new Set(old.map((o) => o.user_id));
      for (const u of users) if (!had.has(u)) added.push(u);
      await tx`DELETE FROM authz_role_user WHERE role_id = ${before.id} AND NOT (user_id = ANY(${tx.array(users, 20)}))`;
      for (const u of users) {
        await tx`INSERT INTO authz_role_user (org_id, role_id, user_id) VALUES (${orgId}, ${before.id}, ${u}) ON CONFLICT DO NOTHING`;
      }
    }
    const [after] = await renderRoles(tx, [await findRole(tx, orgId, roleId)], {});
    emit({
      action: 'role.update',
      targetType: 'role',
      targetId: before.id,
      effect: {
        role_id: roleId,
        org_id: orgId,
        child_ids: after!.child_ids,
        management_permissions: after!.management_permissions,
        removed_user_ids: removed.map(Number),
        // Nodes re-read these members' rows (the loosening part of a replacement).
        added_user_ids: added.map(Number),
      },
      before: beforeWire,
      after,
    });
    // Members dropped by the replacement lose access at once, like an explicit removal.
    for (const u of removed) {
      emit({ action: 'role.subject.remove', targetType: 'user', targetId: u, effect: { user_id: Number(u), org_id: orgId, role_id: roleId } });
    }
    return null;
  });
}

export async function addRoleSubjects(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, roleId: number, subjects: RoleSubject[]): Promise<null> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    await findOrg(tx, orgId, { lock: true });
    const role = await findRole(tx, orgId, roleId, true);
    guardAdminRole(caller, role.management_permissions);
    const users = await subjectUsers(tx, orgId, subjects);
    for (const u of users) {
      const ins = await tx`INSERT INTO authz_role_user (org_id, role_id, user_id) VALUES (${orgId}, ${role.id}, ${u}) ON CONFLICT DO NOTHING RETURNING user_id`;
      if (ins.length) emit({ action: 'role.subject.add', targetType: 'user', targetId: u, effect: { user_id: Number(u), org_id: orgId, role_id: roleId } });
    }
    return null;
  });
}

export async function removeRoleSubject(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, roleId: number, ref: UserRef): Promise<null> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    await findOrg(tx, orgId, { lock: true });
    const role = await findRole(tx, orgId, roleId, true);
    guardAdminRole(caller, role.management_permissions);
    const user = await findUser(tx, ref);
    const del = await tx`DELETE FROM authz_role_user WHERE role_id = ${role.id} AND user_id = ${user.id} RETURNING user_id`;
    if (del.length) {
      emit({ action: 'role.subject.remove', targetType: 'user', targetId: user.id, effect: { user_id: num(user.id), org_id: orgId, role_id: roleId } });
    }
    return null;
  });
}

/** The roles a user is a direct subject of, in one org or in all of them. */
export async function listUserRoles(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number | null, ref: UserRef, view: RoleView): Promise<unknown[]> {
  void caller;
  const { sql } = deps;
  if (orgId !== null) await findOrg(sql, orgId);
  const user = await findUser(sql, ref);
  const roles = await sql<RoleRow[]>`SELECT ${sql.unsafe(ROLE_COLUMNS)} FROM authz_role r JOIN authz_role_user ru ON ru.role_id = r.id
    WHERE ru.user_id = ${user.id} ${orgId !== null ? sql`AND r.org_id = ${orgId}` : sql``} ORDER BY r.id`;
  return renderRoles(sql, roles, view);
}
