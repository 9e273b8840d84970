// The platform's proxy types (spec §1.5.4 b, c), as small mode functions:
//   supervisor / operations — platform (or an admin browser) → a service;
//   forward                 — a service's management traffic → the platform.
// Differences from the original, each deliberate (spec §6):
//   * `supervisor` is real: it targets the instance base_url (§6.3);
//   * token failures are 4xx with a state, never 500 (§6.16);
//   * node tokens are checked at the proxy (signature, nid, iss, exp/nbf), the
//     cluster token also by aud and cluster id (§6.17);
//   * the first callback for a node without a row is only let through for a
//     service that has a pending placeholder row (§6.17);
//   * forward targets pass the trust check, so a tampered row cannot redirect (§3.1);
//   * a wrong X-UtilMeta-Cluster-Id is 403 `cluster_mismatch` (the original said 404);
//   * a missing node id is 400 `node_required` (the original said 404).
import type { Config } from '../config/index.ts';
import { HttpError } from '../api/respond.ts';
import { isPrivateIp } from '../net/ip.ts';
import { extractToken, verifyToken, type TokenFailure } from '../tokens/jwt.ts';
import type { SupervisorDirectory, SupervisorEntry } from '../platform/directory.ts';
import { isTrustedSupervisorUrl } from '../platform/trust.ts';
import { candidates, resolveService } from '../registry/select.ts';
import type { Mode, ModeResult } from '../proxy/index.ts';

export interface PlatformModeDeps {
  config: Config;
  directory: SupervisorDirectory;
  /** The cluster public key (JWK JSON), when the platform link is configured. */
  clusterKey: string | null;
}

function tokenError(f: TokenFailure): HttpError {
  return new HttpError(f.status, f.message, f.state);
}

function queryNode(query: string): string | undefined {
  if (!query.includes('node=')) return undefined;
  return new URLSearchParams(query).get('node') ?? undefined;
}

/** supervisor (→ base_url) and operations (→ ops_api). */
export function operationsMode(deps: PlatformModeDeps, target: 'base_url' | 'ops_api'): Mode {
  const { config, directory } = deps;
  return async ({ req, control, clientIp, snapshot }): Promise<ModeResult> => {
    const nodeId = control.nodeId ?? queryNode(req.query);
    if (!nodeId) throw new HttpError(400, `${control.type} requires the X-UtilMeta-Node-Id header or a ?node= query parameter`, 'node_required');
    await directory.ensureNode(nodeId);
    let entry: SupervisorEntry | undefined;
    const bearer = extractToken(req.header('authorization'));
    if (bearer) {
      // Token branch: a node token signed with the node key of one of its rows.
      const keys = directory.tokenKeys(nodeId);
      if (keys.length === 0) throw new HttpError(404, `node '${nodeId}' is not connected through this proxy`, 'supervisor_not_found');
      let failure: TokenFailure | undefined;
      for (const e of keys) {
        const r = await verifyToken(bearer, { key: e.publicKey!, nodeId, issuerBase: e.baseUrl });
        if (r.ok) {
          entry = e;
          break;
        }
        failure = r;
      }
      if (!entry) throw tokenError(failure!);
    } else if (control.proxyToken) {
      // Proxy-auth branch: a cluster token from the platform.
      if (!deps.clusterKey || !config.supervisor.clusterId || !config.supervisor.baseUrl) {
        throw new HttpError(501, 'the platform link is not configured on this proxy (SUPERVISOR_BASE_URL, SUPERVISOR_CLUSTER_ID, SUPERVISOR_CLUSTER_KEY)');
      }
      if (control.clusterId !== config.supervisor.clusterId) {
        throw new HttpError(403, `X-UtilMeta-Cluster-Id '${control.clusterId ?? ''}' does not match this cluster`, 'cluster_mismatch');
      }
      const r = await verifyToken(control.proxyToken, {
        key: deps.clusterKey, nodeId, issuerBase: config.supervisor.baseUrl, audience: config.supervisor.clusterId,
      });
      if (!r.ok) throw tokenError(r);
      entry = directory.forNode(nodeId)[0];
      if (!entry) {
        // First callback of a connect: the node has no row yet (§3.6.2 step 3).
        const service = control.serviceName;
        if (!service) throw new HttpError(400, `node '${nodeId}' is not connected yet: X-UtilMeta-Service-Name is required for its first callback`, 'supervisor_not_found');
        if (directory.pendingFor(service).length === 0) await directory.refresh().catch(() => {});
        if (directory.pendingFor(service).length === 0) {
          throw new HttpError(404, `no connect is pending for service '${service}'`, 'supervisor_not_found');
        }
        const r2 = resolveService(snapshot, service, { instanceId: control.instanceId });
        return {
          candidates: candidates(r2.instances, target),
          headers: [['x-utilmeta-node-id', nodeId], ['x-node-id', nodeId]],
          forwardedFor: clientIp,
          service: r2.serviceName,
        };
      }
    } else {
      throw new HttpError(407, `${control.type} requires Authorization (a node token) or Proxy-Authorization (a cluster token)`, 'token_required', [['proxy-authenticate', 'Bearer']]);
    }
    const r = resolveService(snapshot, entry.service, { instanceId: control.instanceId, acceptVersion: control.acceptVersion });
    return {
      candidates: candidates(r.instances, target),
      // The service's OperationsAPI reads the node id from these; x-forwarded-for is the
      // external caller so the call is never treated as local or private (§3.8).
      headers: [['x-utilmeta-node-id', nodeId], ['x-node-id', nodeId]],
      forwardedFor: clientIp,
      service: r.serviceName,
    };
  };
}

/** forward: a service's outbound platform traffic (spec §1.5.4 c). */
export function forwardMode(deps: PlatformModeDeps): Mode {
  const { config, directory } = deps;
  const trust = { production: config.production, trustedHosts: config.supervisor.trustedHosts };
  return async ({ req, control, clientIp, snapshot }): Promise<ModeResult> => {
    const nodeId = control.nodeId;
    if (!nodeId) throw new HttpError(400, 'forward requires the X-Node-ID header', 'node_required');
    if (config.private && !isPrivateIp(clientIp)) {
      throw new HttpError(403, `forward is only open to private network clients (PRIVATE is set); your address is ${clientIp}`);
    }
    const headers: Array<[string, string]> = [];
    if (config.supervisor.clusterId) headers.push(['x-cluster-id', config.supervisor.clusterId]);
    const caller = snapshot.instancesAt(clientIp)[0];
    if (caller?.remoteId) headers.push(['x-source-instance-id', caller.remoteId]);
    else if (!caller && config.validateForwardIps) {
      throw new HttpError(403, `caller ${clientIp} is not a registered instance (VALIDATE_FORWARD_IPS is set)`);
    }
    await directory.ensureNode(nodeId);
    const entry = directory.forNode(nodeId)[0];
    if (!entry) throw new HttpError(404, `node '${nodeId}' is not connected (no supervisor row)`, 'supervisor_not_found');
    // setdefault semantics: what the service sent as X-Node-ID / X-Node-Key wins.
    if (!req.header('x-node-id')) headers.push(['x-node-id', nodeId]);
    if (!req.header('x-node-key') && entry.publicKey) headers.push(['x-node-key', entry.publicKey]);
    const urls = [entry.baseUrl, ...entry.backupUrls].filter((u) => isTrustedSupervisorUrl(u, trust));
    if (urls.length === 0) {
      throw new HttpError(502, `no trusted platform URL for node '${nodeId}' (base_url and backup_urls fail the trust check)`, 'untrusted_supervisor');
    }
    return {
      candidates: urls.map((baseUrl) => ({ baseUrl })),
      headers,
      service: entry.service,
      hideInstanceId: true,
      failover: 'unreached',
    };
  };
}
