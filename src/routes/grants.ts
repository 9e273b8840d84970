// The app-grant surface at /v1/{project_id}/service/… with the seed's wire
// shapes: 204 or plain JSON on success, {"error_code","error_msg"} on failure
// (SigV4 failures in the AWS shape), snake_case, `X-Auth-Token` or any other
// user credential. The rules live in src/access/grants.ts.
import { DomainError } from '../core/errors.ts';
import type { IncomingRequest, ResponseWriter } from '../http/types.ts';
import { Router, corsHeaders, sendOk, sendError, sendPreflight, toHttpError } from '../api/index.ts';
import { sigv4ErrorResponse } from '../access/index.ts';
import { Grants, grantError, type GrantsCaller } from '../access/grants.ts';
import { requestClientIp } from '../net/ip.ts';
import type { Mount } from './index.ts';
import { authenticateManagement, SigV4Refusal } from './management-auth.ts';
import { settleView } from './management-kit.ts';
import type { SurfaceContext } from './context.ts';

/** JSON bodies up to 1 MiB. */
const BODY_LIMIT = 1 << 20;

interface Call {
  grants: Grants;
  caller: GrantsCaller;
  params: Record<string, string>;
  query: URLSearchParams;
  body: () => Promise<unknown>;
  req: IncomingRequest;
}
type Result = { status: number; data?: unknown };
type Handler = (c: Call) => Promise<Result>;

const NO_CONTENT: Result = { status: 204 };
const ok = (data: unknown, status = 200): Result => ({ status, data });

function routes(): Router<Handler> {
  const r = new Router<Handler>();
  r.add('POST', '/{project_id}/service/apis/authorize/action', async (c) => {
    await c.grants.action(c.caller, c.params.project_id!, await c.body(), { workspace: c.req.header('workspace') ?? null });
    return NO_CONTENT;
  });
  r.add('GET', '/{project_id}/service/applys', async (c) => ok(await c.grants.listApplys(c.caller, c.params.project_id!, c.query)));
  r.add('GET', '/{project_id}/service/applys/{apply_id}', async (c) => ok(await c.grants.getApply(c.caller, c.params.project_id!, c.params.apply_id!)));
  r.add('POST', '/{project_id}/service/applys/{apply_id}/action', async (c) => {
    await c.grants.review(c.caller, c.params.project_id!, c.params.apply_id!, await c.body());
    return NO_CONTENT;
  });
  r.add('GET', '/{project_id}/service/apis', async (c) => ok(await c.grants.listApis(c.caller, c.params.project_id!, c.query)));
  r.add('GET', '/{project_id}/service/apis/{api_id}/authorize-info', async (c) => ok(await c.grants.apiGrants(c.caller, c.params.project_id!, c.params.api_id!, c.query)));
  r.add('GET', '/{project_id}/service/apps/{app_id}/apis', async (c) => ok(await c.grants.appGrants(c.caller, c.params.project_id!, c.params.app_id!, c.query)));
  r.add('POST', '/{project_id}/service/apps', async (c) => ok(await c.grants.createApp(c.caller, c.params.project_id!, await c.body()), 201));
  r.add('GET', '/{project_id}/service/apps', async (c) => ok(await c.grants.listApps(c.caller, c.params.project_id!, c.query)));
  r.add('GET', '/{project_id}/service/apps/{app_id}', async (c) => ok(await c.grants.getApp(c.caller, c.params.project_id!, c.params.app_id!)));
  r.add('PUT', '/{project_id}/service/apps/{app_id}', async (c) => ok(await c.grants.updateApp(c.caller, c.params.project_id!, c.params.app_id!, await c.body())));
  r.add('DELETE', '/{project_id}/service/apps/{app_id}', async (c) => {
    await c.grants.deleteApp(c.caller, c.params.project_id!, c.params.app_id!);
    return NO_CONTENT;
  });
  return r;
}

function parseJson(buf: Buffer): unknown {
  if (buf.length === 0) throw grantError('AUTHZ.4000', 'the body must be a JSON object');
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch {
    throw grantError('AUTHZ.4000', 'the body is not valid JSON');
  }
}

export function createGrantsApi(ctx: SurfaceContext): Mount {
  const { config, log } = ctx;
  const grants = new Grants({
    store: ctx.access.store,
    view: ctx.access.view,
    cancelNoticeSeconds: config.authz.cancelNotice,
    clusterId: config.authz.clusterId,
  });
  const router = routes();
  const methods = 'GET, POST, PUT, DELETE, OPTIONS';

  async function handle(req: IncomingRequest, res: ResponseWriter, rest: string, requestId: string): Promise<void> {
    const env = { requestId, headers: corsHeaders(req) };
    try {
      if (req.method === 'OPTIONS') return sendPreflight(req, res, methods, config.corsMaxAge);
      const m = router.match(req.method, rest);
      if (m === null) throw new DomainError('not_found', `no route for ${req.method} /v1${rest}`, { code: 'AUTHZ.4044' });
      if ('allowed' in m) throw new DomainError('invalid', `method ${req.method} is not allowed here; allowed: ${m.allowed.join(', ')}`, { code: 'AUTHZ.4050' });
      const auth = await authenticateManagement(ctx.auth, req);
      const caller: GrantsCaller = {
        userId: auth.caller.userId,
        account: auth.caller.account,
        credential: auth.caller.credential,
        ip: requestClientIp(req, config.trustedProxies),
        requestId,
      };
      const call: Call = {
        grants,
        caller,
        params: m.found.params,
        query: new URLSearchParams(req.query),
        req,
        body: async () => parseJson(auth.body ?? (req.hasBody ? await req.readBody(BODY_LIMIT) : Buffer.alloc(0))),
      };
      const r = await m.found.handler(call);
      // Read-your-writes: this node's view has taken in the change before the answer goes out.
      if (req.method !== 'GET') await settleView(ctx.access.view, ctx.db.registry);
      sendOk('grants', res, env, r.status === 204 ? undefined : r.data, { status: r.status });
    } catch (err) {
      if (res.aborted) return;
      if (err instanceof SigV4Refusal) {
        const a = sigv4ErrorResponse(err.failure, requestId);
        return res.send(a.status, [...env.headers, ['x-request-id', requestId], ...Object.entries(a.headers)], a.body);
      }
      if (err instanceof DomainError && err.state === 'app_key_not_allowed') {
        // An app key is a SigV4 credential: its client parses the AWS error shape.
        const a = sigv4ErrorResponse({ ok: false, status: 403, type: 'AccessDenied', state: 'app_key_not_allowed', message: err.message }, requestId);
        return res.send(a.status, [...env.headers, ['x-request-id', requestId], ...Object.entries(a.headers)], a.body);
      }
      if (err instanceof DomainError) return sendError('grants', res, env, err.code?.startsWith('AUTHZ.') ? err : retag(err));
      const known = toHttpError(err, BODY_LIMIT);
      if (known) return sendError('grants', res, env, new DomainError(known.status === 413 ? 'too_large' : known.status === 503 ? 'unavailable' : 'invalid', known.message));
      log.error({ err, requestId, path: req.path }, 'grants request failed');
      sendError('grants', res, env, new DomainError('internal', `internal error; see the proxy log for request ${requestId}`));
    }
  }
  return { prefix: '/v1', handle };
}

/**
 * The shared authentication and the store speak the v1 surface's codes
 * (UNAUTHORIZED, DB_UNAVAILABLE…); without a code this surface's envelope picks
 * its own from the kind (AUTHZ.4010, AUTHZ.5030…).
 */
function retag(err: DomainError): DomainError {
  return new DomainError(err.kind, err.message, { state: err.state, field: err.field, retryAfter: err.retryAfter, cause: err });
}
