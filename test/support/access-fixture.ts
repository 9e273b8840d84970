// A small directory, catalog and set of credentials for the access-core tests and benchmark.
import { createHash } from 'node:crypto';
import { apiIdOf, routeKeyOf } from '../../src/access/catalog.ts';
import type { ApiRow, DecisionRows, GrantRow } from '../../src/access/decision-state.ts';
import { PERM } from '../../src/access/permissions.ts';

export const NOW = Date.parse('2026-06-01T00:00:00.000Z');
export const DAY = 86_400_000;
export const SVC = '12';
export const SVC_NAME = 'orders';

export function token(n: number): string {
  // 43 base64url characters after the prefix, deterministic per n.
  return 'umt_' + createHash('sha256').update(`token-${n}`).digest('base64url');
}
export const sha = (t: string) => createHash('sha256').update(t).digest();

export function api(serviceId: string, method: string, template: string, extra: Partial<ApiRow> = {}): ApiRow {
  const routeKey = routeKeyOf(template);
  return { apiId: apiIdOf(serviceId, method, routeKey), serviceId, method, pathTemplate: template, routeKey, permission: null, authEnabled: true, deprecatedAt: null, ...extra };
}

export const APIS = {
  list: api(SVC, 'GET', '/items'),
  get: api(SVC, 'GET', '/items/{id}'),
  create: api(SVC, 'POST', '/items'),
  export: api(SVC, 'GET', '/items/export', { permission: 'EXPORT' }),
  health: api(SVC, 'GET', '/health', { authEnabled: false }),
  remove: api(SVC, 'DELETE', '/items/{id}'),
};

export const APP_ID = '9084aa00000000000000000000000001';
export const APP2_ID = '9084aa00000000000000000000000002';

export function grant(id: number, apiId: string, state: GrantRow['state'], start: number | null, end: number | null, cancelAt: number | null = null, appId = '1'): GrantRow {
  return { id, appId, apiId, state, startAt: start, endAt: end, cancelAt };
}

/**
 * Users: 1 alice (direct USER auth VIEW), 2 bob (via role 20 → child 21 GROUP auth ADD),
 * 3 carol (dept 32 to_super → 31 to_children → 30 root; DEPT auth on 31 DELETE, on 30 EXPORT),
 * 4 dave (disabled), 5 erin (superuser), 6 frank (role 22 with authz_manage),
 * 7 gina (TEST only), 8 hank (role 20 but not in org 100 any more).
 */
export function rows(): DecisionRows {
  return {
    users: [
      { id: 1, account: 'alice', status: 1, isSuperuser: false },
      { id: 2, account: 'bob', status: 1, isSuperuser: false },
      { id: 3, account: 'carol', status: 1, isSuperuser: false },
      { id: 4, account: 'dave', status: 0, isSuperuser: false },
      { id: 5, account: 'erin', status: 1, isSuperuser: true },
      { id: 6, account: 'frank', status: 1, isSuperuser: false },
      { id: 7, account: 'gina', status: 1, isSuperuser: false },
      { id: 8, account: 'hank', status: 1, isSuperuser: false },
    ],
    orgUsers: [1, 2, 3, 4, 5, 6, 7].map((u) => ({ orgId: 100, userId: u })),
    departments: [
      { id: 30, orgId: 100, superId: null, permInherit: 'to_super' },
      { id: 31, orgId: 100, superId: 30, permInherit: 'to_children' },
      { id: 32, orgId: 100, superId: 31, permInherit: 'to_super' },
    ],
    departmentUsers: [{ orgId: 100, departmentId: 32, userId: 3 }],
    roles: [
      { id: 20, orgId: 100, managementPermissions: [] },
      { id: 21, orgId: 100, managementPermissions: [] },
      { id: 22, orgId: 100, managementPermissions: ['authz_manage'] },
    ],
    // 20 inherits 21, and 21 inherits 20: a cycle the closure must survive.
    roleChildren: [
      { orgId: 100, roleId: 20, childId: 21 },
      { orgId: 100, roleId: 21, childId: 20 },
    ],
    roleUsers: [
      { orgId: 100, roleId: 20, userId: 2 },
      { orgId: 100, roleId: 22, userId: 6 },
      { orgId: 100, roleId: 20, userId: 8 },
    ],
    apps: [
      { id: 1, appId: APP_ID, projectId: 40, name: 'reporter', ownerUserId: 1, status: 'ACTIVE', boundServiceId: null },
      { id: 2, appId: APP2_ID, projectId: 41, name: 'old-app', ownerUserId: 1, status: 'ACTIVE', boundServiceId: null },
    ],
    projects: [
      { id: 40, orgId: 100, isPermanent: true, startedAt: null, expiredAt: null },
      { id: 41, orgId: 100, isPermanent: false, startedAt: '2026-01-01', expiredAt: '2026-05-31' },
    ],
    services: [
      { serviceId: SVC, authMode: 'ENFORCE', apisAuthEnabled: false, supervisorPolicy: 'PLATFORM' },
      { serviceId: '13', authMode: 'ENFORCE', apisAuthEnabled: true, supervisorPolicy: 'PLATFORM' },
      { serviceId: '14', authMode: 'AUDIT', apisAuthEnabled: false, supervisorPolicy: 'PLATFORM' },
    ],
    apis: [...Object.values(APIS), api('13', 'GET', '/items/{id}'), api('13', 'GET', '/items'), api('13', 'POST', '/items'), api('13', 'DELETE', '/items/{id}')],
    serviceAuths: [
      { id: 1, serviceId: SVC, authObjectType: 'USER', authObjectId: 1, permMask: PERM.VIEW },
      { id: 2, serviceId: SVC, authObjectType: 'GROUP', authObjectId: 21, permMask: PERM.ADD },
      { id: 3, serviceId: SVC, authObjectType: 'DEPT', authObjectId: 31, permMask: PERM.DELETE },
      { id: 4, serviceId: SVC, authObjectType: 'DEPT', authObjectId: 30, permMask: PERM.EXPORT },
      { id: 5, serviceId: SVC, authObjectType: 'USER', authObjectId: 7, permMask: PERM.TEST },
      { id: 6, serviceId: SVC, authObjectType: 'APP', authObjectId: 1, permMask: PERM.VIEW },
      { id: 7, serviceId: SVC, authObjectType: 'USER', authObjectId: 8, permMask: PERM.VIEW },
      { id: 8, serviceId: '14', authObjectType: 'USER', authObjectId: 1, permMask: PERM.VIEW },
    ],
    grants: [
      // service 13: GET /items/{id} active for 30 days; GET /items pending; POST /items cancel scheduled in 3 days;
      grant(1, apiIdOf('13', 'GET', '/items/{}'), 'ACTIVE', NOW - DAY, NOW + 30 * DAY),
      grant(2, apiIdOf('13', 'GET', '/items'), 'PENDING', null, null),
      grant(3, apiIdOf('13', 'POST', '/items'), 'CANCEL_SCHEDULED', NOW - DAY, NOW + 30 * DAY, NOW + 3 * DAY),
      // DELETE: an older rejected application, then an active grant ending in 2 days.
      grant(4, apiIdOf('13', 'DELETE', '/items/{}'), 'REJECTED', null, null),
      grant(5, apiIdOf('13', 'DELETE', '/items/{}'), 'ACTIVE', NOW - DAY, NOW + 2 * DAY),
    ],
    accessKeys: [
      { accessKeyId: 'UMAKAAAAAAAAAAAAAAA1', ownerUserId: 1, ownerAppId: null, status: 'Active', expiresAt: null },
      { accessKeyId: 'UMAKAAAAAAAAAAAAAAA2', ownerUserId: null, ownerAppId: 1, status: 'Active', expiresAt: NOW + DAY },
      { accessKeyId: 'UMAKAAAAAAAAAAAAAAA3', ownerUserId: 1, ownerAppId: null, status: 'Inactive', expiresAt: null },
      { accessKeyId: 'UMAKAAAAAAAAAAAAAAA4', ownerUserId: 1, ownerAppId: null, status: 'Active', expiresAt: NOW - 1 },
      { accessKeyId: 'UMAKAAAAAAAAAAAAAAA5', ownerUserId: 4, ownerAppId: null, status: 'Active', expiresAt: null },
    ],
    tokens: [
      { id: 1, tokenSha256: sha(token(1)), userId: 1, expiresAt: NOW + DAY, revokedAt: null, parentJti: null },
      { id: 2, tokenSha256: sha(token(2)).toString('hex'), userId: 1, expiresAt: NOW + DAY, revokedAt: NOW - DAY, parentJti: null },
      { id: 3, tokenSha256: sha(token(3)), userId: 1, expiresAt: NOW, revokedAt: null, parentJti: null },
      { id: 4, tokenSha256: sha(token(4)), userId: 4, expiresAt: NOW + DAY, revokedAt: null, parentJti: null },
      { id: 5, tokenSha256: sha(token(5)), userId: 1, expiresAt: NOW + DAY, revokedAt: null, parentJti: 'jti-abc' },
      { id: 6, tokenSha256: sha(token(6)), userId: 2, expiresAt: NOW + DAY, revokedAt: null, parentJti: null },
    ],
    revokedJtis: [],
    // Platform user 'p-alice' is alice; 'p-hank' is hank.
    platformSso: [{ userId: 1, ssoUserId: 'p-alice' }, { userId: 8, ssoUserId: 'p-hank' }, { userId: 4, ssoUserId: 'p-dave' }],
  };
}
