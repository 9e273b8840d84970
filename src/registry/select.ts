// Resolve step: service name → ordered candidate instances (spec §1.5.4 select_service).
import type { RegistrySnapshot, InstanceView } from '../registry/snapshot.ts';
import { parseRange, VersionRangeError } from '../registry/version.ts';
import { DomainError } from '../core/errors.ts';

export interface Resolved {
  serviceName: string;
  serviceId: string;
  instances: InstanceView[];
}

const JITTER = [0.8, 0.9, 1.0, 1.1];

/**
 * Rank positions with ties sharing a position: the original sorted by each
 * average and used list indexes, so equal averages (always, since nothing
 * updates them) made list order decide and the last instance always won.
 * Lower load/time/rps is better.
 */
function ranks(values: number[]): number[] {
  const sorted = [...new Set(values)].sort((a, b) => b - a);
  return values.map((v) => sorted.indexOf(v));
}

/**
 * score = (rank_load + rank_time + rank_rps + 1) × weight × jitter, highest first
 * (the original's formula, reading avg_rps — bug §6.2 — with ties handled).
 */
export function rankInstances(instances: InstanceView[], random: () => number = Math.random): InstanceView[] {
  if (instances.length < 2) return instances;
  const load = ranks(instances.map((i) => i.avgLoad));
  const time = ranks(instances.map((i) => i.avgTime));
  const rps = ranks(instances.map((i) => i.avgRps));
  const scored = instances.map((inst, k) => ({
    inst,
    score: (load[k] + time[k] + rps[k] + 1) * inst.weight * JITTER[Math.floor(random() * JITTER.length)],
  }));
  scored.sort((a, b) => b.score - a.score);
  return scored.map((s) => s.inst);
}

export function resolveService(
  snapshot: RegistrySnapshot,
  serviceName: string,
  opts: { instanceId?: string; acceptVersion?: string },
): Resolved {
  const svc = snapshot.service(serviceName);
  if (!svc) throw new DomainError('not_found', `service '${serviceName}' is not registered`);
  let list = svc.instances.filter((i) => i.connected);
  if (opts.instanceId !== undefined) {
    list = list.filter((i) => i.remoteId === opts.instanceId);
  } else if (opts.acceptVersion !== undefined) {
    let filter;
    try {
      filter = parseRange(opts.acceptVersion);
    } catch (err) {
      if (err instanceof VersionRangeError) throw new DomainError('invalid', err.message);
      throw err;
    }
    if (filter) list = list.filter((i) => filter(i.semver));
  }
  if (list.length === 0) {
    const why = opts.instanceId !== undefined
      ? ` with instance id '${opts.instanceId}'`
      : opts.acceptVersion !== undefined ? ` matching version '${opts.acceptVersion}'` : '';
    throw new DomainError('unavailable', `no connected instance of service '${svc.name}'${why}`);
  }
  return { serviceName: svc.name, serviceId: svc.id, instances: rankInstances(list) };
}
