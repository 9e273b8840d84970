// Response helpers shared by the routes and the proxy chain: HTTP errors, JSON
// bodies, CORS.
import { fieldPairs, type HeaderList, type IncomingRequest, type ResponseWriter } from '../http/types.ts';

/** An error that becomes a JSON response: {"error": message[, "state": state]}. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly state?: string,
    readonly headers: HeaderList = [],
  ) {
    super(message);
  }
}

const JSON_TYPE: readonly [string, string] = ['content-type', 'application/json'];

/**
 * A complete answer decided below the routes (an AWS-shaped SigV4 error, an
 * access decision's deny body): thrown, and written as it is.
 */
export class RawReply extends Error {
  constructor(readonly status: number, readonly headers: HeaderList, readonly body: string, readonly state?: string) {
    super(`reply ${status}${state ? ` (${state})` : ''}`);
  }
}

export function sendJson(res: ResponseWriter, status: number, body: unknown, headers: HeaderList = []): void {
  res.send(status, [JSON_TYPE, ...headers], JSON.stringify(body));
}

export function errorBody(err: HttpError): Record<string, string> {
  return err.state ? { error: err.message, state: err.state } : { error: err.message };
}

/** Headers the proxy adds and browsers may read (the original exposed only server-timing). */
export const EXPOSED_HEADERS = [
  'server-timing',
  'x-request-id',
  'x-utilmeta-proxy-destination-base-url',
  'x-utilmeta-proxy-destination-instance-id',
  'x-utilmeta-proxy-retries',
].join(', ');

/** Request headers a browser (the platform console) may send through the proxy. */
export const ALLOWED_HEADERS = [
  'x-utilmeta-proxy-type', 'x-utilmeta-cluster-id', 'x-utilmeta-node-id', 'x-utilmeta-service-name',
  'x-utilmeta-accept-version', 'x-utilmeta-instance-id', 'x-utilmeta-operation-idempotent',
  'x-utilmeta-request-timeout', 'authorization', 'cache-control', 'x-request-id',
  'content-type', 'content-length', 'accept', 'origin', 'user-agent',
].join(', ');

/** Longest Origin echoed back; real origins are far shorter. */
export const MAX_ORIGIN_LENGTH = 2048;
// `scheme://host[:port]`: a DNS name, IPv4 or bracketed IPv6 host, ASCII only.
const ORIGIN = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

/**
 * The request's Origin when it is a serialized origin (`null` or
 * `scheme://host[:port]`, ASCII, at most 2 KB), else undefined. Only such a
 * value is echoed: anything else would put arbitrary bytes into a response
 * header (which a listener may refuse to write) and grant credentials to
 * something that is not an origin.
 */
export function wellFormedOrigin(origin: string | undefined): string | undefined {
  if (origin === undefined || origin.length > MAX_ORIGIN_LENGTH) return undefined;
  return origin === 'null' || ORIGIN.test(origin) ? origin : undefined;
}

/**
 * CORS headers for a non-preflight response: a well-formed Origin is echoed
 * with credentials allowed; without one (absent or malformed) any origin may
 * read, without credentials.
 */
export function corsHeaders(req: IncomingRequest): HeaderList {
  const fields: string[] = [];
  pushCorsFields(req, fields);
  return fieldPairs(fields);
}

/** The CORS headers appended to a flat [name, value, ...] list (a relayed head), without building pairs. */
export function pushCorsFields(req: IncomingRequest, out: string[]): void {
  const origin = wellFormedOrigin(req.header('origin'));
  if (origin === undefined) out.push('access-control-allow-origin', '*', 'access-control-expose-headers', EXPOSED_HEADERS);
  else out.push('access-control-allow-origin', origin, 'access-control-allow-credentials', 'true', 'access-control-expose-headers', EXPOSED_HEADERS, 'vary', 'Origin');
}

/** OPTIONS is always answered locally, never proxied. */
export function sendPreflight(req: IncomingRequest, res: ResponseWriter, methods: string, maxAge: number): void {
  res.send(200, [
    ['allow', methods],
    ...corsHeaders(req),
    ['access-control-allow-methods', methods],
    ['access-control-allow-headers', ALLOWED_HEADERS],
    ['access-control-max-age', String(maxAge)],
  ]);
}
