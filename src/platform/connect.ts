// Connect flows (spec §1.6, §3.6): the node itself, and services that register
// through it, become nodes of the platform; their resources are uploaded with
// etags. All connects of one cluster key run one at a time (in-process, and
// across nodes with a PostgreSQL advisory lock): every placeholder row carries
// the same init_key (the cluster key), and the service's save_supervisor binds
// the callback to the first row with that key (§6.18). Under the lock, stale
// placeholders are removed first, so the only pending row is the right one.
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../config/index.ts';
import type { Database } from '../db/index.ts';
import { dumpsJs, type PyValue } from '../pyjson/index.ts';
import { SupervisorClient, SupervisorError, RawJson, type SupervisorData, type ResourcesData } from './client.ts';
import { SupervisorRepository, type SupervisorRow } from './supervisors.ts';
import type { RegistryStore } from '../registry/index.ts';

export const PROXY_SERVICE_NAME = 'utilmeta-proxy';

/** A connect or sync that failed; the registration answers with its message. */
export class PlatformError extends Error {
  constructor(message: string, readonly status = 502) {
    super(message);
  }
}

export interface ConnectDeps {
  config: Config;
  db: Database;
  log: Logger;
  clusterKey: string;
  repo: SupervisorRepository;
  /** The registry tables' one writer. */
  store: RegistryStore;
  /** Client options shared by every platform call (tests shorten retries). */
  clientOptions?: { retries?: number; timeoutMs?: number; retryTiming?: { minTimeoutMs?: number; maxTimeoutMs?: number } };
  /** Called after a service's node id or instance remote ids change (cache reload). */
  onRegistryChange?: () => Promise<void>;
}

/** Small promise queue: one connect at a time per cluster key in this process. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => {});
    return next;
  }
}

export class Connector {
  private mutex = new Mutex();
  private lockKey: bigint;
  /** etag last accepted by the platform per node: re-sync only when the digest differs. */
  private synced = new Map<string, string>();
  /** Epoch ms of the last upload the platform accepted (for metrics). */
  lastSync: number | null = null;

  constructor(private deps: ConnectDeps) {
    const h = createHash('sha256').update(`utilmeta-proxy:connect:${deps.clusterKey}`).digest();
    this.lockKey = h.readBigInt64BE(0);
  }

  private client(extra: Record<string, string | undefined>, baseUrl?: string): SupervisorClient {
    const { config, log } = this.deps;
    return new SupervisorClient({
      baseUrl: baseUrl ?? config.supervisor.baseUrl!,
      trust: { production: config.production, trustedHosts: config.supervisor.trustedHosts },
      clusterId: config.supervisor.clusterId ?? undefined,
      log,
      ...this.deps.clientOptions,
      ...extra,
    });
  }

  /** Runs `fn` holding the cluster-wide connect lock. */
  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.mutex.run(async () => {
      const { db } = this.deps;
      // The embedded database is single-node and has one connection: the in-process
      // mutex is the whole lock there (a reserved connection would starve the callback).
      if (db.embedded) return fn();
      const reserved = await db.ops.reserve();
      try {
        await reserved`SELECT pg_advisory_lock(${this.lockKey.toString()}::bigint)`;
        try {
          return await fn();
        } finally {
          await reserved`SELECT pg_advisory_unlock(${this.lockKey.toString()}::bigint)`.catch(() => {});
        }
      } finally {
        reserved.release();
      }
    });
  }

  /**
   * §3.6.1 / §3.6.2: placeholder row → add_node (the platform calls the OperationsAPI
   * back with the init_key) → the row has a node id and key. On any failure the
   * placeholder is deleted (with Django's cascade) and the error rethrown.
   */
  private async addNode(service: string, opsApi: string, metadata: unknown): Promise<SupervisorRow> {
    const { repo, clusterKey, config } = this.deps;
    const baseUrl = config.supervisor.baseUrl!;
    for (const stale of await repo.findPending(service)) await repo.deleteWithCascade(stale.id);
    // Every connect with the cluster key (this node's and the services') holds the
    // lock from placeholder to completion, so any other pending row with this
    // init_key is a leftover of a crashed connect: it would catch the callback meant
    // for this one (save_supervisor binds the first row with the key).
    const others = await repo.sql<{ id: string }[]>`SELECT id::text AS id FROM utilmeta_supervisor WHERE node_id IS NULL AND init_key = ${clusterKey}`;
    for (const o of others) await repo.deleteWithCascade(o.id);
    const row = await repo.createPlaceholder({ service, baseUrl, initKey: clusterKey, opsApi });
    try {
      const client = this.client({ clusterKey });
      const resp = await client.addNode(metadata);
      if (!resp.ok) throw new PlatformError(`platform refused to add node for '${service}': ${resp.msg || `HTTP ${resp.status}`}`);
      let saved: SupervisorRow | null;
      if (resp.result && typeof resp.result === 'object') {
        // The platform could not reach the OperationsAPI: save what it returned here.
        const data = resp.result as SupervisorData;
        const r = await repo.saveSupervisor({ ...data, init_key: data.init_key ?? clusterKey }, { rowId: row.id });
        if (!r.ok) throw new PlatformError(`saving the node returned by the platform failed: ${r.message}`);
        saved = r.row;
      } else {
        saved = await repo.getById(row.id);
      }
      if (!saved?.node_id) throw new PlatformError(`platform did not complete the connect of '${service}': no node id was saved (the callback to ${opsApi} did not arrive)`);
      if (!saved.local && !saved.public_key) throw new PlatformError(`platform connected '${service}' as node ${saved.node_id} without a public key`);
      return saved;
    } catch (err) {
      await repo.deleteWithCascade(row.id).catch((e) => this.deps.log.error({ err: e }, 'could not remove the placeholder supervisor row'));
      throw err instanceof PlatformError ? err : new PlatformError(`connect to platform failed for '${service}': ${errText(err)}`);
    }
  }

  /**
   * In-proxy connect of a registering service whose Service row has no node id
   * (§3.6.2), then the resource upload. Returns the node id.
   */
  async connectService(p: { serviceId: string; service: string; opsApi: string; metadata: PyValue | Record<string, unknown>; resourcesJson: string | null; resourcesEtag?: string | null }): Promise<string> {
    const { repo, store, log } = this.deps;
    const row = await this.exclusive(async () => {
      // Another node may have connected it while we waited for the lock.
      const nodeId = await store.serviceNodeId(p.serviceId);
      if (nodeId) {
        const existing = await repo.findForSync(p.service, nodeId);
        if (existing) return existing;
      }
      const metadata = new RawJson(dumpsJs(p.metadata));
      const saved = await this.addNode(p.service, p.opsApi, metadata);
      await store.setServiceNode(p.serviceId, saved.node_id!);
      await repo.attachOrphans(p.service, saved.node_id!, saved.id);
      log.info({ service: p.service, node: saved.node_id, url: saved.url }, 'service connected to the platform');
      return saved;
    });
    await this.deps.onRegistryChange?.();
    // No pre-check (§3.6.2 step 7), but remember the digest once accepted, so the next
    // registration with the same document uploads nothing.
    if (p.resourcesJson !== null) await this.syncResources(p.service, row.node_id!, p.resourcesJson, p.resourcesEtag ?? null, false);
    return row.node_id!;
  }

  /**
   * §3.6.3: upload the resources JSON exactly as received (§6.21) to the node's
   * platform, skipping when the digest equals the platform's etag or the last
   * accepted one; save the returned resources and settings.
   */
  async syncResources(service: string, nodeId: string, resourcesJson: string, digest: string | null, precheck = true): Promise<'skipped' | 'not_modified' | 'synced' | 'no_supervisor'> {
    const { repo, log } = this.deps;
    const row = await repo.findForSync(service, nodeId) ?? (await repo.filterByNode(nodeId))[0] ?? null;
    if (!row) return 'no_supervisor';
    if (precheck && digest !== null && (digest === row.resources_etag || digest === this.synced.get(nodeId))) return 'skipped';
    const client = this.client({ nodeId, nodeKey: row.public_key ?? undefined }, row.base_url);
    const resp = await client.uploadResources(new RawJson(resourcesJson)).catch((err) => {
      throw new PlatformError(`uploading resources of '${service}' failed: ${errText(err)}`);
    });
    if (!resp.ok) throw new PlatformError(`platform refused the resources of '${service}': ${resp.msg || `HTTP ${resp.status}`}`);
    if (row.service !== service) await repo.propagateRename(nodeId, service);
    if (digest !== null) this.synced.set(nodeId, digest);
    this.lastSync = Date.now();
    if (resp.notModified || !resp.result) return 'not_modified';
    const result = resp.result as ResourcesData;
    await repo.applySyncResult(row, result);
    if (Array.isArray(result.resources)) {
      await repo.saveResources(nodeId, service, result.resources);
      await this.refreshRemoteIds(nodeId);
    }
    log.info({ service, node: nodeId, resources: result.resources?.length ?? 0 }, 'resources synced to the platform');
    return 'synced';
  }

  /** Copies instance remote ids from the ops rows the sync just saved (they used to lag a registration). */
  private async refreshRemoteIds(nodeId: string): Promise<void> {
    if (await this.deps.store.refreshRemoteIds(nodeId)) await this.deps.onRegistryChange?.();
  }


  /**
   * §1.6: connects this proxy as node `utilmeta-proxy` (or finds it connected),
   * then uploads its own resources. Throws on failure; the caller retries.
   */
  async connectSelf(opsApi: string, resources: Record<string, unknown>): Promise<SupervisorRow> {
    const { repo, config } = this.deps;
    const existing = (await repo.sql<{ id: string }[]>`
      SELECT id::text AS id FROM utilmeta_supervisor
      WHERE service = ${PROXY_SERVICE_NAME} AND base_url = ${config.supervisor.baseUrl!} AND ops_api = ${opsApi}
        AND node_id IS NOT NULL AND disabled = false AND (local OR public_key IS NOT NULL)
      ORDER BY id LIMIT 1`)[0];
    const row = existing
      ? (await repo.getById(existing.id))!
      : await this.exclusive(() => this.addNode(PROXY_SERVICE_NAME, opsApi, new RawJson(dumpsJs(resources.metadata))));
    const json = dumpsJs(resources);
    await this.syncResources(PROXY_SERVICE_NAME, row.node_id!, json, null, false);
    return (await repo.getById(row.id)) ?? row;
  }
}

function errText(err: unknown): string {
  if (err instanceof SupervisorError) return err.message;
  return err instanceof Error ? err.message : String(err);
}
