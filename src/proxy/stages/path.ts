// Path safety, the first stage of every proxy chain. The proxy forwards the
// raw path byte for byte (it never rewrites a path), so it refuses a path that
// an upstream, a framework or a file server could resolve to somewhere other
// than where it appears to point:
//   - a `.` or `..` segment, also percent-encoded (`%2e`, any case, mixed with
//     `.`), also hidden behind an encoded slash (`..%2F..%2Fx`) or a path
//     parameter (`..;/x`, which Tomcat-style servers treat as `..`);
//   - a backslash, raw or `%5C` (a separator for many servers);
//   - a raw byte outside 0x21–0x7E, in the path or the query (refused rather
//     than percent-encoded: encoding would change the bytes the upstream sees);
//   - a percent-encoded control character (U+0000–U+001F, U+007F) in the path;
//   - invalid percent-encoding (`%` without two hex digits), or percent-encoded
//     bytes that are not UTF-8 (overlong forms such as `%c0%ae` decode to `.` in
//     lenient decoders).
// The query is opaque data for the upstream: only the raw-byte rule applies to
// it (encoded newlines, `%`-typos and `/../` are legitimate query content).
// Hand-written rather than a URL library: libraries normalize (resolve dot
// segments, re-encode), while the rule here is to refuse without rewriting.
import { DomainError } from '../../core/errors.ts';
import type { Stage } from '../chain.ts';

const hex = (c: number): number => {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  return l >= 0x61 && l <= 0x66 ? l - 0x61 + 10 : -1;
};

/** True when a percent-decoded segment is `.` or `..`, or hides one behind an encoded slash or a `;` parameter. */
function hasDotSegment(decodedSegment: string): boolean {
  for (const piece of decodedSegment.split('/')) {
    const semi = piece.indexOf(';');
    const name = semi === -1 ? piece : piece.slice(0, semi);
    if (name === '.' || name === '..') return true;
  }
  return false;
}

/** Percent-decodes one segment into a byte string (only the ASCII of it matters for the dot check). */
function decodeSegment(seg: string): string {
  if (seg.indexOf('%') === -1) return seg;
  let out = '';
  for (let i = 0; i < seg.length; i++) {
    const c = seg.charCodeAt(i);
    if (c === 0x25) {
      out += String.fromCharCode((hex(seg.charCodeAt(i + 1)) << 4) | hex(seg.charCodeAt(i + 2)));
      i += 2;
    } else out += seg[i];
  }
  return out;
}

/** Walks the raw segments; only one with `%` or `;` needs decoding (the common dotted file name does not). */
function dotSegmentIn(path: string): boolean {
  let start = 0;
  for (;;) {
    let end = path.indexOf('/', start);
    if (end === -1) end = path.length;
    if (end > start) {
      const seg = path.substring(start, end);
      if (seg.indexOf('%') === -1 && seg.indexOf(';') === -1) {
        if (seg === '.' || seg === '..') return true;
      } else if (hasDotSegment(decodeSegment(seg))) return true;
    }
    if (end === path.length) return false;
    start = end + 1;
  }
}

/**
 * Why the raw `path` (the part after /api/proxy, '' or '/…') and raw `query`
 * must not be forwarded, or null when they may go upstream as they are.
 */
export function pathProblem(path: string, query: string): string | null {
  let mayHaveDots = false;
  let highBytes = false;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return 'the path contains a character outside printable ASCII (percent-encode it)';
    if (c === 0x5c) return 'the path contains a backslash';
    if (c === 0x2e) mayHaveDots = true;
    else if (c === 0x25) {
      const h = hex(path.charCodeAt(i + 1));
      const l = hex(path.charCodeAt(i + 2));
      if (h < 0 || l < 0) return 'the path contains invalid percent-encoding';
      const b = (h << 4) | l;
      if (b < 0x20 || b === 0x7f) return 'the path contains a percent-encoded control character';
      if (b === 0x5c) return 'the path contains an encoded backslash (%5C)';
      if (b === 0x2e) mayHaveDots = true;
      else if (b >= 0x80) highBytes = true;
      i += 2;
    }
  }
  if (highBytes) {
    try {
      decodeURIComponent(path);
    } catch {
      return 'the path percent-encodes bytes that are not UTF-8';
    }
  }
  if (mayHaveDots && dotSegmentIn(path)) return 'the path contains a dot-segment (. or ..)';
  for (let i = 0; i < query.length; i++) {
    const c = query.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return 'the query contains a character outside printable ASCII (percent-encode it)';
  }
  return null;
}

/** Refuses a path that is not canonical with 400, state path_not_canonical. */
export function requireCanonicalPath(): Stage {
  return (x) => {
    const problem = pathProblem(x.path, x.req.query);
    if (problem) throw new DomainError('invalid', `refused: ${problem}`, { state: 'path_not_canonical' });
  };
}
