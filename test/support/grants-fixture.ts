// A small world for the app-grant tests: users with tokens, two projects, a
// service with APIs whose authorization is on, a reviewer holding GRANT. Every
// authz row goes in through the write protocol with its event, as the seed-001
// API would write them.
import { request } from 'undici';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AuthzStore, Credentials } from '../../src/access/index.ts';
import { apiIdOf, routeKeyOf } from '../../src/access/catalog.ts';
import { CLI_CALLER } from '../../src/access/credentials.ts';
import { authzBootstrap } from '../../src/access/cli.ts';
import { PERM } from '../../src/access/permissions.ts';
import type { TestNode } from './env.ts';

export interface UserInfo { id: string; account: string; token: string }

export interface World {
  admin: UserInfo;
  alice: UserInfo; // app owner
  bob: UserInfo; // reviewer (GRANT on the service)
  carol: UserInfo; // second reviewer
  dave: UserInfo; // nobody special
  orgId: string;
  projectId: string;
  project2Id: string;
  expiredProjectId: string;
  serviceId: string;
  serviceName: string;
  apis: Record<string, string>;
}

const CLI = { type: 'CLI' as const, credential: 'cli' };

export async function addUser(store: AuthzStore, creds: Credentials, orgId: string, account: string): Promise<UserInfo> {
  const { result: id } = await store.write(CLI, async (tx) => {
    const [u] = await tx.sql<{ id: string }[]>`INSERT INTO authz_user (account, username) VALUES (${account}, ${account}) RETURNING id`;
    await tx.sql`INSERT INTO authz_org_user (org_id, user_id) VALUES (${orgId}, ${u!.id})`;
    tx.event({ action: 'user.create', targetType: 'user', targetId: u!.id, effect: { user_id: Number(u!.id) } });
    tx.event({ action: 'org.user.add', targetType: 'user', targetId: u!.id, effect: { user_id: Number(u!.id), org_id: Number(orgId) } });
    return u!.id;
  });
  const t = await creds.createPersonalToken(CLI_CALLER, id, { expiresInDays: 2 });
  return { id, account, token: t.token };
}

export async function addProject(store: AuthzStore, orgId: string, name: string, validity: 'permanent' | 'expired' = 'permanent'): Promise<string> {
  const { result } = await store.write(CLI, async (tx) => {
    const [p] = validity === 'permanent'
      ? await tx.sql<{ id: string }[]>`INSERT INTO authz_project (org_id, name, resource_key, is_permanent) VALUES (${orgId}, ${name}, ${'rk-' + name}, true) RETURNING id`
      : await tx.sql<{ id: string }[]>`INSERT INTO authz_project (org_id, name, resource_key, is_permanent, started_at, expired_at) VALUES (${orgId}, ${name}, ${'rk-' + name}, false, '2020-01-01', '2020-12-31') RETURNING id`;
    tx.event({ action: 'project.create', targetType: 'project', targetId: p!.id, effect: { project_id: Number(p!.id) } });
    return p!.id;
  });
  return result;
}

/** The service's authorization on (ENFORCE, per-API grants). */
export async function enableService(store: AuthzStore, serviceId: string): Promise<void> {
  await store.write(CLI, async (tx) => {
    await tx.sql`INSERT INTO authz_service (service_id, auth_mode, apis_auth_enabled) VALUES (${serviceId}, 'ENFORCE', true)
      ON CONFLICT (service_id) DO UPDATE SET auth_mode = 'ENFORCE', apis_auth_enabled = true`;
    tx.event({ action: 'service.auth.mode', targetType: 'service', targetId: serviceId, serviceId, effect: { service_id: Number(serviceId), mode: 'ENFORCE' } });
    tx.event({ action: 'service.apis.auth', targetType: 'service', targetId: serviceId, serviceId, effect: { service_id: Number(serviceId), apis_auth_enabled: true } });
  });
}

export async function addApi(store: AuthzStore, serviceId: string, method: string, template: string, extra: { authEnabled?: boolean; deprecated?: boolean } = {}): Promise<string> {
  const routeKey = routeKeyOf(template);
  const apiId = apiIdOf(serviceId, method, routeKey);
  await store.write(CLI, async (tx) => {
    await tx.sql`INSERT INTO authz_api (api_id, service_id, method, path_template, route_key, source, auth_enabled, deprecated_at)
      VALUES (${apiId}, ${serviceId}, ${method}, ${template}, ${routeKey}, 'manual', ${extra.authEnabled ?? true}, ${extra.deprecated ? new Date() : null})`;
    tx.event({ action: 'api.upsert', targetType: 'api', targetId: apiId, serviceId, effect: { api_id: apiId } });
  });
  return apiId;
}

export async function grantPermission(store: AuthzStore, serviceId: string, userId: string, mask: number): Promise<void> {
  await store.write(CLI, async (tx) => {
    const [a] = await tx.sql<{ id: string }[]>`INSERT INTO authz_service_auth (service_id, auth_object_type, user_id, perm_mask) VALUES (${serviceId}, 'USER', ${userId}, ${mask}) RETURNING id`;
    tx.event({ action: 'auth.add', targetType: 'auth', targetId: a!.id, serviceId, effect: { auth_id: Number(a!.id), service_id: Number(serviceId) } });
  });
}

/** Waits until the node's view has applied everything committed. */
export async function settle(nodes: TestNode[]): Promise<void> {
  const [{ seq }] = await nodes[0]!.db.registry<{ seq: string }[]>`SELECT seq FROM authz_state`;
  const target = Number(seq);
  const deadline = Date.now() + 10_000;
  for (const n of nodes) {
    while (n.access.view.current.seq < target) {
      if (Date.now() > deadline) throw new Error(`view stuck at ${n.access.view.current.seq} < ${target}`);
      await sleep(5);
    }
  }
}

export async function seq(node: TestNode): Promise<number> {
  const [{ seq }] = await node.db.registry<{ seq: string }[]>`SELECT seq FROM authz_state`;
  return Number(seq);
}

/** Builds the world on `node`'s database; `serviceId` is an existing utilmeta_service row (or one is made). */
export async function seedWorld(node: TestNode, opts: { serviceId?: string; serviceName?: string; templates?: Array<[string, string]> } = {}): Promise<World> {
  const { store, credentials } = node.access;
  const boot = await authzBootstrap(store, null, { account: 'root' });
  const orgId = String(boot.orgId);
  const admin: UserInfo = { id: String(boot.userId), account: 'root', token: boot.token };
  const [alice, bob, carol, dave] = [
    await addUser(store, credentials, orgId, 'alice'),
    await addUser(store, credentials, orgId, 'bob'),
    await addUser(store, credentials, orgId, 'carol'),
    await addUser(store, credentials, orgId, 'dave'),
  ];
  const projectId = await addProject(store, orgId, 'p1');
  const project2Id = await addProject(store, orgId, 'p2');
  const expiredProjectId = await addProject(store, orgId, 'old', 'expired');
  // Alice may create apps in p1, p2 and the expired project: she created them.
  await node.db.registry`UPDATE authz_project SET creator_id = ${alice.id}`;
  let serviceId = opts.serviceId;
  const serviceName = opts.serviceName ?? 'orders';
  if (!serviceId) {
    const [s] = await node.db.registry<{ id: string }[]>`INSERT INTO utilmeta_service (name, public, created_time, data) VALUES (${serviceName}, false, now(), '{}') RETURNING id`;
    serviceId = s!.id;
  }
  await enableService(store, serviceId);
  const apis: Record<string, string> = {};
  for (const [m, t] of opts.templates ?? [['GET', '/items'], ['GET', '/items/{id}'], ['POST', '/items'], ['DELETE', '/items/{id}'], ['PUT', '/items/{id}'], ['PATCH', '/items/{id}']]) {
    apis[`${m} ${t}`] = await addApi(store, serviceId, m, t);
  }
  apis.deprecated = await addApi(store, serviceId, 'GET', '/old', { deprecated: true });
  apis.public = await addApi(store, serviceId, 'GET', '/health', { authEnabled: false });
  await grantPermission(store, serviceId, bob.id, PERM.GRANT | PERM.VIEW);
  await grantPermission(store, serviceId, carol.id, PERM.GRANT);
  return { admin, alice, bob, carol, dave, orgId, projectId, project2Id, expiredProjectId, serviceId, serviceName, apis };
}

export interface Answer { status: number; json: any; headers: Record<string, string | string[] | undefined> }

export async function v1(node: TestNode, method: string, path: string, opts: { token?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.token) headers['x-auth-token'] = opts.token;
  let body: string | undefined;
  if (opts.raw !== undefined) body = opts.raw;
  else if (opts.body !== undefined) body = JSON.stringify(opts.body);
  if (body !== undefined) headers['content-type'] ??= 'application/json;charset=utf8';
  const r = await request(`${node.origin}/v1${path}`, { method: method as 'GET', headers, body });
  const text = await r.body.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = text;
  }
  return { status: r.statusCode, json, headers: r.headers };
}

export const inMs = (ms: number) => new Date(Date.now() + ms).toISOString();
export const DAY = 86_400_000;
