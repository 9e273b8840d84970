// AWS Signature Version 4 verification for inbound requests (header and presigned forms).
//
// Pure: no HTTP kit, no database, no clock. The caller hands over the request as received
// (raw path and query, header pairs in wire order, the effective host), the time, the surface
// and a key resolver; the answer is either the authenticated key with what to strip before the
// upstream, or a failure carrying the AWS error code, the HTTP status and a `state`.
//
// Checks run in a fixed order and the first failure answers:
//   1 parse  2 multiple carriers  3 date format  4 scope format  5 region, service, then
//   scope day = X-Amz-Date day  6 skew or presign window  7 key lookup and status
//   8 signed-header rules  9 payload-hash form  10 signature  11 declared hash vs body
//   12 owner status.
// Steps 1–10 are `verifySigV4`, 11–12 `finishSigV4`: a request that declares a hex hash has its
// signature checked before the caller buffers and hashes the body. Nothing may reach an upstream
// before `finishSigV4` succeeds. `authenticateSigV4` runs all twelve on a buffered body.
//
// The canonicalisation is hand-written rather than taken from @smithy/signature-v4: the signer
// libraries canonicalise a request they build (a parsed query object, a path they will encode),
// while a verifier must canonicalise the raw bytes it received, and the result has to equal, byte
// for byte, what botocore, smithy and aws4 each computed on their side. Only the primitives
// (HMAC, SHA-256, timing-safe comparison) come from node:crypto.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { DomainError } from '../core/errors.ts';

export const SIGV4_ALGORITHM = 'AWS4-HMAC-SHA256';
export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
/** SHA-256 of the empty body. */
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
export const MAX_PRESIGN_EXPIRES = 604800;

export type SigV4Surface = 'proxy' | 'management';
export type SigV4Form = 'header' | 'presigned';

export interface SigV4Options {
  /** Required region in the credential scope. */
  region: string;
  /** Accepted service names in the credential scope. */
  services: readonly string[];
  /** Allowed clock skew in seconds (header form; also the presigned not-before slack). */
  maxSkewSeconds: number;
  /** Whether `x-amz-content-sha256: UNSIGNED-PAYLOAD` is accepted on the proxy surface. */
  unsignedPayload: boolean;
}

export const DEFAULT_SIGV4_OPTIONS: SigV4Options = Object.freeze({
  region: 'pri',
  services: Object.freeze(['utilmeta', 'minibasebe']),
  maxSkewSeconds: 900,
  unsignedPayload: true,
});

export interface SigV4Owner {
  type: 'USER' | 'APP';
  id: string | number;
}

/** What the key resolver knows about one access key (memory only). */
export interface SigV4KeyInfo {
  /** The decrypted secret; undefined when it could not be decrypted (wrong master key). */
  secret: string | undefined;
  status: 'Active' | 'Inactive';
  /** Epoch ms after which the key no longer works (set by rotation); null/undefined = never. */
  expiresAt?: number | null;
  owner: SigV4Owner;
  /** Owner user disabled (status 0) or owner app DISABLED. */
  ownerDisabled: boolean;
}

export type SigV4KeyResolver = (accessKeyId: string) => SigV4KeyInfo | undefined;

export type HeaderPairs = ReadonlyArray<readonly [name: string, value: string]>;

export interface SigV4Request {
  method: string;
  /** The path as received, undecoded (everything before `?`). */
  rawPath: string;
  /** The query as received, without the `?`; '' when there is none. */
  rawQuery: string;
  /** Header pairs in wire order, lower-case names, repeated headers kept. */
  headers: HeaderPairs;
  /** The effective host (the Host header, or a trusted X-Forwarded-Host); replaces `host`. */
  host: string | undefined;
  /**
   * Hex SHA-256 of the received body (EMPTY_SHA256 for none). Needed by `verifySigV4` when the
   * request declares no `x-amz-content-sha256` (the signature then covers the body itself),
   * and by `finishSigV4`/`authenticateSigV4` when it declares a hex hash.
   */
  bodySha256?: string;
}

export interface SigV4Context {
  now: number;
  surface: SigV4Surface;
  options: SigV4Options;
  resolveKey: SigV4KeyResolver;
  /** Defaults to a process-wide cache; tests pass their own. */
  cache?: SigningKeyCache;
}

export interface SigV4Success {
  ok: true;
  accessKeyId: string;
  owner: SigV4Owner;
  form: SigV4Form;
  /** The `x-amz-content-sha256` value as sent, or undefined when absent. */
  declaredPayloadHash: string | undefined;
  /** False only for UNSIGNED-PAYLOAD: the body is not covered and may stream. */
  payloadSigned: boolean;
  /** Presigned form: epoch ms at which the URL stops working. */
  presignExpiresAt?: number;
  /** Credential scope service (`utilmeta`, `minibasebe`, …). */
  service: string;
  signedHeaders: string[];
  /** Lower-case header names to remove before the upstream when the credential is consumed. */
  stripHeaders: string[];
  /** The query for the upstream: presigned form drops X-Amz-* and x-utilmeta-* parameters. */
  stripQuery: string;
  /** Presigned form: control parameters (`x-utilmeta-*`, decoded), covered by the signature. */
  queryControl: Record<string, string>;
}

/** After steps 1–10: what `finishSigV4` needs to run steps 11–12. */
export interface SigV4Verified extends SigV4Success {
  /** 'compare' when a declared hex hash still has to be checked against the body. */
  bodyCheck: 'compare' | 'none';
  ownerDisabled: boolean;
  surface: SigV4Surface;
}

export interface SigV4Failure {
  ok: false;
  status: 400 | 403;
  /** The AWS `__type` (also `x-amzn-ErrorType`). */
  type: SigV4ErrorType;
  state: SigV4State;
  message: string;
  canonicalRequest?: string;
  stringToSign?: string;
}

export type SigV4Result = SigV4Success | SigV4Failure;

export type SigV4ErrorType =
  | 'IncompleteSignature'
  | 'AuthorizationQueryParametersError'
  | 'InvalidArgument'
  | 'SignatureDoesNotMatch'
  | 'RequestTimeTooSkewed'
  | 'AccessDenied'
  | 'InvalidClientTokenId'
  | 'InvalidAccessKeyId'
  | 'XAmzContentSHA256Mismatch';

export type SigV4State =
  | 'sigv4_malformed'
  | 'sigv4_algorithm'
  | 'sigv4_scope'
  | 'sigv4_date'
  | 'sigv4_signed_headers'
  | 'presign_malformed'
  | 'presign_expires_invalid'
  | 'multiple_credentials'
  | 'query_malformed'
  | 'payload_hash_invalid'
  | 'unsigned_payload_refused'
  | 'sigv4_region'
  | 'sigv4_service'
  | 'sigv4_scope_date'
  | 'clock_skew'
  | 'presign_not_yet_valid'
  | 'presign_expired'
  | 'session_token_unsupported'
  | 'key_unknown'
  | 'key_disabled'
  | 'key_expired'
  | 'key_unusable'
  | 'signature_mismatch'
  | 'payload_hash_mismatch'
  | 'principal_disabled'
  | 'app_key_not_allowed';

/** Status and AWS code of every state: one row of the error table each. */
export const SIGV4_ERRORS: Readonly<Record<SigV4State, readonly [400 | 403, SigV4ErrorType]>> = Object.freeze({
  sigv4_malformed: [400, 'IncompleteSignature'],
  sigv4_algorithm: [400, 'IncompleteSignature'],
  sigv4_scope: [400, 'IncompleteSignature'],
  sigv4_date: [400, 'IncompleteSignature'],
  sigv4_signed_headers: [400, 'IncompleteSignature'],
  presign_malformed: [400, 'IncompleteSignature'],
  presign_expires_invalid: [400, 'AuthorizationQueryParametersError'],
  multiple_credentials: [400, 'InvalidArgument'],
  // A query that is not valid percent-encoded UTF-8 cannot be canonicalised.
  query_malformed: [400, 'InvalidArgument'],
  payload_hash_invalid: [400, 'InvalidArgument'],
  unsigned_payload_refused: [400, 'InvalidArgument'],
  sigv4_region: [403, 'SignatureDoesNotMatch'],
  sigv4_service: [403, 'SignatureDoesNotMatch'],
  sigv4_scope_date: [403, 'SignatureDoesNotMatch'],
  clock_skew: [403, 'RequestTimeTooSkewed'],
  presign_not_yet_valid: [403, 'AccessDenied'],
  presign_expired: [403, 'AccessDenied'],
  session_token_unsupported: [403, 'InvalidClientTokenId'],
  key_unknown: [403, 'InvalidAccessKeyId'],
  key_disabled: [403, 'InvalidAccessKeyId'],
  key_expired: [403, 'InvalidAccessKeyId'],
  key_unusable: [403, 'InvalidAccessKeyId'],
  signature_mismatch: [403, 'SignatureDoesNotMatch'],
  payload_hash_mismatch: [400, 'XAmzContentSHA256Mismatch'],
  principal_disabled: [403, 'AccessDenied'],
  app_key_not_allowed: [403, 'AccessDenied'],
});

function fail(state: SigV4State, message: string, extra?: { canonicalRequest: string; stringToSign: string }): SigV4Failure {
  const [status, type] = SIGV4_ERRORS[state];
  return extra ? { ok: false, status, type, state, message, ...extra } : { ok: false, status, type, state, message };
}

// ---------------------------------------------------------------------------------------------
// Credential carriers

export type CredentialCarrier = 'sigv4-header' | 'sigv4-presigned' | 'bearer';

const BEARER_UMT = /^bearer\s+umt_/i;

/** Whether a raw query carries a presigned signature (an `X-Amz-Algorithm` parameter). */
export function hasPresignQuery(rawQuery: string): boolean {
  if (!rawQuery.includes('X-Amz-Algorithm')) return false;
  for (const piece of rawQuery.split('&')) {
    const eq = piece.indexOf('=');
    if ((eq < 0 ? piece : piece.slice(0, eq)) === 'X-Amz-Algorithm') return true;
  }
  return false;
}

/** An `Authorization` value that claims AWS Signature V4 (any `AWS4-…` algorithm). */
export function isSigV4Authorization(value: string): boolean {
  return value.trimStart().startsWith('AWS4-');
}

/**
 * Every credential carrier present, one entry per occurrence (so two SigV4 `Authorization`
 * headers count twice). Any other `Authorization` value is the upstream's own and not a carrier.
 */
export function findCarriers(headers: HeaderPairs, rawQuery: string): CredentialCarrier[] {
  const found: CredentialCarrier[] = [];
  for (const [name, value] of headers) {
    if (name === 'authorization') {
      if (isSigV4Authorization(value)) found.push('sigv4-header');
      else if (BEARER_UMT.test(value.trim())) found.push('bearer');
    } else if (name === 'proxy-authorization') {
      if (BEARER_UMT.test(value.trim())) found.push('bearer');
    } else if (name === 'x-auth-token') {
      if (value.trim().startsWith('umt_')) found.push('bearer');
    }
  }
  if (hasPresignQuery(rawQuery)) found.push('sigv4-presigned');
  return found;
}

// ---------------------------------------------------------------------------------------------
// Canonicalisation

const UNRESERVED = /^[A-Za-z0-9\-_.~]*$/;
const UNRESERVED_OR_SLASH = /^[A-Za-z0-9\-_.~/]*$/;
const RFC3986_EXTRA = /[!'()*]/g;
const hexEscape = (c: string) => '%' + c.charCodeAt(0).toString(16).toUpperCase();

/** Percent-encodes every UTF-8 byte outside `A–Z a–z 0–9 - _ . ~`, upper-case hex. Throws URIError on lone surrogates. */
export function encodeUnreserved(s: string): string {
  if (UNRESERVED.test(s)) return s;
  return encodeURIComponent(s).replace(RFC3986_EXTRA, hexEscape);
}

/** `+` is a space, then percent-decoding as UTF-8. Throws URIError on bad escapes or bad UTF-8. */
export function decodeQueryComponent(s: string): string {
  if (UNRESERVED.test(s)) return s;
  return decodeURIComponent(s.replace(/\+/g, ' '));
}

/**
 * The raw path without empty and `.` segments, `..` popping one; the leading `/` kept, a
 * trailing `/` kept when anything remains ('/' when nothing does).
 */
export function normalizePath(rawPath: string): string {
  // The common case has nothing to remove.
  if (rawPath.startsWith('/') && !rawPath.includes('//') && !rawPath.includes('/.')) return rawPath;
  const kept: string[] = [];
  for (const seg of rawPath.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') kept.pop();
    else kept.push(seg);
  }
  const normalized = (rawPath.startsWith('/') ? '/' : '') + kept.join('/') + (kept.length > 0 && rawPath.endsWith('/') ? '/' : '');
  return normalized === '' ? '/' : normalized;
}

/**
 * The canonical URI: the normalized raw path with every byte but unreserved and `/` encoded
 * (upper-case hex), so a `%` already on the wire becomes `%25`. Throws URIError on lone surrogates.
 */
export function canonicalUri(rawPath: string): string {
  const normalized = normalizePath(rawPath);
  if (UNRESERVED_OR_SLASH.test(normalized)) return normalized;
  // Encoding `/` and turning `%2F` back is exact: a `%` from the input is `%25` by then.
  return encodeURIComponent(normalized).replace(RFC3986_EXTRA, hexEscape).replace(/%2F/g, '/');
}

/**
 * The canonical URI as @smithy/signature-v4 1.x computes it (what `@aws-sdk/signature-v4` 3.374,
 * the seed's JavaScript client, still runs): plain encodeURIComponent, so `! ' ( ) *` stay literal.
 */
export function canonicalUriSdkV1(rawPath: string): string {
  return encodeURIComponent(normalizePath(rawPath)).replace(/%2F/g, '/');
}

interface QueryPair {
  /** Decoded key and value. */
  dk: string;
  dv: string;
  /** Re-encoded key and value. */
  key: string;
  value: string;
}

/**
 * Query pieces split on `&` (empty ones skipped) and at the first `=` (none: empty value),
 * decoded (`+` is a space) and re-encoded with the unreserved set. `dropSignature` leaves out
 * `X-Amz-Signature` (presigned form). Throws URIError when a piece is not valid percent-encoded UTF-8.
 */
function queryPairs(rawQuery: string, dropSignature: boolean): QueryPair[] {
  const pairs: QueryPair[] = [];
  if (rawQuery === '') return pairs;
  for (const piece of rawQuery.split('&')) {
    if (piece === '') continue;
    const eq = piece.indexOf('=');
    const dk = decodeQueryComponent(eq < 0 ? piece : piece.slice(0, eq));
    if (dropSignature && dk === 'X-Amz-Signature') continue;
    const dv = eq < 0 ? '' : decodeQueryComponent(piece.slice(eq + 1));
    pairs.push({ dk, dv, key: encodeUnreserved(dk), value: encodeUnreserved(dv) });
  }
  return pairs;
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** `k=v` pairs sorted by encoded key, then encoded value, joined with `&`. */
function joinSorted(pairs: QueryPair[], byDecoded: boolean): string {
  const sorted = pairs.length > 1 ? [...pairs].sort(byDecoded ? (a, b) => cmp(a.dk, b.dk) || cmp(a.dv, b.dv) : (a, b) => cmp(a.key, b.key) || cmp(a.value, b.value)) : pairs;
  let out = '';
  for (let i = 0; i < sorted.length; i++) out += (i ? '&' : '') + sorted[i].key + '=' + sorted[i].value;
  return out;
}

/** The canonical query of a raw query string (sorted by encoded key, then encoded value). */
export function canonicalQuery(rawQuery: string, dropSignature = false): string {
  return joinSorted(queryPairs(rawQuery, dropSignature), false);
}

/**
 * The canonical query as @smithy/signature-v4 1.x orders it: by decoded key, then decoded value.
 * It differs from `canonicalQuery` only when encoding changes the order (e.g. non-ASCII keys).
 */
export function canonicalQuerySdkV1(rawQuery: string, dropSignature = false): string {
  return joinSorted(queryPairs(rawQuery, dropSignature), true);
}

// HTTP whitespace is SP and HTAB (the only whitespace a header value can carry on the wire),
// which is also exactly what smithy collapses.
const WS_RUN = /[ \t]+/g;

/** One canonical header value: every received value trimmed, inner whitespace runs collapsed, joined with `,`. */
export function canonicalHeaderValue(values: readonly string[]): string {
  let out = '';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    const t = v.includes('  ') || v.includes('\t') ? v.replace(WS_RUN, ' ').trim() : v.trim();
    out += i ? ',' + t : t;
  }
  return out;
}

/** Values of the wanted headers in wire order; `host` comes from the effective host instead. */
function collectHeaders(headers: HeaderPairs, wanted: readonly string[], host: string | undefined): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const name of wanted) if (name !== 'host') found.set(name, []);
  for (const [name, value] of headers) {
    const list = found.get(name);
    if (list) list.push(value);
  }
  for (const [name, list] of found) if (list.length === 0) found.delete(name);
  if (wanted.includes('host') && host !== undefined && host !== '') found.set('host', [host]);
  return found;
}

export function canonicalRequest(
  method: string,
  uri: string,
  query: string,
  signedHeaders: readonly string[],
  values: Map<string, string[]>,
  payloadHash: string,
): string {
  let headers = '';
  for (const name of signedHeaders) headers += name + ':' + canonicalHeaderValue(values.get(name) ?? []) + '\n';
  return `${method}\n${uri}\n${query}\n${headers}\n${signedHeaders.join(';')}\n${payloadHash}`;
}

export function stringToSign(amzDate: string, scope: string, canonical: string): string {
  return `${SIGV4_ALGORITHM}\n${amzDate}\n${scope}\n${createHash('sha256').update(canonical, 'utf8').digest('hex')}`;
}

// ---------------------------------------------------------------------------------------------
// Signing keys

const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data, 'utf8').digest();

/** kSigning = HMAC chain of "AWS4"+secret over date, region, service and "aws4_request". */
export function deriveSigningKey(secret: string, date: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac('AWS4' + secret, date), region), service), 'aws4_request');
}

interface CachedKey {
  secret: string;
  key: Buffer;
}

/**
 * kSigning per (AKID, date, region, service). An entry remembers the secret it came from, so a
 * changed secret never reuses a stale key even if nobody evicted it. Bounded: the oldest AKID
 * goes first once `maxEntries` is passed.
 */
export class SigningKeyCache {
  private readonly byKey = new Map<string, Map<string, CachedKey>>();
  private size = 0;

  constructor(private readonly maxEntries = 10_000) {}

  get(accessKeyId: string, secret: string, date: string, region: string, service: string): Buffer {
    let scopes = this.byKey.get(accessKeyId);
    const scope = `${date}/${region}/${service}`;
    const hit = scopes?.get(scope);
    if (hit && hit.secret === secret) return hit.key;
    const key = deriveSigningKey(secret, date, region, service);
    if (!scopes) {
      scopes = new Map();
      this.byKey.set(accessKeyId, scopes);
    }
    if (!hit) this.size++;
    scopes.set(scope, { secret, key });
    while (this.size > this.maxEntries) {
      const oldest = this.byKey.keys().next().value as string;
      this.evict(oldest);
    }
    return key;
  }

  /** Forgets every signing key of one access key (disabled, deleted, secret changed). */
  evict(accessKeyId: string): void {
    const scopes = this.byKey.get(accessKeyId);
    if (!scopes) return;
    this.size -= scopes.size;
    this.byKey.delete(accessKeyId);
  }

  clear(): void {
    this.byKey.clear();
    this.size = 0;
  }

  get entries(): number {
    return this.size;
  }
}

export const defaultSigningKeyCache = new SigningKeyCache();

// ---------------------------------------------------------------------------------------------
// Parsing

interface ParsedAuth {
  form: SigV4Form;
  credential: string;
  signedHeaders: string;
  signature: string;
  amzDate: string | undefined;
  expires?: number;
}

const HEX64 = /^[0-9a-f]{64}$/;
/** A lower-case HTTP token (a header name as SignedHeaders must list it). */
const SIGNED_HEADER_NAME = /^[a-z0-9!#$%&'*+\-.^_`|~]+$/;
const AUTH_PARAM = /^([A-Za-z]+)=(\S*)$/;

function parseAuthorization(value: string): ParsedAuth | SigV4Failure {
  const v = value.trim();
  const sp = v.search(/\s/);
  const algorithm = sp < 0 ? v : v.slice(0, sp);
  if (algorithm !== SIGV4_ALGORITHM) {
    return fail('sigv4_algorithm', `Unsupported AWS 'algorithm': '${algorithm}'; only ${SIGV4_ALGORITHM} is accepted.`);
  }
  const params: Record<string, string> = {};
  const rest = sp < 0 ? '' : v.slice(sp).trim();
  for (const part of rest === '' ? [] : rest.split(/\s*,\s*/)) {
    const m = AUTH_PARAM.exec(part);
    if (!m) return fail('sigv4_malformed', `Authorization header has a malformed element: '${part}' (expected Key=Value, comma-separated).`);
    const [, k, val] = m;
    if (k !== 'Credential' && k !== 'SignedHeaders' && k !== 'Signature') {
      return fail('sigv4_malformed', `Authorization header has an unknown element '${k}'.`);
    }
    if (k in params) return fail('sigv4_malformed', `Authorization header repeats '${k}'.`);
    params[k] = val;
  }
  for (const k of ['Credential', 'SignedHeaders', 'Signature'] as const) {
    if (!params[k]) return fail('sigv4_malformed', `Authorization header requires '${k}' parameter.`);
  }
  if (!HEX64.test(params.Signature)) {
    return fail('sigv4_malformed', 'Authorization header Signature must be 64 lower-case hexadecimal characters.');
  }
  return { form: 'header', credential: params.Credential, signedHeaders: params.SignedHeaders, signature: params.Signature, amzDate: undefined };
}

const PRESIGN_PARAMS = ['X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders', 'X-Amz-Signature'] as const;

function parsePresign(rawQuery: string): ParsedAuth | SigV4Failure {
  const found: Record<string, string> = {};
  for (const piece of rawQuery.split('&')) {
    const eq = piece.indexOf('=');
    const rawKey = eq < 0 ? piece : piece.slice(0, eq);
    if (!(PRESIGN_PARAMS as readonly string[]).includes(rawKey)) continue;
    if (rawKey in found) return fail('presign_malformed', `Query parameter '${rawKey}' appears more than once.`);
    let value: string;
    try {
      value = decodeQueryComponent(eq < 0 ? '' : piece.slice(eq + 1));
    } catch {
      return fail('presign_malformed', `Query parameter '${rawKey}' is not valid percent-encoded UTF-8.`);
    }
    found[rawKey] = value;
  }
  const missing = PRESIGN_PARAMS.filter((k) => !found[k]);
  if (missing.length) {
    return fail('presign_malformed', `Query-string authentication requires the ${missing.map((m) => `'${m}'`).join(', ')} parameter${missing.length > 1 ? 's' : ''}.`);
  }
  if (found['X-Amz-Algorithm'] !== SIGV4_ALGORITHM) {
    return fail('sigv4_algorithm', `Unsupported 'X-Amz-Algorithm': '${found['X-Amz-Algorithm']}'; only ${SIGV4_ALGORITHM} is accepted.`);
  }
  const exp = found['X-Amz-Expires'];
  const expires = /^[0-9]{1,7}$/.test(exp) ? Number(exp) : NaN;
  if (!(expires >= 1 && expires <= MAX_PRESIGN_EXPIRES)) {
    return fail('presign_expires_invalid', `X-Amz-Expires must be an integer from 1 to ${MAX_PRESIGN_EXPIRES} (seconds); got '${exp}'.`);
  }
  if (!HEX64.test(found['X-Amz-Signature'])) {
    return fail('sigv4_malformed', 'X-Amz-Signature must be 64 lower-case hexadecimal characters.');
  }
  return {
    form: 'presigned',
    credential: found['X-Amz-Credential'],
    signedHeaders: found['X-Amz-SignedHeaders'],
    signature: found['X-Amz-Signature'],
    amzDate: found['X-Amz-Date'],
    expires,
  };
}

const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;

let lastAmzDate = '';
let lastAmzTime = NaN;

/** Epoch ms of a `YYYYMMDDTHHMMSSZ` stamp, or NaN when it is not one (including 20261332T…). */
export function parseAmzDate(s: string): number {
  // Busy clients send the same stamp for every request within a second.
  if (s === lastAmzDate) return lastAmzTime;
  const m = AMZ_DATE.exec(s);
  if (!m) return NaN;
  const y = Number(m[1]);
  const mo = Number(m[2]);
  const d = Number(m[3]);
  const h = Number(m[4]);
  const mi = Number(m[5]);
  const se = Number(m[6]);
  const t = Date.UTC(y, mo - 1, d, h, mi, se);
  const back = new Date(t);
  if (back.getUTCFullYear() !== y || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || h > 23 || mi > 59 || se > 59) return NaN;
  lastAmzDate = s;
  lastAmzTime = t;
  return t;
}

function formatAmzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

function headerValues(headers: HeaderPairs, name: string): string[] {
  const out: string[] = [];
  for (const [n, v] of headers) if (n === name) out.push(v);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Verification

/**
 * Steps 1–10: parse, carriers, date, scope, region/service, time window, key, signed headers,
 * payload-hash form, signature. Returns null when the request carries no SigV4 credential at all
 * (bearer-only or anonymous: not this verifier's business). On success, call `finishSigV4`
 * before anything reaches an upstream.
 */
export function verifySigV4(req: SigV4Request, ctx: SigV4Context): SigV4Verified | SigV4Failure | null {
  const { options, now } = ctx;

  // 1. parse
  const carriers = findCarriers(req.headers, req.rawQuery);
  if (!carriers.includes('sigv4-header') && !carriers.includes('sigv4-presigned')) return null;
  let parsed: ParsedAuth | undefined;
  for (const [name, value] of req.headers) {
    if (name !== 'authorization' || !isSigV4Authorization(value)) continue;
    const p = parseAuthorization(value);
    if ('ok' in p) return p;
    parsed ??= p;
  }
  if (carriers.includes('sigv4-presigned')) {
    const p = parsePresign(req.rawQuery);
    if ('ok' in p) return p;
    parsed ??= p;
  }
  if (!parsed) return null; // unreachable: a SigV4 carrier means one of the two branches ran

  // 2. multiple carriers
  if (carriers.length > 1) return fail('multiple_credentials', 'Only one auth mechanism allowed; found ' + carriers.join(', ') + '.');

  // 3. date format
  if (parsed.form === 'header') {
    const dates = headerValues(req.headers, 'x-amz-date');
    if (dates.length === 0) return fail('sigv4_date', "Authorization header requires existence of a 'X-Amz-Date' header.");
    parsed.amzDate = dates.length === 1 ? dates[0].trim() : dates.join(',');
  }
  const amzDate = parsed.amzDate!;
  const requestTime = parseAmzDate(amzDate);
  if (Number.isNaN(requestTime)) {
    return fail('sigv4_date', `X-Amz-Date must be in the ISO8601 basic format YYYYMMDD'T'HHMMSS'Z'; got '${amzDate}'.`);
  }

  // 4. scope format
  const scopeParts = parsed.credential.split('/');
  if (scopeParts.length !== 5 || scopeParts[4] !== 'aws4_request' || !/^\d{8}$/.test(scopeParts[1]) || scopeParts[0] === '') {
    return fail(
      'sigv4_scope',
      `Credential must have the form <AccessKeyId>/<YYYYMMDD>/<region>/<service>/aws4_request; got '${parsed.credential}'.`,
    );
  }
  const [accessKeyId, scopeDate, region, service] = scopeParts;

  // 5. region and service, then the scope day must be the request's day
  if (region !== options.region) return fail('sigv4_region', 'Credential should be scoped to a valid region.');
  if (!options.services.includes(service)) {
    return fail('sigv4_service', `Credential should be scoped to correct service: '${options.services[0] ?? ''}'.`);
  }
  if (scopeDate !== amzDate.slice(0, 8)) {
    return fail('sigv4_scope_date', `Date in Credential scope (${scopeDate}) does not match YYYYMMDD from X-Amz-Date (${amzDate}).`);
  }

  // 6. skew (header form) or presign window
  const skewMs = options.maxSkewSeconds * 1000;
  let presignExpiresAt: number | undefined;
  if (parsed.form === 'header') {
    if (now - requestTime > skewMs) {
      return fail('clock_skew', `Signature expired: ${amzDate} is now earlier than ${formatAmzDate(now - skewMs)} (${formatAmzDate(now)} - ${options.maxSkewSeconds / 60} min.)`);
    }
    if (requestTime - now > skewMs) {
      return fail('clock_skew', `Signature not yet current: ${amzDate} is still later than ${formatAmzDate(now + skewMs)} (${formatAmzDate(now)} + ${options.maxSkewSeconds / 60} min.)`);
    }
  } else {
    presignExpiresAt = requestTime + parsed.expires! * 1000;
    if (requestTime - skewMs > now) return fail('presign_not_yet_valid', 'Request is not yet valid');
    if (now > presignExpiresAt) return fail('presign_expired', 'Request has expired');
  }

  // 7. key lookup and status
  const key = ctx.resolveKey(accessKeyId);
  if (!key) return fail('key_unknown', 'The security token included in the request is invalid: unknown access key.');
  if (key.status !== 'Active') return fail('key_disabled', `The access key ${accessKeyId} is inactive.`);
  if (key.expiresAt != null && now >= key.expiresAt) return fail('key_expired', `The access key ${accessKeyId} has expired (rotated).`);
  if (key.secret === undefined) return fail('key_unusable', `The access key ${accessKeyId} cannot be used right now.`);

  // 8. signed-header rules
  const signedHeaders = parsed.signedHeaders.split(';');
  for (let i = 0; i < signedHeaders.length; i++) {
    const h = signedHeaders[i];
    if (!SIGNED_HEADER_NAME.test(h)) {
      return fail('sigv4_signed_headers', `SignedHeaders must be lower-case header names separated by ';'; got '${parsed.signedHeaders}'.`);
    }
    if (i > 0 && signedHeaders[i - 1] >= h) {
      return fail('sigv4_signed_headers', `SignedHeaders must be sorted and unique; got '${parsed.signedHeaders}'.`);
    }
  }
  const signedSet = new Set(signedHeaders);
  if (!signedSet.has('host')) return fail('sigv4_signed_headers', "SignedHeaders must include 'host'.");
  if (parsed.form === 'header' && !signedSet.has('x-amz-date')) return fail('sigv4_signed_headers', "SignedHeaders must include 'x-amz-date'.");
  const values = collectHeaders(req.headers, signedHeaders, req.host);
  const declared: string[] = [];
  let securityToken = false;
  const stripHeaders = parsed.form === 'header' ? ['authorization'] : [];
  for (const [name, value] of req.headers) {
    if (name.startsWith('x-amz-')) {
      if (!stripHeaders.includes(name)) stripHeaders.push(name);
      if (name === 'x-amz-content-sha256') declared.push(value);
      else if (name === 'x-amz-security-token') securityToken = true;
    }
    if ((name.startsWith('x-utilmeta-') || name === 'x-amz-content-sha256') && !signedSet.has(name)) {
      return fail('sigv4_signed_headers', `Header '${name}' is present and must be signed (listed in SignedHeaders).`);
    }
  }
  for (const name of signedHeaders) {
    if (!values.has(name)) return fail('sigv4_signed_headers', `Header '${name}' is listed in SignedHeaders but absent from the request.`);
  }
  if (securityToken || /(^|&)X-Amz-Security-Token=/i.test(req.rawQuery)) {
    return fail('session_token_unsupported', 'Session tokens (X-Amz-Security-Token) are not supported; sign with an access key.');
  }

  // 9. payload-hash form
  let declaredPayloadHash: string | undefined;
  let payloadHash: string;
  let bodyCheck: 'compare' | 'none' = 'none';
  let payloadSigned = true;
  if (declared.length > 0) {
    declaredPayloadHash = declared.length === 1 ? declared[0].trim() : declared.join(',');
    if (declaredPayloadHash === UNSIGNED_PAYLOAD) {
      if (ctx.surface !== 'proxy') return fail('unsigned_payload_refused', 'UNSIGNED-PAYLOAD is not allowed on the management API; sign the body.');
      if (!options.unsignedPayload) return fail('unsigned_payload_refused', 'UNSIGNED-PAYLOAD is disabled on this proxy; sign the body.');
      payloadSigned = false;
    } else if (HEX64.test(declaredPayloadHash)) {
      bodyCheck = 'compare';
    } else if (declaredPayloadHash.startsWith('STREAMING-')) {
      return fail('payload_hash_invalid', `x-amz-content-sha256 '${declaredPayloadHash}' (aws-chunked streaming) is not supported.`);
    } else {
      return fail('payload_hash_invalid', "x-amz-content-sha256 must be 64 lower-case hexadecimal characters or 'UNSIGNED-PAYLOAD'.");
    }
    payloadHash = declaredPayloadHash;
  } else {
    // No declaration: every client then signs the SHA-256 of the body itself.
    payloadHash = requireBodySha256(req.bodySha256);
  }

  // 10. signature
  let uri: string;
  let pairs: QueryPair[];
  try {
    uri = canonicalUri(req.rawPath);
    pairs = queryPairs(req.rawQuery, parsed.form === 'presigned');
  } catch {
    return fail('query_malformed', 'The request path or query is not valid percent-encoded UTF-8.');
  }
  const query = joinSorted(pairs, false);
  const scope = `${scopeDate}/${region}/${service}/aws4_request`;
  const kSigning = (ctx.cache ?? defaultSigningKeyCache).get(accessKeyId, key.secret, scopeDate, region, service);
  const canonical = canonicalRequest(req.method, uri, query, signedHeaders, values, payloadHash);
  const sts = stringToSign(amzDate, scope, canonical);
  if (!signatureMatches(kSigning, sts, parsed.signature)) {
    // The seed's JavaScript client (@aws-sdk/signature-v4, on @smithy/signature-v4 1.x) leaves
    // `! ' ( ) *` unencoded in the path and sorts the query before encoding. Its form is tried
    // second, only when it differs; each form maps distinct wire bytes to distinct strings, so
    // accepting both lets no signature stand for another request.
    const uriV1 = canonicalUriSdkV1(req.rawPath);
    const queryV1 = joinSorted(pairs, true);
    const retry =
      (uriV1 !== uri || queryV1 !== query) &&
      signatureMatches(kSigning, stringToSign(amzDate, scope, canonicalRequest(req.method, uriV1, queryV1, signedHeaders, values, payloadHash)), parsed.signature);
    if (!retry) {
      return fail(
        'signature_mismatch',
        'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.',
        { canonicalRequest: canonical, stringToSign: sts },
      );
    }
  }

  let stripQuery = req.rawQuery;
  const queryControl: Record<string, string> = {};
  if (parsed.form === 'presigned') stripQuery = stripPresignQuery(req.rawQuery, queryControl);

  return {
    ok: true,
    accessKeyId,
    owner: key.owner,
    form: parsed.form,
    declaredPayloadHash,
    payloadSigned,
    presignExpiresAt,
    service,
    signedHeaders,
    stripHeaders,
    stripQuery,
    queryControl,
    bodyCheck,
    ownerDisabled: key.ownerDisabled,
    surface: ctx.surface,
  };
}

function signatureMatches(kSigning: Buffer, sts: string, provided: string): boolean {
  const expected = createHmac('sha256', kSigning).update(sts, 'utf8').digest('hex');
  return timingSafeEqual(Buffer.from(expected, 'latin1'), Buffer.from(provided, 'latin1'));
}

function requireBodySha256(bodySha256: string | undefined): string {
  if (bodySha256 === undefined || !HEX64.test(bodySha256)) {
    throw new DomainError(
      'invalid',
      'bodySha256 must be the lower-case hex SHA-256 of the received body (EMPTY_SHA256 for none) when the request declares no x-amz-content-sha256',
      { field: 'bodySha256' },
    );
  }
  return bodySha256;
}

/** Removes X-Amz-* and x-utilmeta-* parameters (any case); other pieces keep their bytes and order. */
function stripPresignQuery(rawQuery: string, control: Record<string, string>): string {
  const kept: string[] = [];
  for (const piece of rawQuery.split('&')) {
    const eq = piece.indexOf('=');
    let key: string;
    try {
      key = decodeQueryComponent(eq < 0 ? piece : piece.slice(0, eq));
    } catch {
      key = piece; // unreachable after a successful canonicalisation
    }
    const lower = key.toLowerCase();
    if (lower.startsWith('x-amz-')) continue;
    if (lower.startsWith('x-utilmeta-')) {
      if (key === lower && !(key in control)) control[key] = decodeQueryComponent(eq < 0 ? '' : piece.slice(eq + 1));
      continue;
    }
    kept.push(piece);
  }
  return kept.join('&');
}

/**
 * Steps 11–12: the declared `x-amz-content-sha256` against the SHA-256 of the body (when a hex
 * hash was declared), then the owner's status and whether an app key may use this surface.
 * `bodySha256` may be omitted when `verified.bodyCheck` is 'none' (UNSIGNED-PAYLOAD streams).
 */
export function finishSigV4(verified: SigV4Verified, bodySha256?: string): SigV4Success | SigV4Failure {
  // 11. declared hash vs body
  if (verified.bodyCheck === 'compare' && requireBodySha256(bodySha256) !== verified.declaredPayloadHash) {
    return fail('payload_hash_mismatch', "The provided 'x-amz-content-sha256' header does not match what was computed.");
  }
  // 12. owner status
  if (verified.ownerDisabled) {
    return fail('principal_disabled', `The ${verified.owner.type === 'APP' ? 'app' : 'user'} that owns access key ${verified.accessKeyId} is disabled.`);
  }
  if (verified.owner.type === 'APP' && verified.surface === 'management') {
    return fail('app_key_not_allowed', 'App access keys only call /api/proxy; the management API needs a user credential.');
  }
  return {
    ok: true,
    accessKeyId: verified.accessKeyId,
    owner: verified.owner,
    form: verified.form,
    declaredPayloadHash: verified.declaredPayloadHash,
    payloadSigned: verified.payloadSigned,
    presignExpiresAt: verified.presignExpiresAt,
    service: verified.service,
    signedHeaders: verified.signedHeaders,
    stripHeaders: verified.stripHeaders,
    stripQuery: verified.stripQuery,
    queryControl: verified.queryControl,
  };
}

/** Steps 1–12 for a request whose body is already buffered and hashed (`req.bodySha256`). */
export function authenticateSigV4(req: SigV4Request, ctx: SigV4Context): SigV4Result | null {
  const v = verifySigV4(req, ctx);
  if (v === null || !v.ok) return v;
  return finishSigV4(v, req.bodySha256);
}

/** Lower-case header pairs from node's `req.rawHeaders` (name, value, name, value, …). */
export function headerPairsFromRaw(rawHeaders: readonly string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) out.push([rawHeaders[i].toLowerCase(), rawHeaders[i + 1]]);
  return out;
}

/** Splits a request target into raw path and raw query, decoding nothing. */
export function splitTarget(target: string): { rawPath: string; rawQuery: string } {
  const q = target.indexOf('?');
  return q < 0 ? { rawPath: target, rawQuery: '' } : { rawPath: target.slice(0, q), rawQuery: target.slice(q + 1) };
}

/** hex SHA-256 of a body. */
export function sha256Hex(body: string | Uint8Array): string {
  return createHash('sha256').update(body).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// AWS-shaped error response

export interface SigV4ErrorResponse {
  status: number;
  headers: Record<string, string>;
  /** JSON text. */
  body: string;
}

/**
 * The AWS error shape SigV4 clients parse: `x-amzn-ErrorType` and a JSON body with `__type`,
 * `message` and `state`; a signature mismatch also returns the canonical request and string to
 * sign (no secret in either) so a client author can diff them against their own.
 */
export function sigv4ErrorResponse(failure: SigV4Failure, requestId: string): SigV4ErrorResponse {
  const body: Record<string, string> = { __type: failure.type, message: failure.message, state: failure.state };
  if (failure.state === 'signature_mismatch' && failure.canonicalRequest !== undefined) {
    body.canonicalRequest = failure.canonicalRequest;
    body.stringToSign = failure.stringToSign ?? '';
  }
  return {
    status: failure.status,
    headers: {
      'content-type': 'application/json',
      'x-amzn-ErrorType': failure.type,
      'x-amzn-RequestId': requestId,
    },
    body: JSON.stringify(body),
  };
}
