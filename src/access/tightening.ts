// Tightening effects: changes that take access away, applied straight from an event's `effect`
// payload with no database read, so a node that only hears the event (e.g. over Redis while cut
// off from PostgreSQL) still revokes. Each function returns a new state and leaves the old one
// untouched; an effect naming something the state does not hold is a no-op (there is nothing
// to take away).

import { invalid } from '../core/errors.ts';
import { isApiPermission, type ApiPermission } from './permissions.ts';
import { draftOf } from './layered-map.ts';
import {
  derive,
  removeAuth,
  setAuth,
  setGrant,
  type AuthMode,
  type DecisionState,
  type GrantStateName,
  type MutableMaps,
  type TokenEntry,
} from './decision-state.ts';

type Maps = MutableMaps;
// Drafts share the large base maps: one event costs a copy of a small overlay.
const copyMap = draftOf;

export function keyDisabled(state: DecisionState, accessKeyId: string): DecisionState {
  const k = state.keys.get(accessKeyId);
  if (!k || k.status === 'Inactive') return state;
  const keys = copyMap(state.keys);
  keys.set(accessKeyId, { ...k, status: 'Inactive' });
  return derive(state, { keys });
}

/** A key past its expiry (rotation grace over): it now answers `key_expired`. */
export function keyExpired(state: DecisionState, accessKeyId: string, atMs = -Infinity): DecisionState {
  const k = state.keys.get(accessKeyId);
  if (!k || (k.expiresAt !== null && k.expiresAt <= atMs)) return state;
  const keys = copyMap(state.keys);
  keys.set(accessKeyId, { ...k, expiresAt: Math.min(k.expiresAt ?? Infinity, atMs) });
  return derive(state, { keys });
}

export function keyDeleted(state: DecisionState, accessKeyId: string): DecisionState {
  if (!state.keys.has(accessKeyId)) return state;
  const keys = copyMap(state.keys);
  keys.delete(accessKeyId);
  return derive(state, { keys });
}

export function tokensRevoked(state: DecisionState, tokenIds: readonly string[]): DecisionState {
  let tokens: ReturnType<typeof draftOf<string, TokenEntry>> | null = null;
  for (const id of tokenIds) {
    const h = state.tokenHashById.get(id);
    const t = h === undefined ? undefined : state.tokens.get(h);
    if (!t || t.revoked) continue;
    tokens ??= copyMap(state.tokens);
    tokens.set(h!, { ...t, revoked: true });
  }
  return tokens ? derive(state, { tokens }) : state;
}

/** `status = 0`: every credential of the user stops at once (checked at decision time). */
export function userDisabled(state: DecisionState, userId: string): DecisionState {
  const u = state.users.get(userId);
  if (!u || u.status === 0) return state;
  const users = copyMap(state.users);
  users.set(userId, { ...u, status: 0 });
  return derive(state, { users });
}

/** The user is gone: unknown users are denied, their tokens and keys no longer resolve. */
export function userDeleted(state: DecisionState, userId: string): DecisionState {
  if (!state.users.has(userId)) return state;
  const users = copyMap(state.users);
  users.delete(userId);
  const patch: Partial<Maps> = { users };
  for (const k of ['userOrgs', 'userRoles', 'userDepts'] as const) {
    if (state[k].has(userId)) {
      const m = copyMap(state[k] as ReadonlyMap<string, unknown>);
      m.delete(userId);
      (patch as Record<string, unknown>)[k] = m;
    }
  }
  return derive(state, patch, { authChanged: true });
}

/** An emptied membership list is dropped, as a full build never holds one. */
function setOrDrop<V>(m: { set(k: string, v: V): unknown; delete(k: string): unknown }, k: string, v: V, size: number): void {
  if (size) m.set(k, v);
  else m.delete(k);
}

/**
 * A membership ended. With `orgId` the user leaves the org, which also drops their roles and
 * departments in it (the schema cascades the same way); with `roleId` / `departmentId` only that
 * membership ends. Closures are recomputed lazily.
 */
export function membershipRemoved(state: DecisionState, m: { userId: string; orgId?: string | null; roleId?: string | null; departmentId?: string | null }): DecisionState {
  const { userId } = m;
  const patch: Partial<Maps> = {};
  if (m.orgId != null) {
    const orgs = state.userOrgs.get(userId);
    if (orgs?.has(m.orgId)) {
      const userOrgs = copyMap(state.userOrgs);
      const next = new Set(orgs);
      next.delete(m.orgId);
      setOrDrop(userOrgs, userId, next, next.size);
      patch.userOrgs = userOrgs;
    }
    const roles = state.userRoles.get(userId);
    if (roles?.some((r) => state.roles.get(r)?.orgId === m.orgId)) {
      const userRoles = copyMap(state.userRoles);
      const left = roles.filter((r) => state.roles.get(r)?.orgId !== m.orgId);
      setOrDrop(userRoles, userId, left, left.length);
      patch.userRoles = userRoles;
    }
    const depts = state.userDepts.get(userId);
    if (depts?.some((d) => state.departments.get(d)?.orgId === m.orgId)) {
      const userDepts = copyMap(state.userDepts);
      const left = depts.filter((d) => state.departments.get(d)?.orgId !== m.orgId);
      setOrDrop(userDepts, userId, left, left.length);
      patch.userDepts = userDepts;
    }
  }
  if (m.roleId != null) {
    const roles = patch.userRoles?.get(userId) ?? state.userRoles.get(userId);
    if (roles?.includes(m.roleId)) {
      const userRoles = patch.userRoles ?? copyMap(state.userRoles);
      const left = roles.filter((r) => r !== m.roleId);
      setOrDrop(userRoles, userId, left, left.length);
      patch.userRoles = userRoles;
    }
  }
  if (m.departmentId != null) {
    const depts = patch.userDepts?.get(userId) ?? state.userDepts.get(userId);
    if (depts?.includes(m.departmentId)) {
      const userDepts = patch.userDepts ?? copyMap(state.userDepts);
      const left = depts.filter((d) => d !== m.departmentId);
      setOrDrop(userDepts, userId, left, left.length);
      patch.userDepts = userDepts;
    }
  }
  return Object.keys(patch).length ? derive(state, patch, { authChanged: true }) : state;
}

export function authDeleted(state: DecisionState, authId: string): DecisionState {
  const a = state.auths.get(authId);
  if (!a) return state;
  const s = { auths: copyMap(state.auths), authIndex: copyMap(state.authIndex) };
  removeAuth(s, a, new Set());
  return derive(state, s, { authChanged: true });
}

/**
 * An authorization's permissions were replaced. Only the bits the new mask removes are applied
 * here (`old & new`); bits it adds are a loosening and arrive with the re-read of the row.
 */
export function authReplaced(state: DecisionState, authId: string, newMask: number): DecisionState {
  const a = state.auths.get(authId);
  if (!a) return state;
  const mask = a.mask & newMask;
  if (mask === a.mask) return state;
  const s = { auths: copyMap(state.auths), authIndex: copyMap(state.authIndex) };
  if (mask === 0) removeAuth(s, a, new Set());
  else setAuth(s, { ...a, mask }, new Set());
  return derive(state, s, { authChanged: true });
}

const CLOSING: Readonly<Record<string, GrantStateName>> = {
  'grant.cancel.app': 'CANCELLED',
  'grant.cancel.effective': 'CANCELLED',
  'grant.expire': 'EXPIRED',
  'grant.withdraw': 'WITHDRAWN',
};

/** A grant closed (cancelled, expired, withdrawn): it no longer allows anything. */
export function grantClosed(state: DecisionState, grantId: string, closedState: GrantStateName, effectiveEndMs?: number | null): DecisionState {
  const g = state.grants.get(grantId);
  if (!g) return state;
  const endAt = effectiveEndMs != null && Number.isFinite(effectiveEndMs) ? Math.min(g.endAt, effectiveEndMs) : g.endAt;
  const s = { grants: copyMap(state.grants), grantIndex: copyMap(state.grantIndex) };
  setGrant(s, { ...g, state: closedState, endAt }, new Set());
  return derive(state, s);
}

/** A reviewer scheduled a cancellation: the grant now ends at `LEAST(end_at, cancel_at)`. */
export function grantCancelScheduled(state: DecisionState, grantId: string, cancelAtMs: number): DecisionState {
  const g = state.grants.get(grantId);
  if (!g || (g.state !== 'ACTIVE' && g.state !== 'CANCEL_SCHEDULED')) return state;
  const cancelAt = g.cancelAt === null ? cancelAtMs : Math.min(g.cancelAt, cancelAtMs);
  const s = { grants: copyMap(state.grants), grantIndex: copyMap(state.grantIndex) };
  setGrant(s, { ...g, state: 'CANCEL_SCHEDULED', cancelAt }, new Set());
  return derive(state, s);
}

/** Resolves an app given by its table id or its public 32-hex app_id. */
function appDbId(state: DecisionState, appId: string): string | undefined {
  if (state.apps.has(appId)) return appId;
  return state.appIds.get(appId);
}

export function appDisabled(state: DecisionState, appId: string): DecisionState {
  const id = appDbId(state, appId);
  const a = id === undefined ? undefined : state.apps.get(id);
  if (!a || a.status === 'DISABLED') return state;
  const apps = copyMap(state.apps);
  apps.set(a.id, { ...a, status: 'DISABLED' });
  return derive(state, { apps });
}

/** The app is gone; its grants cascade with it (they would be unreachable anyway). */
export function appDeleted(state: DecisionState, appId: string): DecisionState {
  const id = appDbId(state, appId);
  const a = id === undefined ? undefined : state.apps.get(id);
  if (!a) return state;
  const apps = copyMap(state.apps);
  apps.delete(a.id);
  const appIds = copyMap(state.appIds);
  appIds.delete(a.appId);
  const patch: Partial<Maps> = { apps, appIds };
  if (a.boundServiceId !== null && state.boundApps.get(a.boundServiceId) === a.id) {
    const boundApps = copyMap(state.boundApps);
    boundApps.delete(a.boundServiceId);
    patch.boundApps = boundApps;
  }
  let auth = false;
  if ([...state.authIndex.values()].some((idx) => idx.APP.has(a.id))) {
    const s = { auths: copyMap(state.auths), authIndex: copyMap(state.authIndex) };
    const owned = new Set<unknown>();
    for (const e of state.auths.values()) if (e.type === 'APP' && e.objectId === a.id) removeAuth(s, e, owned);
    Object.assign(patch, s);
    auth = true;
  }
  return derive(state, patch, { authChanged: auth });
}

/** A service's mode changed. The payload is complete, so this applies in both directions. */
export function serviceModeSet(state: DecisionState, serviceId: string, mode: AuthMode): DecisionState {
  const cur = state.services.get(serviceId);
  if (cur?.mode === mode || (!cur && mode === 'OFF')) return state;
  const services = copyMap(state.services);
  services.set(serviceId, cur ? { ...cur, mode } : { serviceId, mode, apisAuthEnabled: false, supervisorPolicy: 'PLATFORM' });
  return derive(state, { services });
}

/** An API's permission override and public flag changed (complete payload, both directions). */
export function apiUpdated(state: DecisionState, apiId: string, permission: ApiPermission | null, authEnabled: boolean): DecisionState {
  const a = state.apis.get(apiId);
  if (!a || (a.permission === permission && a.authEnabled === authEnabled)) return state;
  const apis = copyMap(state.apis);
  apis.set(apiId, { ...a, permission, authEnabled });
  // The router keeps api ids and re-reads entries, so it stays valid.
  return derive(state, { apis });
}

export function jtisRevoked(state: DecisionState, jtis: readonly string[], expiresAtMs: number): DecisionState {
  const fresh = jtis.filter((j) => !state.revokedJtis.has(j));
  if (!fresh.length) return state;
  const revokedJtis = copyMap(state.revokedJtis);
  for (const j of fresh) revokedJtis.set(j, expiresAtMs);
  return derive(state, { revokedJtis });
}

// ---- Dispatch from an event ----

export type EffectOutcome = 'applied' | 'not_tightening' | 'reload';

type Effect = Record<string, unknown>;

function need(effect: Effect, field: string): string {
  const v = effect[field];
  if (typeof v === 'string' && v !== '') return v;
  if (typeof v === 'number' && Number.isSafeInteger(v)) return String(v);
  throw invalid(`effect.${field} is missing or not an id`, { field: `effect.${field}` });
}

function optional(effect: Effect, field: string): string | null {
  return effect[field] === undefined || effect[field] === null ? null : need(effect, field);
}

function timeMs(effect: Effect, field: string): number {
  const v = effect[field];
  const ms = typeof v === 'number' ? v : typeof v === 'string' ? Date.parse(v) : NaN;
  if (!Number.isFinite(ms)) throw invalid(`effect.${field} is not a time`, { field: `effect.${field}` });
  return ms;
}

/**
 * Applies one event. `reload` means the caller must rebuild from the database (bulk change);
 * `not_tightening` means the action loosens or is informational: re-read the rows it names and
 * merge them with withRows(). A malformed payload for a tightening action throws a DomainError
 * naming the field; the safe reaction is a full reload.
 */
export function applyEffect(state: DecisionState, action: string, effect: unknown, atMs?: number): { state: DecisionState; outcome: EffectOutcome } {
  if (typeof effect !== 'object' || effect === null || Array.isArray(effect)) throw invalid('effect must be an object', { field: 'effect' });
  const e = effect as Effect;
  if (e.reload === true) return { state, outcome: 'reload' };
  const done = (s: DecisionState) => ({ state: s, outcome: 'applied' as const });
  switch (action) {
    case 'key.status':
      // Only a switch to Inactive tightens; Active is a loosening re-read.
      if (e.status !== undefined && e.status !== 'Inactive') break;
      return done(keyDisabled(state, need(e, 'ak')));
    case 'key.expire':
      return done(keyExpired(state, need(e, 'ak'), atMs));
    case 'key.delete':
      return done(keyDeleted(state, need(e, 'ak')));
    case 'token.revoke': {
      const ids = e.token_ids;
      if (!Array.isArray(ids)) throw invalid('effect.token_ids must be an array', { field: 'effect.token_ids' });
      const list = ids.map((x: unknown, i) => {
        if ((typeof x === 'number' && Number.isSafeInteger(x)) || (typeof x === 'string' && x !== '')) return String(x);
        throw invalid(`effect.token_ids[${i}] is not an id`, { field: `effect.token_ids[${i}]` });
      });
      return done(tokensRevoked(state, list));
    }
    case 'user.update':
      // Only a disable tightens; other updates (rename, re-enable) are re-reads.
      if (e.status !== undefined && e.status !== 0) break;
      return done(userDisabled(state, need(e, 'user_id')));
    case 'user.delete':
      return done(userDeleted(state, need(e, 'user_id')));
    case 'org.user.remove':
    case 'role.subject.remove':
    case 'dept.user.remove':
      // org_id on a role or department removal only says where: the user stays in the org.
      return done(membershipRemoved(state, {
        userId: need(e, 'user_id'),
        orgId: action === 'org.user.remove' ? optional(e, 'org_id') : null,
        roleId: optional(e, 'role_id'),
        departmentId: optional(e, 'department_id'),
      }));
    case 'auth.delete':
      return done(authDeleted(state, need(e, 'auth_id')));
    case 'auth.replace': {
      const mask = e.mask;
      if (typeof mask !== 'number' || !Number.isInteger(mask)) throw invalid('effect.mask must be an integer', { field: 'effect.mask' });
      return { state: authReplaced(state, need(e, 'auth_id'), mask), outcome: 'applied' };
    }
    case 'grant.cancel.app':
    case 'grant.cancel.effective':
    case 'grant.expire':
    case 'grant.withdraw':
      return done(grantClosed(state, need(e, 'grant_id'), CLOSING[action], e.effective_end == null ? null : timeMs(e, 'effective_end')));
    case 'grant.cancel.schedule':
      return done(grantCancelScheduled(state, need(e, 'grant_id'), timeMs(e, 'cancel_at')));
    case 'service.auth.mode': {
      const mode = e.mode;
      if (mode !== 'OFF' && mode !== 'AUDIT' && mode !== 'ENFORCE') throw invalid('effect.mode must be OFF, AUDIT or ENFORCE', { field: 'effect.mode' });
      return done(serviceModeSet(state, need(e, 'service_id'), mode));
    }
    case 'api.update': {
      const p = e.permission ?? null;
      if (p !== null && !isApiPermission(p)) throw invalid('effect.permission is not an API permission', { field: 'effect.permission' });
      if (typeof e.auth_enabled !== 'boolean') throw invalid('effect.auth_enabled must be a boolean', { field: 'effect.auth_enabled' });
      return done(apiUpdated(state, need(e, 'api_id'), p, e.auth_enabled));
    }
    case 'jti.revoke': {
      const jtis = e.jtis;
      if (!Array.isArray(jtis) || !jtis.every((j) => typeof j === 'string')) throw invalid('effect.jtis must be an array of strings', { field: 'effect.jtis' });
      // A JWT `exp` is in seconds; anything that large in ms would be before 1973.
      const exp = e.exp == null ? Infinity : typeof e.exp === 'number' && e.exp < 1e11 ? e.exp * 1000 : timeMs(e, 'exp');
      return done(jtisRevoked(state, jtis as string[], exp));
    }
    default:
      if (action.startsWith('app.') && typeof e.app_id !== 'undefined') {
        if (action === 'app.delete') return done(appDeleted(state, need(e, 'app_id')));
        if (e.status === undefined || e.status === 'DISABLED') return done(appDisabled(state, need(e, 'app_id')));
      }
  }
  return { state, outcome: 'not_tightening' };
}

