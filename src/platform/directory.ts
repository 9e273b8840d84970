// In-memory view of the ops database's utilmeta_supervisor rows for the proxy's
// hot path (supervisor/operations/forward routing and token keys). Python
// services write these rows too (the platform's callback runs save_supervisor
// inside the service), and the proxy must not alter their tables with triggers,
// so the view is polled; an unknown node id triggers one rate-limited lookup.
import type postgres from 'postgres';
import type { Logger } from 'pino';

export interface SupervisorEntry {
  id: string;
  service: string;
  nodeId: string | null;
  baseUrl: string;
  backupUrls: string[];
  publicKey: string | null;
  local: boolean;
  disabled: boolean;
  /** A placeholder row waiting for the platform's first callback (node_id NULL, init_key set). */
  pending: boolean;
}

interface Row {
  id: string; service: string; node_id: string | null; base_url: string; backup_urls: unknown;
  public_key: string | null; local: boolean; disabled: boolean; pending: boolean;
}

function toEntry(r: Row): SupervisorEntry {
  return {
    id: String(r.id), service: r.service, nodeId: r.node_id, baseUrl: r.base_url,
    backupUrls: Array.isArray(r.backup_urls) ? r.backup_urls.filter((u): u is string => typeof u === 'string') : [],
    publicKey: r.public_key, local: r.local, disabled: r.disabled, pending: r.pending,
  };
}

export class SupervisorDirectory {
  private byNode = new Map<string, SupervisorEntry[]>();
  private pendingByService = new Map<string, SupervisorEntry[]>();
  private misses = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private inflight: Promise<void> | null = null;
  generation = 0;

  constructor(private sql: postgres.Sql, private log: Logger, private refreshMs = 5000, private missTtlMs = 2000) {}

  /** Supervisor.filter(node_id=…) semantics: connected, enabled, local or with a key. Ordered by id. */
  forNode(nodeId: string): SupervisorEntry[] {
    return (this.byNode.get(nodeId) ?? []).filter((e) => !e.disabled && (e.local || e.publicKey !== null));
  }

  /** Rows usable to verify node tokens: enabled with a public key. */
  tokenKeys(nodeId: string): SupervisorEntry[] {
    return (this.byNode.get(nodeId) ?? []).filter((e) => !e.disabled && e.publicKey !== null);
  }

  pendingFor(service: string): SupervisorEntry[] {
    return this.pendingByService.get(service) ?? [];
  }

  /** Looks a node up in the database when the cache does not know it (at most once per missTtlMs). */
  async ensureNode(nodeId: string): Promise<void> {
    if (this.byNode.has(nodeId)) return;
    const last = this.misses.get(nodeId);
    if (last !== undefined && Date.now() - last < this.missTtlMs) return;
    if (this.misses.size > 10_000) this.misses.clear();
    this.misses.set(nodeId, Date.now());
    await this.refresh().catch(() => {});
  }

  refresh(): Promise<void> {
    this.inflight ??= this.load().finally(() => (this.inflight = null));
    return this.inflight;
  }

  private async load(): Promise<void> {
    try {
      const rows = await this.sql<Row[]>`
        SELECT id, service, node_id, base_url, backup_urls, public_key, local, disabled,
               (node_id IS NULL AND init_key IS NOT NULL) AS pending
        FROM utilmeta_supervisor ORDER BY id`;
      const byNode = new Map<string, SupervisorEntry[]>();
      const pending = new Map<string, SupervisorEntry[]>();
      for (const r of rows) {
        const e = toEntry(r);
        if (e.nodeId) {
          const list = byNode.get(e.nodeId) ?? [];
          list.push(e);
          byNode.set(e.nodeId, list);
        } else if (e.pending && !e.disabled) {
          const list = pending.get(e.service) ?? [];
          list.push(e);
          pending.set(e.service, list);
        }
      }
      this.byNode = byNode;
      this.pendingByService = pending;
      this.generation++;
    } catch (err) {
      this.log.warn({ err }, 'supervisor directory reload failed; keeping the last known rows');
      throw err;
    }
  }

  async start(): Promise<void> {
    await this.refresh().catch(() => {});
    this.timer = setInterval(() => void this.refresh().catch(() => {}), this.refreshMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.inflight?.catch(() => {});
  }
}
