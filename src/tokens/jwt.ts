// Verification of platform-issued JWTs: `Proxy-Authorization` tokens (cluster key, spec §4.1)
// and OperationsAPI bearer tokens (node key, §4.2), plus the scope helpers of §4.2 step 6.
//
// verifyToken never throws for bad input: every failure is a typed result. The original let
// library exceptions escape as 500s and checked `iss` with a bare prefix test (§6.16-6.17);
// here every failure is a 4xx (a 500 only when OUR configured key is unusable), `iss` must be
// present and match at a URL boundary, and `exp` is mandatory.
//
// Checks run in the original's order: format -> algorithm -> signature -> nid -> iss -> aud
// -> exp present -> exp/nbf -> jti. Claims are only looked at after the signature verified, so
// messages never echo attacker-chosen claims of an unsigned token. A verified signature is
// memoized per (key text, token) (bounded, see KeyEntry.verified), because the platform reuses a
// token for its lifetime; every claim check still runs on every call.
//
// | failure                                                           | status | state              | message                                        |
// |-------------------------------------------------------------------|--------|--------------------|------------------------------------------------|
// | no token / empty header value                                     | 401    | token_required     | Token required                                 |
// | not `[scheme ]a.b.c`, bad base64url/JSON, header/payload not objects, non-numeric exp/nbf/iat, unknown `crit`, > 16 KiB | 400 | token_invalid | Invalid token format (…) |
// | `alg` not RS256/384/512 or PS256/384/512 (none, HS*, ES*, missing) | 400    | token_invalid      | Invalid token algorithm: '<alg>'               |
// | signature does not verify with the key                            | 401    | token_invalid      | Invalid token: signature verification failed   |
// | `nid` missing or != nodeId                                        | 409    | node_id_mismatch   | Invalid node id                                |
// | `iss` missing/empty                                               | 409    | issuer_mismatch    | Invalid token issuer: missing                  |
// | `iss` not issuerBase or a prefix of it ending at a `/`            | 409    | issuer_mismatch    | Invalid token issuer: '<iss>'                  |
// | `aud` != audience (when an audience is required)                  | 409    | audience_mismatch  | Invalid token audience: '<aud>'                |
// | `exp` missing                                                     | 422    | token_invalid      | Invalid token: no expires                      |
// | now > exp + leeway                                                | 400    | token_expired      | Invalid token: expired                         |
// | now < nbf - leeway                                                | 400    | token_invalid      | Invalid token: not yet valid                   |
// | `jti` missing/not a string (only with requireJti)                 | 400    | token_expired      | Invalid token: id required                     |
// | the configured key is not a usable RSA JWK (server misconfig)     | 500    | key_invalid        | Invalid verification key: …                    |
//
// Why these codes: 409 / 422 and the 400 `token_expired` for expiry and a missing jti are what
// the original OperationsAPI emits (§4.1, §4.2), and the platform may key off `token_expired`;
// failures the original turned into 500 by accident get proper 4xx (400 for malformed input, 401
// for a bad signature). The proxy answers a missing `Proxy-Authorization` with 407 itself; 401
// here is for callers without such a convention.

import { leadingWords } from '../core/text.ts';
import { constants, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { keyEntry, type KeyAlgorithm, type KeyEntry } from './keys.ts';

export type TokenState =
  | 'token_required'
  | 'token_invalid'
  | 'token_expired'
  | 'node_id_mismatch'
  | 'issuer_mismatch'
  | 'audience_mismatch'
  | 'key_invalid';

export interface TokenFailure {
  ok: false;
  status: number;
  state: TokenState;
  message: string;
}

/** Claims as the platform sets them (§4.2 "Claims used"); other members are kept. */
export interface TokenClaims {
  readonly iss: string;
  readonly nid: string;
  readonly exp: number;
  readonly aud?: string | readonly string[];
  readonly sub?: string;
  readonly iat?: number;
  readonly nbf?: number;
  readonly jti?: string;
  readonly scope?: string;
  readonly [claim: string]: unknown;
}

export interface TokenSuccess {
  ok: true;
  /** Frozen; shared between calls that present the same token. */
  claims: TokenClaims;
  /** The verified JOSE header (alg, typ, …). */
  header: Readonly<Record<string, unknown>>;
  /** The bare JWT (scheme stripped). */
  token: string;
}

export type TokenResult = TokenSuccess | TokenFailure;

export interface VerifyTokenOptions {
  /** Verification key: public JWK as JSON text or base64 of it (cluster key or node key). */
  key: string;
  /** The node the request is for; `nid` must equal it. */
  nodeId: string;
  /** The supervisor base URL (e.g. SUPERVISOR_BASE_URL); `iss` must be it or a URL-prefix of it. */
  issuerBase: string;
  /** When given, `aud` must equal it (the cluster id for proxy tokens). */
  audience?: string;
  /** Require a string `jti` (OperationsAPI tokens). Default false. */
  requireJti?: boolean;
  /** Clock skew tolerance for exp/nbf, seconds. Default 30. */
  leewaySec?: number;
  /** Current time in epoch SECONDS (JWT NumericDate). Default: the wall clock. */
  now?: number;
}

const ALGORITHMS: ReadonlySet<string> = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']);
const MAX_TOKEN_LENGTH = 16 * 1024;
const MAX_VERIFIED_PER_KEY = 256;
const DEFAULT_LEEWAY_SEC = 30;

const B64URL = /^[A-Za-z0-9_-]*$/;

interface Decoded {
  header: Readonly<Record<string, unknown>>;
  claims: TokenClaims;
}

function fail(status: number, state: TokenState, message: string): TokenFailure {
  return { ok: false, status, state, message };
}

/** `<jwt>` or `<scheme> <jwt>` (the original took the second whitespace-separated word). */
export function extractToken(value: string | undefined | null): string | null {
  if (typeof value !== 'string') return null;
  const w = leadingWords(value);
  if (w.count === 1) return w.first || null;
  if (w.count === 2) return w.second;
  return '';
}

function decodeJsonObject(segment: string): Record<string, unknown> | null {
  if (!segment || !B64URL.test(segment)) return null;
  try {
    const v = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Parses without verifying; returns a failure for anything malformed or a disallowed alg. */
function decode(token: string): Decoded | TokenFailure {
  const parts = token.split('.');
  if (parts.length !== 3) return fail(400, 'token_invalid', 'Invalid token format');
  const header = decodeJsonObject(parts[0]);
  if (!header) return fail(400, 'token_invalid', 'Invalid token format: bad header');
  const alg = header.alg;
  if (typeof alg !== 'string' || !ALGORITHMS.has(alg)) {
    return fail(400, 'token_invalid', `Invalid token algorithm: '${typeof alg === 'string' ? alg.slice(0, 32) : String(alg)}'`);
  }
  const payload = decodeJsonObject(parts[1]);
  if (!payload) return fail(400, 'token_invalid', 'Invalid token format: bad payload');
  if (!parts[2] || !B64URL.test(parts[2])) return fail(400, 'token_invalid', 'Invalid token format: bad signature');
  for (const c of ['exp', 'nbf', 'iat'] as const) {
    if (payload[c] !== undefined && payload[c] !== null && !isNum(payload[c])) {
      return fail(400, 'token_invalid', `Invalid token format: '${c}' is not a number`);
    }
  }
  return { header: Object.freeze(header), claims: Object.freeze(payload) as TokenClaims };
}

/** Signature check, memoized per (key, token) in the key entry. */
function verifySignature(entry: KeyEntry, token: string): Decoded | TokenFailure {
  // Keyed by the signature's tail, then compared whole: hashing the ~700-character
  // token on every request cost more than the rest of the lookup.
  const memo = verifiedKey(token);
  const hit = entry.verified.get(memo) as (Decoded & { token: string }) | undefined;
  if (hit && hit.token === token) return hit;
  const decoded = decode(token);
  if ('ok' in decoded) return decoded;
  const alg = decoded.header.alg as KeyAlgorithm;
  // Header members we do not understand must not be ignored (RFC 7515 §4.1.11).
  if (decoded.header.crit !== undefined) return fail(400, 'token_invalid', 'Invalid token format: unsupported "crit" header');
  let key: KeyObject;
  try {
    key = entry.keyObject();
  } catch (err) {
    return fail(500, 'key_invalid', `Invalid verification key: ${(err as Error).message}`);
  }
  // node:crypto's synchronous RSA verify with a cached KeyObject instead of jose's
  // compactVerify: this is the operations hot path, and WebCrypto's thread-pool
  // round trip cost ~4x more per fresh token (145 µs vs 32 µs measured here).
  // The structure, algorithm allow-list and claims are checked by our own code.
  const dot = token.lastIndexOf('.');
  const ok = cryptoVerify(
    `sha${alg.slice(2)}`,
    Buffer.from(token.slice(0, dot), 'ascii'),
    alg.startsWith('PS')
      ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }
      : { key, padding: constants.RSA_PKCS1_PADDING },
    Buffer.from(token.slice(dot + 1), 'base64url'),
  );
  if (!ok) return fail(401, 'token_invalid', 'Invalid token: signature verification failed');
  const v = entry.verified;
  if (v.size >= MAX_VERIFIED_PER_KEY && !v.has(memo)) v.delete(v.keys().next().value as string);
  v.set(memo, { ...decoded, token });
  return decoded;
}

/** The memo key of a token: the end of its signature (a tie only costs a verification). */
function verifiedKey(token: string): string {
  return token.length > 32 ? token.slice(-32) : token;
}

/** `iss` must equal `base`, or be a prefix of it that ends at a path boundary. */
export function issuerMatches(iss: string, base: string): boolean {
  if (!iss || !base.startsWith(iss)) return false;
  return base.length === iss.length || iss.endsWith('/') || base.charCodeAt(iss.length) === 47 /* '/' */;
}

/** Verifies a platform JWT. Never throws. */
export async function verifyToken(token: string, opts: VerifyTokenOptions): Promise<TokenResult> {
  const jwt = extractToken(token);
  if (jwt === null) return fail(401, 'token_required', 'Token required');
  return verifyJwt(jwt, opts);
}

/**
 * verifyToken for a token already taken out of its header value (by
 * extractToken), without a promise: everything here is synchronous
 * (node:crypto's verify, and a memo hit skips even that), so the operations
 * hot path calls it without waiting a turn. Never throws.
 */
export function verifyJwt(jwt: string, opts: VerifyTokenOptions): TokenResult {
  try {
    if (!jwt || jwt.length > MAX_TOKEN_LENGTH) return fail(400, 'token_invalid', 'Invalid token format');

    let entry: KeyEntry;
    try {
      entry = keyEntry(opts.key);
    } catch (err) {
      return fail(500, 'key_invalid', `Invalid verification key: ${(err as Error).message}`);
    }
    const verified = verifySignature(entry, jwt);
    if ('ok' in verified) return verified;
    const { claims, header } = verified;

    if (typeof claims.nid !== 'string' || claims.nid !== opts.nodeId) return fail(409, 'node_id_mismatch', 'Invalid node id');

    const iss = claims.iss;
    if (typeof iss !== 'string' || !iss) return fail(409, 'issuer_mismatch', 'Invalid token issuer: missing');
    if (!issuerMatches(iss, opts.issuerBase)) return fail(409, 'issuer_mismatch', `Invalid token issuer: '${iss.slice(0, 200)}'`);

    if (opts.audience !== undefined) {
      const aud = claims.aud;
      // RFC 7519 §4.1.3: aud may be a single string or an array of strings.
      const okAud = typeof aud === 'string' ? aud === opts.audience : Array.isArray(aud) && aud.includes(opts.audience);
      if (!okAud) return fail(409, 'audience_mismatch', `Invalid token audience: '${typeof aud === 'string' ? aud.slice(0, 200) : JSON.stringify(aud ?? null)}'`);
    }

    if (!isNum(claims.exp)) return fail(422, 'token_invalid', 'Invalid token: no expires');
    const now = opts.now ?? Date.now() / 1000;
    const leeway = opts.leewaySec ?? DEFAULT_LEEWAY_SEC;
    if (now > claims.exp + leeway) return fail(400, 'token_expired', 'Invalid token: expired');
    if (isNum(claims.nbf) && now < claims.nbf - leeway) return fail(400, 'token_invalid', 'Invalid token: not yet valid');

    if (opts.requireJti && (typeof claims.jti !== 'string' || !claims.jti)) return fail(400, 'token_expired', 'Invalid token: id required');

    return { ok: true, claims, header, token: jwt };
  } catch (err) {
    // Defensive: nothing above should throw, but a thrown error must never become a 500 here.
    return fail(400, 'token_invalid', `Invalid token: ${(err as Error)?.message ?? 'unreadable'}`);
  }
}

/**
 * Scope claim per §4.2 step 6: split on spaces when the string contains any, else on commas;
 * `name:resource` contributes `name` to scopes and `resource` to resources.
 */
export function parseScope(scope: string | undefined | null): { scopes: string[]; resources: string[] } {
  const scopes: string[] = [];
  const resources: string[] = [];
  if (typeof scope !== 'string') return { scopes, resources };
  const items = /\s/.test(scope) ? scope.split(/\s+/) : scope.split(',');
  for (const raw of items) {
    const item = raw.trim();
    if (!item) continue;
    const i = item.indexOf(':');
    if (i < 0) {
      scopes.push(item);
    } else {
      if (i > 0) scopes.push(item.slice(0, i));
      const res = item.slice(i + 1);
      if (res) resources.push(res);
    }
  }
  return { scopes, resources };
}

/** True when `granted` contains `*` or every scope in `required`. */
export function hasScopes(required: readonly string[], granted: readonly string[]): boolean {
  if (granted.includes('*')) return true;
  return required.every((s) => granted.includes(s));
}
