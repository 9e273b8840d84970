// Input parsing for the directory operations: path parameters, query strings
// and JSON bodies, each checked against the directory API's types. Any failure is a
// PARAM_INVALID DomainError naming the field (e.g. `users[1].password`).
import { z } from 'zod';
import { dirError, type DeptRef, type UserRef } from './directory-common.ts';
import { SSO_TYPES } from './directory-users.ts';
import { MANAGEMENT_PERMISSIONS } from './directory-roles.ts';

/** Renders a zod issue path the way clients write it: `users[1].password`. */
function fieldPath(path: readonly PropertyKey[], prefix: string): string {
  let out = prefix;
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || prefix;
}

function parseWith<T>(schema: z.ZodType<T>, value: unknown, where: string): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = fieldPath(issue.path, where === 'body' ? '' : where) || 'body';
  throw dirError('invalid', 'PARAM_INVALID', `${field}: ${issue.message}`, { field });
}

// ---------------------------------------------------------------- primitives

const id = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const account = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/, 'letters, digits and . _ @ - (1-64, starting with a letter or digit)');
const name100 = z.string().trim().min(1).max(100);
const password = z.string().min(8, 'at least 8 characters').max(1024);
const object = z.record(z.string(), z.unknown());
const day = z.iso.date('a date as YYYY-MM-DD');

const qBool = z.stringbool({ truthy: ['1', 'true'], falsy: ['0', 'false'] });
const qId = z.string().regex(/^\d{1,15}$/, 'a positive integer').transform(Number).pipe(id);
const qIdList = z
  .string()
  .transform((s) => s.split(',').map((x) => x.trim()).filter((x) => x !== ''))
  .pipe(z.array(z.string().regex(/^\d{1,15}$/, 'comma-separated positive integers').transform(Number).pipe(id)).max(1000));
const qStrList = z.string().transform((s) => s.split(',').map((x) => x.trim()).filter((x) => x !== '')).pipe(z.array(z.string().max(100)).max(1000));
const qPage = z.string().regex(/^\d{1,6}$/, 'an integer from 1 to 100000').transform(Number).pipe(z.number().int().min(1).max(100_000));
const qPageSize = z.string().regex(/^\d{1,4}$/, 'an integer from 1 to 1000').transform(Number).pipe(z.number().int().min(1).max(1000));
const paging = { page: qPage.optional(), page_size: qPageSize.optional() };

// ---------------------------------------------------------------- path parameters

export function parseOrgId(v: string | undefined, field = 'org_id'): number {
  return parseWith(qId, v ?? '', field);
}
export const parseRoleId = (v: string | undefined) => parseOrgId(v, 'role_id');
export const parseProjectId = (v: string | undefined) => parseOrgId(v, 'project_id');

/** `{user_id}`: a numeric id or `account_<account>`. */
export function parseUserRef(v: string | undefined, field = 'user_id'): UserRef {
  const s = v ?? '';
  if (s.startsWith('account_')) return { account: parseWith(account, s.slice('account_'.length), field) };
  return { id: parseWith(qId, s, field) };
}

/** `{department_id}`: a numeric id or `origin_id_<origin_id>`. */
export function parseDeptRef(v: string | undefined, field = 'department_id'): DeptRef {
  const s = v ?? '';
  if (s.startsWith('origin_id_')) return { originId: parseWith(z.string().min(1).max(100), s.slice('origin_id_'.length), field) };
  return { id: parseWith(qId, s, field) };
}

// ---------------------------------------------------------------- queries

export type RawQuery = URLSearchParams | Record<string, string | string[] | undefined>;

/** Flattens a query to one string per name (the last one wins, as in most frameworks). */
export function flattenQuery(q: RawQuery | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!q) return out;
  if (q instanceof URLSearchParams) {
    for (const [k, v] of q) out[k] = v;
    return out;
  }
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined) continue;
    out[k] = Array.isArray(v) ? v[v.length - 1] ?? '' : v;
  }
  return out;
}

export const querySchemas = {
  paging: z.object(paging),
  userSearch: z.object({
    fuzzy: qBool.optional(),
    user_ids: qIdList.optional(),
    account: z.string().max(64).optional(),
    username: z.string().max(100).optional(),
    is_superuser: qBool.optional(),
    product: z.string().optional(),
    sso_type: z.enum(SSO_TYPES).optional(),
    sso_user_id: z.string().max(200).optional(),
    with_sso: qBool.optional(),
    with_custom_property: qBool.optional(),
    ...paging,
  }),
  userDelete: z
    .object({ handover_user_id: qId.optional(), handover_user_account: account.optional() })
    .refine((v) => v.handover_user_id === undefined || v.handover_user_account === undefined, {
      message: 'give handover_user_id or handover_user_account, not both',
      path: ['handover_user_account'],
    }),
  deptView: z.object({
    with_children: qBool.optional(),
    recursively: qBool.optional(),
    with_users: qBool.optional(),
    with_perms: qBool.optional(),
    with_roles: qBool.optional(),
  }),
  deptSearch: z.object({
    with_children: qBool.optional(),
    recursively: qBool.optional(),
    with_users: qBool.optional(),
    with_perms: qBool.optional(),
    with_roles: qBool.optional(),
    q: z.string().max(100).optional(),
    department_ids: qIdList.optional(),
    origin_ids: qStrList.optional(),
  }),
  deptUsers: z.object({ with_children: qBool.optional(), with_departments: qBool.optional(), q: z.string().max(100).optional(), ...paging }),
  roleList: z.object({ include_subjects: qBool.optional(), with_perms: qBool.optional(), role_ids: qIdList.optional() }),
  roleView: z.object({ include_subjects: qBool.optional(), with_perms: qBool.optional() }),
  none: z.object({}),
};

export function parseQuery<K extends keyof typeof querySchemas>(kind: K, q: RawQuery | undefined): z.output<(typeof querySchemas)[K]> {
  return parseWith(querySchemas[kind] as unknown as z.ZodType<z.output<(typeof querySchemas)[K]>>, flattenQuery(q), '');
}

// ---------------------------------------------------------------- bodies

const subject = z
  .object({ type: z.enum(['user', 'user_group']), id: id.optional(), account: account.optional() })
  .refine((s) => s.type === 'user_group' || s.id !== undefined || s.account !== undefined, { message: 'give id or account', path: ['id'] });

const roleFields = {
  name: name100,
  description: z.string().max(500).optional(),
  is_all_projects: z.boolean().optional(),
  management_permissions: z.array(z.enum(MANAGEMENT_PERMISSIONS)).max(10).transform((a) => [...new Set(a)]).optional(),
  product_names: z.array(z.string().max(100)).max(100).optional(),
  project_ids: z.array(id).max(1000).optional(),
  child_ids: z.array(id).max(1000).optional(),
  subjects: z.array(subject).max(10_000).optional(),
};

const userSet = z
  .object({ accounts: z.array(account).max(10_000).optional(), ids: z.array(id).max(10_000).optional() })
  .refine((b) => (b.accounts?.length ?? 0) + (b.ids?.length ?? 0) > 0, { message: 'give accounts or ids', path: ['ids'] });

const projectFields = {
  name: z.string().trim().min(1).max(50),
  description: z.string().max(200).optional(),
  extra: object.optional(),
  product: z.string().min(1).max(20).optional(),
  is_permanent: z.boolean(),
  started_at: day.nullable().optional(),
  expired_at: day.nullable().optional(),
  is_classified: z.boolean().optional(),
};

export const bodySchemas = {
  createOrg: z.object({ name: name100 }),
  addOrgUsers: z
    .object({ user_ids: z.array(id).min(1).max(10_000).optional(), accounts: z.array(account).min(1).max(10_000).optional() })
    .refine((b) => !(b.user_ids && b.accounts), { message: 'give user_ids or accounts, not both', path: ['accounts'] })
    .refine((b) => b.user_ids || b.accounts, { message: 'give user_ids or accounts', path: ['user_ids'] }),
  createUsers: z
    .array(
      z.object({
        account,
        username: name100,
        password,
        email: z.string().max(254).nullable().optional(),
        mobile_number: z.string().max(32).nullable().optional(),
        status: z.union([z.literal(0), z.literal(1)]).optional(),
        custom_property: object.optional(),
      }),
    )
    .min(1)
    .max(1000),
  patchUser: z.object({
    username: name100.optional(),
    email: z.string().max(254).nullable().optional(),
    password: password.optional(),
    mobile_number: z.string().max(32).nullable().optional(),
    status: z.union([z.literal(0), z.literal(1)]).optional(),
    custom_property: object.optional(),
    cp_action_type: z.enum(['add', 'overwrite']).optional(),
  }),
  bindSso: z.object({
    users: z
      .array(
        z
          .object({ user_id: id.optional(), account: account.optional(), sso_type: z.enum(SSO_TYPES), sso_user_id: z.string().min(1).max(200) })
          .refine((u) => (u.user_id === undefined) !== (u.account === undefined), { message: 'give user_id or account (one of them)', path: ['user_id'] }),
      )
      .min(1)
      .max(1000),
  }),
  createRole: z.object(roleFields),
  patchRole: z.object({ ...roleFields, name: name100.optional() }),
  addRoleSubjects: z.object({ subjects: z.array(subject).min(1).max(10_000) }),
  createDepartment: z.object({
    name: name100,
    origin_id: z.string().trim().min(1).max(100).optional(),
    perm_inherit: z.enum(['to_super', 'to_children']).optional(),
    super_id: id.nullable().optional(),
    order: z.number().int().min(-2147483648).max(2147483647).optional(),
  }),
  patchDepartment: z.object({
    name: name100.optional(),
    perm_inherit: z.enum(['to_super', 'to_children']).optional(),
    super_id: id.nullable().optional(),
    order: z.number().int().min(-2147483648).max(2147483647).optional(),
  }),
  departmentUsers: userSet,
  createProject: z.object(projectFields),
  patchProject: z.object({ ...projectFields, name: projectFields.name.optional(), is_permanent: z.boolean().optional() }),
};

export function parseBody<K extends keyof typeof bodySchemas>(kind: K, body: unknown): z.output<(typeof bodySchemas)[K]> {
  if (body === undefined || body === null) {
    throw dirError('invalid', 'PARAM_INVALID', 'body: a JSON body is required', { field: 'body' });
  }
  return parseWith(bodySchemas[kind] as unknown as z.ZodType<z.output<(typeof bodySchemas)[K]>>, body, 'body');
}
