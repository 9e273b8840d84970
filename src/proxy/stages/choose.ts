// Instance choice: the resolved instances become upstream candidates, in order.
// Health filtering and test-only routing add their own stages before this one.
import { DomainError } from '../../core/errors.ts';
import type { Stage } from '../chain.ts';

export function chooseInstances(): Stage {
  return (x) => {
    const list = x.instances;
    const ops = x.targetField === 'ops_api';
    const out = new Array(list.length);
    for (let i = 0; i < list.length; i++) {
      const inst = list[i];
      out[i] = { baseUrl: ops ? inst.opsApi : inst.baseUrl, remoteId: inst.remoteId, instanceId: inst.id, serviceId: inst.serviceId };
    }
    x.candidates = out;
  };
}

export function requireCandidates(): Stage {
  return (x) => {
    if (x.candidates.length === 0) throw new DomainError('unavailable', 'no upstream available for this request');
  };
}
