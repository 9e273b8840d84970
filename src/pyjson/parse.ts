// Strict JSON parser with Python `json.loads` semantics (see value.ts for why
// not JSON.parse). Accepts NaN / Infinity / -Infinity like Python; duplicate
// keys: last value wins at the first key's position (Map.set does that).
// Error messages follow Python's JSONDecodeError wording and position format
// (trailing commas use the clearer Python 3.13 wording).

import { PyNumber, type PyObject, type PyValue } from './value.ts';

export class PyJsonError extends Error {
  /** Offset in code points (Python str index), and 1-based line / column. */
  readonly pos: number;
  readonly lineno: number;
  readonly colno: number;

  constructor(
    readonly msg: string,
    text: string,
    index: number,
  ) {
    // Python counts positions in code points; JS indexes UTF-16 units.
    const before = text.slice(0, index);
    const lastNl = before.lastIndexOf('\n');
    const pos = countCodePoints(before);
    const lineno = countChar(before, '\n') + 1;
    const colno = lastNl < 0 ? pos + 1 : countCodePoints(before.slice(lastNl + 1)) + 1;
    super(`${msg}: line ${lineno} column ${colno} (char ${pos})`);
    this.name = 'PyJsonError';
    this.pos = pos;
    this.lineno = lineno;
    this.colno = colno;
  }
}

/** Python's recursion limit would stop deep nesting too; this keeps us off the JS stack limit. */
export const MAX_DEPTH = 1000;

export function parse(text: string): PyValue {
  const p = new Parser(text);
  if (text.charCodeAt(0) === 0xfeff) p.fail('Unexpected UTF-8 BOM (decode using utf-8-sig)', 0);
  p.skipWs();
  const v = p.value(0);
  p.skipWs();
  if (p.pos !== text.length) p.fail('Extra data', p.pos);
  return v;
}

class Parser {
  pos = 0;
  constructor(readonly text: string) {}

  fail(msg: string, index: number): never {
    throw new PyJsonError(msg, this.text, index);
  }

  skipWs(): void {
    const t = this.text;
    let i = this.pos;
    for (;;) {
      const c = t.charCodeAt(i);
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
      i++;
    }
    this.pos = i;
  }

  /** Parse a value at `pos` (whitespace already skipped). */
  value(depth: number): PyValue {
    const t = this.text;
    const i = this.pos;
    switch (t.charCodeAt(i)) {
      case 0x22: // "
        return this.string();
      case 0x7b: // {
        return this.object(depth + 1);
      case 0x5b: // [
        return this.array(depth + 1);
      case 0x6e: // n
        return this.literal('null', null);
      case 0x74: // t
        return this.literal('true', true);
      case 0x66: // f
        return this.literal('false', false);
      case 0x4e: // N
        return this.literal('NaN', new PyNumber('NaN'));
      case 0x49: // I
        return this.literal('Infinity', new PyNumber('Infinity'));
      case 0x2d: // -
        if (t.startsWith('-Infinity', i)) return this.literal('-Infinity', new PyNumber('-Infinity'));
        return this.number();
      default:
        return this.number();
    }
  }

  literal<T extends PyValue>(word: string, v: T): T {
    if (!this.text.startsWith(word, this.pos)) this.fail('Expecting value', this.pos);
    this.pos += word.length;
    return v;
  }

  number(): PyNumber {
    // Same grammar as Python's NUMBER_RE: -?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?
    // Optional parts that do not match completely are left for the caller,
    // which then reports a delimiter / "Extra data" error, as Python does.
    const t = this.text;
    const start = this.pos;
    let i = start;
    if (t.charCodeAt(i) === 0x2d) i++;
    const first = t.charCodeAt(i);
    if (first === 0x30) i++;
    else if (first >= 0x31 && first <= 0x39) i = digitsEnd(t, i + 1);
    else this.fail('Expecting value', start);
    if (t.charCodeAt(i) === 0x2e && isDigit(t.charCodeAt(i + 1))) i = digitsEnd(t, i + 2);
    const e = t.charCodeAt(i);
    if (e === 0x65 || e === 0x45) {
      let j = i + 1;
      const s = t.charCodeAt(j);
      if (s === 0x2b || s === 0x2d) j++;
      if (isDigit(t.charCodeAt(j))) i = digitsEnd(t, j + 1);
    }
    this.pos = i;
    return new PyNumber(t.slice(start, i));
  }

  string(): string {
    const t = this.text;
    const quote = this.pos;
    let i = quote + 1;
    let chunk = i;
    let out = '';
    for (;;) {
      if (i >= t.length) this.fail('Unterminated string starting at', quote);
      const c = t.charCodeAt(i);
      if (c === 0x22) {
        this.pos = i + 1;
        return out + t.slice(chunk, i);
      }
      if (c < 0x20) this.fail('Invalid control character at', i);
      if (c !== 0x5c) {
        i++;
        continue;
      }
      out += t.slice(chunk, i);
      if (i + 1 >= t.length) this.fail('Unterminated string starting at', quote);
      const esc = t[i + 1];
      if (esc === 'u') {
        let cu = this.hex4(i);
        i += 6;
        // A high surrogate followed by an escaped low surrogate is one code
        // point; anything else stays a lone surrogate, as in Python.
        if (cu >= 0xd800 && cu <= 0xdbff && t[i] === '\\' && t[i + 1] === 'u') {
          const lo = this.hex4(i);
          if (lo >= 0xdc00 && lo <= 0xdfff) {
            out += String.fromCharCode(cu, lo);
            i += 6;
            chunk = i;
            continue;
          }
        }
        out += String.fromCharCode(cu);
      } else {
        const k = ESCAPE_CHARS.indexOf(esc);
        if (k < 0) this.fail('Invalid \\escape', i);
        out += ESCAPE_VALUES[k];
        i += 2;
      }
      chunk = i;
    }
  }

  /** The 4 hex digits after the `\u` at index `backslash`. */
  hex4(backslash: number): number {
    const h = this.text.slice(backslash + 2, backslash + 6);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) this.fail('Invalid \\uXXXX escape', backslash + 1);
    return parseInt(h, 16);
  }

  object(depth: number): PyObject {
    if (depth > MAX_DEPTH) this.fail('Maximum nesting depth exceeded', this.pos);
    const t = this.text;
    const obj: PyObject = new Map();
    this.pos++;
    this.skipWs();
    if (t.charCodeAt(this.pos) === 0x7d) {
      this.pos++;
      return obj;
    }
    for (;;) {
      if (t.charCodeAt(this.pos) !== 0x22) this.fail('Expecting property name enclosed in double quotes', this.pos);
      const key = this.string();
      this.skipWs();
      if (t.charCodeAt(this.pos) !== 0x3a) this.fail("Expecting ':' delimiter", this.pos);
      this.pos++;
      this.skipWs();
      obj.set(key, this.value(depth));
      this.skipWs();
      const c = t.charCodeAt(this.pos);
      this.pos++;
      if (c === 0x7d) return obj;
      if (c !== 0x2c) this.fail("Expecting ',' delimiter", this.pos - 1);
      const comma = this.pos - 1;
      this.skipWs();
      if (t.charCodeAt(this.pos) === 0x7d) this.fail('Illegal trailing comma before end of object', comma);
    }
  }

  array(depth: number): PyValue[] {
    if (depth > MAX_DEPTH) this.fail('Maximum nesting depth exceeded', this.pos);
    const t = this.text;
    const arr: PyValue[] = [];
    this.pos++;
    this.skipWs();
    if (t.charCodeAt(this.pos) === 0x5d) {
      this.pos++;
      return arr;
    }
    for (;;) {
      arr.push(this.value(depth));
      this.skipWs();
      const c = t.charCodeAt(this.pos);
      this.pos++;
      if (c === 0x5d) return arr;
      if (c !== 0x2c) this.fail("Expecting ',' delimiter", this.pos - 1);
      const comma = this.pos - 1;
      this.skipWs();
      if (t.charCodeAt(this.pos) === 0x5d) this.fail('Illegal trailing comma before end of array', comma);
    }
  }
}

// Single-character escapes and what they decode to, index-aligned.
const ESCAPE_CHARS = '"\\/bfnrt';
const ESCAPE_VALUES = '"\\/\b\f\n\r\t';

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function digitsEnd(t: string, i: number): number {
  while (isDigit(t.charCodeAt(i))) i++;
  return i;
}

function countCodePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

function countChar(s: string, ch: string): number {
  let n = 0;
  for (let i = s.indexOf(ch); i >= 0; i = s.indexOf(ch, i + 1)) n++;
  return n;
}
