// The platform's authority over its proxy types, as domain functions the proxy
// chain calls from its stages:
//   supervisor / operations: who is calling (a node token, or the platform's
//     cluster token) and which service it may reach;
//   forward: where a service's management traffic to the platform may go.
// Deliberate differences from the original Python proxy:
//   * token failures are 4xx with a state, never 500;
//   * node tokens are checked here (signature, nid, iss, exp/nbf), cluster tokens
//     also by aud and cluster id;
//   * the first callback for a node without a row only passes for a service with
//     a pending connect (a placeholder row);
//   * forward targets pass the trust check, so a tampered row cannot redirect;
//   * a wrong X-UtilMeta-Cluster-Id is 403 cluster_mismatch, a missing node id 400
//     node_required (the original said 404 for both).
import type { Config } from '../config/index.ts';
import { DomainError, type ErrorKind } from '../core/errors.ts';
import { verifyJwt, verifyToken, type TokenClaims, type TokenFailure } from '../tokens/jwt.ts';
import type { SupervisorDirectory, SupervisorEntry } from './directory.ts';
import { isTrustedSupervisorUrl } from './trust.ts';

export interface PlatformAuthorityDeps {
  config: Config;
  directory: SupervisorDirectory;
  /** The cluster public key (JWK JSON), when the platform link is configured. */
  clusterKey: string | null;
}

export interface PlatformCallInput {
  type: 'supervisor' | 'operations';
  nodeId: string | undefined;
  /** The token of Authorization (a node token) as extractToken takes it out of the header value, if any. */
  bearer: string | null;
  /** Proxy-Authorization without its scheme (a cluster token), if any. */
  proxyToken: string | undefined;
  clusterId: string | undefined;
  serviceName: string | undefined;
}

export interface PlatformCaller {
  nodeId: string;
  /** The service the call may reach. */
  service: string;
  /** The first callback of a connect: the node has no row yet, only a placeholder. */
  pending: boolean;
  /** Claims of the token that authenticated the call. */
  claims: TokenClaims;
}

export interface ForwardTarget {
  entry: SupervisorEntry;
  /** base_url, then backup_urls, each passing the trust check. */
  urls: string[];
}

// Token failures keep the original's statuses (409 for a mismatch, 422 for a missing expiry).
const KIND_OF_STATUS: Record<number, ErrorKind> = {
  400: 'invalid', 401: 'unauthenticated', 403: 'forbidden', 404: 'not_found', 409: 'conflict', 422: 'unprocessable', 500: 'internal',
};

function tokenError(f: TokenFailure): DomainError {
  return new DomainError(KIND_OF_STATUS[f.status] ?? 'unauthenticated', f.message, { state: f.state });
}

export class PlatformAuthority {
  private readonly trust: { production: boolean; trustedHosts: string[] };

  constructor(private readonly deps: PlatformAuthorityDeps) {
    this.trust = { production: deps.config.production, trustedHosts: deps.config.supervisor.trustedHosts };
  }

  /**
   * The common call decided at once: a node token for a node this proxy already
   * knows (its signature memoized after the first call). null: use authenticate().
   */
  authenticateKnown(input: PlatformCallInput): PlatformCaller | null {
    const nodeId = input.nodeId;
    if (!nodeId || !input.bearer || !this.deps.directory.knows(nodeId)) return null;
    return this.nodeToken(nodeId, input.bearer);
  }

  /** A node token, signed with the node key of one of the node's rows. */
  private nodeToken(nodeId: string, bearer: string): PlatformCaller {
    const keys = this.deps.directory.tokenKeys(nodeId);
    if (keys.length === 0) throw new DomainError('not_found', `node '${nodeId}' is not connected through this proxy`, { state: 'supervisor_not_found' });
    let failure: TokenFailure | undefined;
    for (const e of keys) {
      const r = verifyJwt(bearer, { key: e.publicKey!, nodeId, issuerBase: e.baseUrl });
      if (r.ok) return { nodeId, service: e.service, pending: false, claims: r.claims };
      failure = r;
    }
    throw tokenError(failure!);
  }

  /** supervisor and operations: a node token, or the platform's cluster token. */
  async authenticate(input: PlatformCallInput): Promise<PlatformCaller> {
    const { config, directory } = this.deps;
    const nodeId = input.nodeId;
    if (!nodeId) throw new DomainError('invalid', `${input.type} requires the X-UtilMeta-Node-Id header or a ?node= query parameter`, { state: 'node_required' });
    await directory.ensureNode(nodeId);
    if (input.bearer) return this.nodeToken(nodeId, input.bearer);
    if (!input.proxyToken) {
      throw new DomainError('credentials_required', `${input.type} requires Authorization (a node token) or Proxy-Authorization (a cluster token)`, { state: 'token_required' });
    }
    // A cluster token from the platform.
    if (!this.deps.clusterKey || !config.supervisor.clusterId || !config.supervisor.baseUrl) {
      throw new DomainError('not_implemented', 'the platform link is not configured on this proxy (SUPERVISOR_BASE_URL, SUPERVISOR_CLUSTER_ID, SUPERVISOR_CLUSTER_KEY)');
    }
    if (input.clusterId !== config.supervisor.clusterId) {
      throw new DomainError('forbidden', `X-UtilMeta-Cluster-Id '${input.clusterId ?? ''}' does not match this cluster`, { state: 'cluster_mismatch' });
    }
    const r = await verifyToken(input.proxyToken, {
      key: this.deps.clusterKey, nodeId, issuerBase: config.supervisor.baseUrl, audience: config.supervisor.clusterId,
    });
    if (!r.ok) throw tokenError(r);
    const entry = directory.forNode(nodeId)[0];
    if (entry) return { nodeId, service: entry.service, pending: false, claims: r.claims };
    // The first callback of a connect: the node has no row yet.
    const service = input.serviceName;
    if (!service) {
      throw new DomainError('invalid', `node '${nodeId}' is not connected yet: X-UtilMeta-Service-Name is required for its first callback`, { state: 'supervisor_not_found' });
    }
    if (directory.pendingFor(service).length === 0) await directory.refresh().catch(() => {});
    if (directory.pendingFor(service).length === 0) {
      throw new DomainError('not_found', `no connect is pending for service '${service}'`, { state: 'supervisor_not_found' });
    }
    return { nodeId, service, pending: true, claims: r.claims };
  }

  /** forward: the platform URLs a node's management traffic may go to. */
  async forwardTarget(nodeId: string | undefined): Promise<ForwardTarget> {
    if (!nodeId) throw new DomainError('invalid', 'forward requires the X-Node-ID header', { state: 'node_required' });
    const { directory } = this.deps;
    await directory.ensureNode(nodeId);
    const entry = directory.forNode(nodeId)[0];
    if (!entry) throw new DomainError('not_found', `node '${nodeId}' is not connected (no supervisor row)`, { state: 'supervisor_not_found' });
    const urls = [entry.baseUrl, ...entry.backupUrls].filter((u) => isTrustedSupervisorUrl(u, this.trust));
    if (urls.length === 0) {
      throw new DomainError('bad_gateway', `no trusted platform URL for node '${nodeId}' (base_url and backup_urls fail the trust check)`, { state: 'untrusted_supervisor' });
    }
    return { entry, urls };
  }
}
