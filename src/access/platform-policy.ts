// Platform-authority proxy types (supervisor, operations): the edge denylist of revoked platform
// JWT ids, and the optional per-service policy that maps the platform user behind a supervisor
// JWT to a local user who must hold TEST or the method's permission. Pure, from a decision state.

import { PERM, permissionForMethod, type Permission } from './permissions.ts';
import { effectiveUserMask, idKey, type DecisionState, type Id } from './decision-state.ts';

/** A platform JWT whose id was revoked at the edge is refused everywhere (401 token_revoked). */
export function jtiRevoked(state: DecisionState, jti: string | null | undefined): boolean {
  return typeof jti === 'string' && state.revokedJtis.has(jti);
}

export type PlatformDecision =
  /** `testOnly`: allowed by TEST alone, so only non-production instances may serve it. */
  | { result: 'ALLOW'; userId: string | null; testOnly: boolean }
  | { result: 'DENY'; status: number; state: 'token_revoked' | 'platform_user_unmapped' | 'principal_disabled' | 'permission_denied'; message: string; required: Permission | null };

/**
 * A supervisor request (platform → the service's base_url) that already passed the JWT checks.
 * Only a service in ENFORCE with `supervisor_policy = TEST_PERMISSION` asks more than the
 * platform's own authority: the JWT `sub` must be bound (SSO type `utilmeta`) to an active user
 * holding TEST or the permission of the method. TEST alone reaches only non-production
 * instances, as it does for discovery.
 */
export function decideSupervisor(state: DecisionState, serviceId: Id, method: string, jwt: { sub?: unknown; jti?: unknown }): PlatformDecision {
  if (typeof jwt.jti === 'string' && state.revokedJtis.has(jwt.jti)) {
    return { result: 'DENY', status: 401, state: 'token_revoked', message: 'platform token revoked', required: null };
  }
  const sid = idKey(serviceId);
  const svc = state.services.get(sid);
  if (!svc || svc.mode !== 'ENFORCE' || svc.supervisorPolicy !== 'TEST_PERMISSION') return { result: 'ALLOW', userId: null, testOnly: false };
  const need = permissionForMethod(method);
  const userId = typeof jwt.sub === 'string' || typeof jwt.sub === 'number' ? state.platformUsers.get(String(jwt.sub)) : undefined;
  if (userId === undefined) return { result: 'DENY', status: 403, state: 'platform_user_unmapped', message: 'the platform user is not bound to a local user', required: need };
  const u = state.users.get(userId);
  if (!u || u.status !== 1) return { result: 'DENY', status: 403, state: 'principal_disabled', message: `user ${u?.account ?? userId} is disabled`, required: need };
  const m = effectiveUserMask(state, u.id, sid);
  if (m & PERM[need]) return { result: 'ALLOW', userId: u.id, testOnly: false };
  if (m & PERM.TEST) return { result: 'ALLOW', userId: u.id, testOnly: true };
  return { result: 'DENY', status: 403, state: 'permission_denied', message: `user ${u.account} holds neither TEST nor ${need} on this service`, required: need };
}
