// Users: search, all-or-nothing batch create, patch, delete with handover, SSO bindings.
import type postgres from 'postgres';
import { hashPassword } from './crypto.ts';
import {
  canReadContacts, dirError, directoryWrite, findUser, num, pageSlice, userWire, USER_COLUMNS,
  type DirectoryCaller, type DirectoryDeps, type Paging, type UserRef, type UserRow,
} from './directory-common.ts';

export const SSO_TYPES = ['oidc', 'oauth2', 'lark', 'wecom', 'saml2', 'jwt', 'custom', 'utilmeta'] as const;
export type SsoType = (typeof SSO_TYPES)[number];

export interface UserSearch extends Paging {
  fuzzy?: boolean;
  user_ids?: number[];
  account?: string;
  username?: string;
  is_superuser?: boolean;
  sso_type?: SsoType;
  sso_user_id?: string;
  with_sso?: boolean;
  with_custom_property?: boolean;
}

interface SsoRow {
  id: string;
  user_id: string;
  sso_type: string;
  sso_user_id: string;
}

const ssoWire = (s: SsoRow) => ({ id: num(s.id), user_id: num(s.user_id), sso_type: s.sso_type, sso_user_id: s.sso_user_id });

/** Escapes LIKE metacharacters so a fuzzy search matches the text literally. */
const likeContains = (s: string) => `%${s.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

export async function searchUsers(deps: DirectoryDeps, caller: DirectoryCaller, q: UserSearch): Promise<unknown[]> {
  const { sql } = deps;
  const conds: postgres.PendingQuery<postgres.Row[]>[] = [];
  if (q.user_ids?.length) conds.push(sql`u.id = ANY(${sql.array(q.user_ids.map(String), 20)})`);
  if (q.account !== undefined) {
    conds.push(q.fuzzy ? sql`u.account ILIKE ${likeContains(q.account)}` : sql`lower(u.account) = lower(${q.account})`);
  }
  if (q.username !== undefined) {
    conds.push(q.fuzzy ? sql`u.username ILIKE ${likeContains(q.username)}` : sql`u.username = ${q.username}`);
  }
  if (q.is_superuser !== undefined) conds.push(sql`u.is_superuser = ${q.is_superuser}`);
  if (q.sso_type !== undefined || q.sso_user_id !== undefined) {
    conds.push(sql`EXISTS (SELECT 1 FROM authz_user_sso s WHERE s.user_id = u.id
      ${q.sso_type !== undefined ? sql`AND s.sso_type = ${q.sso_type}` : sql``}
      ${q.sso_user_id !== undefined ? sql`AND s.sso_user_id = ${q.sso_user_id}` : sql``})`);
  }
  const where = conds.length ? conds.reduce((acc, c, i) => (i === 0 ? sql`WHERE ${c}` : sql`${acc} AND ${c}`), sql``) : sql``;
  const { limit, offset } = pageSlice(q);
  const rows = await sql<UserRow[]>`
    SELECT ${sql.unsafe(USER_COLUMNS)} FROM authz_user u ${where} ORDER BY u.id
    ${limit === null ? sql`` : sql`LIMIT ${limit} OFFSET ${offset}`}`;
  const ssos = new Map<string, SsoRow[]>();
  if (q.with_sso && rows.length) {
    const all = await sql<SsoRow[]>`SELECT id, user_id, sso_type, sso_user_id FROM authz_user_sso
      WHERE user_id = ANY(${sql.array(rows.map((r) => r.id), 20)}) ORDER BY id`;
    for (const s of all) ssos.set(s.user_id, [...(ssos.get(s.user_id) ?? []), s]);
  }
  const contacts = canReadContacts(caller);
  return rows.map((r) => {
    const out = userWire(r, caller);
    if (q.with_sso) out.ssos = (ssos.get(r.id) ?? []).map(ssoWire);
    if (q.with_custom_property) out.custom_property = contacts ? r.custom_property : null;
    return out;
  });
}

export interface NewUser {
  account: string;
  username: string;
  password: string;
  email?: string | null;
  mobile_number?: string | null;
  status?: 0 | 1;
  custom_property?: Record<string, unknown>;
}

/** All or nothing: one existing (or repeated) account and nothing is written. */
export async function createUsers(deps: DirectoryDeps, caller: DirectoryCaller, users: NewUser[]): Promise<unknown[]> {
  // Hash before the transaction: scrypt is deliberately slow and must not hold the authz lock.
  const hashes = await Promise.all(users.map((u) => hashPassword(u.password)));
  return directoryWrite(deps, caller, async (tx, emit) => {
    const seen = new Map<string, string>();
    const repeated: string[] = [];
    for (const u of users) {
      const k = u.account.toLowerCase();
      if (seen.has(k)) repeated.push(u.account);
      else seen.set(k, u.account);
    }
    const existing = await tx<{ account: string }[]>`SELECT account FROM authz_user WHERE lower(account) = ANY(${tx.array([...seen.keys()], 25)})`;
    const taken = [...new Set([...existing.map((e) => e.account), ...repeated])];
    if (taken.length) {
      throw dirError('conflict', 'ACCOUNT_EXISTS', `account already exists: ${taken.join(', ')}`, { field: 'account', data: { accounts: taken } });
    }
    const out: unknown[] = [];
    for (const [i, u] of users.entries()) {
      const [row] = await tx<UserRow[]>`
        INSERT INTO authz_user (account, username, email, mobile_number, status, password_hash, custom_property)
        VALUES (${u.account}, ${u.username}, ${u.email ?? null}, ${u.mobile_number ?? null}, ${u.status ?? 1}, ${hashes[i]!},
                ${tx.json((u.custom_property ?? {}) as postgres.JSONValue)})
        RETURNING ${tx.unsafe(USER_COLUMNS.replaceAll('u.', ''))}`;
      const wire = userWire(row!, caller);
      if (u.custom_property !== undefined) wire.custom_property = canReadContacts(caller) ? row!.custom_property : null;
      emit({ action: 'user.create', targetType: 'user', targetId: row!.id, effect: { user_id: num(row!.id) }, after: userWire(row!, null) });
      out.push(wire);
    }
    return out;
  });
}

/** Only a superuser may change or delete a superuser (else directory_manage could take over an admin account). */
function guardSuperuser(caller: DirectoryCaller, target: UserRow): void {
  if (target.is_superuser && !caller.isSuperuser) {
    throw dirError('forbidden', 'FORBIDDEN', `user ${target.account} is a superuser; only a superuser may change it`, { field: 'user_id' });
  }
}

export interface UserPatch {
  username?: string;
  email?: string | null;
  password?: string;
  mobile_number?: string | null;
  status?: 0 | 1;
  custom_property?: Record<string, unknown>;
  cp_action_type?: 'add' | 'overwrite';
}

export async function patchUser(deps: DirectoryDeps, caller: DirectoryCaller, ref: UserRef, patch: UserPatch): Promise<unknown> {
  const hash = patch.password !== undefined ? await hashPassword(patch.password) : undefined;
  return directoryWrite(deps, caller, async (tx, emit) => {
    const before = await findUser(tx, ref, { lock: true });
    guardSuperuser(caller, before);
    const cp =
      patch.custom_property === undefined
        ? before.custom_property
        : patch.cp_action_type === 'add'
          ? { ...before.custom_property, ...patch.custom_property }
          : patch.custom_property;
    const [row] = await tx<UserRow[]>`
      UPDATE authz_user SET
        username = ${patch.username ?? before.username},
        email = ${patch.email !== undefined ? patch.email : before.email},
        mobile_number = ${patch.mobile_number !== undefined ? patch.mobile_number : before.mobile_number},
        status = ${patch.status ?? before.status},
        password_hash = COALESCE(${hash ?? null}, password_hash),
        custom_property = ${tx.json(cp as postgres.JSONValue)},
        updated_at = now()
      WHERE id = ${before.id}
      RETURNING ${tx.unsafe(USER_COLUMNS.replaceAll('u.', ''))}`;
    const user = row!;
    const userId = num(user.id);
    emit({
      action: 'user.update',
      targetType: 'user',
      targetId: user.id,
      // status 0 is applied by every node straight from this payload.
      effect: { user_id: userId, status: user.status },
      before: userWire(before, null),
      after: userWire(user, null),
    });
    if (hash !== undefined) {
      // A new password ends every login session (personal tokens stay).
      const revoked = await tx<{ id: string }[]>`
        UPDATE authz_token SET revoked_at = now()
        WHERE user_id = ${user.id} AND kind = 'SESSION' AND revoked_at IS NULL AND expires_at > now() RETURNING id`;
      if (revoked.length) {
        emit({ action: 'token.revoke', targetType: 'user', targetId: user.id, effect: { token_ids: revoked.map((r) => num(r.id)) } });
      }
    }
    const wire = userWire(user, caller);
    if (patch.custom_property !== undefined) wire.custom_property = canReadContacts(caller) ? user.custom_property : null;
    return wire;
  });
}

export interface UserDelete {
  handover_user_id?: number;
  handover_user_account?: string;
}

/**
 * Deletes a user. Their apps and created projects go to the handover user
 * (required when they own apps); tokens, keys and USER authorizations are
 * deleted; their pending requests are withdrawn.
 */
export async function deleteUser(deps: DirectoryDeps, caller: DirectoryCaller, ref: UserRef, opts: UserDelete): Promise<null> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    const user = await findUser(tx, ref, { lock: true });
    guardSuperuser(caller, user);
    const handoverRef: UserRef | null =
      opts.handover_user_id !== undefined ? { id: opts.handover_user_id }
        : opts.handover_user_account !== undefined ? { account: opts.handover_user_account } : null;
    const handoverField = opts.handover_user_id !== undefined ? 'handover_user_id' : 'handover_user_account';
    const handover = handoverRef ? await findUser(tx, handoverRef, { lock: true, field: handoverField }) : null;
    if (handover && handover.id === user.id) {
      throw dirError('invalid', 'PARAM_INVALID', `${handoverField}: the handover user must be another user`, { field: handoverField });
    }
    const apps = await tx<{ id: string; app_id: string }[]>`SELECT id, app_id FROM authz_app WHERE owner_user_id = ${user.id} FOR UPDATE`;
    if (apps.length && !handover) {
      throw dirError('conflict', 'HANDOVER_REQUIRED', `user ${user.account} owns ${apps.length} app(s): give handover_user_id or handover_user_account`, {
        field: 'handover_user_id',
        data: { app_ids: apps.map((a) => a.app_id) },
      });
    }
    let projects = 0;
    if (handover) {
      if (apps.length) await tx`UPDATE authz_app SET owner_user_id = ${handover.id}, updated_at = now() WHERE owner_user_id = ${user.id}`;
      projects = (await tx`UPDATE authz_project SET creator_id = ${handover.id}, updated_at = now() WHERE creator_id = ${user.id} RETURNING id`).length;
    }
    // Pending applications by this user are withdrawn; an APPLY takes its still-pending grant with it.
    const withdrawn = await tx<{ grant_id: string; kind: string }[]>`
      UPDATE authz_grant_request SET status = 'WITHDRAWN', decided_at = now()
      WHERE applicant_user_id = ${user.id} AND status = 'PENDING' RETURNING grant_id, kind`;
    const applyGrants = withdrawn.filter((w) => w.kind === 'APPLY').map((w) => w.grant_id);
    if (applyGrants.length) {
      const grants = await tx<{ id: string; app_id: string; api_id: string }[]>`
        UPDATE authz_grant g SET state = 'WITHDRAWN', closed_by = 'APP', closed_at = now(), updated_at = now()
        WHERE g.id = ANY(${tx.array(applyGrants, 20)}) AND g.state = 'PENDING'
        RETURNING g.id, (SELECT a.app_id FROM authz_app a WHERE a.id = g.app_id) AS app_id, g.api_id`;
      for (const g of grants) {
        emit({ action: 'grant.withdraw', targetType: 'grant', targetId: g.id, effect: { grant_id: num(g.id), app_id: g.app_id, api_id: g.api_id, effective_end: null } });
      }
    }
    const tokens = await tx`DELETE FROM authz_token WHERE user_id = ${user.id} RETURNING id`;
    const keys = await tx`DELETE FROM authz_access_key WHERE owner_user_id = ${user.id} RETURNING access_key_id`;
    const auths = await tx`DELETE FROM authz_service_auth WHERE user_id = ${user.id} RETURNING id`;
    await tx`DELETE FROM authz_user WHERE id = ${user.id}`;
    emit({
      action: 'user.delete',
      targetType: 'user',
      targetId: user.id,
      effect: { user_id: num(user.id) },
      before: {
        ...userWire(user, null),
        handover_user_id: handover ? num(handover.id) : null,
        apps_handed_over: apps.length,
        projects_handed_over: projects,
        tokens_deleted: tokens.length,
        access_keys_deleted: keys.map((k) => k.access_key_id),
        authorizations_deleted: auths.map((a) => num(a.id)),
        requests_withdrawn: withdrawn.length,
      },
    });
    return null;
  });
}

export interface SsoBinding {
  user_id?: number;
  account?: string;
  sso_type: SsoType;
  sso_user_id: string;
}

/** Binds SSO identities to existing users; all or nothing; a taken (type, id) → 409. */
export async function bindSso(deps: DirectoryDeps, caller: DirectoryCaller, users: SsoBinding[]): Promise<null> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    const seen = new Set<string>();
    for (const [i, b] of users.entries()) {
      const ref: UserRef = b.user_id !== undefined ? { id: b.user_id } : { account: b.account! };
      const user = await findUser(tx, ref, { field: `users[${i}].${b.user_id !== undefined ? 'user_id' : 'account'}` });
      const key = `${b.sso_type}\n${b.sso_user_id}`;
      const taken = seen.has(key) || (await tx`SELECT 1 FROM authz_user_sso WHERE sso_type = ${b.sso_type} AND sso_user_id = ${b.sso_user_id}`).length > 0;
      if (taken) {
        throw dirError('conflict', 'SSO_EXISTS', `users[${i}]: ${b.sso_type} identity ${JSON.stringify(b.sso_user_id)} is already bound`, {
          field: `users[${i}].sso_user_id`,
        });
      }
      seen.add(key);
      const [row] = await tx<SsoRow[]>`INSERT INTO authz_user_sso (user_id, sso_type, sso_user_id)
        VALUES (${user.id}, ${b.sso_type}, ${b.sso_user_id}) RETURNING id, user_id, sso_type, sso_user_id`;
      emit({ action: 'user.sso.add', targetType: 'user', targetId: user.id, effect: { user_id: num(user.id), sso_type: b.sso_type }, after: ssoWire(row!) });
    }
    return null;
  });
}
