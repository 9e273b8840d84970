// Access-plane cryptography, all on node:crypto: scrypt password hashes,
// master keys, AES-256-GCM encryption of access-key secrets (SigV4 needs the
// secret itself, so it cannot be hashed), and the random identifiers and
// tokens the access plane hands out.
import { createCipheriv, createDecipheriv, createHash, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { DomainError } from '../core/errors.ts';
import { KID_RE, masterError, type MasterKeys } from '../config/master-keys.ts';

// ---------------------------------------------------------------- passwords

/** scrypt cost: N = 2^15, r = 8, p = 1 (≈ 32 MiB and tens of ms per hash). */
export const SCRYPT_PARAMS = { ln: 15, r: 8, p: 1 } as const;
const SCRYPT_KEYLEN = 32;
const SALT_BYTES = 16;
// Bounds for parameters read back from stored hashes, so a tampered row cannot
// make a login allocate gigabytes.
const MAX_LN = 20;
const MAX_R = 16;
const MAX_P = 4;

function scrypt(password: string, salt: Buffer, ln: number, r: number, p: number): Promise<Buffer> {
  const N = 2 ** ln;
  // Node refuses 128·N·r bytes at its 32 MiB default limit; allow twice the need.
  const opts: ScryptOptions = { N, r, p, maxmem: 256 * N * r };
  return new Promise((resolve, reject) => scryptCb(password.normalize('NFC'), salt, SCRYPT_KEYLEN, opts, (err, key) => (err ? reject(err) : resolve(key))));
}

const b64 = (b: Buffer) => b.toString('base64').replace(/=+$/, '');

/** `scrypt$ln=15,r=8,p=1$<salt base64>$<hash base64>` (the parameters travel with the hash). */
export async function hashPassword(password: string): Promise<string> {
  if (typeof password !== 'string' || password.length === 0) throw new DomainError('invalid', 'password must be a non-empty string', { field: 'password', code: 'PARAM_INVALID' });
  const salt = randomBytes(SALT_BYTES);
  const { ln, r, p } = SCRYPT_PARAMS;
  const key = await scrypt(password, salt, ln, r, p);
  return `scrypt$ln=${ln},r=${r},p=${p}$${b64(salt)}$${b64(key)}`;
}

interface ParsedHash {
  ln: number;
  r: number;
  p: number;
  salt: Buffer;
  key: Buffer;
}

function parseHash(stored: string): ParsedHash | null {
  const m = /^scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]{16,88})\$([A-Za-z0-9+/]{16,88})$/.exec(stored);
  if (!m) return null;
  const [ln, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (ln < 1 || ln > MAX_LN || r < 1 || r > MAX_R || p < 1 || p > MAX_P) return null;
  const salt = Buffer.from(m[4]!, 'base64');
  const key = Buffer.from(m[5]!, 'base64');
  if (key.length < 16) return null;
  return { ln, r, p, salt, key };
}

let dummy: Promise<string> | undefined;

/**
 * True iff `password` matches `stored`. With `stored` null (unknown user, no
 * password set) it still spends one hash, so the answer time does not reveal
 * whether the account exists. Never throws for bad input.
 */
export async function verifyPassword(password: string, stored: string | null | undefined): Promise<boolean> {
  const parsed = stored ? parseHash(stored) : null;
  if (!parsed || typeof password !== 'string') {
    dummy ??= hashPassword('utilmeta-proxy timing equaliser');
    const d = parseHash(await dummy)!;
    await scrypt(typeof password === 'string' ? password : '', d.salt, d.ln, d.r, d.p);
    return false;
  }
  const key = await scrypt(password, parsed.salt, parsed.ln, parsed.r, parsed.p);
  const want = parsed.key.length === key.length ? parsed.key : Buffer.alloc(key.length);
  return timingSafeEqual(key, want) && parsed.key.length === key.length;
}

/** Whether a stored hash uses weaker parameters than today's (re-hash on next login). */
export function needsRehash(stored: string): boolean {
  const p = parseHash(stored);
  return !p || p.ln < SCRYPT_PARAMS.ln || p.r < SCRYPT_PARAMS.r;
}

// ---------------------------------------------------------------- master keys

// Parsed in the configuration (it reads the variable); the types and parser live there.
export { parseMasterKeys, type MasterKey, type MasterKeys } from '../config/master-keys.ts';

/** A fresh `kid:base64(32 bytes)` entry (the `gen-master-key` output). */
export function generateMasterKey(kid = `mk${new Date().toISOString().slice(0, 10).replace(/-/g, '')}${randomBytes(2).toString('hex')}`): string {
  if (!KID_RE.test(kid)) throw masterError('the key id must be 1–32 characters of A–Z a–z 0–9 . _ -');
  return `${kid}:${randomBytes(32).toString('base64')}`;
}

// ---------------------------------------------------------------- secret encryption

export interface EncryptedSecret {
  /** AES-256-GCM ciphertext followed by its 16-byte tag (56 bytes for a 40-character secret) */
  ciphertext: Buffer;
  /** 12 random bytes */
  nonce: Buffer;
  /** the master key it is encrypted under */
  kid: string;
}

/** Binds a ciphertext to its key id, so a secret cannot be moved to another key's row. */
export const secretAad = (accessKeyId: string) => Buffer.from(`utilmeta-proxy:ak:${accessKeyId}`, 'utf8');

export function encryptSecret(keys: MasterKeys, accessKeyId: string, secret: string): EncryptedSecret {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', keys.primary.key, nonce);
  cipher.setAAD(secretAad(accessKeyId));
  const ciphertext = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final(), cipher.getAuthTag()]);
  return { ciphertext, nonce, kid: keys.primary.kid };
}

export function decryptSecret(keys: MasterKeys | null, accessKeyId: string, enc: EncryptedSecret): string {
  const mk = keys?.byId.get(enc.kid);
  if (!mk) {
    throw new DomainError('unavailable', `access key ${accessKeyId} is encrypted under master key '${enc.kid}', which is not configured`, {
      code: 'MASTER_KEY_MISSING',
      state: 'key_unusable',
    });
  }
  if (enc.ciphertext.length < 17 || enc.nonce.length !== 12) {
    throw new DomainError('unavailable', `access key ${accessKeyId}: stored secret is malformed`, { code: 'MASTER_KEY_MISSING', state: 'key_unusable' });
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', mk.key, enc.nonce);
    decipher.setAAD(secretAad(accessKeyId));
    decipher.setAuthTag(enc.ciphertext.subarray(enc.ciphertext.length - 16));
    return Buffer.concat([decipher.update(enc.ciphertext.subarray(0, enc.ciphertext.length - 16)), decipher.final()]).toString('utf8');
  } catch (err) {
    throw new DomainError('unavailable', `access key ${accessKeyId} does not decrypt under master key '${enc.kid}' (wrong key or tampered row)`, {
      code: 'MASTER_KEY_MISSING',
      state: 'key_unusable',
      cause: err,
    });
  }
}

// ---------------------------------------------------------------- identifiers and tokens

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
export const ACCESS_KEY_ID_RE = /^UMAK[A-Z2-7]{16}$/;
export const SECRET_RE = /^[A-Za-z0-9]{40}$/;
export const TOKEN_RE = /^umt_[A-Za-z0-9_-]{43}$/;

/** `UMAK` + 16 base32 characters: 10 random bytes are exactly 80 bits = 16 × 5, so no bias. */
export function generateAccessKeyId(): string {
  const bytes = randomBytes(10);
  let bits = 0;
  let value = 0;
  let out = 'UMAK';
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  return out;
}

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** 40 characters of [A-Za-z0-9]; bytes ≥ 248 (= 4·62) are rejected so every character is equally likely. */
export function generateSecret(): string {
  let out = '';
  while (out.length < 40) {
    for (const b of randomBytes(48)) {
      if (b < 248) out += ALNUM[b % 62];
      if (out.length === 40) break;
    }
  }
  return out;
}

/** `umt_` + 43 base64url characters (32 random bytes). */
export function generateToken(): string {
  return `umt_${randomBytes(32).toString('base64url')}`;
}

/** What is stored and looked up instead of the token. */
export function tokenSha256(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** `umt_` + the first 8 characters, for listings. */
export function tokenHint(token: string): string {
  return token.slice(0, 12);
}

/** 32 lowercase hex characters (seed-002 app ids and the like). */
export function randomHex32(): string {
  return randomBytes(16).toString('hex');
}
