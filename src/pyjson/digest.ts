// UtilMeta's etag digest (fast_digest with compress=True): MD5 of the UTF-8
// bytes, reduced mod 2^64, written in base 62.

import { createHash } from 'node:crypto';
import { dumps } from './dumps.ts';
import type { PyValue } from './value.ts';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

export function fastDigest(text: string): string {
  const md5 = createHash('md5').update(text, 'utf8').digest();
  // The digest as a big-endian integer mod 2^64 is its last 8 bytes.
  let n = md5.readBigUInt64BE(8);
  let out = '';
  while (n > 0n) {
    out = BASE62[Number(n % 62n)] + out;
    n /= 62n;
  }
  return out; // zero gives '' (no padding), as in Python
}

/** Etag of a value as UtilMeta computes it; its json_dumps(None) is '' rather than 'null'. */
export function etag(value: PyValue | null): string {
  return fastDigest(value === null ? '' : dumps(value));
}
