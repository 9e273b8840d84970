// An immutable in-memory view of the registry tables. The request hot path reads
// only this; it is rebuilt from the database on change (see cache.ts).
import type { Version } from './version.ts';

export interface InstanceView {
  readonly id: string;
  readonly serviceId: string;
  readonly serviceName: string;
  readonly host: string;
  readonly port: number | null;
  readonly address: string;
  readonly baseUrl: string;
  readonly opsApi: string;
  readonly resourceId: string;
  readonly remoteId: string | null;
  readonly version: string;
  readonly semver: Version;
  readonly weight: number;
  readonly connected: boolean;
  /** Registered as a production instance (TEST permission only reaches the others). */
  readonly production: boolean;
  readonly avgLoad: number;
  readonly avgTime: number;
  readonly avgRps: number;
}

export interface ServiceView {
  readonly id: string;
  readonly name: string;
  readonly nodeId: string | null;
  readonly names: readonly string[];
  readonly instances: readonly InstanceView[];
}

export interface ServiceRow { id: string; name: string; node_id: string | null }
export interface NameRow { service_id: string; name: string }
export interface InstanceRow {
  id: string; service_id: string; host: string; port: number | null; address: string;
  base_url: string; ops_api: string; resource_id: string; remote_id: string | null;
  version: string; version_major: number; version_minor: number; version_patch: number;
  weight: string; connected: boolean; production: boolean; avg_load: string; avg_time: string; avg_rps: string;
}

export class RegistrySnapshot {
  /** Every current and former name → its service (spec: lookup by name or name record). */
  private readonly byName = new Map<string, ServiceView>();
  private readonly byHost = new Map<string, InstanceView[]>();
  readonly services: readonly ServiceView[];
  readonly instanceCount: number;

  constructor(services: ServiceRow[], names: NameRow[], instances: InstanceRow[], readonly loadedAt = Date.now()) {
    const svcInstances = new Map<string, InstanceView[]>();
    const svcNames = new Map<string, string[]>();
    const svcById = new Map(services.map((s) => [s.id, s]));
    for (const n of names) {
      const list = svcNames.get(n.service_id) ?? [];
      list.push(n.name);
      svcNames.set(n.service_id, list);
    }
    for (const r of instances) {
      const svc = svcById.get(r.service_id);
      if (!svc) continue;
      const inst: InstanceView = {
        id: r.id, serviceId: r.service_id, serviceName: svc.name, host: r.host, port: r.port,
        address: r.address, baseUrl: r.base_url, opsApi: r.ops_api, resourceId: r.resource_id,
        remoteId: r.remote_id, version: r.version,
        semver: [r.version_major, r.version_minor, r.version_patch],
        weight: Number(r.weight), connected: r.connected, production: r.production === true,
        avgLoad: Number(r.avg_load), avgTime: Number(r.avg_time), avgRps: Number(r.avg_rps),
      };
      const list = svcInstances.get(r.service_id) ?? [];
      list.push(inst);
      svcInstances.set(r.service_id, list);
      const hostList = this.byHost.get(r.host) ?? [];
      hostList.push(inst);
      this.byHost.set(r.host, hostList);
    }
    const views: ServiceView[] = [];
    for (const s of services) {
      const view: ServiceView = {
        id: s.id, name: s.name, nodeId: s.node_id,
        names: svcNames.get(s.id) ?? [s.name],
        instances: svcInstances.get(s.id) ?? [],
      };
      views.push(view);
    }
    // Former names first, so a current name always wins over someone's old name.
    for (const v of views) for (const n of v.names) if (!this.byName.has(n)) this.byName.set(n, v);
    for (const v of views) this.byName.set(v.name, v);
    this.services = views;
    this.instanceCount = instances.length;
  }

  static empty(): RegistrySnapshot {
    return new RegistrySnapshot([], [], [], 0);
  }

  service(name: string): ServiceView | undefined {
    return this.byName.get(name);
  }

  /** Registered instances whose host is this IP (callers are identified by host, spec §6.1). */
  instancesAt(ip: string): readonly InstanceView[] {
    return this.byHost.get(ip) ?? [];
  }
}
