// Projects: apps live in them, and their validity dates (UTC days, both
// inclusive) bound when those apps may call.
import { randomUUID } from 'node:crypto';
import type postgres from 'postgres';
import {
  dirError, directoryWrite, findOrg, num, userWire, wireTime, USER_COLUMNS,
  type DirectoryCaller, type DirectoryDeps, type Q, type UserRow,
} from './directory-common.ts';

export interface ProjectInput {
  name?: string;
  description?: string;
  extra?: Record<string, unknown>;
  product?: string;
  is_permanent?: boolean;
  /** `YYYY-MM-DD` */
  started_at?: string | null;
  expired_at?: string | null;
  is_classified?: boolean;
}

interface ProjectRow {
  id: string;
  org_id: string;
  name: string;
  description: string;
  resource_key: string;
  creator_id: string | null;
  is_classified: boolean;
  extra: Record<string, unknown>;
  product: string;
  is_permanent: boolean;
  started_at: string | null;
  expired_at: string | null;
  created_at: Date;
  updated_at: Date;
}
const PROJECT_COLUMNS = `p.id, p.org_id, p.name, p.description, p.resource_key, p.creator_id, p.is_classified, p.extra, p.product,
  p.is_permanent, p.started_at::text AS started_at, p.expired_at::text AS expired_at, p.created_at, p.updated_at`;

async function renderProjects(q: Q, caller: DirectoryCaller, rows: ProjectRow[]): Promise<Record<string, unknown>[]> {
  const creatorIds = [...new Set(rows.map((r) => r.creator_id).filter((x): x is string => x !== null))];
  const creators = creatorIds.length
    ? await q<UserRow[]>`SELECT ${q.unsafe(USER_COLUMNS)} FROM authz_user u WHERE u.id = ANY(${q.array(creatorIds, 20)})`
    : [];
  const byId = new Map(creators.map((c) => [c.id, c]));
  return rows.map((p) => {
    const creator = p.creator_id === null ? undefined : byId.get(p.creator_id);
    return {
      id: num(p.id),
      name: p.name,
      description: p.description,
      org_id: num(p.org_id),
      resource_key: p.resource_key,
      creator_id: num(p.creator_id, true),
      creator: creator ? userWire(creator, caller) : null,
      is_classified: p.is_classified,
      extra: p.extra,
      product: p.product,
      is_permanent: p.is_permanent,
      started_at: p.started_at,
      expired_at: p.expired_at,
      created_at: wireTime(p.created_at),
      updated_at: wireTime(p.updated_at),
    };
  });
}

/** A non-permanent project needs both days, and the end not before the start. */
function checkValidity(isPermanent: boolean, started: string | null, expired: string | null): void {
  if (isPermanent) return;
  if (started === null) throw dirError('invalid', 'PARAM_INVALID', 'started_at: required when is_permanent is false', { field: 'started_at' });
  if (expired === null) throw dirError('invalid', 'PARAM_INVALID', 'expired_at: required when is_permanent is false', { field: 'expired_at' });
  if (expired < started) throw dirError('invalid', 'PARAM_INVALID', 'expired_at: must not be before started_at', { field: 'expired_at' });
}

async function findProject(q: Q, projectId: number, orgId: number | null, lock = false): Promise<ProjectRow> {
  const [row] = await q<ProjectRow[]>`SELECT ${q.unsafe(PROJECT_COLUMNS)} FROM authz_project p WHERE p.id = ${projectId}
    ${orgId !== null ? q`AND p.org_id = ${orgId}` : q``} ${lock ? q`FOR UPDATE` : q``}`;
  if (!row) throw dirError('not_found', 'PROJECT_NOT_FOUND', `no project ${projectId}${orgId !== null ? ` in org ${orgId}` : ''}`, { field: 'project_id' });
  return row;
}

async function nameTaken(q: Q, orgId: string | number, name: string, exceptId: string | null): Promise<void> {
  const dup = await q`SELECT 1 FROM authz_project WHERE org_id = ${orgId} AND name = ${name} AND id IS DISTINCT FROM ${exceptId}`;
  if (dup.length) throw dirError('conflict', 'PROJECT_EXISTS', `a project named ${JSON.stringify(name)} already exists in this org`, { field: 'name' });
}

export async function createProject(
  deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, body: ProjectInput & { name: string; is_permanent: boolean },
): Promise<unknown> {
  const started = body.started_at ?? null;
  const expired = body.expired_at ?? null;
  checkValidity(body.is_permanent, started, expired);
  return directoryWrite(deps, caller, async (tx, emit) => {
    await findOrg(tx, orgId, { lock: true });
    await nameTaken(tx, orgId, body.name, null);
    const creator = caller.userId === null ? null : (await tx`SELECT id FROM authz_user WHERE id = ${caller.userId}`)[0]?.id ?? null;
    const resourceKey = `utilmeta_proxy_org_${orgId}_project_${randomUUID()}`;
    const [row] = await tx<{ id: string }[]>`
      INSERT INTO authz_project (org_id, name, description, resource_key, creator_id, is_classified, extra, product, is_permanent, started_at, expired_at)
      VALUES (${orgId}, ${body.name}, ${body.description ?? ''}, ${resourceKey}, ${creator}, ${body.is_classified ?? false},
              ${tx.json((body.extra ?? {}) as postgres.JSONValue)}, ${body.product ?? 'tester'}, ${body.is_permanent},
              ${started}::date, ${expired}::date)
      RETURNING id`;
    const [wire] = await renderProjects(tx, caller, [await findProject(tx, num(row!.id), orgId)]);
    emit({
      action: 'project.create',
      targetType: 'project',
      targetId: row!.id,
      effect: { project_id: num(row!.id), org_id: orgId },
      after: { ...wire, creator: undefined },
    });
    return wire;
  });
}

export async function patchProject(deps: DirectoryDeps, caller: DirectoryCaller, projectId: number, patch: ProjectInput): Promise<unknown> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    const before = await findProject(tx, projectId, null, true);
    const isPermanent = patch.is_permanent ?? before.is_permanent;
    const started = patch.started_at !== undefined ? patch.started_at : before.started_at;
    const expired = patch.expired_at !== undefined ? patch.expired_at : before.expired_at;
    checkValidity(isPermanent, started, expired);
    if (patch.name !== undefined) await nameTaken(tx, before.org_id, patch.name, before.id);
    await tx`UPDATE authz_project SET name = ${patch.name ?? before.name}, description = ${patch.description ?? before.description},
      extra = ${tx.json((patch.extra ?? before.extra) as postgres.JSONValue)}, product = ${patch.product ?? before.product},
      is_classified = ${patch.is_classified ?? before.is_classified},
      is_permanent = ${isPermanent}, started_at = ${started}::date, expired_at = ${expired}::date, updated_at = now()
      WHERE id = ${before.id}`;
    const [beforeWire] = await renderProjects(tx, caller, [before]);
    const [wire] = await renderProjects(tx, caller, [await findProject(tx, projectId, null)]);
    emit({
      action: 'project.update',
      targetType: 'project',
      targetId: before.id,
      // A shorter validity narrows what the project's apps may do: carried in the payload.
      effect: { project_id: projectId, org_id: num(before.org_id), is_permanent: isPermanent, started_at: started, expired_at: expired },
      before: { ...beforeWire, creator: undefined },
      after: { ...wire, creator: undefined },
    });
    return wire;
  });
}

export async function getProject(deps: DirectoryDeps, caller: DirectoryCaller, projectId: number): Promise<unknown> {
  const [wire] = await renderProjects(deps.sql, caller, [await findProject(deps.sql, projectId, null)]);
  return wire;
}

/** Projects of one org, or of every org when `orgId` is null. */
export async function listProjects(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number | null): Promise<unknown[]> {
  const { sql } = deps;
  if (orgId !== null) await findOrg(sql, orgId);
  const rows = await sql<ProjectRow[]>`SELECT ${sql.unsafe(PROJECT_COLUMNS)} FROM authz_project p
    ${orgId !== null ? sql`WHERE p.org_id = ${orgId}` : sql``} ORDER BY p.id`;
  return renderProjects(sql, caller, rows);
}

export async function deleteProject(deps: DirectoryDeps, caller: DirectoryCaller, orgId: number, projectId: number): Promise<null> {
  return directoryWrite(deps, caller, async (tx, emit) => {
    await findOrg(tx, orgId, { lock: true });
    const project = await findProject(tx, projectId, orgId, true);
    const apps = await tx<{ app_id: string }[]>`SELECT app_id FROM authz_app WHERE project_id = ${project.id}`;
    if (apps.length) {
      throw dirError('conflict', 'PROJECT_HAS_APPS', `project ${projectId} still has ${apps.length} app(s)`, { field: 'project_id', data: { app_ids: apps.map((a) => a.app_id) } });
    }
    const [beforeWire] = await renderProjects(tx, caller, [project]);
    await tx`DELETE FROM authz_project WHERE id = ${project.id}`;
    emit({ action: 'project.delete', targetType: 'project', targetId: project.id, effect: { project_id: projectId, org_id: orgId }, before: { ...beforeWire, creator: undefined } });
    return null;
  });
}
