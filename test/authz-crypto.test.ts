// Pure unit tests of src/access/crypto.ts (no I/O).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes, scryptSync } from 'node:crypto';
import { DomainError } from '../src/core/errors.ts';
import {
  ACCESS_KEY_ID_RE, decryptSecret, encryptSecret, generateAccessKeyId, generateMasterKey, generateSecret, generateToken,
  hashPassword, needsRehash, parseMasterKeys, SECRET_RE, TOKEN_RE, tokenHint, tokenSha256, verifyPassword,
} from '../src/access/crypto.ts';

test('scrypt hashes carry their parameters and salt, verify, and reject the wrong password', async () => {
  const h = await hashPassword('correct horse battery');
  const m = /^scrypt\$ln=15,r=8,p=1\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/.exec(h);
  assert.ok(m, h);
  // The stored hash is exactly scrypt(N=2^15, r=8, p=1) of the password under the stored salt.
  const expect = scryptSync('correct horse battery', Buffer.from(m[1]!, 'base64'), 32, { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 });
  assert.equal(Buffer.from(m[2]!, 'base64').toString('hex'), expect.toString('hex'));
  assert.equal(await verifyPassword('correct horse battery', h), true);
  assert.equal(await verifyPassword('correct horse batterY', h), false);
  assert.equal(await verifyPassword('', h), false);
  const h2 = await hashPassword('correct horse battery');
  assert.notEqual(h, h2, 'a fresh salt every time');
  assert.equal(needsRehash(h), false);
  assert.equal(needsRehash('scrypt$ln=14,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'), true);
});

test('verifyPassword is false (never a throw) for missing, malformed or hostile hashes', async () => {
  for (const stored of [null, undefined, '', 'scrypt$', 'bcrypt$2b$...', 'scrypt$ln=40,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA']) {
    assert.equal(await verifyPassword('x', stored), false, String(stored));
  }
  await assert.rejects(hashPassword(''), (e: unknown) => e instanceof DomainError && e.field === 'password');
});

test('master keys: first encrypts, all decrypt; errors name the bad entry and never echo the key', () => {
  const k1 = randomBytes(32).toString('base64');
  const k2 = randomBytes(32).toString('base64');
  const keys = parseMasterKeys(`a1:${k1}, b2:${k2}`);
  assert.equal(keys.primary.kid, 'a1');
  assert.deepEqual([...keys.byId.keys()], ['a1', 'b2']);
  const bad: Array<[string, RegExp]> = [
    ['', /empty/],
    [`a1:${k1},`, /entry 2 is empty/],
    [`a1${k1}`, /entry 1 has no ':'/],
    [`a1:${k1},a1:${k2}`, /entry 2: key id 'a1' appears twice/],
    [`a1:${k1},b 2:${k2}`, /entry 2: key id must be/],
    [`a1:${k1},b2:${randomBytes(16).toString('base64')}`, /entry 2 \('b2'\): the key is 16 bytes, expected 32/],
    [`a1:${k1.replace(/[+/]/g, '-')}!`, /entry 1 \('a1'\): the key is not standard base64/],
  ];
  for (const [text, re] of bad) {
    try {
      parseMasterKeys(text);
      assert.fail(`accepted ${text}`);
    } catch (e) {
      assert.ok(e instanceof DomainError, String(e));
      assert.match(e.message, re);
      assert.equal(e.field, 'UTILMETA_PROXY_AUTHZ_MASTER_KEYS');
      assert.ok(!e.message.includes(k1) && !e.message.includes(k2), 'key material is never echoed');
    }
  }
  const gen = generateMasterKey('ops-2026');
  assert.match(gen, /^ops-2026:[A-Za-z0-9+/]{43}=$/);
  assert.equal(parseMasterKeys(gen).primary.key.length, 32);
  assert.equal(parseMasterKeys(generateMasterKey()).byId.size, 1);
});

test('AES-256-GCM secrets: 56-byte ciphertext||tag, 12-byte nonce, bound to the key id, decrypt under any configured key', () => {
  const old = parseMasterKeys(generateMasterKey('old'));
  const secret = generateSecret();
  const akid = generateAccessKeyId();
  const enc = encryptSecret(old, akid, secret);
  assert.equal(enc.ciphertext.length, 56);
  assert.equal(enc.nonce.length, 12);
  assert.equal(enc.kid, 'old');
  assert.equal(decryptSecret(old, akid, enc), secret);
  assert.notEqual(encryptSecret(old, akid, secret).nonce.toString('hex'), enc.nonce.toString('hex'));
  // After adding a new primary key, old rows still decrypt.
  const oldEntry = `old:${old.primary.key.toString('base64')}`;
  const rotated = parseMasterKeys(`${generateMasterKey('new')},${oldEntry}`);
  assert.equal(decryptSecret(rotated, akid, enc), secret);
  assert.equal(encryptSecret(rotated, akid, secret).kid, 'new');
  const unusable = (f: () => unknown, re: RegExp) =>
    assert.throws(f, (e: unknown) => e instanceof DomainError && e.kind === 'unavailable' && e.code === 'MASTER_KEY_MISSING' && e.state === 'key_unusable' && re.test(e.message));
  unusable(() => decryptSecret(parseMasterKeys(generateMasterKey('new')), akid, enc), /'old', which is not configured/);
  unusable(() => decryptSecret(null, akid, enc), /not configured/);
  unusable(() => decryptSecret(old, generateAccessKeyId(), enc), /does not decrypt/); // AAD: moved to another key id
  const tampered = Buffer.from(enc.ciphertext);
  tampered[0]! ^= 1;
  unusable(() => decryptSecret(old, akid, { ...enc, ciphertext: tampered }), /does not decrypt/);
  unusable(() => decryptSecret(parseMasterKeys(`old:${randomBytes(32).toString('base64')}`), akid, enc), /does not decrypt/);
});

test('identifiers: access key ids, secrets and tokens have their formats and look random', () => {
  const ids = new Set<string>();
  const secretChars = new Map<string, number>();
  for (let i = 0; i < 2000; i++) {
    const id = generateAccessKeyId();
    assert.match(id, ACCESS_KEY_ID_RE);
    ids.add(id);
    const s = generateSecret();
    assert.match(s, SECRET_RE);
    for (const c of s) secretChars.set(c, (secretChars.get(c) ?? 0) + 1);
  }
  assert.equal(ids.size, 2000);
  // 80 000 characters over 62 symbols: ≈ 1290 each; an off-by-some bias would stand out far beyond ±25 %.
  assert.equal(secretChars.size, 62);
  for (const [c, n] of secretChars) assert.ok(n > 1290 * 0.75 && n < 1290 * 1.25, `${c}: ${n}`);
  const tok = generateToken();
  assert.match(tok, TOKEN_RE);
  assert.equal(tok.length, 47);
  assert.equal(tokenSha256(tok).toString('hex'), createHash('sha256').update(tok).digest('hex'));
  assert.equal(tokenSha256(tok).length, 32);
  assert.equal(tokenHint(tok), tok.slice(0, 12));
  assert.match(tokenHint(tok), /^umt_.{8}$/);
});
