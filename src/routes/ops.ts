// The proxy's own OperationsAPI at {BASE_URL}/ops (spec §3.8): what the platform
// calls on node `utilmeta-proxy`. Responses use the wrapped envelope
// {result, msg, state, count}; bearer tokens follow §4.2 with the fixes of §6.16
// (every failure is a 4xx with its state).
import type { Logger } from 'pino';
import type { IncomingRequest, ResponseWriter, HeaderList } from '../http/types.ts';
import { corsHeaders } from '../api/respond.ts';
import { requestClientIp } from '../net/ip.ts';
import type { Config } from '../config/index.ts';
import { extractToken, verifyToken, parseScope, hasScopes, type TokenFailure } from '../tokens/jwt.ts';
import { parse, toPlain, PyJsonError } from '../pyjson/index.ts';
import type { SupervisorRepository, SupervisorRow } from '../platform/supervisors.ts';
import type { AccessTokenStore } from '../platform/tokens-store.ts';
import type { SupervisorData } from '../platform/client.ts';
import { PROXY_SERVICE_NAME } from '../platform/connect.ts';
import { SPEC_VERSION } from '../config/index.ts';
import type { AuthzStore } from '../access/store.ts';
import { recordRevokedJtis } from '../access/revocation.ts';

class OpsError extends Error {
  constructor(readonly status: number, message: string, readonly state: string | number = 0) {
    super(message);
  }
}

export interface OpsApiDeps {
  config: Config;
  log: Logger;
  repo: SupervisorRepository;
  tokens: AccessTokenStore;
  openapi: () => Record<string, unknown>;
  /** When given, revoked jtis are also refused at every proxy node (and tokens exchanged from them die). */
  authz?: AuthzStore;
}

const OPS_CORS_HEADERS = 'authorization, cache-control, x-utilmeta-node-id, x-node-id, content-type';

export function createOpsApi(deps: OpsApiDeps) {
  const { config, repo, tokens } = deps;

  function send(req: IncomingRequest, res: ResponseWriter, status: number, result: unknown, msg = '', state: string | number = 1, extra: HeaderList = []) {
    const body = JSON.stringify({ result, msg, state, count: Array.isArray(result) ? result.length : 0 });
    res.send(status, [['content-type', 'application/json'], ...corsHeaders(req), ...extra], body);
  }

  function info() {
    return { utilmeta: SPEC_VERSION, service: PROXY_SERVICE_NAME, timestamp: Date.now(), requires: ['authorization'] };
  }

  /** §4.2: the token must verify with the key of one of the node's rows, carry a jti, and not be revoked. */
  async function authenticate(req: IncomingRequest, required: string[]): Promise<{ row: SupervisorRow; scopes: string[] }> {
    const nodeId = req.header('x-utilmeta-node-id') ?? req.header('x-node-id') ?? (new URLSearchParams(req.query).get('node') || undefined);
    if (!nodeId) throw new OpsError(400, 'X-UtilMeta-Node-ID (or ?node=) is required', 'node_required');
    const token = extractToken(req.header('authorization'));
    if (!token) throw new OpsError(401, 'Authorization: Bearer <token> is required', 'token_required');
    const rows = (await repo.tokenSupervisors(nodeId)).filter((r) => r.service === PROXY_SERVICE_NAME);
    let failure: TokenFailure | undefined;
    for (const row of rows) {
      const r = await verifyToken(token, { key: row.public_key!, nodeId, issuerBase: row.base_url, requireJti: true });
      if (!r.ok) {
        failure = r;
        continue;
      }
      const { scopes } = parseScope(r.claims.scope);
      const ip = requestClientIp(req, config.trustedProxies);
      const used = await tokens.recordUse(row.id, r.claims as never, ip);
      if (!used.ok) throw new OpsError(used.status, used.message, used.state);
      if (required.length && !hasScopes(required, scopes)) throw new OpsError(403, `insufficient scope: requires ${required.join(', ')}`, 'insufficient_scope');
      return { row, scopes };
    }
    if (failure) throw new OpsError(failure.status, failure.message, failure.state);
    throw new OpsError(400, 'Supervisor not found', 'supervisor_not_found');
  }

  /** The revoke in the access plane too, with each token's expiry as the operations database knows it. */
  async function revokeAtEdge(store: AuthzStore, row: SupervisorRow, ids: string[]): Promise<void> {
    const rows = await repo.sql<{ token_id: string; exp: number | null }[]>`
      SELECT token_id, extract(epoch FROM expiry_time)::float8 AS exp FROM utilmeta_access_token
      WHERE token_id = ANY(${ids}::text[]) AND issuer_id = ${row.id}`;
    const exp = new Map<string, number>();
    for (const r of rows) if (r.exp !== null) exp.set(r.token_id, Number(r.exp));
    try {
      await recordRevokedJtis(store, ids.filter((j) => j.length > 0 && j.length <= 200), { exp, nodeId: row.node_id, actor: { type: 'PLATFORM', id: row.node_id, credential: null } });
    } catch (err) {
      deps.log.error({ err, node: row.node_id }, 'recording revoked token ids for the proxy nodes failed');
      // The platform retries a failed revoke; the operations-database part is idempotent.
      throw new OpsError(503, 'the tokens were revoked here but could not be propagated to the proxy nodes; retry', 'revoke_unavailable');
    }
  }

  async function body(req: IncomingRequest): Promise<unknown> {
    const text = (await req.readBody(config.bodyLimit)).toString('utf8');
    try {
      return toPlain(parse(text));
    } catch (err) {
      if (err instanceof PyJsonError) throw new OpsError(400, `body is not valid JSON: ${err.message}`);
      throw err;
    }
  }

  return async function handle(req: IncomingRequest, res: ResponseWriter, rest: string, _requestId: string): Promise<void> {
    const path = rest.replace(/\/+$/, '') || '/';
    const m = req.method;
    try {
      if (m === 'OPTIONS') {
        return res.send(200, [...corsHeaders(req), ['access-control-allow-methods', 'GET, POST, OPTIONS'], ['access-control-allow-headers', OPS_CORS_HEADERS], ['access-control-max-age', '21600']]);
      }
      if (path === '/' && (m === 'GET' || m === 'HEAD')) return send(req, res, 200, info());
      if (path === '/' && m === 'POST') {
        // Unauthenticated by design: gated by init_key (§3.6.1 step 6).
        const data = (await body(req)) as Partial<SupervisorData> | null;
        if (!data || typeof data !== 'object' || typeof data.node_id !== 'string' || typeof data.ops_api !== 'string') {
          throw new OpsError(400, 'body must be SupervisorData with string node_id and ops_api');
        }
        if (!data.init_key) throw new OpsError(400, 'Missing init_key: the connect key is required');
        const r = await repo.saveSupervisor(data as SupervisorData);
        if (!r.ok) throw new OpsError(r.status, r.message);
        deps.log.info({ node: r.row?.node_id }, 'platform callback saved this node');
        return send(req, res, 200, { ...info(), node_id: r.row?.node_id });
      }
      if (path === '/openapi' && m === 'GET') {
        await authenticate(req, ['api.view']);
        return send(req, res, 200, deps.openapi(), '', 1, [['cache-control', 'no-store']]);
      }
      if (path === '/token/scope' && m === 'GET') {
        const { scopes } = await authenticate(req, []);
        return send(req, res, 200, scopes);
      }
      if (path === '/token' && m === 'GET') {
        const { row } = await authenticate(req, ['token.view']);
        const rows = await repo.sql`
          SELECT token_id, issued_at, subject, expiry_time, last_activity, used_times, host(ip) AS ip, scope, revoked
          FROM utilmeta_access_token WHERE issuer_id = ${row.id} ORDER BY id`;
        return send(req, res, 200, rows);
      }
      if (path === '/token/revoke' && m === 'POST') {
        const { row } = await authenticate(req, ['token.revoke']);
        const ids = await body(req);
        if (!Array.isArray(ids) || !ids.every((x) => typeof x === 'string')) throw new OpsError(400, 'body must be a JSON array of token ids (jti)');
        const revoked = await tokens.revoke(row.id, ids as string[]);
        if (deps.authz && ids.length > 0) await revokeAtEdge(deps.authz, row, ids as string[]);
        return send(req, res, 200, revoked);
      }
      throw new OpsError(404, `no OperationsAPI route for ${m} ${path}`);
    } catch (err) {
      if (err instanceof OpsError) return send(req, res, err.status, null, err.message, err.state);
      throw err;
    }
  };
}
