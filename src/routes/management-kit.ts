// Pieces every management surface shares: the JSON body (≤ 1 MiB), the mapping
// of whatever a handler threw to a DomainError, and the failure answer (SigV4
// failures in the AWS shape, everything else in the surface's envelope).
import { DomainError } from '../core/errors.ts';
import { BodyTooLargeError, type HeaderList, type IncomingRequest, type ResponseWriter } from '../http/types.ts';
import { corsHeaders, sendError, type Surface } from '../api/index.ts';
import { domainErrorOfDb } from '../db/errors.ts';
import { mapDbError } from '../access/store.ts';
import type postgres from 'postgres';
import { sigv4ErrorResponse, type AccessView } from '../access/index.ts';
import { SigV4Refusal } from './management-auth.ts';

/** Management bodies are JSON of at most 1 MiB. */
export const MANAGEMENT_BODY_LIMIT = 1024 * 1024;

const tooLarge = () => new DomainError('too_large', `the body exceeds ${MANAGEMENT_BODY_LIMIT} bytes`, { code: 'PARAM_INVALID', field: 'body' });

/** The raw body: the one authentication already read, or read now (within the limit). */
export async function readRawBody(req: IncomingRequest, alreadyRead: Buffer | null): Promise<Buffer | null> {
  if (alreadyRead) {
    if (alreadyRead.length > MANAGEMENT_BODY_LIMIT) throw tooLarge();
    return alreadyRead;
  }
  if (!req.hasBody) return null;
  try {
    return await req.readBody(MANAGEMENT_BODY_LIMIT);
  } catch (err) {
    if (err instanceof BodyTooLargeError) throw tooLarge();
    throw err;
  }
}

/**
 * The JSON body, or undefined when there is none. Any JSON media type is
 * accepted (`application/json;charset=utf8` included); a body that does not
 * parse is PARAM_INVALID naming the parser's complaint.
 */
export async function readJsonBody(req: IncomingRequest, alreadyRead: Buffer | null): Promise<unknown> {
  const raw = await readRawBody(req, alreadyRead);
  if (!raw || raw.length === 0) return undefined;
  const text = raw.toString('utf8');
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new DomainError('invalid', `body: not valid JSON (${(err as Error).message})`, { code: 'PARAM_INVALID', field: 'body' });
  }
}

/** What a handler threw, as a DomainError; null for anything unexpected (a bug: the app logs it and answers 500). */
export function asDomainError(err: unknown): DomainError | null {
  if (err instanceof DomainError) return err;
  if (err instanceof BodyTooLargeError) return tooLarge();
  const mapped = mapDbError(err);
  if (mapped instanceof DomainError) return mapped;
  return domainErrorOfDb(err);
}

/** CORS and request-id headers for a surface's answers. */
export function commonHeaders(req: IncomingRequest): HeaderList {
  return corsHeaders(req);
}

/**
 * Answers a failure: a SigV4 refusal in the AWS shape, a DomainError in the
 * surface's envelope. Returns false (nothing written) for an unexpected error.
 */
export function answerFailure(surface: Surface, req: IncomingRequest, res: ResponseWriter, requestId: string, err: unknown, decorate?: (e: DomainError) => DomainError): boolean {
  if (res.aborted) return true;
  if (err instanceof SigV4Refusal) {
    const r = sigv4ErrorResponse(err.failure, requestId);
    res.send(r.status, [...Object.entries(r.headers), ...commonHeaders(req), ['x-request-id', requestId]], r.body);
    return true;
  }
  const e = asDomainError(err);
  if (!e) return false;
  sendError(surface, res, { requestId, headers: commonHeaders(req) }, decorate ? decorate(e) : e);
  return true;
}

/**
 * Read-your-writes: after a write on this node, its own view has taken in
 * everything committed so far, so a key or token just created works on the
 * very next request. Loosening changes are applied by re-reading rows, which
 * the view does asynchronously; this waits for that (best effort: a failed
 * read leaves it to the view's own catch-up).
 */
export async function settleView(view: AccessView, sql: postgres.Sql): Promise<void> {
  try {
    const [row] = await sql<{ seq: string }[]>`SELECT seq FROM authz_state`;
    if (row) await view.settle(Number(row.seq));
  } catch {
    // the next request sees the change once the view catches up
  }
}
