// Who is calling, for the types whose callers are services inside the network
// (discovery, forward): the caller is matched by its host against registered
// instances (the original matched by a header anyone can send).
import type { Config } from '../../config/index.ts';
import { DomainError } from '../../core/errors.ts';
import { isPrivateIp } from '../../net/ip.ts';
import type { Stage } from '../chain.ts';

export function requireServiceName(): Stage {
  return (x) => {
    if (!x.control.serviceName) throw new DomainError('invalid', 'discovery requires the X-UtilMeta-Service-Name header');
  };
}

export function requireNodeId(): Stage {
  return (x) => {
    if (!x.control.nodeId) throw new DomainError('invalid', 'forward requires the X-Node-ID header', { state: 'node_required' });
  };
}

/** PRIVATE, VALIDATE_FORWARD_IPS, and the source headers the upstream reads. */
export function identifyCaller(config: Config, type: 'discovery' | 'forward'): Stage {
  return (x) => {
    if (config.private && !isPrivateIp(x.clientIp)) {
      throw new DomainError('forbidden', `${type} is only open to private network clients (PRIVATE is set); your address is ${x.clientIp}`);
    }
    if (type === 'forward' && config.supervisor.clusterId) x.upstreamHeaders.push(['x-cluster-id', config.supervisor.clusterId]);
    const caller = x.snapshot.instancesAt(x.clientIp)[0];
    if (!caller) {
      if (config.validateForwardIps) throw new DomainError('forbidden', `caller ${x.clientIp} is not a registered instance (VALIDATE_FORWARD_IPS is set)`);
      return;
    }
    x.caller = caller;
    if (type === 'forward') {
      if (caller.remoteId) x.upstreamHeaders.push(['x-source-instance-id', caller.remoteId]);
      return;
    }
    if (caller.remoteId) x.upstreamHeaders.push(['x-utilmeta-source-instance-id', caller.remoteId]);
    // The original sends the proxy-local service id here; kept for compatibility,
    // with the name alongside so services need not know proxy ids.
    x.upstreamHeaders.push(['x-utilmeta-source-service', caller.serviceId], ['x-utilmeta-source-service-name', caller.serviceName]);
  };
}
