// Domain errors: what went wrong, in the domain's words. Domains (registry,
// platform, access, health) throw these and never know about HTTP; the API
// layer maps `kind` to a status and each surface renders `code` in its own
// envelope.

export type ErrorKind =
  | 'invalid' // 400: the input is malformed or breaks a rule
  | 'unauthenticated' // 401: no credential, or a bad one
  | 'credentials_required' // 407: the proxy itself wants a credential (Proxy-Authorization)
  | 'forbidden' // 403
  | 'not_found' // 404
  | 'conflict' // 409
  | 'too_large' // 413
  | 'unprocessable' // 422: well-formed, but its content cannot be accepted
  | 'too_many' // 429
  | 'not_implemented' // 501
  | 'bad_gateway' // 502: a peer (upstream, platform) failed or is untrusted
  | 'unavailable' // 503: a dependency (database, master key, instances) is missing
  | 'timeout' // 504
  | 'internal'; // 500: a known server-side fault whose message is safe to show

export interface DomainErrorOptions {
  /** Machine-readable code for the surface's envelope (e.g. USER_NOT_FOUND, AUTHZ.4003). */
  code?: string;
  /** The proxy path's `state` field (e.g. token_expired, grant_required). */
  state?: string;
  /** The input field at fault (e.g. `filters[2].op`, `apply_type`). */
  field?: string;
  /** Extra data for the envelope (e.g. the accounts that already exist). */
  data?: unknown;
  /** Seconds until a retry makes sense (429, 503). */
  retryAfter?: number;
  cause?: unknown;
}

export class DomainError extends Error {
  readonly code?: string;
  readonly state?: string;
  readonly field?: string;
  readonly data?: unknown;
  readonly retryAfter?: number;

  constructor(readonly kind: ErrorKind, message: string, opts: DomainErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = opts.code;
    this.state = opts.state;
    this.field = opts.field;
    this.data = opts.data;
    this.retryAfter = opts.retryAfter;
  }
}

export const invalid = (message: string, opts?: DomainErrorOptions) => new DomainError('invalid', message, opts);
export const notFound = (message: string, opts?: DomainErrorOptions) => new DomainError('not_found', message, opts);
export const conflict = (message: string, opts?: DomainErrorOptions) => new DomainError('conflict', message, opts);
export const forbidden = (message: string, opts?: DomainErrorOptions) => new DomainError('forbidden', message, opts);
export const unavailable = (message: string, opts?: DomainErrorOptions) => new DomainError('unavailable', message, opts);

export function isDomainError(err: unknown): err is DomainError {
  return err instanceof DomainError;
}
