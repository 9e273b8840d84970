// Shared pieces of the directory domain (orgs, users, departments, roles,
// projects): the caller, wire formatting, reference resolution, errors and the
// write wrapper every mutation goes through.
import type postgres from 'postgres';
import { DomainError, type DomainErrorOptions, type ErrorKind } from '../core/errors.ts';
import { writeAuthz, type AuthzActor, type AuthzStore, type AuthzTx } from './store.ts';

export type Sql = postgres.Sql;
export type Tx = postgres.TransactionSql;
/** Anything that runs a tagged-template query: the pool or a transaction. */
export type Q = Sql | Tx;

/** Who is calling. Contacts and write access depend on it. */
export interface DirectoryCaller {
  /** authz_user.id of the caller; null for the CLI or a system job. */
  userId: number | string | null;
  account?: string | null;
  isSuperuser: boolean;
  /** Union of the management_permissions of the caller's roles. */
  managementPermissions: readonly string[];
  /** For the audit event: `ak:…`, `token:<id>`, `jwt:<jti>`, `cli`. */
  credential?: string | null;
  clientIp?: string | null;
  requestId?: string | null;
}

export interface DirectoryDeps {
  /** Registry database pool (the authz_* tables live there). */
  sql: Sql;
  /** When given, writes go through it so its commit listeners (propagation) see every event. */
  store?: AuthzStore;
}

export const canReadContacts = (c: DirectoryCaller) => c.isSuperuser || c.managementPermissions.includes('directory_manage');
export const canManageDirectory = (c: DirectoryCaller) => canReadContacts(c);
export const canManageProjects = (c: DirectoryCaller) =>
  c.isSuperuser || c.managementPermissions.includes('directory_manage') || c.managementPermissions.includes('project_manage');

export function dirError(kind: ErrorKind, code: string, message: string, opts: Omit<DomainErrorOptions, 'code'> = {}): DomainError {
  return new DomainError(kind, message, { ...opts, code });
}
export const paramInvalid = (field: string, message: string) => dirError('invalid', 'PARAM_INVALID', `${field}: ${message}`, { field });
export const forbiddenError = (message: string) => dirError('forbidden', 'FORBIDDEN', message);

/** `YYYY-MM-DDTHH:MM:SS` in UTC, the directory's time format. */
export function wireTime(v: Date | string | null | undefined): string | null {
  if (v === null || v === undefined) return null;
  const d = v instanceof Date ? v : new Date(v);
  return d.toISOString().slice(0, 19);
}

/** int8 columns arrive as strings from postgres.js; the wire wants numbers. */
export function num(v: unknown): number;
export function num(v: unknown, nullable: true): number | null;
export function num(v: unknown, _nullable?: true): number | null {
  if (v === null || v === undefined) return null;
  return typeof v === 'number' ? v : Number(v);
}

/** A parsed `{user_id}` path segment: a numeric id or `account_<account>`. */
export type UserRef = { id: number } | { account: string };
/** A parsed `{department_id}` path segment: a numeric id or `origin_id_<origin_id>`. */
export type DeptRef = { id: number } | { originId: string };

export interface UserRow {
  id: string;
  account: string;
  username: string;
  email: string | null;
  mobile_number: string | null;
  avatar_url: string;
  status: number;
  is_superuser: boolean;
  current_org_id: string | null;
  custom_property: Record<string, unknown>;
  last_login: Date | null;
  created_at: Date;
  updated_at: Date;
}

export const USER_COLUMNS =
  'u.id, u.account, u.username, u.email, u.mobile_number, u.avatar_url, u.status, u.is_superuser, u.current_org_id, u.custom_property, u.last_login, u.created_at, u.updated_at';

/** The directory's user object. Contacts are hidden from callers without directory_manage. */
export function userWire(r: UserRow, caller: DirectoryCaller | null): Record<string, unknown> {
  const contacts = caller === null || canReadContacts(caller);
  return {
    id: num(r.id),
    last_login: wireTime(r.last_login),
    is_superuser: r.is_superuser,
    status: r.status,
    account: r.account,
    username: r.username,
    email: contacts ? r.email : null,
    mobile_number: contacts ? r.mobile_number : null,
    avatar_url: r.avatar_url,
    current_org_id: num(r.current_org_id, true),
    created_at: wireTime(r.created_at),
    updated_at: wireTime(r.updated_at),
  };
}

export async function findUser(q: Q, ref: UserRef, opts: { field?: string; lock?: boolean } = {}): Promise<UserRow> {
  const lock = opts.lock ? q`FOR UPDATE` : q``;
  const rows =
    'id' in ref
      ? await q<UserRow[]>`SELECT ${q.unsafe(USER_COLUMNS)} FROM authz_user u WHERE u.id = ${ref.id} ${lock}`
      : await q<UserRow[]>`SELECT ${q.unsafe(USER_COLUMNS)} FROM authz_user u WHERE lower(u.account) = lower(${ref.account}) ${lock}`;
  const row = rows[0];
  if (!row) {
    const what = 'id' in ref ? `id ${ref.id}` : `account ${JSON.stringify(ref.account)}`;
    throw dirError('not_found', 'USER_NOT_FOUND', `no user with ${what}`, { field: opts.field ?? 'user_id' });
  }
  return row;
}

export interface OrgRow {
  id: string;
  name: string;
  creator_id: string | null;
  created_at: Date;
  updated_at: Date;
}

export async function findOrg(q: Q, orgId: number, opts: { lock?: boolean; field?: string } = {}): Promise<OrgRow> {
  const lock = opts.lock ? q`FOR UPDATE` : q``;
  const [row] = await q<OrgRow[]>`SELECT id, name, creator_id, created_at, updated_at FROM authz_org WHERE id = ${orgId} ${lock}`;
  if (!row) throw dirError('not_found', 'ORG_NOT_FOUND', `no org with id ${orgId}`, { field: opts.field ?? 'org_id' });
  return row;
}

export async function isOrgMember(q: Q, orgId: number | string, userId: number | string): Promise<boolean> {
  const rows = await q`SELECT 1 FROM authz_org_user WHERE org_id = ${orgId} AND user_id = ${userId}`;
  return rows.length > 0;
}

/** Paging: both absent = everything; otherwise page (from 1, default 1) and page_size (default 20). */
export interface Paging {
  page?: number;
  page_size?: number;
}
export function pageSlice(p: Paging): { limit: number | null; offset: number } {
  if (p.page === undefined && p.page_size === undefined) return { limit: null, offset: 0 };
  const size = p.page_size ?? 20;
  const page = p.page ?? 1;
  return { limit: size, offset: (page - 1) * size };
}

/** Event as recorded by a directory write (the actor columns come from the caller). */
export interface DirEvent {
  action: string;
  targetType: string;
  targetId: string | number;
  effect: Record<string, unknown>;
  before?: unknown;
  after?: unknown;
}

// Thrown to roll back a write that turned out to change nothing (e.g. adding
// members who are already there): no rows, so no event either.
class NoChange<T> {
  constructor(readonly result: T) {}
}

export function actorOf(caller: DirectoryCaller): AuthzActor {
  return {
    type: caller.userId === null ? 'CLI' : 'USER',
    id: caller.userId,
    name: caller.account ?? null,
    credential: caller.credential ?? (caller.userId === null ? 'cli' : null),
    ip: caller.clientIp ?? null,
    requestId: caller.requestId ?? null,
  };
}

/**
 * Runs `fn` inside the authz write protocol (serialized on authz_state, rows
 * re-read FOR UPDATE by `fn`, events in the same transaction). PostgreSQL
 * errors come out as DomainErrors.
 */
export async function directoryWrite<T>(
  deps: DirectoryDeps,
  caller: DirectoryCaller,
  fn: (tx: Tx, emit: (e: DirEvent) => void) => Promise<T>,
): Promise<T> {
  const body = async (tx: AuthzTx) => {
    let emitted = 0;
    const result = await fn(tx.sql, (e) => {
      emitted++;
      tx.event({ action: e.action, targetType: e.targetType, targetId: e.targetId, effect: e.effect, before: e.before, after: e.after });
    });
    if (emitted === 0) throw new NoChange(result);
    return result;
  };
  try {
    const out = deps.store ? await deps.store.write(actorOf(caller), body) : await writeAuthz(deps.sql, actorOf(caller), body);
    return out.result;
  } catch (err) {
    if (err instanceof NoChange) return err.result as T;
    throw err;
  }
}
