// The management surfaces' envelopes. Each surface keeps the wire shape its
// clients were written for; the HTTP status always equals the envelope's status,
// so `curl -f` and SDKs see failures.
//   v1        /api/v1/…                       {code:"OK", msg, data, datetime, ext:{requestId}}
//   directory /minibase/portal/openapi/v1/…   {code:200, message:"success", data}
//   grants    /v1/{project_id}/service/…      success: the data (or 204); error {error_code, error_msg}
import { DomainError, type ErrorKind } from '../core/errors.ts';
import type { HeaderList, ResponseWriter } from '../http/types.ts';
import { STATUS_OF_KIND } from './errors.ts';

export type Surface = 'v1' | 'directory' | 'grants';

const V1_CODE: Readonly<Record<ErrorKind, string>> = {
  invalid: 'PARAM_INVALID', unauthenticated: 'UNAUTHORIZED', credentials_required: 'UNAUTHORIZED', forbidden: 'FORBIDDEN',
  not_found: 'NOT_FOUND', conflict: 'CONFLICT', too_large: 'PARAM_INVALID', too_many: 'TOO_MANY_REQUESTS',
  unprocessable: 'PARAM_INVALID', not_implemented: 'NOT_IMPLEMENTED', bad_gateway: 'INTERNAL_ERROR',
  unavailable: 'DB_UNAVAILABLE', timeout: 'INTERNAL_ERROR', internal: 'INTERNAL_ERROR',
};

const GRANTS_CODE: Readonly<Record<ErrorKind, string>> = {
  invalid: 'AUTHZ.4000', unauthenticated: 'AUTHZ.4010', credentials_required: 'AUTHZ.4010', forbidden: 'AUTHZ.4030',
  not_found: 'AUTHZ.4040', conflict: 'AUTHZ.4090', too_large: 'AUTHZ.4000', too_many: 'AUTHZ.4290',
  unprocessable: 'AUTHZ.4000', not_implemented: 'AUTHZ.5010', bad_gateway: 'AUTHZ.5020',
  unavailable: 'AUTHZ.5030', timeout: 'AUTHZ.5040', internal: 'AUTHZ.5000',
};

const JSON_TYPE: readonly [string, string] = ['content-type', 'application/json'];

export interface EnvelopeContext {
  requestId: string;
  /** Extra headers (CORS, request id) added to every answer. */
  headers?: HeaderList;
}

/** Success: the surface's envelope around `data` (grants: the data itself, or 204 for undefined). */
export function sendOk(surface: Surface, res: ResponseWriter, ctx: EnvelopeContext, data: unknown, opts: { status?: number; ext?: Record<string, unknown> } = {}): void {
  const headers: HeaderList = [...(ctx.headers ?? []), ['x-request-id', ctx.requestId]];
  if (surface === 'grants') {
    if (data === undefined) return res.send(opts.status ?? 204, headers);
    return res.send(opts.status ?? 200, [JSON_TYPE, ...headers], JSON.stringify(data));
  }
  const body = surface === 'v1'
    ? { code: 'OK', msg: '', data: data ?? null, datetime: new Date().toISOString(), ext: { requestId: ctx.requestId, ...opts.ext } }
    : { code: opts.status ?? 200, message: 'success', data: data ?? null };
  res.send(opts.status ?? 200, [JSON_TYPE, ...headers], JSON.stringify(body));
}

/** Failure: the surface's error envelope, the status from the error's kind. */
export function sendError(surface: Surface, res: ResponseWriter, ctx: EnvelopeContext, err: DomainError): void {
  const status = STATUS_OF_KIND[err.kind];
  const headers: HeaderList = [...(ctx.headers ?? []), ['x-request-id', ctx.requestId]];
  if (err.kind === 'unauthenticated' || err.kind === 'credentials_required') headers.push(['www-authenticate', 'Bearer realm="utilmeta-proxy"']);
  if (err.retryAfter !== undefined) headers.push(['retry-after', String(Math.ceil(err.retryAfter))]);
  let body: unknown;
  if (surface === 'v1') {
    const ext: Record<string, unknown> = { requestId: ctx.requestId };
    if (err.field) ext.field = err.field;
    body = { code: err.code ?? V1_CODE[err.kind], msg: err.message, data: err.data ?? null, datetime: new Date().toISOString(), ext };
  } else if (surface === 'directory') {
    body = { code: status, message: err.code ?? V1_CODE[err.kind], data: err.data ?? null };
  } else {
    body = { error_code: err.code ?? GRANTS_CODE[err.kind], error_msg: err.message };
  }
  res.send(status, [JSON_TYPE, ...headers], JSON.stringify(body));
}

export { DomainError };
