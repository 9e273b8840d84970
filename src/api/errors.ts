// Maps whatever a route or stage threw to the HTTP error it answers with.
// Domain errors carry a kind; the status lives here and only here.
import { DomainError, type ErrorKind } from '../core/errors.ts';
import { domainErrorOfDb } from '../db/errors.ts';
import { BodyTooLargeError, type HeaderList } from '../http/types.ts';
import { HttpError } from './respond.ts';

export const STATUS_OF_KIND: Readonly<Record<ErrorKind, number>> = {
  invalid: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  credentials_required: 407,
  conflict: 409,
  too_large: 413,
  unprocessable: 422,
  too_many: 429,
  not_implemented: 501,
  bad_gateway: 502,
  unavailable: 503,
  timeout: 504,
  internal: 500,
};

export function httpErrorOfDomain(err: DomainError): HttpError {
  const headers: HeaderList = [];
  if (err.kind === 'credentials_required') headers.push(['proxy-authenticate', 'Bearer']);
  if (err.retryAfter !== undefined) headers.push(['retry-after', String(Math.ceil(err.retryAfter))]);
  return new HttpError(STATUS_OF_KIND[err.kind], err.message, err.state, headers);
}

/** The HttpError for `err`, or null for an unexpected error (a bug: log it, answer 500). */
export function toHttpError(err: unknown, bodyLimit: number): HttpError | null {
  if (err instanceof HttpError) return err;
  if (err instanceof DomainError) return httpErrorOfDomain(err);
  if (err instanceof BodyTooLargeError) return new HttpError(413, `request body exceeds the limit of ${bodyLimit} bytes`);
  const db = domainErrorOfDb(err);
  return db ? httpErrorOfDomain(db) : null;
}
