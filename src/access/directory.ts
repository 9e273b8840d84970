// The directory (orgs, users, departments, roles, projects) as data for the
// HTTP layer: a route table, a matcher, and one entry point that parses an
// operation's input, checks the caller's management permission and runs it.
// Results are already in the wire shape; the HTTP layer wraps them in
// `{code: 200, message: "success", data}` and renders DomainErrors.
import { DomainError } from '../core/errors.ts';
import { mapDbError } from './store.ts';
import { canManageDirectory, canManageProjects, dirError, type DirectoryCaller, type DirectoryDeps } from './directory-common.ts';
import {
  parseBody, parseDeptRef, parseOrgId, parseProjectId, parseQuery, parseRoleId, parseUserRef, type RawQuery,
} from './directory-input.ts';
import { addOrgUsers, createOrg, listOrgs, listOrgUsers, removeOrgUser } from './directory-orgs.ts';
import { bindSso, createUsers, deleteUser, patchUser, searchUsers } from './directory-users.ts';
import {
  addDepartmentUsers, createDepartment, deleteDepartment, getRootDepartment, listDepartmentUsers, listUserDepartments,
  patchDepartment, removeDepartmentUsers, searchDepartments,
} from './directory-depts.ts';
import { addRoleSubjects, createRole, listRoles, listUserRoles, patchRole, removeRoleSubject } from './directory-roles.ts';
import { createProject, deleteProject, getProject, listProjects, patchProject } from './directory-projects.ts';

export type { DirectoryCaller, DirectoryDeps } from './directory-common.ts';

/** Where the directory is mounted (kept from its original API). */
export const DIRECTORY_PREFIX = '/minibase/portal/openapi/v1';

export type DirectoryNeed = 'read' | 'directory_manage' | 'project_manage';
export type DirectoryMethod = 'GET' | 'POST' | 'PATCH' | 'DELETE';

export interface DirectoryRoute {
  method: DirectoryMethod;
  /** Relative to DIRECTORY_PREFIX; `{name}` is one path segment. */
  path: string;
  op: DirectoryOp;
  /** read: any authenticated user; directory_manage: that permission or a superuser; project_manage: either permission or a superuser. */
  needs: DirectoryNeed;
}

export type DirectoryOp =
  | 'listOrgs' | 'createOrg' | 'listOrgUsers' | 'addOrgUsers' | 'removeOrgUser'
  | 'searchUsers' | 'createUsers' | 'patchUser' | 'deleteUser' | 'bindSso'
  | 'createRole' | 'listRoles' | 'patchRole' | 'addRoleSubjects' | 'removeRoleSubject' | 'listOrgUserRoles' | 'listUserRoles'
  | 'getRootDepartment' | 'searchDepartments' | 'listDepartmentUsers' | 'createDepartment' | 'patchDepartment'
  | 'addDepartmentUsers' | 'removeDepartmentUsers' | 'deleteDepartment' | 'listUserDepartments'
  | 'createProject' | 'patchProject' | 'getProject' | 'listOrgProjects' | 'listProjects' | 'deleteProject'
  | 'notImplemented';

const r = (method: DirectoryMethod, path: string, op: DirectoryOp, needs: DirectoryNeed): DirectoryRoute => ({ method, path, op, needs });

/** Every path of the directory API. Literal segments are listed before parameters where both could match. */
export const DIRECTORY_ROUTES: readonly DirectoryRoute[] = Object.freeze([
  r('GET', '/orgs', 'listOrgs', 'read'),
  r('POST', '/orgs', 'createOrg', 'directory_manage'),
  r('GET', '/orgs/{org_id}/users', 'listOrgUsers', 'read'),
  r('POST', '/orgs/{org_id}/users', 'addOrgUsers', 'directory_manage'),
  r('DELETE', '/orgs/{org_id}/users/{user_id}', 'removeOrgUser', 'directory_manage'),
  r('GET', '/orgs/{org_id}/users/{user_id}/roles', 'listOrgUserRoles', 'read'),
  r('GET', '/orgs/{org_id}/users/{user_id}/departments', 'listUserDepartments', 'read'),
  r('GET', '/users', 'searchUsers', 'read'),
  r('POST', '/users', 'createUsers', 'directory_manage'),
  r('POST', '/users/sso', 'bindSso', 'directory_manage'),
  r('PATCH', '/users/{user_id}', 'patchUser', 'directory_manage'),
  r('DELETE', '/users/{user_id}', 'deleteUser', 'directory_manage'),
  r('GET', '/users/{user_id}/roles', 'listUserRoles', 'read'),
  r('GET', '/users/{user_id}/extra/{product}', 'notImplemented', 'read'),
  r('PATCH', '/users/{user_id}/extra/{product}', 'notImplemented', 'directory_manage'),
  r('DELETE', '/users/{user_id}/extra/{product}', 'notImplemented', 'directory_manage'),
  r('POST', '/orgs/{org_id}/roles', 'createRole', 'directory_manage'),
  r('GET', '/orgs/{org_id}/roles', 'listRoles', 'read'),
  r('PATCH', '/orgs/{org_id}/roles/{role_id}', 'patchRole', 'directory_manage'),
  r('POST', '/orgs/{org_id}/roles/{role_id}/subjects', 'addRoleSubjects', 'directory_manage'),
  r('DELETE', '/orgs/{org_id}/roles/{role_id}/subjects/users/{user_id}', 'removeRoleSubject', 'directory_manage'),
  r('GET', '/orgs/{org_id}/departments/root', 'getRootDepartment', 'read'),
  r('GET', '/orgs/{org_id}/departments', 'searchDepartments', 'read'),
  r('POST', '/orgs/{org_id}/departments', 'createDepartment', 'directory_manage'),
  r('GET', '/orgs/{org_id}/departments/{department_id}/users', 'listDepartmentUsers', 'read'),
  r('POST', '/orgs/{org_id}/departments/{department_id}/users', 'addDepartmentUsers', 'directory_manage'),
  r('DELETE', '/orgs/{org_id}/departments/{department_id}/users', 'removeDepartmentUsers', 'directory_manage'),
  r('PATCH', '/orgs/{org_id}/departments/{department_id}', 'patchDepartment', 'directory_manage'),
  r('DELETE', '/orgs/{org_id}/departments/{department_id}', 'deleteDepartment', 'directory_manage'),
  r('POST', '/orgs/{org_id}/projects', 'createProject', 'project_manage'),
  r('GET', '/orgs/{org_id}/projects', 'listOrgProjects', 'read'),
  r('DELETE', '/orgs/{org_id}/projects/{project_id}', 'deleteProject', 'project_manage'),
  r('GET', '/projects', 'listProjects', 'read'),
  r('GET', '/projects/{project_id}', 'getProject', 'read'),
  r('PATCH', '/projects/{project_id}', 'patchProject', 'project_manage'),
]);

export interface RouteMatch {
  route: DirectoryRoute;
  params: Record<string, string>;
}

/**
 * Finds the route for a method and a path relative to DIRECTORY_PREFIX
 * (segments already percent-decoded, or raw: both work for ids and accounts).
 * Returns null for an unknown path, and `{allowed}` when only the method is wrong.
 */
export function matchDirectoryRoute(method: string, path: string): RouteMatch | { allowed: DirectoryMethod[] } | null {
  const segs = path.replace(/\/+$/, '').split('/').slice(1);
  const allowed: DirectoryMethod[] = [];
  let best: RouteMatch | null = null;
  let bestLiterals = -1;
  for (const route of DIRECTORY_ROUTES) {
    const tpl = route.path.split('/').slice(1);
    if (tpl.length !== segs.length) continue;
    const params: Record<string, string> = {};
    let literals = 0;
    let ok = true;
    for (let i = 0; i < tpl.length && ok; i++) {
      const t = tpl[i]!;
      const s = segs[i]!;
      if (t.startsWith('{')) {
        if (s === '') ok = false;
        else params[t.slice(1, -1)] = safeDecode(s);
      } else if (t === s) literals++;
      else ok = false;
    }
    if (!ok) continue;
    if (route.method !== method.toUpperCase()) {
      allowed.push(route.method);
      continue;
    }
    // A literal segment beats a parameter (`/users/sso` over `/users/{user_id}`).
    if (literals > bestLiterals) {
      best = { route, params };
      bestLiterals = literals;
    }
  }
  if (best) return best;
  return allowed.length ? { allowed: [...new Set(allowed)] } : null;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export interface DirectoryRequest {
  params?: Record<string, string | undefined>;
  query?: RawQuery;
  /** The parsed JSON body (undefined when there is none). */
  body?: unknown;
}

/** May this caller run a route with this need? */
export function allows(caller: DirectoryCaller, needs: DirectoryNeed): boolean {
  if (needs === 'read') return true;
  return needs === 'directory_manage' ? canManageDirectory(caller) : canManageProjects(caller);
}

/** An operation: how to read its input from a request, and what to run with it. */
interface OpDef {
  parse(req: DirectoryRequest): unknown[];
  run(deps: DirectoryDeps, caller: DirectoryCaller, args: unknown[]): Promise<unknown>;
}
function def<A extends unknown[]>(run: (deps: DirectoryDeps, caller: DirectoryCaller, ...args: A) => Promise<unknown>, parse: (p: Record<string, string | undefined>, q: RawQuery | undefined, b: unknown) => [...A]): OpDef {
  return { parse: (req) => parse(req.params ?? {}, req.query, req.body), run: (deps, caller, args) => run(deps, caller, ...(args as A)) };
}

const OPS: Record<Exclude<DirectoryOp, 'notImplemented'>, OpDef> = {
  listOrgs: def(listOrgs, () => []),
  createOrg: def(createOrg, (_p, _q, b) => [parseBody('createOrg', b)]),
  listOrgUsers: def(listOrgUsers, (p, q) => [parseOrgId(p.org_id), parseQuery('paging', q)]),
  addOrgUsers: def(addOrgUsers, (p, _q, b) => [parseOrgId(p.org_id), parseBody('addOrgUsers', b)]),
  removeOrgUser: def(removeOrgUser, (p) => [parseOrgId(p.org_id), parseUserRef(p.user_id)]),
  searchUsers: def(searchUsers, (_p, q) => [parseQuery('userSearch', q)]),
  createUsers: def(createUsers, (_p, _q, b) => [parseBody('createUsers', b)]),
  patchUser: def(patchUser, (p, _q, b) => [parseUserRef(p.user_id), parseBody('patchUser', b)]),
  deleteUser: def(deleteUser, (p, q) => [parseUserRef(p.user_id), parseQuery('userDelete', q)]),
  bindSso: def(bindSso, (_p, _q, b) => [parseBody('bindSso', b).users]),
  createRole: def(createRole, (p, _q, b) => [parseOrgId(p.org_id), parseBody('createRole', b)]),
  listRoles: def(listRoles, (p, q) => [parseOrgId(p.org_id), parseQuery('roleList', q)]),
  patchRole: def(patchRole, (p, _q, b) => [parseOrgId(p.org_id), parseRoleId(p.role_id), parseBody('patchRole', b)]),
  addRoleSubjects: def(addRoleSubjects, (p, _q, b) => [parseOrgId(p.org_id), parseRoleId(p.role_id), parseBody('addRoleSubjects', b).subjects]),
  removeRoleSubject: def(removeRoleSubject, (p) => [parseOrgId(p.org_id), parseRoleId(p.role_id), parseUserRef(p.user_id)]),
  listOrgUserRoles: def(listUserRoles, (p, q) => [parseOrgId(p.org_id), parseUserRef(p.user_id), parseQuery('roleView', q)]),
  listUserRoles: def(listUserRoles, (p, q) => [null, parseUserRef(p.user_id), parseQuery('roleView', q)]),
  getRootDepartment: def(getRootDepartment, (p, q) => [parseOrgId(p.org_id), parseQuery('deptView', q)]),
  searchDepartments: def(searchDepartments, (p, q) => [parseOrgId(p.org_id), parseQuery('deptSearch', q)]),
  listDepartmentUsers: def(listDepartmentUsers, (p, q) => [parseOrgId(p.org_id), parseDeptRef(p.department_id), parseQuery('deptUsers', q)]),
  createDepartment: def(createDepartment, (p, _q, b) => [parseOrgId(p.org_id), parseBody('createDepartment', b)]),
  patchDepartment: def(patchDepartment, (p, _q, b) => [parseOrgId(p.org_id), parseDeptRef(p.department_id), parseBody('patchDepartment', b)]),
  addDepartmentUsers: def(addDepartmentUsers, (p, _q, b) => [parseOrgId(p.org_id), parseDeptRef(p.department_id), parseBody('departmentUsers', b)]),
  removeDepartmentUsers: def(removeDepartmentUsers, (p, _q, b) => [parseOrgId(p.org_id), parseDeptRef(p.department_id), parseBody('departmentUsers', b)]),
  deleteDepartment: def(deleteDepartment, (p) => [parseOrgId(p.org_id), parseDeptRef(p.department_id)]),
  listUserDepartments: def(listUserDepartments, (p) => [parseOrgId(p.org_id), parseUserRef(p.user_id)]),
  createProject: def(createProject, (p, _q, b) => [parseOrgId(p.org_id), parseBody('createProject', b)]),
  patchProject: def(patchProject, (p, _q, b) => [parseProjectId(p.project_id), parseBody('patchProject', b)]),
  getProject: def(getProject, (p) => [parseProjectId(p.project_id)]),
  listOrgProjects: def(listProjects, (p) => [parseOrgId(p.org_id)]),
  listProjects: def(listProjects, () => [null]),
  deleteProject: def(deleteProject, (p) => [parseOrgId(p.org_id), parseProjectId(p.project_id)]),
};

const notImplemented = () => new DomainError('not_implemented', 'per-product user profiles are not implemented', { code: 'NOT_IMPLEMENTED' });

/**
 * Parses and validates an operation's path parameters, query and JSON body
 * without running it. Returns the domain function's arguments; throws
 * PARAM_INVALID naming the field.
 */
export function parseDirectoryInput(op: DirectoryOp, req: DirectoryRequest): unknown[] {
  if (op === 'notImplemented') throw notImplemented();
  return OPS[op].parse(req);
}

/**
 * Runs one directory operation: permission check, input parsing, the domain
 * call. Returns the `data` of the success envelope; throws DomainErrors whose
 * `code` is the envelope's `message`.
 */
export async function runDirectoryOp(deps: DirectoryDeps, caller: DirectoryCaller, route: Pick<DirectoryRoute, 'op' | 'needs'>, req: DirectoryRequest): Promise<unknown> {
  if (route.op === 'notImplemented') throw notImplemented();
  if (!allows(caller, route.needs)) {
    const what = route.needs === 'project_manage' ? 'project_manage or directory_manage' : 'directory_manage';
    throw dirError('forbidden', 'FORBIDDEN', `this operation needs ${what} (or a superuser)`);
  }
  const op = OPS[route.op];
  const args = op.parse(req);
  try {
    return await op.run(deps, caller, args);
  } catch (err) {
    throw mapDbError(err);
  }
}

export * from './directory-orgs.ts';
export * from './directory-users.ts';
export * from './directory-depts.ts';
export * from './directory-roles.ts';
export * from './directory-projects.ts';
export { parseBody, parseQuery, parseUserRef, parseDeptRef, parseOrgId } from './directory-input.ts';
