// PostgreSQL failures in the domain's words: an outage is `unavailable`, a
// broken constraint is a conflict or invalid input. Callers above the database
// never see driver error codes.
import { DomainError } from '../core/errors.ts';
import { errorCode } from './client.ts';

const OUTAGE = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'CONNECT_TIMEOUT', 'CONNECTION_CLOSED', 'CONNECTION_ENDED',
  'CONNECTION_DESTROYED', '57P01', '57P02', '57P03', '08000', '08001', '08003', '08006', '53300',
]);

/** The DomainError for a database error, or null when `err` is not one. */
export function domainErrorOfDb(err: unknown): DomainError | null {
  if (err instanceof DomainError) return err;
  const code = errorCode(err);
  if (!code) return null;
  const e = err as { message?: string; constraint_name?: string };
  if (OUTAGE.has(code)) return new DomainError('unavailable', `database unavailable (${code}); try again later`, { code: 'DB_UNAVAILABLE', cause: err, retryAfter: 5 });
  if (code === '23505') return new DomainError('conflict', `conflicts with an existing row (${e.constraint_name ?? 'unique constraint'})`, { cause: err });
  if (code === '22001') return new DomainError('invalid', `a value is too long for its column: ${e.message}`, { cause: err });
  if (code.startsWith('22') || code.startsWith('23')) return new DomainError('invalid', `invalid value: ${e.message}`, { cause: err });
  return null;
}
