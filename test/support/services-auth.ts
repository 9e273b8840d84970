// Shared setup for the per-service authorization tests: a node with the access
// plane bootstrapped (admin, token, key), a registered service with an OpenAPI
// document, and a small directory (users, a role with a child role, a
// department under the root) made with direct SQL and picked up by a reload.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import type { ListenerKind } from '../../src/http/types.ts';
import { authzBootstrap, type BootstrapResult } from '../../src/access/cli.ts';
import { effectiveMasterKeys } from '../../src/access/index.ts';
import { CLI_CALLER } from '../../src/access/credentials.ts';
import { startTestNode, type TestDatabases, type TestNode } from './env.ts';
import { insertInstanceResource, registrationBody } from './ops.ts';
import { insertUser } from './authz.ts';
import { call, type Reply } from './http.ts';

export const MASTER = `k1:${randomBytes(32).toString('base64')}`;

export const OPENAPI = {
  openapi: '3.0.0',
  servers: [{ url: '/api' }],
  paths: {
    '/items': { get: { operationId: 'items_list', summary: 'list items' }, post: { operationId: 'items_create' } },
    '/items/{id}': { get: { operationId: 'items_get' }, put: {}, delete: {} },
    '/items/export': { get: { operationId: 'items_export' } },
    '/stream': { get: {} },
  },
};

export async function registerService(node: TestNode, name: string, address: string, opts: { resources?: unknown; production?: boolean; instanceId?: string } = {}): Promise<{ serviceId: number; instance: Record<string, unknown>; resourceId: string }> {
  const res = opts.instanceId ? { id: opts.instanceId } : await insertInstanceResource(node.db.ops, { service: name, address });
  const body = { ...registrationBody({ name, address, instanceId: res.id, resources: opts.resources }), production: opts.production ?? false };
  const r = await request(`${node.origin}/api/registry`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json = (await r.body.json()) as Record<string, unknown>;
  assert.equal(r.statusCode, 200, JSON.stringify(json));
  const [row] = await node.db.registry<{ id: string }[]>`SELECT id::text FROM utilmeta_service WHERE name = ${name}`;
  return { serviceId: Number(row!.id), instance: json, resourceId: String(res.id) };
}

export interface World {
  boot: BootstrapResult;
  orgId: string;
  users: Record<'alice' | 'bob' | 'carol' | 'dave' | 'erin', { id: string; token: string }>;
  /** role `team` has child role `sub`; bob is a subject of `team`. */
  roles: { team: string; sub: string };
  /** `child` (dave's) under the root, inheriting to_super. */
  depts: { root: string; child: string };
}

/** Users alice (GRANT holder), bob (in role team), carol (SHARE), dave (in dept child), erin (nothing). */
export async function buildWorld(node: TestNode): Promise<World> {
  const boot = await authzBootstrap(node.access.store, effectiveMasterKeys(node.config), { account: 'admin' });
  const sql = node.db.registry;
  const orgId = String(boot.orgId);
  const ids: Record<string, string> = {};
  for (const a of ['alice', 'bob', 'carol', 'dave', 'erin']) {
    ids[a] = await insertUser(sql, a);
    await sql`INSERT INTO authz_org_user (org_id, user_id) VALUES (${orgId}, ${ids[a]!})`;
  }
  const [team] = await sql<{ id: string }[]>`INSERT INTO authz_role (org_id, name) VALUES (${orgId}, 'team') RETURNING id::text`;
  const [sub] = await sql<{ id: string }[]>`INSERT INTO authz_role (org_id, name) VALUES (${orgId}, 'sub') RETURNING id::text`;
  await sql`INSERT INTO authz_role_child (org_id, role_id, child_id) VALUES (${orgId}, ${team!.id}, ${sub!.id})`;
  await sql`INSERT INTO authz_role_user (org_id, role_id, user_id) VALUES (${orgId}, ${team!.id}, ${ids.bob!})`;
  const root = String(boot.departmentId);
  const [child] = await sql<{ id: string }[]>`INSERT INTO authz_department (org_id, super_id, name, perm_inherit) VALUES (${orgId}, ${root}, 'child', 'to_super') RETURNING id::text`;
  await sql`INSERT INTO authz_department_user (org_id, department_id, user_id) VALUES (${orgId}, ${child!.id}, ${ids.dave!})`;
  const users = {} as World['users'];
  for (const a of Object.keys(ids) as Array<keyof World['users']>) {
    const t = await node.access.credentials.createPersonalToken(CLI_CALLER, Number(ids[a]), { name: 't', expiresInDays: 2 });
    users[a] = { id: ids[a]!, token: t.token };
  }
  await node.access.view.view.refresh();
  return { boot, orgId, users, roles: { team: team!.id, sub: sub!.id }, depts: { root, child: child!.id } };
}

export function v1(node: TestNode, token: string | null, method: string, path: string, body?: unknown): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  return call(`${node.origin}/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

export async function startAuthzNode(server: ListenerKind, dbs: TestDatabases, env: Record<string, string> = {}): Promise<TestNode> {
  return startTestNode(server, dbs, { UTILMETA_PROXY_AUTHZ_MASTER_KEYS: MASTER, ...env });
}
