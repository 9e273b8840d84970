// Writes the ops-database rows a UtilMeta service creates before it registers
// (spec §2.2): a server row and its instance row, every column as Django sends it.
import type postgres from 'postgres';

export interface InstanceResource {
  id: string;
  serverId: string;
}

export async function insertInstanceResource(
  ops: postgres.Sql,
  opts: { service: string; address: string; id?: string | number; nodeId?: string | null; remoteId?: string | null; mac?: string },
): Promise<InstanceResource> {
  const now = new Date();
  const mac = opts.mac ?? `02:00:00:${Math.floor(Math.random() * 0xffffff).toString(16).padStart(6, '0').replace(/(..)(..)(..)/, '$1:$2:$3')}`;
  const [server] = await ops`
    INSERT INTO utilmeta_resource (service, node_id, type, ident, route, remote_id, created_time, data, deprecated, server_id, deleted_time, ref, updated_time)
    VALUES (NULL, ${opts.nodeId ?? null}, 'server', ${mac}, ${'server/' + mac}, NULL, ${now}, '{}'::jsonb, false, NULL, NULL, NULL, NULL)
    RETURNING id`;
  const route = opts.nodeId ? `instance/${opts.nodeId}/${opts.address}` : `instance/${opts.address}`;
  const rows = opts.id === undefined
    ? await ops`
        INSERT INTO utilmeta_resource (service, node_id, type, ident, route, remote_id, created_time, data, deprecated, server_id, deleted_time, ref, updated_time)
        VALUES (${opts.service}, ${opts.nodeId ?? null}, 'instance', ${opts.address}, ${route}, ${opts.remoteId ?? null}, ${now}, '{}'::jsonb, false, ${server.id}, NULL, NULL, NULL)
        RETURNING id`
    : await ops`
        INSERT INTO utilmeta_resource (id, service, node_id, type, ident, route, remote_id, created_time, data, deprecated, server_id, deleted_time, ref, updated_time)
        VALUES (${String(opts.id)}, ${opts.service}, ${opts.nodeId ?? null}, 'instance', ${opts.address}, ${route}, ${opts.remoteId ?? null}, ${now}, '{}'::jsonb, false, ${server.id}, NULL, NULL, NULL)
        RETURNING id`;
  if (opts.id !== undefined) {
    // Explicit ids do not advance the identity sequence (schema.md §3.4).
    await ops`SELECT setval(pg_get_serial_sequence('utilmeta_resource', 'id'), (SELECT max(id) FROM utilmeta_resource))`;
  }
  return { id: String(rows[0].id), serverId: String(server.id) };
}

/** A registration body like the one a utilmeta 2.9 service sends (spec §2.4). */
export function registrationBody(opts: { name: string; address: string; instanceId: string; version?: string; resources?: unknown; basePath?: string }): Record<string, unknown> {
  const basePath = opts.basePath ?? '/api';
  return {
    name: opts.name,
    title: null,
    description: '',
    address: opts.address,
    base_url: `http://${opts.address}${basePath}`,
    ops_api: `http://${opts.address}${basePath}/ops`,
    instance_id: opts.instanceId,
    cwd: '/srv/app',
    version: opts.version ?? '1.2.3',
    asynchronous: true,
    production: false,
    language: 'python',
    language_version: '3.11.2',
    utilmeta_version: '2.9.0',
    backend: 'starlette',
    backend_version: '0.26.1',
    resources: opts.resources ?? null,
  };
}
