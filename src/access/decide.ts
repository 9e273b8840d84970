// The decision on a proxied discovery request: pure, synchronous, from one decision state.
//
// Order (each step answers and stops):
//   no state loaded             → 503 authz_unavailable
//   service mode OFF            → ALLOW (forward as today)
//   ENFORCE and state too stale → 503 authz_unavailable
//   path not canonical          → 400 path_not_canonical
//   API public (authEnabled=false) → ALLOW (a credential that was sent and failed still fails)
//   credential failed           → its 401/403
//   no credential               → 401 authn_required
//   USER: disabled → 403 principal_disabled; admin or the required bit → ALLOW; TEST → ALLOW testOnly;
//         else 403 permission_denied
//   APP:  disabled → principal_disabled; project outside its dates → project_expired;
//         with per-API grants on: no API → api_not_registered; grant missing/rejected/withdrawn →
//         grant_required; pending → grant_pending; ended → grant_expired | grant_cancelled; else
//         ALLOW until the grant's effective end. Without: the APP authorization's mask, as for users.
// In AUDIT mode the same decision is returned flagged `audit: true`: the caller logs and counts
// it and forwards the request unchanged.

import { hash } from 'node:crypto';
import { PERM, requiredPermission, type Permission } from './permissions.ts';
import { describeNonCanonical } from './canonical-path.ts';
import {
  appMask,
  effectiveEnd,
  grantFor,
  idKey,
  isAdmin,
  routerFor,
  userMask,
  type ApiEntry,
  type AppEntry,
  type AuthMode,
  type DecisionState,
  type GrantEntry,
  type GrantStateName,
  type Id,
  type UserEntry,
} from './decision-state.ts';
import { ALL_PERMISSIONS } from './permissions.ts';

export interface DecisionRequest {
  serviceId: Id;
  /** For messages and the deny body. */
  serviceName: string;
  method: string;
  /** The raw path after `/api/proxy` (query ignored). */
  rawPath: string;
}

export type Principal =
  | { kind: 'user'; userId: string; via: 'bearer'; tokenId: string }
  | { kind: 'user'; userId: string; via: 'sigv4'; accessKeyId: string }
  | { kind: 'app'; appId: string; via: 'sigv4'; accessKeyId: string }
  | { kind: 'app'; appId: string; via: 'instance' };

/** A credential that was sent and did not authenticate (from authenticateBearer, the SigV4 verifier…). */
export interface AuthFailure {
  kind: 'failure';
  status: number;
  state: string;
  message: string;
  headers?: Record<string, string>;
}

export interface DecideOptions {
  /** Milliseconds since the state was last known current. */
  stalenessMs?: number;
  /** Beyond this, ENFORCE services fail closed; 0 or absent = never. */
  maxStalenessMs?: number;
}

export interface Allow {
  result: 'ALLOW';
  /** AUDIT mode: log and count, then forward unchanged (no identity headers, no test-only filter). */
  audit: boolean;
  mode: AuthMode;
  reason: 'off' | 'public' | 'permission' | 'admin' | 'test' | 'grant';
  /** Route only to instances registered with `production=false` (403 test_instances_only when none). */
  testOnly: boolean;
  /** Epoch ms at which this authorization ends (grant end, token or key expiry), or null. */
  deadline: number | null;
  api: ApiEntry | null;
  required: Permission | null;
  grant: { id: string; state: GrantStateName; effectiveEnd: number } | null;
  principal: { type: 'user' | 'app'; id: string; name: string } | null;
  /** Set on the upstream request (inbound x-utilmeta-* are already dropped). */
  upstreamHeaders: Record<string, string>;
  /** Set on the response to the client. */
  clientHeaders: Record<string, string>;
}

export interface Deny {
  result: 'DENY';
  audit: boolean;
  mode: AuthMode | null;
  status: number;
  state: string;
  message: string;
  required: Permission | null;
  apiId: string | null;
  /** Extra response headers (WWW-Authenticate). */
  headers: Record<string, string>;
  /** The proxy's deny body. */
  body: { error: string; state: string; service: string; api_id?: string; required?: Permission };
}

export type Decision = Allow | Deny;

const WEEK = 7 * 86_400_000;
export const WWW_AUTH_BEARER_INVALID = 'Bearer realm="utilmeta-proxy", error="invalid_token"';
export const WWW_AUTH_REQUIRED = 'Bearer realm="utilmeta-proxy", AWS4-HMAC-SHA256';

function deny(req: DecisionRequest, mode: AuthMode | null, status: number, state: string, message: string, extra: { required?: Permission | null; api?: ApiEntry | null; headers?: Record<string, string> } = {}): Deny {
  const body: Deny['body'] = { error: message, state, service: req.serviceName };
  if (extra.api) body.api_id = extra.api.apiId;
  if (extra.required) body.required = extra.required;
  return { result: 'DENY', audit: false, mode, status, state, message, required: extra.required ?? null, apiId: extra.api?.apiId ?? null, headers: extra.headers ?? {}, body };
}

const apiLabel = (api: ApiEntry | null, req: DecisionRequest) => (api ? `${api.method} ${api.pathTemplate}` : `${req.method.toUpperCase()} ${req.rawPath.split('?')[0] || '/'}`);

/** RFC 3339 with milliseconds, UTC. */
const rfc3339 = (ms: number) => new Date(ms).toISOString();
/** IMF-fixdate (RFC 9110), as `Sunset` wants. */
const imfFixdate = (ms: number) => new Date(ms).toUTCString();

function minDeadline(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.min(a, b);
}

/** When the credential behind the principal stops working (token or key expiry), or null. */
function credentialDeadline(state: DecisionState, p: Principal): number | null {
  if (p.via === 'bearer') {
    const h = state.tokenHashById.get(p.tokenId);
    const t = h === undefined ? undefined : state.tokens.get(h);
    return t ? t.expiresAt : null;
  }
  if (p.via === 'sigv4') return state.keys.get(p.accessKeyId)?.expiresAt ?? null;
  return null;
}

function identityHeaders(p: Principal, who: UserEntry | AppEntry, api: ApiEntry | null): Record<string, string> {
  const h: Record<string, string> = {};
  if (p.kind === 'user') {
    const u = who as UserEntry;
    h['x-utilmeta-caller-type'] = 'user';
    h['x-utilmeta-caller-id'] = u.id;
    h['x-utilmeta-caller-name'] = u.account;
  } else {
    const a = who as AppEntry;
    h['x-utilmeta-caller-type'] = 'app';
    h['x-utilmeta-caller-id'] = a.appId;
    h['x-utilmeta-caller-name'] = a.name;
  }
  if (p.via === 'sigv4') h['x-utilmeta-access-key-id'] = p.accessKeyId;
  if (api) h['x-utilmeta-api-id'] = api.apiId;
  return h;
}

function allow(mode: AuthMode, reason: Allow['reason'], fields: Partial<Allow> = {}): Allow {
  return { result: 'ALLOW', audit: false, mode, reason, testOnly: false, deadline: null, api: null, required: null, grant: null, principal: null, upstreamHeaders: {}, clientHeaders: {}, ...fields };
}

function projectValid(state: DecisionState, a: AppEntry, now: number): boolean {
  const p = state.projects.get(a.projectId);
  if (!p) return false;
  return (p.validFrom === null || now >= p.validFrom) && (p.validUntil === null || now < p.validUntil);
}

/** The decision for one request. Never throws for any request or principal. */
export function decide(state: DecisionState | null, req: DecisionRequest, principal: Principal | AuthFailure | null, now: number, opts: DecideOptions = {}): Decision {
  if (state === null) return deny(req, null, 503, 'authz_unavailable', 'authorization data is not loaded yet');
  const sid = idKey(req.serviceId);
  const svc = state.services.get(sid);
  const mode: AuthMode = svc?.mode ?? 'OFF';
  if (mode === 'OFF') return allow('OFF', 'off');
  if (mode === 'ENFORCE' && opts.maxStalenessMs && (opts.stalenessMs ?? 0) > opts.maxStalenessMs) {
    return deny(req, mode, 503, 'authz_unavailable', 'authorization data is stale: the database has been unreachable too long');
  }
  const d = evaluate(state, svc!.apisAuthEnabled, mode, sid, req, principal, now);
  if (mode === 'AUDIT') {
    d.audit = true;
    if (d.result === 'ALLOW') {
      // Forwarded unchanged: no identity headers and no test-only routing in a dry run.
      d.upstreamHeaders = {};
      d.clientHeaders = {};
      d.testOnly = false;
    }
  }
  return d;
}

function evaluate(state: DecisionState, apisAuthEnabled: boolean, mode: AuthMode, sid: string, req: DecisionRequest, principal: Principal | AuthFailure | null, now: number): Decision {
  const route = routerFor(state, sid).match(req.method, req.rawPath);
  if (!route.ok) return deny(req, mode, 400, 'path_not_canonical', `path not canonical: ${describeNonCanonical(route.reason)}`);
  // The router holds the entry of its snapshot; per-API settings may have changed since.
  const api = route.api ? (state.apis.get(route.api.apiId) ?? null) : null;

  if (api && !api.authEnabled) {
    if (principal?.kind === 'failure') return deny(req, mode, principal.status, principal.state, principal.message, { api, headers: principal.headers });
    const who = principal ? (principal.kind === 'user' ? state.users.get(principal.userId) : state.apps.get(principal.appId)) : undefined;
    return allow(mode, 'public', {
      api,
      principal: principal && who ? { type: principal.kind, id: principal.kind === 'user' ? principal.userId : (who as AppEntry).appId, name: principal.kind === 'user' ? (who as UserEntry).account : (who as AppEntry).name } : null,
      upstreamHeaders: principal && who ? identityHeaders(principal, who, api) : { 'x-utilmeta-api-id': api.apiId },
    });
  }
  if (principal?.kind === 'failure') return deny(req, mode, principal.status, principal.state, principal.message, { api, headers: principal.headers });
  if (!principal) return deny(req, mode, 401, 'authn_required', 'authentication required', { api, headers: { 'www-authenticate': WWW_AUTH_REQUIRED } });

  const need = requiredPermission(req.method, api?.permission);
  const bit = PERM[need];
  const credEnd = credentialDeadline(state, principal);

  if (principal.kind === 'user') {
    const u = state.users.get(principal.userId);
    if (!u || u.status === 0) return deny(req, mode, 403, 'principal_disabled', u ? `user ${u.account} is disabled` : `user ${principal.userId} is unknown`, { api, required: need });
    const admin = isAdmin(state, u.id);
    const m = admin ? ALL_PERMISSIONS : userMask(state, u.id, sid);
    const base = { api, required: need, deadline: credEnd, principal: { type: 'user' as const, id: u.id, name: u.account }, upstreamHeaders: identityHeaders(principal, u, api) };
    if (m & bit) return allow(mode, admin ? 'admin' : 'permission', base);
    if (m & PERM.TEST) return allow(mode, 'test', { ...base, testOnly: true });
    return deny(req, mode, 403, 'permission_denied', `user ${u.account} lacks ${need} for ${apiLabel(api, req)} of service '${req.serviceName}'`, { api, required: need });
  }

  const a = state.apps.get(principal.appId);
  if (!a || a.status !== 'ACTIVE') return deny(req, mode, 403, 'principal_disabled', a ? `app ${a.appId} is disabled` : `app ${principal.appId} is unknown`, { api, required: need });
  if (!projectValid(state, a, now)) return deny(req, mode, 403, 'project_expired', `the project of app ${a.appId} is outside its validity dates`, { api, required: need });
  const who = { type: 'app' as const, id: a.appId, name: a.name };

  if (apisAuthEnabled) {
    if (!api) return deny(req, mode, 403, 'api_not_registered', `${apiLabel(api, req)} is not a registered API of service '${req.serviceName}'`, { required: need });
    const g = grantFor(state, a.id, api.apiId);
    const noGrant = `app ${a.appId} has no active grant for ${api.method} ${api.pathTemplate} of service '${req.serviceName}'`;
    const refused = grantRefusal(g, now);
    if (refused) {
      const msg = refused === 'grant_pending' ? `the grant of app ${a.appId} for ${api.method} ${api.pathTemplate} is pending review` : refused === 'grant_required' ? noGrant : `the grant of app ${a.appId} for ${api.method} ${api.pathTemplate} has ${refused === 'grant_expired' ? 'expired' : 'been cancelled'}`;
      return deny(req, mode, 403, refused, msg, { api, required: need });
    }
    const end = effectiveEnd(g!);
    const upstreamHeaders = identityHeaders(principal, a, api);
    upstreamHeaders['x-utilmeta-grant-id'] = g!.id;
    const endText = rfc3339(end);
    upstreamHeaders['x-utilmeta-grant-end'] = endText;
    const clientHeaders: Record<string, string> = { 'X-UtilMeta-Grant-End': endText };
    if (g!.state === 'CANCEL_SCHEDULED' || end - now < WEEK) {
      clientHeaders['Sunset'] = imfFixdate(end);
      clientHeaders['X-UtilMeta-Grant-State'] = g!.state;
    }
    return allow(mode, 'grant', { api, required: need, deadline: minDeadline(end, credEnd), grant: { id: g!.id, state: g!.state, effectiveEnd: end }, principal: who, upstreamHeaders, clientHeaders });
  }

  const m = appMask(state, a.id, sid);
  const base = { api, required: need, deadline: credEnd, principal: who, upstreamHeaders: identityHeaders(principal, a, api) };
  if (m & bit) return allow(mode, 'permission', base);
  if (m & PERM.TEST) return allow(mode, 'test', { ...base, testOnly: true });
  return deny(req, mode, 403, 'permission_denied', `app ${a.appId} lacks ${need} for ${apiLabel(api, req)} of service '${req.serviceName}'`, { api, required: need });
}

/** Why a grant does not allow a call now, or null when it does (`start ≤ now < LEAST(end, cancel_at)`). */
export function grantRefusal(g: GrantEntry | undefined, now: number): null | 'grant_required' | 'grant_pending' | 'grant_expired' | 'grant_cancelled' {
  if (!g) return 'grant_required';
  switch (g.state) {
    case 'PENDING':
      return 'grant_pending';
    case 'REJECTED':
    case 'WITHDRAWN':
      return 'grant_required';
    case 'CANCELLED':
      return 'grant_cancelled';
    case 'EXPIRED':
      return 'grant_expired';
  }
  if (now < g.startAt) return 'grant_required';
  if (now >= effectiveEnd(g)) return g.cancelAt !== null && g.cancelAt < g.endAt ? 'grant_cancelled' : 'grant_expired';
  return null;
}

/** The 403 for a test-only ALLOW when the service has no `production=false` instance. */
export function testInstancesOnly(req: DecisionRequest, d: Allow): Deny {
  return deny(req, d.mode, 403, 'test_instances_only', `TEST permission only reaches non-production instances, and service '${req.serviceName}' has none`, { api: d.api, required: d.required });
}

// ---- Credentials resolved against the state ----

export const BEARER_TOKEN_RE = /^umt_[A-Za-z0-9_-]{43}$/;

function tokenFailure(state: string, message: string): AuthFailure {
  return { kind: 'failure', status: 401, state, message, headers: { 'www-authenticate': WWW_AUTH_BEARER_INVALID } };
}

/**
 * Validates a `umt_` bearer token from memory: format, then by SHA-256 lookup, in this order:
 * not revoked, not expired, user active, exchanged-from platform token not revoked.
 */
export function authenticateBearer(state: DecisionState, token: string, now: number): Principal | AuthFailure {
  if (typeof token !== 'string' || !BEARER_TOKEN_RE.test(token)) return tokenFailure('token_invalid', 'invalid token');
  // One-shot hash: several times cheaper than a createHash object per request.
  const h = hash('sha256', token, 'base64');
  const t = state.tokens.get(h);
  if (!t) return tokenFailure('token_invalid', 'invalid token');
  if (t.revoked) return tokenFailure('token_revoked', 'token revoked');
  if (!(t.expiresAt > now)) return tokenFailure('token_expired', 'token expired');
  const u = state.users.get(t.userId);
  if (!u) return tokenFailure('token_invalid', 'invalid token');
  if (u.status !== 1) return { kind: 'failure', status: 403, state: 'principal_disabled', message: `user ${u.account} is disabled` };
  if (t.parentJti !== null && state.revokedJtis.has(t.parentJti)) return tokenFailure('token_revoked', 'token revoked: the platform token it was exchanged from is revoked');
  return { kind: 'user', userId: u.id, via: 'bearer', tokenId: t.id };
}

/**
 * The principal behind an access key, for the SigV4 verifier: key lookup and status (its step 7)
 * and owner status (its last step). The signature itself is the verifier's business.
 */
export function principalForAccessKey(state: DecisionState, accessKeyId: string, now: number): Principal | AuthFailure {
  const k = state.keys.get(accessKeyId);
  if (!k) return { kind: 'failure', status: 403, state: 'key_unknown', message: 'The security token included in the request is invalid.' };
  if (k.status !== 'Active') return { kind: 'failure', status: 403, state: 'key_disabled', message: 'The access key is inactive.' };
  if (k.expiresAt !== null && !(now < k.expiresAt)) return { kind: 'failure', status: 403, state: 'key_expired', message: 'The access key has expired.' };
  if (k.ownerUserId !== null) {
    const u = state.users.get(k.ownerUserId);
    if (!u || u.status !== 1) return { kind: 'failure', status: 403, state: 'principal_disabled', message: 'The owner of the access key is disabled.' };
    return { kind: 'user', userId: u.id, via: 'sigv4', accessKeyId };
  }
  const a = k.ownerAppId === null ? undefined : state.apps.get(k.ownerAppId);
  if (!a || a.status !== 'ACTIVE') return { kind: 'failure', status: 403, state: 'principal_disabled', message: 'The app owning the access key is disabled.' };
  return { kind: 'app', appId: a.id, via: 'sigv4', accessKeyId };
}

/** Instance identity: the app bound to the service whose registered instance is calling, if any. */
export function appBoundTo(state: DecisionState, serviceId: Id): Principal | null {
  const id = state.boundApps.get(idKey(serviceId));
  return id === undefined ? null : { kind: 'app', appId: id, via: 'instance' };
}
