// The registry as a live view: a full reload on every NOTIFY from any node
// (registrations are rare; 3,000 instances reload in a few ms), on (re)connect of
// the LISTEN connection, and every REGISTRY_REFRESH seconds as a safety net.
import type postgres from 'postgres';
import type { Logger } from 'pino';
import { LiveView, pgNotifyFeed } from '../live/index.ts';
import { RegistrySnapshot, type InstanceRow, type NameRow, type ServiceRow } from './snapshot.ts';

export const REGISTRY_CHANNEL = 'utilmeta_proxy_registry';

export async function loadRegistry(sql: postgres.Sql): Promise<RegistrySnapshot> {
  const [services, names, instances] = await Promise.all([
    sql<ServiceRow[]>`SELECT id, name, node_id FROM utilmeta_service ORDER BY id`,
    sql<NameRow[]>`SELECT service_id, name FROM utilmeta_service_name_record ORDER BY id`,
    sql<InstanceRow[]>`
      SELECT id, service_id, host(host) AS host, port, address, base_url, ops_api, resource_id, remote_id,
             version, version_major, version_minor, version_patch, weight, connected, production, avg_load, avg_time, avg_rps
      FROM utilmeta_instance ORDER BY id`,
  ]);
  return new RegistrySnapshot([...services], [...names], [...instances]);
}

export class RegistryCache {
  readonly view: LiveView<RegistrySnapshot>;
  private readonly swapListeners: Array<(next: RegistrySnapshot) => void> = [];

  /** `listen: false` for the embedded database, whose socket bridge drops notifications. */
  constructor(sql: postgres.Sql, log: Logger, refreshSeconds: number, useListen = true) {
    this.view = new LiveView({
      name: 'registry',
      log,
      load: () => loadRegistry(sql),
      initial: RegistrySnapshot.empty(),
      feeds: useListen ? [pgNotifyFeed(sql, REGISTRY_CHANNEL)] : [],
      resyncMs: refreshSeconds * 1000,
      onSwap: (next) => {
        for (const cb of this.swapListeners) cb(next);
      },
    });
  }

  /** Called after every reload with the new snapshot (dependent state, e.g. health, drops what is gone). */
  onSwap(cb: (next: RegistrySnapshot) => void): void {
    this.swapListeners.push(cb);
  }

  get snapshot(): RegistrySnapshot {
    return this.view.current;
  }

  get generation(): number {
    return this.view.generation;
  }

  get lastError(): Error | null {
    return this.view.lastError;
  }

  refresh(): Promise<RegistrySnapshot> {
    return this.view.refresh();
  }

  start(): Promise<void> {
    return this.view.start();
  }

  stop(): Promise<void> {
    return this.view.stop();
  }
}
