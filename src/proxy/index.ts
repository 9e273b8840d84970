// /api/proxy[/<path>] as one explicit chain of small stages per proxy type:
//   decode control headers → authenticate → resolve the service → authorize →
//   choose instances → body policy → forward → respond.
// Nothing here touches the database: the registry and the platform directory
// are in-memory live views. Capabilities (authorization, health) add stages at
// their point of the chain instead of editing the others.
import type { Logger } from 'pino';
import type { IncomingRequest, ResponseWriter } from '../http/types.ts';
import { HttpError, RawReply, corsHeaders, errorBody } from '../api/respond.ts';
import { toHttpError } from '../api/errors.ts';
import type { Config } from '../config/index.ts';
import { DomainError } from '../core/errors.ts';
import type { RegistrySnapshot } from '../registry/snapshot.ts';
import type { PlatformAuthority } from '../platform/index.ts';
import { parseControl, type ProxyType } from './control.ts';
import { compose, type Chain, type Stage } from './chain.ts';
import { Exchange } from './exchange.ts';
import type { RetryPolicy, Upstream } from './upstream.ts';
import type { IdempotencyStore } from '../health/index.ts';
import type { ProxyLogRecord } from '../observability/record.ts';
import {
  authenticatePlatform, bodyPolicy, chooseInstances, forward, identifyCaller, platformTarget, requireCandidates,
  requireCanonicalPath, requireNodeId, requireServiceName, resolveByName, resolvePlatformService, withIdempotency,
  relayWebSocket, WebSocketSessions,
} from './stages/index.ts';
import { invalid } from '../core/errors.ts';

export { Exchange, type WebSocketSummary } from './exchange.ts';
export { WebSocketSessions } from './stages/index.ts';
export { compose, type Stage, type Chain } from './chain.ts';
export { Upstream, UpstreamError, classify, type Candidate, type ForwardOutcome, type AttemptHook, type RetryPolicy } from './upstream.ts';
export type { ProxyType, ProxyControl } from './control.ts';
export type { ProxyLogRecord } from '../observability/record.ts';

/** Stages a capability contributes, by the point of the chain they run at. */
export interface ChainExtensions {
  /** After the caller is known and the service resolved (discovery) or authenticated (platform types). */
  authorize?: Partial<Record<ProxyType, Stage[]>>;
  /** Before the candidates are fixed: filters and reorders instances. */
  choose?: Partial<Record<ProxyType, Stage[]>>;
}

export interface ProxyDeps {
  config: Config;
  log: Logger;
  upstream: Upstream;
  snapshot: () => RegistrySnapshot;
  /** The platform's authority; without it the platform types answer 501. */
  platform?: PlatformAuthority;
  extensions?: ChainExtensions;
  /** A service's retry policy (its retry budget), asked once per request. */
  retryPolicy?: (serviceId: string | undefined) => RetryPolicy | undefined;
  /** Honours Idempotency-Key on unsafe methods (discovery and the platform types). */
  idempotency?: IdempotencyStore;
  onResult?: (r: ProxyLogRecord) => void;
  /** Relayed WebSocket sessions (created from the config when absent). */
  webSockets?: WebSocketSessions;
}

/** WebSocket handshakes: the same stages up to the choice of instances, then the relay. */
const WS_TYPES = ['discovery', 'supervisor', 'operations'] as const;


export function webSocketSessions(config: Config): WebSocketSessions {
  const ws = config.websocket;
  return new WebSocketSessions({ idleTimeout: ws.idleTimeout, maxMessage: ws.maxMessage, highWater: WS_HIGH_WATER, maxBuffer: ws.maxBuffer });
}

/** Bytes queued on one side of a WebSocket session before the other side is paused. */
export const WS_HIGH_WATER = 1024 * 1024;

/** The HTTP chains, and the WebSocket chains in `ws`. */
export function buildChains(deps: ProxyDeps, sessions: WebSocketSessions = deps.webSockets ?? webSocketSessions(deps.config)): Partial<Record<ProxyType, Chain>> & { ws: Partial<Record<ProxyType, Chain>> } {
  const { config, upstream } = deps;
  const ext = (point: keyof ChainExtensions, type: ProxyType): Stage[] => deps.extensions?.[point]?.[type] ?? [];
  const send = forward(upstream, deps.retryPolicy);
  const last = deps.idempotency ? withIdempotency(deps.idempotency, config.bodyLimit, send) : send;
  const tail = (type: ProxyType): Stage[] => [...ext('choose', type), chooseInstances(), requireCandidates(), bodyPolicy(config), last];
  const relay = relayWebSocket(upstream, sessions, deps.retryPolicy);
  const wsTail = (type: ProxyType): Stage[] => [...ext('choose', type), chooseInstances(), requireCandidates(), relay];
  // Path safety runs first in every chain: nothing is resolved or authorized
  // for a path the upstream could read differently.
  const head: Partial<Record<ProxyType, Stage[]>> = {
    discovery: [requireCanonicalPath(), requireServiceName(), identifyCaller(config, 'discovery'), resolveByName(), ...ext('authorize', 'discovery')],
  };
  const platform = deps.platform;
  if (platform) {
    for (const type of ['supervisor', 'operations'] as const) {
      head[type] = [requireCanonicalPath(), authenticatePlatform(platform, type), ...ext('authorize', type), resolvePlatformService()];
    }
  }
  const chains: Partial<Record<ProxyType, Chain>> & { ws: Partial<Record<ProxyType, Chain>> } = { ws: {} };
  for (const type of WS_TYPES) {
    const h = head[type];
    if (!h) continue;
    chains[type] = compose([...h, ...tail(type)]);
    chains.ws[type] = compose([...h, ...wsTail(type)]);
  }
  if (platform) {
    chains.forward = compose([
      requireCanonicalPath(), requireNodeId(), identifyCaller(config, 'forward'), platformTarget(platform, config), ...ext('authorize', 'forward'),
      requireCandidates(), bodyPolicy(config), forward(upstream),
    ]);
  }
  return chains;
}

/**
 * An allowed exchange ended. Its keep-alive connection last carried the
 * principal, so while it stays open it stays registered (same keys, same
 * deadline) until its next request or its close; ending it closes the
 * connection. A listener that cannot watch idle connections (uWS) keeps none.
 */
function settleSession(x: Exchange): void {
  const s = x.session!;
  x.session = undefined;
  if (s.closed) return;
  const conn = x.req.connection;
  if (x.websocket === undefined && x.req.upgrade === null && conn.park(s)) s.idle(conn);
  else s.end();
}

export class ProxyHandler {
  private readonly chains: ReturnType<typeof buildChains>;
  /** Relayed WebSocket sessions (open count, shutdown close). */
  readonly webSockets: WebSocketSessions;

  constructor(private readonly deps: ProxyDeps) {
    this.webSockets = deps.webSockets ?? webSocketSessions(deps.config);
    this.chains = buildChains(deps, this.webSockets);
  }

  /** `path` is the remainder after /api/proxy ('' or '/...'). */
  handle(req: IncomingRequest, res: ResponseWriter, path: string, clientIp: string, requestId: string): void | Promise<void> {
    const x = new Exchange(req, res, path, clientIp, requestId, this.deps.snapshot(), performance.now());
    try {
      x.control = parseControl(req, this.deps.config.defaultTimeout, this.deps.config.maxTimeout);
      const type = x.control.type;
      if (req.upgrade && type === 'forward') throw invalid('WebSocket handshakes are proxied in the discovery, supervisor and operations types only');
      const chain = req.upgrade ? this.chains.ws[type] : this.chains[type];
      if (!chain) throw new DomainError('not_implemented', `proxy type '${x.control.type}' is not enabled on this node (the platform link is not configured)`);
      const p = chain(x);
      if (p) return p.then(() => this.respond(x), (err) => this.fail(x, err));
      this.respond(x);
    } catch (err) {
      this.fail(x, err);
    }
  }

  /** A stage refused the request, or something broke: answer with a JSON error. */
  private fail(x: Exchange, err: unknown): void {
    if (err instanceof RawReply) {
      if (!x.res.aborted) x.res.send(err.status, [...err.headers, ...corsHeaders(x.req), ['x-request-id', x.requestId]], err.body);
      x.outcome = { status: err.status, committed: true, retries: 0, upstreamMs: 0, error: undefined };
      x.state = err.state;
      x.errorMessage = err.message;
      return this.respond(x);
    }
    let e = toHttpError(err, this.deps.config.bodyLimit);
    if (!e) {
      this.deps.log.error({ err, requestId: x.requestId }, 'proxy request failed');
      e = new HttpError(500, 'internal proxy error');
    }
    if (!x.res.aborted) {
      x.res.send(e.status, [['content-type', 'application/json'], ...corsHeaders(x.req), ['x-request-id', x.requestId], ...e.headers], JSON.stringify(errorBody(e)));
    }
    x.outcome = { status: e.status, committed: true, retries: 0, upstreamMs: 0, error: undefined };
    x.state = e.state;
    x.errorMessage = e.message;
    this.respond(x);
  }

  /** The last stage: one log record and the metrics of the exchange. */
  private respond(x: Exchange): void {
    if (x.session !== undefined) settleSession(x);
    const onResult = this.deps.onResult;
    if (!onResult) return;
    const o = x.outcome;
    onResult({
      requestId: x.requestId,
      method: x.req.method,
      path: x.path,
      type: x.control?.type ?? 'invalid',
      service: x.serviceName,
      target: o?.target?.baseUrl,
      status: o?.status ?? 0,
      retries: o?.retries ?? 0,
      durationMs: Math.round((performance.now() - x.started) * 100) / 100,
      upstreamMs: o?.target ? Math.round(o.upstreamMs * 100) / 100 : undefined,
      instance: o?.target?.remoteId ?? undefined,
      error: o?.error?.message ?? x.errorMessage,
      errorKind: o?.error?.kind,
      state: x.state,
      principal: x.authz?.principal,
      api: x.authz?.api,
      authz: x.authz ? `${x.authz.audit ? 'audit:' : ''}${x.authz.result}:${x.authz.reason ?? ''}` : undefined,
      websocket: x.websocket,
    });
  }
}
