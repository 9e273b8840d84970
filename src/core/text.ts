// Checks for text that arrives from the network and ends up in a database
// column, a log line or a header: PostgreSQL refuses U+0000 in text (an
// error after the transaction began), and control characters in stored
// values end up in headers and logs of other services.

/** C0 controls (U+0000–U+001F, tab and newlines included) and DEL. */
const CONTROL = /[\u0000-\u001f\u007f]/;

export function hasControlChars(s: string): boolean {
  return CONTROL.test(s);
}

/**
 * Why `value` is not an acceptable text field, as the end of a sentence that
 * starts with the field name ("must be a string", …), or null when it is.
 */
export function textProblem(value: unknown, maxLength: number): string | null {
  if (typeof value !== 'string') return 'must be a string';
  if (value.length > maxLength) return `is longer than ${maxLength} characters`;
  if (CONTROL.test(value)) return 'contains control characters';
  return null;
}

/** RFC 9110 token: header names, WebSocket subprotocols. */
const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export function isHttpToken(s: string): boolean {
  return HTTP_TOKEN.test(s);
}

/** Outside a field value: anything but HTAB, visible ASCII, SP and obs-text (so CR, LF, NUL and other controls). */
const NOT_FIELD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

/** A header (or chunk-extension) value as RFC 9110 allows it, decoded as latin1. */
export function isFieldValue(s: string): boolean {
  return !NOT_FIELD_VALUE.test(s);
}

/** What String.prototype.trim and the regular expression \s count as white space. */
function isJsSpace(c: number): boolean {
  if (c <= 32) return c === 32 || (c >= 9 && c <= 13);
  if (c < 0xa0) return false;
  return c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

/**
 * True when every character of `s` is ASCII: then its UTF-8 length is its length,
 * which node counts natively, ~20 times quicker than a regular expression over a
 * 700-character platform token.
 */
export function isAscii(s: string): boolean {
  return Buffer.byteLength(s, 'utf8') === s.length;
}

/** The white space of ASCII text, as String.prototype.trim and \s count it. */
const ASCII_SPACES = [' ', '\t', '\n', '\v', '\f', '\r'];
/** Below this length a loop over the characters is as quick as any native scan. */
const NATIVE_SCAN_MIN = 64;

/**
 * Where the word starting at `from` ends (`to` at most). `ascii`: `s` is ASCII,
 * so its only white space is ASCII_SPACES and native indexOf finds it: over a
 * 700-character token that is ten times quicker than testing every character.
 */
function wordEnd(s: string, from: number, to: number, ascii: boolean): number {
  if (ascii) {
    let end = to;
    for (const c of ASCII_SPACES) {
      const i = s.indexOf(c, from);
      if (i !== -1 && i < end) end = i;
    }
    return end;
  }
  let j = from;
  while (j < to && !isJsSpace(s.charCodeAt(j))) j++;
  return j;
}

/**
 * The first two words of `s` and how many words it has (3 meaning "more than
 * two"), exactly as `s.trim().split(/\s+/)` would split it (an empty or blank
 * `s` is one empty word). Credentials arrive as "<scheme> <token>" on every
 * request and a platform JWT is about 700 characters: this scans it once and
 * builds no array.
 */
export function leadingWords(s: string): { count: 1 | 2 | 3; first: string; second: string } {
  let i = 0;
  let n = s.length;
  const ascii = n >= NATIVE_SCAN_MIN && isAscii(s);
  while (i < n && isJsSpace(s.charCodeAt(i))) i++;
  while (n > i && isJsSpace(s.charCodeAt(n - 1))) n--;
  const j = wordEnd(s, i, n, ascii);
  const first = s.slice(i, j);
  if (j === n) return { count: 1, first, second: '' };
  let k = j;
  while (k < n && isJsSpace(s.charCodeAt(k))) k++;
  const m = wordEnd(s, k, n, ascii);
  return { count: m === n ? 2 : 3, first, second: s.slice(k, m) };
}

/**
 * A fixed set of lower-case header names, looked up by names that arrive fresh
 * off the wire on every request. Candidates are kept by length and compared:
 * a Map or Set would hash every fresh name before looking at it.
 */
export class NameTable<T> {
  private readonly names: Array<string[] | undefined> = [];
  private readonly values: Array<T[] | undefined> = [];

  constructor(entries: ReadonlyArray<readonly [name: string, value: T]>) {
    for (const [name, value] of entries) {
      (this.names[name.length] ??= []).push(name);
      (this.values[name.length] ??= []).push(value);
    }
  }

  /** The value of `name` (spelt exactly as given), or undefined. */
  get(name: string): T | undefined {
    const list = this.names[name.length];
    if (list === undefined) return undefined;
    for (let i = 0; i < list.length; i++) if (list[i] === name) return this.values[name.length]![i];
    return undefined;
  }

  has(name: string): boolean {
    const list = this.names[name.length];
    return list !== undefined && list.includes(name);
  }
}

/** A NameTable used as a set. */
export function nameSet(names: readonly string[]): NameTable<true> {
  return new NameTable(names.map((n) => [n, true] as const));
}
