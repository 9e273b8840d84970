// The console's cookie session, and the one rule every management surface uses
// to accept that cookie. A cookie is sent by the browser on any request to this
// origin, including ones a foreign page triggers (forms, images, fetch with
// credentials), so on its own it proves nothing. The cookie counts only when the
// request also carries `X-UtilMeta-Console: 1` — a custom header, which a
// cross-site page cannot add without a CORS preflight this node never grants to
// foreign origins for cookie requests — and when its Origin, if present, is this
// node's own.
import type { IncomingRequest } from '../http/types.ts';
import type { HeaderList } from '../http/types.ts';

export const SESSION_COOKIE = 'umproxy_session';
export const CONSOLE_HEADER = 'x-utilmeta-console';
const TOKEN_RE = /^umt_[A-Za-z0-9_-]{43}$/;

/** The value of one cookie from the Cookie header(s), or undefined. */
export function readCookie(req: Pick<IncomingRequest, 'headers'>, name: string): string | undefined {
  for (const [k, v] of req.headers) {
    if (k !== 'cookie') continue;
    for (const part of v.split(';')) {
      const eq = part.indexOf('=');
      if (eq < 0) continue;
      if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
    }
  }
  return undefined;
}

/** True when the request arrived over https (directly or as a trusted proxy says). */
export function isHttps(req: Pick<IncomingRequest, 'header'>): boolean {
  const proto = req.header('x-forwarded-proto')?.split(',')[0]?.trim().toLowerCase();
  return proto === 'https';
}

/**
 * This node's own origin as the browser sees it: scheme from X-Forwarded-Proto
 * (else http), authority from X-Forwarded-Host, else Host.
 */
export function ownOrigin(req: Pick<IncomingRequest, 'header'>): string | null {
  const host = req.header('x-forwarded-host')?.split(',')[0]?.trim() || req.header('host');
  if (!host) return null;
  return `${isHttps(req) ? 'https' : 'http'}://${host.toLowerCase()}`;
}

/** The Origin header is absent, or names this node. */
export function sameOrigin(req: Pick<IncomingRequest, 'header'>): boolean {
  const origin = req.header('origin');
  if (origin === undefined) return true;
  const own = ownOrigin(req);
  return own !== null && origin.toLowerCase() === own;
}

/**
 * The `umt_` token of the console session cookie when the cookie may authenticate
 * this request, else null. Management authentication treats a non-null answer as
 * `Authorization: Bearer <token>`; the CORS answer for such a request must not
 * echo a foreign Origin (use `cookieCorsHeaders`).
 */
export function sessionToken(req: Pick<IncomingRequest, 'headers' | 'header'>): string | null {
  if (req.header(CONSOLE_HEADER) !== '1') return null;
  if (!sameOrigin(req)) return null;
  const token = readCookie(req, SESSION_COOKIE);
  return token !== undefined && TOKEN_RE.test(token) ? token : null;
}

/**
 * CORS headers for a cookie-authenticated response: only this node's own origin
 * is ever named, and nothing when the request came from elsewhere.
 */
export function cookieCorsHeaders(req: Pick<IncomingRequest, 'header'>): HeaderList {
  const origin = req.header('origin');
  if (!origin || !sameOrigin(req)) return [['vary', 'Origin']];
  return [['access-control-allow-origin', origin], ['access-control-allow-credentials', 'true'], ['vary', 'Origin']];
}

/** Set-Cookie for a new session; Secure when the request came over https. */
export function sessionCookie(token: string, maxAgeSeconds: number, secure: boolean): string {
  return `${SESSION_COOKIE}=${token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}${secure ? '; Secure' : ''}`;
}

/** Set-Cookie that removes the session cookie. */
export function clearedSessionCookie(secure: boolean): string {
  return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${secure ? '; Secure' : ''}`;
}

const CREDENTIAL_HEADERS = new Set(['authorization', 'x-auth-token', 'x-amz-date', 'x-amz-security-token']);

/**
 * The request as management authentication should see it: when the console
 * cookie may authenticate it (see sessionToken) and it carries no credential
 * of its own, the same request with `Authorization: Bearer <token>` added;
 * otherwise the request unchanged. An explicit credential always wins over the
 * cookie, so a SigV4 or bearer call from the console page is judged as itself.
 */
export function withSessionCredential(req: IncomingRequest): IncomingRequest {
  if (req.headers.some(([k]) => CREDENTIAL_HEADERS.has(k)) || /[?&]X-Amz-Signature=/i.test(req.query)) return req;
  const token = sessionToken(req);
  if (!token) return req;
  const bearer = `Bearer ${token}`;
  // Every member delegates to the listener's own request (its methods may rely on their receiver).
  return {
    method: req.method,
    path: req.path,
    query: req.query,
    headers: [...req.headers, ['authorization', bearer]],
    header: (name: string) => (name === 'authorization' ? bearer : req.header(name)),
    remoteAddress: req.remoteAddress,
    listener: req.listener,
    hasBody: req.hasBody,
    body: (limit: number) => req.body(limit),
    readBody: (limit: number) => req.readBody(limit),
    upgrade: req.upgrade,
    connection: req.connection,
  };
}
