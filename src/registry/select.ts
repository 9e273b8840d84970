// Instance selection: service name (and version range or instance id) → the
// connected instances, best first.
import type { RegistrySnapshot, InstanceView, ServiceView } from './snapshot.ts';
import { parseRange, VersionRangeError } from './version.ts';
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

/** (rank_load + rank_time + rank_rps + 1) × weight: the score before jitter. */
export function baseScores(instances: readonly InstanceView[]): number[] {
  const load = ranks(instances.map((i) => i.avgLoad));
  const time = ranks(instances.map((i) => i.avgTime));
  const rps = ranks(instances.map((i) => i.avgRps));
  return instances.map((inst, k) => (load[k] + time[k] + rps[k] + 1) * inst.weight);
}

/**
 * A set of instances with their base scores, computed once per snapshot (the
 * averages only change with it); a request only draws the jitter and sorts.
 */
export class RankedPool {
  readonly base: number[];

  constructor(readonly instances: readonly InstanceView[]) {
    this.base = instances.length > 1 ? baseScores(instances) : [];
  }

  /** score × jitter, highest first (the original's formula, reading avg_rps, with ties handled). */
  pick(random: () => number = Math.random): InstanceView[] {
    const list = this.instances;
    if (list.length < 2) return list as InstanceView[];
    const scored = new Array<{ inst: InstanceView; score: number }>(list.length);
    for (let k = 0; k < list.length; k++) scored[k] = { inst: list[k], score: this.base[k] * JITTER[Math.floor(random() * JITTER.length)] };
    scored.sort((a, b) => b.score - a.score);
    const out = new Array<InstanceView>(list.length);
    for (let k = 0; k < list.length; k++) out[k] = scored[k].inst;
    return out;
  }
}

export function rankInstances(instances: InstanceView[], random: () => number = Math.random): InstanceView[] {
  return new RankedPool(instances).pick(random);
}

/** Version-range pools memoized per service and snapshot (bounded: ranges come from callers). */
const MAX_RANGES = 64;
const rangePools = new WeakMap<ServiceView, Map<string, RankedPool>>();
const connectedPools = new WeakMap<ServiceView, RankedPool>();

function connectedPool(svc: ServiceView): RankedPool {
  let p = connectedPools.get(svc);
  if (!p) connectedPools.set(svc, (p = new RankedPool(svc.instances.filter((i) => i.connected))));
  return p;
}

function rangePool(svc: ServiceView, range: string): RankedPool {
  let byRange = rangePools.get(svc);
  if (!byRange) rangePools.set(svc, (byRange = new Map()));
  let p = byRange.get(range);
  if (p) return p;
  let filter;
  try {
    filter = parseRange(range);
  } catch (err) {
    if (err instanceof VersionRangeError) throw new DomainError('invalid', err.message);
    throw err;
  }
  const all = connectedPool(svc).instances;
  p = filter ? new RankedPool(all.filter((i) => filter(i.semver))) : connectedPool(svc);
  if (byRange.size >= MAX_RANGES) byRange.clear();
  byRange.set(range, p);
  return p;
}

export function resolveService(
  snapshot: RegistrySnapshot,
  serviceName: string,
  opts: { instanceId?: string; acceptVersion?: string },
): Resolved {
  const svc = snapshot.service(serviceName);
  if (!svc) throw new DomainError('not_found', `service '${serviceName}' is not registered`);
  let instances: InstanceView[];
  if (opts.instanceId !== undefined) {
    instances = rankInstances(connectedPool(svc).instances.filter((i) => i.remoteId === opts.instanceId));
  } else if (opts.acceptVersion !== undefined) {
    instances = rangePool(svc, opts.acceptVersion).pick();
  } else {
    instances = connectedPool(svc).pick();
  }
  if (instances.length === 0) {
    const why = opts.instanceId !== undefined
      ? ` with instance id '${opts.instanceId}'`
      : opts.acceptVersion !== undefined ? ` matching version '${opts.acceptVersion}'` : '';
    throw new DomainError('unavailable', `no connected instance of service '${svc.name}'${why}`);
  }
  return { serviceName: svc.name, serviceId: svc.id, instances };
}
