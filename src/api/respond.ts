// Response helpers shared by the routes and the proxy chain: HTTP errors, JSON
// bodies, CORS.
import type { HeaderList, IncomingRequest, ResponseWriter } from '../http/types.ts';

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

/** Headers the proxy adds and browsers may read (spec §6.11: the original exposed only server-timing). */
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

/** CORS headers for a non-preflight response (spec §1.2: origin echoed, credentials allowed). */
export function corsHeaders(req: IncomingRequest): HeaderList {
  const origin = req.header('origin');
  if (!origin) return [['access-control-allow-origin', '*'], ['access-control-expose-headers', EXPOSED_HEADERS]];
  return [
    ['access-control-allow-origin', origin],
    ['access-control-allow-credentials', 'true'],
    ['access-control-expose-headers', EXPOSED_HEADERS],
    ['vary', 'Origin'],
  ];
}

/** OPTIONS is always answered locally (spec §1.2), never proxied. */
export function sendPreflight(req: IncomingRequest, res: ResponseWriter, methods: string, maxAge: number): void {
  res.send(200, [
    ['allow', methods],
    ...corsHeaders(req),
    ['access-control-allow-methods', methods],
    ['access-control-allow-headers', ALLOWED_HEADERS],
    ['access-control-max-age', String(maxAge)],
  ]);
}
