// Per-service authorizations (the Services Authorization API): who holds which
// permissions on a service, the service's enforcement switches, its API list and
// the audit trail. No HTTP here: callers pass an authenticated caller and plain
// inputs, and get plain data or a DomainError.
//
// Caller rules: GRANT administers authorizations and the enable flag; SHARE may
// only add USER/DEPT/GROUP authorizations within its own data permissions;
// RELEASE manages the APIs; admins may do everything. Caller masks come from the
// node's live decision state (tightening is applied there straight from the
// event, so a revoked GRANT stops working as soon as the node hears of it).
import type postgres from 'postgres';
import { DomainError, forbidden, invalid, notFound } from '../core/errors.ts';
import type { Caller } from './credentials.ts';
import type { AuthzStore } from './store.ts';
import type { AccessView } from './view.ts';
import {
  ALL_PERMISSIONS, API_PERMISSIONS, MANAGEMENT_MASK, PERM, isApiPermission, maskToNames, namesToMask, parsePermission, permissionForMethod,
  type ApiPermission,
} from './permissions.ts';
import { isAdmin, userDepartmentClosure, userMask, userRoleClosure, type AuthObjectType, type DecisionState } from './decision-state.ts';
import { apiIdOf, routeKeyOf, templateProblem, CATALOG_METHODS } from './catalog.ts';
import { buildAuthListSql, parseAuthListQuery, parseInstant, type QueryInput } from './list-query.ts';

export interface ServicesAuthDeps {
  store: AuthzStore;
  view: AccessView;
}

type Query = Readonly<Record<string, string | undefined>>;
const OBJECT_TYPES: readonly AuthObjectType[] = ['USER', 'DEPT', 'GROUP', 'APP'];
const OBJECT_COLUMN: Record<AuthObjectType, string> = { USER: 'user_id', DEPT: 'department_id', GROUP: 'role_id', APP: 'app_id' };
const OBJECT_TABLE: Record<AuthObjectType, string> = { USER: 'authz_user', DEPT: 'authz_department', GROUP: 'authz_role', APP: 'authz_app' };
const INT64 = /^-?\d{1,19}$/;
const INT64_MAX = 9223372036854775807n;

const bad = (field: string, message: string) => invalid(`${field}: ${message}`, { code: 'PARAM_INVALID', field });

/** A positive int64 id from a path, query or body (number or decimal string). */
export function parseId(v: unknown, field: string): string {
  const s = typeof v === 'number' && Number.isSafeInteger(v) ? String(v) : typeof v === 'string' ? v.trim() : null;
  if (s === null || !INT64.test(s) || BigInt(s) < 1n || BigInt(s) > INT64_MAX) throw bad(field, 'must be a positive 64-bit integer');
  return s;
}

function parseBool(v: string | undefined, field: string, required: boolean): boolean | undefined {
  if (v === undefined || v === '') {
    if (required) throw bad(field, "is required ('true' or 'false')");
    return undefined;
  }
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw bad(field, `must be 'true' or 'false', not ${JSON.stringify(v.slice(0, 40))}`);
}

function parsePage(q: Query, maxSize = 2000): { pageNo: number; pageSize: number } {
  const num = (name: string, dflt: number, max: number) => {
    const v = q[name];
    if (v === undefined || v === '') return dflt;
    if (!/^\d{1,7}$/.test(v) || Number(v) < 1 || Number(v) > max) throw bad(name, `must be an integer between 1 and ${max}`);
    return Number(v);
  };
  return { pageNo: num('pageNo', 1, 100000), pageSize: num('pageSize', 10, maxSize) };
}

const iso = (d: Date | string | null | undefined): string | null => (d == null ? null : new Date(d).toISOString());

// ------------------------------------------------------------------ caller rules

export class ServicesAuth {
  constructor(private readonly deps: ServicesAuthDeps) {}

  private get state(): DecisionState {
    const s = this.deps.view.current.state;
    if (!s) throw new DomainError('unavailable', 'the access state is not loaded yet', { code: 'DB_UNAVAILABLE', retryAfter: 1 });
    return s;
  }

  private get sql(): postgres.Sql {
    return this.deps.store.sql;
  }

  /** The caller's mask on the service; all nine bits for an admin. */
  private callerMask(caller: Caller, serviceId: string): number {
    if (caller.admin) return ALL_PERMISSIONS;
    if (caller.userId === null) return 0;
    const s = this.state;
    return isAdmin(s, caller.userId) ? ALL_PERMISSIONS : userMask(s, caller.userId, serviceId);
  }

  private require(caller: Caller, serviceId: string, anyOf: number, what: string): number {
    const m = this.callerMask(caller, serviceId);
    if ((m & anyOf) === 0) throw forbidden(`you need ${maskToNames(anyOf).join(' or ')} on service ${serviceId} to ${what}`, { code: 'FORBIDDEN' });
    return m;
  }

  private async service(sql: postgres.Sql | postgres.TransactionSql, serviceId: string): Promise<{ id: string; name: string }> {
    const [row] = await sql<{ id: string; name: string }[]>`SELECT id::text AS id, name FROM utilmeta_service WHERE id = ${serviceId}`;
    if (!row) throw notFound(`service ${serviceId} does not exist`, { code: 'SERVICE_NOT_FOUND', field: 'id' });
    return row;
  }

  // ---------------------------------------------------------------- authorizations

  private async authObject(sql: postgres.Sql | postgres.TransactionSql, id: string): Promise<Record<string, unknown> | null> {
    const [r] = await sql<AuthRow[]>`
      SELECT a.id::text, a.service_id::text, a.auth_object_type, a.auth_object_id::text, a.perm_mask, a.created_at, a.updated_at,
        s.name AS service_name, COALESCE(ou.username, od.name, orl.name, oa.name) AS auth_object_name,
        cu.account AS created_by, uu.account AS updated_by
      FROM authz_service_auth a JOIN utilmeta_service s ON s.id = a.service_id
      LEFT JOIN authz_user ou ON ou.id = a.user_id LEFT JOIN authz_department od ON od.id = a.department_id
      LEFT JOIN authz_role orl ON orl.id = a.role_id LEFT JOIN authz_app oa ON oa.id = a.app_id
      LEFT JOIN authz_user cu ON cu.id = a.created_by LEFT JOIN authz_user uu ON uu.id = a.updated_by
      WHERE a.id = ${id}`;
    return r ? authJson(r, 'DETAIL') : null;
  }

  async add(caller: Caller, serviceIdIn: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const serviceId = parseId(serviceIdIn, 'id');
    const type = body.authObjectType;
    if (typeof type !== 'string' || !(OBJECT_TYPES as readonly string[]).includes(type)) throw bad('authObjectType', `must be one of ${OBJECT_TYPES.join(', ')}`);
    const t = type as AuthObjectType;
    const objectId = parseId(body.authObjectId, 'authObjectId');
    const mask = namesToMask(body.permissions, 'permissions');
    if (t === 'APP' && mask & MANAGEMENT_MASK) throw bad('permissions', 'apps cannot hold GRANT, SHARE or RELEASE');
    const { result } = await this.deps.store.write(caller.actor, async (tx) => {
      await this.service(tx.sql, serviceId);
      const own = this.callerMask(caller, serviceId);
      if (!(own & PERM.GRANT)) {
        if (!(own & PERM.SHARE)) throw forbidden(`you need GRANT or SHARE on service ${serviceId} to add an authorization`, { code: 'FORBIDDEN' });
        // SHARE passes on only data permissions one holds oneself, and never to apps.
        if (t === 'APP') throw forbidden('SHARE cannot authorize apps; that needs GRANT', { code: 'FORBIDDEN' });
        const allowed = own & ~MANAGEMENT_MASK;
        if (mask & ~allowed) throw forbidden(`SHARE lets you pass on only permissions you hold (${maskToNames(allowed).join(', ') || 'none'}), without GRANT, SHARE or RELEASE`, { code: 'FORBIDDEN' });
      }
      const [obj] = await tx.sql`SELECT 1 FROM ${tx.sql(OBJECT_TABLE[t])} WHERE id = ${objectId}`;
      if (!obj) throw notFound(`${t} ${objectId} does not exist`, { code: 'AUTH_OBJECT_NOT_FOUND', field: 'authObjectId' });
      const [row] = await tx.sql<{ id: string }[]>`
        INSERT INTO authz_service_auth (service_id, auth_object_type, ${tx.sql(OBJECT_COLUMN[t])}, perm_mask, created_by, updated_by)
        VALUES (${serviceId}, ${t}, ${objectId}, ${mask}, ${caller.userId}, ${caller.userId})
        ON CONFLICT (service_id, auth_object_type, auth_object_id) DO NOTHING
        RETURNING id::text`;
      if (!row) throw new DomainError('conflict', `${t} ${objectId} already has an authorization on service ${serviceId}; use PUT /services/auth/{id} to change it`, { code: 'AUTH_EXISTS' });
      const after = { service_id: serviceId, auth_object_type: t, auth_object_id: objectId, perm_mask: mask };
      tx.event({ action: 'auth.add', targetType: 'service_auth', targetId: row.id, serviceId, effect: { auth_id: row.id, service_id: serviceId }, after });
      return row.id;
    });
    return (await this.authObject(this.sql, result))!;
  }

  async replace(caller: Caller, authIdIn: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const authId = parseId(authIdIn, 'id');
    const mask = namesToMask(body.permissions, 'permissions');
    await this.deps.store.write(caller.actor, async (tx) => {
      const [cur] = await tx.sql<{ service_id: string; auth_object_type: AuthObjectType; perm_mask: number }[]>`
        SELECT service_id::text, auth_object_type, perm_mask FROM authz_service_auth WHERE id = ${authId} FOR UPDATE`;
      if (!cur) throw notFound(`authorization ${authId} does not exist`, { code: 'AUTH_NOT_FOUND', field: 'id' });
      this.require(caller, cur.service_id, PERM.GRANT, 'replace an authorization');
      if (cur.auth_object_type === 'APP' && mask & MANAGEMENT_MASK) throw bad('permissions', 'apps cannot hold GRANT, SHARE or RELEASE');
      await tx.sql`UPDATE authz_service_auth SET perm_mask = ${mask}, updated_at = now(), updated_by = ${caller.userId} WHERE id = ${authId}`;
      tx.event({
        action: 'auth.replace', targetType: 'service_auth', targetId: authId, serviceId: cur.service_id,
        effect: { auth_id: authId, service_id: cur.service_id, mask }, before: { perm_mask: cur.perm_mask }, after: { perm_mask: mask },
      });
    });
    return (await this.authObject(this.sql, authId))!;
  }

  async delete(caller: Caller, authIdIn: string): Promise<{ id: number }> {
    const authId = parseId(authIdIn, 'id');
    await this.deps.store.write(caller.actor, async (tx) => {
      const [cur] = await tx.sql<{ service_id: string; auth_object_type: string; auth_object_id: string; perm_mask: number }[]>`
        SELECT service_id::text, auth_object_type, auth_object_id::text, perm_mask FROM authz_service_auth WHERE id = ${authId} FOR UPDATE`;
      if (!cur) throw notFound(`authorization ${authId} does not exist`, { code: 'AUTH_NOT_FOUND', field: 'id' });
      this.require(caller, cur.service_id, PERM.GRANT, 'delete an authorization');
      await tx.sql`DELETE FROM authz_service_auth WHERE id = ${authId}`;
      tx.event({
        action: 'auth.delete', targetType: 'service_auth', targetId: authId, serviceId: cur.service_id,
        effect: { auth_id: authId, service_id: cur.service_id, mask: 0 }, before: cur,
      });
    });
    return { id: Number(authId) };
  }

  async list(caller: Caller, query: QueryInput): Promise<{ total: number; pageNo: number; pageSize: number; list: Record<string, unknown>[] }> {
    const q = parseAuthListQuery(query);
    await this.service(this.sql, q.serviceId);
    this.require(caller, q.serviceId, PERM.GRANT | PERM.SHARE, 'list its authorizations');
    const { list, count } = buildAuthListSql(q);
    const [rows, [c]] = await Promise.all([
      this.sql.unsafe<AuthRow[]>(list.text, list.values),
      this.sql.unsafe<{ total: string }[]>(count.text, count.values),
    ]);
    return { total: Number(c!.total), pageNo: q.pageNo, pageSize: q.pageSize, list: rows.map((r) => authJson(r, q.infoScope)) };
  }

  // ---------------------------------------------------------------- switches

  async setEnabled(caller: Caller, serviceIdIn: string, query: Query): Promise<{ data: Record<string, unknown>; warning?: string }> {
    const serviceId = parseId(serviceIdIn, 'id');
    const enabled = parseBool(query.enabled, 'enabled', true)!;
    const audit = parseBool(query.audit, 'audit', false) ?? false;
    const mode = !enabled ? 'OFF' : audit ? 'AUDIT' : 'ENFORCE';
    let authCount = 0;
    await this.deps.store.write(caller.actor, async (tx) => {
      await this.service(tx.sql, serviceId);
      this.require(caller, serviceId, PERM.GRANT, 'switch its authorization');
      const [before] = await tx.sql<{ auth_mode: string }[]>`SELECT auth_mode FROM authz_service WHERE service_id = ${serviceId} FOR UPDATE`;
      await tx.sql`
        INSERT INTO authz_service (service_id, auth_mode, updated_by) VALUES (${serviceId}, ${mode}, ${caller.userId})
        ON CONFLICT (service_id) DO UPDATE SET auth_mode = EXCLUDED.auth_mode, updated_at = now(), updated_by = EXCLUDED.updated_by`;
      const [n] = await tx.sql<{ n: string }[]>`SELECT count(*)::text AS n FROM authz_service_auth WHERE service_id = ${serviceId}`;
      authCount = Number(n!.n);
      tx.event({
        action: 'service.auth.mode', targetType: 'service', targetId: serviceId, serviceId,
        effect: { service_id: serviceId, mode }, before: { auth_mode: before?.auth_mode ?? 'OFF' }, after: { auth_mode: mode },
      });
    });
    const data = await this.statusOf(serviceId);
    return enabled && authCount === 0 ? { data, warning: 'no authorizations: every non-admin caller is now denied' } : { data };
  }

  async setApisEnabled(caller: Caller, serviceIdIn: string, query: Query): Promise<Record<string, unknown>> {
    const serviceId = parseId(serviceIdIn, 'id');
    const enabled = parseBool(query.enabled, 'enabled', true)!;
    await this.deps.store.write(caller.actor, async (tx) => {
      await this.service(tx.sql, serviceId);
      this.require(caller, serviceId, PERM.RELEASE | PERM.GRANT, 'switch per-API authorization');
      await tx.sql`
        INSERT INTO authz_service (service_id, apis_auth_enabled, updated_by) VALUES (${serviceId}, ${enabled}, ${caller.userId})
        ON CONFLICT (service_id) DO UPDATE SET apis_auth_enabled = EXCLUDED.apis_auth_enabled, updated_at = now(), updated_by = EXCLUDED.updated_by`;
      tx.event({ action: 'service.apis.auth', targetType: 'service', targetId: serviceId, serviceId, effect: { service_id: serviceId, apis_auth_enabled: enabled } });
    });
    return this.statusOf(serviceId);
  }

  async setSettings(caller: Caller, serviceIdIn: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const serviceId = parseId(serviceIdIn, 'id');
    const policy = body.supervisorPolicy;
    if (policy !== 'PLATFORM' && policy !== 'TEST_PERMISSION') throw bad('supervisorPolicy', "must be 'PLATFORM' or 'TEST_PERMISSION'");
    await this.deps.store.write(caller.actor, async (tx) => {
      await this.service(tx.sql, serviceId);
      this.require(caller, serviceId, PERM.GRANT, 'change its settings');
      await tx.sql`
        INSERT INTO authz_service (service_id, supervisor_policy, updated_by) VALUES (${serviceId}, ${policy}, ${caller.userId})
        ON CONFLICT (service_id) DO UPDATE SET supervisor_policy = EXCLUDED.supervisor_policy, updated_at = now(), updated_by = EXCLUDED.updated_by`;
      tx.event({ action: 'service.auth.settings', targetType: 'service', targetId: serviceId, serviceId, effect: { service_id: serviceId, supervisor_policy: policy } });
    });
    return this.statusOf(serviceId);
  }

  // ---------------------------------------------------------------- reads

  private async statusOf(serviceId: string): Promise<Record<string, unknown>> {
    const svc = await this.service(this.sql, serviceId);
    const [r] = await this.sql<{ auth_mode: string | null; apis_auth_enabled: boolean | null; supervisor_policy: string | null; updated_at: Date | null; updated_by: string | null; auths: string; apis: string; grants: string }[]>`
      SELECT s.auth_mode, s.apis_auth_enabled, s.supervisor_policy, s.updated_at, u.account AS updated_by,
        (SELECT count(*) FROM authz_service_auth WHERE service_id = ${serviceId})::text AS auths,
        (SELECT count(*) FROM authz_api WHERE service_id = ${serviceId} AND deprecated_at IS NULL)::text AS apis,
        (SELECT count(*) FROM authz_grant g JOIN authz_api a ON a.api_id = g.api_id
           WHERE a.service_id = ${serviceId} AND g.state IN ('ACTIVE','CANCEL_SCHEDULED'))::text AS grants
      FROM (SELECT 1) one LEFT JOIN authz_service s ON s.service_id = ${serviceId} LEFT JOIN authz_user u ON u.id = s.updated_by`;
    const mode = r!.auth_mode ?? 'OFF';
    return {
      serviceId: Number(serviceId), serviceName: svc.name, authEnabled: mode !== 'OFF', authMode: mode,
      apisAuthEnabled: r!.apis_auth_enabled ?? false, supervisorPolicy: r!.supervisor_policy ?? 'PLATFORM',
      authorizationCount: Number(r!.auths), apiCount: Number(r!.apis), activeGrantCount: Number(r!.grants),
      updatedDate: iso(r!.updated_at), updatedBy: r!.updated_by,
    };
  }

  async status(caller: Caller, serviceIdIn: string): Promise<Record<string, unknown>> {
    const serviceId = parseId(serviceIdIn, 'id');
    await this.service(this.sql, serviceId);
    // VIEW, or any permission at all on the service, or admin.
    if (this.callerMask(caller, serviceId) === 0) throw forbidden(`you hold no permission on service ${serviceId}`, { code: 'FORBIDDEN' });
    return this.statusOf(serviceId);
  }

  /** A user's permissions on a service and where they come from. */
  async userAuth(caller: Caller, serviceIdIn: string, userIdIn: string | null, query: Query): Promise<Record<string, unknown>> {
    const serviceId = parseId(serviceIdIn, 'id');
    const withAdmin = parseBool(query.admin, 'admin', true)!;
    const userId = userIdIn === null ? caller.userId : parseId(userIdIn, 'userId');
    if (userId === null) throw forbidden('only a user has permissions of their own', { code: 'FORBIDDEN' });
    await this.service(this.sql, serviceId);
    if (userIdIn !== null && userId !== caller.userId) this.require(caller, serviceId, PERM.GRANT | PERM.SHARE, "read another user's permissions");
    return this.userAuthOf(serviceId, userId, withAdmin);
  }

  private async userAuthOf(serviceId: string, userId: string, withAdmin: boolean): Promise<Record<string, unknown>> {
    const [u] = await this.sql`SELECT 1 FROM authz_user WHERE id = ${userId}`;
    if (!u) throw notFound(`user ${userId} does not exist`, { code: 'USER_NOT_FOUND', field: 'userId' });
    const s = this.state;
    const roles = userRoleClosure(s, userId);
    const depts = userDepartmentClosure(s, userId);
    const sources = await this.sql<{ id: string; auth_object_type: string; auth_object_id: string; name: string | null; perm_mask: number }[]>`
      SELECT a.id::text, a.auth_object_type, a.auth_object_id::text, COALESCE(ou.username, od.name, orl.name) AS name, a.perm_mask
      FROM authz_service_auth a
      LEFT JOIN authz_user ou ON ou.id = a.user_id LEFT JOIN authz_department od ON od.id = a.department_id LEFT JOIN authz_role orl ON orl.id = a.role_id
      WHERE a.service_id = ${serviceId} AND (a.user_id = ${userId}
        OR a.role_id = ANY(${roles}::bigint[]) OR a.department_id = ANY(${depts}::bigint[]))
      ORDER BY a.id`;
    let mask = 0;
    for (const r of sources) mask |= r.perm_mask;
    const admin = withAdmin && isAdmin(s, userId);
    if (admin) mask = ALL_PERMISSIONS;
    const mode = s.services.get(serviceId)?.mode ?? 'OFF';
    return {
      serviceId: Number(serviceId), userId: Number(userId), admin, permissions: maskToNames(mask),
      sources: sources.map((r) => ({ authId: Number(r.id), authObjectType: r.auth_object_type, authObjectId: Number(r.auth_object_id), authObjectName: r.name, permissions: maskToNames(r.perm_mask) })),
      authEnabled: mode !== 'OFF',
    };
  }

  async check(caller: Caller, serviceIdIn: string, userIdIn: string, permissionIn: string): Promise<Record<string, unknown>> {
    const serviceId = parseId(serviceIdIn, 'id');
    const userId = parseId(userIdIn, 'userId');
    const permission = parsePermission(permissionIn, 'authPermission');
    await this.service(this.sql, serviceId);
    if (userId !== caller.userId) this.require(caller, serviceId, PERM.GRANT | PERM.SHARE, "check another user's permissions");
    const [u] = await this.sql`SELECT 1 FROM authz_user WHERE id = ${userId}`;
    if (!u) throw notFound(`user ${userId} does not exist`, { code: 'USER_NOT_FOUND', field: 'userId' });
    const s = this.state;
    const held = (userMask(s, userId, serviceId) & PERM[permission]) !== 0;
    const viaAdmin = !held && isAdmin(s, userId);
    return { permission, granted: held || viaAdmin, viaAdmin };
  }

  // ---------------------------------------------------------------- services and APIs

  async services(_caller: Caller, query: Query): Promise<Record<string, unknown>> {
    const { pageNo, pageSize } = parsePage(query);
    const name = query.name ?? '';
    if (name.length > 200) throw bad('name', 'is longer than 200 characters');
    const pattern = `%${name.replace(/[\\%_]/g, (c) => '\\' + c)}%`;
    const rows = await this.sql<{ id: string; name: string; auth_mode: string | null; apis_auth_enabled: boolean | null; instances: string; total: string }[]>`
      SELECT s.id::text, s.name, a.auth_mode, a.apis_auth_enabled,
        (SELECT count(*) FROM utilmeta_instance i WHERE i.service_id = s.id AND i.connected)::text AS instances,
        count(*) OVER ()::text AS total
      FROM utilmeta_service s LEFT JOIN authz_service a ON a.service_id = s.id
      WHERE s.name ILIKE ${pattern} ESCAPE '\\'
      ORDER BY s.id LIMIT ${pageSize} OFFSET ${(pageNo - 1) * pageSize}`;
    const total = rows.length ? Number(rows[0]!.total) : (await this.sql<{ n: string }[]>`SELECT count(*)::text AS n FROM utilmeta_service WHERE name ILIKE ${pattern} ESCAPE '\\'`)[0]!.n;
    return {
      total: Number(total), pageNo, pageSize,
      list: rows.map((r) => ({ id: Number(r.id), name: r.name, authMode: r.auth_mode ?? 'OFF', apisAuthEnabled: r.apis_auth_enabled ?? false, instanceCount: Number(r.instances) })),
    };
  }

  async apis(caller: Caller, serviceIdIn: string, query: Query): Promise<Record<string, unknown>> {
    const serviceId = parseId(serviceIdIn, 'id');
    const { pageNo, pageSize } = parsePage(query);
    const deprecated = parseBool(query.deprecated, 'deprecated', false) ?? false;
    await this.service(this.sql, serviceId);
    this.require(caller, serviceId, PERM.VIEW | PERM.RELEASE | PERM.GRANT, 'list its APIs');
    const rows = await this.sql<ApiDbRow[]>`
      SELECT api_id, method, path_template, operation_id, summary, permission, auth_enabled, source, deprecated_at, count(*) OVER ()::text AS total
      FROM authz_api WHERE service_id = ${serviceId} AND (deprecated_at IS NOT NULL) = ${deprecated}
      ORDER BY path_template, method LIMIT ${pageSize} OFFSET ${(pageNo - 1) * pageSize}`;
    const total = rows.length ? Number(rows[0]!.total) : Number((await this.sql<{ n: string }[]>`SELECT count(*)::text AS n FROM authz_api WHERE service_id = ${serviceId} AND (deprecated_at IS NOT NULL) = ${deprecated}`)[0]!.n);
    return { total, pageNo, pageSize, list: rows.map(apiJson) };
  }

  async addApi(caller: Caller, serviceIdIn: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const serviceId = parseId(serviceIdIn, 'id');
    const method = typeof body.method === 'string' ? body.method.toUpperCase() : null;
    if (!method || !(CATALOG_METHODS as readonly string[]).includes(method.toLowerCase())) throw bad('method', `must be one of ${CATALOG_METHODS.map((m) => m.toUpperCase()).join(', ')}`);
    if (typeof body.path !== 'string') throw bad('path', 'is required (a path template such as /items/{id})');
    const problem = templateProblem(body.path);
    if (problem) throw bad('path', problem);
    const summary = body.summary === undefined || body.summary === null ? '' : body.summary;
    if (typeof summary !== 'string' || summary.length > 500) throw bad('summary', 'must be a string of at most 500 characters');
    const routeKey = routeKeyOf(body.path);
    const apiId = apiIdOf(serviceId, method, routeKey);
    await this.deps.store.write(caller.actor, async (tx) => {
      await this.service(tx.sql, serviceId);
      this.require(caller, serviceId, PERM.RELEASE, 'add an API');
      const [row] = await tx.sql`
        INSERT INTO authz_api (api_id, service_id, method, path_template, route_key, summary, source)
        VALUES (${apiId}, ${serviceId}, ${method}, ${body.path as string}, ${routeKey}, ${summary}, 'manual')
        ON CONFLICT DO NOTHING RETURNING api_id`;
      if (!row) throw new DomainError('conflict', `service ${serviceId} already has ${method} ${routeKey}`, { code: 'CONFLICT', field: 'path' });
      tx.event({ action: 'api.upsert', targetType: 'api', targetId: apiId, serviceId, effect: { service_id: serviceId, api_ids: [apiId] }, after: { method, path_template: body.path, source: 'manual' } });
    });
    return this.apiById(serviceId, apiId);
  }

  async updateApi(caller: Caller, serviceIdIn: string, apiIdIn: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const serviceId = parseId(serviceIdIn, 'id');
    if (!/^[0-9a-f]{32}$/.test(apiIdIn)) throw bad('apiId', 'must be 32 lowercase hex characters');
    const hasPerm = Object.hasOwn(body, 'permission');
    const hasAuth = Object.hasOwn(body, 'authEnabled');
    if (!hasPerm && !hasAuth) throw bad('body', 'give permission and/or authEnabled');
    if (hasPerm && body.permission !== null && !isApiPermission(body.permission)) throw bad('permission', `must be null or one of ${API_PERMISSIONS.join(', ')}`);
    if (hasAuth && typeof body.authEnabled !== 'boolean') throw bad('authEnabled', 'must be a boolean');
    await this.deps.store.write(caller.actor, async (tx) => {
      await this.service(tx.sql, serviceId);
      this.require(caller, serviceId, PERM.RELEASE, 'change an API');
      const [cur] = await tx.sql<{ permission: ApiPermission | null; auth_enabled: boolean }[]>`
        SELECT permission, auth_enabled FROM authz_api WHERE api_id = ${apiIdIn} AND service_id = ${serviceId} FOR UPDATE`;
      if (!cur) throw notFound(`API ${apiIdIn} does not exist on service ${serviceId}`, { code: 'API_NOT_FOUND', field: 'apiId' });
      const permission = hasPerm ? (body.permission as ApiPermission | null) : cur.permission;
      const authEnabled = hasAuth ? (body.authEnabled as boolean) : cur.auth_enabled;
      await tx.sql`UPDATE authz_api SET permission = ${permission}, auth_enabled = ${authEnabled} WHERE api_id = ${apiIdIn}`;
      tx.event({
        action: 'api.update', targetType: 'api', targetId: apiIdIn, serviceId,
        effect: { api_id: apiIdIn, permission, auth_enabled: authEnabled }, before: cur, after: { permission, auth_enabled: authEnabled },
      });
    });
    return this.apiById(serviceId, apiIdIn);
  }

  private async apiById(serviceId: string, apiId: string): Promise<Record<string, unknown>> {
    const [r] = await this.sql<ApiDbRow[]>`
      SELECT api_id, method, path_template, operation_id, summary, permission, auth_enabled, source, deprecated_at
      FROM authz_api WHERE api_id = ${apiId} AND service_id = ${serviceId}`;
    if (!r) throw notFound(`API ${apiId} does not exist on service ${serviceId}`, { code: 'API_NOT_FOUND', field: 'apiId' });
    return apiJson(r);
  }

  // ---------------------------------------------------------------- audit

  /**
   * The audit trail: admins see every event; GRANT holders only the events of
   * services they hold GRANT on (others get 403).
   */
  async auditEvents(caller: Caller, query: QueryInput): Promise<Record<string, unknown>> {
    const q: Query = query instanceof URLSearchParams ? Object.fromEntries(query) : (Object.fromEntries(Object.entries(query).map(([k, v]) => [k, Array.isArray(v) ? v[0] : v])) as Query);
    const { pageNo, pageSize } = parsePage(q, 1000);
    const sort = q.orderSort ?? 'DESC';
    if (sort !== 'ASC' && sort !== 'DESC') throw bad('orderSort', "must be 'ASC' or 'DESC'");
    const filters = parseAuditFilters(q);
    const values: (string | number)[] = [];
    const p = (v: string | number, cast: string) => (values.push(v), `$${values.length}::${cast}`);
    const where: string[] = [];
    if (!caller.admin) {
      if (caller.userId === null) throw forbidden('only admins and GRANT holders may read audit events', { code: 'FORBIDDEN' });
      const s = this.state;
      const mine = [...s.services.keys(), ...s.authIndex.keys()].filter((sid, i, all) => all.indexOf(sid) === i && (userMask(s, caller.userId!, sid) & PERM.GRANT) !== 0);
      if (mine.length === 0) throw forbidden('only admins and GRANT holders may read audit events', { code: 'FORBIDDEN' });
      where.push(`service_id IN (${mine.map((sid) => p(sid, 'bigint')).join(', ')})`);
    }
    for (const f of filters) where.push(auditFilterSql(f, p));
    const whereSql = where.length ? `WHERE ${where.join(' AND ')}` : '';
    const countValues = [...values];
    const rows = await this.sql.unsafe<AuditRow[]>(
      `SELECT seq, at, actor_type, actor_id, actor_name, credential, host(client_ip) AS client_ip, request_id, action, target_type, target_id, service_id, effect, before, after
       FROM authz_event ${whereSql} ORDER BY seq ${sort} LIMIT ${p(pageSize, 'bigint')} OFFSET ${p((pageNo - 1) * pageSize, 'bigint')}`,
      values,
    );
    const [c] = await this.sql.unsafe<{ n: string }[]>(`SELECT count(*)::text AS n FROM authz_event ${whereSql}`, countValues);
    return {
      total: Number(c!.n), pageNo, pageSize,
      list: rows.map((r) => ({
        seq: Number(r.seq), at: iso(r.at), actorType: r.actor_type, actorId: r.actor_id, actorName: r.actor_name, credential: r.credential,
        clientIp: r.client_ip, requestId: r.request_id, action: r.action, targetType: r.target_type, targetId: r.target_id,
        serviceId: r.service_id === null ? null : Number(r.service_id), effect: r.effect, before: r.before, after: r.after,
      })),
    };
  }
}

// ------------------------------------------------------------------ rendering

interface AuthRow {
  id: string; service_id: string; auth_object_type: string; auth_object_id: string; perm_mask: number;
  created_at: Date; updated_at: Date; service_name: string; auth_object_name: string | null; created_by: string | null; updated_by: string | null;
}

function authJson(r: AuthRow, scope: 'BASIC' | 'DETAIL'): Record<string, unknown> {
  const basic = { id: Number(r.id), serviceId: Number(r.service_id), authObjectType: r.auth_object_type, authObjectId: Number(r.auth_object_id), permissions: maskToNames(r.perm_mask) };
  if (scope === 'BASIC') return basic;
  return { ...basic, serviceName: r.service_name, authObjectName: r.auth_object_name, createdDate: iso(r.created_at), createdBy: r.created_by, updatedDate: iso(r.updated_at), updatedBy: r.updated_by };
}

interface ApiDbRow {
  api_id: string; method: string; path_template: string; operation_id: string | null; summary: string; permission: ApiPermission | null;
  auth_enabled: boolean; source: string; deprecated_at: Date | null; total?: string;
}

function apiJson(r: ApiDbRow): Record<string, unknown> {
  return {
    apiId: r.api_id, method: r.method, path: r.path_template, operationId: r.operation_id, summary: r.summary,
    permission: r.permission, effectivePermission: r.permission ?? permissionForMethod(r.method), authEnabled: r.auth_enabled,
    source: r.source, deprecatedDate: iso(r.deprecated_at),
  };
}

interface AuditRow {
  seq: string; at: Date; actor_type: string; actor_id: string | null; actor_name: string | null; credential: string | null; client_ip: string | null;
  request_id: string | null; action: string; target_type: string; target_id: string; service_id: string | null; effect: unknown; before: unknown; after: unknown;
}

// ------------------------------------------------------------------ audit filters

const AUDIT_KEYS = {
  seq: { col: 'seq', type: 'int' },
  at: { col: 'at', type: 'time' },
  action: { col: 'action', type: 'text' },
  actorId: { col: 'actor_id', type: 'text' },
  targetType: { col: 'target_type', type: 'text' },
  targetId: { col: 'target_id', type: 'text' },
  serviceId: { col: 'service_id', type: 'int' },
} as const;
type AuditKey = keyof typeof AUDIT_KEYS;
const AUDIT_OPS: Record<'int' | 'time' | 'text', readonly string[]> = {
  int: ['EQUAL', 'NOT_EQUAL', 'GREATER_THAN', 'LESS_THAN', 'GREATER_THAN_EQUAL', 'LESS_THAN_EQUAL', 'IN', 'NOT_IN'],
  time: ['EQUAL', 'NOT_EQUAL', 'GREATER_THAN', 'LESS_THAN', 'GREATER_THAN_EQUAL', 'LESS_THAN_EQUAL'],
  text: ['EQUAL', 'NOT_EQUAL', 'MATCH', 'NOT_MATCH', 'MATCH_END', 'NOT_MATCH_END', 'IN', 'NOT_IN'],
};
const CMP: Record<string, string> = { EQUAL: '=', NOT_EQUAL: '<>', GREATER_THAN: '>', LESS_THAN: '<', GREATER_THAN_EQUAL: '>=', LESS_THAN_EQUAL: '<=' };

export interface AuditFilter { index: number; key: AuditKey; op: string; values: string[] }

export function parseAuditFilters(q: Query): AuditFilter[] {
  const out: AuditFilter[] = [];
  for (let i = 0; i < 20; i++) {
    const key = q[`filters[${i}].key`];
    const op = q[`filters[${i}].op`];
    const value = q[`filters[${i}].value`];
    if (key === undefined && op === undefined && value === undefined) continue;
    const f = `filters[${i}]`;
    if (key === undefined || !Object.hasOwn(AUDIT_KEYS, key)) throw bad(`${f}.key`, `must be one of ${Object.keys(AUDIT_KEYS).join(', ')}`);
    const k = key as AuditKey;
    const type = AUDIT_KEYS[k].type;
    if (op === undefined || !AUDIT_OPS[type].includes(op)) throw bad(`${f}.op`, `must be one of ${AUDIT_OPS[type].join(', ')} for ${k}`);
    if (value === undefined || value === '') throw bad(`${f}.value`, 'is required');
    const values = op === 'IN' || op === 'NOT_IN' ? value.split(',').map((v) => v.trim()) : [value];
    if (values.length > 100) throw bad(`${f}.value`, 'at most 100 values');
    for (const v of values) {
      if (type === 'int' && !INT64.test(v)) throw bad(`${f}.value`, `${JSON.stringify(v.slice(0, 40))} is not an integer`);
      if (type === 'time') parseInstant(`${f}.value`, v);
      if (v.length > 1000) throw bad(`${f}.value`, 'is longer than 1000 characters');
    }
    out.push({ index: i, key: k, op, values: type === 'time' ? values.map((v) => parseInstant(`${f}.value`, v)) : values });
  }
  return out;
}

function auditFilterSql(f: AuditFilter, p: (v: string | number, cast: string) => string): string {
  const { col, type } = AUDIT_KEYS[f.key];
  const cast = type === 'int' ? 'bigint' : type === 'time' ? 'timestamptz' : 'text';
  const like = (v: string) => v.replace(/[\\%_]/g, (c) => '\\' + c);
  if (CMP[f.op]) return f.op === 'NOT_EQUAL' ? `${col} IS DISTINCT FROM ${p(f.values[0]!, cast)}` : `${col} ${CMP[f.op]} ${p(f.values[0]!, cast)}`;
  switch (f.op) {
    case 'IN': return `${col} IN (${f.values.map((v) => p(v, cast)).join(', ')})`;
    case 'NOT_IN': return `(${col} IS NULL OR ${col} NOT IN (${f.values.map((v) => p(v, cast)).join(', ')}))`;
    case 'MATCH': return `${col} ILIKE ${p('%' + like(f.values[0]!) + '%', 'text')} ESCAPE '\\'`;
    case 'NOT_MATCH': return `(${col} IS NULL OR ${col} NOT ILIKE ${p('%' + like(f.values[0]!) + '%', 'text')} ESCAPE '\\')`;
    case 'MATCH_END': return `${col} ILIKE ${p('%' + like(f.values[0]!), 'text')} ESCAPE '\\'`;
    default: return `(${col} IS NULL OR ${col} NOT ILIKE ${p('%' + like(f.values[0]!), 'text')} ESCAPE '\\')`;
  }
}
