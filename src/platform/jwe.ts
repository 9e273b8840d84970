// JWE body encryption for requests to the platform (spec §3.1, `py:utilmeta/ops/spv/key.py:24-44`).
//
// Wire format, byte for byte as UtilMeta (jwcrypto) produces it:
//   {"ciphertext":"…","encrypted_key":"…","iv":"…","protected":"…","tag":"…"}
// flattened JSON serialization, compact, sorted keys, no header/unprotected/aad members; the
// protected header is {"alg":"RSA-OAEP-256","enc":"A256CBC-HS512","kid":<RFC 7638 thumbprint>,"typ":"JWE"}
// with sorted keys. The platform is not ours, so we reproduce the shape exactly rather than
// rely on it parsing any valid JWE.

import { FlattenedEncrypt, flattenedDecrypt, type JWK } from 'jose';
import { keyEntry, serializeJwk } from '../tokens/keys.ts';

export const JWE_ALG = 'RSA-OAEP-256';
export const JWE_ENC = 'A256CBC-HS512';

const encoder = new TextEncoder();

/** The members of a flattened JWE as UtilMeta sends it. */
export interface FlattenedJweText {
  ciphertext: string;
  encrypted_key: string;
  iv: string;
  protected: string;
  tag: string;
}

/**
 * Encrypts `plaintext` (exactly the bytes the request would otherwise carry) to the recipient's
 * public key (JWK JSON or base64 of it; a private JWK is fine, only its public half is used) and
 * returns the flattened JWE JSON text to send as the body.
 */
export async function encryptBody(plaintext: Uint8Array | string, recipientJwkJson: string): Promise<string> {
  const entry = keyEntry(recipientJwkJson);
  const [key, kid] = await Promise.all([entry.cryptoKey(JWE_ALG), entry.thumbprint()]);
  const bytes = typeof plaintext === 'string' ? encoder.encode(plaintext) : plaintext;
  // jose serializes the protected header with JSON.stringify, i.e. in insertion order, and
  // RSA-OAEP adds no header parameters of its own; listing the members alphabetically therefore
  // gives exactly jwcrypto's sorted-key header (checked in test/tokens.test.ts).
  const jwe = await new FlattenedEncrypt(bytes)
    .setProtectedHeader({ alg: JWE_ALG, enc: JWE_ENC, kid, typ: 'JWE' })
    .encrypt(key);
  if (!jwe.encrypted_key || !jwe.iv || !jwe.tag || !jwe.protected) {
    throw new Error('JWE encryption produced an incomplete flattened JWE');
  }
  // Members in sorted order; JSON.stringify is compact and the values are base64url (no escaping).
  const out: FlattenedJweText = {
    ciphertext: jwe.ciphertext,
    encrypted_key: jwe.encrypted_key,
    iv: jwe.iv,
    protected: jwe.protected,
    tag: jwe.tag,
  };
  return JSON.stringify(out);
}

/** Decoded protected header of a flattened JWE text, or null when it is not one. Never throws. */
export function readJweHeader(jweText: string): Record<string, unknown> | null {
  try {
    const jwe = JSON.parse(jweText) as unknown;
    if (typeof jwe !== 'object' || jwe === null || Array.isArray(jwe)) return null;
    const p = (jwe as Record<string, unknown>).protected;
    if (typeof p !== 'string') return null;
    const header = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as unknown;
    if (typeof header !== 'object' || header === null || Array.isArray(header)) return null;
    return header as Record<string, unknown>;
  } catch {
    return null;
  }
}

/**
 * Decrypts a flattened JWE text with a private JWK (JSON text, base64 text, or object).
 * Only RSA-OAEP-256 / A256CBC-HS512 are accepted. Throws on any failure.
 */
export async function decryptBody(jweText: string, privateJwk: string | JWK): Promise<Uint8Array> {
  const entry = keyEntry(typeof privateJwk === 'string' ? privateJwk : serializeJwk(privateJwk));
  const key = await entry.cryptoKey(JWE_ALG, true);
  let jwe: unknown;
  try {
    jwe = JSON.parse(jweText);
  } catch {
    throw new Error('JWE body is not JSON');
  }
  if (typeof jwe !== 'object' || jwe === null || Array.isArray(jwe)) throw new Error('JWE body is not a JSON object');
  const { plaintext } = await flattenedDecrypt(jwe as Parameters<typeof flattenedDecrypt>[0], key, {
    keyManagementAlgorithms: [JWE_ALG],
    contentEncryptionAlgorithms: [JWE_ENC],
  });
  return plaintext;
}
