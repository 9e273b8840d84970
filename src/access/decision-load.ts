// The reads that fill a decision state: one SELECT per table, with columns aliased to the row
// shapes of decision-state.ts, so a loader runs each text (postgres.js `sql.unsafe(text)`) and
// passes the results to buildDecisionState. No I/O here: the caller owns the connection, the
// transaction (run them in one REPEATABLE READ transaction for a consistent snapshot) and the
// retry policy.

import type { DecisionRows } from './decision-state.ts';

export const DECISION_QUERIES: Readonly<Record<keyof DecisionRows, string>> = Object.freeze({
  users: `SELECT id, account, status, is_superuser AS "isSuperuser" FROM authz_user`,
  orgUsers: `SELECT org_id AS "orgId", user_id AS "userId" FROM authz_org_user`,
  departments: `SELECT id, org_id AS "orgId", super_id AS "superId", perm_inherit AS "permInherit" FROM authz_department`,
  departmentUsers: `SELECT org_id AS "orgId", department_id AS "departmentId", user_id AS "userId" FROM authz_department_user`,
  roles: `SELECT id, org_id AS "orgId", management_permissions AS "managementPermissions" FROM authz_role`,
  roleChildren: `SELECT org_id AS "orgId", role_id AS "roleId", child_id AS "childId" FROM authz_role_child`,
  roleUsers: `SELECT org_id AS "orgId", role_id AS "roleId", user_id AS "userId" FROM authz_role_user`,
  apps: `SELECT id, app_id AS "appId", project_id AS "projectId", name, owner_user_id AS "ownerUserId", status, bound_service_id AS "boundServiceId" FROM authz_app`,
  // Dates as text: a `date` parsed into a JS Date would depend on the process time zone.
  projects: `SELECT id, org_id AS "orgId", is_permanent AS "isPermanent", started_at::text AS "startedAt", expired_at::text AS "expiredAt" FROM authz_project`,
  services: `SELECT service_id AS "serviceId", auth_mode AS "authMode", apis_auth_enabled AS "apisAuthEnabled", supervisor_policy AS "supervisorPolicy" FROM authz_service`,
  apis: `SELECT api_id AS "apiId", service_id AS "serviceId", method, path_template AS "pathTemplate", route_key AS "routeKey", permission, auth_enabled AS "authEnabled", deprecated_at AS "deprecatedAt" FROM authz_api`,
  serviceAuths: `SELECT id, service_id AS "serviceId", auth_object_type AS "authObjectType", auth_object_id AS "authObjectId", perm_mask AS "permMask" FROM authz_service_auth`,
  // Closed grants only tell "expired" from "never granted" in deny messages: a month of them is plenty.
  grants: `SELECT id, app_id AS "appId", api_id AS "apiId", state, start_at AS "startAt", end_at AS "endAt", cancel_at AS "cancelAt" FROM authz_grant
    WHERE state IN ('PENDING','ACTIVE','CANCEL_SCHEDULED') OR closed_at > now() - interval '30 days'`,
  accessKeys: `SELECT access_key_id AS "accessKeyId", owner_user_id AS "ownerUserId", owner_app_id AS "ownerAppId", status, expires_at AS "expiresAt" FROM authz_access_key`,
  // Tokens expired for more than 30 days are purged anyway; until then they answer token_expired.
  tokens: `SELECT id, token_sha256 AS "tokenSha256", user_id AS "userId", expires_at AS "expiresAt", revoked_at AS "revokedAt", parent_jti AS "parentJti" FROM authz_token
    WHERE expires_at > now() - interval '30 days'`,
  revokedJtis: `SELECT jti, expires_at AS "expiresAt" FROM authz_revoked_jti WHERE expires_at > now()`,
  platformSso: `SELECT user_id AS "userId", sso_user_id AS "ssoUserId" FROM authz_user_sso WHERE sso_type = 'utilmeta'`,
});

/** Filters a full read to the rows of some keys: `$1` is the array of keys. */
const by = (text: string, column: string, type: 'bigint' | 'text') => `SELECT * FROM (${text}) q WHERE q."${column}" = ANY($1::${type}[])`;
const Q = DECISION_QUERIES;

/**
 * The keyed re-reads of the loosening path: for each kind of key (RereadKeys), the rows of the
 * tables it covers, shaped exactly like the full read's (the same texts, filtered), so a state
 * patched from them equals a full build.
 */
export const REREAD_QUERIES = Object.freeze({
  users: { users: by(Q.users, 'id', 'bigint'), orgUsers: by(Q.orgUsers, 'userId', 'bigint'), departmentUsers: by(Q.departmentUsers, 'userId', 'bigint'), roleUsers: by(Q.roleUsers, 'userId', 'bigint'), platformSso: by(Q.platformSso, 'userId', 'bigint') },
  tokens: { tokens: by(Q.tokens, 'id', 'bigint') },
  accessKeys: { accessKeys: by(Q.accessKeys, 'accessKeyId', 'text') },
  departments: { departments: by(Q.departments, 'id', 'bigint') },
  orgDepartments: { departments: by(Q.departments, 'orgId', 'bigint') },
  roles: { roles: by(Q.roles, 'id', 'bigint'), roleChildren: by(Q.roleChildren, 'roleId', 'bigint') },
  apps: { apps: by(Q.apps, 'appId', 'text') },
  projects: { projects: by(Q.projects, 'id', 'bigint') },
  services: { services: by(Q.services, 'serviceId', 'bigint') },
  apis: { apis: by(Q.apis, 'apiId', 'text') },
  auths: { serviceAuths: by(Q.serviceAuths, 'id', 'bigint') },
  // Every grant of the pairs the named grants belong to (the index picks one per pair).
  grants: { grants: `SELECT * FROM (${Q.grants}) q WHERE (q."appId", q."apiId") IN (SELECT app_id, api_id FROM authz_grant WHERE id = ANY($1::bigint[]))` },
} satisfies Record<string, Partial<Record<keyof DecisionRows, string>>>);

/** The access-key secrets of a keyed re-read. */
export const REREAD_SECRETS = `SELECT access_key_id, secret_ciphertext, secret_nonce, master_key_id FROM authz_access_key WHERE access_key_id = ANY($1::text[])`;

/** Events by seq, as the NOTIFY trigger renders them (for filling a gap in what the channels delivered). */
// Ordered by the bigint column, not by the text alias (as text, '100' sorts before '99').
export const EVENTS_AFTER = `SELECT e.seq::text AS seq, e.action, floor(extract(epoch FROM e.at) * 1000)::float8 AS at_ms, e.effect FROM authz_event e
  WHERE e.seq > $1::bigint AND e.seq <= $2::bigint ORDER BY e.seq LIMIT $3::int`;
