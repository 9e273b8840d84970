// The platform types' stages: their authentication and target choice come from
// the platform domain; these stages only carry its answers into the exchange.
import type { Config } from '../../config/index.ts';
import type { PlatformAuthority, PlatformCaller } from '../../platform/index.ts';
import { extractToken } from '../../tokens/jwt.ts';
import type { Stage } from '../chain.ts';
import type { Exchange } from '../exchange.ts';

function queryNode(query: string): string | undefined {
  if (!query.includes('node=')) return undefined;
  return new URLSearchParams(query).get('node') ?? undefined;
}

/** supervisor → the instances' base_url, operations → their ops_api. */
export function authenticatePlatform(authority: PlatformAuthority, type: 'supervisor' | 'operations'): Stage {
  return (x) => {
    const c = x.control;
    const input = {
      type,
      nodeId: c.nodeId ?? queryNode(x.req.query),
      bearer: extractToken(x.req.header('authorization')),
      proxyToken: c.proxyToken,
      clusterId: c.clusterId,
      serviceName: c.serviceName,
    };
    // A known node's token is decided synchronously; anything else may read the database first.
    const known = authority.authenticateKnown(input);
    if (known) return admit(x, known, type);
    return authority.authenticate(input).then((caller) => admit(x, caller, type));
  };
}

function admit(x: Exchange, caller: PlatformCaller, type: 'supervisor' | 'operations'): void {
  x.platform = caller;
  x.targetField = type === 'operations' ? 'ops_api' : 'base_url';
  // The service's OperationsAPI reads the node id from these; x-forwarded-for is the
  // external caller, so the call is never treated as local or private.
  x.upstreamHeaders.push(['x-utilmeta-node-id', caller.nodeId], ['x-node-id', caller.nodeId]);
  x.forwardedFor = x.clientIp;
}

/** forward: the node's platform URLs, in order, with its identity headers. */
export function platformTarget(authority: PlatformAuthority, _config: Config): Stage {
  return async (x) => {
    const nodeId = x.control.nodeId!;
    const { entry, urls } = await authority.forwardTarget(nodeId);
    // setdefault semantics: what the service sent as X-Node-ID / X-Node-Key wins.
    if (!x.req.header('x-node-id')) x.upstreamHeaders.push(['x-node-id', nodeId]);
    if (!x.req.header('x-node-key') && entry.publicKey) x.upstreamHeaders.push(['x-node-key', entry.publicKey]);
    x.candidates = urls.map((baseUrl) => ({ baseUrl }));
    x.serviceName = entry.service;
    x.hideInstanceId = true;
    // POSTs to the platform fail over only when the previous URL was never reached.
    x.failover = 'unreached';
  };
}
