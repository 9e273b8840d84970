// The access plane's stages. Discovery: for a service whose authorization is on,
// authenticate the caller (bearer token, SigV4, or the app bound to the calling
// instance) and decide from memory; platform types: refuse revoked platform
// token ids at the edge and apply a service's supervisor policy. A service with
// authorization OFF costs one map lookup.
import { RawReply } from '../../api/respond.ts';
import type { Config } from '../../config/index.ts';
import { DomainError } from '../../core/errors.ts';
import type { HeaderList } from '../../http/types.ts';
import {
  appBoundTo, decide, decideSupervisor, resolveCredential, sigv4ErrorResponse, sigv4NeedsBody, sha256Hex, EMPTY_SHA256,
  testInstancesOnly, type AccessView, type Principal, type AuthFailure, type SigV4Options, type Allow, type DecisionRequest,
} from '../../access/index.ts';
import type { SessionIndex, SessionSpec } from '../../access/sessions.ts';
import type { Exchange } from '../exchange.ts';
import type { Stage } from '../chain.ts';

export interface AccessDeps {
  view: AccessView;
  sigv4: SigV4Options;
  maxStalenessMs: number;
  /** Per-decision counters (result, reason, credential). */
  onDecision?: (result: string, reason: string, cred: string) => void;
  onSigV4Failure?: (code: string) => void;
  /** Long-lived exchanges: registered on ALLOW, closed when their authorization ends. */
  sessions?: SessionIndex;
}

function jsonReply(status: number, headers: Record<string, string>, body: unknown, state: string, close = false): RawReply {
  const h: HeaderList = [['content-type', 'application/json']];
  for (const [k, v] of Object.entries(headers)) h.push([k, v]);
  if (close) h.push(CLOSE);
  return new RawReply(status, h, JSON.stringify(body), state);
}

/**
 * On an access refusal: the connection is not kept for reuse. uWS cannot find
 * an idle connection again once its principal's access ended, so the refusal
 * of its next request is what closes it (node:http closes it at once).
 */
const CLOSE = ['connection', 'close'] as const;

function credLabel(p: Principal | AuthFailure | null): string {
  if (p === null) return 'none';
  if (p.kind === 'failure') return 'invalid';
  return p.via;
}

export function authorizeDiscovery(deps: AccessDeps, config: Config): Stage {
  return (x) => {
    const svc = x.service!;
    const snap = deps.view.current;
    const settings = snap.state.services.get(svc.id);
    if (!settings || settings.mode === 'OFF') {
      if (!deps.view.ready && settings === undefined && snap.seq === 0) return; // nothing loaded yet: services default to OFF
      return;
    }
    if (!deps.view.ready) throw new DomainError('unavailable', 'authorization data is not loaded yet', { state: 'authz_unavailable' });
    const req = x.req;
    if (req.hasBody && sigv4NeedsBody(req.headers, req.query)) {
      // The signature covers the body: read it (within the body limit) before deciding.
      return req.readBody(config.bodyLimit).then((body) => {
        x.body = body;
        decideDiscovery(deps, x, sha256Hex(body));
      });
    }
    decideDiscovery(deps, x, req.hasBody ? undefined : EMPTY_SHA256);
  };
}

function decideDiscovery(deps: AccessDeps, x: Exchange, bodySha256: string | undefined): void {
  const snap = deps.view.current;
  const req = x.req;
  const svc = x.service!;
  const now = deps.view.now();
  const cred = resolveCredential(snap, {
    method: req.method, rawPath: req.path, rawQuery: req.query, headers: req.headers, host: req.header('host'), surface: 'proxy', bodySha256,
  }, now, deps.sigv4);
  const mode = snap.state.services.get(svc.id)!.mode;
  if (cred.kind === 'sigv4_failure') {
    deps.onSigV4Failure?.(cred.failure.type);
    if (mode === 'ENFORCE') {
      const r = sigv4ErrorResponse(cred.failure, x.requestId);
      deps.onDecision?.('deny', cred.failure.state, 'sigv4');
      x.authz = { result: 'deny', reason: cred.failure.state };
      throw new RawReply(r.status, [...Object.entries(r.headers), CLOSE], r.body, cred.failure.state);
    }
  }
  let principal: Principal | AuthFailure | null = null;
  if (cred.kind === 'principal') principal = cred.principal;
  else if (cred.kind === 'failure') principal = cred.failure;
  else if (cred.kind === 'none') principal = x.caller ? appBoundTo(snap.state, x.caller.serviceId) : null;
  const d = decide(snap.state, { serviceId: svc.id, serviceName: svc.name, method: req.method, rawPath: x.path }, principal, now, {
    stalenessMs: deps.view.stalenessMs(), maxStalenessMs: deps.maxStalenessMs,
  });
  const label = credLabel(principal);
  if (d.result === 'DENY') {
    deps.onDecision?.(d.audit ? 'audit_deny' : 'deny', d.state, label);
    x.authz = { result: 'deny', reason: d.state, api: d.apiId ?? undefined, audit: d.audit || undefined };
    if (d.audit) return;
    throw jsonReply(d.status, d.headers, d.body, d.state, true);
  }
  deps.onDecision?.(d.audit ? 'audit_allow' : 'allow', d.reason, label);
  x.authz = {
    result: 'allow', reason: d.reason, api: d.api?.apiId, audit: d.audit || undefined,
    principal: d.principal ? `${d.principal.type}:${d.principal.id}` : undefined,
  };
  if (d.audit) return;
  for (const [k, v] of Object.entries(d.upstreamHeaders)) x.upstreamHeaders.push([k, v]);
  for (const [k, v] of Object.entries(d.clientHeaders)) x.clientHeaders.push([k, v]);
  if (cred.kind === 'principal' && cred.sigv4) {
    // A consumed signature never reaches the upstream.
    x.stripHeaders = cred.sigv4.stripHeaders;
    x.query = cred.sigv4.stripQuery;
  }
  if (deps.sessions && principal && principal.kind !== 'failure') registerSession(deps.sessions, deps, x, principal, d);
  if (d.testOnly) {
    x.instances = x.instances.filter((i) => !i.production);
    if (x.instances.length === 0) {
      const deny = testInstancesOnly({ serviceId: svc.id, serviceName: svc.name, method: req.method, rawPath: x.path }, d);
      throw jsonReply(deny.status, deny.headers, deny.body, deny.state);
    }
  }
}

/**
 * Indexes the allowed exchange under what allowed it, so a revocation (or the
 * grant's or credential's end) cuts it while it still streams. The re-check is
 * the same decision against the changed state.
 */
function registerSession(sessions: SessionIndex, deps: AccessDeps, x: Exchange, principal: Principal, d: Allow): void {
  const svc = x.service!;
  const keys = [`service:${svc.id}`];
  if (principal.kind === 'user') keys.push(`user:${principal.userId}`);
  else keys.push(`app:${principal.appId}`);
  if (principal.via === 'bearer') keys.push(`token:${principal.tokenId}`);
  else if (principal.via === 'sigv4') keys.push(`ak:${principal.accessKeyId}`);
  if (d.grant) keys.push(`grant:${d.grant.id}`);
  if (d.api) keys.push(`api:${d.api.apiId}`);
  x.session = sessions.register({
    keys,
    deadline: d.deadline,
    recheck: recheckOf(deps, { serviceId: svc.id, serviceName: svc.name, method: x.req.method, rawPath: x.path }, principal),
    close: (reason) => (x.cut ? x.cut(reason) : x.res.abort()),
  });
}

/** Made apart from the exchange so that the registration of an idle connection does not keep the exchange alive. */
function recheckOf(deps: AccessDeps, req: DecisionRequest, principal: Principal): SessionSpec['recheck'] {
  return (state) => {
    const again = decide(state, req, principal, deps.view.now(), { stalenessMs: 0, maxStalenessMs: Number.POSITIVE_INFINITY });
    return again.result === 'ALLOW' || again.audit;
  };
}

/** supervisor and operations: the edge jti denylist and the supervisor policy. */
export function authorizePlatform(deps: AccessDeps, type: 'supervisor' | 'operations'): Stage {
  return (x) => {
    const p = x.platform!;
    const snap = deps.view.current;
    const jti = p.claims.jti;
    if (typeof jti === 'string' && snap.state.revokedJtis.has(jti)) {
      throw new DomainError('unauthenticated', 'platform token revoked', { state: 'token_revoked' });
    }
    if (type !== 'supervisor') return;
    const svcId = x.snapshot.service(p.service)?.id;
    if (svcId === undefined) return;
    const d = decideSupervisor(snap.state, svcId, x.req.method, { sub: p.claims.sub, jti });
    if (d.result === 'DENY') throw jsonReply(d.status, {}, { error: d.message, state: d.state, service: p.service, ...(d.required ? { required: d.required } : {}) }, d.state);
    x.testOnly = d.testOnly;
  };
}

/**
 * At the choose point of the platform types (their instances are resolved after authorize):
 * a request the TEST permission alone allowed goes only to non-production instances.
 */
export function testInstancesOnlyStage(): Stage {
  return (x) => {
    if (!x.testOnly) return;
    x.instances = x.instances.filter((i) => !i.production);
    if (x.instances.length === 0) {
      const name = x.serviceName ?? x.platform?.service ?? '';
      throw jsonReply(403, {}, { error: `TEST permission only reaches non-production instances, and service '${name}' has none`, state: 'test_instances_only', service: name }, 'test_instances_only');
    }
  };
}
