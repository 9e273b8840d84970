// Keeps the registry snapshot fresh without touching the database per request:
// a full reload on every NOTIFY from any node (registrations are rare; 3,000
// instances reload in a few ms), on (re)connect of the LISTEN connection, and
// every REGISTRY_REFRESH seconds as a safety net. When the database is down the
// last good snapshot keeps serving (discovery to known instances goes on).
import type postgres from 'postgres';
import type { Logger } from 'pino';
import { RegistrySnapshot, type InstanceRow, type NameRow, type ServiceRow } from './snapshot.ts';

export const REGISTRY_CHANNEL = 'utilmeta_proxy_registry';

export class RegistryCache {
  private current = RegistrySnapshot.empty();
  private inflight: Promise<RegistrySnapshot> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private unlisten: (() => Promise<void>) | null = null;
  private failing = false;
  /** Bumped on every successful load; tests and metrics read it. */
  generation = 0;
  lastError: Error | null = null;

  /** `listen: false` for the embedded database, whose socket bridge drops notifications. */
  constructor(private sql: postgres.Sql, private log: Logger, private refreshSeconds: number, private useListen = true) {}

  get snapshot(): RegistrySnapshot {
    return this.current;
  }

  /** Reloads now. Concurrent callers share one load; a call during a load schedules one more. */
  refresh(): Promise<RegistrySnapshot> {
    if (this.inflight) {
      this.again = true;
      return this.inflight;
    }
    this.inflight = this.load().finally(() => {
      this.inflight = null;
      if (this.again) {
        this.again = false;
        void this.refresh().catch(() => {});
      }
    });
    return this.inflight;
  }

  private async load(): Promise<RegistrySnapshot> {
    try {
      const [services, names, instances] = await Promise.all([
        this.sql<ServiceRow[]>`SELECT id, name, node_id FROM utilmeta_service ORDER BY id`,
        this.sql<NameRow[]>`SELECT service_id, name FROM utilmeta_service_name_record ORDER BY id`,
        this.sql<InstanceRow[]>`
          SELECT id, service_id, host(host) AS host, port, address, base_url, ops_api, resource_id, remote_id,
                 version, version_major, version_minor, version_patch, weight, connected, avg_load, avg_time, avg_rps
          FROM utilmeta_instance ORDER BY id`,
      ]);
      this.current = new RegistrySnapshot([...services], [...names], [...instances]);
      this.generation++;
      if (this.failing) this.log.info('registry reload recovered');
      this.failing = false;
      this.lastError = null;
      return this.current;
    } catch (err) {
      this.lastError = err as Error;
      if (!this.failing) this.log.warn({ err }, 'registry reload failed; serving the last known registry');
      this.failing = true;
      throw err;
    }
  }

  async start(): Promise<void> {
    await this.refresh();
    if (this.useListen) try {
      const sub = await this.sql.listen(
        REGISTRY_CHANNEL,
        () => void this.refresh().catch(() => {}),
        // Also runs after postgres.js re-establishes the LISTEN connection: reload
        // to pick up whatever was notified while it was down.
        () => void this.refresh().catch(() => {}),
      );
      this.unlisten = sub.unlisten;
    } catch (err) {
      this.log.warn({ err }, 'LISTEN unavailable; relying on periodic registry reloads');
    }
    this.timer = setInterval(() => void this.refresh().catch(() => {}), this.refreshSeconds * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const u = this.unlisten;
    this.unlisten = null;
    if (u) await u().catch(() => {});
    await this.inflight?.catch(() => {});
  }
}
