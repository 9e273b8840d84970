// The canonical-path check for proxied requests. The proxy forwards the raw path unchanged, so
// the path it authorizes must be read the same way by any upstream: a path that an upstream
// could normalize into something else (dot segments, encoded slashes, doubled slashes, broken
// encodings) is refused instead of being guessed at.
//
// Input is the path part only (anything from the first `?` on is ignored). Raw non-ASCII
// characters stand for their UTF-8 bytes, as decodeURIComponent reads them.

export type NonCanonicalReason =
  | 'not_absolute'
  | 'empty_segment'
  | 'dot_segment'
  | 'encoded_separator'
  | 'bad_percent_encoding'
  | 'bad_utf8';

export type CanonicalPath =
  | { ok: true; /** percent-decoded segments, one trailing `/` dropped; `[]` for `/` */ segments: string[] }
  | { ok: false; reason: NonCanonicalReason; /** index of the offending segment */ segment: number };

const REASON_TEXT: Record<NonCanonicalReason, string> = {
  not_absolute: 'the path must start with /',
  empty_segment: 'the path has an empty segment (//)',
  dot_segment: 'the path has a . or .. segment',
  encoded_separator: 'a segment contains %2F, %5C or \\',
  bad_percent_encoding: 'the path has an invalid percent-encoding',
  bad_utf8: 'the path does not decode to valid UTF-8',
};

export function describeNonCanonical(reason: NonCanonicalReason): string {
  return REASON_TEXT[reason];
}

// String.prototype.isWellFormed exists on Node 20 but is newer than the configured TS lib.
type WellFormed = string & { isWellFormed(): boolean };

/** Never throws: every input gets a result. */
export function canonicalPath(raw: string): CanonicalPath {
  const q = raw.indexOf('?');
  let path = q >= 0 ? raw.slice(0, q) : raw;
  // The request to the proxy root itself (`/api/proxy` with nothing after it) is `/`.
  if (path === '') path = '/';
  if (path.charCodeAt(0) !== 47 /* / */) return { ok: false, reason: 'not_absolute', segment: 0 };
  if (path === '/') return { ok: true, segments: [] };
  const parts = path.slice(1).split('/');
  // One trailing `/` is allowed (and ignored); any other empty segment is not.
  if (parts[parts.length - 1] === '') parts.pop();
  const segments = new Array<string>(parts.length);
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (part === '') return { ok: false, reason: 'empty_segment', segment: i };
    let decoded = part;
    if (needsDecoding(part)) {
      if (part.includes('\\')) return { ok: false, reason: 'encoded_separator', segment: i };
      try {
        // decodeURIComponent rejects malformed %XX and invalid UTF-8 (overlongs, encoded
        // surrogates, truncated sequences), which is exactly the rule; no need to hand-roll it.
        decoded = decodeURIComponent(part);
      } catch {
        return { ok: false, reason: badEscape(part) ? 'bad_percent_encoding' : 'bad_utf8', segment: i };
      }
      // A lone surrogate in the raw string has no UTF-8 encoding.
      if (!(decoded as WellFormed).isWellFormed()) return { ok: false, reason: 'bad_utf8', segment: i };
      if (decoded.includes('/') || decoded.includes('\\')) return { ok: false, reason: 'encoded_separator', segment: i };
    }
    if (decoded === '.' || decoded === '..') return { ok: false, reason: 'dot_segment', segment: i };
    segments[i] = decoded;
  }
  return { ok: true, segments };
}

/** True when the segment has `%`, `\` or a non-ASCII code unit (the slow path). */
function needsDecoding(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 37 /* % */ || c === 92 /* \ */ || c > 126) return true;
  }
  return false;
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
}

/** A `%` not followed by two hex digits (as opposed to well-formed escapes of bad UTF-8). */
function badEscape(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) !== 37) continue;
    if (i + 2 >= s.length) return true;
    if (!isHex(s.charCodeAt(i + 1)) || !isHex(s.charCodeAt(i + 2))) return true;
    i += 2;
  }
  return false;
}
