// Which rows an event names, for the keyed re-read that applies it (decision-state.ts
// withKeyedRows). Every event falls in one of three classes:
//   none: its payload is its complete effect (tightening.ts applies it; nothing to read);
//   keys: the rows it names are re-read by key — the loosening path, and tightening events
//         whose payload is partial (the payload's part applies at once, the read completes it);
//   full: it cannot be applied by key, so the node reloads everything:
//         `reload: true` (an effect too large for NOTIFY), key.rekey (every key's secret was
//         re-encrypted), authz.purge (it drops rows no event names), a role.update from a
//         writer that did not name the members it added, and any action this node does not know.
import type { RereadKeys } from './decision-state.ts';

export type RereadClass = 'none' | 'keys' | 'full';

type Effect = Record<string, unknown>;

function id(v: unknown): string | null {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return String(v);
  if (typeof v === 'string' && v !== '') return v;
  return null;
}

/** Adds effect[field] to the set; false when it is missing or not an id. */
function add(set: Set<string>, effect: Effect, field: string): boolean {
  const v = id(effect[field]);
  if (v === null) return false;
  set.add(v);
  return true;
}

/** Adds every id of effect[field] (an array); false when it is not an array of ids. */
function addAll(set: Set<string>, effect: Effect, field: string): boolean {
  const list = effect[field];
  if (!Array.isArray(list)) return false;
  const ids = list.map(id);
  if (ids.some((x) => x === null)) return false;
  for (const x of ids) set.add(x!);
  return true;
}

// Tightening actions whose payload is complete (tightening.ts): nothing to read.
const COMPLETE = new Set([
  'key.delete', 'token.revoke', 'jti.revoke', 'org.user.remove', 'role.subject.remove', 'dept.user.remove',
  'auth.delete', 'app.delete', 'user.delete',
]);

/**
 * Actions whose payload sets a value in either direction (not only tightening): applied out of
 * order, an older one would overwrite a newer one, so the worker re-reads their row too, and
 * their payload is skipped when a newer event has already arrived.
 */
export const BOTH_WAYS: ReadonlySet<string> = new Set(['service.auth.mode', 'api.update']);

// Grant transitions (including closings, whose payload carries only the new state and end).
const GRANT = /^grant\./;

/**
 * Classifies one event and adds the keys it names to `keys`. A malformed effect of an action
 * that needs keys is `full` (the safe reaction).
 */
export function planReread(action: string, effect: Effect, keys: RereadKeys): RereadClass {
  if (effect.reload === true) return 'full';
  if (COMPLETE.has(action)) return 'none';
  const ok = (b: boolean): RereadClass => (b ? 'keys' : 'full');
  switch (action) {
    case 'key.status':
      return effect.status === 'Inactive' ? 'none' : ok(add(keys.accessKeys, effect, 'ak'));
    case 'key.create':
    case 'key.expire':
      return ok(add(keys.accessKeys, effect, 'ak'));
    case 'key.rotate':
      return ok(add(keys.accessKeys, effect, 'ak') && (effect.rotated_to == null || add(keys.accessKeys, effect, 'rotated_to')));
    case 'token.issue':
      return ok(add(keys.tokens, effect, 'token_id'));
    case 'user.create':
    case 'user.update':
    case 'user.sso.add':
    case 'org.user.add':
    case 'role.subject.add':
    case 'dept.user.add':
      return ok(add(keys.users, effect, 'user_id'));
    case 'org.create':
      return ok(add(keys.orgDepartments, effect, 'org_id'));
    case 'dept.create':
    case 'dept.update':
      return ok(add(keys.departments, effect, 'department_id'));
    case 'dept.delete':
      return ok(add(keys.departments, effect, 'department_id') && (effect.user_ids === undefined || addAll(keys.users, effect, 'user_ids')));
    case 'role.create':
      return ok(add(keys.roles, effect, 'role_id') && (effect.user_ids === undefined || addAll(keys.users, effect, 'user_ids')));
    case 'role.update':
      // Members it removed come as role.subject.remove events; the ones it added must be named.
      return ok(add(keys.roles, effect, 'role_id') && addAll(keys.users, effect, 'added_user_ids'));
    case 'project.create':
    case 'project.update':
    case 'project.delete':
      return ok(add(keys.projects, effect, 'project_id'));
    case 'app.create':
    case 'app.update':
      return ok(add(keys.apps, effect, 'app_id'));
    case 'auth.add':
    case 'auth.replace':
      return ok(add(keys.auths, effect, 'auth_id'));
    case 'service.auth.mode':
    case 'service.apis.auth':
    case 'service.auth.settings':
      return ok(add(keys.services, effect, 'service_id'));
    case 'api.upsert':
    case 'api.deprecate':
      return ok(addAll(keys.apis, effect, 'api_ids'));
    case 'api.update':
      return ok(add(keys.apis, effect, 'api_id'));
    default:
      if (GRANT.test(action)) return ok(add(keys.grants, effect, 'grant_id'));
      return 'full';
  }
}
