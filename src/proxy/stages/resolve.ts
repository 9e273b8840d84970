// Service resolution: name (or the platform caller's service) → the instances
// that may serve the request, best first.
import { resolveService } from '../../registry/select.ts';
import type { Stage } from '../chain.ts';

export function resolveByName(): Stage {
  return (x) => {
    const c = x.control;
    const r = resolveService(x.snapshot, c.serviceName!, { instanceId: c.instanceId, acceptVersion: c.acceptVersion });
    x.serviceName = r.serviceName;
    x.service = x.snapshot.service(r.serviceName);
    x.instances = r.instances;
  };
}

export function resolvePlatformService(): Stage {
  return (x) => {
    const p = x.platform!;
    const c = x.control;
    // A first callback (pending connect) targets the service whatever its version.
    const r = resolveService(x.snapshot, p.service, p.pending ? { instanceId: c.instanceId } : { instanceId: c.instanceId, acceptVersion: c.acceptVersion });
    x.serviceName = r.serviceName;
    x.service = x.snapshot.service(r.serviceName);
    x.instances = r.instances;
  };
}
