// The operator web console at /console/: the built single-page app (static
// files from console/dist, index.html for every other page path), the cookie
// session (POST/GET/DELETE /console/session) and a small JSON summary of the
// node's traffic (GET /console/api/metrics). Every answer carries strict
// security headers and never the permissive CORS of the other routes.
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Credentials } from '../access/credentials.ts';
import { tokenSha256 } from '../access/crypto.ts';
import { HttpError, errorBody, toHttpError } from '../api/index.ts';
import type { Config } from '../config/index.ts';
import { DomainError } from '../core/errors.ts';
import type { HeaderList, IncomingRequest, ResponseWriter } from '../http/types.ts';
import { requestClientIp } from '../net/ip.ts';
import type { Mount } from './index.ts';
import { MetricsSampler, TrafficCounters } from './console-metrics.ts';
import {
  CONSOLE_HEADER, clearedSessionCookie, cookieCorsHeaders, isHttps, readCookie, sameOrigin, sessionCookie, sessionToken, SESSION_COOKIE,
} from './console-session.ts';

export const CONSOLE_PREFIX = '/console';

export const SECURITY_HEADERS: HeaderList = [
  ['content-security-policy', "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"],
  ['x-content-type-options', 'nosniff'],
  ['referrer-policy', 'no-referrer'],
  ['x-frame-options', 'DENY'],
];

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

/** console/dist beside src/ (or dist/) in a checkout or the installed package. */
export const DEFAULT_ASSETS_DIR = fileURLToPath(new URL('../../console/dist', import.meta.url));

export interface ConsoleDeps {
  config: Config;
  log: Logger;
  /** The access plane's credentials (password grant, token revoke); null: sign-in answers 503. */
  credentials: Credentials | null;
  /** The node's Prometheus text (Metrics#text, or the sum over listener threads). */
  metricsText: () => Promise<string>;
  assetsDir?: string;
  /** Sampling interval of the traffic summary (default 10 s). */
  sampleIntervalMs?: number;
}

export interface ConsoleSurface extends Mount {
  /** Feed it every proxied request (the proxy's onResult) for per-service and per-instance rates. */
  traffic: TrafficCounters;
  sampler: MetricsSampler;
  close(): void;
}

export interface SessionUser {
  userId: string;
  account: string;
  username: string | null;
  isSuperuser: boolean;
  expiresAt: string;
}

const MAX_BODY = 16 * 1024;

export function createConsole(deps: ConsoleDeps): ConsoleSurface {
  const dir = deps.assetsDir ?? DEFAULT_ASSETS_DIR;
  const traffic = new TrafficCounters();
  const sampler = new MetricsSampler(deps.metricsText, traffic, deps.sampleIntervalMs ?? 10_000);
  if (deps.config.console) sampler.start();

  const base = (req: IncomingRequest, requestId: string): HeaderList => [...SECURITY_HEADERS, ...cookieCorsHeaders(req), ['x-request-id', requestId]];
  const json = (req: IncomingRequest, res: ResponseWriter, requestId: string, status: number, body: unknown, extra: HeaderList = []) =>
    res.send(status, [['content-type', 'application/json'], ['cache-control', 'no-store'], ...base(req, requestId), ...extra], JSON.stringify(body));

  async function whoIs(token: string): Promise<SessionUser | null> {
    if (!deps.credentials) throw new DomainError('unavailable', 'the access plane is not configured on this node; console sign-in is unavailable');
    const [u] = await deps.credentials.sql<{ id: string; account: string; username: string | null; is_superuser: boolean; expires_at: Date }[]>`
      SELECT u.id, u.account, u.username, u.is_superuser, t.expires_at
      FROM authz_token t JOIN authz_user u ON u.id = t.user_id
      WHERE t.token_sha256 = ${tokenSha256(token)} AND t.revoked_at IS NULL AND t.expires_at > now() AND u.status = 1`;
    return u ? { userId: String(u.id), account: u.account, username: u.username, isSuperuser: u.is_superuser, expiresAt: u.expires_at.toISOString() } : null;
  }

  /** Session writes must come from the console itself (custom header, own origin): no login or logout CSRF. */
  function requireConsoleRequest(req: IncomingRequest): void {
    if (req.header(CONSOLE_HEADER) !== '1') throw new HttpError(403, `this request needs the header X-UtilMeta-Console: 1`);
    if (!sameOrigin(req)) throw new HttpError(403, `Origin ${req.header('origin')} is not this node's origin`);
  }

  async function currentUser(req: IncomingRequest): Promise<{ token: string; user: SessionUser }> {
    const token = sessionToken(req);
    if (!token) {
      const why = readCookie(req, SESSION_COOKIE) === undefined ? 'not signed in' : 'the session cookie counts only with X-UtilMeta-Console: 1 from this origin';
      throw new HttpError(401, why);
    }
    const user = await whoIs(token);
    if (!user) throw new HttpError(401, 'the session has ended (expired or revoked); sign in again');
    return { token, user };
  }

  async function readJson(req: IncomingRequest): Promise<Record<string, unknown>> {
    const text = (await req.readBody(MAX_BODY)).toString('utf8');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new HttpError(400, 'the body must be a JSON object: {"account", "password"} or {"token"}');
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'the body must be a JSON object: {"account", "password"} or {"token"}');
    return body as Record<string, unknown>;
  }

  async function session(req: IncomingRequest, res: ResponseWriter, requestId: string): Promise<void> {
    const secure = isHttps(req);
    if (req.method === 'GET' || req.method === 'HEAD') {
      const { user } = await currentUser(req);
      return json(req, res, requestId, 200, { user });
    }
    if (req.method === 'POST') {
      requireConsoleRequest(req);
      if (!deps.credentials) throw new DomainError('unavailable', 'the access plane is not configured on this node; console sign-in is unavailable');
      const body = await readJson(req);
      let token: string;
      if (body.token !== undefined) {
        if (typeof body.token !== 'string' || !/^umt_[A-Za-z0-9_-]{43}$/.test(body.token.trim())) throw new HttpError(400, "token must be a umt_ token ('umt_' and 43 characters)");
        token = body.token.trim();
      } else {
        if (typeof body.account !== 'string' || body.account === '') throw new HttpError(400, 'account is required');
        if (typeof body.password !== 'string' || body.password === '') throw new HttpError(400, 'password is required');
        const answer = await deps.credentials.passwordGrant(
          { username: body.account, password: body.password },
          { ip: requestClientIp(req, deps.config.trustedProxies), requestId },
        );
        token = answer.access_token;
      }
      const user = await whoIs(token);
      if (!user) throw new HttpError(401, body.token !== undefined ? 'this token is not valid (unknown, expired or revoked, or its user is disabled)' : 'sign-in failed');
      const maxAge = (Date.parse(user.expiresAt) - Date.now()) / 1000;
      return json(req, res, requestId, 200, { user }, [['set-cookie', sessionCookie(token, maxAge, secure)]]);
    }
    if (req.method === 'DELETE') {
      requireConsoleRequest(req);
      const token = sessionToken(req);
      if (token && deps.credentials) await deps.credentials.revokeToken(token, { ip: requestClientIp(req, deps.config.trustedProxies), requestId });
      return json(req, res, requestId, 200, { signedOut: token !== null }, [['set-cookie', clearedSessionCookie(secure)]]);
    }
    throw new HttpError(405, `method ${req.method} is not allowed on /console/session; allowed: GET, POST, DELETE`, undefined, [['allow', 'GET, POST, DELETE']]);
  }

  async function staticFile(req: IncomingRequest, res: ResponseWriter, rest: string, requestId: string): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      throw new HttpError(405, `method ${req.method} is not allowed on console pages; allowed: GET, HEAD`, undefined, [['allow', 'GET, HEAD']]);
    }
    const index = join(dir, 'index.html');
    if (!(await isFile(index))) {
      return res.send(503, [['content-type', 'text/plain; charset=utf-8'], ['cache-control', 'no-store'], ...base(req, requestId)], 'console assets not built: run npm run build:console\n');
    }
    let rel: string;
    try {
      rel = decodeURIComponent(rest);
    } catch {
      throw new HttpError(400, `'${rest}' is not a valid percent-encoded path`);
    }
    const file = normalize(join(dir, rel));
    let target = index;
    // A path outside the build (../), a folder or a missing file is a page path: the app routes it.
    if (rel !== '/' && rel !== '' && file.startsWith(dir + sep) && !rel.includes('\0') && (await isFile(file))) target = file;
    else if (rel.startsWith('/assets/')) throw new HttpError(404, `no console asset ${rel}`);
    const body = await readFile(target);
    const hashed = target !== index && rel.startsWith('/assets/');
    res.send(200, [
      ['content-type', TYPES[extname(target)] ?? 'application/octet-stream'],
      ['cache-control', hashed ? 'public, max-age=31536000, immutable' : 'no-cache'],
      ...base(req, requestId),
    ], req.method === 'HEAD' ? undefined : body);
  }

  async function handle(req: IncomingRequest, res: ResponseWriter, rest: string, requestId: string): Promise<void> {
    try {
      if (!deps.config.console) throw new HttpError(404, 'the web console is turned off on this node (UTILMETA_PROXY_CONSOLE=false)');
      if (rest === '') {
        return res.send(308, [['location', `${CONSOLE_PREFIX}/${req.query ? `?${req.query}` : ''}`], ...base(req, requestId)]);
      }
      if (req.method === 'OPTIONS') {
        // No CORS grant for foreign origins: the console is same-origin only.
        return res.send(204, [['allow', 'GET, HEAD, POST, DELETE'], ...base(req, requestId)]);
      }
      if (rest === '/session') return await session(req, res, requestId);
      if (rest === '/api/metrics') {
        if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'only GET is allowed on /console/api/metrics', undefined, [['allow', 'GET, HEAD']]);
        await currentUser(req);
        return json(req, res, requestId, 200, sampler.summary());
      }
      if (rest.startsWith('/api/')) throw new HttpError(404, `no console API at ${CONSOLE_PREFIX}${rest}`);
      return await staticFile(req, res, rest, requestId);
    } catch (err) {
      const e = toHttpError(err, MAX_BODY);
      if (!e) deps.log.error({ err, requestId, path: req.path }, 'console request failed');
      const he = e ?? new HttpError(500, 'internal error; see the proxy log for request ' + requestId);
      if (!res.aborted) json(req, res, requestId, he.status, errorBody(he), he.headers);
    }
  }

  return { prefix: CONSOLE_PREFIX, handle, traffic, sampler, close: () => sampler.stop() };
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
