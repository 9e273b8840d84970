// Master keys for access-key secrets: `kid:base64(32 bytes)[,kid2:…]` from the
// configuration. Parsed here, with the rest of the configuration, so a bad value
// stops the start with one line; the access plane's crypto uses the result.
import { DomainError } from '../core/errors.ts';

export interface MasterKey {
  kid: string;
  key: Buffer;
}

export interface MasterKeys {
  /** encrypts new secrets */
  primary: MasterKey;
  /** every configured key by id (all decrypt) */
  byId: ReadonlyMap<string, MasterKey>;
}

const MASTER_ENV = 'UTILMETA_PROXY_AUTHZ_MASTER_KEYS';
export const KID_RE = /^[A-Za-z0-9._-]{1,32}$/;
const B64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

export function masterError(message: string): DomainError {
  return new DomainError('invalid', `${MASTER_ENV}: ${message}`, { field: MASTER_ENV, code: 'MASTER_KEY_INVALID' });
}

/**
 * Parses `kid:base64(32 bytes)[,kid2:…]`. The first key encrypts; all decrypt.
 * Errors name the entry (position and kid), never the key material.
 */
export function parseMasterKeys(text: string): MasterKeys {
  if (typeof text !== 'string' || text.trim() === '') throw masterError('is empty; expected kid:base64(32 bytes)[,kid2:…]');
  const byId = new Map<string, MasterKey>();
  const entries = text.split(',').map((s) => s.trim());
  let primary: MasterKey | undefined;
  entries.forEach((entry, i) => {
    const where = `entry ${i + 1}`;
    if (entry === '') throw masterError(`${where} is empty (stray comma?)`);
    const colon = entry.indexOf(':');
    if (colon < 0) throw masterError(`${where} has no ':' (expected kid:base64)`);
    const kid = entry.slice(0, colon);
    const material = entry.slice(colon + 1);
    if (!KID_RE.test(kid)) throw masterError(`${where}: key id must be 1–32 characters of A–Z a–z 0–9 . _ -`);
    if (byId.has(kid)) throw masterError(`${where}: key id '${kid}' appears twice`);
    if (!B64_RE.test(material) || material.length % 4 !== 0) throw masterError(`${where} ('${kid}'): the key is not standard base64`);
    const key = Buffer.from(material, 'base64');
    if (key.length !== 32) throw masterError(`${where} ('${kid}'): the key is ${key.length} bytes, expected 32`);
    const mk = { kid, key };
    byId.set(kid, mk);
    primary ??= mk;
  });
  // Key material must never reach a log line or a JSON dump of the config.
  const redacted = () => ({ kids: [...byId.keys()] });
  return { primary: primary!, byId, toJSON: redacted, [Symbol.for('nodejs.util.inspect.custom')]: redacted } as MasterKeys;
}
