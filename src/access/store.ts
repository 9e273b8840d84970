// The access plane's write protocol. Every authz mutation is one transaction
// that first locks the authz_state row (serializing writers, which makes the
// trigger counts race-free and the event seq gapless), changes its rows,
// appends at least one authz_event, and commits. The committed events come back
// so the caller can apply them locally and publish them after COMMIT.
//
// PostgreSQL errors never escape as such: rule violations become DomainErrors
// naming the rule, a lost database becomes `unavailable` / DB_UNAVAILABLE.
import { isIP } from 'node:net';
import type postgres from 'postgres';
import { DomainError, type DomainErrorOptions, type ErrorKind } from '../core/errors.ts';

export type ActorType = 'USER' | 'APP' | 'SYSTEM' | 'PLATFORM' | 'CLI';

/** Who is writing, and through what; copied onto every event of the transaction. */
export interface AuthzActor {
  type: ActorType;
  id?: string | number | bigint | null;
  name?: string | null;
  /** `ak:<AKID>`, `token:<id>`, `jwt:<jti>` or `cli` */
  credential?: string | null;
  ip?: string | null;
  requestId?: string | null;
}

export interface AuthzEventInput {
  /** e.g. `key.create`, `user.update` */
  action: string;
  targetType: string;
  targetId: string | number | bigint;
  serviceId?: string | number | bigint | null;
  /** What a node needs to apply the event without reading the database (tightening) or which rows to re-read (loosening). */
  effect?: Record<string, unknown>;
  before?: unknown;
  after?: unknown;
}

/** An event as committed: what a node applies and publishes. */
export interface CommittedEvent {
  seq: number;
  action: string;
  at: Date;
  /** `at` in epoch milliseconds (the NOTIFY payload's `at_ms`) */
  atMs: number;
  targetType: string;
  targetId: string;
  serviceId: string | null;
  effect: Record<string, unknown>;
}

export interface AuthzTx {
  /** The transaction: every statement must go through it. */
  readonly sql: postgres.TransactionSql;
  /** authz_state.seq when the lock was taken (the last committed event). */
  readonly lockedSeq: number;
  readonly actor: AuthzActor;
  /** Queues an event; events are inserted, in call order, after `fn` returns. */
  event(e: AuthzEventInput): void;
}

/** Caller-specific errors for constraint names (e.g. `authz_user_account_ci` → ACCOUNT_EXISTS). */
export type ConstraintErrors = Record<string, DomainError | ((err: PgErrorLike) => DomainError)>;

export interface WriteOptions {
  /** Overrides the default mapping for these constraint / rule names. */
  errors?: ConstraintErrors;
}

export interface WriteResult<T> {
  result: T;
  events: CommittedEvent[];
}

/** The payload a node publishes and receives (the same JSON as the NOTIFY trigger sends). */
export function eventPayload(e: CommittedEvent): { seq: number; action: string; at_ms: number; effect: Record<string, unknown> } {
  return { seq: e.seq, action: e.action, at_ms: e.atMs, effect: e.effect };
}

export const NOTIFY_CHANNEL = 'utilmeta_proxy_authz';
/** Effects larger than this (as jsonb text) do not fit the NOTIFY payload; the event then asks nodes to reload. */
export const MAX_EFFECT_BYTES = 6000;

/**
 * Runs one authz write transaction. `fn` changes rows through `tx.sql` and
 * queues ≥ 1 event with `tx.event`; a throw anywhere rolls everything back.
 */
export async function writeAuthz<T>(
  sql: postgres.Sql,
  actor: AuthzActor,
  fn: (tx: AuthzTx) => Promise<T>,
  opts: WriteOptions = {},
): Promise<WriteResult<T>> {
  try {
    return await sql.begin(async (tsql) => {
      const [state] = await tsql<{ seq: string }[]>`SELECT seq FROM authz_state FOR UPDATE`;
      if (!state) throw new DomainError('unavailable', 'the access-plane tables are not migrated (authz_state has no row)', { code: 'DB_UNAVAILABLE' });
      const queued: AuthzEventInput[] = [];
      const tx: AuthzTx = { sql: tsql, lockedSeq: Number(state.seq), actor, event: (e) => void queued.push(e) };
      const result = await fn(tx);
      // A mutation without its audit event would be invisible to every other node.
      if (queued.length === 0) throw new Error('writeAuthz: the transaction queued no authz_event');
      const events: CommittedEvent[] = [];
      for (const e of queued) events.push(await insertEvent(tsql, actor, e));
      return { result, events };
    });
  } catch (err) {
    throw mapDbError(err, opts.errors);
  }
}

/** Runs reads (or a lock-free statement) with the same error mapping as writes. */
export async function readAuthz<T>(fn: () => Promise<T>, errors?: ConstraintErrors): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw mapDbError(err, errors);
  }
}

/**
 * A write helper bound to a pool, telling its listeners about every commit (the
 * propagation engine hooks in here once instead of at every call site).
 */
export class AuthzStore {
  readonly #listeners = new Set<(events: CommittedEvent[]) => unknown>();
  constructor(readonly sql: postgres.Sql) {}

  /**
   * Runs after every commit. A listener that returns a promise is awaited (bounded)
   * before write() returns: the writing node then reads its own writes (a key or
   * token it just created works on the next request to this node).
   */
  onCommit(listener: (events: CommittedEvent[]) => unknown): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  async write<T>(actor: AuthzActor, fn: (tx: AuthzTx) => Promise<T>, opts?: WriteOptions): Promise<WriteResult<T>> {
    const out = await writeAuthz(this.sql, actor, fn, opts);
    const waits: Array<Promise<unknown>> = [];
    for (const l of this.#listeners) {
      try {
        const r = l(out.events);
        if (r instanceof Promise) waits.push(r.catch(() => {}));
      } catch {
        // A failing listener must not turn a committed write into an error; the
        // resync timer recovers whatever it missed.
      }
    }
    if (waits.length) await Promise.race([Promise.all(waits), new Promise((r) => setTimeout(r, 2000).unref())]);
    return out;
  }

  read<T>(fn: (sql: postgres.Sql) => Promise<T>, errors?: ConstraintErrors): Promise<T> {
    return readAuthz(() => fn(this.sql), errors);
  }
}

// Audit metadata comes from headers and tokens of any length; the columns are
// bounded, and a long request id must not fail the write it describes.
const clip = (s: string | null | undefined, n: number): string | null => (s == null ? null : s.length > n ? s.slice(0, n) : s);
const idText = (v: string | number | bigint | null | undefined): string | null => (v == null ? null : String(v));

/** Upper bound of the jsonb text size: jsonb prints a space after every `:` and `,`. */
export function effectSize(effect: unknown): number {
  const s = JSON.stringify(effect);
  let extra = 0;
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) === 44 || s.charCodeAt(i) === 58) extra++;
  return Buffer.byteLength(s) + extra;
}

async function insertEvent(tsql: postgres.TransactionSql, actor: AuthzActor, e: AuthzEventInput): Promise<CommittedEvent> {
  let effect = e.effect ?? {};
  if (effectSize(effect) > MAX_EFFECT_BYTES) effect = { reload: true };
  const ip = actor.ip ? stripZone(actor.ip) : null;
  const [row] = await tsql<{ seq: string; at: Date; action: string; target_type: string; target_id: string; service_id: string | null; effect: Record<string, unknown> }[]>`
    INSERT INTO authz_event (actor_type, actor_id, actor_name, credential, client_ip, request_id,
                             action, target_type, target_id, service_id, effect, before, after)
    VALUES (${actor.type}, ${clip(idText(actor.id), 64)}, ${clip(actor.name, 100)}, ${clip(actor.credential, 48)},
            ${ip !== null && isIP(ip) ? ip : null}, ${clip(actor.requestId, 128)},
            ${e.action}, ${e.targetType}, ${String(e.targetId)}, ${idText(e.serviceId)},
            ${tsql.json(effect as postgres.JSONValue)},
            ${e.before === undefined || e.before === null ? null : tsql.json(e.before as postgres.JSONValue)},
            ${e.after === undefined || e.after === null ? null : tsql.json(e.after as postgres.JSONValue)})
    RETURNING seq, at, action, target_type, target_id, service_id, effect`;
  const r = row!;
  return {
    seq: Number(r.seq),
    action: r.action,
    at: r.at,
    atMs: r.at.getTime(),
    targetType: r.target_type,
    targetId: r.target_id,
    serviceId: r.service_id,
    effect: r.effect,
  };
}

function stripZone(ip: string): string {
  const i = ip.indexOf('%');
  return i >= 0 ? ip.slice(0, i) : ip;
}

// ---------------------------------------------------------------- error mapping

/** The fields of a postgres.js PostgresError this module reads. */
export interface PgErrorLike {
  code?: string;
  message?: string;
  detail?: string;
  constraint_name?: string;
  column_name?: string;
  table_name?: string;
}

type Rule = [ErrorKind, string, string?, string?]; // kind, message, code, field

/** What each named rule means, in words a client can act on. */
const RULES: Record<string, Rule> = {
  // trigger rules
  authz_event_append_only: ['conflict', 'the audit log is append-only', 'CONFLICT'],
  authz_grant_insert_state: ['conflict', 'a grant starts as PENDING or ACTIVE', 'CONFLICT'],
  authz_grant_closed: ['conflict', 'the grant is closed and can no longer change', 'CONFLICT'],
  authz_grant_immutable: ['conflict', "a grant's app, API, creation time and start time never change", 'CONFLICT'],
  authz_grant_end_at_decrease: ['conflict', "a grant's end time can only move later", 'CONFLICT', 'end_at'],
  authz_grant_transition: ['conflict', 'this grant state change is not allowed', 'CONFLICT', 'state'],
  authz_grant_expire_early: ['conflict', 'a grant cannot expire before its end time', 'CONFLICT'],
  authz_grant_request_insert_status: ['conflict', 'a grant request starts as PENDING', 'CONFLICT'],
  authz_grant_request_apply_state: ['conflict', 'an application needs a pending grant', 'CONFLICT'],
  authz_grant_request_renew_state: ['conflict', 'a renewal needs an active grant that is not scheduled for cancellation', 'CONFLICT'],
  authz_grant_request_renew_shorter: ['invalid', 'a renewal must end after the current end time', 'PARAM_INVALID', 'time'],
  authz_grant_request_decided: ['conflict', 'the request is already decided', 'CONFLICT'],
  authz_access_key_limit: ['conflict', 'the owner already has 2 active access keys', 'KEY_LIMIT'],
  authz_access_key_owner_immutable: ['conflict', "an access key's owner never changes", 'CONFLICT', 'ownerId'],
  authz_access_key_expiry_extend: ['conflict', "an access key's expiry can only move earlier", 'CONFLICT'],
  authz_department_no_cycle: ['invalid', 'the department would become its own ancestor', 'DEPARTMENT_CYCLE', 'super_id'],
  authz_role_child_no_cycle: ['invalid', 'the child roles would form a cycle', 'ROLE_CYCLE', 'child_ids'],
  // table constraints
  authz_user_account_ci: ['conflict', 'the account already exists', 'ACCOUNT_EXISTS', 'account'],
  authz_user_account_check: ['invalid', 'account must start with a letter or digit and contain only letters, digits and . _ @ - (at most 64)', 'PARAM_INVALID', 'account'],
  authz_user_status_check: ['invalid', 'status must be 0 or 1', 'PARAM_INVALID', 'status'],
  authz_user_custom_property_check: ['invalid', 'custom_property must be an object', 'PARAM_INVALID', 'custom_property'],
  authz_org_name_key: ['conflict', 'an org with this name already exists', 'CONFLICT', 'name'],
  authz_org_name_check: ['invalid', 'name must not be blank', 'PARAM_INVALID', 'name'],
  authz_user_sso_sso_type_sso_user_id_key: ['conflict', 'this SSO identity is already bound to a user', 'CONFLICT', 'sso_user_id'],
  authz_user_sso_sso_type_check: ['invalid', 'unknown sso_type', 'PARAM_INVALID', 'sso_type'],
  authz_user_sso_sso_user_id_check: ['invalid', 'sso_user_id must not be empty', 'PARAM_INVALID', 'sso_user_id'],
  authz_department_one_root: ['conflict', 'the org already has a root department', 'CONFLICT', 'super_id'],
  authz_department_check: ['invalid', 'a department cannot be its own parent', 'DEPARTMENT_CYCLE', 'super_id'],
  authz_department_name_check: ['invalid', 'name must not be blank', 'PARAM_INVALID', 'name'],
  authz_department_org_id_origin_id_key: ['conflict', 'a department with this origin_id already exists in the org', 'CONFLICT', 'origin_id'],
  authz_department_perm_inherit_check: ['invalid', "perm_inherit must be 'to_super' or 'to_children'", 'PARAM_INVALID', 'perm_inherit'],
  authz_role_org_id_name_key: ['conflict', 'a role with this name already exists in the org', 'CONFLICT', 'name'],
  authz_role_name_check: ['invalid', 'name must not be blank', 'PARAM_INVALID', 'name'],
  authz_role_management_permissions_check: ['invalid', 'management_permissions may only hold directory_manage, authz_manage and project_manage', 'PARAM_INVALID', 'management_permissions'],
  authz_role_child_check: ['invalid', 'a role cannot inherit itself', 'ROLE_CYCLE', 'child_ids'],
  authz_project_check: ['invalid', 'a non-permanent project needs started_at ≤ expired_at', 'PARAM_INVALID', 'expired_at'],
  authz_project_name_check: ['invalid', 'name must not be blank', 'PARAM_INVALID', 'name'],
  authz_app_project_id_name_key: ['conflict', 'an app with this name already exists in the project', 'CONFLICT', 'name'],
  authz_app_bound_service_id_key: ['conflict', 'another app is already bound to this service', 'CONFLICT', 'bound_service_id'],
  authz_app_name_check: ['invalid', 'name must not be blank', 'PARAM_INVALID', 'name'],
  authz_service_auth_service_id_auth_object_type_auth_object__key: ['conflict', 'this object already has an authorization on the service', 'AUTH_EXISTS'],
  authz_service_auth_perm_mask_check: ['invalid', 'permissions must be a non-empty subset of the 9 permissions', 'PARAM_INVALID', 'permissions'],
  authz_service_auth_check2: ['invalid', 'apps cannot hold GRANT, SHARE or RELEASE', 'PARAM_INVALID', 'permissions'],
  authz_api_service_id_method_route_key_key: ['conflict', 'the service already has this API', 'CONFLICT', 'path'],
  authz_api_path_template_check: ['invalid', "path must start with '/' and contain no '//'", 'PARAM_INVALID', 'path'],
  authz_grant_one_live: ['conflict', 'the app already has a live grant for this API', 'CONFLICT'],
  authz_grant_request_one_pending: ['conflict', 'the grant already has a pending request', 'CONFLICT'],
  authz_grant_request_one_apply: ['conflict', 'the grant already has its application', 'CONFLICT'],
  authz_grant_request_check: ['invalid', 'the requested end must be in the future', 'PARAM_INVALID', 'time'],
  authz_grant_request_check4: ['conflict', 'the reviewer cannot approve their own request', 'FORBIDDEN'],
  notice_respected: ['invalid', 'a reviewer cancellation needs the full notice period', 'PARAM_INVALID', 'time'],
  cancel_not_early: ['conflict', 'only the app can end a grant before its cancellation date', 'CONFLICT'],
  has_window: ['invalid', 'an active grant needs an end after its start', 'PARAM_INVALID', 'time'],
  authz_access_key_check: ['invalid', 'expires_at must be after created_at', 'PARAM_INVALID', 'expiresDate'],
  authz_token_check: ['invalid', 'a token lives between 1 second and 366 days', 'PARAM_INVALID', 'expiresInDays'],
  authz_token_token_sha256_key: ['conflict', 'token collision', 'CONFLICT'],
  authz_event_effect_check: ['invalid', 'the event effect is too large', 'PARAM_INVALID'],
};

// SQLSTATEs and client codes meaning "the database is not there", not "your input is wrong".
const UNAVAILABLE = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH',
  'CONNECT_TIMEOUT', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED',
  '57P01', '57P02', '57P03', '53300', '3D000', '28P01', '28000', '42P01',
]);

function pgFields(err: unknown): PgErrorLike {
  return err && typeof err === 'object' ? (err as PgErrorLike) : {};
}

function make(rule: Rule, cause: unknown, extra: DomainErrorOptions = {}): DomainError {
  const [kind, message, code, field] = rule;
  return new DomainError(kind, message, { code, field, cause, ...extra });
}

/**
 * Turns anything a transaction threw into a DomainError (DomainErrors pass
 * through; programming errors stay as they are so they surface as bugs).
 */
export function mapDbError(err: unknown, overrides?: ConstraintErrors): unknown {
  if (err instanceof DomainError) return err;
  const e = pgFields(err);
  const code = e.code;
  if (code === undefined) return err;
  if (UNAVAILABLE.has(code) || code.startsWith('08')) {
    return new DomainError('unavailable', 'the database is unavailable', { code: 'DB_UNAVAILABLE', retryAfter: 1, cause: err });
  }
  const name = e.constraint_name;
  if (name && overrides && name in overrides) {
    const o = overrides[name]!;
    return typeof o === 'function' ? o(e) : o;
  }
  switch (code) {
    case '23514': // check_violation (tables and triggers)
    case '23505': // unique_violation
    case '23P01': {
      // exclusion_violation
      const rule = name ? RULES[name] : undefined;
      if (rule) return make(rule, err);
      const what = code === '23505' ? 'already exists' : 'breaks a rule';
      return new DomainError(code === '23514' ? 'invalid' : 'conflict', `${describeTable(e.table_name)} ${what}${name ? ` (${name})` : ''}`, {
        code: code === '23514' ? 'PARAM_INVALID' : 'CONFLICT',
        field: fieldOf(e),
        cause: err,
      });
    }
    case '23503': {
      // foreign_key_violation: a referenced row is missing (bad input), or a row is still referenced (conflict)
      const stillReferenced = /still referenced/i.test(e.detail ?? '') || /still referenced/i.test(e.message ?? '');
      const field = fieldOf(e);
      return stillReferenced
        ? new DomainError('conflict', `${describeTable(e.table_name)} is still in use${name ? ` (${name})` : ''}`, { code: 'CONFLICT', cause: err })
        : new DomainError('invalid', `${field ?? 'a referenced id'} does not exist`, { code: 'PARAM_INVALID', field, cause: err });
    }
    case '23502':
      return new DomainError('invalid', `${e.column_name ?? 'a required field'} is required`, { code: 'PARAM_INVALID', field: e.column_name, cause: err });
    case '22001':
      return new DomainError('invalid', `${e.column_name ?? 'a value'} is too long`, { code: 'PARAM_INVALID', field: e.column_name, cause: err });
    case '22003':
      return new DomainError('invalid', 'a number is out of range', { code: 'PARAM_INVALID', field: e.column_name, cause: err });
    case '22P02':
    case '22007':
    case '22008':
    case '22023':
      return new DomainError('invalid', `a value has the wrong format: ${e.message ?? ''}`.trim(), { code: 'PARAM_INVALID', field: e.column_name, cause: err });
    case '40001':
    case '40P01':
      return new DomainError('conflict', 'a concurrent change interfered; retry', { code: 'CONFLICT', retryAfter: 1, cause: err });
    case '55P03':
    case '57014':
      return new DomainError('unavailable', 'the database is busy', { code: 'DB_UNAVAILABLE', retryAfter: 1, cause: err });
    default:
      return err;
  }
}

function describeTable(t: string | undefined): string {
  return t ? t.replace(/^authz_/, '').replace(/_/g, ' ') : 'the row';
}

/** The column a constraint error is about, from `Key (col)=(…)` in DETAIL when PostgreSQL gives no column_name. */
function fieldOf(e: PgErrorLike): string | undefined {
  if (e.column_name) return e.column_name;
  const m = /Key \(([^)]+)\)/.exec(e.detail ?? '');
  if (!m) return undefined;
  const cols = m[1]!.split(',').map((c) => c.trim()).filter((c) => c !== 'org_id');
  return cols[cols.length - 1];
}
