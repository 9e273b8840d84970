// Keys, JWE bodies and JWT verification against the shared fixtures (made by jwcrypto /
// UtilMeta itself) plus hostile tokens. See src/tokens/jwt.ts for the status/state table.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createPrivateKey, sign as cryptoSign } from 'node:crypto';
import { CompactSign, SignJWT, generateKeyPair as joseGenerateKeyPair } from 'jose';
import { importKey, keyEntry, parseJwk, thumbprint, KeyError } from '../src/tokens/keys.ts';
import { hasScopes, issuerMatches, parseScope, verifyToken, type TokenResult } from '../src/tokens/jwt.ts';
import { decryptBody, encryptBody, readJweHeader } from '../src/platform/jwe.ts';
import { generateRsaKeyPair, signJwt } from './support/platform-sim.ts';

interface Vectors {
  cluster_public_jwk: Record<string, string>;
  cluster_private_jwk_for_tests_only: Record<string, string>;
  tokens: Record<string, string>;
  [k: string]: unknown;
  jwe_example: { plaintext: string; flattened_jwe: string };
}
const vectors = JSON.parse(
  readFileSync(new URL('../../shared/fixtures/token-vectors.json', import.meta.url), 'utf8'),
) as Vectors;
const expectedKey = Object.keys(vectors).find((k) => k.startsWith('expected_for_node_'))!;
const expected = vectors[expectedKey] as Record<string, 'accept' | 'reject'>;

const PUB = JSON.stringify(vectors.cluster_public_jwk);
const PRIV = JSON.stringify(vectors.cluster_private_jwk_for_tests_only);
const NODE = 'node-1';
const CLUSTER = 'cluster-1';
const SPV = 'https://api.utilmeta.com/spv';
const opts = { key: PUB, nodeId: NODE, issuerBase: SPV, audience: CLUSTER };
const NOW = Math.floor(Date.now() / 1000);
const good = { aud: CLUSTER, exp: NOW + 600, iat: NOW, iss: 'https://api.utilmeta.com', jti: 'tok-x', nid: NODE, scope: 'api.view', sub: '42' };

const b64u = (s: string | Buffer) => Buffer.from(s).toString('base64url');

/** RS256 with node:crypto, for headers jose refuses to produce. */
function rawSign(header: object, payload: object): string {
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
  const key = createPrivateKey({ key: vectors.cluster_private_jwk_for_tests_only, format: 'jwk' });
  return `${input}.${cryptoSign('sha256', Buffer.from(input), key).toString('base64url')}`;
}

function assertReject(r: TokenResult, status: number, state: string, message?: RegExp | string): void {
  assert.equal(r.ok, false, `expected a rejection, got ${JSON.stringify(r)}`);
  if (r.ok) return;
  assert.equal(r.status, status, r.message);
  assert.equal(r.state, state, r.message);
  if (typeof message === 'string') assert.equal(r.message, message);
  else if (message) assert.match(r.message, message);
}

// ---- keys ----------------------------------------------------------------------------------

test('parseJwk accepts JSON, base64 (also wrapped / url-safe) and trims', () => {
  const std = Buffer.from(PUB).toString('base64');
  for (const text of [PUB, `  ${PUB}\n`, std, std.replace(/(.{60})/g, '$1\n'), Buffer.from(PUB).toString('base64url')]) {
    const jwk = parseJwk(text);
    assert.equal(jwk.kty, 'RSA');
    assert.equal(jwk.n, vectors.cluster_public_jwk.n);
  }
});

test('parseJwk names what is wrong', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['   ', /empty/],
    ['not a key!', /neither JSON .* base64/],
    [Buffer.from('hello world').toString('base64'), /base64-decoded text is not a JSON object/],
    ['{"kty": "RSA", "n": }', /not valid JSON/],
    [Buffer.from('[1,2]').toString('base64'), /not a JSON object/],
    ['{"n":"x","e":"AQAB"}', /no "kty"/],
    ['{"kty":"RSA","e":"AQAB"}', /no "n"/],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseJwk(text), (err: Error) => err instanceof KeyError && re.test(err.message), text);
  }
});

test('thumbprint is RFC 7638 and equals the kid jwcrypto wrote into the fixture JWE', async () => {
  const kid = readJweHeader(vectors.jwe_example.flattened_jwe)?.kid;
  assert.equal(typeof kid, 'string');
  assert.equal(await thumbprint(parseJwk(PUB)), kid);
  // Private members do not change it.
  assert.equal(await thumbprint(parseJwk(PRIV)), kid);
});

test('key cache imports once per (key text, algorithm)', async () => {
  const a = await importKey(PUB, 'RS256');
  assert.equal(await importKey(PUB, 'RS256'), a, 'second import must come from the cache');
  const ps = await importKey(PUB, 'PS256');
  assert.notEqual(ps, a);
  assert.equal(ps.algorithm.name, 'RSA-PSS');
  assert.equal(a.algorithm.name, 'RSASSA-PKCS1-v1_5');
  assert.equal(keyEntry(PUB), keyEntry(PUB));
  await assert.rejects(importKey(PUB, 'RS256', true), /private JWK is required/);
  await assert.rejects(importKey('{"kty":"EC","crv":"P-256","x":"a","y":"b"}', 'RS256'), /unsupported key type/);
});

// ---- JWE -----------------------------------------------------------------------------------

test('fixture JWE (made by UtilMeta) decrypts to exactly the fixture plaintext', async () => {
  const pt = await decryptBody(vectors.jwe_example.flattened_jwe, PRIV);
  assert.equal(Buffer.from(pt).toString('utf8'), vectors.jwe_example.plaintext);
  // Object form of the private key works too.
  const pt2 = await decryptBody(vectors.jwe_example.flattened_jwe, vectors.cluster_private_jwk_for_tests_only);
  assert.deepEqual(pt2, pt);
});

test('encryptBody output has UtilMeta\'s exact shape and round-trips', async () => {
  const out = await encryptBody(vectors.jwe_example.plaintext, PUB);
  const parsed = JSON.parse(out) as Record<string, string>;
  const fixture = JSON.parse(vectors.jwe_example.flattened_jwe) as Record<string, string>;
  assert.deepEqual(Object.keys(parsed), ['ciphertext', 'encrypted_key', 'iv', 'protected', 'tag']);
  assert.deepEqual(Object.keys(parsed), Object.keys(fixture));
  // Compact, sorted-key serialization: re-serializing gives the same text.
  assert.equal(out, JSON.stringify(parsed));
  assert.ok(!/\s/.test(out));
  for (const v of Object.values(parsed)) assert.match(v, /^[A-Za-z0-9_-]+$/);
  // Protected header: sorted keys, same bytes as jwcrypto's for the same key.
  const kid = await thumbprint(parseJwk(PUB));
  const header = `{"alg":"RSA-OAEP-256","enc":"A256CBC-HS512","kid":"${kid}","typ":"JWE"}`;
  assert.equal(parsed.protected, b64u(header));
  assert.equal(parsed.protected, fixture.protected);
  assert.equal(Buffer.from(parsed.iv, 'base64url').length, 16);
  assert.equal(Buffer.from(parsed.tag, 'base64url').length, 32);
  assert.equal(Buffer.from(parsed.encrypted_key, 'base64url').length, 256);
  const back = await decryptBody(out, PRIV);
  assert.equal(Buffer.from(back).toString('utf8'), vectors.jwe_example.plaintext);
});

test('encryptBody: bytes input, base64 key text, private key text (public half used), fresh IV each time', async () => {
  const bytes = new Uint8Array([0, 1, 2, 255, 0x7b]);
  const a = await encryptBody(bytes, Buffer.from(PUB).toString('base64'));
  const b = await encryptBody(bytes, PRIV);
  assert.notEqual(JSON.parse(a).iv, JSON.parse(b).iv);
  assert.equal(JSON.parse(a).protected, JSON.parse(b).protected);
  assert.deepEqual(await decryptBody(a, PRIV), bytes);
  assert.deepEqual(await decryptBody(b, PRIV), bytes);
});

test('decryptBody rejects the wrong key, tampering and non-JWE input', async () => {
  const other = await generateRsaKeyPair('other');
  const out = await encryptBody('{"a": 1}', PUB);
  await assert.rejects(decryptBody(out, other.privateKey));
  const j = JSON.parse(out) as Record<string, string>;
  const flipped = j.ciphertext[0] === 'A' ? 'B' : 'A';
  await assert.rejects(decryptBody(JSON.stringify({ ...j, ciphertext: flipped + j.ciphertext.slice(1) }), PRIV));
  await assert.rejects(decryptBody('not json', PRIV), /not JSON/);
  await assert.rejects(decryptBody('[1]', PRIV), /not a JSON object/);
  assert.equal(readJweHeader('{"protected": 5}'), null);
});

// ---- JWT: fixture vectors ------------------------------------------------------------------

test('every fixture token gets its expected verdict', async () => {
  assert.ok(Object.keys(vectors.tokens).length >= 8);
  for (const [name, token] of Object.entries(vectors.tokens)) {
    const want = expected[name];
    assert.ok(want === 'accept' || want === 'reject', `no expectation for ${name}`);
    const r = await verifyToken(token, opts);
    assert.equal(r.ok, want === 'accept', `${name}: ${JSON.stringify(r)}`);
    if (!r.ok) {
      assert.ok(r.status >= 400 && r.status < 500, `${name}: ${r.status}`);
      assert.ok(r.message.length > 0);
    }
  }
});

test('fixture rejections carry the documented status/state/message', async () => {
  const t = vectors.tokens;
  assertReject(await verifyToken(t.expired, opts), 400, 'token_expired', 'Invalid token: expired');
  assertReject(await verifyToken(t.no_exp, opts), 422, 'token_invalid', 'Invalid token: no expires');
  assertReject(await verifyToken(t.wrong_aud, opts), 409, 'audience_mismatch', "Invalid token audience: 'cluster-2'");
  assertReject(await verifyToken(t.wrong_nid, opts), 409, 'node_id_mismatch', 'Invalid node id');
  assertReject(await verifyToken(t.issuer_not_prefix, opts), 409, 'issuer_mismatch', "Invalid token issuer: 'https://evil.example.com'");
  assertReject(await verifyToken(t.not_before_future, opts), 400, 'token_invalid', 'Invalid token: not yet valid');
});

test('accepted fixture tokens expose their claims and header', async () => {
  for (const [name, alg] of [['valid_rs256', 'RS256'], ['valid_ps256', 'PS256']] as const) {
    const r = await verifyToken(vectors.tokens[name], { ...opts, requireJti: true });
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(r.header.alg, alg);
    assert.equal(r.claims.nid, NODE);
    assert.equal(r.claims.aud, CLUSTER);
    assert.equal(r.claims.jti, 'tok-1');
    assert.equal(r.claims.sub, '42');
    assert.deepEqual(parseScope(r.claims.scope).scopes, ['api.view', 'log.view']);
    assert.equal(r.token, vectors.tokens[name]);
  }
});

test('scheme prefix: "<scheme> <jwt>" is accepted, extra words or nothing are not', async () => {
  const tok = vectors.tokens.valid_rs256;
  assert.ok((await verifyToken(`Bearer ${tok}`, opts)).ok);
  assert.ok((await verifyToken(`JWT   ${tok} `, opts)).ok);
  assertReject(await verifyToken(`Bearer ${tok} extra`, opts), 400, 'token_invalid');
  assertReject(await verifyToken('', opts), 401, 'token_required', 'Token required');
  assertReject(await verifyToken('   ', opts), 401, 'token_required');
  assertReject(await verifyToken('Bearer', opts), 400, 'token_invalid');
  assertReject(await verifyToken(undefined as unknown as string, opts), 401, 'token_required');
});

test('the signature cache never short-circuits the claim checks', async () => {
  const tok = vectors.tokens.valid_rs256;
  const first = await verifyToken(tok, opts);
  const second = await verifyToken(tok, opts);
  assert.ok(first.ok && second.ok);
  assert.equal(second.claims, first.claims, 'second call should reuse the verified decode');
  assertReject(await verifyToken(tok, { ...opts, nodeId: 'node-2' }), 409, 'node_id_mismatch');
  assertReject(await verifyToken(tok, { ...opts, now: 4102444800 + 31 }), 400, 'token_expired');
  // A verified token is cached per key: another key still rejects it.
  const other = await generateRsaKeyPair('other');
  assertReject(await verifyToken(tok, { ...opts, key: other.publicKey }), 401, 'token_invalid');
});

// ---- JWT: hostile input --------------------------------------------------------------------

test('forged, unsigned, HMAC-confused, EC, truncated and garbage tokens are all 4xx and never throw', async () => {
  const other = await generateRsaKeyPair('attacker');
  const forged = await signJwt(good, other.privateKey);
  const header = (h: object) => b64u(JSON.stringify(h));
  const body = b64u(JSON.stringify(good));
  const none = `${header({ alg: 'none', typ: 'JWT' })}.${body}.`;
  const noneWithSig = `${header({ alg: 'none' })}.${body}.${b64u('x')}`;
  // Classic RS/HS confusion: HMAC keyed with the public key text.
  const hs256 = await new SignJWT(good).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(PUB));
  const ec = await joseGenerateKeyPair('ES256');
  const es256 = await new SignJWT(good).setProtectedHeader({ alg: 'ES256' }).sign(ec.privateKey);
  const valid = await signJwt(good, PRIV);
  const [h, p, s] = valid.split('.');
  // A valid signature moved onto another payload, and an RS256 signature relabelled PS256.
  const swapped = `${h}.${b64u(JSON.stringify({ ...good, nid: 'node-9' }))}.${s}`;
  const relabelled = `${header({ alg: 'PS256', typ: 'JWT' })}.${p}.${s}`;

  const cases: Record<string, [string, number]> = {
    forged: [forged, 401],
    none: [none, 400],
    noneWithSig: [noneWithSig, 400],
    hs256: [hs256, 400],
    es256: [es256, 400],
    swapped: [swapped, 401],
    relabelled: [relabelled, 401],
    truncatedSig: [valid.slice(0, -10), 401],
    sigDropped: [`${h}.${p}.`, 400],
    cutInPayload: [valid.slice(0, h.length + 1 + Math.floor(p.length / 2)), 400],
    twoParts: [`${h}.${p}`, 400],
    fiveParts: [`${h}.${p}.${s}.a.b`, 400],
    garbage: ['!!!.@@@.###', 400],
    garbageB64: [`${b64u('{{{')}.${b64u('not json')}.${b64u('sig')}`, 400],
    headerArray: [`${b64u('[1]')}.${p}.${s}`, 400],
    payloadString: [`${h}.${b64u('"hello"')}.${s}`, 400],
    noAlg: [`${header({ typ: 'JWT' })}.${p}.${s}`, 400],
    algNumber: [`${header({ alg: 256 })}.${p}.${s}`, 400],
    nonStringExp: [await signJwt({ ...good, exp: 'never' }, PRIV), 400],
    unknownCrit: [rawSign({ alg: 'RS256', crit: ['x-foo'], 'x-foo': 1 }, good), 400],
    huge: [`${h}.${'A'.repeat(20000)}.${s}`, 400],
    dots: ['..', 400],
  };
  for (const [name, [token, status]] of Object.entries(cases)) {
    let r: TokenResult;
    try {
      r = await verifyToken(token, opts);
    } catch (err) {
      assert.fail(`${name} threw: ${(err as Error).message}`);
    }
    assert.equal(r.ok, false, `${name} was accepted`);
    if (!r.ok) {
      assert.equal(r.status, status, `${name}: ${r.status} ${r.state} ${r.message}`);
      assert.equal(r.state, 'token_invalid', name);
    }
  }
  assert.ok((await verifyToken(rawSign({ alg: 'RS256' }, good), opts)).ok, 'rawSign itself must produce valid tokens');
  // The fixture key itself does verify the untouched token (so the rejections above are about the tampering).
  assert.ok((await verifyToken(valid, opts)).ok);
});

test('algorithm allow-list message names the algorithm', async () => {
  const none = `${b64u('{"alg":"none"}')}.${b64u(JSON.stringify(good))}.`;
  assertReject(await verifyToken(none, opts), 400, 'token_invalid', "Invalid token algorithm: 'none'");
});

test('all RS and PS algorithms verify with the RSA-OAEP-256 JWK', async () => {
  for (const alg of ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'] as const) {
    const r = await verifyToken(await signJwt(good, PRIV, { alg }), opts);
    assert.ok(r.ok, `${alg}: ${JSON.stringify(r)}`);
    assert.equal(r.header.alg, alg);
  }
});

// ---- JWT: claim rules ----------------------------------------------------------------------

test('issuer must match the supervisor base URL at a URL boundary', async () => {
  const iss = async (value: unknown) => verifyToken(await signJwt({ ...good, iss: value }, PRIV), opts);
  assert.ok((await iss('https://api.utilmeta.com')).ok);
  assert.ok((await iss('https://api.utilmeta.com/')).ok);
  assert.ok((await iss('https://api.utilmeta.com/spv')).ok);
  assertReject(await iss('https://api.utilmeta.co'), 409, 'issuer_mismatch', "Invalid token issuer: 'https://api.utilmeta.co'");
  assertReject(await iss('https://api.utilmeta.com/sp'), 409, 'issuer_mismatch');
  assertReject(await iss('https://api.utilmeta.com/spv/x'), 409, 'issuer_mismatch');
  assertReject(await iss('https://api.utilmeta.com.evil.io'), 409, 'issuer_mismatch');
  assertReject(await iss('https'), 409, 'issuer_mismatch');
  assertReject(await iss(''), 409, 'issuer_mismatch', 'Invalid token issuer: missing');
  assertReject(await iss(undefined), 409, 'issuer_mismatch', 'Invalid token issuer: missing');
  assertReject(await iss(['https://api.utilmeta.com']), 409, 'issuer_mismatch', 'Invalid token issuer: missing');
  // A base URL with a trailing slash still works.
  const r = await verifyToken(await signJwt(good, PRIV), { ...opts, issuerBase: SPV + '/' });
  assert.ok(r.ok);
  assert.equal(issuerMatches('http://127.0.0.1:9', 'http://127.0.0.1:90/spv'), false);
  assert.equal(issuerMatches('http://127.0.0.1:90', 'http://127.0.0.1:90/spv'), true);
});

test('nid: missing or non-string is "Invalid node id"', async () => {
  assertReject(await verifyToken(await signJwt({ ...good, nid: undefined }, PRIV), opts), 409, 'node_id_mismatch', 'Invalid node id');
  assertReject(await verifyToken(await signJwt({ ...good, nid: 1 }, PRIV), { ...opts, nodeId: '1' }), 409, 'node_id_mismatch');
});

test('audience: enforced only when given; array form allowed', async () => {
  assert.ok((await verifyToken(vectors.tokens.wrong_aud, { ...opts, audience: undefined })).ok);
  assert.ok((await verifyToken(await signJwt({ ...good, aud: ['x', CLUSTER] }, PRIV), opts)).ok);
  assertReject(await verifyToken(await signJwt({ ...good, aud: undefined }, PRIV), opts), 409, 'audience_mismatch', "Invalid token audience: 'null'");
  assertReject(await verifyToken(await signJwt({ ...good, aud: ['x'] }, PRIV), opts), 409, 'audience_mismatch');
});

test('exp/nbf leeway (default 30 s) and explicit now', async () => {
  const at = (exp: number, extra: object = {}) => signJwt({ ...good, exp, ...extra }, PRIV);
  const now = 2_000_000_000;
  assert.ok((await verifyToken(await at(now - 29), { ...opts, now })).ok);
  assertReject(await verifyToken(await at(now - 31), { ...opts, now }), 400, 'token_expired');
  assertReject(await verifyToken(await at(now - 1), { ...opts, now, leewaySec: 0 }), 400, 'token_expired');
  assert.ok((await verifyToken(await at(now - 100), { ...opts, now, leewaySec: 120 })).ok);
  assert.ok((await verifyToken(await at(now + 60, { nbf: now + 20 }), { ...opts, now })).ok);
  assertReject(await verifyToken(await at(now + 60, { nbf: now + 40 }), { ...opts, now }), 400, 'token_invalid', 'Invalid token: not yet valid');
  assertReject(await verifyToken(await at(undefined as unknown as number), { ...opts, now }), 422, 'token_invalid');
});

test('requireJti', async () => {
  const noJti = await signJwt({ ...good, jti: undefined }, PRIV);
  assert.ok((await verifyToken(noJti, opts)).ok);
  assertReject(await verifyToken(noJti, { ...opts, requireJti: true }), 400, 'token_expired', 'Invalid token: id required');
  assertReject(await verifyToken(await signJwt({ ...good, jti: 7 }, PRIV), { ...opts, requireJti: true }), 400, 'token_expired');
});

test('an unusable configured key is a 500 key_invalid, never a throw; base64 keys work', async () => {
  const tok = vectors.tokens.valid_rs256;
  assertReject(await verifyToken(tok, { ...opts, key: 'garbage!' }), 500, 'key_invalid', /Invalid verification key: JWK is neither/);
  assertReject(await verifyToken(tok, { ...opts, key: '{"kty":"oct","k":"c2VjcmV0"}' }), 500, 'key_invalid');
  assert.ok((await verifyToken(tok, { ...opts, key: Buffer.from(PUB).toString('base64') })).ok);
});

test('a token that is not a JWS at all (compact JWE) is a format error', async () => {
  const jwe = JSON.parse(vectors.jwe_example.flattened_jwe) as Record<string, string>;
  const compact = [jwe.protected, jwe.encrypted_key, jwe.iv, jwe.ciphertext, jwe.tag].join('.');
  assertReject(await verifyToken(compact, opts), 400, 'token_invalid');
  // And a JWS with an unprotected-only header shape is refused too.
  const jws = await new CompactSign(new TextEncoder().encode('x')).setProtectedHeader({ alg: 'RS256' }).sign(await importKey(PRIV, 'RS256', true));
  assertReject(await verifyToken(jws, opts), 400, 'token_invalid', /bad payload/);
});

// ---- scopes --------------------------------------------------------------------------------

test('parseScope: spaces win over commas; name:resource splits', () => {
  assert.deepEqual(parseScope('api.view log.view'), { scopes: ['api.view', 'log.view'], resources: [] });
  assert.deepEqual(parseScope('api.view,log.view'), { scopes: ['api.view', 'log.view'], resources: [] });
  assert.deepEqual(parseScope('a,b c'), { scopes: ['a,b', 'c'], resources: [] });
  assert.deepEqual(parseScope('data.query:orders data.view:users:1'), { scopes: ['data.query', 'data.view'], resources: ['orders', 'users:1'] });
  assert.deepEqual(parseScope('  *  '), { scopes: ['*'], resources: [] });
  assert.deepEqual(parseScope(''), { scopes: [], resources: [] });
  assert.deepEqual(parseScope(undefined), { scopes: [], resources: [] });
  assert.deepEqual(parseScope(',,a,'), { scopes: ['a'], resources: [] });
});

test('hasScopes: superset or *', () => {
  assert.equal(hasScopes(['log.view'], ['api.view', 'log.view']), true);
  assert.equal(hasScopes(['log.view', 'log.delete'], ['log.view']), false);
  assert.equal(hasScopes(['data.delete'], ['*']), true);
  assert.equal(hasScopes([], []), true);
  assert.equal(hasScopes(['api.view'], []), false);
});

test('the verified-signature memo never answers for another token with the same signature', async () => {
  const valid = await signJwt({ ...good, jti: 'memo-1' }, PRIV);
  const [h, , s] = valid.split('.');
  // The same signature (so the same memo key) on another payload: must be verified, and fail.
  const swapped = `${h}.${b64u(JSON.stringify({ ...good, jti: 'memo-1', sub: 'someone-else' }))}.${s}`;
  assert.equal((await verifyToken(valid, opts)).ok, true);
  assertReject(await verifyToken(swapped, opts), 401, 'token_invalid');
  // …and the failed one did not evict or replace the valid memo entry's answer.
  const again = await verifyToken(valid, opts);
  assert.equal(again.ok, true);
  assert.equal(again.ok && again.claims.sub, '42');
  // A header value "Bearer <jwt>" and the bare token verify alike.
  assert.equal((await verifyToken(`Bearer ${valid}`, opts)).ok, true);
});
