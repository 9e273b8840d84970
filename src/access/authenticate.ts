// Who a request's credential says it is, against the in-memory access snapshot:
// a `umt_` bearer token (Authorization, Proxy-Authorization or X-Auth-Token) or
// an AWS SigV4 signature (header or presigned form). The same resolution serves
// the proxy path and the management surfaces; nothing here does I/O.
import type { AccessSnapshot } from './view.ts';
import { authenticateBearer, principalForAccessKey, type AuthFailure, type Principal } from './decide.ts';
import {
  findCarriers, verifySigV4, finishSigV4, type HeaderPairs, type SigV4Failure, type SigV4KeyInfo, type SigV4Options,
  type SigV4Success, type SigV4Surface, type SigV4Verified,
} from './sigv4.ts';

export interface CredentialInput {
  method: string;
  rawPath: string;
  rawQuery: string;
  headers: HeaderPairs;
  /** The effective Host (a trusted X-Forwarded-Host when fronted). */
  host: string | undefined;
  surface: SigV4Surface;
  /** Hex SHA-256 of the body when the caller buffered it (SigV4 with a body hash). */
  bodySha256?: string;
}

export type CredentialResult =
  | { kind: 'none' }
  | { kind: 'principal'; principal: Principal; sigv4: SigV4Success | null }
  /** A bearer token that does not authenticate, or more than one carrier. */
  | { kind: 'failure'; failure: AuthFailure }
  /** A SigV4 failure: answered in the AWS error shape. */
  | { kind: 'sigv4_failure'; failure: SigV4Failure };

const UMT_IN_AUTH = /^\s*Bearer\s+(umt_\S+)\s*$/i;

/** The `umt_` token of a request, and whether more than one was sent. */
export function bearerToken(headers: HeaderPairs): { token: string | null; count: number } {
  let token: string | null = null;
  let count = 0;
  for (const [name, value] of headers) {
    let t: string | null = null;
    if (name === 'authorization' || name === 'proxy-authorization') t = UMT_IN_AUTH.exec(value)?.[1] ?? null;
    else if (name === 'x-auth-token' && value.trim().startsWith('umt_')) t = value.trim();
    if (t !== null) {
      count++;
      token ??= t;
    }
  }
  return { token, count };
}

/** True when a SigV4 request's body must be hashed before it can be verified. */
export function sigv4NeedsBody(headers: HeaderPairs, rawQuery: string): boolean {
  const carriers = findCarriers(headers, rawQuery);
  if (!carriers.includes('sigv4-header') && !carriers.includes('sigv4-presigned')) return false;
  for (const [name, value] of headers) if (name === 'x-amz-content-sha256') return value.trim() !== 'UNSIGNED-PAYLOAD';
  return true;
}

export function keyResolver(snap: AccessSnapshot): (akid: string) => SigV4KeyInfo | undefined {
  return (akid) => {
    const k = snap.state.keys.get(akid);
    if (!k) return undefined;
    const user = k.ownerUserId !== null ? snap.state.users.get(k.ownerUserId) : undefined;
    const app = k.ownerAppId !== null ? snap.state.apps.get(k.ownerAppId) : undefined;
    return {
      secret: snap.secrets.get(akid),
      status: k.status,
      expiresAt: k.expiresAt,
      owner: k.ownerUserId !== null ? { type: 'USER', id: k.ownerUserId } : { type: 'APP', id: k.ownerAppId! },
      ownerDisabled: k.ownerUserId !== null ? !user || user.status !== 1 : !app || app.status !== 'ACTIVE',
    };
  };
}

export function resolveCredential(snap: AccessSnapshot, input: CredentialInput, now: number, sigv4Options: SigV4Options): CredentialResult {
  const carriers = findCarriers(input.headers, input.rawQuery);
  if (carriers.length === 0) return { kind: 'none' };
  const hasSig = carriers.includes('sigv4-header') || carriers.includes('sigv4-presigned');
  if (hasSig) {
    // The verifier itself refuses a second carrier (AWS InvalidArgument).
    const v: SigV4Verified | SigV4Failure | null = verifySigV4(
      { method: input.method, rawPath: input.rawPath, rawQuery: input.rawQuery, headers: input.headers, host: input.host, bodySha256: input.bodySha256 },
      { now, surface: input.surface, options: sigv4Options, resolveKey: keyResolver(snap) },
    );
    if (v === null) return { kind: 'none' };
    if (!v.ok) return { kind: 'sigv4_failure', failure: v };
    const done = finishSigV4(v, input.bodySha256);
    if (!done.ok) return { kind: 'sigv4_failure', failure: done };
    const p = principalForAccessKey(snap.state, done.accessKeyId, now);
    if ('kind' in p && p.kind === 'failure') return { kind: 'failure', failure: p };
    return { kind: 'principal', principal: p as Principal, sigv4: done };
  }
  const { token, count } = bearerToken(input.headers);
  if (count > 1) return { kind: 'failure', failure: { kind: 'failure', status: 400, state: 'multiple_credentials', message: 'only one credential may be sent (Authorization, Proxy-Authorization or X-Auth-Token)' } };
  if (token === null) return { kind: 'none' };
  const p = authenticateBearer(snap.state, token, now);
  if ('kind' in p && p.kind === 'failure') return { kind: 'failure', failure: p };
  return { kind: 'principal', principal: p as Principal, sigv4: null };
}
