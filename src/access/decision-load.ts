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
