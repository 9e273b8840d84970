// Keeps a service's API catalog (`authz_api`) in step with the OpenAPI documents
// its live instances registered. Runs after each registration that carries
// resources; a broken document never fails the registration: problems are
// logged and the usable part of the catalog still counts.
import type { Logger } from 'pino';
import type postgres from 'postgres';
import { buildCatalog, deprecationChanges, type CatalogApi, type CatalogInstance, type CatalogProblem } from './catalog.ts';
import type { AuthzStore } from './store.ts';

export interface CatalogSyncInput {
  serviceId: string | number | bigint;
  /** The registration's resources; nothing is done when it is null (nothing new was declared). */
  resources: unknown;
}

export interface CatalogSyncResult {
  /** APIs inserted or whose template spelling, summary or operationId changed. */
  upserted: string[];
  deprecated: string[];
  revived: string[];
  problems: CatalogProblem[];
  /** True when an authz write (with events) happened; false when only last_seen moved. */
  wrote: boolean;
}

interface StoredRow {
  api_id: string;
  source: 'openapi' | 'manual';
  path_template: string;
  operation_id: string | null;
  summary: string;
  deprecated_at: Date | null;
}

const CHUNK = 1000; // rows per INSERT: 8 parameters each stays far below PostgreSQL's 65535

async function liveInstances(sql: postgres.Sql | postgres.TransactionSql, serviceId: string): Promise<CatalogInstance[]> {
  const rows = await sql<{ base_url: string; openapi: unknown }[]>`
    SELECT base_url, resources -> 'openapi' AS openapi FROM utilmeta_instance
    WHERE service_id = ${serviceId} AND connected ORDER BY id`;
  return rows.filter((r) => r.openapi !== null && r.openapi !== undefined).map((r) => ({ baseUrl: r.base_url, openapi: r.openapi }));
}

async function storedApis(sql: postgres.Sql | postgres.TransactionSql, serviceId: string, lock: boolean): Promise<StoredRow[]> {
  return lock
    ? sql<StoredRow[]>`SELECT api_id, source, path_template, operation_id, summary, deprecated_at FROM authz_api WHERE service_id = ${serviceId} FOR UPDATE`
    : sql<StoredRow[]>`SELECT api_id, source, path_template, operation_id, summary, deprecated_at FROM authz_api WHERE service_id = ${serviceId}`;
}

/** What a catalog build changes against the stored rows (pure). */
export function catalogDiff(stored: readonly StoredRow[], live: readonly CatalogApi[]): { upsert: CatalogApi[]; deprecate: string[]; revive: string[] } {
  const byId = new Map(stored.map((r) => [r.api_id, r]));
  const upsert = live.filter((a) => {
    const r = byId.get(a.apiId);
    if (!r) return true;
    // Manual rows keep their own description; openapi rows follow the document.
    return r.source === 'openapi' && (r.path_template !== a.pathTemplate || r.operation_id !== a.operationId || r.summary !== a.summary);
  });
  const { deprecate, revive } = deprecationChanges(
    stored.map((r) => ({ apiId: r.api_id, source: r.source, deprecatedAt: r.deprecated_at })),
    live,
  );
  return { upsert, deprecate, revive };
}

/**
 * Rebuilds the service's catalog from every live instance's document. Never
 * throws: a failure is logged and reported as null.
 */
export async function syncCatalog(store: AuthzStore, log: Pick<Logger, 'warn' | 'info'>, input: CatalogSyncInput): Promise<CatalogSyncResult | null> {
  if (input.resources === null || input.resources === undefined) return null;
  const serviceId = String(input.serviceId);
  try {
    const sql = store.sql;
    // Cheap pre-check without the writer lock: a re-registration that changes
    // nothing only moves last_seen, which no decision reads, so it writes no
    // event (an event per heartbeat would flood the append-only audit log and
    // make every node reload).
    const first = buildCatalog(serviceId, await liveInstances(sql, serviceId));
    const pre = catalogDiff(await storedApis(sql, serviceId, false), first.apis);
    if (first.problems.length) log.warn({ serviceId, problems: first.problems.slice(0, 20), count: first.problems.length }, 'openapi catalog: parts of the document were skipped');
    if (!pre.upsert.length && !pre.deprecate.length && !pre.revive.length) {
      if (first.apis.length) {
        const ids = first.apis.map((a) => a.apiId);
        await sql`UPDATE authz_api SET last_seen = now() WHERE service_id = ${serviceId} AND api_id IN ${sql(ids)}`;
      }
      return { upserted: [], deprecated: [], revived: [], problems: first.problems, wrote: false };
    }
    const { result } = await store.write({ type: 'SYSTEM', name: 'catalog' }, async (tx) => {
      // Re-read under the writer lock: another node may have synced meanwhile.
      const cat = buildCatalog(serviceId, await liveInstances(tx.sql, serviceId));
      const stored = await storedApis(tx.sql, serviceId, true);
      const diff = catalogDiff(stored, cat.apis);
      for (let i = 0; i < diff.upsert.length; i += CHUNK) {
        const rows = diff.upsert.slice(i, i + CHUNK).map((a) => ({
          api_id: a.apiId, service_id: serviceId, method: a.method, path_template: a.pathTemplate, route_key: a.routeKey,
          operation_id: a.operationId, summary: a.summary, source: 'openapi',
        }));
        await tx.sql`
          INSERT INTO authz_api ${tx.sql(rows, 'api_id', 'service_id', 'method', 'path_template', 'route_key', 'operation_id', 'summary', 'source')}
          ON CONFLICT (api_id) DO UPDATE SET path_template = EXCLUDED.path_template, operation_id = EXCLUDED.operation_id,
            summary = EXCLUDED.summary, last_seen = now()
          WHERE authz_api.source = 'openapi'`;
      }
      const liveIds = cat.apis.map((a) => a.apiId);
      if (liveIds.length) await tx.sql`UPDATE authz_api SET last_seen = now() WHERE service_id = ${serviceId} AND api_id IN ${tx.sql(liveIds)}`;
      if (diff.deprecate.length) await tx.sql`UPDATE authz_api SET deprecated_at = now() WHERE api_id IN ${tx.sql(diff.deprecate)}`;
      if (diff.revive.length) await tx.sql`UPDATE authz_api SET deprecated_at = NULL WHERE api_id IN ${tx.sql(diff.revive)}`;
      const upserted = diff.upsert.map((a) => a.apiId);
      if (upserted.length || diff.revive.length) {
        tx.event({ action: 'api.upsert', targetType: 'service', targetId: serviceId, serviceId, effect: { service_id: serviceId, api_ids: [...upserted, ...diff.revive] } });
      }
      if (diff.deprecate.length) {
        tx.event({ action: 'api.deprecate', targetType: 'service', targetId: serviceId, serviceId, effect: { service_id: serviceId, api_ids: diff.deprecate } });
      }
      if (!upserted.length && !diff.revive.length && !diff.deprecate.length) {
        // Another writer got there first; the transaction still needs its audit line.
        tx.event({ action: 'api.upsert', targetType: 'service', targetId: serviceId, serviceId, effect: { service_id: serviceId, api_ids: [] } });
      }
      return { upserted, deprecated: diff.deprecate, revived: diff.revive, problems: cat.problems, wrote: true };
    });
    log.info({ serviceId, upserted: result.upserted.length, deprecated: result.deprecated.length, revived: result.revived.length }, 'openapi catalog updated');
    return result;
  } catch (err) {
    log.warn({ err, serviceId }, 'openapi catalog: sync failed; the registration stands');
    return null;
  }
}
