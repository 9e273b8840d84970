// The /api/v1 surface: one mount whose router is built from the route tables
// each /api/v1 feature exports (credentials here; seed-001 service
// authorizations add theirs), so features share the prefix without knowing
// each other. Success answers are the seed-001 envelope
// `{code:"OK", msg, data, datetime, ext}`; a route may answer raw instead (OAuth).
import { DomainError } from '../core/errors.ts';
import type { IncomingRequest, ResponseWriter } from '../http/types.ts';
import { Router, sendOk, sendPreflight } from '../api/index.ts';
import type { Mount } from './index.ts';
import type { SurfaceContext } from './context.ts';
import { answerFailure, commonHeaders, readJsonBody, settleView } from './management-kit.ts';
import { authenticateManagement } from './management-auth.ts';
import { requestClientIp } from '../net/ip.ts';
import type { Caller } from '../access/credentials.ts';

export const V1_PREFIX = '/api/v1';

export interface V1Call {
  req: IncomingRequest;
  res: ResponseWriter;
  /** Percent-decoded path parameters. */
  params: Record<string, string>;
  requestId: string;
}

/** `data` goes in the envelope; `raw` is written as it is. */
export type V1Answer = { data: unknown; status?: number; ext?: Record<string, unknown> } | { raw: { status: number; headers: Array<readonly [string, string]>; body: string } };

export interface V1Route {
  method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
  /** Relative to /api/v1; `{name}` is one path segment. */
  path: string;
  handle: (call: V1Call) => Promise<V1Answer>;
}

export function createV1Surface(ctx: SurfaceContext, tables: ReadonlyArray<readonly V1Route[]>): Mount {
  const router = new Router<V1Route>();
  for (const t of tables) for (const r of t) router.add(r.method, r.path, r);
  return {
    prefix: V1_PREFIX,
    async handle(req, res, rest, requestId) {
      try {
        const path = rest === '' ? '/' : rest;
        // OPTIONS has no route of its own, so matching it lists every method of the path.
        const m = router.match(req.method, path);
        if (req.method === 'OPTIONS') {
          const allowed = m === null || !('allowed' in m) ? [] : m.allowed;
          return sendPreflight(req, res, allowed.join(', ') || 'GET', ctx.config.corsMaxAge);
        }
        if (m === null) throw new DomainError('not_found', `no /api/v1 route for ${req.method} ${path}`, { code: 'NOT_FOUND' });
        if ('allowed' in m) {
          const allow = m.allowed.join(', ');
          // 405 has no domain error kind: the status comes from the router, so it is written here.
          const body = {
            code: 'METHOD_NOT_ALLOWED', msg: `method ${req.method} is not allowed on ${path}; allowed: ${allow}`, data: null,
            datetime: new Date().toISOString(), ext: { requestId },
          };
          return res.send(405, [['content-type', 'application/json'], ['allow', allow], ...commonHeaders(req), ['x-request-id', requestId]], JSON.stringify(body));
        }
        const answer = await m.found.handler.handle({ req, res, params: m.found.params, requestId });
        if (req.method !== 'GET' && req.method !== 'HEAD') await settleView(ctx.access.view, ctx.db.registry);
        if ('raw' in answer) return res.send(answer.raw.status, [...answer.raw.headers, ...commonHeaders(req), ['x-request-id', requestId]], answer.raw.body);
        sendOk('v1', res, { requestId, headers: commonHeaders(req) }, answer.data, { status: answer.status, ext: answer.ext });
      } catch (err) {
        if (!answerFailure('v1', req, res, requestId, err)) throw err;
      }
    },
  };
}

/** The authenticated user as the access domains' caller, and the JSON object body (`{}` when none). */
export async function v1Caller(ctx: SurfaceContext, call: V1Call, withBody: boolean): Promise<{ caller: Caller; body: Record<string, unknown> }> {
  const { caller: c, body: pre } = await authenticateManagement(ctx.auth, call.req);
  const caller: Caller = {
    userId: c.userId,
    admin: c.admin,
    actor: { type: 'USER', id: c.userId, name: c.account, credential: c.credential, ip: requestClientIp(call.req, ctx.config.trustedProxies), requestId: call.requestId },
  };
  if (!withBody) return { caller, body: {} };
  const body = await readJsonBody(call.req, pre);
  if (body === undefined) return { caller, body: {} };
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new DomainError('invalid', 'body: must be a JSON object', { code: 'PARAM_INVALID', field: 'body' });
  }
  return { caller, body: body as Record<string, unknown> };
}
