// Service versions and the X-UtilMeta-Accept-Version filter.
//
// The range syntax keeps the original proxy's semantics (spec §1.5.4, §6.23),
// which are NOT semver:
//   "1.2.3"   major = 1, minor = 2, patch = 3
//   "1.2"     major = 1, minor = 2 (any patch)
//   "^1.2.3"  major = 1, minor >= 2 (patch ignored, even when minor is 2)
//   "~1.2.3"  major = 1, minor = 2, patch >= 3
//   "*", "1.*", "1.x"  wildcards; a leading "v" is allowed before ~ / ^.
// Unlike the original, a malformed range is a 400, not a 500.

export type Version = readonly [major: number, minor: number, patch: number];

/** `version.split('-')[0].split('.')` as integers; parts that do not parse are 0 (as the original). */
export function parseVersion(version: string): Version {
  const parts = version.split('-')[0].split('.');
  const num = (s: string | undefined): number => {
    if (s === undefined || !/^\s*\+?\d+\s*$/.test(s)) return 0;
    const n = Number(s.trim());
    return Number.isSafeInteger(n) && n <= 2147483647 ? n : 0;
  };
  return [num(parts[0]), num(parts[1]), num(parts[2])];
}

export class VersionRangeError extends Error {}

export type VersionFilter = (v: Version) => boolean;

export function parseRange(header: string): VersionFilter | null {
  let s = header.trim();
  if (s === '' || s === '*') return null;
  s = s.replace(/^v+/i, '');
  const caret = s.startsWith('^');
  const tilde = s.startsWith('~');
  const body = s.replace(/^~+/, '').replace(/^\^+/, '');
  const raw = body.split('.');
  if (raw.length > 3 || body === '') {
    throw new VersionRangeError(`invalid X-UtilMeta-Accept-Version '${header}': expected up to three dot-separated parts such as 1.2, ^1.2 or ~1.2.3`);
  }
  const parts = raw.map((p) => {
    if (p === '*' || p === 'x' || p === 'X') return null;
    if (!/^\d{1,9}$/.test(p)) {
      throw new VersionRangeError(`invalid X-UtilMeta-Accept-Version '${header}': '${p}' is not a number or wildcard`);
    }
    return Number(p);
  });
  const [major, minor, patch] = [parts[0] ?? null, parts[1] ?? null, parts[2] ?? null];
  return (v) => {
    if (major !== null && v[0] !== major) return false;
    if (minor !== null && (caret ? v[1] < minor : v[1] !== minor)) return false;
    if (patch !== null && !caret && (tilde ? v[2] < patch : v[2] !== patch)) return false;
    return true;
  };
}
