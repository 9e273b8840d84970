// The directory surface at /minibase/portal/openapi/v1 (orgs, users,
// departments, roles, projects), in its original `{code, message, data}`
// envelope. Any user credential authenticates it (SigV4 with service
// `minibasebe` is what its clients send); the domain decides who may write.
import { DomainError } from '../core/errors.ts';
import { sendOk, sendPreflight } from '../api/index.ts';
import { requestClientIp } from '../net/ip.ts';
import { DIRECTORY_PREFIX, matchDirectoryRoute, runDirectoryOp, type DirectoryCaller } from '../access/directory.ts';
import type { Mount } from './index.ts';
import type { SurfaceContext } from './context.ts';
import { authenticateManagement } from './management-auth.ts';
import { answerFailure, commonHeaders, readJsonBody, settleView } from './management-kit.ts';

export { DIRECTORY_PREFIX };

// The envelope's `message` is the machine code, so the human detail and the
// field at fault go in `data` (which is otherwise null on errors).
function withDetail(e: DomainError): DomainError {
  if (e.data !== undefined && e.data !== null) return e;
  return new DomainError(e.kind, e.message, {
    code: e.code, state: e.state, field: e.field, retryAfter: e.retryAfter,
    data: e.field ? { field: e.field, detail: e.message } : { detail: e.message },
  });
}

export function createDirectorySurface(ctx: SurfaceContext): Mount {
  const deps = { sql: ctx.db.registry, store: ctx.access.store };
  return {
    prefix: DIRECTORY_PREFIX,
    async handle(req, res, rest, requestId) {
      try {
        const path = rest === '' ? '/' : rest;
        const m = matchDirectoryRoute(req.method === 'HEAD' ? 'GET' : req.method, path);
        if (req.method === 'OPTIONS') {
          const allowed = m === null ? [] : 'allowed' in m ? m.allowed : [m.route.method];
          return sendPreflight(req, res, [...new Set(allowed)].join(', ') || 'GET', ctx.config.corsMaxAge);
        }
        if (m === null) throw new DomainError('not_found', `no directory route for ${req.method} ${path}`, { code: 'NOT_FOUND' });
        if ('allowed' in m) {
          const allow = m.allowed.join(', ');
          // 405 has no domain error kind: the status comes from the router, so it is written here.
          const body = { code: 405, message: 'METHOD_NOT_ALLOWED', data: { detail: `method ${req.method} is not allowed on ${path}; allowed: ${allow}` } };
          return res.send(405, [['content-type', 'application/json'], ['allow', allow], ...commonHeaders(req), ['x-request-id', requestId]], JSON.stringify(body));
        }
        const { caller: c, body: preRead } = await authenticateManagement(ctx.auth, req);
        const caller: DirectoryCaller = {
          userId: c.userId, account: c.account, isSuperuser: c.isSuperuser, managementPermissions: c.managementPermissions,
          credential: c.credential, clientIp: requestClientIp(req, ctx.config.trustedProxies), requestId,
        };
        const body = m.route.method === 'GET' ? undefined : await readJsonBody(req, preRead);
        const data = await runDirectoryOp(deps, caller, m.route, { params: m.params, query: new URLSearchParams(req.query), body });
        if (m.route.method !== 'GET') await settleView(ctx.access.view, ctx.db.registry);
        sendOk('directory', res, { requestId, headers: commonHeaders(req) }, data);
      } catch (err) {
        if (!answerFailure('directory', req, res, requestId, err, withDetail)) throw err;
      }
    },
  };
}
