// Registry writes and reads against PostgreSQL. Rows are written the way Django
// would (schema.md §3): every column sent, application-side defaults, aware UTC
// timestamps, JSON as jsonb text, int8 ids handled as strings.
import type postgres from 'postgres';
import { conflict } from '../core/errors.ts';
import { parseVersion } from './version.ts';
import { REGISTRY_CHANNEL } from './cache.ts';
import type { Registration } from './registration.ts';

/** Serializes registry writes cluster-wide (get_or_create races, renames). */
const REGISTRY_LOCK = 0x756d7072_6567n; // "umpreg"

export interface OpsInstanceResource {
  id: string;
  node_id: string | null;
  remote_id: string | null;
  server_id: string | null;
}

export interface InstanceRecord {
  id: number;
  service_id: string;
  service_name: string;
  node_id: string | null;
  host: string;
  port: number | null;
  address: string;
  base_url: string;
  ops_api: string;
  resource_id: string;
  server_id: string | null;
  remote_id: string | null;
  cwd: string | null;
  weight: number;
  connected: boolean;
  public: boolean;
  version: string;
  version_major: number;
  version_minor: number;
  version_patch: number;
  asynchronous: boolean;
  production: boolean;
  language: string;
  language_version: string | null;
  utilmeta_version: string;
  backend: string;
  backend_version: string | null;
  created_time: string;
  deprecated: boolean;
  resources_etag: string | null;
  data: unknown;
  avg_load: number;
  avg_time: number;
  avg_rps: number;
}

export interface RegisterResult {
  instance: InstanceRecord;
  created: boolean;
  serviceCreated: boolean;
  renamedFrom: string | null;
}

/** `%Y-%m-%dT%H:%M:%SZ`, the proxy's Time config (spec §1.1). */
export function formatTime(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const INSTANCE_COLUMNS = `
  i.id, i.service_id, s.name AS service_name, s.node_id, host(i.host) AS host, i.port, i.address, i.base_url, i.ops_api,
  i.resource_id, i.server_id, i.remote_id, i.cwd, i.weight, i.connected, i.public, i.version,
  i.version_major, i.version_minor, i.version_patch, i.asynchronous, i.production, i.language,
  i.language_version, i.utilmeta_version, i.backend, i.backend_version, i.created_time, i.deprecated,
  i.resources_etag, i.data, i.avg_load, i.avg_time, i.avg_rps`;

type Row = Record<string, unknown>;

function toRecord(r: Row): InstanceRecord {
  return {
    ...(r as unknown as InstanceRecord),
    id: Number(r.id),
    service_id: String(r.service_id),
    weight: Number(r.weight),
    avg_load: Number(r.avg_load),
    avg_time: Number(r.avg_time),
    avg_rps: Number(r.avg_rps),
    created_time: formatTime(r.created_time as Date),
    resources_etag: (r.resources_etag as string | null) ?? null,
  };
}

export class RegistryStore {
  constructor(private registry: postgres.Sql, private ops: postgres.Sql) {}

  /** Step 4: the ops Resource row that authenticates a registration. */
  async findInstanceResource(reg: Registration): Promise<OpsInstanceResource | null> {
    const rows = await this.ops<OpsInstanceResource[]>`
      SELECT id::text AS id, node_id, remote_id, server_id::text AS server_id
      FROM utilmeta_resource
      WHERE id = ${reg.instanceId} AND type = 'instance' AND service = ${reg.name}
        AND ident = ${reg.address} AND deleted_time IS NULL
      ORDER BY id LIMIT 1`;
    return rows[0] ?? null;
  }

  /**
   * Steps 7–10 in one transaction (spec §6.20): service (by name or former name,
   * created when missing), name record, rename, instance upsert by address. All
   * rows or none; every node's cache hears about it through NOTIFY on commit.
   */
  async register(reg: Registration, resource: OpsInstanceResource): Promise<RegisterResult> {
    const now = new Date();
    const [major, minor, patch] = parseVersion(reg.version);
    return this.registry.begin(async (sql) => {
      await sql`SELECT pg_advisory_xact_lock(${REGISTRY_LOCK.toString()}::bigint)`;
      let serviceCreated = false;
      let renamedFrom: string | null = null;
      let svc = (await sql<Row[]>`SELECT id, name, node_id FROM utilmeta_service WHERE name = ${reg.name}`)[0];
      if (!svc) {
        svc = (await sql<Row[]>`
          SELECT s.id, s.name, s.node_id FROM utilmeta_service s
          JOIN utilmeta_service_name_record r ON r.service_id = s.id
          WHERE r.name = ${reg.name} ORDER BY s.id LIMIT 1`)[0];
      }
      if (!svc && resource.node_id) {
        // A renamed UtilMeta service keeps its node id (from its ini file) and its
        // address: the instance's current service with that same node is renamed.
        // Without a shared node id a new name at a known address stays a conflict,
        // so an unrelated service reusing a port never inherits another's node.
        svc = (await sql<Row[]>`
          SELECT s.id, s.name, s.node_id FROM utilmeta_instance i JOIN utilmeta_service s ON s.id = i.service_id
          WHERE i.address = ${reg.address} AND s.node_id = ${resource.node_id}`)[0];
      }
      if (!svc) {
        svc = (await sql<Row[]>`
          INSERT INTO utilmeta_service (name, node_id, base_url, ops_api, routes, public, created_time, data)
          VALUES (${reg.name}, ${resource.node_id}, NULL, NULL, NULL, false, ${now}, '{}'::jsonb)
          RETURNING id, name, node_id`)[0];
        serviceCreated = true;
      }
      const serviceId = String(svc.id);
      const record = (await sql<Row[]>`SELECT service_id FROM utilmeta_service_name_record WHERE name = ${reg.name}`)[0];
      if (!record && svc.name !== reg.name) {
        // First registration under a new name: keep the old name findable too.
        const oldName = String(svc.name);
        const old = (await sql<Row[]>`SELECT 1 FROM utilmeta_service_name_record WHERE name = ${oldName}`)[0];
        if (!old) await sql`INSERT INTO utilmeta_service_name_record (service_id, name, created_time, deprecated_time) VALUES (${serviceId}, ${oldName}, ${now}, NULL)`;
      }
      if (!record) {
        await sql`
          INSERT INTO utilmeta_service_name_record (service_id, name, created_time, deprecated_time)
          VALUES (${serviceId}, ${reg.name}, ${now}, NULL)`;
      } else if (String(record.service_id) !== serviceId) {
        // schema.md §8.5: the original raised an IntegrityError (500) here.
        throw conflict(`service name '${reg.name}' is recorded for another service (id ${record.service_id})`);
      }
      if (svc.name !== reg.name) {
        renamedFrom = String(svc.name);
        await sql`UPDATE utilmeta_service SET name = ${reg.name} WHERE id = ${serviceId}`;
      }
      const existing = (await sql<Row[]>`
        SELECT i.id, i.service_id, s.name AS service_name FROM utilmeta_instance i
        JOIN utilmeta_service s ON s.id = i.service_id WHERE i.address = ${reg.address}`)[0];
      if (existing && String(existing.service_id) !== serviceId) {
        throw conflict(`address ${reg.address} is already registered by service '${existing.service_name}'; deregister that instance first (DELETE /api/registry/${existing.id}), or keep the node id to rename the service`);
      }
      const clash = (await sql<Row[]>`
        SELECT id, address FROM utilmeta_instance WHERE resource_id = ${reg.instanceId} AND address <> ${reg.address}`)[0];
      if (clash) {
        throw conflict(`instance resource ${reg.instanceId} is already registered at address ${clash.address} (instance ${clash.id})`);
      }
      const etagJson = reg.resourcesEtag === null ? null : JSON.stringify(reg.resourcesEtag);
      let id: string;
      if (existing) {
        id = String(existing.id);
        await sql`
          UPDATE utilmeta_instance SET
            service_id = ${serviceId}, host = ${reg.host}::inet, port = ${reg.port}, base_url = ${reg.baseUrl},
            ops_api = ${reg.opsApi}, resource_id = ${reg.instanceId}, server_id = ${resource.server_id},
            remote_id = ${resource.remote_id}, cwd = ${reg.cwd}, connected = true, version = ${reg.version},
            version_major = ${major}, version_minor = ${minor}, version_patch = ${patch},
            asynchronous = ${reg.asynchronous}, production = ${reg.production}, language = ${reg.language},
            language_version = ${reg.languageVersion}, utilmeta_version = ${reg.utilmetaVersion},
            backend = ${reg.backend}, backend_version = ${reg.backendVersion}
          WHERE id = ${id}`;
        if (reg.resourcesJson !== null) {
          // Resources absent (null) means "unchanged" (spec §1.4): leave the stored ones.
          await sql`UPDATE utilmeta_instance SET resources = ${reg.resourcesJson}::text::jsonb, resources_etag = ${etagJson}::text::jsonb WHERE id = ${id}`;
        }
      } else {
        const rows = await sql<Row[]>`
          INSERT INTO utilmeta_instance (
            host, port, address, base_url, ops_api, resource_id, server_id, remote_id, cwd, weight, connected,
            public, version, version_major, version_minor, version_patch, asynchronous, production, language,
            language_version, utilmeta_version, backend, backend_version, created_time, deprecated, resources,
            resources_etag, data, avg_load, avg_time, avg_rps, service_id)
          VALUES (
            ${reg.host}::inet, ${reg.port}, ${reg.address}, ${reg.baseUrl}, ${reg.opsApi}, ${reg.instanceId},
            ${resource.server_id}, ${resource.remote_id}, ${reg.cwd}, 1, true, false, ${reg.version},
            ${major}, ${minor}, ${patch}, ${reg.asynchronous}, ${reg.production}, ${reg.language},
            ${reg.languageVersion}, ${reg.utilmetaVersion}, ${reg.backend}, ${reg.backendVersion}, ${now}, false,
            ${reg.resourcesJson}::text::jsonb, ${etagJson}::text::jsonb, '{}'::jsonb, 0, 0, 0, ${serviceId})
          RETURNING id`;
        id = String(rows[0].id);
      }
      await sql`SELECT pg_notify(${REGISTRY_CHANNEL}, ${`instance:${id}`})`;
      const row = (await sql<Row[]>`
        SELECT ${sql.unsafe(INSTANCE_COLUMNS)} FROM utilmeta_instance i
        JOIN utilmeta_service s ON s.id = i.service_id WHERE i.id = ${id}`)[0];
      return { instance: toRecord(row), created: !existing, serviceCreated, renamedFrom };
    });
  }

  async instance(id: number | string): Promise<InstanceRecord | null> {
    const rows = await this.registry<Row[]>`
      SELECT ${this.registry.unsafe(INSTANCE_COLUMNS)} FROM utilmeta_instance i
      JOIN utilmeta_service s ON s.id = i.service_id WHERE i.id = ${String(id)}`;
    return rows[0] ? toRecord(rows[0]) : null;
  }

  async list(filter: { service?: string } = {}): Promise<Array<{ id: string; name: string; node_id: string | null; names: string[]; created_time: string; instances: InstanceRecord[] }>> {
    const services = filter.service
      ? await this.registry<Row[]>`
          SELECT DISTINCT s.id, s.name, s.node_id, s.created_time FROM utilmeta_service s
          LEFT JOIN utilmeta_service_name_record r ON r.service_id = s.id
          WHERE s.name = ${filter.service} OR r.name = ${filter.service} ORDER BY s.id`
      : await this.registry<Row[]>`SELECT id, name, node_id, created_time FROM utilmeta_service ORDER BY id`;
    if (services.length === 0) return [];
    const ids = services.map((s) => String(s.id));
    const [names, instances] = await Promise.all([
      this.registry<Row[]>`SELECT service_id, name FROM utilmeta_service_name_record WHERE service_id IN ${this.registry(ids)} ORDER BY id`,
      this.registry<Row[]>`
        SELECT ${this.registry.unsafe(INSTANCE_COLUMNS)} FROM utilmeta_instance i
        JOIN utilmeta_service s ON s.id = i.service_id WHERE i.service_id IN ${this.registry(ids)} ORDER BY i.id`,
    ]);
    // One pass each instead of a filter per service (quadratic with thousands of services).
    const namesOf = new Map<string, string[]>();
    for (const n of names) {
      const k = String(n.service_id);
      const list = namesOf.get(k) ?? [];
      list.push(String(n.name));
      namesOf.set(k, list);
    }
    const instancesOf = new Map<string, InstanceRecord[]>();
    for (const i of instances) {
      const k = String(i.service_id);
      const list = instancesOf.get(k) ?? [];
      list.push(toRecord(i));
      instancesOf.set(k, list);
    }
    return services.map((s) => ({
      id: String(s.id),
      name: String(s.name),
      node_id: (s.node_id as string | null) ?? null,
      names: namesOf.get(String(s.id)) ?? [],
      created_time: formatTime(s.created_time as Date),
      instances: instancesOf.get(String(s.id)) ?? [],
    }));
  }

  /** Deregisters one instance by id or address; the service and its names stay. */
  async deregister(key: string): Promise<InstanceRecord | null> {
    return this.registry.begin(async (sql) => {
      await sql`SELECT pg_advisory_xact_lock(${REGISTRY_LOCK.toString()}::bigint)`;
      const byId = /^\d{1,18}$/.test(key);
      const rows = await sql<Row[]>`
        SELECT ${sql.unsafe(INSTANCE_COLUMNS)} FROM utilmeta_instance i
        JOIN utilmeta_service s ON s.id = i.service_id
        WHERE ${byId ? sql`i.id = ${key}` : sql`i.address = ${key}`}`;
      if (!rows[0]) return null;
      await sql`DELETE FROM utilmeta_instance WHERE id = ${String(rows[0].id)}`;
      await sql`SELECT pg_notify(${REGISTRY_CHANNEL}, ${`deleted:${rows[0].id}`})`;
      return toRecord(rows[0]);
    });
  }
  /** The platform node id of a service (null: not connected yet). */
  async serviceNodeId(serviceId: string): Promise<string | null> {
    const [svc] = await this.registry<{ node_id: string | null }[]>`SELECT node_id FROM utilmeta_service WHERE id = ${serviceId}`;
    return svc?.node_id ?? null;
  }

  /** Records the node id the platform gave a service, and tells every node. */
  async setServiceNode(serviceId: string, nodeId: string): Promise<void> {
    await this.registry.begin(async (sql) => {
      await sql`UPDATE utilmeta_service SET node_id = ${nodeId} WHERE id = ${serviceId}`;
      await sql`SELECT pg_notify(${REGISTRY_CHANNEL}, ${`service:${serviceId}`})`;
    });
  }

  /** Copies the platform's instance ids from the ops resource rows; true when any changed. */
  async refreshRemoteIds(nodeId: string): Promise<boolean> {
    const instances = await this.registry<{ id: string; resource_id: string; remote_id: string | null }[]>`
      SELECT i.id, i.resource_id, i.remote_id FROM utilmeta_instance i JOIN utilmeta_service s ON s.id = i.service_id WHERE s.node_id = ${nodeId}`;
    if (instances.length === 0) return false;
    const ids = instances.map((i) => i.resource_id);
    const rows = await this.ops<{ id: string; remote_id: string | null }[]>`SELECT id::text AS id, remote_id FROM utilmeta_resource WHERE id::text IN ${this.ops(ids)}`;
    const byId = new Map(rows.map((r) => [r.id, r.remote_id]));
    const changes = instances.flatMap((i) => {
      const remote = byId.get(i.resource_id) ?? null;
      return remote !== null && remote !== i.remote_id ? [{ id: i.id, remote }] : [];
    });
    if (changes.length === 0) return false;
    await this.registry.begin(async (sql) => {
      for (const c of changes) await sql`UPDATE utilmeta_instance SET remote_id = ${c.remote} WHERE id = ${c.id}`;
      await sql`SELECT pg_notify(${REGISTRY_CHANNEL}, ${`node:${nodeId}`})`;
    });
    return true;
  }
}

export function registryResponse(inst: InstanceRecord): Record<string, unknown> {
  const { service_name: _name, ...rest } = inst;
  return rest;
}
