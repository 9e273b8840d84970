// The in-memory decision state: every row a proxy decision needs, indexed for lookups, built
// from plain row arrays shaped like the `authz_*` tables. A state is never mutated after it is
// built; changes produce a new state that shares every untouched map with the old one, so a
// decision in progress always sees one consistent snapshot. Derived data (routers, masks,
// closures) is computed lazily and memoized inside the snapshot, and carried over to the next
// state when the change cannot affect it.

import { ALL_PERMISSIONS, isApiPermission, type ApiPermission } from './permissions.ts';
import { ApiRouter } from './router.ts';
import { draftOf, type WritableMap } from './layered-map.ts';
import { departmentClosure, roleClosure, userMaskFrom, type ServiceAuthIndex } from './effective.ts';

export type Id = string | number | bigint;
export type Time = Date | string | number | null | undefined;

// ---- Rows (camelCase, as the loader maps them from the authz_* tables) ----

export interface UserRow { id: Id; account: string; status: number; isSuperuser: boolean }
export interface OrgUserRow { orgId: Id; userId: Id }
export interface DepartmentRow { id: Id; orgId: Id; superId: Id | null; permInherit: 'to_super' | 'to_children' }
export interface DepartmentUserRow { orgId: Id; departmentId: Id; userId: Id }
export interface RoleRow { id: Id; orgId: Id; managementPermissions: readonly string[] }
export interface RoleChildRow { orgId: Id; roleId: Id; childId: Id }
export interface RoleUserRow { orgId: Id; roleId: Id; userId: Id }
export interface AppRow { id: Id; appId: string; projectId: Id; name: string; ownerUserId: Id; status: 'ACTIVE' | 'DISABLED'; boundServiceId: Id | null }
/** `startedAt`/`expiredAt` are UTC days (`YYYY-MM-DD` or a Date at UTC midnight), both inclusive. */
export interface ProjectRow { id: Id; orgId: Id; isPermanent: boolean; startedAt: Time; expiredAt: Time }
export type AuthMode = 'OFF' | 'AUDIT' | 'ENFORCE';
export interface ServiceSettingsRow { serviceId: Id; authMode: AuthMode; apisAuthEnabled: boolean; supervisorPolicy: 'PLATFORM' | 'TEST_PERMISSION' }
export interface ApiRow { apiId: string; serviceId: Id; method: string; pathTemplate: string; routeKey: string; permission: ApiPermission | null; authEnabled: boolean; deprecatedAt?: Time }
export type AuthObjectType = 'USER' | 'DEPT' | 'GROUP' | 'APP';
export interface ServiceAuthRow { id: Id; serviceId: Id; authObjectType: AuthObjectType; authObjectId: Id; permMask: number }
export type GrantStateName = 'PENDING' | 'ACTIVE' | 'CANCEL_SCHEDULED' | 'CANCELLED' | 'EXPIRED' | 'REJECTED' | 'WITHDRAWN';
/** `appId` is `authz_app.id` (the int64), as in the table. */
export interface GrantRow { id: Id; appId: Id; apiId: string; state: GrantStateName; startAt: Time; endAt: Time; cancelAt: Time }
export interface AccessKeyRow { accessKeyId: string; ownerUserId: Id | null; ownerAppId: Id | null; status: 'Active' | 'Inactive'; expiresAt: Time }
/** `tokenSha256`: the 32-byte digest (bytea) or its 64-char hex. */
export interface TokenRow { id: Id; tokenSha256: Uint8Array | string; userId: Id; expiresAt: Time; revokedAt: Time; parentJti: string | null }
export interface RevokedJtiRow { jti: string; expiresAt: Time }
/** `authz_user_sso` rows with `sso_type = 'utilmeta'`: platform user id (JWT `sub`) → user. */
export interface PlatformSsoRow { userId: Id; ssoUserId: string }

export interface DecisionRows {
  users: readonly UserRow[];
  orgUsers: readonly OrgUserRow[];
  departments: readonly DepartmentRow[];
  departmentUsers: readonly DepartmentUserRow[];
  roles: readonly RoleRow[];
  roleChildren: readonly RoleChildRow[];
  roleUsers: readonly RoleUserRow[];
  apps: readonly AppRow[];
  projects: readonly ProjectRow[];
  services: readonly ServiceSettingsRow[];
  apis: readonly ApiRow[];
  serviceAuths: readonly ServiceAuthRow[];
  grants: readonly GrantRow[];
  accessKeys: readonly AccessKeyRow[];
  tokens: readonly TokenRow[];
  revokedJtis: readonly RevokedJtiRow[];
  platformSso: readonly PlatformSsoRow[];
}

// ---- Entries (normalized: ids as decimal strings, times as epoch ms) ----

export interface UserEntry { readonly id: string; readonly account: string; readonly status: number; readonly isSuperuser: boolean }
export interface DepartmentEntry { readonly id: string; readonly orgId: string; readonly superId: string | null; readonly toSuper: boolean }
export interface RoleEntry { readonly id: string; readonly orgId: string; readonly authzManage: boolean; readonly managementPermissions: readonly string[] }
export interface AppEntry { readonly id: string; readonly appId: string; readonly projectId: string; readonly name: string; readonly ownerUserId: string; readonly status: 'ACTIVE' | 'DISABLED'; readonly boundServiceId: string | null }
/** Valid for `validFrom ≤ now < validUntil`; null bounds are open. */
export interface ProjectEntry { readonly id: string; readonly validFrom: number | null; readonly validUntil: number | null }
export interface ServiceEntry { readonly serviceId: string; readonly mode: AuthMode; readonly apisAuthEnabled: boolean; readonly supervisorPolicy: 'PLATFORM' | 'TEST_PERMISSION' }
export interface ApiEntry { readonly apiId: string; readonly serviceId: string; readonly method: string; readonly pathTemplate: string; readonly routeKey: string; readonly permission: ApiPermission | null; readonly authEnabled: boolean; readonly deprecated: boolean }
export interface AuthEntry { readonly id: string; readonly serviceId: string; readonly type: AuthObjectType; readonly objectId: string; readonly mask: number }
export interface GrantEntry { readonly id: string; readonly appId: string; readonly apiId: string; readonly state: GrantStateName; readonly startAt: number; readonly endAt: number; readonly cancelAt: number | null }
export interface KeyEntry { readonly accessKeyId: string; readonly ownerUserId: string | null; readonly ownerAppId: string | null; readonly status: 'Active' | 'Inactive'; readonly expiresAt: number | null }
export interface TokenEntry { readonly id: string; readonly userId: string; readonly expiresAt: number; readonly revoked: boolean; readonly parentJti: string | null }

/** Memoized per-user data: valid while users, memberships, roles, departments and authorizations are unchanged. */
export interface AuthCache {
  readonly roles: Map<string, string[]>;
  readonly depts: Map<string, string[]>;
  readonly admin: Map<string, boolean>;
  readonly masks: Map<string, Map<string, number>>;
}

export interface DecisionState {
  readonly users: ReadonlyMap<string, UserEntry>;
  readonly userOrgs: ReadonlyMap<string, ReadonlySet<string>>;
  readonly userRoles: ReadonlyMap<string, readonly string[]>;
  readonly userDepts: ReadonlyMap<string, readonly string[]>;
  readonly departments: ReadonlyMap<string, DepartmentEntry>;
  readonly roles: ReadonlyMap<string, RoleEntry>;
  readonly roleChildren: ReadonlyMap<string, readonly string[]>;
  readonly apps: ReadonlyMap<string, AppEntry>;
  /** Public 32-hex app_id → `authz_app.id`. */
  readonly appIds: ReadonlyMap<string, string>;
  /** Service id → `authz_app.id` of the app bound to it (instance identity). */
  readonly boundApps: ReadonlyMap<string, string>;
  readonly projects: ReadonlyMap<string, ProjectEntry>;
  readonly services: ReadonlyMap<string, ServiceEntry>;
  readonly apis: ReadonlyMap<string, ApiEntry>;
  readonly auths: ReadonlyMap<string, AuthEntry>;
  readonly authIndex: ReadonlyMap<string, ServiceAuthIndex>;
  readonly grants: ReadonlyMap<string, GrantEntry>;
  /** apiId → app id → the grant that decides (the live one, else the latest). */
  readonly grantIndex: ReadonlyMap<string, ReadonlyMap<string, GrantEntry>>;
  readonly keys: ReadonlyMap<string, KeyEntry>;
  /** Token SHA-256 as base64 (see tokenHashKey) → token. */
  readonly tokens: ReadonlyMap<string, TokenEntry>;
  readonly tokenHashById: ReadonlyMap<string, string>;
  /** Revoked platform JWT ids → expiry (ms). */
  readonly revokedJtis: ReadonlyMap<string, number>;
  /** Platform user id (JWT `sub`) → user id. */
  readonly platformUsers: ReadonlyMap<string, string>;
  readonly authCache: AuthCache;
  /** serviceId → router; valid while the API set is unchanged. */
  readonly routerCache: Map<string, ApiRouter<ApiEntry>>;
}

// ---- Normalization helpers ----

export const idKey = (x: Id): string => (typeof x === 'string' ? x : String(x));

/** Epoch ms of a time; `fallback` for null/undefined; NaN (unparsable) becomes `bad`. */
export function toMs(t: Time, fallback: number | null, bad: number): number | null {
  if (t === null || t === undefined) return fallback;
  const v = t instanceof Date ? t.getTime() : typeof t === 'number' ? t : Date.parse(t);
  return Number.isFinite(v) ? v : bad;
}

const DAY = 86_400_000;

/** UTC midnight of a date given as `YYYY-MM-DD`, a Date or epoch ms. */
function utcDay(t: Time): number | null {
  if (t === null || t === undefined) return null;
  if (typeof t === 'string') {
    const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(t);
    if (!m) return NaN;
    return Date.UTC(+m[1], +m[2] - 1, +m[3]);
  }
  const d = t instanceof Date ? t : new Date(t);
  const ms = d.getTime();
  if (!Number.isFinite(ms)) return NaN;
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
}

/** The map key of a token digest: base64 of the 32 bytes (what crypto.hash yields cheapest). */
export function tokenHashKey(h: Uint8Array | string): string {
  if (typeof h === 'string') return Buffer.from(h, 'hex').toString('base64');
  return Buffer.from(h.buffer, h.byteOffset, h.byteLength).toString('base64');
}

const LIVE: ReadonlySet<GrantStateName> = new Set(['PENDING', 'ACTIVE', 'CANCEL_SCHEDULED']);
export const isLiveGrant = (s: GrantStateName) => LIVE.has(s);

function newerId(a: string, b: string): boolean {
  return a.length !== b.length ? a.length > b.length : a > b;
}

/** Whether `g` should replace `cur` as the grant that decides for its (app, api). */
function decidesOver(g: GrantEntry, cur: GrantEntry | undefined): boolean {
  if (!cur || cur.id === g.id) return true;
  const gl = isLiveGrant(g.state);
  const cl = isLiveGrant(cur.state);
  if (gl !== cl) return gl;
  return newerId(g.id, cur.id);
}

// ---- Row → entry ----

const userEntry = (r: UserRow): UserEntry => ({ id: idKey(r.id), account: r.account, status: r.status, isSuperuser: r.isSuperuser === true });
const deptEntry = (r: DepartmentRow): DepartmentEntry => ({ id: idKey(r.id), orgId: idKey(r.orgId), superId: r.superId === null || r.superId === undefined ? null : idKey(r.superId), toSuper: r.permInherit === 'to_super' });
const roleEntry = (r: RoleRow): RoleEntry => {
  const perms = Array.isArray(r.managementPermissions) ? r.managementPermissions.filter((x): x is string => typeof x === 'string') : [];
  return { id: idKey(r.id), orgId: idKey(r.orgId), authzManage: perms.includes('authz_manage'), managementPermissions: perms };
};
const appEntry = (r: AppRow): AppEntry => ({ id: idKey(r.id), appId: r.appId, projectId: idKey(r.projectId), name: r.name, ownerUserId: idKey(r.ownerUserId), status: r.status, boundServiceId: r.boundServiceId === null || r.boundServiceId === undefined ? null : idKey(r.boundServiceId) });
function projectEntry(r: ProjectRow): ProjectEntry {
  if (r.isPermanent) return { id: idKey(r.id), validFrom: null, validUntil: null };
  const from = utcDay(r.startedAt);
  const to = utcDay(r.expiredAt);
  // A non-permanent project with a missing or unreadable date is closed rather than open.
  return { id: idKey(r.id), validFrom: from === null || Number.isNaN(from) ? Infinity : from, validUntil: to === null || Number.isNaN(to) ? -Infinity : to + DAY };
}
const serviceEntry = (r: ServiceSettingsRow): ServiceEntry => ({ serviceId: idKey(r.serviceId), mode: r.authMode, apisAuthEnabled: r.apisAuthEnabled === true, supervisorPolicy: r.supervisorPolicy ?? 'PLATFORM' });
const apiEntry = (r: ApiRow): ApiEntry => ({
  apiId: r.apiId,
  serviceId: idKey(r.serviceId),
  method: r.method.toUpperCase(),
  pathTemplate: r.pathTemplate,
  routeKey: r.routeKey,
  permission: isApiPermission(r.permission) ? r.permission : null,
  authEnabled: r.authEnabled !== false,
  deprecated: r.deprecatedAt !== null && r.deprecatedAt !== undefined,
});
const authEntry = (r: ServiceAuthRow): AuthEntry => ({ id: idKey(r.id), serviceId: idKey(r.serviceId), type: r.authObjectType, objectId: idKey(r.authObjectId), mask: r.permMask & ALL_PERMISSIONS });
// Unreadable window bounds close the grant: start never reached, end already passed.
const grantEntry = (r: GrantRow): GrantEntry => ({
  id: idKey(r.id),
  appId: idKey(r.appId),
  apiId: r.apiId,
  state: r.state,
  startAt: toMs(r.startAt, Infinity, Infinity)!,
  endAt: toMs(r.endAt, -Infinity, -Infinity)!,
  cancelAt: toMs(r.cancelAt, null, -Infinity),
});
const keyEntry = (r: AccessKeyRow): KeyEntry => ({ accessKeyId: r.accessKeyId, ownerUserId: r.ownerUserId === null || r.ownerUserId === undefined ? null : idKey(r.ownerUserId), ownerAppId: r.ownerAppId === null || r.ownerAppId === undefined ? null : idKey(r.ownerAppId), status: r.status, expiresAt: toMs(r.expiresAt, null, -Infinity) });
const tokenEntry = (r: TokenRow): TokenEntry => ({ id: idKey(r.id), userId: idKey(r.userId), expiresAt: toMs(r.expiresAt, -Infinity, -Infinity)!, revoked: r.revokedAt !== null && r.revokedAt !== undefined, parentJti: r.parentJti ?? null });

// ---- Building ----

export type MutableMaps = {
  -readonly [K in keyof DecisionState]: DecisionState[K] extends Map<unknown, unknown>
    ? DecisionState[K]
    : DecisionState[K] extends ReadonlyMap<infer A, infer B>
      ? WritableMap<A, B>
      : DecisionState[K];
};

export function freshAuthCache(): AuthCache {
  return { roles: new Map(), depts: new Map(), admin: new Map(), masks: new Map() };
}

function pushUnique(map: WritableMap<string, readonly string[]>, k: string, v: string): void {
  const cur = map.get(k);
  if (!cur) map.set(k, [v]);
  else if (!cur.includes(v)) map.set(k, [...cur, v]);
}

function emptyAuthIndex(): { USER: Map<string, number>; DEPT: Map<string, number>; GROUP: Map<string, number>; APP: Map<string, number> } {
  return { USER: new Map(), DEPT: new Map(), GROUP: new Map(), APP: new Map() };
}

/** Builds a state from full table reads. Rows are trusted to satisfy the schema's constraints. */
export function buildDecisionState(rows: Partial<DecisionRows>): DecisionState {
  const s: MutableMaps = {
    users: new Map(), userOrgs: new Map(), userRoles: new Map(), userDepts: new Map(), departments: new Map(), roles: new Map(), roleChildren: new Map(),
    apps: new Map(), appIds: new Map(), boundApps: new Map(), projects: new Map(), services: new Map(), apis: new Map(), auths: new Map(), authIndex: new Map(),
    grants: new Map(), grantIndex: new Map(), keys: new Map(), tokens: new Map(), tokenHashById: new Map(), revokedJtis: new Map(), platformUsers: new Map(),
    authCache: freshAuthCache(), routerCache: new Map(),
  };
  addRows(s, rows);
  return Object.freeze(s as unknown as DecisionState);
}

function addRows(s: MutableMaps, rows: Partial<DecisionRows>): void {
  // Inner maps created during this call: mutated in place instead of copied again.
  const owned = new Set<unknown>();
  for (const r of rows.users ?? []) s.users.set(idKey(r.id), userEntry(r));
  for (const r of rows.orgUsers ?? []) {
    const u = idKey(r.userId);
    const cur = s.userOrgs.get(u);
    s.userOrgs.set(u, new Set([...(cur ?? []), idKey(r.orgId)]));
  }
  for (const r of rows.departments ?? []) s.departments.set(idKey(r.id), deptEntry(r));
  for (const r of rows.departmentUsers ?? []) pushUnique(s.userDepts, idKey(r.userId), idKey(r.departmentId));
  for (const r of rows.roles ?? []) s.roles.set(idKey(r.id), roleEntry(r));
  for (const r of rows.roleChildren ?? []) pushUnique(s.roleChildren, idKey(r.roleId), idKey(r.childId));
  for (const r of rows.roleUsers ?? []) pushUnique(s.userRoles, idKey(r.userId), idKey(r.roleId));
  for (const r of rows.apps ?? []) {
    const e = appEntry(r);
    const old = s.apps.get(e.id);
    if (old && old.appId !== e.appId) s.appIds.delete(old.appId);
    if (old?.boundServiceId != null && s.boundApps.get(old.boundServiceId) === e.id) s.boundApps.delete(old.boundServiceId);
    s.apps.set(e.id, e);
    s.appIds.set(e.appId, e.id);
    if (e.boundServiceId !== null) s.boundApps.set(e.boundServiceId, e.id);
  }
  for (const r of rows.projects ?? []) s.projects.set(idKey(r.id), projectEntry(r));
  for (const r of rows.services ?? []) s.services.set(idKey(r.serviceId), serviceEntry(r));
  for (const r of rows.apis ?? []) s.apis.set(r.apiId, apiEntry(r));
  for (const r of rows.serviceAuths ?? []) setAuth(s, authEntry(r), owned);
  // Big tables reuse the id strings of the entries they point to (one copy per app, API or user
  // instead of one per row): tens of bytes per row at 100,000 rows.
  const appKey = (id: string) => s.apps.get(id)?.id ?? id;
  const userKey = (id: string) => s.users.get(id)?.id ?? id;
  for (const r of rows.grants ?? []) {
    const e = grantEntry(r);
    setGrant(s, { ...e, appId: appKey(e.appId), apiId: s.apis.get(e.apiId)?.apiId ?? e.apiId }, owned);
  }
  for (const r of rows.accessKeys ?? []) {
    const e = keyEntry(r);
    s.keys.set(r.accessKeyId, { ...e, ownerUserId: e.ownerUserId && userKey(e.ownerUserId), ownerAppId: e.ownerAppId && appKey(e.ownerAppId) });
  }
  for (const r of rows.tokens ?? []) {
    const h = tokenHashKey(r.tokenSha256);
    const e = tokenEntry(r);
    s.tokens.set(h, { ...e, userId: userKey(e.userId) });
    s.tokenHashById.set(e.id, h);
  }
  for (const r of rows.revokedJtis ?? []) s.revokedJtis.set(r.jti, toMs(r.expiresAt, Infinity, Infinity)!);
  for (const r of rows.platformSso ?? []) s.platformUsers.set(r.ssoUserId, userKey(idKey(r.userId)));
}

type MutableAuthIndex = { USER: WritableMap<string, number>; DEPT: WritableMap<string, number>; GROUP: WritableMap<string, number>; APP: WritableMap<string, number> };

/** The service's index, copied once per batch (`owned`) so older states keep theirs. */
function ownIndex(s: Pick<MutableMaps, 'authIndex'>, serviceId: string, owned: Set<unknown>): MutableAuthIndex {
  const cur = s.authIndex.get(serviceId);
  if (cur && owned.has(cur)) return cur as MutableAuthIndex;
  const idx: MutableAuthIndex = cur ? { USER: draftOf(cur.USER), DEPT: draftOf(cur.DEPT), GROUP: draftOf(cur.GROUP), APP: draftOf(cur.APP) } : emptyAuthIndex();
  owned.add(idx);
  s.authIndex.set(serviceId, idx);
  return idx;
}

/** Sets (or replaces) an authorization, keeping the per-service index in step. */
export function setAuth(s: Pick<MutableMaps, 'auths' | 'authIndex'>, e: AuthEntry, owned: Set<unknown>): void {
  const old = s.auths.get(e.id);
  if (old) removeAuth(s, old, owned);
  s.auths.set(e.id, e);
  // The table is unique per (service, type, object), so this is a set, not an OR.
  ownIndex(s, e.serviceId, owned)[e.type].set(e.objectId, e.mask);
}

export function removeAuth(s: Pick<MutableMaps, 'auths' | 'authIndex'>, e: AuthEntry, owned: Set<unknown>): void {
  s.auths.delete(e.id);
  if (s.authIndex.has(e.serviceId)) ownIndex(s, e.serviceId, owned)[e.type].delete(e.objectId);
}

/** Sets (or replaces) a grant and re-derives which grant decides for its (app, api). */
export function setGrant(s: Pick<MutableMaps, 'grants' | 'grantIndex'>, g: GrantEntry, owned: Set<unknown>): void {
  s.grants.set(g.id, g);
  const cur = s.grantIndex.get(g.apiId);
  const holder = cur?.get(g.appId);
  if (!decidesOver(g, holder)) return;
  let inner = cur as WritableMap<string, GrantEntry> | undefined;
  if (!inner || !owned.has(inner)) {
    inner = cur ? draftOf(cur) : new Map<string, GrantEntry>();
    owned.add(inner);
    s.grantIndex.set(g.apiId, inner);
  }
  inner.set(g.appId, g);
}

/** Removes a grant from both maps (the index falls back to no grant for that pair). */
export function removeGrant(s: Pick<MutableMaps, 'grants' | 'grantIndex'>, g: GrantEntry, owned: Set<unknown>): void {
  s.grants.delete(g.id);
  const cur = s.grantIndex.get(g.apiId);
  if (cur?.get(g.appId)?.id !== g.id) return;
  let inner = cur as WritableMap<string, GrantEntry>;
  if (!owned.has(inner)) {
    inner = draftOf(cur);
    owned.add(inner);
    s.grantIndex.set(g.apiId, inner);
  }
  inner.delete(g.appId);
}

// ---- Copy-on-write ----

export type StatePatch = Partial<MutableMaps>;

/**
 * A new state from `base` with some maps replaced. `authChanged` drops the memoized masks,
 * closures and admin flags; `apisChanged` drops the routers.
 */
export function derive(base: DecisionState, patch: StatePatch, opts: { authChanged?: boolean; apisChanged?: boolean } = {}): DecisionState {
  return Object.freeze({
    ...base,
    ...(patch as Partial<DecisionState>),
    authCache: opts.authChanged ? freshAuthCache() : base.authCache,
    routerCache: opts.apisChanged ? new Map() : base.routerCache,
  });
}

/**
 * Upserts re-read rows (the loosening path: a grant approved, a key created, a subject added…).
 * Only the maps of the tables present in `rows` are copied. Membership rows are added; removals
 * go through the tightening functions.
 */
export function withRows(base: DecisionState, rows: Partial<DecisionRows>): DecisionState {
  const s = { ...base } as unknown as MutableMaps;
  const copy = <K extends keyof MutableMaps>(...keys: K[]) => {
    for (const k of keys) (s as Record<string, unknown>)[k] = draftOf(base[k] as ReadonlyMap<unknown, unknown>);
  };
  if (rows.users?.length) copy('users');
  if (rows.orgUsers?.length) copy('userOrgs');
  if (rows.departments?.length) copy('departments');
  if (rows.departmentUsers?.length) copy('userDepts');
  if (rows.roles?.length) copy('roles');
  if (rows.roleChildren?.length) copy('roleChildren');
  if (rows.roleUsers?.length) copy('userRoles');
  if (rows.apps?.length) copy('apps', 'appIds', 'boundApps');
  if (rows.projects?.length) copy('projects');
  if (rows.services?.length) copy('services');
  if (rows.apis?.length) copy('apis');
  if (rows.serviceAuths?.length) copy('auths', 'authIndex');
  if (rows.grants?.length) copy('grants', 'grantIndex');
  if (rows.accessKeys?.length) copy('keys');
  if (rows.tokens?.length) copy('tokens', 'tokenHashById');
  if (rows.revokedJtis?.length) copy('revokedJtis');
  if (rows.platformSso?.length) copy('platformUsers');
  addRows(s, rows);
  const authChanged = !!(rows.users?.length || rows.orgUsers?.length || rows.departments?.length || rows.departmentUsers?.length || rows.roles?.length || rows.roleChildren?.length || rows.roleUsers?.length || rows.serviceAuths?.length);
  const apisChanged = !!rows.apis?.some((r) => {
    const old = base.apis.get(r.apiId);
    return !old || old.routeKey !== r.routeKey || old.method !== r.method.toUpperCase() || old.serviceId !== idKey(r.serviceId);
  });
  return derive(base, s, { authChanged, apisChanged });
}

// ---- Lookups used by decisions (memoized per snapshot) ----

function userInOrg(state: DecisionState, userId: string): (orgId: string | undefined) => boolean {
  const orgs = state.userOrgs.get(userId);
  return (orgId) => orgId !== undefined && orgs !== undefined && orgs.has(orgId);
}

/** The user's roles closed over child roles, only inside orgs the user belongs to. */
export function userRoleClosure(state: DecisionState, userId: string): string[] {
  let r = state.authCache.roles.get(userId);
  if (!r) {
    const inOrg = userInOrg(state, userId);
    r = roleClosure(state.userRoles.get(userId) ?? [], (id) => state.roleChildren.get(id), (id) => inOrg(state.roles.get(id)?.orgId));
    state.authCache.roles.set(userId, r);
  }
  return r;
}

/** The user's departments plus the ancestors they inherit from, only inside the user's orgs. */
export function userDepartmentClosure(state: DecisionState, userId: string): string[] {
  let d = state.authCache.depts.get(userId);
  if (!d) {
    const inOrg = userInOrg(state, userId);
    d = departmentClosure(state.userDepts.get(userId) ?? [], (id) => state.departments.get(id), (id) => inOrg(state.departments.get(id)?.orgId));
    state.authCache.depts.set(userId, d);
  }
  return d;
}

/**
 * Admin: a superuser, or a member of a role (or of a role inheriting one) whose management
 * permissions include `authz_manage`.
 */
export function isAdmin(state: DecisionState, userId: string): boolean {
  let a = state.authCache.admin.get(userId);
  if (a === undefined) {
    const u = state.users.get(userId);
    a = !!u && (u.isSuperuser || userRoleClosure(state, userId).some((r) => state.roles.get(r)?.authzManage === true));
    state.authCache.admin.set(userId, a);
  }
  return a;
}

/** `mask(u, s)`: the OR of the service's authorizations reaching the user (no admin bits). */
export function userMask(state: DecisionState, userId: string, serviceId: string): number {
  let perUser = state.authCache.masks.get(userId);
  const hit = perUser?.get(serviceId);
  if (hit !== undefined) return hit;
  const m = userMaskFrom(state.authIndex.get(serviceId), userId, userRoleClosure(state, userId), userDepartmentClosure(state, userId));
  if (!perUser) state.authCache.masks.set(userId, (perUser = new Map()));
  perUser.set(serviceId, m);
  return m;
}

/** The mask an admin-aware check uses: all nine bits for an admin. */
export function effectiveUserMask(state: DecisionState, userId: string, serviceId: string): number {
  return isAdmin(state, userId) ? ALL_PERMISSIONS : userMask(state, userId, serviceId);
}

/** The APP authorization's mask on the service (0 when none). */
export function appMask(state: DecisionState, appDbId: string, serviceId: string): number {
  return state.authIndex.get(serviceId)?.APP.get(appDbId) ?? 0;
}

/** The service's router, built on first use in this snapshot. */
export function routerFor(state: DecisionState, serviceId: string): ApiRouter<ApiEntry> {
  let r = state.routerCache.get(serviceId);
  if (!r) {
    const list: ApiEntry[] = [];
    for (const a of state.apis.values()) if (a.serviceId === serviceId) list.push(a);
    r = new ApiRouter(list);
    state.routerCache.set(serviceId, r);
  }
  return r;
}

/** The grant deciding for (app, api), or undefined. */
export function grantFor(state: DecisionState, appDbId: string, apiId: string): GrantEntry | undefined {
  return state.grantIndex.get(apiId)?.get(appDbId);
}

/** `LEAST(end_at, cancel_at)`. */
export function effectiveEnd(g: GrantEntry): number {
  return g.cancelAt === null ? g.endAt : Math.min(g.endAt, g.cancelAt);
}

// ---- Keyed re-reads (the loosening path) ----

/**
 * The rows a batch of events names, by key. A keyed re-read fetches every row of each key
 * (see REREAD_QUERIES) and withKeyedRows replaces what the state holds for that key with them:
 * a key whose rows are gone is removed, so the result equals a full build for those keys.
 */
export interface RereadKeys {
  /** A user: its row, its org / department / role memberships and platform SSO bindings. */
  readonly users: Set<string>;
  readonly tokens: Set<string>;
  readonly accessKeys: Set<string>;
  readonly departments: Set<string>;
  /** Every department of an org (a new org brings its root department). */
  readonly orgDepartments: Set<string>;
  /** A role: its row and its child roles. */
  readonly roles: Set<string>;
  /** Public 32-hex app ids. */
  readonly apps: Set<string>;
  readonly projects: Set<string>;
  readonly services: Set<string>;
  readonly apis: Set<string>;
  readonly auths: Set<string>;
  /** A grant id stands for every grant of its (app, api) pair. */
  readonly grants: Set<string>;
}

export function emptyRereadKeys(): RereadKeys {
  return {
    users: new Set(), tokens: new Set(), accessKeys: new Set(), departments: new Set(), orgDepartments: new Set(), roles: new Set(),
    apps: new Set(), projects: new Set(), services: new Set(), apis: new Set(), auths: new Set(), grants: new Set(),
  };
}

export function rereadKeyCount(k: RereadKeys): number {
  let n = 0;
  for (const s of Object.values(k) as Set<string>[]) n += s.size;
  return n;
}

/** The rows of a keyed re-read: the DecisionRows of those keys (`departments` includes the org ones). */
export type RereadRows = Partial<DecisionRows>;

function sameMembers(a: readonly string[] | ReadonlySet<string> | undefined, b: readonly string[]): boolean {
  const size = a === undefined ? 0 : 'size' in a ? a.size : a.length;
  if (size !== new Set(b).size) return false;
  if (a === undefined) return true;
  const has = 'has' in a ? (x: string) => a.has(x) : (x: string) => a.includes(x);
  return b.every(has);
}

function groupBy<R>(rows: readonly R[] | undefined, key: (r: R) => string): Map<string, R[]> {
  const m = new Map<string, R[]>();
  for (const r of rows ?? []) {
    const k = key(r);
    const l = m.get(k);
    if (l) l.push(r);
    else m.set(k, [r]);
  }
  return m;
}

/**
 * A new state where every key of `keys` holds exactly the rows re-read for it (`rows`), and
 * nothing else changed. Only the maps a key touches are copied (drafts over the shared base).
 */
export function withKeyedRows(base: DecisionState, keys: RereadKeys, rows: RereadRows): DecisionState {
  const s = { ...base } as unknown as MutableMaps;
  const drafted = new Set<keyof MutableMaps>();
  const d = <K extends keyof MutableMaps>(k: K): MutableMaps[K] => {
    if (!drafted.has(k)) {
      (s as Record<string, unknown>)[k] = draftOf(base[k] as ReadonlyMap<unknown, unknown>);
      drafted.add(k);
    }
    return s[k];
  };
  const owned = new Set<unknown>();
  let authChanged = false;
  let apisChanged = false;

  if (keys.users.size) {
    const users = new Map((rows.users ?? []).map((r) => [idKey(r.id), r]));
    const orgs = groupBy(rows.orgUsers, (r) => idKey(r.userId));
    const depts = groupBy(rows.departmentUsers, (r) => idKey(r.userId));
    const roles = groupBy(rows.roleUsers, (r) => idKey(r.userId));
    for (const u of keys.users) {
      const row = users.get(u);
      if (row) d('users').set(u, userEntry(row));
      else if (base.users.has(u)) d('users').delete(u);
      const o = (orgs.get(u) ?? []).map((r) => idKey(r.orgId));
      if (!sameMembers(base.userOrgs.get(u), o)) o.length ? d('userOrgs').set(u, new Set(o)) : d('userOrgs').delete(u);
      const dl = [...new Set((depts.get(u) ?? []).map((r) => idKey(r.departmentId)))];
      if (!sameMembers(base.userDepts.get(u), dl)) dl.length ? d('userDepts').set(u, dl) : d('userDepts').delete(u);
      const rl = [...new Set((roles.get(u) ?? []).map((r) => idKey(r.roleId)))];
      if (!sameMembers(base.userRoles.get(u), rl)) rl.length ? d('userRoles').set(u, rl) : d('userRoles').delete(u);
    }
    // Bindings are only ever added; a removed user's stale binding resolves to no user.
    for (const r of rows.platformSso ?? []) if (base.platformUsers.get(r.ssoUserId) !== idKey(r.userId)) d('platformUsers').set(r.ssoUserId, idKey(r.userId));
    authChanged = true;
  }
  if (keys.tokens.size) {
    const byId = new Map((rows.tokens ?? []).map((r) => [idKey(r.id), r]));
    for (const id of keys.tokens) {
      const row = byId.get(id);
      const old = base.tokenHashById.get(id);
      if (row) {
        const h = tokenHashKey(row.tokenSha256);
        if (old !== undefined && old !== h) d('tokens').delete(old);
        d('tokens').set(h, tokenEntry(row));
        if (old !== h) d('tokenHashById').set(id, h);
      } else if (old !== undefined) {
        d('tokens').delete(old);
        d('tokenHashById').delete(id);
      }
    }
  }
  if (keys.accessKeys.size) {
    const byId = new Map((rows.accessKeys ?? []).map((r) => [r.accessKeyId, r]));
    for (const id of keys.accessKeys) {
      const row = byId.get(id);
      if (row) d('keys').set(id, keyEntry(row));
      else if (base.keys.has(id)) d('keys').delete(id);
    }
  }
  if (keys.departments.size || keys.orgDepartments.size) {
    const byId = new Map((rows.departments ?? []).map((r) => [idKey(r.id), r]));
    for (const id of keys.departments) if (!byId.has(id) && base.departments.has(id)) d('departments').delete(id);
    for (const [id, r] of byId) d('departments').set(id, deptEntry(r));
    authChanged = true;
  }
  if (keys.roles.size) {
    const byId = new Map((rows.roles ?? []).map((r) => [idKey(r.id), r]));
    const children = groupBy(rows.roleChildren, (r) => idKey(r.roleId));
    for (const id of keys.roles) {
      const row = byId.get(id);
      if (row) d('roles').set(id, roleEntry(row));
      else if (base.roles.has(id)) d('roles').delete(id);
      const c = [...new Set((children.get(id) ?? []).map((r) => idKey(r.childId)))];
      if (!sameMembers(base.roleChildren.get(id), c)) c.length ? d('roleChildren').set(id, c) : d('roleChildren').delete(id);
    }
    authChanged = true;
  }
  if (keys.apps.size) {
    const byPublic = new Map((rows.apps ?? []).map((r) => [r.appId, r]));
    for (const pub of keys.apps) {
      const oldId = base.appIds.get(pub);
      const old = oldId === undefined ? undefined : base.apps.get(oldId);
      const row = byPublic.get(pub);
      const e = row ? appEntry(row) : undefined;
      if (old) {
        if (!e || e.id !== old.id) d('apps').delete(old.id);
        if (old.boundServiceId !== null && (s.boundApps.get(old.boundServiceId) === old.id) && e?.boundServiceId !== old.boundServiceId) d('boundApps').delete(old.boundServiceId);
        if (!e) d('appIds').delete(pub);
      }
      if (e) {
        d('apps').set(e.id, e);
        if (oldId !== e.id) d('appIds').set(pub, e.id);
        if (e.boundServiceId !== null && s.boundApps.get(e.boundServiceId) !== e.id) d('boundApps').set(e.boundServiceId, e.id);
      }
    }
  }
  if (keys.projects.size) {
    const byId = new Map((rows.projects ?? []).map((r) => [idKey(r.id), r]));
    for (const id of keys.projects) {
      const row = byId.get(id);
      if (row) d('projects').set(id, projectEntry(row));
      else if (base.projects.has(id)) d('projects').delete(id);
    }
  }
  if (keys.services.size) {
    const byId = new Map((rows.services ?? []).map((r) => [idKey(r.serviceId), r]));
    for (const id of keys.services) {
      const row = byId.get(id);
      if (row) d('services').set(id, serviceEntry(row));
      else if (base.services.has(id)) d('services').delete(id);
    }
  }
  if (keys.apis.size) {
    const byId = new Map((rows.apis ?? []).map((r) => [r.apiId, r]));
    for (const id of keys.apis) {
      const row = byId.get(id);
      if (row) d('apis').set(id, apiEntry(row));
      else if (base.apis.has(id)) d('apis').delete(id);
    }
    // Routers are rebuilt lazily per service: dropping them all is the simple, safe choice.
    apisChanged = true;
  }
  if (keys.auths.size) {
    const byId = new Map((rows.serviceAuths ?? []).map((r) => [idKey(r.id), r]));
    d('auths');
    d('authIndex');
    for (const id of keys.auths) {
      const row = byId.get(id);
      if (row) setAuth(s, authEntry(row), owned);
      else {
        const old = base.auths.get(id);
        if (old) removeAuth(s, old, owned);
      }
    }
    authChanged = true;
  }
  if (keys.grants.size) {
    d('grants');
    d('grantIndex');
    const read = (rows.grants ?? []).map(grantEntry);
    const readIds = new Set(read.map((g) => g.id));
    // Every (app, api) pair concerned: the ones read, and those of named grants that are gone.
    const pairs = new Map<string, { appId: string; apiId: string }>();
    for (const g of read) pairs.set(`${g.appId} ${g.apiId}`, g);
    for (const id of keys.grants) {
      const old = base.grants.get(id);
      if (old) pairs.set(`${old.appId} ${old.apiId}`, old);
      if (old && !readIds.has(id)) s.grants.delete(id);
    }
    for (const { appId, apiId } of pairs.values()) {
      const cur = s.grantIndex.get(apiId);
      if (!cur?.has(appId)) continue;
      let inner = cur as WritableMap<string, GrantEntry>;
      if (!owned.has(inner)) {
        inner = draftOf(cur);
        owned.add(inner);
        s.grantIndex.set(apiId, inner);
      }
      inner.delete(appId);
    }
    for (const g of read) setGrant(s, g, owned);
  }
  return derive(base, s, { authChanged, apisChanged });
}
