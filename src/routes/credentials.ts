// Credentials over HTTP under /api/v1: access keys and personal tokens in the
// seed-001 envelope (any user credential authenticates them), and the OAuth
// endpoints (password grant, RFC 8693 token exchange of a platform node JWT,
// RFC 7009 revoke) in the raw OAuth shapes their clients expect.
import { decodeJwt } from 'jose';
import { requestClientIp } from '../net/ip.ts';
import { verifyToken, type TokenFailure } from '../tokens/jwt.ts';
import { jtiRevoked, type Credentials } from '../access/index.ts';
import type { PlatformJwtVerifier } from '../access/credentials.ts';
import type { SurfaceContext } from './context.ts';
import { asDomainError, readRawBody } from './management-kit.ts';
import { v1Caller, type V1Answer, type V1Call, type V1Route } from './v1.ts';

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

/** The platform JWT check of `operations` mode: the node keys of the token's `nid`, its issuer, expiry and jti, and the edge denylist. */
export function platformJwtVerifier(ctx: Pick<SurfaceContext, 'platform' | 'access'>): PlatformJwtVerifier {
  return async (jwt) => {
    let nid: unknown;
    try {
      nid = decodeJwt(jwt).nid;
    } catch {
      throw new Error('not a JWT');
    }
    if (typeof nid !== 'string' || nid === '') throw new Error('the JWT has no nid claim');
    const directory = ctx.platform.directory;
    await directory.ensureNode(nid);
    const keys = directory.tokenKeys(nid);
    if (keys.length === 0) throw new Error(`node '${nid}' is not connected through this proxy`);
    let failure: TokenFailure | undefined;
    for (const e of keys) {
      const r = await verifyToken(jwt, { key: e.publicKey!, nodeId: nid, issuerBase: e.baseUrl, requireJti: true });
      if (!r.ok) {
        failure = r;
        continue;
      }
      const { sub, jti, exp } = r.claims;
      if (jtiRevoked(ctx.access.view.current.state, jti)) throw new Error('the JWT has been revoked');
      return { sub: sub ?? '', jti: jti ?? '', exp };
    }
    throw new Error(failure!.message);
  };
}

export function credentialRoutes(ctx: SurfaceContext): V1Route[] {
  const creds: Credentials = ctx.access.credentials;
  const verify = platformJwtVerifier(ctx);
  const ipOf = (call: V1Call) => requestClientIp(call.req, ctx.config.trustedProxies);

  const authed = (call: V1Call, withBody: boolean) => v1Caller(ctx, call, withBody);
  const query = (call: V1Call) => Object.fromEntries(new URLSearchParams(call.req.query));
  const ok = (data: unknown): V1Answer => ({ data });

  return [
    { method: 'POST', path: '/access-keys', handle: async (call) => {
      const { caller, body } = await authed(call, true);
      return ok(await creds.createKey(caller, body));
    } },
    { method: 'GET', path: '/access-keys', handle: async (call) => {
      const { caller } = await authed(call, false);
      return ok(await creds.listKeys(caller, query(call)));
    } },
    { method: 'GET', path: '/access-keys/{accessKeyId}', handle: async (call) => {
      const { caller } = await authed(call, false);
      return ok(await creds.getKey(caller, call.params.accessKeyId));
    } },
    { method: 'PATCH', path: '/access-keys/{accessKeyId}', handle: async (call) => {
      const { caller, body } = await authed(call, true);
      return ok(await creds.patchKey(caller, call.params.accessKeyId, body));
    } },
    { method: 'DELETE', path: '/access-keys/{accessKeyId}', handle: async (call) => {
      const { caller } = await authed(call, false);
      return ok(await creds.deleteKey(caller, call.params.accessKeyId));
    } },
    { method: 'POST', path: '/access-keys/{accessKeyId}/rotate', handle: async (call) => {
      const { caller, body } = await authed(call, true);
      return ok(await creds.rotateKey(caller, call.params.accessKeyId, body));
    } },
    { method: 'GET', path: '/users/{userId}/tokens', handle: async (call) => {
      const { caller } = await authed(call, false);
      return ok(await creds.listPersonalTokens(caller, call.params.userId));
    } },
    { method: 'POST', path: '/users/{userId}/tokens', handle: async (call) => {
      const { caller, body } = await authed(call, true);
      return ok(await creds.createPersonalToken(caller, call.params.userId, body));
    } },
    { method: 'DELETE', path: '/users/{userId}/tokens/{id}', handle: async (call) => {
      const { caller } = await authed(call, false);
      return ok(await creds.deletePersonalToken(caller, call.params.userId, call.params.id));
    } },
    { method: 'POST', path: '/oauth/token', handle: (call) => oauth(call, async (input) => {
      const reqCtx = { ip: ipOf(call), requestId: call.requestId };
      if (input.grant_type === 'password') return creds.passwordGrant(input, reqCtx);
      if (input.grant_type === TOKEN_EXCHANGE) return creds.tokenExchange(input, verify, reqCtx);
      throw new OAuthError(400, 'unsupported_grant_type', `grant_type must be 'password' or '${TOKEN_EXCHANGE}'`);
    }) },
    { method: 'POST', path: '/oauth/revoke', handle: (call) => oauth(call, async (input) => {
      await creds.revokeToken(input.token, { ip: ipOf(call), requestId: call.requestId });
      return {};
    }) },
  ];
}

class OAuthError extends Error {
  constructor(readonly status: number, readonly error: string, message: string, readonly retryAfter?: number) {
    super(message);
  }
}

/** The OAuth request parameters: a form (RFC 6749) or a JSON object. */
async function oauthInput(call: V1Call): Promise<Record<string, unknown>> {
  const raw = await readRawBody(call.req, null);
  const text = raw ? raw.toString('utf8') : '';
  const type = (call.req.header('content-type') ?? '').toLowerCase();
  if (type.includes('json') || (!type.includes('x-www-form-urlencoded') && text.trimStart().startsWith('{'))) {
    let v: unknown;
    try {
      v = text.trim() === '' ? {} : JSON.parse(text);
    } catch (err) {
      throw new OAuthError(400, 'invalid_request', `body: not valid JSON (${(err as Error).message})`);
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new OAuthError(400, 'invalid_request', 'body: must be a JSON object');
    return v as Record<string, unknown>;
  }
  return Object.fromEntries(new URLSearchParams(text));
}

/** Runs an OAuth endpoint and answers in the raw OAuth shape, errors as `{error, error_description}`. */
async function oauth(call: V1Call, run: (input: Record<string, unknown>) => Promise<object>): Promise<V1Answer> {
  const headers: Array<readonly [string, string]> = [['content-type', 'application/json'], ['cache-control', 'no-store'], ['pragma', 'no-cache']];
  try {
    const result = await run(await oauthInput(call));
    return { raw: { status: 200, headers, body: JSON.stringify(result) } };
  } catch (err) {
    const e = err instanceof OAuthError ? err : oauthErrorOf(err);
    if (!e) throw err;
    if (e.retryAfter !== undefined) headers.push(['retry-after', String(Math.ceil(e.retryAfter))]);
    return { raw: { status: e.status, headers, body: JSON.stringify({ error: e.error, error_description: e.message }) } };
  }
}

function oauthErrorOf(err: unknown): OAuthError | null {
  const d = asDomainError(err);
  if (!d) return null;
  switch (d.kind) {
    case 'too_many':
      return new OAuthError(429, 'too_many_requests', d.message, d.retryAfter ?? 60);
    case 'unavailable':
      return new OAuthError(503, 'temporarily_unavailable', d.message, d.retryAfter);
    case 'invalid':
    case 'unauthenticated':
    case 'forbidden':
    case 'not_found':
      // A bad password, an unknown account and a disabled user look the same.
      return new OAuthError(400, d.code === 'invalid_grant' ? 'invalid_grant' : 'invalid_request', d.message);
    default:
      return null;
  }
}
