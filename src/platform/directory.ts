// In-memory view of the ops database's utilmeta_supervisor rows for the proxy's
// hot path (supervisor/operations/forward routing and token keys). Python
// services write these rows too (the platform's callback runs save_supervisor
// inside the service), and the proxy must not alter their tables with triggers,
// so the live view is polled (no change feed); an unknown node id triggers one
// rate-limited lookup.
import type postgres from 'postgres';
import type { Logger } from 'pino';
import { LiveView } from '../live/index.ts';

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

/** The rows indexed the way the hot path asks for them, built once per load. */
class DirectoryIndex {
  /** Supervisor.filter(node_id=…) semantics: connected, enabled, local or with a key. Ordered by id. */
  readonly usable = new Map<string, SupervisorEntry[]>();
  /** Rows usable to verify node tokens: enabled with a public key. */
  readonly withKeys = new Map<string, SupervisorEntry[]>();
  readonly known = new Set<string>();
  readonly pending = new Map<string, SupervisorEntry[]>();

  constructor(rows: Row[]) {
    const push = (m: Map<string, SupervisorEntry[]>, k: string, e: SupervisorEntry) => {
      const list = m.get(k);
      if (list) list.push(e);
      else m.set(k, [e]);
    };
    for (const r of rows) {
      const e = toEntry(r);
      if (e.nodeId) {
        this.known.add(e.nodeId);
        if (!e.disabled && (e.local || e.publicKey !== null)) push(this.usable, e.nodeId, e);
        if (!e.disabled && e.publicKey !== null) push(this.withKeys, e.nodeId, e);
      } else if (e.pending && !e.disabled) push(this.pending, e.service, e);
    }
  }
}

const NONE: SupervisorEntry[] = [];

export class SupervisorDirectory {
  private readonly view: LiveView<DirectoryIndex>;
  private misses = new Map<string, number>();

  constructor(sql: postgres.Sql, log: Logger, refreshMs = 5000, private missTtlMs = 2000) {
    this.view = new LiveView({
      name: 'supervisor directory',
      log,
      initial: new DirectoryIndex([]),
      resyncMs: refreshMs,
      load: async () => new DirectoryIndex(await sql<Row[]>`
        SELECT id, service, node_id, base_url, backup_urls, public_key, local, disabled,
               (node_id IS NULL AND init_key IS NOT NULL) AS pending
        FROM utilmeta_supervisor ORDER BY id`),
    });
  }

  get generation(): number {
    return this.view.generation;
  }

  forNode(nodeId: string): SupervisorEntry[] {
    return this.view.current.usable.get(nodeId) ?? NONE;
  }

  tokenKeys(nodeId: string): SupervisorEntry[] {
    return this.view.current.withKeys.get(nodeId) ?? NONE;
  }

  pendingFor(service: string): SupervisorEntry[] {
    return this.view.current.pending.get(service) ?? NONE;
  }

  /** Looks a node up in the database when the view does not know it (at most once per missTtlMs). */
  /** The node has a row in the current view (ensureNode would return at once). */
  knows(nodeId: string): boolean {
    return this.view.current.known.has(nodeId);
  }

  async ensureNode(nodeId: string): Promise<void> {
    if (this.knows(nodeId)) return;
    const last = this.misses.get(nodeId);
    if (last !== undefined && Date.now() - last < this.missTtlMs) return;
    if (this.misses.size > 10_000) this.misses.clear();
    this.misses.set(nodeId, Date.now());
    await this.refresh().catch(() => {});
  }

  async refresh(): Promise<void> {
    await this.view.refresh();
  }

  start(): Promise<void> {
    return this.view.startLenient();
  }

  stop(): Promise<void> {
    return this.view.stop();
  }
}
