// The query of `GET /api/v1/services/auth` (list the authorizations of a service): parsing into a
// validated structure, and turning that structure into parameterised SQL.
//
// Every error is a PARAM_INVALID naming the parameter at fault (`pageSize`, `filters[3].op`…).
// The SQL builder interpolates only names from fixed tables below; every value travels as a
// `$n` parameter.

import { invalid } from '../core/errors.ts';
import { PERM, PERMISSIONS, isPermission } from './permissions.ts';

export const AUTH_OBJECT_TYPES = ['USER', 'DEPT', 'GROUP', 'APP'] as const;
export const ORDER_BY = ['id', 'createdDate', 'updatedDate', 'authObjectId'] as const;
export const FILTER_OPS = [
  'EQUAL', 'NOT_EQUAL', 'GREATER_THAN', 'LESS_THAN', 'GREATER_THAN_EQUAL', 'LESS_THAN_EQUAL',
  'IN', 'NOT_IN', 'MATCH', 'NOT_MATCH', 'MATCH_END', 'NOT_MATCH_END', 'IS_NULL', 'IS_NOT_NULL',
] as const;
export type FilterOp = (typeof FILTER_OPS)[number];
export type FilterType = 'int' | 'time' | 'text' | 'set';

const COMPARE: FilterOp[] = ['EQUAL', 'NOT_EQUAL', 'GREATER_THAN', 'LESS_THAN', 'GREATER_THAN_EQUAL', 'LESS_THAN_EQUAL'];
const OPS_BY_TYPE: Record<FilterType, ReadonlySet<FilterOp>> = {
  int: new Set([...COMPARE, 'IN', 'NOT_IN']),
  time: new Set([...COMPARE, 'IS_NULL', 'IS_NOT_NULL']),
  text: new Set(['EQUAL', 'NOT_EQUAL', 'MATCH', 'NOT_MATCH', 'MATCH_END', 'NOT_MATCH_END', 'IN', 'NOT_IN', 'IS_NULL', 'IS_NOT_NULL']),
  set: new Set(['EQUAL', 'IN', 'NOT_IN']),
};
export const FILTER_KEYS = {
  id: 'int',
  authObjectId: 'int',
  createdDate: 'time',
  updatedDate: 'time',
  authObjectName: 'text',
  createdBy: 'text',
  updatedBy: 'text',
  permissions: 'set',
} as const satisfies Record<string, FilterType>;
export type FilterKey = keyof typeof FILTER_KEYS;

export const MAX_FILTERS = 20;
export const MAX_IN_VALUES = 100;
export const MAX_VALUE_LENGTH = 1000;

export interface AuthFilter {
  /** The `i` of `filters[i]`. */
  index: number;
  key: FilterKey;
  type: FilterType;
  op: FilterOp;
  /** Validated values: int64 decimal strings, ISO instants, text, or permission names. Empty for IS_NULL/IS_NOT_NULL. */
  values: string[];
}

export interface AuthListQuery {
  serviceId: string;
  authObjectType: (typeof AUTH_OBJECT_TYPES)[number];
  authObjectId: string | null;
  /** Rows created at or after this instant (ISO, UTC). */
  createdDate: string | null;
  pageNo: number;
  pageSize: number;
  orderBy: (typeof ORDER_BY)[number];
  orderSort: 'ASC' | 'DESC';
  infoScope: 'BASIC' | 'DETAIL';
  filters: AuthFilter[];
}

export type QueryInput = URLSearchParams | Readonly<Record<string, string | readonly string[] | undefined>>;

const bad = (field: string, message: string) => invalid(`${field}: ${message}`, { code: 'PARAM_INVALID', field });
const show = (v: string) => JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);

function collect(input: QueryInput): Map<string, string[]> {
  const m = new Map<string, string[]>();
  const add = (k: string, v: unknown) => {
    if (typeof v !== 'string') throw bad(k, 'must be a string');
    const cur = m.get(k);
    if (cur) cur.push(v);
    else m.set(k, [v]);
  };
  if (input instanceof URLSearchParams) for (const [k, v] of input) add(k, v);
  else if (typeof input === 'object' && input !== null) {
    for (const k of Object.keys(input)) {
      const v = (input as Record<string, unknown>)[k];
      if (v === undefined) continue;
      if (Array.isArray(v)) for (const x of v) add(k, x);
      else add(k, v);
    }
  } else throw invalid('the query must be an object', { code: 'PARAM_INVALID', field: 'query' });
  return m;
}

/** One value, or null when absent or empty; given more than once is an error. */
function single(m: Map<string, string[]>, field: string): string | null {
  const v = m.get(field);
  if (!v) return null;
  if (v.length > 1) throw bad(field, 'given more than once');
  return v[0] === '' ? null : v[0];
}

const INT64_MAX = 9223372036854775807n;

function int64(field: string, v: string, { positive }: { positive: boolean }): string {
  if (!/^-?[0-9]{1,19}$/.test(v)) throw bad(field, `${show(v)} is not an integer`);
  const n = BigInt(v);
  if (n > INT64_MAX || n < -INT64_MAX - 1n) throw bad(field, `${show(v)} is out of the int64 range`);
  if (positive && n < 1n) throw bad(field, `${show(v)} must be ≥ 1`);
  return n.toString();
}

function intIn(field: string, v: string | null, min: number, max: number, dflt: number): number {
  if (v === null) return dflt;
  if (!/^[0-9]{1,7}$/.test(v)) throw bad(field, `${show(v)} is not an integer between ${min} and ${max}`);
  const n = Number(v);
  if (n < min || n > max) throw bad(field, `${n} is not between ${min} and ${max}`);
  return n;
}

function oneOf<T extends string>(field: string, v: string | null, allowed: readonly T[], dflt: T): T {
  if (v === null) return dflt;
  if (!(allowed as readonly string[]).includes(v)) throw bad(field, `${show(v)} is not one of ${allowed.join(', ')}`);
  return v as T;
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;

/** An RFC 3339 instant with a zone, normalized to ISO UTC; a time without a zone is refused. */
export function parseInstant(field: string, v: string): string {
  const m = RFC3339.exec(v);
  if (!m) throw bad(field, `${show(v)} is not an RFC 3339 time with a zone (e.g. 2021-01-01T10:00:00.000Z)`);
  const [y, mo, d, h, mi, s] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number);
  const dim = new Date(Date.UTC(y, mo, 0)).getUTCDate();
  if (mo < 1 || mo > 12 || d < 1 || d > dim || h > 23 || mi > 59 || s > 59) throw bad(field, `${show(v)} is not a valid date and time`);
  const off = m[8];
  if (off.length === 6 && (Number(off.slice(1, 3)) > 23 || Number(off.slice(4)) > 59)) throw bad(field, `${show(v)} has an invalid zone offset`);
  const ms = Date.parse(v.toUpperCase());
  if (!Number.isFinite(ms)) throw bad(field, `${show(v)} is not a valid time`);
  return new Date(ms).toISOString();
}

function filterValues(field: string, type: FilterType, op: FilterOp, raw: string | null): string[] {
  if (op === 'IS_NULL' || op === 'IS_NOT_NULL') return [];
  if (raw === null) throw bad(field, `a value is required for ${op}`);
  if (raw.length > MAX_VALUE_LENGTH) throw bad(field, `longer than ${MAX_VALUE_LENGTH} characters`);
  const list = op === 'IN' || op === 'NOT_IN' ? raw.split(',') : [raw];
  if (list.length > MAX_IN_VALUES) throw bad(field, `more than ${MAX_IN_VALUES} values`);
  return list.map((v) => {
    if (v === '') throw bad(field, 'an empty value in the list');
    switch (type) {
      case 'int':
        return int64(field, v, { positive: false });
      case 'time':
        return parseInstant(field, v);
      case 'set':
        if (!isPermission(v)) throw bad(field, `${show(v)} is not one of ${PERMISSIONS.join(', ')}`);
        return v;
      default:
        return v;
    }
  });
}

const FILTER_PARAM = /^filters\[(0|[1-9][0-9]?)\]\.(key|op|value)$/;

/** Parses and validates the list query. Throws DomainError('invalid', …, {code:'PARAM_INVALID', field}). */
export function parseAuthListQuery(input: QueryInput): AuthListQuery {
  const m = collect(input);
  const serviceIdRaw = single(m, 'serviceId');
  if (serviceIdRaw === null) throw bad('serviceId', 'is required');
  const serviceId = int64('serviceId', serviceIdRaw, { positive: true });
  const typeRaw = single(m, 'authObjectType');
  if (typeRaw === null) throw bad('authObjectType', 'is required');
  const authObjectType = oneOf('authObjectType', typeRaw, AUTH_OBJECT_TYPES, 'USER');
  const idRaw = single(m, 'authObjectId');
  const authObjectId = idRaw === null ? null : int64('authObjectId', idRaw, { positive: true });
  const createdRaw = single(m, 'createdDate');
  const createdDate = createdRaw === null ? null : parseInstant('createdDate', createdRaw);
  const pageNo = intIn('pageNo', single(m, 'pageNo'), 1, 100000, 1);
  const pageSize = intIn('pageSize', single(m, 'pageSize'), 1, 2000, 10);
  const orderBy = oneOf('orderBy', single(m, 'orderBy'), ORDER_BY, 'id');
  const orderSort = oneOf('orderSort', single(m, 'orderSort'), ['ASC', 'DESC'] as const, 'ASC');
  const infoScope = oneOf('infoScope', single(m, 'infoScope'), ['BASIC', 'DETAIL'] as const, 'BASIC');

  const groups = new Map<number, { key?: string | null; op?: string | null; value?: string | null }>();
  for (const name of m.keys()) {
    if (!name.startsWith('filters')) continue;
    const fm = FILTER_PARAM.exec(name);
    if (!fm) throw bad(name.slice(0, 60), 'not a filter parameter: expected filters[i].key, filters[i].op or filters[i].value with i from 0 to 19');
    const i = Number(fm[1]);
    if (i >= MAX_FILTERS) throw bad(name, `the filter index must be between 0 and ${MAX_FILTERS - 1}`);
    const g = groups.get(i) ?? {};
    g[fm[2] as 'key' | 'op' | 'value'] = single(m, name);
    groups.set(i, g);
  }
  const filters: AuthFilter[] = [];
  for (const i of [...groups.keys()].sort((a, b) => a - b)) {
    const g = groups.get(i)!;
    const f = `filters[${i}]`;
    if (g.key == null) throw bad(`${f}.key`, 'is required');
    if (!Object.hasOwn(FILTER_KEYS, g.key)) throw bad(`${f}.key`, `${show(g.key)} is not one of ${Object.keys(FILTER_KEYS).join(', ')}`);
    const key = g.key as FilterKey;
    const type = FILTER_KEYS[key];
    if (g.op == null) throw bad(`${f}.op`, 'is required');
    if (!(FILTER_OPS as readonly string[]).includes(g.op)) throw bad(`${f}.op`, `${show(g.op)} is not one of ${FILTER_OPS.join(', ')}`);
    const op = g.op as FilterOp;
    if (!OPS_BY_TYPE[type].has(op)) throw bad(`${f}.op`, `${op} does not apply to ${key} (allowed: ${[...OPS_BY_TYPE[type]].join(', ')})`);
    filters.push({ index: i, key, type, op, values: filterValues(`${f}.value`, type, op, g.value ?? null) });
  }
  return { serviceId, authObjectType, authObjectId, createdDate, pageNo, pageSize, orderBy, orderSort, infoScope, filters };
}

// ---- SQL ----

export interface SqlQuery {
  text: string;
  values: (string | number)[];
}

/** Filter keys and order keys → SQL expressions over the FROM below. Fixed: never from input. */
const COLUMN: Record<FilterKey, string> = {
  id: 'a.id',
  authObjectId: 'a.auth_object_id',
  createdDate: 'a.created_at',
  updatedDate: 'a.updated_at',
  authObjectName: 'COALESCE(ou.username, od.name, orl.name, oa.name)',
  createdBy: 'cu.account',
  updatedBy: 'uu.account',
  permissions: 'a.perm_mask',
};
const CAST: Record<FilterType, string> = { int: 'bigint', time: 'timestamptz', text: 'text', set: 'integer' };
const CMP: Partial<Record<FilterOp, string>> = { EQUAL: '=', NOT_EQUAL: '<>', GREATER_THAN: '>', LESS_THAN: '<', GREATER_THAN_EQUAL: '>=', LESS_THAN_EQUAL: '<=' };

const FROM = `FROM authz_service_auth a
JOIN utilmeta_service s ON s.id = a.service_id
LEFT JOIN authz_user ou ON ou.id = a.user_id
LEFT JOIN authz_department od ON od.id = a.department_id
LEFT JOIN authz_role orl ON orl.id = a.role_id
LEFT JOIN authz_app oa ON oa.id = a.app_id
LEFT JOIN authz_user cu ON cu.id = a.created_by
LEFT JOIN authz_user uu ON uu.id = a.updated_by`;

const SELECT = `SELECT a.id, a.service_id, a.auth_object_type, a.auth_object_id, a.perm_mask, a.created_at, a.updated_at,
  s.name AS service_name, ${COLUMN.authObjectName} AS auth_object_name, cu.account AS created_by, uu.account AS updated_by`;

/** Escapes LIKE wildcards so MATCH is a plain substring test (used with ESCAPE '\'). */
const likeEscape = (v: string) => v.replace(/[\\%_]/g, (c) => '\\' + c);

/**
 * The page query and the count query for a parsed list query, for postgres.js
 * `sql.unsafe(text, values)`. The count ignores paging and ordering.
 */
export function buildAuthListSql(q: AuthListQuery): { list: SqlQuery; count: SqlQuery } {
  const values: (string | number)[] = [];
  const p = (v: string | number, cast: string) => {
    values.push(v);
    return `$${values.length}::${cast}`;
  };
  const where: string[] = [`a.service_id = ${p(q.serviceId, 'bigint')}`, `a.auth_object_type = ${p(q.authObjectType, 'text')}`];
  if (q.authObjectId !== null) where.push(`a.auth_object_id = ${p(q.authObjectId, 'bigint')}`);
  if (q.createdDate !== null) where.push(`a.created_at >= ${p(q.createdDate, 'timestamptz')}`);
  for (const f of q.filters) where.push(filterSql(f, p));
  const whereSql = `WHERE ${where.join('\n  AND ')}`;
  const countValues = [...values];
  const order = { id: 'a.id', createdDate: 'a.created_at', updatedDate: 'a.updated_at', authObjectId: 'a.auth_object_id' }[q.orderBy];
  const dir = q.orderSort === 'DESC' ? 'DESC' : 'ASC';
  // a.id breaks ties so pages never overlap or skip rows.
  const orderSql = order === 'a.id' ? `ORDER BY a.id ${dir}` : `ORDER BY ${order} ${dir}, a.id ${dir}`;
  const limit = p(q.pageSize, 'bigint');
  const offset = p((q.pageNo - 1) * q.pageSize, 'bigint');
  return {
    list: { text: `${SELECT}\n${FROM}\n${whereSql}\n${orderSql}\nLIMIT ${limit} OFFSET ${offset}`, values },
    count: { text: `SELECT count(*)::bigint AS total\n${FROM}\n${whereSql}`, values: countValues },
  };
}

function filterSql(f: AuthFilter, p: (v: string | number, cast: string) => string): string {
  const col = COLUMN[f.key];
  const cast = CAST[f.type];
  if (f.op === 'IS_NULL') return `${col} IS NULL`;
  if (f.op === 'IS_NOT_NULL') return `${col} IS NOT NULL`;
  if (f.type === 'set') {
    let mask = 0;
    for (const v of f.values) mask |= PERM[v as keyof typeof PERM];
    // EQUAL: holds this one; IN: holds any of them; NOT_IN: holds none of them.
    return `(${col} & ${p(mask, cast)}) ${f.op === 'NOT_IN' ? '=' : '<>'} 0`;
  }
  const cmp = CMP[f.op];
  if (cmp) {
    // NOT_EQUAL keeps rows whose value is NULL (a name that does not exist is "not equal").
    if (f.op === 'NOT_EQUAL') return `${col} IS DISTINCT FROM ${p(f.values[0], cast)}`;
    return `${col} ${cmp} ${p(f.values[0], cast)}`;
  }
  switch (f.op) {
    case 'IN':
      return `${col} IN (${f.values.map((v) => p(v, cast)).join(', ')})`;
    case 'NOT_IN':
      return `(${col} IS NULL OR ${col} NOT IN (${f.values.map((v) => p(v, cast)).join(', ')}))`;
    case 'MATCH':
      return `${col} ILIKE ${p('%' + likeEscape(f.values[0]) + '%', 'text')} ESCAPE '\\'`;
    case 'NOT_MATCH':
      return `(${col} IS NULL OR ${col} NOT ILIKE ${p('%' + likeEscape(f.values[0]) + '%', 'text')} ESCAPE '\\')`;
    case 'MATCH_END':
      return `${col} ILIKE ${p('%' + likeEscape(f.values[0]), 'text')} ESCAPE '\\'`;
    case 'NOT_MATCH_END':
      return `(${col} IS NULL OR ${col} NOT ILIKE ${p('%' + likeEscape(f.values[0]), 'text')} ESCAPE '\\')`;
  }
  // Unreachable for a parsed query: every (type, op) pair above is covered.
  throw invalid(`filters[${f.index}].op: ${f.op} does not apply to ${f.key}`, { code: 'PARAM_INVALID', field: `filters[${f.index}].op` });
}
