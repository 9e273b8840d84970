// Platform keys (access key, cluster key, node key): parsing, RFC 7638 thumbprints and a
// process-wide import cache.
//
// Keys travel as text: raw JWK JSON, or standard base64 of that JSON (spec §3.1, §3.7;
// `py:utilmeta/ops/spv/key.py:17-21`). Importing an RSA JWK into WebCrypto costs far more than
// an RSA verify, so every distinct key text is parsed once and each (key text, algorithm) pair
// is imported once; the JWT/JWE hot paths only do Map lookups.
//
// One platform RSA key serves several algorithms: its JWK says `alg: RSA-OAEP-256` (JWE key
// wrapping) but the same key verifies RS256/PS256 JWTs (spec §3.7, §4.4). WebCrypto binds a
// CryptoKey to one algorithm, so we import per algorithm and ignore the JWK's `alg`/`use`/
// `key_ops` members (jwcrypto does not let them block verification either).

import { calculateJwkThumbprint, importJWK, type JWK } from 'jose';
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';

export type { JWK };

/** Algorithms this module imports keys for. */
export type KeyAlgorithm = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'RSA-OAEP-256';

export class KeyError extends Error {
  override readonly name = 'KeyError';
}

const RSA_PUBLIC_MEMBERS = ['kty', 'n', 'e'] as const;
const RSA_PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi'] as const;

/**
 * Parses a key given as JWK JSON or as standard base64 of the JSON (base64url is tolerated too).
 * Mirrors UtilMeta's rule: a value that does not look like `{…}` is base64-decoded first.
 * Throws KeyError naming what is wrong; never returns a non-object.
 */
export function parseJwk(value: string): JWK {
  if (typeof value !== 'string') throw new KeyError('JWK must be a string');
  const trimmed = value.trim();
  if (!trimmed) throw new KeyError('JWK is empty');
  let json = trimmed;
  if (!(trimmed.startsWith('{') && trimmed.endsWith('}'))) {
    // Line-wrapped base64 (e.g. pasted into an env file) is still base64.
    const b64 = trimmed.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(b64)) {
      throw new KeyError('JWK is neither JSON (`{…}`) nor base64 of JSON: it contains characters outside the base64 alphabet');
    }
    json = Buffer.from(b64, 'base64').toString('utf8').trim();
    if (!(json.startsWith('{') && json.endsWith('}'))) {
      throw new KeyError('JWK is neither JSON (`{…}`) nor base64 of JSON: the base64-decoded text is not a JSON object');
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (err) {
    throw new KeyError(`JWK is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new KeyError('JWK is not a JSON object');
  }
  const jwk = parsed as JWK;
  if (typeof jwk.kty !== 'string' || !jwk.kty) throw new KeyError('JWK has no "kty" member');
  if (jwk.kty === 'RSA') {
    for (const m of ['n', 'e'] as const) {
      if (typeof jwk[m] !== 'string' || !jwk[m]) throw new KeyError(`RSA JWK has no "${m}" member`);
    }
  }
  return jwk;
}

/** RFC 7638 SHA-256 thumbprint, base64url (what UtilMeta puts in the JWE `kid`). */
export function thumbprint(jwk: JWK): Promise<string> {
  return calculateJwkThumbprint(jwk, 'sha256');
}

/** Only the members WebCrypto needs, so `alg`/`use`/`key_ops` cannot pin the key to one algorithm. */
function rsaMaterial(jwk: JWK, wantPrivate: boolean): JWK {
  if (jwk.kty !== 'RSA') throw new KeyError(`unsupported key type "${jwk.kty}": platform keys are RSA`);
  const out: Record<string, unknown> = {};
  for (const m of RSA_PUBLIC_MEMBERS) out[m] = jwk[m];
  if (wantPrivate) {
    for (const m of RSA_PRIVATE_MEMBERS) {
      if (typeof jwk[m] !== 'string') throw new KeyError(`private RSA JWK has no "${m}" member`);
      out[m] = jwk[m];
    }
  }
  return out as JWK;
}

/** One cached key text: the parsed JWK, its thumbprint, and imported CryptoKeys per (alg, public/private). */
export class KeyEntry {
  readonly jwk: JWK;
  readonly isPrivate: boolean;
  private readonly imported = new Map<string, Promise<CryptoKey>>();
  private kid: Promise<string> | undefined;
  /**
   * Tokens whose signature already verified against this key, with their decoded parts.
   * A signature check is a pure function of (token bytes, key), so a hit skips the RSA work;
   * claims (exp, nid, iss…) are still checked on every call. Bounded, FIFO eviction.
   */
  readonly verified = new Map<string, unknown>();

  constructor(readonly text: string) {
    this.jwk = parseJwk(text);
    this.isPrivate = typeof this.jwk.d === 'string';
  }

  /** Thumbprint of the public part (RFC 7638 ignores private members). */
  thumbprint(): Promise<string> {
    return (this.kid ??= thumbprint(this.jwk));
  }

  private publicKeyObject: KeyObject | undefined;

  /**
   * The public half as a node:crypto KeyObject, for the synchronous signature check
   * on the hot path (see verifySignature in jwt.ts). Throws KeyError for < 2048 bits.
   */
  keyObject(): KeyObject {
    if (!this.publicKeyObject) {
      const k = createPublicKey({ key: rsaMaterial(this.jwk, false) as JsonWebKey, format: 'jwk' });
      const bits = k.asymmetricKeyDetails?.modulusLength;
      if (k.asymmetricKeyType !== 'rsa' || typeof bits !== 'number' || bits < 2048) {
        throw new KeyError(`RSA key is ${bits ?? 'not an RSA key of known size'} bits; at least 2048 are required`);
      }
      this.publicKeyObject = k;
    }
    return this.publicKeyObject;
  }

  /** The CryptoKey for `alg`; `usePrivate` selects the private half (sign / decrypt). */
  cryptoKey(alg: KeyAlgorithm, usePrivate = false): Promise<CryptoKey> {
    const id = usePrivate ? `${alg}:private` : alg;
    let p = this.imported.get(id);
    if (!p) {
      p = (async () => {
        if (usePrivate && !this.isPrivate) throw new KeyError('a private JWK is required for this operation');
        const key = await importJWK(rsaMaterial(this.jwk, usePrivate), alg);
        if (key instanceof Uint8Array) throw new KeyError('JWK imported as a symmetric secret');
        const bits = (key.algorithm as RsaHashedKeyAlgorithm).modulusLength;
        // jose refuses < 2048-bit keys at verify time; failing here reports it as a key problem.
        if (typeof bits !== 'number' || bits < 2048) throw new KeyError(`RSA key is ${bits} bits; at least 2048 are required`);
        return key;
      })();
      // A failed import is not cached, so a transient error does not stick.
      p.catch(() => this.imported.delete(id));
      this.imported.set(id, p);
    }
    return p;
  }
}

const MAX_KEYS = 256;
const entries = new Map<string, KeyEntry>();

/**
 * The cached entry for a key text (parsed once per distinct text). Throws KeyError when the
 * text is not a usable JWK; failures are not cached.
 */
export function keyEntry(text: string): KeyEntry {
  let e = entries.get(text);
  if (e) return e;
  e = new KeyEntry(text);
  if (entries.size >= MAX_KEYS) entries.delete(entries.keys().next().value as string);
  entries.set(text, e);
  return e;
}

/** Imports (once) the key text for `alg`. */
export function importKey(text: string, alg: KeyAlgorithm, usePrivate = false): Promise<CryptoKey> {
  try {
    return keyEntry(text).cryptoKey(alg, usePrivate);
  } catch (err) {
    return Promise.reject(err);
  }
}

/** Canonical compact JWK JSON with sorted keys, the format UtilMeta's generate_key_pair emits. */
export function serializeJwk(jwk: JWK): string {
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(jwk).sort()) {
    const v = (jwk as Record<string, unknown>)[k];
    if (v !== undefined) sorted[k] = v;
  }
  return JSON.stringify(sorted);
}

/** Public half of a JWK (drops RSA private members). */
export function publicJwk(jwk: JWK): JWK {
  const out: Record<string, unknown> = { ...jwk };
  for (const m of [...RSA_PRIVATE_MEMBERS, 'oth']) delete out[m];
  return out as JWK;
}

/** True when two key texts denote the same public key (compares RFC 7638 thumbprints). */
export async function sameKey(a: string, b: string): Promise<boolean> {
  if (a === b) return true;
  try {
    return (await keyEntry(a).thumbprint()) === (await keyEntry(b).thumbprint());
  } catch {
    return false;
  }
}

/** For tests: drop every cached key. */
export function clearKeyCache(): void {
  entries.clear();
}
