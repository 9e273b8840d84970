// SigV4 verifier, without HTTP: requests are signed by aws4 (an independent implementation, run
// in-process with a fixed X-Amz-Date), then mutated into each failure of the error table.
// Real clients over real sockets are in sigv4-interop.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import aws4 from 'aws4';
import { DomainError } from '../src/core/errors.ts';
import {
  DEFAULT_SIGV4_OPTIONS,
  EMPTY_SHA256,
  SigningKeyCache,
  authenticateSigV4,
  canonicalHeaderValue,
  canonicalQuery,
  canonicalQuerySdkV1,
  canonicalUri,
  canonicalUriSdkV1,
  deriveSigningKey,
  findCarriers,
  finishSigV4,
  headerPairsFromRaw,
  parseAmzDate,
  sigv4ErrorResponse,
  splitTarget,
  verifySigV4,
  type SigV4Context,
  type SigV4Failure,
  type SigV4KeyInfo,
  type SigV4Options,
  type SigV4Request,
  type SigV4Result,
  type SigV4Success,
  type SigV4Surface,
} from '../src/access/sigv4.ts';

const sha = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

const AMZ = '20261127T120000Z';
const NOW = Date.UTC(2026, 10, 27, 12, 0, 0);
const HOST = '127.0.0.1:8888';

const USER_KEY = 'UMAKUSERUSERUSERUSER';
const SECRET = 'abcdefghijklmnopqrstuvwxyz0123456789ABCD';
const keys: Record<string, SigV4KeyInfo> = {
  [USER_KEY]: { secret: SECRET, status: 'Active', expiresAt: null, owner: { type: 'USER', id: 7 }, ownerDisabled: false },
  UMAKAPPAPPAPPAPPAPPA: { secret: SECRET, status: 'Active', owner: { type: 'APP', id: 'a'.repeat(32) }, ownerDisabled: false },
  UMAKINACTIVEINACTIVE: { secret: SECRET, status: 'Inactive', owner: { type: 'USER', id: 7 }, ownerDisabled: false },
  UMAKEXPIREDEXPIREDEX: { secret: SECRET, status: 'Active', expiresAt: NOW - 1000, owner: { type: 'USER', id: 7 }, ownerDisabled: false },
  UMAKUNUSABLEUNUSABLE: { secret: undefined, status: 'Active', owner: { type: 'USER', id: 7 }, ownerDisabled: false },
  UMAKDISABLEDOWNERDIS: { secret: SECRET, status: 'Active', owner: { type: 'USER', id: 8 }, ownerDisabled: true },
};

function ctx(over: Partial<SigV4Context> & { opts?: Partial<SigV4Options> } = {}): SigV4Context {
  return {
    now: NOW,
    surface: 'proxy',
    options: { ...DEFAULT_SIGV4_OPTIONS, ...over.opts },
    resolveKey: (id) => keys[id],
    cache: new SigningKeyCache(),
    ...over,
  };
}

interface Spec {
  method?: string;
  /** Path and query as they go on the wire. */
  target?: string;
  headers?: Record<string, string>;
  body?: string;
  service?: string;
  region?: string;
  amzDate?: string;
  akid?: string;
  secret?: string;
  /** Presigned form with this X-Amz-Expires. */
  presign?: number;
}

/** Signs with aws4 and returns the request as the verifier receives it. */
function signed(spec: Spec = {}): SigV4Request {
  const amzDate = spec.amzDate ?? AMZ;
  let target = spec.target ?? '/api/proxy/items?limit=10';
  const headers: Record<string, string> = { Host: HOST, ...spec.headers };
  if (spec.presign !== undefined) {
    target += (target.includes('?') ? '&' : '?') + `X-Amz-Date=${amzDate}&X-Amz-Expires=${spec.presign}`;
  } else {
    headers['X-Amz-Date'] = amzDate;
  }
  const opts = {
    host: '127.0.0.1',
    method: spec.method ?? (spec.body === undefined ? 'GET' : 'POST'),
    path: target,
    headers,
    body: spec.body,
    service: spec.service ?? 'utilmeta',
    region: spec.region ?? 'pri',
    signQuery: spec.presign !== undefined ? true : undefined,
  };
  const out = aws4.sign(opts as never, { accessKeyId: spec.akid ?? USER_KEY, secretAccessKey: spec.secret ?? SECRET }) as typeof opts;
  const pairs: Array<[string, string]> = Object.entries(out.headers).map(([k, v]) => [k.toLowerCase(), String(v)]);
  return {
    method: out.method,
    ...splitTarget(out.path),
    headers: pairs.filter(([k]) => k !== 'host'),
    host: HOST,
    bodySha256: sha(spec.body ?? ''),
  };
}

function header(req: SigV4Request, name: string): string | undefined {
  return req.headers.find(([n]) => n === name)?.[1];
}

function withHeader(req: SigV4Request, name: string, value: string | undefined): SigV4Request {
  const headers = req.headers.filter(([n]) => n !== name);
  if (value !== undefined) headers.push([name, value]);
  return { ...req, headers };
}

/** Rewrites parts of the Authorization header (credential, signed headers, signature). */
function withAuth(req: SigV4Request, edit: (p: { credential: string; signedHeaders: string; signature: string }) => string | void): SigV4Request {
  const m = /^AWS4-HMAC-SHA256 Credential=(\S+), SignedHeaders=(\S+), Signature=(\S+)$/.exec(header(req, 'authorization')!)!;
  const parts = { credential: m[1], signedHeaders: m[2], signature: m[3] };
  const custom = edit(parts);
  return withHeader(req, 'authorization', custom ?? `AWS4-HMAC-SHA256 Credential=${parts.credential}, SignedHeaders=${parts.signedHeaders}, Signature=${parts.signature}`);
}

function withQuery(req: SigV4Request, edit: (q: string) => string): SigV4Request {
  return { ...req, rawQuery: edit(req.rawQuery) };
}

function run(req: SigV4Request, c = ctx()): SigV4Result | null {
  return authenticateSigV4(req, c);
}

function expectOk(r: SigV4Result | null): SigV4Success {
  assert.ok(r, 'expected a SigV4 result');
  if (!r.ok) assert.fail(`expected success, got ${r.state}: ${r.message}\n${r.canonicalRequest ?? ''}`);
  return r;
}

function expectFail(r: SigV4Result | null, state: string): SigV4Failure {
  assert.ok(r, 'expected a SigV4 result');
  assert.equal(r.ok, false, `expected ${state}, got success`);
  const f = r as SigV4Failure;
  assert.equal(f.state, state, `expected ${state}, got ${f.state}: ${f.message}`);
  return f;
}

// ---------------------------------------------------------------------------------------------

test('the AWS test-suite vector get-vanilla verifies (signature computed by AWS, not by us)', () => {
  const req: SigV4Request = {
    method: 'GET',
    rawPath: '/',
    rawQuery: '',
    headers: [
      ['x-amz-date', '20150830T123600Z'],
      [
        'authorization',
        'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31',
      ],
    ],
    host: 'example.amazonaws.com',
    bodySha256: EMPTY_SHA256,
  };
  const c = ctx({
    now: Date.UTC(2015, 7, 30, 12, 36, 0),
    opts: { region: 'us-east-1', services: ['service'] },
    resolveKey: (id) => (id === 'AKIDEXAMPLE' ? { secret: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', status: 'Active', owner: { type: 'USER', id: 1 }, ownerDisabled: false } : undefined),
  });
  const ok = expectOk(run(req, c));
  assert.equal(ok.accessKeyId, 'AKIDEXAMPLE');
  assert.equal(ok.form, 'header');
  // One flipped signature digit fails.
  expectFail(run(withAuth(req, (p) => void (p.signature = p.signature.replace(/1$/, '2'))), c), 'signature_mismatch');
});

test('a request signed by aws4 verifies: header and presigned forms, success fields', () => {
  const ok = expectOk(run(signed({ headers: { 'X-UtilMeta-Service-Name': 'orders' } })));
  assert.equal(ok.accessKeyId, USER_KEY);
  assert.deepEqual(ok.owner, { type: 'USER', id: 7 });
  assert.equal(ok.form, 'header');
  assert.equal(ok.service, 'utilmeta');
  assert.equal(ok.declaredPayloadHash, undefined);
  assert.equal(ok.payloadSigned, true);
  assert.deepEqual(ok.signedHeaders, ['host', 'x-amz-date', 'x-utilmeta-service-name']);
  assert.deepEqual(ok.stripHeaders.sort(), ['authorization', 'x-amz-date']);
  assert.equal(ok.stripQuery, 'limit=10');
  assert.equal(ok.presignExpiresAt, undefined);

  const pre = expectOk(run(signed({ target: '/api/proxy/items?limit=10&x-utilmeta-service-name=orders&b=%20x', presign: 300 })));
  assert.equal(pre.form, 'presigned');
  assert.equal(pre.presignExpiresAt, NOW + 300_000);
  assert.equal(pre.stripQuery, 'limit=10&b=%20x');
  assert.deepEqual(pre.queryControl, { 'x-utilmeta-service-name': 'orders' });
  assert.deepEqual(pre.stripHeaders, []);
});

test('every row of the error table, with its status and AWS code', () => {
  // The table as the contract states it: state → [HTTP status, __type].
  const table: Record<string, [number, string]> = {
    sigv4_malformed: [400, 'IncompleteSignature'],
    sigv4_algorithm: [400, 'IncompleteSignature'],
    sigv4_scope: [400, 'IncompleteSignature'],
    sigv4_date: [400, 'IncompleteSignature'],
    sigv4_signed_headers: [400, 'IncompleteSignature'],
    presign_malformed: [400, 'IncompleteSignature'],
    presign_expires_invalid: [400, 'AuthorizationQueryParametersError'],
    multiple_credentials: [400, 'InvalidArgument'],
    payload_hash_invalid: [400, 'InvalidArgument'],
    unsigned_payload_refused: [400, 'InvalidArgument'],
    query_malformed: [400, 'InvalidArgument'],
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
  };
  const base = signed();
  const post = signed({ body: '{"a":1}', headers: { 'Content-Type': 'application/json', 'X-Amz-Content-Sha256': sha('{"a":1}') } });
  const cases: Array<[state: string, r: SigV4Result | null, message?: RegExp]> = [
    ['sigv4_malformed', run(withAuth(base, (p) => `AWS4-HMAC-SHA256 Credential=${p.credential}, SignedHeaders=${p.signedHeaders}`)), /Signature/],
    ['sigv4_malformed', run(withAuth(base, (p) => `AWS4-HMAC-SHA256 Credential=${p.credential} SignedHeaders=${p.signedHeaders}, Signature=${p.signature}`))],
    ['sigv4_malformed', run(withAuth(base, (p) => void (p.signature = 'zz' + p.signature.slice(2))))],
    ['sigv4_malformed', run(withAuth(base, (p) => `AWS4-HMAC-SHA256 Credential=${p.credential}, Credential=${p.credential}, SignedHeaders=${p.signedHeaders}, Signature=${p.signature}`)), /repeats/],
    ['sigv4_algorithm', run(withAuth(base, (p) => `AWS4-ECDSA-P256-SHA256 Credential=${p.credential}, SignedHeaders=${p.signedHeaders}, Signature=${p.signature}`))],
    ['sigv4_scope', run(withAuth(base, (p) => void (p.credential = p.credential.replace('/aws4_request', ''))))],
    ['sigv4_scope', run(withAuth(base, (p) => void (p.credential = p.credential.replace('aws4_request', 'aws4_reqest'))))],
    ['sigv4_scope', run(withAuth(base, (p) => void (p.credential = p.credential.replace('20261127', '2026-11-27'))))],
    ['sigv4_date', run(withHeader(base, 'x-amz-date', undefined)), /X-Amz-Date/],
    ['sigv4_date', run(withHeader(base, 'x-amz-date', '2026-11-27T12:00:00Z'))],
    ['sigv4_date', run(withHeader(base, 'x-amz-date', '20261131T120000Z'))],
    ['sigv4_signed_headers', run(withAuth(base, (p) => void (p.signedHeaders = 'x-amz-date;host'))), /sorted/],
    ['sigv4_signed_headers', run(withAuth(base, (p) => void (p.signedHeaders = 'x-amz-date'))), /host/],
    ['sigv4_signed_headers', run(withAuth(base, (p) => void (p.signedHeaders = 'host;x-amz-date;x-missing'))), /x-missing/],
    ['sigv4_signed_headers', run(withAuth(base, (p) => void (p.signedHeaders = 'Host;x-amz-date')))],
    ['sigv4_signed_headers', run(withHeader(base, 'x-utilmeta-service-name', 'orders')), /x-utilmeta-service-name/],
    ['presign_malformed', run(withQuery(signed({ presign: 300 }), (q) => q.replace(/&X-Amz-Credential=[^&]*/, ''))), /X-Amz-Credential/],
    ['presign_expires_invalid', run(signed({ presign: 604801 }))],
    ['multiple_credentials', run(withHeader(base, 'x-auth-token', 'umt_abc')), /Only one auth mechanism allowed/],
    ['payload_hash_invalid', run(signed({ body: 'x', headers: { 'X-Amz-Content-Sha256': 'ABC' } }))],
    ['payload_hash_invalid', run(signed({ body: 'x', headers: { 'X-Amz-Content-Sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD' } })), /aws-chunked/],
    ['unsigned_payload_refused', run(signed({ body: 'x', headers: { 'X-Amz-Content-Sha256': 'UNSIGNED-PAYLOAD' } }), ctx({ surface: 'management' }))],
    ['unsigned_payload_refused', run(signed({ body: 'x', headers: { 'X-Amz-Content-Sha256': 'UNSIGNED-PAYLOAD' } }), ctx({ opts: { unsignedPayload: false } }))],
    ['query_malformed', run(withQuery(base, () => 'limit=%C3'))],
    ['query_malformed', run(withQuery(base, () => 'limit=10%'))],
    ['sigv4_region', run(signed({ region: 'us-east-1' })), /^Credential should be scoped to a valid region\.$/],
    ['sigv4_service', run(signed({ service: 's3' })), /^Credential should be scoped to correct service: 'utilmeta'\.$/],
    ['sigv4_scope_date', run(withAuth(base, (p) => void (p.credential = p.credential.replace('20261127', '20261126'))))],
    ['clock_skew', run(base, ctx({ now: NOW + 901_000 })), /^Signature expired: /],
    ['presign_not_yet_valid', run(signed({ presign: 300 }), ctx({ now: NOW - 901_000 })), /^Request is not yet valid$/],
    ['presign_expired', run(signed({ presign: 300 }), ctx({ now: NOW + 301_000 })), /^Request has expired$/],
    ['session_token_unsupported', run(signed({ headers: { 'X-Amz-Security-Token': 'tok' } }))],
    ['session_token_unsupported', run(signed({ target: '/api/proxy?X-Amz-Security-Token=tok', presign: 60 }))],
    ['key_unknown', run(signed({ akid: 'UMAKNOSUCHKEYNOSUCHK' }))],
    ['key_disabled', run(signed({ akid: 'UMAKINACTIVEINACTIVE' }))],
    ['key_expired', run(signed({ akid: 'UMAKEXPIREDEXPIREDEX' }))],
    ['key_unusable', run(signed({ akid: 'UMAKUNUSABLEUNUSABLE' }))],
    ['signature_mismatch', run(signed({ secret: SECRET.replace('a', 'b') }))],
    ['signature_mismatch', run(withQuery(base, () => 'limit=11'))],
    ['payload_hash_mismatch', run({ ...post, bodySha256: sha('{"a":2}') })],
    ['principal_disabled', run(signed({ akid: 'UMAKDISABLEDOWNERDIS' }))],
    ['app_key_not_allowed', run(signed({ akid: 'UMAKAPPAPPAPPAPPAPPA' }), ctx({ surface: 'management' }))],
  ];
  const seen = new Set<string>();
  for (const [state, r, message] of cases) {
    const f = expectFail(r, state);
    assert.deepEqual([f.status, f.type], table[state], state);
    if (message) assert.match(f.message, message, state);
    seen.add(state);
  }
  assert.deepEqual([...seen].sort(), Object.keys(table).sort(), 'a vector for every row');
  // The positive twins of the last rows: the same keys where they are allowed.
  expectOk(run(signed({ akid: 'UMAKAPPAPPAPPAPPAPPA' }), ctx({ surface: 'proxy' })));
  expectOk(run(post));
  expectOk(run(signed({ body: 'x', headers: { 'X-Amz-Content-Sha256': 'UNSIGNED-PAYLOAD' } })));
});

test('checks run in the fixed order: with defects k..12 present, defect k answers', () => {
  const body = '{"n":1}';
  const states = [
    'sigv4_malformed', // 1 parse
    'multiple_credentials', // 2 carriers
    'sigv4_date', // 3 date format
    'sigv4_scope', // 4 scope format
    'sigv4_region', // 5 region
    'clock_skew', // 6 skew
    'key_unknown', // 7 key
    'sigv4_signed_headers', // 8 signed headers
    'payload_hash_invalid', // 9 payload-hash form
    'signature_mismatch', // 10 signature
    'payload_hash_mismatch', // 11 body
    'principal_disabled', // 12 owner
  ];
  const build = (from: number) => {
    const has = (k: number) => k >= from;
    let req = signed({
      akid: has(12) ? 'UMAKDISABLEDOWNERDIS' : USER_KEY,
      body,
      headers: { 'Content-Type': 'application/json', 'X-Amz-Content-Sha256': has(9) ? 'not-a-hash' : sha(body) },
    });
    if (has(11)) req = { ...req, bodySha256: sha('{"n":2}') };
    if (has(10)) req = withQuery(req, () => 'limit=11');
    if (has(8)) req = withHeader(req, 'x-utilmeta-service-name', 'orders');
    req = withAuth(req, (p) => {
      const parts = p.credential.split('/');
      if (has(7)) parts[0] = 'UMAKNOSUCHKEYNOSUCHK';
      if (has(5)) parts[2] = 'us-east-1';
      if (has(4)) parts[4] = 'aws4_requestX';
      p.credential = parts.join('/');
      if (has(1)) return `AWS4-HMAC-SHA256 Credential=${p.credential}, SignedHeaders=${p.signedHeaders}`;
    });
    if (has(3)) req = withHeader(req, 'x-amz-date', 'yesterday');
    if (has(2)) req = withHeader(req, 'proxy-authorization', 'Bearer umt_abc');
    return run(req, ctx({ now: has(6) ? NOW + 3600_000 : NOW }));
  };
  for (let k = 1; k <= 12; k++) expectFail(build(k), states[k - 1]);
  expectOk(build(13));
});

test('header-form clock skew: ±900 s accepted, beyond refused in both directions', () => {
  const req = signed();
  expectOk(run(req, ctx({ now: NOW + 900_000 })));
  expectOk(run(req, ctx({ now: NOW - 900_000 })));
  assert.match(expectFail(run(req, ctx({ now: NOW + 900_001 })), 'clock_skew').message, /^Signature expired: 20261127T120000Z is now earlier than 20261127T120000Z \(20261127T121500Z - 15 min\.\)$/);
  assert.match(expectFail(run(req, ctx({ now: NOW - 900_001 })), 'clock_skew').message, /^Signature not yet current: 20261127T120000Z is still later than/);
  // A configured skew is honoured.
  expectFail(run(req, ctx({ now: NOW + 61_000, opts: { maxSkewSeconds: 60 } })), 'clock_skew');
});

test('presign window: X-Amz-Date − skew ≤ now ≤ X-Amz-Date + X-Amz-Expires; Expires 1..604800', () => {
  const req = signed({ presign: 300 });
  expectOk(run(req, ctx({ now: NOW - 900_000 })));
  expectOk(run(req, ctx({ now: NOW + 300_000 })));
  expectFail(run(req, ctx({ now: NOW - 900_001 })), 'presign_not_yet_valid');
  expectFail(run(req, ctx({ now: NOW + 300_001 })), 'presign_expired');
  expectOk(run(signed({ presign: 604800 }), ctx({ now: NOW + 604800_000 })));
  expectOk(run(signed({ presign: 1 })));
  for (const bad of ['0', '604801', 'abc', '1.5', '-5', '']) {
    const r = run(withQuery(req, (q) => q.replace('X-Amz-Expires=300', `X-Amz-Expires=${bad}`)));
    expectFail(r, bad === '' ? 'presign_malformed' : 'presign_expires_invalid');
  }
  // Presigned requests sign the body hash like the header form (botocore, smithy and aws4 all do).
  expectFail(run({ ...req, bodySha256: sha('x') }), 'signature_mismatch');
});

test('presign parse errors: each missing parameter, a repeated one, another algorithm', () => {
  const req = signed({ presign: 300 });
  for (const p of ['X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders', 'X-Amz-Signature']) {
    const f = expectFail(run(withQuery(req, (q) => q.replace(new RegExp(`&?${p}=[^&]*`), ''))), 'presign_malformed');
    assert.match(f.message, new RegExp(p));
  }
  expectFail(run(withQuery(req, (q) => q + '&X-Amz-Date=' + AMZ)), 'presign_malformed');
  expectFail(run(withQuery(req, (q) => q.replace('X-Amz-Algorithm=AWS4-HMAC-SHA256', 'X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256'))), 'sigv4_algorithm');
  expectFail(run(withQuery(req, (q) => q.replace(/X-Amz-Date=[^&]*/, 'X-Amz-Date=20261127'))), 'sigv4_date');
  // A presigned query next to a SigV4 Authorization header: two carriers.
  const both = { ...signed(), rawQuery: req.rawQuery };
  expectFail(run(both), 'multiple_credentials');
});

test('carriers: SigV4 header, presigned query, umt_ bearer in three places; other Authorization values are not carriers', () => {
  assert.deepEqual(findCarriers([['authorization', 'AWS4-HMAC-SHA256 Credential=x']], ''), ['sigv4-header']);
  assert.deepEqual(findCarriers([], 'a=1&X-Amz-Algorithm=AWS4-HMAC-SHA256'), ['sigv4-presigned']);
  assert.deepEqual(findCarriers([], 'a=X-Amz-Algorithm'), []);
  assert.deepEqual(findCarriers([['authorization', 'Bearer umt_x']], ''), ['bearer']);
  assert.deepEqual(findCarriers([['proxy-authorization', 'bearer umt_x']], ''), ['bearer']);
  assert.deepEqual(findCarriers([['x-auth-token', 'umt_x']], ''), ['bearer']);
  assert.deepEqual(findCarriers([['authorization', 'Bearer eyJhbGciOi']], ''), []);
  assert.deepEqual(findCarriers([['authorization', 'Basic dTpw']], ''), []);
  // No SigV4 carrier: not this verifier's business.
  assert.equal(verifySigV4({ method: 'GET', rawPath: '/', rawQuery: '', headers: [['x-auth-token', 'umt_x']], host: HOST }, ctx()), null);
  assert.equal(verifySigV4({ method: 'GET', rawPath: '/', rawQuery: '', headers: [['authorization', 'AWS abc:def']], host: HOST }, ctx()), null);
  // Two SigV4 Authorization headers are two carriers.
  const req = signed();
  expectFail(run({ ...req, headers: [...req.headers, ['authorization', header(req, 'authorization')!]] }), 'multiple_credentials');
});

test('canonical URI: dot segments, empty segments, % double encoding, reserved and unicode bytes', () => {
  const cases: Array<[string, string]> = [
    ['/', '/'],
    ['', '/'],
    ['//', '/'],
    ['/api/proxy/items', '/api/proxy/items'],
    ['/a/./b/../c', '/a/c'],
    ['/a//b/', '/a/b/'],
    ['/a/b/..', '/a'],
    ['/a/..', '/'],
    ['/a/../', '/'],
    ['/../a', '/a'],
    ['/a/b/../../..', '/'],
    ['/a/./', '/a/'],
    ['/.well-known/x', '/.well-known/x'],
    ['/a/...', '/a/...'],
    ['/100%25', '/100%2525'],
    ['/caf%C3%A9', '/caf%25C3%25A9'],
    ['/a%2Fb', '/a%252Fb'],
    ['/caf\u00e9', '/caf%C3%A9'],
    ["/(x)!*'", '/%28x%29%21%2A%27'],
    ['/a b+c:d@e$f,g;h=i&j', '/a%20b%2Bc%3Ad%40e%24f%2Cg%3Bh%3Di%26j'],
    ['/~user/-_.', '/~user/-_.'],
  ];
  for (const [raw, want] of cases) assert.equal(canonicalUri(raw), want, raw);
  // The @smithy/signature-v4 1.x form differs only in `! ' ( ) *`.
  assert.equal(canonicalUriSdkV1("/(x)!*'"), "/(x)!*'");
  assert.equal(canonicalUriSdkV1('/a/../caf%C3%A9'), '/caf%25C3%25A9');
});

test('canonical query: sorting, repeated keys, empty values, + as space, re-encoding, invalid input', () => {
  const cases: Array<[string, string]> = [
    ['', ''],
    ['b=2&a=1', 'a=1&b=2'],
    ['a=2&a=1&a=10', 'a=1&a=10&a=2'],
    ['b=1&B=2&a=3', 'B=2&a=3&b=1'],
    ['q=a+b', 'q=a%20b'],
    ['q=a%2Bb', 'q=a%2Bb'],
    ['q=a%20b', 'q=a%20b'],
    ['flag', 'flag='],
    ['a=&b', 'a=&b='],
    ['&&a=1&', 'a=1'],
    ['=x', '=x'],
    ['a=b=c', 'a=b%3Dc'],
    ['k=%e2%82%ac', 'k=%E2%82%AC'],
    ['k=\u20ac', 'k=%E2%82%AC'],
    ["k=!'()*", 'k=%21%27%28%29%2A'],
    ['k=%7E%2D%5F%2E', 'k=~-_.'],
    ['k=/?:@', 'k=%2F%3F%3A%40'],
    ['z=1&%C3%A9=2', '%C3%A9=2&z=1'],
    ['k=z&k=%C3%A9', 'k=%C3%A9&k=z'],
  ];
  for (const [raw, want] of cases) assert.equal(canonicalQuery(raw), want, raw);
  assert.equal(canonicalQuery('a=1&X-Amz-Signature=abc', true), 'a=1');
  assert.equal(canonicalQuery('a=1&X-Amz-Signature=abc', false), 'X-Amz-Signature=abc&a=1');
  // smithy 1.x orders by decoded key and value.
  assert.equal(canonicalQuerySdkV1('z=1&%C3%A9=2'), 'z=1&%C3%A9=2');
  assert.equal(canonicalQuerySdkV1('k=z&k=%C3%A9'), 'k=z&k=%C3%A9');
  for (const bad of ['k=%ZZ', 'k=%C3', 'k=%', '%C3%28=1', 'k=%ED%A0%80']) assert.throws(() => canonicalQuery(bad), URIError, bad);
});

test('canonical header values: trimmed, SP/HTAB runs collapsed, repeated values joined with a comma', () => {
  assert.equal(canonicalHeaderValue(['  a   b  ']), 'a b');
  assert.equal(canonicalHeaderValue(['a\t \tb']), 'a b');
  assert.equal(canonicalHeaderValue(['x', ' y ', 'z  z']), 'x,y,z z');
  assert.equal(canonicalHeaderValue(['']), '');
});

test('signed requests with edge-case paths and queries verify (aws4 signs, we recompute)', () => {
  const targets = [
    '/api/proxy/./a/../b//c/',
    '/api/proxy/100%25/caf%C3%A9/%2F',
    "/api/proxy/(x)!*'$,;=:@",
    '/api/proxy?q=a+b&q=a%2Bb&empty=&flag&k=%E2%82%AC&k=z&r=%2F%3F%23%26',
    '/api/proxy?z=1&%C3%A9=2&Z=3&_=4&~=5',
  ];
  for (const target of targets) {
    const r = run(signed({ target }));
    expectOk(r);
  }
  // The same for the presigned form.
  for (const target of targets) expectOk(run(signed({ target, presign: 60 })));
});

test('headers: repeated values, whitespace folding on the wire, Host from the effective host', () => {
  // aws4 signs one value `a,b`; the wire carries two headers, which canonicalise to the same.
  const req = signed({ headers: { 'X-Multi': 'a,b', 'X-Space': 'p q' } });
  const split: SigV4Request = {
    ...req,
    headers: req.headers.flatMap(([n, v]): Array<[string, string]> => (n === 'x-multi' ? [['x-multi', 'a'], ['x-multi', ' b ']] : n === 'x-space' ? [[n, '  p \t  q ']] : [[n, v]])),
  };
  expectOk(run(split));
  // Order of repeated values matters (b,a ≠ a,b).
  const swapped: SigV4Request = {
    ...req,
    headers: req.headers.flatMap(([n, v]): Array<[string, string]> => (n === 'x-multi' ? [['x-multi', 'b'], ['x-multi', 'a']] : [[n, v]])),
  };
  expectFail(run(swapped), 'signature_mismatch');
  // The effective host is what counts; without one, `host` is a listed header that is absent.
  expectFail(run({ ...req, host: 'evil.example:8888' }), 'signature_mismatch');
  expectFail(run({ ...req, host: undefined }), 'sigv4_signed_headers');
  // headerPairsFromRaw keeps wire order and lower-cases names.
  assert.deepEqual(headerPairsFromRaw(['Host', 'h', 'X-A', '1', 'x-a', '2']), [['host', 'h'], ['x-a', '1'], ['x-a', '2']]);
});

test('payload hash: declared hex checked against the body after the signature; no declaration signs the body', () => {
  const body = '{"hello":"world"}';
  const declared = signed({ body, headers: { 'Content-Type': 'application/json', 'X-Amz-Content-Sha256': sha(body) } });
  const v = verifySigV4({ ...declared, bodySha256: undefined }, ctx());
  assert.ok(v && v.ok);
  assert.equal(v.bodyCheck, 'compare');
  assert.equal(v.declaredPayloadHash, sha(body));
  expectOk(finishSigV4(v, sha(body)));
  expectFail(finishSigV4(v, sha(body + ' ')), 'payload_hash_mismatch');
  assert.throws(() => finishSigV4(v), (e: unknown) => e instanceof DomainError && e.field === 'bodySha256');

  // No x-amz-content-sha256: the body hash is part of the signature itself.
  const plain = signed({ body, headers: { 'Content-Type': 'application/json' } });
  expectOk(run(plain));
  expectFail(run({ ...plain, bodySha256: sha('{"hello":"there"}') }), 'signature_mismatch');
  assert.throws(() => verifySigV4({ ...plain, bodySha256: undefined }, ctx()), (e: unknown) => e instanceof DomainError && e.field === 'bodySha256');

  // UNSIGNED-PAYLOAD streams: nothing to compare, no body hash needed.
  const unsigned = signed({ body, headers: { 'X-Amz-Content-Sha256': 'UNSIGNED-PAYLOAD' } });
  const u = verifySigV4({ ...unsigned, bodySha256: undefined }, ctx());
  assert.ok(u && u.ok);
  assert.equal(u.bodyCheck, 'none');
  assert.equal(u.payloadSigned, false);
  expectOk(finishSigV4(u));

  // x-amz-content-sha256 present but not signed.
  const unsignedHeader = withHeader(signed({ body }), 'x-amz-content-sha256', sha(body));
  expectFail(run(unsignedHeader), 'sigv4_signed_headers');
});

test('management surface: user keys pass, app keys and UNSIGNED-PAYLOAD do not', () => {
  const mgmt = ctx({ surface: 'management' as SigV4Surface });
  expectOk(run(signed({ target: '/minibase/portal/openapi/v1/orgs', service: 'minibasebe' }), mgmt));
  expectFail(run(signed({ akid: 'UMAKAPPAPPAPPAPPAPPA' }), mgmt), 'app_key_not_allowed');
});

test('signing-key cache: one derivation per (AKID, date, region, service), evictable per AKID, never stale', () => {
  const cache = new SigningKeyCache(3);
  const k1 = cache.get('A', 's1', '20261127', 'pri', 'utilmeta');
  assert.equal(cache.get('A', 's1', '20261127', 'pri', 'utilmeta'), k1, 'second lookup is the cached Buffer');
  assert.deepEqual(k1, deriveSigningKey('s1', '20261127', 'pri', 'utilmeta'));
  // A changed secret is noticed even without eviction.
  const k2 = cache.get('A', 's2', '20261127', 'pri', 'utilmeta');
  assert.notDeepEqual(k2, k1);
  assert.deepEqual(k2, deriveSigningKey('s2', '20261127', 'pri', 'utilmeta'));
  cache.get('A', 's2', '20261127', 'pri', 'minibasebe');
  cache.get('B', 's3', '20261127', 'pri', 'utilmeta');
  assert.equal(cache.entries, 3);
  cache.evict('A');
  assert.equal(cache.entries, 1);
  assert.notEqual(cache.get('A', 's2', '20261127', 'pri', 'utilmeta'), k2, 're-derived after eviction');
  // Bounded: the oldest AKID goes.
  cache.get('C', 's', '20261127', 'pri', 'utilmeta');
  cache.get('D', 's', '20261127', 'pri', 'utilmeta');
  assert.ok(cache.entries <= 3);
  // The verifier uses the cache it is given, and a request verifies from a warm cache too.
  const c = ctx();
  expectOk(run(signed(), c));
  assert.equal(c.cache!.entries, 1);
  expectOk(run(signed({ target: '/api/proxy/other' }), c));
  assert.equal(c.cache!.entries, 1);
});

test('X-Amz-Date parsing rejects impossible calendar values', () => {
  assert.equal(parseAmzDate('20261127T120000Z'), NOW);
  for (const bad of ['20261301T000000Z', '20260230T000000Z', '20261127T240000Z', '20261127T126000Z', '20261127T120000', '2026112T120000Z']) {
    assert.ok(Number.isNaN(parseAmzDate(bad)), bad);
  }
});

test('AWS-shaped error response: headers, body, and the canonical request only on a signature mismatch', () => {
  const mismatch = expectFail(run(signed({ secret: 'wrong' })), 'signature_mismatch');
  const res = sigv4ErrorResponse(mismatch, 'req-1');
  assert.equal(res.status, 403);
  assert.deepEqual(res.headers, { 'content-type': 'application/json', 'x-amzn-ErrorType': 'SignatureDoesNotMatch', 'x-amzn-RequestId': 'req-1' });
  const body = JSON.parse(res.body);
  assert.equal(body.__type, 'SignatureDoesNotMatch');
  assert.equal(body.state, 'signature_mismatch');
  assert.match(body.canonicalRequest, /^GET\n\/api\/proxy\/items\nlimit=10\nhost:127\.0\.0\.1:8888\nx-amz-date:20261127T120000Z\n\nhost;x-amz-date\ne3b0c442/);
  assert.match(body.stringToSign, /^AWS4-HMAC-SHA256\n20261127T120000Z\n20261127\/pri\/utilmeta\/aws4_request\n[0-9a-f]{64}$/);
  assert.ok(!res.body.includes(SECRET));

  const region = sigv4ErrorResponse(expectFail(run(signed({ region: 'x' })), 'sigv4_region'), 'req-2');
  assert.deepEqual(Object.keys(JSON.parse(region.body)).sort(), ['__type', 'message', 'state']);
  assert.equal(region.headers['x-amzn-ErrorType'], 'SignatureDoesNotMatch');
});
