// App grants (no HTTP here): the time-bounded right of an app to call one API,
// its review queue, and the apps themselves.
//
// Lifecycle, each step one authz write transaction (the authz_state lock, the
// grant re-read FOR UPDATE, the rules, its event):
//   T1  app owner APPLY             → PENDING grant + APPLY request      grant.apply
//   T2  reviewer AUTHORIZE, no grant → ACTIVE [now, time)                grant.authorize
//   T3  reviewer approves an APPLY  → ACTIVE (never the applicant)       grant.approve
//   T4  reviewer rejects an APPLY, or its requested end passes unreviewed → REJECTED
//                                                                         grant.reject / grant.lapse
//   T5  app owner cancels a PENDING grant → WITHDRAWN                     grant.withdraw
//   T6  reviewer AUTHORIZE on ACTIVE, or approves a RENEW → end later    grant.renew
//   T7  app owner RENEW             → a RENEW request                    grant.renew.request
//   T8  reviewer rejects a RENEW    → grant unchanged                    grant.renew.reject
//   T9  reviewer API_CANCEL         → CANCEL_SCHEDULED, with full notice grant.cancel.schedule
//   T10 reviewer AUTHORIZE on CANCEL_SCHEDULED → ACTIVE again            grant.reauthorize
//   T11 app owner APP_CANCEL on ACTIVE/CANCEL_SCHEDULED → CANCELLED now  grant.cancel.app
//   T12/T13 the sweeper at cancel_at / end_at (sweeper.ts)               grant.cancel.effective / grant.expire
// The database enforces the same rules (extend-only ends, notice, four-eyes,
// one live grant per app and API); its refusals are mapped to the same codes,
// so a race between two writers answers like a rule, never as a 500.
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type postgres from 'postgres';
import { DomainError, type ErrorKind } from '../core/errors.ts';
import { effectiveUserMask, isAdmin, type DecisionState } from './decision-state.ts';
import { PERM } from './permissions.ts';
import type { AuthzActor, AuthzStore, AuthzTx, ConstraintErrors } from './store.ts';

// ---------------------------------------------------------------- errors

/** Every error code of the grants surface, with its kind (the HTTP status follows from the kind). */
export const GRANT_ERRORS = {
  'AUTHZ.4000': 'invalid', // body not an object, a field of the wrong type
  'AUTHZ.4001': 'invalid', // a required field missing
  'AUTHZ.4002': 'invalid', // an enum value unknown
  'AUTHZ.4003': 'invalid', // time not RFC 3339 with a zone, or not in the future
  'AUTHZ.4004': 'invalid', // time more than 5 years ahead
  'AUTHZ.4005': 'invalid', // the new end does not extend the grant
  'AUTHZ.4006': 'invalid', // cancellation notice too short
  'AUTHZ.4007': 'invalid', // instance_id is not this cluster
  'AUTHZ.4010': 'unauthenticated',
  'AUTHZ.4030': 'forbidden', // not a reviewer of the API
  'AUTHZ.4031': 'forbidden', // not the app owner
  'AUTHZ.4032': 'forbidden', // self-approval
  'AUTHZ.4040': 'not_found', // project
  'AUTHZ.4041': 'not_found', // api
  'AUTHZ.4042': 'not_found', // app in project
  'AUTHZ.4043': 'not_found', // application
  'AUTHZ.4090': 'conflict', // a live grant exists
  'AUTHZ.4091': 'conflict', // an application is already pending
  'AUTHZ.4092': 'conflict', // no live grant
  'AUTHZ.4093': 'conflict', // a cancellation is scheduled
  'AUTHZ.4094': 'conflict', // the application is not PENDING
  'AUTHZ.4095': 'conflict', // API deprecated or public
  'AUTHZ.4096': 'conflict', // project outside its validity, or app disabled
  'AUTHZ.4097': 'conflict', // app name taken in the project
  'AUTHZ.5030': 'unavailable',
} as const satisfies Record<string, ErrorKind>;
export type GrantErrorCode = keyof typeof GRANT_ERRORS;

export function grantError(code: GrantErrorCode, message: string, field?: string): DomainError {
  return new DomainError(GRANT_ERRORS[code], message, { code, field });
}

/**
 * The database's own refusals, in this surface's codes. The domain checks the
 * same rules first; these only fire when a concurrent writer got there first or
 * the clock moved between the check and the write.
 */
export const GRANT_DB_ERRORS: ConstraintErrors = {
  authz_grant_one_live: grantError('AUTHZ.4090', 'the app already has a live grant for this API'),
  authz_grant_request_one_pending: grantError('AUTHZ.4091', 'an application is already pending for this grant'),
  authz_grant_request_one_apply: grantError('AUTHZ.4091', 'an application is already pending for this grant'),
  authz_grant_request_renew_shorter: grantError('AUTHZ.4005', 'time: a renewal must end after the current end', 'time'),
  authz_grant_request_renew_state: grantError('AUTHZ.4093', 'the grant is not active (a cancellation may be scheduled)'),
  authz_grant_request_apply_state: grantError('AUTHZ.4094', 'the grant is no longer pending'),
  authz_grant_end_at_decrease: grantError('AUTHZ.4005', 'time: the end of a grant only moves later', 'time'),
  authz_grant_request_check: grantError('AUTHZ.4003', 'time: must be in the future', 'time'),
  authz_grant_request_check4: grantError('AUTHZ.4032', 'the reviewer cannot approve their own application'),
  authz_grant_request_decided: grantError('AUTHZ.4094', 'the application is already decided'),
  authz_grant_closed: grantError('AUTHZ.4092', 'the grant is closed'),
  authz_grant_transition: grantError('AUTHZ.4092', 'the grant changed state meanwhile; read it again'),
  authz_grant_expire_early: grantError('AUTHZ.4092', 'the grant has not reached its end'),
  notice_respected: grantError('AUTHZ.4006', 'time: a reviewer cancellation needs the full notice period', 'time'),
  cancel_not_early: grantError('AUTHZ.4006', 'only the app can end a grant before its cancellation date'),
  has_window: grantError('AUTHZ.4003', 'time: the end must be after the start', 'time'),
  authz_app_project_id_name_key: grantError('AUTHZ.4097', 'name: an app with this name already exists in the project', 'name'),
  authz_app_bound_service_id_key: new DomainError('conflict', 'bound_service: another app is already bound to this service', { code: 'AUTHZ.4090', field: 'bound_service' }),
  authz_app_name_check: grantError('AUTHZ.4000', 'name: must not be blank', 'name'),
};

// ---------------------------------------------------------------- types

export const APPLY_TYPES = ['APPLY_TYPE_AUTHORIZE', 'APPLY_TYPE_API_CANCEL_AUTHORIZE', 'APPLY_TYPE_APP_CANCEL_AUTHORIZE', 'APPLY_TYPE_APPLY', 'APPLY_TYPE_RENEW'] as const;
export type ApplyType = (typeof APPLY_TYPES)[number];
const TIME_REQUIRED: ReadonlySet<ApplyType> = new Set(['APPLY_TYPE_AUTHORIZE', 'APPLY_TYPE_APPLY', 'APPLY_TYPE_RENEW']);
const GRANT_STATES = ['PENDING', 'ACTIVE', 'CANCEL_SCHEDULED', 'CANCELLED', 'EXPIRED', 'REJECTED', 'WITHDRAWN'] as const;
const REQUEST_STATUSES = ['PENDING', 'APPROVED', 'REJECTED', 'WITHDRAWN', 'SUPERSEDED', 'LAPSED'] as const;
const LIVE_STATES = ['PENDING', 'ACTIVE', 'CANCEL_SCHEDULED'];

/** Who is calling, as the surface authenticated them. */
export interface GrantsCaller {
  userId: string;
  account: string;
  /** `token:<id>` or `ak:<id>` */
  credential: string;
  ip?: string | null;
  requestId?: string | null;
}

export interface GrantsDeps {
  store: AuthzStore;
  /** The node's live access view: who holds GRANT, who is admin, and the PostgreSQL-corrected clock. */
  view: { readonly current: { readonly state: DecisionState }; now(): number };
  /** Reviewer-cancel notice in seconds (AUTHZ_CANCEL_NOTICE). */
  cancelNoticeSeconds: number;
  /** This cluster's seed-002 instance_id (AUTHZ_CLUSTER_ID). */
  clusterId: string;
}

export interface ActionInput {
  apiId: string;
  appId: string;
  applyType: ApplyType;
  /** epoch ms, or null when absent (or ignored, for APP_CANCEL) */
  time: number | null;
}

export interface Page<T> {
  total: number;
  records: T[];
}

/** Which transition an action performed. */
export type Transition = 'T1' | 'T2' | 'T3' | 'T4' | 'T5' | 'T6' | 'T7' | 'T8' | 'T9' | 'T10' | 'T11' | 'T12' | 'T13';

// ---------------------------------------------------------------- input

const rfc3339 = z.iso.datetime({ offset: true });
const MAX_YEARS = 5;

/** RFC 3339 with a zone (`Z` or `±hh:mm`) → epoch ms; 4003 otherwise. */
export function parseTime(v: unknown, field = 'time'): number {
  if (typeof v !== 'string') throw grantError('AUTHZ.4000', `${field}: must be a string (RFC 3339)`, field);
  if (!rfc3339.safeParse(v).success) throw grantError('AUTHZ.4003', `${field}: must be an RFC 3339 time with a zone, e.g. 2030-01-01T10:00:00.000Z`, field);
  const ms = Date.parse(v);
  if (!Number.isFinite(ms)) throw grantError('AUTHZ.4003', `${field}: not a valid time`, field);
  return ms;
}

/** The latest end a grant may have: 5 calendar years from `now`. */
export function maxEnd(now: number): number {
  const d = new Date(now);
  d.setUTCFullYear(d.getUTCFullYear() + MAX_YEARS);
  return d.getTime();
}

/** `time` must lie in (now, now + 5 years]. */
export function checkWindow(time: number, now: number, field = 'time'): void {
  if (!(time > now)) throw grantError('AUTHZ.4003', `${field}: must be in the future`, field);
  if (time > maxEnd(now)) throw grantError('AUTHZ.4004', `${field}: at most ${MAX_YEARS} years ahead`, field);
}

function optString(body: Record<string, unknown>, field: string): string | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw grantError('AUTHZ.4000', `${field}: must be a string`, field);
  return v;
}

/**
 * Checks the action body without touching the database: types (4000), required
 * fields (4001), the apply type (4002), the time's format (4003) and the
 * cluster id (4007). Time bounds relative to now are checked in the transaction.
 */
export function parseActionBody(body: unknown, clusterId: string): ActionInput {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw grantError('AUTHZ.4000', 'the body must be a JSON object');
  const b = body as Record<string, unknown>;
  const apiId = optString(b, 'api_id');
  const appId = optString(b, 'app_id');
  const applyType = optString(b, 'apply_type');
  const instanceId = optString(b, 'instance_id');
  const timeText = b.time === undefined || b.time === null ? undefined : b.time;
  if (timeText !== undefined && typeof timeText !== 'string') throw grantError('AUTHZ.4000', 'time: must be a string (RFC 3339)', 'time');
  if (apiId === undefined || apiId === '') throw grantError('AUTHZ.4001', 'api_id: required', 'api_id');
  if (appId === undefined || appId === '') throw grantError('AUTHZ.4001', 'app_id: required', 'app_id');
  if (applyType === undefined || applyType === '') throw grantError('AUTHZ.4001', 'apply_type: required', 'apply_type');
  if (!(APPLY_TYPES as readonly string[]).includes(applyType)) throw grantError('AUTHZ.4002', `apply_type: must be one of ${APPLY_TYPES.join(', ')}`, 'apply_type');
  const type = applyType as ApplyType;
  if (TIME_REQUIRED.has(type) && (timeText === undefined || timeText === '')) throw grantError('AUTHZ.4001', `time: required for ${type}`, 'time');
  let time: number | null = null;
  if (type !== 'APPLY_TYPE_APP_CANCEL_AUTHORIZE' && timeText !== undefined && timeText !== '') time = parseTime(timeText);
  if (instanceId !== undefined && instanceId !== clusterId) throw grantError('AUTHZ.4007', `instance_id: '${instanceId}' is not this cluster ('${clusterId}')`, 'instance_id');
  return { apiId, appId, applyType: type, time };
}

export function parseProjectId(v: unknown): string {
  if (typeof v !== 'string' || !/^[1-9][0-9]{0,17}$/.test(v)) throw grantError('AUTHZ.4040', `project ${String(v)} not found`, 'project_id');
  return v;
}

/** `offset` (≥ 0, default 0) and `limit` (1–100, default 10). */
export function parsePage(q: URLSearchParams): { offset: number; limit: number } {
  const int = (name: string, dflt: number, min: number, max: number) => {
    const raw = q.get(name);
    if (raw === null || raw === '') return dflt;
    if (!/^[0-9]{1,9}$/.test(raw) || Number(raw) < min || Number(raw) > max) throw grantError('AUTHZ.4000', `${name}: an integer from ${min} to ${max}`, name);
    return Number(raw);
  };
  return { offset: int('offset', 0, 0, 100_000_000), limit: int('limit', 10, 1, 100) };
}

function enumParam<T extends string>(q: URLSearchParams, name: string, values: readonly T[]): T | undefined {
  const v = q.get(name);
  if (v === null || v === '') return undefined;
  if (!(values as readonly string[]).includes(v)) throw grantError('AUTHZ.4002', `${name}: must be one of ${values.join(', ')}`, name);
  return v as T;
}

function boolParam(q: URLSearchParams, name: string): boolean | undefined {
  const v = q.get(name);
  if (v === null || v === '') return undefined;
  if (v !== 'true' && v !== 'false') throw grantError('AUTHZ.4000', `${name}: true or false`, name);
  return v === 'true';
}

// ---------------------------------------------------------------- rows

interface GrantDbRow {
  id: string;
  app_id: string;
  api_id: string;
  state: string;
  created_at: Date;
  start_at: Date | null;
  end_at: Date | null;
  cancel_requested_at: Date | null;
  cancel_at: Date | null;
  cancel_notice: string | null;
  closed_at: Date | null;
  closed_by: string | null;
  updated_at: Date;
}

interface RequestDbRow {
  id: string;
  grant_id: string;
  kind: 'APPLY' | 'RENEW';
  status: string;
  requested_end_at: Date;
  applicant_user_id: string | null;
  applicant_account: string;
  reviewer_user_id: string | null;
  reviewer_account: string | null;
  approved_end_at: Date | null;
  comment: string;
  created_at: Date;
  decided_at: Date | null;
}

interface ApiInfo {
  api_id: string;
  service_id: string;
  service_name: string;
  method: string;
  path_template: string;
  auth_enabled: boolean;
  deprecated: boolean;
}

interface AppInfo {
  id: string;
  app_id: string;
  project_id: string;
  name: string;
  owner_user_id: string;
  status: string;
}

const iso = (d: Date | null | undefined): string | null => (d ? d.toISOString() : null);
const snapshot = (r: GrantDbRow | RequestDbRow | undefined) => (r ? JSON.parse(JSON.stringify(r)) : null);

// ---------------------------------------------------------------- the domain

export class Grants {
  constructor(readonly deps: GrantsDeps) {}

  private get state(): DecisionState {
    return this.deps.view.current.state;
  }

  private actor(c: GrantsCaller): AuthzActor {
    return { type: 'USER', id: c.userId, name: c.account, credential: c.credential, ip: c.ip ?? null, requestId: c.requestId ?? null };
  }

  isAdmin(c: GrantsCaller): boolean {
    return isAdmin(this.state, c.userId);
  }

  /** A reviewer of the service's APIs: GRANT on the service, or an admin. */
  isReviewer(c: GrantsCaller, serviceId: string): boolean {
    return (effectiveUserMask(this.state, c.userId, serviceId) & PERM.GRANT) !== 0;
  }

  /** Services whose APIs the caller reviews (admins: null = every service). */
  reviewableServices(c: GrantsCaller): string[] | null {
    if (this.isAdmin(c)) return null;
    const out: string[] = [];
    for (const sid of this.state.authIndex.keys()) if (this.isReviewer(c, sid)) out.push(sid);
    return out;
  }

  private isOwner(c: GrantsCaller, app: AppInfo): boolean {
    return app.owner_user_id === c.userId || this.isAdmin(c);
  }

  private write<T>(c: GrantsCaller, fn: (tx: AuthzTx) => Promise<T>) {
    return this.deps.store.write(this.actor(c), fn, { errors: GRANT_DB_ERRORS });
  }

  // ------------------------------------------------------------ shared reads

  private async project(sql: postgres.Sql | postgres.TransactionSql, projectId: string): Promise<{ id: string; org_id: string; creator_id: string | null; valid: boolean }> {
    const [p] = await sql<{ id: string; org_id: string; creator_id: string | null; valid: boolean }[]>`
      SELECT id, org_id, creator_id,
             is_permanent OR ((now() AT TIME ZONE 'UTC')::date BETWEEN started_at AND expired_at) AS valid
      FROM authz_project WHERE id = ${projectId}`;
    if (!p) throw grantError('AUTHZ.4040', `project ${projectId} not found`, 'project_id');
    return p;
  }

  private async api(sql: postgres.Sql | postgres.TransactionSql, apiId: string): Promise<ApiInfo> {
    if (!/^[0-9a-f]{32}$/.test(apiId)) throw grantError('AUTHZ.4041', `api ${apiId} not found`, 'api_id');
    const [a] = await sql<ApiInfo[]>`
      SELECT a.api_id, a.service_id, s.name AS service_name, a.method, a.path_template, a.auth_enabled, a.deprecated_at IS NOT NULL AS deprecated
      FROM authz_api a JOIN utilmeta_service s ON s.id = a.service_id WHERE a.api_id = ${apiId}`;
    if (!a) throw grantError('AUTHZ.4041', `api ${apiId} not found`, 'api_id');
    return a;
  }

  private async app(sql: postgres.Sql | postgres.TransactionSql, projectId: string, appId: string, lock = false): Promise<AppInfo> {
    if (!/^[0-9a-f]{32}$/.test(appId)) throw grantError('AUTHZ.4042', `app ${appId} not found in project ${projectId}`, 'app_id');
    const [a] = await sql<AppInfo[]>`
      SELECT id, app_id, project_id, name, owner_user_id, status FROM authz_app
      WHERE app_id = ${appId} AND project_id = ${projectId} ${lock ? sql`FOR UPDATE` : sql``}`;
    if (!a) throw grantError('AUTHZ.4042', `app ${appId} not found in project ${projectId}`, 'app_id');
    return a;
  }

  private async now(tx: AuthzTx): Promise<number> {
    const [r] = await tx.sql<{ now: Date }[]>`SELECT now() AS now`;
    return r!.now.getTime();
  }

  /** An API open to grants, for an app allowed to hold them (4095, 4096). */
  private checkGrantable(api: ApiInfo, app: AppInfo, project: { valid: boolean }): void {
    if (api.deprecated) throw grantError('AUTHZ.4095', `api ${api.api_id} is deprecated and not open to grants`, 'api_id');
    if (!api.auth_enabled) throw grantError('AUTHZ.4095', `api ${api.api_id} is public (no authorization needed) and not open to grants`, 'api_id');
    if (app.status !== 'ACTIVE') throw grantError('AUTHZ.4096', `app ${app.app_id} is disabled`, 'app_id');
    if (!project.valid) throw grantError('AUTHZ.4096', `the project of app ${app.app_id} is outside its validity dates`, 'project_id');
  }

  private grantEvent(tx: AuthzTx, action: string, g: GrantDbRow, api: ApiInfo, effect: Record<string, unknown>, before?: unknown, extra: Record<string, unknown> = {}) {
    tx.event({ action, targetType: 'grant', targetId: g.id, serviceId: api.service_id, effect, before, after: { grant: snapshot(g), ...extra } });
  }

  // ------------------------------------------------------------ the action endpoint

  /**
   * `POST /v1/{project_id}/service/apis/authorize/action`. Returns the transition
   * performed. `workspace` is recorded in the audit event only.
   */
  async action(c: GrantsCaller, projectIdText: string, body: unknown, meta: { workspace?: string | null } = {}): Promise<{ grantId: string; transition: Transition }> {
    const input = parseActionBody(body, this.deps.clusterId);
    const projectId = parseProjectId(projectIdText);
    const notice = this.deps.cancelNoticeSeconds;
    const workspace = meta.workspace ? { workspace: meta.workspace.slice(0, 100) } : {};
    const { result } = await this.write(c, async (tx) => {
      const sql = tx.sql;
      const now = await this.now(tx);
      if (input.time !== null) {
        if (input.applyType === 'APPLY_TYPE_API_CANCEL_AUTHORIZE') {
          checkWindow(input.time, now);
          if (input.time < now + notice * 1000) throw grantError('AUTHZ.4006', `time: a reviewer cancellation needs at least ${notice} s notice (not before ${new Date(now + notice * 1000).toISOString()})`, 'time');
        } else {
          checkWindow(input.time, now);
        }
      }
      const project = await this.project(sql, projectId);
      const api = await this.api(sql, input.apiId);
      const app = await this.app(sql, projectId, input.appId, true);
      const [g] = await sql<GrantDbRow[]>`
        SELECT * FROM authz_grant WHERE app_id = ${app.id} AND api_id = ${api.api_id} AND state IN ('PENDING','ACTIVE','CANCEL_SCHEDULED') FOR UPDATE`;
      const [pending] = g ? await sql<RequestDbRow[]>`SELECT * FROM authz_grant_request WHERE grant_id = ${g.id} AND status = 'PENDING' FOR UPDATE` : [];
      const reviewer = () => {
        if (!this.isReviewer(c, api.service_id)) throw grantError('AUTHZ.4030', `you are not a reviewer of api ${api.api_id} (GRANT on service '${api.service_name}' is needed)`);
      };
      const owner = () => {
        if (!this.isOwner(c, app)) throw grantError('AUTHZ.4031', `you are not the owner of app ${app.app_id}`);
      };
      const closing = (gr: GrantDbRow) => ({ grant_id: Number(gr.id), app_id: Number(gr.app_id), api_id: gr.api_id });
      switch (input.applyType) {
        case 'APPLY_TYPE_APPLY': {
          owner();
          if (g) throw grantError('AUTHZ.4090', `app ${app.app_id} already has a ${g.state} grant for api ${api.api_id}; use RENEW`);
          this.checkGrantable(api, app, project);
          const [ng] = await sql<GrantDbRow[]>`INSERT INTO authz_grant (app_id, api_id, state) VALUES (${app.id}, ${api.api_id}, 'PENDING') RETURNING *`;
          const [rq] = await sql<RequestDbRow[]>`
            INSERT INTO authz_grant_request (grant_id, kind, requested_end_at, applicant_user_id, applicant_account)
            VALUES (${ng!.id}, 'APPLY', ${new Date(input.time!)}, ${c.userId}, ${c.account}) RETURNING *`;
          this.grantEvent(tx, 'grant.apply', ng!, api, { grant_id: Number(ng!.id), app_id: Number(app.id), api_id: api.api_id }, undefined, { request: snapshot(rq), ...workspace });
          return { grantId: ng!.id, transition: 'T1' as Transition };
        }
        case 'APPLY_TYPE_AUTHORIZE': {
          reviewer();
          const time = input.time!;
          if (!g) {
            this.checkGrantable(api, app, project);
            const [ng] = await sql<GrantDbRow[]>`
              INSERT INTO authz_grant (app_id, api_id, state, start_at, end_at) VALUES (${app.id}, ${api.api_id}, 'ACTIVE', now(), ${new Date(time)}) RETURNING *`;
            this.grantEvent(tx, 'grant.authorize', ng!, api, { grant_id: Number(ng!.id), app_id: Number(app.id), api_id: api.api_id }, undefined, workspace);
            return { grantId: ng!.id, transition: 'T2' as Transition };
          }
          this.checkGrantable(api, app, project);
          if (g.state === 'PENDING') {
            return { grantId: g.id, transition: await this.approveApply(tx, c, g, pending, api, time, '', workspace) };
          }
          if (g.state === 'ACTIVE') {
            if (!(time > g.end_at!.getTime())) throw grantError('AUTHZ.4005', `time: a renewal must end after the current end ${iso(g.end_at)}`, 'time');
            const [ug] = await sql<GrantDbRow[]>`UPDATE authz_grant SET end_at = ${new Date(time)} WHERE id = ${g.id} RETURNING *`;
            // A pending RENEW asks for what the reviewer just decided otherwise.
            const [sup] = pending ? await sql<RequestDbRow[]>`UPDATE authz_grant_request SET status = 'SUPERSEDED', decided_at = now() WHERE id = ${pending.id} RETURNING *` : [];
            this.grantEvent(tx, 'grant.renew', ug!, api, { grant_id: Number(g.id), app_id: Number(g.app_id), api_id: g.api_id }, { grant: snapshot(g) }, { superseded: snapshot(sup), ...workspace });
            return { grantId: g.id, transition: 'T6' as Transition };
          }
          // CANCEL_SCHEDULED: reauthorizing clears the schedule; the end may stay where it is.
          if (time < g.end_at!.getTime()) throw grantError('AUTHZ.4005', `time: reactivation must not end before the current end ${iso(g.end_at)}`, 'time');
          const [ug] = await sql<GrantDbRow[]>`
            UPDATE authz_grant SET state = 'ACTIVE', end_at = ${new Date(time)}, cancel_requested_at = NULL, cancel_at = NULL, cancel_notice = NULL
            WHERE id = ${g.id} RETURNING *`;
          this.grantEvent(tx, 'grant.reauthorize', ug!, api, { grant_id: Number(g.id), app_id: Number(g.app_id), api_id: g.api_id }, { grant: snapshot(g) }, workspace);
          return { grantId: g.id, transition: 'T10' as Transition };
        }
        case 'APPLY_TYPE_RENEW': {
          owner();
          if (!g) throw grantError('AUTHZ.4092', `app ${app.app_id} has no live grant for api ${api.api_id}; use APPLY`);
          if (g.state === 'PENDING') throw grantError('AUTHZ.4091', `the application for this grant is still pending`);
          if (g.state === 'CANCEL_SCHEDULED') throw grantError('AUTHZ.4093', `a cancellation is scheduled for ${iso(g.cancel_at)}; the grant cannot be renewed`);
          if (pending) throw grantError('AUTHZ.4091', `renewal request ${pending.id} is already pending for this grant`);
          if (!(input.time! > g.end_at!.getTime())) throw grantError('AUTHZ.4005', `time: a renewal must end after the current end ${iso(g.end_at)}`, 'time');
          this.checkGrantable(api, app, project);
          const [rq] = await sql<RequestDbRow[]>`
            INSERT INTO authz_grant_request (grant_id, kind, requested_end_at, applicant_user_id, applicant_account)
            VALUES (${g.id}, 'RENEW', ${new Date(input.time!)}, ${c.userId}, ${c.account}) RETURNING *`;
          tx.event({ action: 'grant.renew.request', targetType: 'grant', targetId: g.id, serviceId: api.service_id, effect: { grant_id: Number(g.id), request_id: Number(rq!.id) }, after: { request: snapshot(rq), ...workspace } });
          return { grantId: g.id, transition: 'T7' as Transition };
        }
        case 'APPLY_TYPE_API_CANCEL_AUTHORIZE': {
          reviewer();
          if (!g) throw grantError('AUTHZ.4092', `app ${app.app_id} has no live grant for api ${api.api_id}`);
          if (g.state === 'PENDING') throw grantError('AUTHZ.4092', `the grant is pending review: reject application ${pending?.id ?? ''} instead`.trim());
          if (g.state === 'CANCEL_SCHEDULED') throw grantError('AUTHZ.4093', `a cancellation is already scheduled for ${iso(g.cancel_at)}; AUTHORIZE to undo it first`);
          const [ug] = input.time === null
            ? await sql<GrantDbRow[]>`
                UPDATE authz_grant SET state = 'CANCEL_SCHEDULED', cancel_requested_at = now(), cancel_notice = make_interval(secs => ${notice}),
                  cancel_at = now() + make_interval(secs => ${notice}) WHERE id = ${g.id} RETURNING *`
            : await sql<GrantDbRow[]>`
                UPDATE authz_grant SET state = 'CANCEL_SCHEDULED', cancel_requested_at = now(), cancel_notice = make_interval(secs => ${notice}),
                  cancel_at = ${new Date(input.time)} WHERE id = ${g.id} RETURNING *`;
          const [sup] = pending ? await sql<RequestDbRow[]>`UPDATE authz_grant_request SET status = 'SUPERSEDED', decided_at = now() WHERE id = ${pending.id} RETURNING *` : [];
          this.grantEvent(tx, 'grant.cancel.schedule', ug!, api, { grant_id: Number(g.id), cancel_at: iso(ug!.cancel_at) }, { grant: snapshot(g) }, { superseded: snapshot(sup), ...workspace });
          return { grantId: g.id, transition: 'T9' as Transition };
        }
        case 'APPLY_TYPE_APP_CANCEL_AUTHORIZE': {
          owner();
          if (!g) throw grantError('AUTHZ.4092', `app ${app.app_id} has no live grant for api ${api.api_id}`);
          if (g.state === 'PENDING') {
            const [ug] = await sql<GrantDbRow[]>`UPDATE authz_grant SET state = 'WITHDRAWN', closed_by = 'APP' WHERE id = ${g.id} RETURNING *`;
            const [wr] = pending ? await sql<RequestDbRow[]>`UPDATE authz_grant_request SET status = 'WITHDRAWN', decided_at = now() WHERE id = ${pending.id} RETURNING *` : [];
            this.grantEvent(tx, 'grant.withdraw', ug!, api, { ...closing(g), effective_end: null }, { grant: snapshot(g) }, { request: snapshot(wr), ...workspace });
            return { grantId: g.id, transition: 'T5' as Transition };
          }
          const [ug] = await sql<GrantDbRow[]>`UPDATE authz_grant SET state = 'CANCELLED', closed_by = 'APP' WHERE id = ${g.id} RETURNING *`;
          const [wr] = pending ? await sql<RequestDbRow[]>`UPDATE authz_grant_request SET status = 'WITHDRAWN', decided_at = now() WHERE id = ${pending.id} RETURNING *` : [];
          this.grantEvent(tx, 'grant.cancel.app', ug!, api, { ...closing(g), effective_end: iso(ug!.closed_at) }, { grant: snapshot(g) }, { request: snapshot(wr), ...workspace });
          return { grantId: g.id, transition: 'T11' as Transition };
        }
      }
    });
    return result;
  }

  /** T3: PENDING → ACTIVE, by someone other than the applicant. */
  private async approveApply(tx: AuthzTx, c: GrantsCaller, g: GrantDbRow, rq: RequestDbRow | undefined, api: ApiInfo, end: number, comment: string, extra: Record<string, unknown> = {}): Promise<Transition> {
    const sql = tx.sql;
    if (rq && rq.applicant_account.toLowerCase() === c.account.toLowerCase()) throw grantError('AUTHZ.4032', 'four-eyes: you cannot approve your own application; another reviewer must');
    const [ug] = await sql<GrantDbRow[]>`UPDATE authz_grant SET state = 'ACTIVE', start_at = now(), end_at = ${new Date(end)} WHERE id = ${g.id} RETURNING *`;
    const [ur] = rq
      ? await sql<RequestDbRow[]>`
          UPDATE authz_grant_request SET status = 'APPROVED', decided_at = now(), reviewer_user_id = ${c.userId}, reviewer_account = ${c.account},
            approved_end_at = ${new Date(end)}, comment = ${comment} WHERE id = ${rq.id} RETURNING *`
      : [];
    this.grantEvent(tx, 'grant.approve', ug!, api, { grant_id: Number(g.id), app_id: Number(g.app_id), api_id: g.api_id }, { grant: snapshot(g) }, { request: snapshot(ur), ...extra });
    return 'T3';
  }

  // ------------------------------------------------------------ the review queue

  /** `POST applys/{apply_id}/action` `{action: APPROVE|REJECT, time?, comment?}`. */
  async review(c: GrantsCaller, projectIdText: string, applyIdText: string, body: unknown): Promise<{ grantId: string; transition: Transition }> {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw grantError('AUTHZ.4000', 'the body must be a JSON object');
    const b = body as Record<string, unknown>;
    const action = optString(b, 'action');
    const comment = optString(b, 'comment') ?? '';
    if (comment.length > 500) throw grantError('AUTHZ.4000', 'comment: at most 500 characters', 'comment');
    if (action === undefined || action === '') throw grantError('AUTHZ.4001', 'action: required (APPROVE or REJECT)', 'action');
    if (action !== 'APPROVE' && action !== 'REJECT') throw grantError('AUTHZ.4002', 'action: must be APPROVE or REJECT', 'action');
    const time = b.time === undefined || b.time === null || action === 'REJECT' ? null : parseTime(b.time);
    const projectId = parseProjectId(projectIdText);
    if (!/^[1-9][0-9]{0,17}$/.test(applyIdText)) throw grantError('AUTHZ.4043', `application ${applyIdText} not found`, 'apply_id');
    const { result } = await this.write(c, async (tx) => {
      const sql = tx.sql;
      const now = await this.now(tx);
      if (time !== null) checkWindow(time, now);
      const project = await this.project(sql, projectId);
      const [rq] = await sql<(RequestDbRow & { app_public_id: string })[]>`
        SELECT r.*, a.app_id AS app_public_id FROM authz_grant_request r JOIN authz_grant g ON g.id = r.grant_id JOIN authz_app a ON a.id = g.app_id
        WHERE r.id = ${applyIdText} AND a.project_id = ${projectId} FOR UPDATE OF r`;
      if (!rq) throw grantError('AUTHZ.4043', `application ${applyIdText} not found in project ${projectId}`, 'apply_id');
      const [g] = await sql<GrantDbRow[]>`SELECT * FROM authz_grant WHERE id = ${rq.grant_id} FOR UPDATE`;
      const api = await this.api(sql, g!.api_id);
      // Checks in this order: reviewer, four-eyes, state.
      if (!this.isReviewer(c, api.service_id)) throw grantError('AUTHZ.4030', `you are not a reviewer of api ${api.api_id} (GRANT on service '${api.service_name}' is needed)`);
      if (rq.applicant_account.toLowerCase() === c.account.toLowerCase()) throw grantError('AUTHZ.4032', 'four-eyes: you cannot review your own application; another reviewer must');
      if (rq.status !== 'PENDING') throw grantError('AUTHZ.4094', `application ${rq.id} is ${rq.status}, not PENDING`);
      const app = await this.app(sql, projectId, rq.app_public_id, true);
      if (action === 'REJECT') {
        const [ur] = await sql<RequestDbRow[]>`
          UPDATE authz_grant_request SET status = 'REJECTED', decided_at = now(), reviewer_user_id = ${c.userId}, reviewer_account = ${c.account}, comment = ${comment}
          WHERE id = ${rq.id} RETURNING *`;
        if (rq.kind === 'APPLY') {
          const [ug] = await sql<GrantDbRow[]>`UPDATE authz_grant SET state = 'REJECTED', closed_by = 'API' WHERE id = ${g!.id} RETURNING *`;
          this.grantEvent(tx, 'grant.reject', ug!, api, { grant_id: Number(g!.id), app_id: Number(g!.app_id), api_id: g!.api_id, effective_end: null }, { grant: snapshot(g) }, { request: snapshot(ur) });
          return { grantId: g!.id, transition: 'T4' as Transition };
        }
        tx.event({ action: 'grant.renew.reject', targetType: 'grant', targetId: g!.id, serviceId: api.service_id, effect: { grant_id: Number(g!.id), request_id: Number(rq.id) }, after: { request: snapshot(ur) } });
        return { grantId: g!.id, transition: 'T8' as Transition };
      }
      this.checkGrantable(api, app, project);
      const end = time ?? rq.requested_end_at.getTime();
      if (rq.kind === 'APPLY') {
        if (!(end > now)) throw grantError('AUTHZ.4003', `time: the requested end ${iso(rq.requested_end_at)} has passed; give a later time`, 'time');
        return { grantId: g!.id, transition: await this.approveApply(tx, c, g!, rq, api, end, comment) };
      }
      if (g!.state !== 'ACTIVE') throw grantError('AUTHZ.4093', `grant ${g!.id} is ${g!.state}; the renewal cannot be approved`);
      if (!(end > g!.end_at!.getTime())) throw grantError('AUTHZ.4005', `time: the renewal must end after the current end ${iso(g!.end_at)}`, 'time');
      const [ug] = await sql<GrantDbRow[]>`UPDATE authz_grant SET end_at = ${new Date(end)} WHERE id = ${g!.id} RETURNING *`;
      const [ur] = await sql<RequestDbRow[]>`
        UPDATE authz_grant_request SET status = 'APPROVED', decided_at = now(), reviewer_user_id = ${c.userId}, reviewer_account = ${c.account},
          approved_end_at = ${new Date(end)}, comment = ${comment} WHERE id = ${rq.id} RETURNING *`;
      this.grantEvent(tx, 'grant.renew', ug!, api, { grant_id: Number(g!.id), app_id: Number(g!.app_id), api_id: g!.api_id }, { grant: snapshot(g) }, { request: snapshot(ur) });
      return { grantId: g!.id, transition: 'T6' as Transition };
    });
    return result;
  }

  /** Visibility: admins see everything; others the apps they own and the services they review. */
  private scope(sql: postgres.Sql, c: GrantsCaller, appOwnerCol: string, serviceCol: string): postgres.PendingQuery<postgres.Row[]> | postgres.Fragment {
    const services = this.reviewableServices(c);
    if (services === null) return sql`true`;
    return sql`(${sql.unsafe(appOwnerCol)} = ${c.userId} OR ${sql.unsafe(serviceCol)} = ANY(${sql.array(services.map(Number), 20)}::bigint[]))`;
  }

  async listApplys(c: GrantsCaller, projectIdText: string, q: URLSearchParams): Promise<Page<Record<string, unknown>>> {
    const projectId = parseProjectId(projectIdText);
    const { offset, limit } = parsePage(q);
    const status = enumParam(q, 'apply_status', REQUEST_STATUSES);
    const type = enumParam(q, 'apply_type', ['APPLY_TYPE_APPLY', 'APPLY_TYPE_RENEW'] as const);
    const appId = q.get('app_id') || undefined;
    const apiId = q.get('api_id') || undefined;
    const service = q.get('service') || undefined;
    const mine = boolParam(q, 'mine') === true;
    const sql = this.deps.store.sql;
    await this.deps.store.read((s) => this.project(s, projectId));
    const services = this.reviewableServices(c);
    const { total, rows } = await this.paged((lim, off) => this.deps.store.read((s) => s<Record<string, unknown>[]>`
      SELECT r.*, a.app_id AS app_public_id, a.name AS app_name, api.api_id, api.method, api.path_template, sv.name AS service_name,
             count(*) OVER () AS total
      FROM authz_grant_request r JOIN authz_grant g ON g.id = r.grant_id JOIN authz_app a ON a.id = g.app_id
      JOIN authz_api api ON api.api_id = g.api_id JOIN utilmeta_service sv ON sv.id = api.service_id
      WHERE a.project_id = ${projectId} AND ${this.scope(sql, c, 'a.owner_user_id', 'api.service_id')}
        ${status ? s`AND r.status = ${status}` : s``}
        ${type ? s`AND r.kind = ${type === 'APPLY_TYPE_APPLY' ? 'APPLY' : 'RENEW'}` : s``}
        ${appId ? s`AND a.app_id = ${appId}` : s``}
        ${apiId ? s`AND api.api_id = ${apiId}` : s``}
        ${service ? s`AND sv.name = ${service}` : s``}
        ${mine ? (services === null ? s`AND lower(r.applicant_account) <> lower(${c.account})` : s`AND api.service_id = ANY(${s.array(services.map(Number), 20)}::bigint[]) AND lower(r.applicant_account) <> lower(${c.account})`) : s``}
      ORDER BY r.id DESC LIMIT ${lim} OFFSET ${off}`), limit, offset);
    return { total, records: rows.map(applyRecord) };
  }

  /**
   * Runs a listing whose rows carry `count(*) OVER ()` as `total`. A page past
   * the end has no row to carry it, so the first row is read again for the count.
   */
  private async paged(run: (limit: number, offset: number) => Promise<Record<string, any>[]>, limit: number, offset: number): Promise<{ total: number; rows: Record<string, any>[] }> {
    const rows = await run(limit, offset);
    if (rows.length > 0) return { total: Number(rows[0]!.total), rows };
    if (offset === 0) return { total: 0, rows };
    const probe = await run(1, 0);
    return { total: probe.length ? Number(probe[0]!.total) : 0, rows };
  }

  async getApply(c: GrantsCaller, projectIdText: string, applyIdText: string): Promise<Record<string, unknown>> {
    const projectId = parseProjectId(projectIdText);
    if (!/^[1-9][0-9]{0,17}$/.test(applyIdText)) throw grantError('AUTHZ.4043', `application ${applyIdText} not found`, 'apply_id');
    const sql = this.deps.store.sql;
    await this.deps.store.read((s) => this.project(s, projectId));
    const [row] = await this.deps.store.read((s) => s<Record<string, unknown>[]>`
      SELECT r.*, a.app_id AS app_public_id, a.name AS app_name, api.api_id, api.method, api.path_template, sv.name AS service_name
      FROM authz_grant_request r JOIN authz_grant g ON g.id = r.grant_id JOIN authz_app a ON a.id = g.app_id
      JOIN authz_api api ON api.api_id = g.api_id JOIN utilmeta_service sv ON sv.id = api.service_id
      WHERE r.id = ${applyIdText} AND a.project_id = ${projectId} AND ${this.scope(sql, c, 'a.owner_user_id', 'api.service_id')}`);
    if (!row) throw grantError('AUTHZ.4043', `application ${applyIdText} not found in project ${projectId}`, 'apply_id');
    return applyRecord(row);
  }

  // ------------------------------------------------------------ grants and APIs

  private async grants(c: GrantsCaller, projectId: string, q: URLSearchParams, where: (s: postgres.Sql) => postgres.PendingQuery<postgres.Row[]>): Promise<Page<Record<string, unknown>>> {
    const { offset, limit } = parsePage(q);
    const raw = q.get('state');
    const states = raw ? raw.split(',').map((s) => s.trim()).filter(Boolean) : LIVE_STATES;
    for (const s of states) if (!(GRANT_STATES as readonly string[]).includes(s)) throw grantError('AUTHZ.4002', `state: '${s}' is not one of ${GRANT_STATES.join(', ')}`, 'state');
    const sql = this.deps.store.sql;
    const { total, rows } = await this.paged((lim, off) => this.deps.store.read((s) => s<Record<string, unknown>[]>`
      SELECT * , count(*) OVER () AS total FROM (
        SELECT g.*, a.app_id AS app_public_id, a.name AS app_name, api.method, api.path_template, sv.name AS service_name,
               EXISTS (SELECT 1 FROM authz_grant_request r WHERE r.grant_id = g.id AND r.kind = 'RENEW' AND r.status = 'PENDING') AS renew_pending,
               CASE WHEN g.state IN ('ACTIVE','CANCEL_SCHEDULED') AND now() >= LEAST(g.end_at, coalesce(g.cancel_at, g.end_at))
                    THEN CASE WHEN g.cancel_at IS NOT NULL AND g.cancel_at < g.end_at THEN 'CANCELLED' ELSE 'EXPIRED' END
                    ELSE g.state END AS shown_state,
               now() AS now
        FROM authz_grant g JOIN authz_app a ON a.id = g.app_id JOIN authz_api api ON api.api_id = g.api_id JOIN utilmeta_service sv ON sv.id = api.service_id
        WHERE a.project_id = ${projectId} AND ${this.scope(sql, c, 'a.owner_user_id', 'api.service_id')} AND ${where(s)}
      ) x WHERE shown_state = ANY(${s.array(states)}::text[])
      ORDER BY id DESC LIMIT ${lim} OFFSET ${off}`), limit, offset);
    return { total, records: rows.map(grantRecord) };
  }

  /** `GET apis/{api_id}/authorize-info`: the API's grants to apps of the project. */
  async apiGrants(c: GrantsCaller, projectIdText: string, apiId: string, q: URLSearchParams): Promise<Page<Record<string, unknown>>> {
    const projectId = parseProjectId(projectIdText);
    await this.deps.store.read(async (s) => {
      await this.project(s, projectId);
      await this.api(s, apiId);
    });
    return this.grants(c, projectId, q, (s) => s`g.api_id = ${apiId}`);
  }

  /** `GET apps/{app_id}/apis`: the app's grants. */
  async appGrants(c: GrantsCaller, projectIdText: string, appId: string, q: URLSearchParams): Promise<Page<Record<string, unknown>>> {
    const projectId = parseProjectId(projectIdText);
    await this.deps.store.read(async (s) => {
      await this.project(s, projectId);
      await this.app(s, projectId, appId);
    });
    return this.grants(c, projectId, q, (s) => s`a.app_id = ${appId}`);
  }

  /** `GET apis`: the catalog, so callers can find api_ids. Any authenticated user. */
  async listApis(_c: GrantsCaller, projectIdText: string, q: URLSearchParams): Promise<Page<Record<string, unknown>>> {
    const projectId = parseProjectId(projectIdText);
    const { offset, limit } = parsePage(q);
    const service = q.get('service') || undefined;
    const name = q.get('name') || undefined;
    const deprecated = boolParam(q, 'deprecated') ?? false;
    await this.deps.store.read((s) => this.project(s, projectId));
    const like = name === undefined ? undefined : `%${name.replace(/[\\%_]/g, (m) => '\\' + m)}%`;
    const { total, rows } = await this.paged((lim, off) => this.deps.store.read((s) => s<Record<string, unknown>[]>`
      SELECT a.*, sv.name AS service_name, count(*) OVER () AS total
      FROM authz_api a JOIN utilmeta_service sv ON sv.id = a.service_id
      WHERE (a.deprecated_at IS NOT NULL) = ${deprecated}
        ${service ? s`AND sv.name = ${service}` : s``}
        ${like ? s`AND (a.path_template ILIKE ${like} OR a.summary ILIKE ${like})` : s``}
      ORDER BY sv.name, a.path_template, a.method LIMIT ${lim} OFFSET ${off}`), limit, offset);
    return {
      total,
      records: rows.map((r) => ({
        api_id: r.api_id, service: r.service_name, method: r.method, path: r.path_template, summary: r.summary,
        permission: r.permission, auth_enabled: r.auth_enabled, deprecated: r.deprecated_at !== null,
      })),
    };
  }

  // ------------------------------------------------------------ apps

  /** Admin, the project's creator, or a role of the project's org covering it. */
  private async mayCreateApps(sql: postgres.Sql | postgres.TransactionSql, c: GrantsCaller, project: { id: string; org_id: string; creator_id: string | null }): Promise<boolean> {
    if (this.isAdmin(c) || project.creator_id === c.userId) return true;
    const rows = await sql`
      SELECT 1 FROM authz_role_user ru JOIN authz_role r ON r.id = ru.role_id
      WHERE ru.user_id = ${c.userId} AND r.org_id = ${project.org_id}
        AND (r.is_all_projects OR EXISTS (SELECT 1 FROM authz_role_project rp WHERE rp.role_id = r.id AND rp.project_id = ${project.id}))
      LIMIT 1`;
    return rows.length > 0;
  }

  private async serviceByName(sql: postgres.Sql | postgres.TransactionSql, v: unknown): Promise<string | null> {
    if (v === null) return null;
    if (typeof v !== 'string' || v === '') throw grantError('AUTHZ.4000', 'bound_service: a service name or null', 'bound_service');
    const [s] = await sql<{ id: string }[]>`SELECT id FROM utilmeta_service WHERE name = ${v}`;
    if (!s) throw new DomainError('not_found', `bound_service: no service named '${v}'`, { code: 'AUTHZ.4041', field: 'bound_service' });
    return s.id;
  }

  private async ownerRef(sql: postgres.Sql | postgres.TransactionSql, v: unknown): Promise<string> {
    const id = typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? String(v) : typeof v === 'string' && /^[1-9][0-9]{0,17}$/.test(v) ? v : null;
    if (id === null) throw grantError('AUTHZ.4000', 'owner_user_id: a user id', 'owner_user_id');
    const [u] = await sql<{ id: string }[]>`SELECT id FROM authz_user WHERE id = ${id}`;
    if (!u) throw new DomainError('not_found', `owner_user_id: user ${id} not found`, { code: 'AUTHZ.4040', field: 'owner_user_id' });
    return u.id;
  }

  private async appRecord(sql: postgres.Sql | postgres.TransactionSql, id: string): Promise<Record<string, unknown>> {
    const [r] = await sql<Record<string, any>[]>`
      SELECT a.*, u.account AS owner_account, s.name AS bound_service_name FROM authz_app a
      JOIN authz_user u ON u.id = a.owner_user_id LEFT JOIN utilmeta_service s ON s.id = a.bound_service_id WHERE a.id = ${id}`;
    return appRecord(r!);
  }

  async createApp(c: GrantsCaller, projectIdText: string, body: unknown): Promise<Record<string, unknown>> {
    const projectId = parseProjectId(projectIdText);
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw grantError('AUTHZ.4000', 'the body must be a JSON object');
    const b = body as Record<string, unknown>;
    const name = optString(b, 'name');
    if (name === undefined) throw grantError('AUTHZ.4001', 'name: required', 'name');
    if (name.trim() === '' || name.length > 64) throw grantError('AUTHZ.4000', 'name: 1 to 64 characters, not blank', 'name');
    const description = optString(b, 'description') ?? '';
    if (description.length > 500) throw grantError('AUTHZ.4000', 'description: at most 500 characters', 'description');
    const admin = this.isAdmin(c);
    if (!admin && (b.owner_user_id !== undefined || b.bound_service !== undefined)) throw grantError('AUTHZ.4030', 'only admins set owner_user_id or bound_service');
    const { result } = await this.write(c, async (tx) => {
      const sql = tx.sql;
      const project = await this.project(sql, projectId);
      if (!(await this.mayCreateApps(sql, c, project))) throw grantError('AUTHZ.4031', `you may not create apps in project ${projectId}`);
      const owner = b.owner_user_id === undefined ? c.userId : await this.ownerRef(sql, b.owner_user_id);
      const bound = b.bound_service === undefined ? null : await this.serviceByName(sql, b.bound_service);
      const [dup] = await sql`SELECT 1 FROM authz_app WHERE project_id = ${projectId} AND name = ${name}`;
      if (dup) throw grantError('AUTHZ.4097', `name: an app named '${name}' already exists in project ${projectId}`, 'name');
      const [row] = await sql<{ id: string; app_id: string }[]>`
        INSERT INTO authz_app (app_id, project_id, name, description, owner_user_id, bound_service_id)
        VALUES (${randomBytes(16).toString('hex')}, ${projectId}, ${name}, ${description}, ${owner}, ${bound}) RETURNING id, app_id`;
      const rec = await this.appRecord(sql, row!.id);
      // status is part of every app effect: without it a node reads the event as a disable.
      tx.event({ action: 'app.create', targetType: 'app', targetId: row!.app_id, effect: { app_id: row!.app_id, status: 'ACTIVE' }, after: rec });
      return rec;
    });
    return result;
  }

  async listApps(c: GrantsCaller, projectIdText: string, q: URLSearchParams): Promise<Page<Record<string, unknown>>> {
    const projectId = parseProjectId(projectIdText);
    const { offset, limit } = parsePage(q);
    const name = q.get('name') || undefined;
    const project = await this.deps.store.read((s) => this.project(s, projectId));
    const all = await this.deps.store.read((s) => this.mayCreateApps(s, c, project));
    const { total, rows } = await this.paged((lim, off) => this.deps.store.read((s) => s<Record<string, any>[]>`
      SELECT a.*, u.account AS owner_account, sv.name AS bound_service_name, count(*) OVER () AS total FROM authz_app a
      JOIN authz_user u ON u.id = a.owner_user_id LEFT JOIN utilmeta_service sv ON sv.id = a.bound_service_id
      WHERE a.project_id = ${projectId} ${all ? s`` : s`AND a.owner_user_id = ${c.userId}`}
        ${name ? s`AND a.name ILIKE ${'%' + name.replace(/[\\%_]/g, (m) => '\\' + m) + '%'}` : s``}
      ORDER BY a.id LIMIT ${lim} OFFSET ${off}`), limit, offset);
    return { total, records: rows.map(appRecord) };
  }

  async getApp(c: GrantsCaller, projectIdText: string, appId: string): Promise<Record<string, unknown>> {
    const projectId = parseProjectId(projectIdText);
    return this.deps.store.read(async (s) => {
      const project = await this.project(s, projectId);
      const app = await this.app(s, projectId, appId);
      if (!this.isOwner(c, app) && !(await this.mayCreateApps(s, c, project))) throw grantError('AUTHZ.4042', `app ${appId} not found in project ${projectId}`, 'app_id');
      return this.appRecord(s, app.id);
    });
  }

  async updateApp(c: GrantsCaller, projectIdText: string, appId: string, body: unknown): Promise<Record<string, unknown>> {
    const projectId = parseProjectId(projectIdText);
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw grantError('AUTHZ.4000', 'the body must be a JSON object');
    const b = body as Record<string, unknown>;
    const name = optString(b, 'name');
    if (name !== undefined && (name.trim() === '' || name.length > 64)) throw grantError('AUTHZ.4000', 'name: 1 to 64 characters, not blank', 'name');
    const description = optString(b, 'description');
    if (description !== undefined && description.length > 500) throw grantError('AUTHZ.4000', 'description: at most 500 characters', 'description');
    const status = optString(b, 'status');
    if (status !== undefined && status !== 'ACTIVE' && status !== 'DISABLED') throw grantError('AUTHZ.4002', 'status: ACTIVE or DISABLED', 'status');
    const admin = this.isAdmin(c);
    if (!admin && (b.owner_user_id !== undefined || b.bound_service !== undefined)) throw grantError('AUTHZ.4030', 'only admins change owner_user_id or bound_service');
    const { result } = await this.write(c, async (tx) => {
      const sql = tx.sql;
      await this.project(sql, projectId);
      const app = await this.app(sql, projectId, appId, true);
      if (!this.isOwner(c, app)) throw grantError('AUTHZ.4031', `you are not the owner of app ${app.app_id}`);
      const before = await this.appRecord(sql, app.id);
      const owner = b.owner_user_id === undefined ? undefined : await this.ownerRef(sql, b.owner_user_id);
      const bound = b.bound_service === undefined ? undefined : await this.serviceByName(sql, b.bound_service);
      if (name !== undefined && name !== app.name) {
        const [dup] = await sql`SELECT 1 FROM authz_app WHERE project_id = ${projectId} AND name = ${name} AND id <> ${app.id}`;
        if (dup) throw grantError('AUTHZ.4097', `name: an app named '${name}' already exists in project ${projectId}`, 'name');
      }
      await sql`
        UPDATE authz_app SET name = ${name ?? app.name}, description = coalesce(${description ?? null}, description), status = ${status ?? app.status},
          owner_user_id = ${owner ?? app.owner_user_id}, bound_service_id = ${bound === undefined ? sql`bound_service_id` : bound}, updated_at = now()
        WHERE id = ${app.id}`;
      const rec = await this.appRecord(sql, app.id);
      tx.event({ action: 'app.update', targetType: 'app', targetId: app.app_id, effect: { app_id: app.app_id, status: rec.status }, before, after: rec });
      return rec;
    });
    return result;
  }

  /** Deletes the app; its grants, requests and keys go with it (an immediate revocation everywhere). */
  async deleteApp(c: GrantsCaller, projectIdText: string, appId: string): Promise<void> {
    const projectId = parseProjectId(projectIdText);
    await this.write(c, async (tx) => {
      const sql = tx.sql;
      await this.project(sql, projectId);
      const app = await this.app(sql, projectId, appId, true);
      if (!this.isOwner(c, app)) throw grantError('AUTHZ.4031', `you are not the owner of app ${app.app_id}`);
      const before = await this.appRecord(sql, app.id);
      const [{ grants }] = await sql<{ grants: number }[]>`SELECT count(*)::int AS grants FROM authz_grant WHERE app_id = ${app.id}`;
      await sql`DELETE FROM authz_app WHERE id = ${app.id}`;
      tx.event({ action: 'app.delete', targetType: 'app', targetId: app.app_id, effect: { app_id: app.app_id }, before: { ...before, grants } });
    });
  }
}

// ---------------------------------------------------------------- wire records

const WEEK_MS = 7 * 86_400_000;

function applyRecord(r: Record<string, any>): Record<string, unknown> {
  return {
    apply_id: Number(r.id),
    apply_type: r.kind === 'APPLY' ? 'APPLY_TYPE_APPLY' : 'APPLY_TYPE_RENEW',
    apply_status: r.status,
    api_id: r.api_id,
    api_name: `${r.method} ${r.path_template}`,
    service: r.service_name,
    app_id: r.app_public_id,
    app_name: r.app_name,
    grant_id: Number(r.grant_id),
    time: iso(r.requested_end_at),
    applicant: r.applicant_account,
    apply_time: iso(r.created_at),
    reviewer: r.reviewer_account,
    review_time: iso(r.decided_at),
    approved_time: iso(r.approved_end_at),
    comment: r.comment,
  };
}

function grantRecord(r: Record<string, any>): Record<string, unknown> {
  const now = (r.now as Date).getTime();
  const end = r.end_at ? Math.min((r.end_at as Date).getTime(), r.cancel_at ? (r.cancel_at as Date).getTime() : Infinity) : null;
  const live = r.shown_state === 'ACTIVE' || r.shown_state === 'CANCEL_SCHEDULED';
  return {
    grant_id: Number(r.id),
    api_id: r.api_id,
    api_name: `${r.method} ${r.path_template}`,
    service: r.service_name,
    app_id: r.app_public_id,
    app_name: r.app_name,
    state: r.shown_state,
    expiring: live && end !== null && end - now < WEEK_MS,
    renew_pending: r.renew_pending === true,
    start_time: iso(r.start_at),
    end_time: iso(r.end_at),
    cancel_time: iso(r.cancel_at),
    closed_time: iso(r.closed_at),
    closed_by: r.closed_by ?? null,
    create_time: iso(r.created_at),
    update_time: iso(r.updated_at),
  };
}

function appRecord(r: Record<string, any>): Record<string, unknown> {
  return {
    id: r.app_id,
    name: r.name,
    description: r.description,
    project_id: Number(r.project_id),
    owner: { id: Number(r.owner_user_id), account: r.owner_account },
    status: r.status,
    bound_service: r.bound_service_name ?? null,
    create_time: iso(r.created_at),
    update_time: iso(r.updated_at),
  };
}
