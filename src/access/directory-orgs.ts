// Orgs (the tenant boundary) and org membership.
import {
  dirError, directoryWrite, findOrg, findUser, num, pageSlice, userWire, wireTime, USER_COLUMNS,
  type DirectoryCaller, type DirectoryDeps, type Paging, type Q, type UserRef, type UserRow,
} from './directory-common.ts';

interface OrgListRow {
  id: string;
  name: string;
  creator_id: string | null;
  users_count: string;
  created_at: Date;
  updated_at: Date;
}

export async function listOrgs(deps: DirectoryDeps, caller: DirectoryCaller): Promise<unknown[]> {
  const { sql } = deps;
  const orgs = await sql<OrgListRow[]>`
    SELECT o.id, o.name, o.creator_id, o.created_at, o.updated_at,
           (SELECT count(*) FROM authz_org_user ou WHERE ou.org_id = o.id) AS users_count
    FROM authz_org o ORDER BY o.id`;
  const creatorIds = [...new Set(orgs.map((o) => o.creator_id).filter((x): x is string => x !== null))];
  const creators = creatorIds.length
    ? await sql<UserRow[]>`SELECT ${sql.unsafe(USER_COLUMNS)} FROM authz_user u WHERE u.id = ANY(${sql.array(creatorIds, 20)})`
    : [];
  const byId = new Map(creators.map((u) => [u.id, u]));
  return orgs.map((o) => {
    const creator = o.creator_id === null ? undefined : byId.get(o.creator_id);
    return {
      id: num(o.id),
      name: o.name,
      creator_id: num(o.creator_id, true),
      users_count: num(o.users_count),
      creator: creator ? userWire(creator, caller) : null,
      created_at: wireTime(o.created_at),
      updated_at: wireTime(o.updated_at),
    };
  });
}

/** Creates the org and its root department (named after the org). Answers null: clients find the id with the list. */
export async function createOrg(deps: DirectoryDeps, caller: DirectoryCaller, body: { name: string }): Promise<null> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    const name = body.name.trim();
    const dup = await tx`SELECT 1 FROM authz_org WHERE name = ${name}`;
    if (dup.length) throw dirError('conflict', 'ORG_EXISTS', `an org named ${JSON.stringify(name)} already exists`, { field: 'name' });
    const creator = caller.userId === null ? null : (await tx`SELECT id FROM authz_user WHERE id = ${caller.userId}`)[0]?.id ?? null;
    const [org] = await tx<{ id: string; created_at: Date }[]>`
      INSERT INTO authz_org (name, creator_id) VALUES (${name}, ${creator}) RETURNING id, created_at`;
    const [root] = await tx<{ id: string; origin_id: string }[]>`
      INSERT INTO authz_department (org_id, super_id, name) VALUES (${org!.id}, NULL, ${name}) RETURNING id, origin_id`;
    emit({
      action: 'org.create',
      targetType: 'org',
      targetId: org!.id,
      effect: { org_id: num(org!.id) },
      after: { id: num(org!.id), name, creator_id: num(creator, true), root_department_id: num(root!.id), root_origin_id: root!.origin_id },
    });
    return null;
  });
}

export async function listOrgUsers(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, paging: Paging): Promise<unknown[]> {
  const { sql } = deps;
  await findOrg(sql, orgId);
  const { limit, offset } = pageSlice(paging);
  const rows = await sql<UserRow[]>`
    SELECT ${sql.unsafe(USER_COLUMNS)} FROM authz_user u JOIN authz_org_user ou ON ou.user_id = u.id
    WHERE ou.org_id = ${orgId} ORDER BY u.id
    ${limit === null ? sql`` : sql`LIMIT ${limit} OFFSET ${offset}`}`;
  return rows.map((r) => userWire(r, caller));
}

/** Resolves ids or accounts to user rows; any unknown one fails the whole request. */
export async function resolveUsers(q: Q, ids: readonly number[] | undefined, accounts: readonly string[] | undefined, fieldPrefix = ''): Promise<UserRow[]> {
  const out = new Map<string, UserRow>();
  if (ids?.length) {
    const rows = await q<UserRow[]>`SELECT ${q.unsafe(USER_COLUMNS)} FROM authz_user u WHERE u.id = ANY(${q.array(ids.map(String), 20)}) FOR UPDATE`;
    const found = new Set(rows.map((r) => num(r.id)));
    const missing = ids.filter((i) => !found.has(i));
    if (missing.length) {
      throw dirError('not_found', 'USER_NOT_FOUND', `no user with id ${missing.join(', ')}`, { field: `${fieldPrefix}ids`, data: { ids: missing } });
    }
    for (const r of rows) out.set(r.id, r);
  }
  if (accounts?.length) {
    const lower = accounts.map((a) => a.toLowerCase());
    const rows = await q<UserRow[]>`SELECT ${q.unsafe(USER_COLUMNS)} FROM authz_user u WHERE lower(u.account) = ANY(${q.array(lower, 25)}) FOR UPDATE`;
    const found = new Set(rows.map((r) => r.account.toLowerCase()));
    const missing = accounts.filter((a) => !found.has(a.toLowerCase()));
    if (missing.length) {
      throw dirError('not_found', 'USER_NOT_FOUND', `no user with account ${missing.join(', ')}`, { field: `${fieldPrefix}accounts`, data: { accounts: missing } });
    }
    for (const r of rows) out.set(r.id, r);
  }
  return [...out.values()].sort((a, b) => num(a.id) - num(b.id));
}

export async function addOrgUsers(
  deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, body: { user_ids?: number[]; accounts?: string[] },
): Promise<null> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    await findOrg(tx, orgId, { lock: true });
    const users = await resolveUsers(tx, body.user_ids, body.accounts, body.user_ids ? 'user_' : '');
    for (const u of users) {
      const inserted = await tx`INSERT INTO authz_org_user (org_id, user_id) VALUES (${orgId}, ${u.id}) ON CONFLICT DO NOTHING RETURNING user_id`;
      if (!inserted.length) continue; // already a member: nothing changes, nothing to audit
      // The first org a user joins becomes their current org.
      await tx`UPDATE authz_user SET current_org_id = ${orgId}, updated_at = now() WHERE id = ${u.id} AND current_org_id IS NULL`;
      emit({ action: 'org.user.add', targetType: 'user', targetId: u.id, effect: { user_id: num(u.id), org_id: orgId } });
    }
    return null;
  });
}

/** Removes one member; the org's department and role memberships go with it (FK cascade). */
export async function removeOrgUser(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, ref: UserRef): Promise<null> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    await findOrg(tx, orgId, { lock: true });
    const user = await findUser(tx, ref, { lock: true });
    const depts = await tx<{ department_id: string }[]>`SELECT department_id FROM authz_department_user WHERE org_id = ${orgId} AND user_id = ${user.id}`;
    const roles = await tx<{ role_id: string }[]>`SELECT role_id FROM authz_role_user WHERE org_id = ${orgId} AND user_id = ${user.id}`;
    const removed = await tx`DELETE FROM authz_org_user WHERE org_id = ${orgId} AND user_id = ${user.id} RETURNING user_id`;
    if (!removed.length) {
      throw dirError('invalid', 'USER_NOT_IN_ORG', `user ${user.account} is not a member of org ${orgId}`, { field: 'user_id' });
    }
    if (user.current_org_id !== null && num(user.current_org_id) === orgId) {
      // Fall back to another org the user still belongs to, if any.
      await tx`UPDATE authz_user SET updated_at = now(), current_org_id =
                 (SELECT min(org_id) FROM authz_org_user WHERE user_id = ${user.id}) WHERE id = ${user.id}`;
    }
    emit({
      action: 'org.user.remove',
      targetType: 'user',
      targetId: user.id,
      effect: { user_id: num(user.id), org_id: orgId },
      before: { department_ids: depts.map((d) => num(d.department_id)), role_ids: roles.map((r) => num(r.role_id)) },
    });
    return null;
  });
}
