// Health at the choose point: instances out of rotation (draining, ejected,
// held down by probes) leave the candidate list before it is fixed. The order
// of the others is kept. See InstanceHealth.filter for the panic rule (every
// non-draining instance is out: all of them are tried rather than none).
import type { Stage } from '../chain.ts';

export interface HealthFilter {
  filter<T extends { readonly id: string }>(instances: readonly T[]): T[];
}

export function healthyInstances(health: HealthFilter): Stage {
  return (x) => {
    if (x.instances.length > 0) x.instances = health.filter(x.instances);
  };
}
